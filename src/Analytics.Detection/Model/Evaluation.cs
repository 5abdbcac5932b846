using System.Globalization;

namespace Analytics.Detection.Model;

public sealed record ClassMetrics(string Class, int Support, double Precision, double Recall, double F1, double? PrAuc);

public sealed record VariantMetrics(string Variant, string Class, bool HeldOut, int Rows, int Entities, double Recall, double EntityRecall, double? MedianMinutesToDetect);

/// <summary>How one detector (the model or the rules) did on the test rows.</summary>
public sealed record DetectorMetrics(
    string Detector,
    IReadOnlyList<ClassMetrics> Classes,
    IReadOnlyList<VariantMetrics> Variants,
    double FalsePositiveRateLegitimateUsers,
    int LegitimateUsers,
    double MaliciousDetectionRecall);

public sealed record EvaluationReport(
    DateTime CreatedAt,
    int TestRows,
    string Split,
    string? HeldOutVariant,
    DetectorMetrics Model,
    DetectorMetrics Rules);

/// <summary>Per-class precision/recall/F1/PR-AUC, per-variant recall and time to detect, FPR on legitimate users.</summary>
public static class Evaluator
{
    public sealed record Scored(LabelledRow Row, ThreatClass Predicted, IReadOnlyDictionary<string, float>? Probabilities);

    public static DetectorMetrics Measure(string detector, IReadOnlyList<Scored> rows, string? heldOutVariant)
    {
        var classes = new List<ClassMetrics>();
        foreach (var cls in ThreatClasses.All)
        {
            var tp = rows.Count(r => r.Predicted == cls && r.Row.Class == cls);
            var fp = rows.Count(r => r.Predicted == cls && r.Row.Class != cls);
            var fn = rows.Count(r => r.Predicted != cls && r.Row.Class == cls);
            var precision = tp + fp == 0 ? 0 : tp / (double)(tp + fp);
            var recall = tp + fn == 0 ? 0 : tp / (double)(tp + fn);
            var f1 = precision + recall == 0 ? 0 : 2 * precision * recall / (precision + recall);
            double? prAuc = rows.All(r => r.Probabilities is not null)
                ? AveragePrecision(rows.Select(r => (r.Probabilities!.GetValueOrDefault(cls.ToText()), r.Row.Class == cls)))
                : null;
            classes.Add(new ClassMetrics(cls.ToText(), tp + fn, precision, recall, f1, prAuc));
        }

        var variants = rows.Where(r => r.Row.IsMalicious)
            .GroupBy(r => (r.Row.Variant.Length == 0 ? r.Row.Class.ToText() : r.Row.Variant, r.Row.Class.ToText()))
            .OrderBy(g => g.Key.Item2, StringComparer.Ordinal).ThenBy(g => g.Key.Item1, StringComparer.Ordinal)
            .Select(g =>
            {
                var entities = g.GroupBy(r => r.Row.Features.Entity).ToList();
                var detected = entities.Count(e => e.Any(r => r.Predicted != ThreatClass.Benign));
                var minutes = g.GroupBy(r => r.Row.Campaign)
                    .Select(c =>
                    {
                        // From the labelled start of the campaign. Campaigns whose start the test rows do not
                        // cover (they began in the training period) say nothing about time to detect.
                        var start = c.Min(r => r.Row.MaliciousFrom ?? r.Row.Features.AsOf);
                        if (c.Min(r => r.Row.Features.AsOf) > start.AddMinutes(75))
                        {
                            return (double?)null;
                        }

                        var hit = c.Where(r => r.Predicted != ThreatClass.Benign).Select(r => (DateTime?)r.Row.Features.AsOf).Min();
                        return hit is null ? double.PositiveInfinity : (double?)Math.Max(0, (hit.Value - start).TotalMinutes);
                    })
                    .Where(m => m is not null).Select(m => m!.Value).Order().ToList();
                var medianMinutes = minutes.Count == 0 ? (double?)null : minutes[minutes.Count / 2];
                return new VariantMetrics(g.Key.Item1, g.Key.Item2, g.Key.Item1 == heldOutVariant, g.Count(), entities.Count,
                    g.Count(r => r.Predicted != ThreatClass.Benign) / (double)g.Count(),
                    entities.Count == 0 ? 0 : detected / (double)entities.Count,
                    medianMinutes);
            })
            .ToList();

        var legitimateUsers = rows.Where(r => r.Row.Features.Entity.Kind == EntityKind.User && !r.Row.IsMalicious)
            .GroupBy(r => r.Row.Features.Entity).ToList();
        var flaggedUsers = legitimateUsers.Count(u => u.Any(r => r.Predicted != ThreatClass.Benign));
        var malicious = rows.Where(r => r.Row.IsMalicious).ToList();
        return new DetectorMetrics(detector, classes, variants,
            legitimateUsers.Count == 0 ? 0 : flaggedUsers / (double)legitimateUsers.Count, legitimateUsers.Count,
            malicious.Count == 0 ? 0 : malicious.Count(r => r.Predicted != ThreatClass.Benign) / (double)malicious.Count);
    }

    // Average precision (the usual PR-AUC estimate): mean precision at each true positive, by descending score.
    internal static double? AveragePrecision(IEnumerable<(float Score, bool Positive)> scored)
    {
        var sorted = scored.OrderByDescending(s => s.Score).ToList();
        var positives = sorted.Count(s => s.Positive);
        if (positives == 0)
        {
            return null;
        }

        double sum = 0;
        var tp = 0;
        for (var i = 0; i < sorted.Count; i++)
        {
            if (sorted[i].Positive)
            {
                tp++;
                sum += tp / (double)(i + 1);
            }
        }

        return sum / positives;
    }

    public static void WriteText(TextWriter output, EvaluationReport report)
    {
        static string P(double v) => v.ToString("0.000", CultureInfo.InvariantCulture);
        output.WriteLine($"evaluation on {report.TestRows} held-out rows ({report.Split})");
        output.WriteLine();
        output.WriteLine($"{"class",-14}{"support",8}  {"model P",8}{"R",7}{"F1",7}{"PR-AUC",8}   {"rules P",8}{"R",7}{"F1",7}");
        for (var i = 0; i < report.Model.Classes.Count; i++)
        {
            var m = report.Model.Classes[i];
            var r = report.Rules.Classes[i];
            output.WriteLine($"{m.Class,-14}{m.Support,8}  {P(m.Precision),8}{P(m.Recall),7}{P(m.F1),7}{(m.PrAuc is { } a ? P(a) : "-"),8}   {P(r.Precision),8}{P(r.Recall),7}{P(r.F1),7}");
        }

        output.WriteLine();
        output.WriteLine($"{"attack variant",-28}{"entities",9}  {"model: entities caught",23}{"rows",7}{"min to detect",14}   {"rules: entities",16}{"rows",7}{"min",7}");
        foreach (var v in report.Model.Variants)
        {
            var r = report.Rules.Variants.FirstOrDefault(x => x.Variant == v.Variant && x.Class == v.Class);
            var name = (v.HeldOut ? "* " : "") + v.Variant + " (" + v.Class + ")";
            output.WriteLine($"{name,-28}{v.Entities,9}  {P(v.EntityRecall),23}{P(v.Recall),7}{Minutes(v.MedianMinutesToDetect),14}   {P(r?.EntityRecall ?? 0),16}{P(r?.Recall ?? 0),7}{Minutes(r?.MedianMinutesToDetect),7}");
        }

        if (report.HeldOutVariant is not null)
        {
            output.WriteLine($"* {report.HeldOutVariant}: kept out of training entirely");
        }

        output.WriteLine();
        output.WriteLine($"legitimate users flagged (FPR): model {P(report.Model.FalsePositiveRateLegitimateUsers)}   rules {P(report.Rules.FalsePositiveRateLegitimateUsers)}   (of {report.Model.LegitimateUsers} users)");
        output.WriteLine($"malicious rows caught (any class): model {P(report.Model.MaliciousDetectionRecall)}   rules {P(report.Rules.MaliciousDetectionRecall)}");
    }

    private static string Minutes(double? m) => m switch
    {
        null => "n/a",
        double.PositiveInfinity => "never",
        _ => m.Value.ToString("0", CultureInfo.InvariantCulture),
    };
}
