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
/// The ground truth, indexed by entity: what an entity is at a time. With the attack activity read
/// from the events (<see cref="AddActivity"/>), an entity is malicious at t when its campaign acted
/// through it in the hour before t — a bot's address sent something, an account was tried or used
/// from a bot's address — not merely because t falls in the campaign's window: an account targeted
/// by a three-day spray is under attack in the minutes it is tried, and its owner's own mail the rest
/// of the time is legitimate. The day after such activity is <see cref="Aftermath"/>. Without
/// activity (labels from reviewers only) the campaign window decides. Networks take the labels of
/// the IPs in them: malicious while any of their IPs is, otherwise benign, with the population of
/// their IPs when they share one (an office's /24, a carrier's) and <c>shared_network</c> when they do
/// not. An entity with no label at all (no simulation run or reviewer named it) is unlabelled, and
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
    private readonly Dictionary<string, CampaignInfo> _campaigns = new(StringComparer.Ordinal);
    private Dictionary<EntityRef, (DateTime Minute, string Campaign)[]>? _activity;
    private readonly Dictionary<string, DateTime> _firstActivity = new(StringComparer.Ordinal);

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
        foreach (var c in Campaigns)
        {
            _campaigns[c.Id] = c;
        }
    }

    /// <summary>
    /// The minutes each campaign acted through each entity (from the events: its addresses' events, and
    /// the accounts those addresses named). Networks get the minutes of their addresses. From then on,
    /// <see cref="LabelOf"/> labels by activity.
    /// </summary>
    public void AddActivity(IEnumerable<(EntityRef Entity, string Campaign, DateTime Minute)> activity)
    {
        var lists = new Dictionary<EntityRef, List<(DateTime, string)>>();
        void Add(EntityRef e, DateTime m, string c)
        {
            if (!lists.TryGetValue(e, out var list))
            {
                lists[e] = list = [];
            }

            list.Add((m, c));
        }

        foreach (var (entity, campaign, minute) in activity)
        {
            if (!_campaigns.ContainsKey(campaign))
            {
                continue;
            }

            Add(entity, minute, campaign);
            if (entity.Kind == EntityKind.Ip && TrainingSetBuilder.NetworkOf(entity.Name) is { } net)
            {
                Add(new EntityRef(EntityKind.Net, net), minute, campaign);
            }

            _firstActivity[campaign] = _firstActivity.TryGetValue(campaign, out var first) && first <= minute ? first : minute;
        }

        _activity = lists.ToDictionary(l => l.Key, l => l.Value.Distinct().OrderBy(x => x.Item1).ToArray());
    }

    /// <summary>The population an entity belongs to when it is not attacking (its benign label's variant).</summary>
    public string PopulationOf(EntityRef entity) => _benign.TryGetValue(entity, out var b) ? b.Variant : "";

    /// <summary>When each campaign first acted (its first minute of activity), once activity is known.</summary>
    public IReadOnlyDictionary<string, DateTime> FirstActivity => _firstActivity;

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

    /// <summary>
    /// The class of an entity at <paramref name="t"/>: with activity known, malicious when its campaign
    /// acted through it in the hour before t; otherwise when a malicious interval overlaps that hour.
    /// </summary>
    public (ThreatClass Class, string Variant, string Campaign, DateTime? From) LabelOf(EntityRef entity, DateTime t)
    {
        if (!_byEntity.TryGetValue(entity, out var list))
        {
            return (ThreatClass.Benign, "", "", null);
        }

        if (_activity is not null)
        {
            if (_activity.TryGetValue(entity, out var minutes))
            {
                // The latest activity before t.
                var lo = 0;
                var hi = minutes.Length - 1;
                var found = -1;
                while (lo <= hi)
                {
                    var mid = (lo + hi) / 2;
                    if (minutes[mid].Minute < t)
                    {
                        found = mid;
                        lo = mid + 1;
                    }
                    else
                    {
                        hi = mid - 1;
                    }
                }

                if (found >= 0 && minutes[found].Minute >= t.AddHours(-1))
                {
                    var c = _campaigns[minutes[found].Campaign];
                    return (c.Family, c.Variant, c.Id, _firstActivity.GetValueOrDefault(c.Id, c.From));
                }

                if (found >= 0 && minutes[found].Minute >= t.AddHours(-25))
                {
                    return (ThreatClass.Benign, Aftermath, minutes[found].Campaign, null);
                }
            }

            var (population, benignGroup) = _benign[entity];
            return (ThreatClass.Benign, population, benignGroup, null);
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

    private const string ActivitySql = """
        SELECT replaceOne(IPv6NumToString(e.client_ip), '::ffff:', '') AS ip, e.user AS user, l.campaign AS campaign, toStartOfMinute(e.ts) AS minute
        FROM events AS e
        INNER JOIN
        (
            SELECT ip, campaign, malicious_from, malicious_to FROM labels FINAL WHERE entity_kind = 'ip' AND class != 'benign'
        ) AS l ON e.client_ip = l.ip
        WHERE e.ts >= l.malicious_from AND e.ts <= l.malicious_to
        GROUP BY ip, user, campaign, minute
        """;

    /// <summary>
    /// The labels, with each campaign's activity from the events: the minutes its addresses acted, and
    /// the accounts they named (tried, used) in those minutes.
    /// </summary>
    public async Task<LabelIndex> ReadLabelIndexAsync(CancellationToken cancellationToken = default)
    {
        var index = new LabelIndex(await ReadLabelsAsync(cancellationToken));
        var result = await _store.QueryAsync(ActivitySql, null, cancellationToken);
        var activity = new List<(EntityRef, string, DateTime)>(result.Rows.Count * 2);
        foreach (var r in result.Rows)
        {
            var campaign = (string)r[2]!;
            var minute = DateTime.SpecifyKind((DateTime)r[3]!, DateTimeKind.Utc);
            activity.Add((new EntityRef(EntityKind.Ip, (string)r[0]!), campaign, minute));
            if (r[1] is string user && user.Length > 0)
            {
                activity.Add((EntityRef.User(user), campaign, minute));
            }
        }

        index.AddActivity(activity);
        return index;
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
        var truth = await ReadLabelIndexAsync(cancellationToken);
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
