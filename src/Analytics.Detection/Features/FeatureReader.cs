using Analytics.Store;

namespace Analytics.Detection.Features;

/// <summary>Runs the feature query as of a time, for the entities active since another.</summary>
public sealed class FeatureReader
{
    private static readonly string Sql = LoadSql("entity_features.sql");

    private readonly IClickHouseStore _store;

    public FeatureReader(IClickHouseStore store) => _store = store;

    public async Task<List<EntityFeatures>> ReadAsync(DateTime asOf, DateTime activeSince, CancellationToken cancellationToken = default)
    {
        var t = Truncate(asOf);
        var result = await _store.QueryAsync(Sql, QueryParameters.Of(("t", t), ("since", Truncate(activeSince))), cancellationToken);
        return FeatureSet.FromRows(result, t);
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
