namespace Analytics.Store;

/// <summary>
/// ClickHouse, embedded (chDB) or a server, behind one interface: the schema and every query are the
/// same SQL on both. Parameters are bound by ClickHouse (<c>{name:Type}</c> placeholders), never
/// spliced into the text.
/// </summary>
public interface IClickHouseStore : IAsyncDisposable
{
    /// <summary><c>embedded</c> or <c>server</c>.</summary>
    string Backend { get; }

    /// <summary>Where the data lives: a directory or a server URL (without credentials).</summary>
    string Location { get; }

    /// <summary>Runs a statement that returns nothing (DDL, INSERT … SELECT, SET …).</summary>
    Task ExecuteAsync(string sql, QueryParameters? parameters = null, CancellationToken cancellationToken = default);

    /// <summary>Runs a query and returns its rows, typed (see <see cref="QueryResult"/>).</summary>
    Task<QueryResult> QueryAsync(string sql, QueryParameters? parameters = null, CancellationToken cancellationToken = default);

    /// <summary>Runs a query and returns ClickHouse's own rendering of it in <paramref name="format"/> (TSV, JSON, …).</summary>
    Task<byte[]> QueryFormattedAsync(string sql, string format, QueryParameters? parameters = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// Inserts data already encoded in <paramref name="format"/> (RowBinary for <paramref name="columns"/>,
    /// or Native blocks, which name their columns; pass null columns then). A non-null
    /// <paramref name="deduplicationToken"/> makes the insert idempotent: a second insert with the same
    /// token is dropped by ClickHouse (tables carry <c>non_replicated_deduplication_window</c>).
    /// </summary>
    Task InsertAsync(string table, string? columns, InsertFormat format, ReadOnlyMemory<byte> data, string? deduplicationToken, CancellationToken cancellationToken = default);
}

public static class ClickHouseStoreExtensions
{
    /// <summary>Inserts rows encoded as RowBinary for <paramref name="columns"/> (see <see cref="IClickHouseStore.InsertAsync"/>).</summary>
    public static Task InsertRowBinaryAsync(this IClickHouseStore store, string table, string columns, ReadOnlyMemory<byte> rows, string? deduplicationToken, CancellationToken cancellationToken = default) =>
        store.InsertAsync(table, columns, InsertFormat.RowBinary, rows, deduplicationToken, cancellationToken);
}

/// <summary>The binary input formats the stores accept.</summary>
public enum InsertFormat
{
    RowBinary,
    Native,
}
