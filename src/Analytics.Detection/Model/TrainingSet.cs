using System.Globalization;
using Analytics.Detection.Features;
using Analytics.Store;

namespace Analytics.Detection.Model;

/// <summary>
/// One labelled feature vector: an entity at a point in time. For an attack, <see cref="Variant"/> and
/// <see cref="Campaign"/> name the attack variant and campaign; for a benign entity, its population
/// (ordinary, office_nat, cgnat, newsletter, …) and the group it shares addresses with (its own, an
/// office, a carrier), which is what splits and reports group by.
/// </summary>
public sealed record LabelledRow(EntityFeatures Features, ThreatClass Class, string Variant, string Campaign)
{
    /// <summary>When the labelled malicious activity began (for time-to-detect), if known.</summary>
    public DateTime? MaliciousFrom { get; init; }

    public bool IsMalicious => Class != ThreatClass.Benign;
}

/// <summary>A ground-truth interval for one entity.</summary>
public sealed record GroundTruth(EntityRef Entity, string Class, string Variant, string Campaign, DateTime? From, DateTime? To);

/// <summary>An attack campaign as the labels describe it: its family, variant, window and entities.</summary>
public sealed record CampaignInfo(string Id, ThreatClass Family, string Variant, DateTime From, DateTime To, IReadOnlyList<EntityRef> Entities);

/// <summary>
/// The ground truth, indexed by entity: what an entity is at a time. Networks take the labels of the
/// IPs in them: malicious while any of their IPs is, otherwise benign, with the population of their
/// IPs when they share one (an office's /24, a carrier's) and <c>shared_network</c> when they do not.
/// An entity with no label at all (no simulation run or reviewer named it) is unlabelled, and
/// evaluation leaves it out rather than calling it legitimate.
/// </summary>
public sealed class LabelIndex
{
    public const string SharedNetwork = "shared_network";

    /// <summary>A benign time of an entity that is only ever part of attacks (a bot's address between campaigns).</summary>
    public const string AttackerIdle = "attacker_idle";

    /// <summary>The day after an entity's malicious interval: its 24-hour features still show the attack.</summary>
    public const string Aftermath = "aftermath";

    /// <summary>Populations whose benign rows are not legitimate traffic, so alerts on them harm no one.</summary>
    public static bool IsLegitimate(string population) => population is not (AttackerIdle or Aftermath);

    private readonly Dictionary<EntityRef, List<GroundTruth>> _byEntity = [];
    private readonly Dictionary<EntityRef, (string Variant, string Group)> _benign = [];

    public LabelIndex(IEnumerable<GroundTruth> labels)
    {
        var netVariants = new Dictionary<EntityRef, HashSet<string>>();
        foreach (var g in labels)
        {
            Add(g.Entity, g);
            if (g.Entity.Kind == EntityKind.Ip && TrainingSetBuilder.NetworkOf(g.Entity.Name) is { } net)
            {
                var key = new EntityRef(EntityKind.Net, net);
                Add(key, g);
                if (ThreatClasses.FromLabel(g.Class) == ThreatClass.Benign)
                {
                    if (!netVariants.TryGetValue(key, out var set))
                    {
                        netVariants[key] = set = new HashSet<string>(StringComparer.Ordinal);
                    }

                    set.Add(g.Variant);
                }
            }
        }

        foreach (var (entity, list) in _byEntity)
        {
            var benign = list.FirstOrDefault(g => ThreatClasses.FromLabel(g.Class) == ThreatClass.Benign);
            if (entity.Kind == EntityKind.Net)
            {
                var variants = netVariants.GetValueOrDefault(entity);
                _benign[entity] = (variants is { Count: 1 } ? variants.First() : SharedNetwork, "net:" + entity.Name);
            }
            else if (benign is not null)
            {
                _benign[entity] = (benign.Variant, benign.Campaign);
            }
            else
            {
                // Only ever malicious (a bot's address, a name that never existed): outside its campaign it is idle.
                _benign[entity] = (AttackerIdle, list[0].Campaign);
            }
        }

        Campaigns = _byEntity
            .SelectMany(e => e.Value.Where(g => e.Key.Kind != EntityKind.Net && ThreatClasses.FromLabel(g.Class) != ThreatClass.Benign).Select(g => (e.Key, g)))
            .GroupBy(x => x.g.Campaign, StringComparer.Ordinal)
            .Select(c => new CampaignInfo(c.Key, ThreatClasses.FromLabel(c.First().g.Class), c.First().g.Variant,
                c.Min(x => x.g.From ?? DateTime.MinValue), c.Max(x => x.g.To ?? DateTime.MaxValue), [.. c.Select(x => x.Key).Distinct()]))
            .OrderBy(c => c.Id, StringComparer.Ordinal)
            .ToList();
    }

    public IReadOnlyList<CampaignInfo> Campaigns { get; }

    public bool IsLabelled(EntityRef entity) => _byEntity.ContainsKey(entity);

    /// <summary>
    /// The group an entity is split by: the first attack campaign it takes part in (so a campaign's
    /// addresses, the accounts it used or attacked, and their networks fall on one side), else the
    /// group it shares addresses with (its own, an office, a carrier, an ISP pool).
    /// </summary>
    public string GroupOf(EntityRef entity)
    {
        if (!_byEntity.TryGetValue(entity, out var list))
        {
            return entity.ToString();
        }

        foreach (var g in list)
        {
            if (ThreatClasses.FromLabel(g.Class) != ThreatClass.Benign)
            {
                return g.Campaign;
            }
        }

        return _benign[entity].Group;
    }

    /// <summary>The class of an entity at <paramref name="t"/>: a malicious interval overlapping the hour before t wins.</summary>
    public (ThreatClass Class, string Variant, string Campaign, DateTime? From) LabelOf(EntityRef entity, DateTime t)
    {
        if (!_byEntity.TryGetValue(entity, out var list))
        {
            return (ThreatClass.Benign, "", "", null);
        }

        string? after = null;
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

            if (from < t && to >= t.AddHours(-25))
            {
                after = g.Campaign;
            }
        }

        if (after is not null)
        {
            return (ThreatClass.Benign, Aftermath, after, null);
        }

        var (variant, group) = _benign[entity];
        return (ThreatClass.Benign, variant, group, null);
    }

    private void Add(EntityRef key, GroundTruth g)
    {
        if (!_byEntity.TryGetValue(key, out var list))
        {
            _byEntity[key] = list = [];
        }

        list.Add(g);
    }
}

/// <summary>
/// Builds labelled rows from the store: feature vectors at regular points in time, for the entities
/// the scorer would see there (active within the lookback before the point), each labelled with the
/// class of any ground-truth interval that overlaps the hour before the point. At a one-minute step
/// and a one-minute lookback this is the production scoring cadence: the scorer runs every few
/// seconds on the entities active since its last pass, and features move once a minute.
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

    /// <summary>Rows every <paramref name="step"/> over the whole recorded span, for the entities active since the previous point.</summary>
    public Task<List<LabelledRow>> BuildAsync(TimeSpan step, IProgress<double>? progress = null, CancellationToken cancellationToken = default) =>
        BuildAsync(step, step, null, null, progress, cancellationToken);

    /// <summary>
    /// Rows every <paramref name="step"/> from <paramref name="from"/> to <paramref name="to"/> (default:
    /// the recorded span), for the entities active within <paramref name="lookback"/> before each point.
    /// Points fall on whole minutes (features are computed as of a minute's start).
    /// </summary>
    public async Task<List<LabelledRow>> BuildAsync(TimeSpan step, TimeSpan lookback, DateTime? from, DateTime? to, IProgress<double>? progress = null,
        CancellationToken cancellationToken = default)
    {
        var span = await ActivitySpanAsync(cancellationToken) ?? throw new InvalidOperationException(
            "The store holds no activity: record traffic first (./analytics simulate --scenario train).");
        var truth = new LabelIndex(await ReadLabelsAsync(cancellationToken));
        var rows = new List<LabelledRow>();
        var first = Ceiling(from ?? span.First + step, TimeSpan.FromMinutes(1));
        var last = to ?? span.Last.AddMinutes(1) + step;
        var points = Math.Max(1, (int)((last - first).Ticks / step.Ticks) + 1);

        // Points go to the store a chunk at a time: one query computes every point of the chunk.
        var perChunk = Math.Max(1, (int)(ChunkSpan.Ticks / step.Ticks));
        var done = 0;
        for (var t = first; t <= last; t += step * perChunk)
        {
            var end = t + (step * (perChunk - 1)) < last ? t + (step * (perChunk - 1)) : last;
            foreach (var f in await _features.ReadManyAsync(t, end, step, lookback, cancellationToken))
            {
                var (cls, variant, campaign, malicious) = truth.LabelOf(f.Entity, f.AsOf);
                if (truth.IsLabelled(f.Entity))
                {
                    rows.Add(new LabelledRow(f, cls, variant, campaign) { MaliciousFrom = malicious });
                }
            }

            done += perChunk;
            progress?.Report(Math.Min(1.0, done / (double)points));
        }

        rows.Sort(static (a, b) => a.Features.AsOf != b.Features.AsOf ? a.Features.AsOf.CompareTo(b.Features.AsOf) : string.CompareOrdinal(a.Features.Entity.ToString(), b.Features.Entity.ToString()));
        return rows;
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

    /// <summary>Scoring points per batch query: two hours' worth.</summary>
    private static readonly TimeSpan ChunkSpan = TimeSpan.FromHours(2);

    private static DateTime Ceiling(DateTime t, TimeSpan step) => new((t.Ticks + step.Ticks - 1) / step.Ticks * step.Ticks, DateTimeKind.Utc);
}
