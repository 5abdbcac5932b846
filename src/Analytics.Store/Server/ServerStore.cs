namespace Analytics.Store.Server;

/// <summary>ClickHouse server or cluster through ClickHouse.Driver (HTTP). Placeholder until implemented.</summary>
public sealed class ServerStore : IClickHouseStore
{
    private ServerStore(string location) => Location = location;

    public string Backend => "server";

    public string Location { get; }

    public static ServerStore Open(string server) => throw new StoreUnavailableException("The ClickHouse server backend is not built yet.");

    public Task ExecuteAsync(string sql, QueryParameters? parameters = null, CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public Task<QueryResult> QueryAsync(string sql, QueryParameters? parameters = null, CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public Task<byte[]> QueryFormattedAsync(string sql, string format, QueryParameters? parameters = null, CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public Task InsertRowBinaryAsync(string table, string columns, ReadOnlyMemory<byte> rows, string? deduplicationToken, CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
