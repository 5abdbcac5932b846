using System.Globalization;
using Analytics.Store;

namespace Analytics.Detection.Model;

/// <summary>Per-campaign recall of one attack family, with a bootstrap 95 % interval and time to detect.</summary>
public sealed record FamilyRecall(
    string Family,
    int Campaigns,
    int Detected,
    double Recall,
    double RecallLow,
    double RecallHigh,
    double? MedianMinutesToDetect,
    double? P90MinutesToDetect,
    IReadOnlyList<VariantRecall> Variants)
{
    /// <summary>
    /// The stricter reading: campaigns whose first alert of the right class (a rule's counts for any)
    /// came within <see cref="HonestEvaluator.Prompt"/> of their first malicious event. Over days of
    /// scoring every minute, "any entity of the campaign flagged once, as anything" is easy to meet.
    /// </summary>
    public int DetectedPromptly { get; init; }

    public double RecallPromptly { get; init; }
}

/// <summary>Per-campaign recall of one attack variant (<see cref="HeldOut"/>: kept out of training entirely).</summary>
public sealed record VariantRecall(string Variant, bool HeldOut, int Campaigns, int Detected, double? MedianMinutesToDetect);

/// <summary>What one detector did to one legitimate population: alerts (flag episodes) per 10,000 entity-days.</summary>
public sealed record PopulationHarm(string Population, int Entities, int EntityDays, int Alerts, int AlertedEntities, double AlertsPer10kEntityDays);

/// <summary>One detector on the test world.</summary>
public sealed record DetectorReport(
    string Detector,
    string Description,
    IReadOnlyList<FamilyRecall> Families,
    int BenignAlerts,
    int BenignEntityDays,
    double BenignAlertsPer10kEntityDays,
    IReadOnlyList<PopulationHarm> Populations)
{
    /// <summary>The first benign alert episodes (up to 20): which legitimate entity, when, as what.</summary>
    public IReadOnlyList<string> BenignExamples { get; init; } = [];

    /// <summary>The campaigns it never alerted on while they were scored: which, what variant, through which entities.</summary>
    public IReadOnlyList<string> MissedCampaigns { get; init; } = [];
}

/// <summary>What the fast path did to one population's sessions (from the throttle events recorded).</summary>
public sealed record FastPathHarm(string Population, bool Legitimate, long Sessions, long ThrottledSessions, double ThrottledPer10kSessions);

/// <summary>One of the issue's targets, and whether this evaluation met it.</summary>
public sealed record TargetCheck(string Target, string Value, bool Met);

/// <summary>Row-level precision and recall per class (every scoring of every entity counts once).</summary>
public sealed record RowMetrics(string Class, int Support, double Precision, double Recall);

/// <summary>An evaluation at the production scoring cadence on one recorded world.</summary>
public sealed record HonestReport
{
    public DateTime CreatedAt { get; init; }

    /// <summary>What was evaluated on: the store's simulation runs and span.</summary>
    public string World { get; init; } = "";

    public string Cadence { get; init; } = "";

    public DateTime From { get; init; }

    public DateTime To { get; init; }

    public int ScoringPoints { get; init; }

    public int Rows { get; init; }

    public string ModelVersion { get; init; } = "";

    public string? HeldOutVariant { get; init; }

    public IReadOnlyList<DetectorReport> Detectors { get; init; } = [];

    public IReadOnlyList<FastPathHarm> FastPath { get; init; } = [];

    public IReadOnlyList<RowMetrics> ModelRows { get; init; } = [];

    public IReadOnlyList<TargetCheck> Targets { get; init; } = [];

    public IReadOnlyList<string> Notes { get; init; } = [];
}

/// <summary>
/// Measures detectors the way production runs them: an alert is an action on an entity at a time (a
/// model flag at a scoring pass, a fail2ban ban, a Postfix error limit), labelled by what the entity
/// was then. A campaign counts as detected when any of its entities (addresses, accounts it used or
/// attacked) drew an alert while labelled part of it; benign alerts are counted as episodes (an alert
/// after 15 minutes without one) on legitimate entities, per 10,000 entity-days of those entities at
/// the scoring cadence, overall and per population.
/// </summary>
public static class HonestEvaluator
{
    /// <summary>An alert after this long without one on the same entity is a new episode (the policy's throttle hold).</summary>
    public static readonly TimeSpan EpisodeGap = TimeSpan.FromMinutes(15);

    /// <summary>Detection within this long of a campaign's first malicious event, with the right class, is prompt.</summary>
    public static readonly TimeSpan Prompt = TimeSpan.FromHours(1);

    public static DetectorReport Measure(string detector, string description, IEnumerable<DetectorAction> alerts, LabelIndex labels,
        IReadOnlyList<LabelledRow> rows, IReadOnlyDictionary<string, DateTime> firstEvents, string? heldOut, int seed = 17)
    {
        // Denominators from the rows: the legitimate entity-days the scorer saw, per population.
        var days = new Dictionary<string, HashSet<(EntityRef, DateTime)>>(StringComparer.Ordinal);
        var entities = new Dictionary<string, HashSet<EntityRef>>(StringComparer.Ordinal);
        var scoredCampaigns = new HashSet<string>(StringComparer.Ordinal);
        foreach (var r in rows)
        {
            if (r.IsMalicious)
            {
                scoredCampaigns.Add(r.Campaign);
                continue;
            }

            if (!LabelIndex.IsLegitimate(r.Variant))
            {
                continue;
            }

            Set(days, r.Variant).Add((r.Features.Entity, r.Features.AsOf.Date));
            Set(entities, r.Variant).Add(r.Features.Entity);
        }

        var detectedAt = new Dictionary<string, DateTime>(StringComparer.Ordinal);
        var rightClassAt = new Dictionary<string, DateTime>(StringComparer.Ordinal);
        var examples = new List<string>();
        var benign = new Dictionary<string, (int Alerts, HashSet<EntityRef> Entities)>(StringComparer.Ordinal);
        var last = new Dictionary<EntityRef, DateTime>();
        foreach (var a in alerts.OrderBy(a => a.At))
        {
            var (cls, variant, campaign, _) = labels.LabelOf(a.Entity, a.At);
            if (cls != ThreatClass.Benign)
            {
                if (!detectedAt.ContainsKey(campaign))
                {
                    detectedAt[campaign] = a.At;
                }

                if ((a.Class is null || a.Class == cls) && !rightClassAt.ContainsKey(campaign))
                {
                    rightClassAt[campaign] = a.At;
                }

                continue;
            }

            var newEpisode = !last.TryGetValue(a.Entity, out var previous) || a.At - previous > EpisodeGap;
            last[a.Entity] = a.At;
            if (!LabelIndex.IsLegitimate(variant) || !newEpisode)
            {
                continue;
            }

            if (!benign.TryGetValue(variant, out var b))
            {
                b = (0, []);
            }

            b.Entities.Add(a.Entity);
            benign[variant] = (b.Alerts + 1, b.Entities);
            if (examples.Count < 20)
            {
                examples.Add(string.Create(CultureInfo.InvariantCulture, $"{a.At:yyyy-MM-dd HH:mm} {a.Entity} ({variant}){(a.Class is { } c ? " as " + c.ToText() : "")}"));
            }
        }

        var families = new List<FamilyRecall>();
        var missed = new List<string>();
        foreach (var family in ThreatClasses.Malicious)
        {
            var campaigns = labels.Campaigns.Where(c => c.Family == family && scoredCampaigns.Contains(c.Id)).ToList();
            if (campaigns.Count == 0)
            {
                continue;
            }

            double? Minutes(CampaignInfo c) =>
                detectedAt.TryGetValue(c.Id, out var at) && firstEvents.TryGetValue(c.Id, out var first) ? Math.Max(0, (at - first).TotalMinutes) : null;
            var hits = campaigns.Select(c => detectedAt.ContainsKey(c.Id)).ToArray();
            missed.AddRange(campaigns.Where(c => !detectedAt.ContainsKey(c.Id))
                .Select(c => string.Create(CultureInfo.InvariantCulture, $"{c.Id} ({c.Variant}, {c.From:yyyy-MM-dd HH:mm} to {c.To:yyyy-MM-dd HH:mm}): {string.Join(", ", c.Entities.Take(5))}{(c.Entities.Count > 5 ? ", …" : "")}")));
            var (low, high) = Bootstrap(hits, seed);
            var minutes = campaigns.Select(Minutes).Where(m => m is not null).Select(m => m!.Value).Order().ToList();
            var variants = campaigns.GroupBy(c => c.Variant, StringComparer.Ordinal).OrderBy(g => g.Key, StringComparer.Ordinal)
                .Select(g =>
                {
                    var vm = g.Select(Minutes).Where(m => m is not null).Select(m => m!.Value).Order().ToList();
                    return new VariantRecall(g.Key, g.Key == heldOut, g.Count(), g.Count(c => detectedAt.ContainsKey(c.Id)), Quantile(vm, 0.5));
                }).ToList();
            var prompt = campaigns.Count(c => rightClassAt.TryGetValue(c.Id, out var at) && firstEvents.TryGetValue(c.Id, out var first) && at - first <= Prompt);
            families.Add(new FamilyRecall(family.ToText(), campaigns.Count, hits.Count(h => h), hits.Count(h => h) / (double)hits.Length, low, high,
                Quantile(minutes, 0.5), Quantile(minutes, 0.9), variants)
            {
                DetectedPromptly = prompt,
                RecallPromptly = prompt / (double)campaigns.Count,
            });
        }

        var populations = days.Keys.Union(benign.Keys).Order(StringComparer.Ordinal).Select(p =>
        {
            var d = days.GetValueOrDefault(p)?.Count ?? 0;
            var (alerts, alerted) = benign.TryGetValue(p, out var b) ? b : (0, []);
            return new PopulationHarm(p, entities.GetValueOrDefault(p)?.Count ?? 0, d, alerts, alerted.Count, Per10k(alerts, d));
        }).ToList();
        var totalDays = populations.Sum(p => p.EntityDays);
        var totalAlerts = populations.Sum(p => p.Alerts);
        return new DetectorReport(detector, description, families, totalAlerts, totalDays, Per10k(totalAlerts, totalDays), populations) { BenignExamples = examples, MissedCampaigns = missed };
    }

    /// <summary>Row-level precision and recall per class, for the model's flags on the rows.</summary>
    public static List<RowMetrics> Rows(IReadOnlyList<LabelledRow> rows, IReadOnlyList<ThreatClass> predicted)
    {
        var list = new List<RowMetrics>();
        foreach (var cls in ThreatClasses.All)
        {
            int tp = 0, fp = 0, fn = 0;
            for (var i = 0; i < rows.Count; i++)
            {
                var actual = rows[i].Class == cls;
                var said = predicted[i] == cls;
                tp += actual && said ? 1 : 0;
                fp += !actual && said ? 1 : 0;
                fn += actual && !said ? 1 : 0;
            }

            list.Add(new RowMetrics(cls.ToText(), tp + fn, tp + fp == 0 ? 0 : tp / (double)(tp + fp), tp + fn == 0 ? 0 : tp / (double)(tp + fn)));
        }

        return list;
    }

    /// <summary>
    /// Sessions per population and how many of them the server acted on (a throttle event: tarpit,
    /// hold, lock, rate refusal) in [from, to). A session from an address its campaign was acting
    /// through is the attack's; any other belongs to its account's population when it named a labelled
    /// account, else to its client address's.
    /// </summary>
    public static async Task<List<FastPathHarm>> FastPathAsync(IClickHouseStore store, LabelIndex labels, DateTime from, DateTime to, CancellationToken cancellationToken = default)
    {
        const string sql = """
            SELECT min(ts), replaceOne(IPv6NumToString(any(client_ip)), '::ffff:', ''), anyIf(user, user != ''), countIf(kind = 'throttle') > 0
            FROM events
            WHERE ts >= {from:DateTime64(3, 'UTC')} AND ts < {to:DateTime64(3, 'UTC')}
            GROUP BY session_id
            """;
        var result = await store.QueryAsync(sql, QueryParameters.Of(("from", from), ("to", to)), cancellationToken);
        var counts = new Dictionary<string, (bool Legit, long Sessions, long Throttled)>(StringComparer.Ordinal);
        foreach (var r in result.Rows)
        {
            var at = (DateTime)r[0]!;
            var user = (string)r[2]!;
            var ip = new EntityRef(EntityKind.Ip, (string)r[1]!);
            var (cls, variant, _, _) = labels.LabelOf(ip, at.AddMinutes(1));
            if (cls == ThreatClass.Benign && variant != LabelIndex.AttackerIdle)
            {
                variant = user.Length > 0 && labels.IsLabelled(EntityRef.User(user)) ? labels.PopulationOf(EntityRef.User(user)) : labels.PopulationOf(ip);
            }

            var key = cls == ThreatClass.Benign ? variant : cls.ToText() + "/" + variant;
            var legit = cls == ThreatClass.Benign && LabelIndex.IsLegitimate(variant);
            var c = counts.GetValueOrDefault(key, (legit, 0, 0));
            counts[key] = (legit, c.Sessions + 1, c.Throttled + (Convert.ToBoolean(r[3], CultureInfo.InvariantCulture) ? 1 : 0));
        }

        return [.. counts.OrderBy(c => !c.Value.Legit).ThenBy(c => c.Key, StringComparer.Ordinal)
            .Select(c => new FastPathHarm(c.Key, c.Value.Legit, c.Value.Sessions, c.Value.Throttled, c.Value.Sessions == 0 ? 0 : c.Value.Throttled * 10_000.0 / c.Value.Sessions))];
    }

    /// <summary>Percentile bootstrap 95 % interval of a proportion, resampling campaigns (2,000 resamples, fixed seed).</summary>
    public static (double Low, double High) Bootstrap(bool[] hits, int seed, int resamples = 2000)
    {
        if (hits.Length == 0)
        {
            return (0, 0);
        }

        var random = new Random(seed);
        var means = new double[resamples];
        for (var b = 0; b < resamples; b++)
        {
            var k = 0;
            for (var i = 0; i < hits.Length; i++)
            {
                k += hits[random.Next(hits.Length)] ? 1 : 0;
            }

            means[b] = k / (double)hits.Length;
        }

        Array.Sort(means);
        return (means[(int)(0.025 * (resamples - 1))], means[(int)Math.Ceiling(0.975 * (resamples - 1))]);
    }

    public static double Per10k(int alerts, int entityDays) => entityDays == 0 ? 0 : alerts * 10_000.0 / entityDays;

    private static double? Quantile(List<double> sorted, double q) => sorted.Count == 0 ? null : sorted[Math.Clamp((int)Math.Ceiling(q * sorted.Count) - 1, 0, sorted.Count - 1)];

    private static HashSet<T> Set<T>(Dictionary<string, HashSet<T>> map, string key)
    {
        if (!map.TryGetValue(key, out var set))
        {
            map[key] = set = [];
        }

        return set;
    }

    public static void WriteText(TextWriter o, HonestReport report)
    {
        static string P(double v) => v.ToString("0.000", CultureInfo.InvariantCulture);
        static string M(double? v) => v is null ? "-" : v.Value.ToString("0", CultureInfo.InvariantCulture);
        o.WriteLine($"evaluation on {report.World}");
        o.WriteLine($"  {report.Cadence}: {report.ScoringPoints:N0} scoring points from {report.From:yyyy-MM-dd HH:mm} to {report.To:yyyy-MM-dd HH:mm}, {report.Rows:N0} entity scorings; model {report.ModelVersion}");
        o.WriteLine();
        o.WriteLine("per-campaign recall (bootstrap 95 % interval), minutes from the first malicious event to the first alert (median / p90),");
        o.WriteLine("and the stricter recall: an alert of the right class within 1 h of the campaign's first malicious event");
        o.WriteLine($"  {"detector",-26}{"family",-13}{"campaigns",10}{"recall",8}{"95 % CI",16}{"ttd med",9}{"p90",7}{"1 h, class",12}");
        foreach (var d in report.Detectors)
        {
            foreach (var f in d.Families)
            {
                o.WriteLine($"  {d.Detector,-26}{f.Family,-13}{f.Detected,4}/{f.Campaigns,-5}{P(f.Recall),8}   [{P(f.RecallLow)}, {P(f.RecallHigh)}]{M(f.MedianMinutesToDetect),9}{M(f.P90MinutesToDetect),7}{P(f.RecallPromptly),12}");
            }
        }

        var model = report.Detectors[0];
        o.WriteLine();
        o.WriteLine($"per attack variant ({model.Detector}; * held out of training)");
        foreach (var f in model.Families)
        {
            foreach (var v in f.Variants)
            {
                o.WriteLine($"  {(v.HeldOut ? "* " : "  ") + v.Variant,-24}{f.Family,-13}{v.Detected,4}/{v.Campaigns,-5}  ttd med {M(v.MedianMinutesToDetect)}");
            }
        }

        foreach (var m in model.MissedCampaigns)
        {
            o.WriteLine($"    missed: {m}");
        }

        o.WriteLine();
        o.WriteLine("benign alerts (episodes) per 10,000 entity-days of legitimate entities at the scoring cadence");
        o.WriteLine($"  {"detector",-26}{"alerts",8}{"entity-days",13}{"per 10k",10}");
        foreach (var d in report.Detectors)
        {
            o.WriteLine($"  {d.Detector,-26}{d.BenignAlerts,8}{d.BenignEntityDays,13:N0}{d.BenignAlertsPer10kEntityDays,10:0.00}");
        }

        foreach (var example in report.Detectors[0].BenignExamples)
        {
            o.WriteLine($"    {report.Detectors[0].Detector} benign alert: {example}");
        }

        o.WriteLine();
        o.WriteLine("per legitimate population: alerts (alerted entities) per detector, and sessions the fast path acted on");
        var names = report.Detectors.Select(d => d.Detector).ToList();
        o.WriteLine($"  {"population",-18}{"entity-days",12}" + string.Concat(names.Select(n => $"{Short(n),16}")) + $"{"fast path",18}");
        var fast = report.FastPath.ToDictionary(f => f.Population, StringComparer.Ordinal);
        foreach (var p in model.Populations)
        {
            var line = $"  {p.Population,-18}{p.EntityDays,12:N0}";
            foreach (var d in report.Detectors)
            {
                var h = d.Populations.FirstOrDefault(x => x.Population == p.Population);
                line += $"{(h is null ? "0" : $"{h.Alerts} ({h.AlertedEntities})"),16}";
            }

            var f = fast.GetValueOrDefault(p.Population);
            line += $"{(f is null ? "-" : $"{f.ThrottledSessions}/{f.Sessions}"),18}";
            o.WriteLine(line);
        }

        o.WriteLine();
        o.WriteLine("fast path on attack traffic: sessions acted on / sessions");
        foreach (var f in report.FastPath.Where(f => !f.Legitimate))
        {
            o.WriteLine($"  {f.Population,-34}{f.ThrottledSessions,10:N0} / {f.Sessions:N0}");
        }

        o.WriteLine();
        o.WriteLine($"row-level ({model.Detector} flags, every scoring counted)");
        foreach (var r in report.ModelRows)
        {
            o.WriteLine($"  {r.Class,-14} support {r.Support,9:N0}  precision {P(r.Precision)}  recall {P(r.Recall)}");
        }

        o.WriteLine();
        o.WriteLine("targets");
        foreach (var t in report.Targets)
        {
            o.WriteLine($"  [{(t.Met ? "met" : "MISSED"),-6}] {t.Target}: {t.Value}");
        }

        foreach (var n in report.Notes)
        {
            o.WriteLine("  note: " + n);
        }
    }

    private static string Short(string name) => name.Length <= 15 ? name : name[..15];
}
