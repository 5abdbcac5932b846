using System.Globalization;
using Analytics.Detection.Features;
using Analytics.Store;

namespace Analytics.Detection.Model;

/// <summary>One labelled feature vector: an entity at a point in time.</summary>
public sealed record LabelledRow(EntityFeatures Features, ThreatClass Class, string Variant, string Campaign)
{
    /// <summary>When the labelled malicious activity began (for time-to-detect), if known.</summary>
    public DateTime? MaliciousFrom { get; init; }

    public bool IsMalicious => Class != ThreatClass.Benign;
}

/// <summary>A ground-truth interval for one entity.</summary>
public sealed record GroundTruth(EntityRef Entity, string Class, string Variant, string Campaign, DateTime? From, DateTime? To);

/// <summary>
/// Builds labelled rows from the store: feature vectors at regular evaluation points over the span of
/// recorded activity, each labelled with the class of any ground-truth interval (labels table) that
/// overlaps the hour before the point. Networks take the labels of the IPs in them.
/// </summary>
public sealed class TrainingSetBuilder
{
    private const string LabelsSql = """
        SELECT toString(entity_kind) AS kind,
               if(entity_kind = 'ip', replaceOne(IPv6NumToString(ip), '::ffff:', ''), entity) AS entity,
               class, campaign, variant, malicious_from, malicious_to
        FROM labels FINAL
        """;

    private readonly IClickHouseStore _store;
    private readonly FeatureReader _features;

    public TrainingSetBuilder(IClickHouseStore store)
    {
        _store = store;
        _features = new FeatureReader(store);
    }

    public async Task<IReadOnlyList<GroundTruth>> ReadLabelsAsync(CancellationToken cancellationToken = default)
    {
        var result = await _store.QueryAsync(LabelsSql, null, cancellationToken);
        return result.Rows.Select(r => new GroundTruth(
            new EntityRef(EntityKinds.Parse((string)r[0]!), (string)r[1]!), (string)r[2]!, (string)r[4]!, (string)r[3]!,
            r[5] as DateTime?, r[6] as DateTime?)).ToList();
    }

    /// <summary>The span of recorded activity (first and last minute), or null when there is none.</summary>
    public async Task<(DateTime First, DateTime Last)?> ActivitySpanAsync(CancellationToken cancellationToken = default)
    {
        var r = await _store.QueryAsync("SELECT min(minute), max(minute), count() FROM activity", null, cancellationToken);
        return (ulong)r.Rows[0][2]! == 0 ? null : ((DateTime)r.Rows[0][0]!, (DateTime)r.Rows[0][1]!);
    }

    public async Task<List<LabelledRow>> BuildAsync(TimeSpan step, IProgress<double>? progress = null, CancellationToken cancellationToken = default)
    {
        var span = await ActivitySpanAsync(cancellationToken) ?? throw new InvalidOperationException(
            "The store holds no activity: record traffic first (./analytics simulate --scenario train).");
        var truth = Index(await ReadLabelsAsync(cancellationToken));
        var rows = new List<LabelledRow>();
        var first = Ceiling(span.First, step) + step;
        var last = span.Last.AddMinutes(1);
        var points = Math.Max(1, (int)((last - first).Ticks / step.Ticks) + 1);
        var done = 0;
        for (var t = first; t <= last + step; t += step)
        {
            foreach (var f in await _features.ReadAsync(t, t - step, cancellationToken))
            {
                var (cls, variant, campaign, from) = LabelOf(truth, f.Entity, t);
                rows.Add(new LabelledRow(f, cls, variant, campaign) { MaliciousFrom = from });
            }

            progress?.Report(Math.Min(1.0, ++done / (double)points));
        }

        return rows;
    }

    internal static Dictionary<EntityRef, List<GroundTruth>> Index(IEnumerable<GroundTruth> labels)
    {
        var index = new Dictionary<EntityRef, List<GroundTruth>>();
        foreach (var g in labels)
        {
            Add(index, g.Entity, g);
            if (g.Entity.Kind == EntityKind.Ip && NetworkOf(g.Entity.Name) is { } net)
            {
                Add(index, new EntityRef(EntityKind.Net, net), g);
            }
        }

        return index;
    }

    private static void Add(Dictionary<EntityRef, List<GroundTruth>> index, EntityRef key, GroundTruth g)
    {
        if (!index.TryGetValue(key, out var list))
        {
            index[key] = list = [];
        }

        list.Add(g);
    }

    /// <summary>The class of an entity at <paramref name="t"/>: a malicious interval overlapping the hour before t wins.</summary>
    internal static (ThreatClass Class, string Variant, string Campaign, DateTime? From) LabelOf(
        Dictionary<EntityRef, List<GroundTruth>> truth, EntityRef entity, DateTime t)
    {
        if (!truth.TryGetValue(entity, out var list))
        {
            return (ThreatClass.Benign, "", "", null);
        }

        foreach (var g in list)
        {
            var cls = ThreatClasses.FromLabel(g.Class);
            if (cls == ThreatClass.Benign)
            {
                continue;
            }

            var from = g.From ?? DateTime.MinValue;
            var to = g.To ?? DateTime.MaxValue;
            if (from < t && to >= t.AddHours(-1))
            {
                return (cls, g.Variant, g.Campaign, g.From);
            }
        }

        var benign = list.FirstOrDefault(g => ThreatClasses.FromLabel(g.Class) == ThreatClass.Benign);
        return (ThreatClass.Benign, benign?.Variant ?? "", benign?.Campaign ?? "", null);
    }

    /// <summary>The network entity name of an IP, as activity_mv writes it (a.b.c.0/24, or the /64).</summary>
    public static string? NetworkOf(string ip)
    {
        if (!System.Net.IPAddress.TryParse(ip, out var address))
        {
            return null;
        }

        var bytes = address.GetAddressBytes();
        if (bytes.Length == 4)
        {
            return string.Create(CultureInfo.InvariantCulture, $"{bytes[0]}.{bytes[1]}.{bytes[2]}.0/24");
        }

        Array.Clear(bytes, 8, 8);
        return new System.Net.IPAddress(bytes) + "/64";
    }

    private static DateTime Ceiling(DateTime t, TimeSpan step) => new((t.Ticks + step.Ticks - 1) / step.Ticks * step.Ticks, DateTimeKind.Utc);
}
