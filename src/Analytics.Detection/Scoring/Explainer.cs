using System.Globalization;
using Analytics.Detection.Features;
using Analytics.Detection.Model;

namespace Analytics.Detection.Scoring;

/// <summary>
/// Why the model said what it said, in words: for each feature, how much the verdict's probability
/// drops when that one feature is set to what typical legitimate traffic shows (the benign median
/// from training). The largest drops are the reasons, each with the entity's value and its own
/// baseline where it has one ("412 recipients in 1 h; usually 3 a day").
/// </summary>
public static class Explainer
{
    public static IReadOnlyList<IReadOnlyList<string>> Explain(DetectionModel model, IReadOnlyList<EntityFeatures> entities, IReadOnlyList<Prediction> predictions, int top = 3)
    {
        var medians = model.Card.BenignMedians;
        var probes = new List<EntityFeatures>();
        var owners = new List<(int Entity, int Feature)>();
        for (var e = 0; e < entities.Count; e++)
        {
            for (var i = 0; i < FeatureSet.Count; i++)
            {
                // Reasons are what the entity does more of than legitimate traffic; "sent no mail" is
                // true of most bots and explains nothing to an analyst.
                if (entities[e].Values[i] <= medians[i] || FeatureSet.All[i].Name.StartsWith("is_", StringComparison.Ordinal))
                {
                    continue;
                }

                var values = (float[])entities[e].Values.Clone();
                values[i] = medians[i];
                probes.Add(entities[e] with { Values = values });
                owners.Add((e, i));
            }
        }

        var what = model.Predict(probes);
        var drops = new List<(int Feature, float Drop)>[entities.Count];
        for (var e = 0; e < entities.Count; e++)
        {
            drops[e] = [];
        }

        for (var p = 0; p < probes.Count; p++)
        {
            var (e, i) = owners[p];
            var cls = predictions[e].Class;
            drops[e].Add((i, predictions[e].Probabilities[cls.ToText()] - what[p].Probabilities[cls.ToText()]));
        }

        return entities.Select((entity, e) =>
        {
            var reasons = drops[e].Where(d => d.Drop > 0.01f).OrderByDescending(d => d.Drop).Take(top).Select(d => d.Feature).ToList();
            if (reasons.Count == 0)
            {
                // Saturated: many features each suffice, so no single one moves the probability.
                // Then the features furthest above legitimate traffic are the reasons.
                reasons = drops[e].Select(d => d.Feature)
                    .OrderByDescending(i => (entity.Values[i] - medians[i]) / (Math.Abs(medians[i]) + 1))
                    .Take(top).ToList();
            }

            return (IReadOnlyList<string>)reasons.Select(i => Reason(entity, i)).ToList();
        }).ToList();
    }

    /// <summary>One feature in words, with the entity's own normal where one is known.</summary>
    public static string Reason(EntityFeatures entity, int feature)
    {
        var text = FeatureSet.Describe(feature, entity.Values[feature]);
        var name = FeatureSet.All[feature].Name;
        var usual = name switch
        {
            _ when name.StartsWith("messages_", StringComparison.Ordinal) => entity.BaselineMessagesPerDay,
            _ when name.StartsWith("rcpt_", StringComparison.Ordinal) && !name.Contains("unknown", StringComparison.Ordinal) && !name.Contains("ratio", StringComparison.Ordinal) => entity.BaselineRecipientsPerDay,
            _ when name.StartsWith("auth_failures", StringComparison.Ordinal) => entity.BaselineAuthFailuresPerDay,
            _ => double.NaN,
        };
        return double.IsNaN(usual) || usual < 0.05 || name.EndsWith("_vs_baseline", StringComparison.Ordinal)
            ? text
            : text + string.Create(CultureInfo.InvariantCulture, $"; usually {usual:0.#} a day");
    }

    /// <summary>The reasons the rules fired, for verdicts given without a model.</summary>
    public static IReadOnlyList<string> ExplainRules(EntityFeatures f, ThreatClass cls) => cls switch
    {
        ThreatClass.BruteForce => [Reason(f, FeatureSet.Index("auth_failures_10m"))],
        ThreatClass.Harvester => [Reason(f, FeatureSet.Index("rcpt_unknown_10m"))],
        ThreatClass.Compromised => [Reason(f, FeatureSet.Index("messages_1h")), Reason(f, FeatureSet.Index("rcpt_1h"))],
        _ => [],
    };
}
