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
        var result = await _store.QueryAsync(Sql, QueryParameters.Of(("t", Truncate(asOf)), ("since", Truncate(activeSince))), cancellationToken);
        return FeatureSet.FromRows(result, asOf);
    }

    // The aggregates are per minute; a time inside a minute counts that minute as not yet complete.
    private static DateTime Truncate(DateTime t) => new(t.Ticks - t.Ticks % TimeSpan.TicksPerSecond, DateTimeKind.Utc);

    internal static string LoadSql(string name)
    {
        using var stream = typeof(FeatureReader).Assembly.GetManifestResourceStream("Analytics.Detection.Features." + name)
            ?? throw new InvalidOperationException($"Embedded SQL {name} is missing.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
