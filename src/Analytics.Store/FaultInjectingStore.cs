namespace Analytics.Store;

/// <summary>
/// The real store with an outage on demand, for chaos runs and tests: while <see cref="Failing"/> is
/// set, every call fails as an unreachable server would (<see cref="StoreUnavailableException"/>)
/// before it reaches ClickHouse. Not a mock: when it is not failing, the real engine answers.
/// </summary>
public sealed class FaultInjectingStore(IClickHouseStore inner) : IClickHouseStore
{
    private volatile bool _failing;
    private long _refused;

    public IClickHouseStore Inner => inner;

    public bool Failing
    {
        get => _failing;
        set => _failing = value;
    }

    /// <summary>Calls refused while failing.</summary>
    public long Refused => Interlocked.Read(ref _refused);

    public string Backend => inner.Backend;

    public string Location => inner.Location;

    public Task ExecuteAsync(string sql, QueryParameters? parameters = null, CancellationToken cancellationToken = default)
    {
        Check();
        return inner.ExecuteAsync(sql, parameters, cancellationToken);
    }

    public Task<QueryResult> QueryAsync(string sql, QueryParameters? parameters = null, CancellationToken cancellationToken = default)
    {
        Check();
        return inner.QueryAsync(sql, parameters, cancellationToken);
    }

    public Task<byte[]> QueryFormattedAsync(string sql, string format, QueryParameters? parameters = null, CancellationToken cancellationToken = default)
    {
        Check();
        return inner.QueryFormattedAsync(sql, format, parameters, cancellationToken);
    }

    public Task InsertAsync(string table, string? columns, InsertFormat format, ReadOnlyMemory<byte> data, string? deduplicationToken, CancellationToken cancellationToken = default)
    {
        Check();
        return inner.InsertAsync(table, columns, format, data, deduplicationToken, cancellationToken);
    }

    private void Check()
    {
        if (_failing)
        {
            Interlocked.Increment(ref _refused);
            throw new StoreUnavailableException($"Injected outage of the store at {inner.Location}.");
        }
    }

    // The inner store belongs to whoever opened it.
    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
