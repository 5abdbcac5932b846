using Analytics.Store;

namespace Analytics.Detection.Features;

/// <summary>Runs the feature query as of a time, for the entities active since another.</summary>
public sealed class FeatureReader
{
    private static readonly string Sql = LoadSql("entity_features.sql");
    private static readonly string BatchSql = LoadSql("entity_features_batch.sql");

    private readonly IClickHouseStore _store;

    public FeatureReader(IClickHouseStore store) => _store = store;

    public async Task<List<EntityFeatures>> ReadAsync(DateTime asOf, DateTime activeSince, CancellationToken cancellationToken = default)
    {
        var t = Truncate(asOf);
        var result = await _store.QueryAsync(Sql, QueryParameters.Of(("t", t), ("since", Truncate(activeSince))), cancellationToken);
        return FeatureSet.FromRows(result, t);
    }

    /// <summary>
    /// The features the scorer would compute at every point from <paramref name="from"/> to
    /// <paramref name="to"/> (both included, whole minutes) <paramref name="step"/> apart, for the
    /// entities active within <paramref name="lookback"/> before each point, in one query: the same
    /// values as <see cref="ReadAsync"/> at each point, at a fraction of the cost.
    /// </summary>
    public async Task<List<EntityFeatures>> ReadManyAsync(DateTime from, DateTime to, TimeSpan step, TimeSpan lookback, CancellationToken cancellationToken = default)
    {
        if (step < TimeSpan.FromMinutes(1) || step.Ticks % TimeSpan.TicksPerMinute != 0 || lookback.Ticks % TimeSpan.TicksPerMinute != 0 || lookback <= TimeSpan.Zero)
        {
            throw new ArgumentException("Points and lookbacks are whole minutes.");
        }

        var result = await _store.QueryAsync(BatchSql, QueryParameters.Of(
            ("from", Truncate(from)), ("to", Truncate(to)), ("step", (uint)step.TotalSeconds), ("lookback", (uint)lookback.TotalSeconds)), cancellationToken);
        return FeatureSet.FromRows(result, null);
    }

    /// <summary>
    /// The time features are really computed as of: the start of the minute. The aggregates are per
    /// minute, so a minute counts only once it is over; that way no feature reads an event at or
    /// after the scoring time, whether it is read live or replayed over recorded history.
    /// </summary>
    public static DateTime Truncate(DateTime t) => new(t.Ticks - (t.Ticks % TimeSpan.TicksPerMinute), DateTimeKind.Utc);

    internal static string LoadSql(string name)
    {
        using var stream = typeof(FeatureReader).Assembly.GetManifestResourceStream("Analytics.Detection.Features." + name)
            ?? throw new InvalidOperationException($"Embedded SQL {name} is missing.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
