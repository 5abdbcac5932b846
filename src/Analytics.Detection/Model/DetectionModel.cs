using System.Text.Json;
using System.Text.Json.Serialization;
using Analytics.Detection.Features;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Analytics.Detection.Model;

/// <summary>The model card written beside the model files: what it was trained on and how it did.</summary>
public sealed record ModelCard
{
    public required string Version { get; init; }
    public required DateTime CreatedAt { get; init; }
    public required int Seed { get; init; }
    public required string LayoutHash { get; init; }
    public required IReadOnlyList<string> Features { get; init; }

    /// <summary>Features the model was trained and scores without (held at zero): an ablation.</summary>
    public IReadOnlyList<string> DisabledFeatures { get; init; } = [];
    public required IReadOnlyList<string> Classes { get; init; }
    public required float AnomalyThreshold { get; init; }
    public required float FlagThreshold { get; init; }
    public required float[] BenignMedians { get; init; }
    public required IReadOnlyDictionary<string, int> TrainingRowsPerClass { get; init; }
    public string? HeldOutVariant { get; init; }
    public string? DataDescription { get; init; }
    public string Split { get; init; } = "";

    /// <summary>The split, the threshold calibration and the validation figures (training world).</summary>
    public TrainingReport? Validation { get; init; }

    /// <summary>What it was evaluated on (another world) and how it did, when <c>evaluate --save</c> wrote it.</summary>
    public HonestReport? Evaluation { get; init; }
}

/// <summary>
/// A verdict for one entity: the most likely class, the calibrated probabilities and the anomaly score.
/// <see cref="Evidence"/>: whether the entity's last hour holds enough of what its class is about to act
/// on (<see cref="Model.Evidence.Enough"/>); a flag needs it, however sure the classifier is.
/// </summary>
public sealed record Prediction(ThreatClass Class, float Score, IReadOnlyDictionary<string, float> Probabilities, float Anomaly, bool IsAnomalous)
{
    public bool Evidence { get; init; } = true;

    public bool Flagged(float threshold) => Class != ThreatClass.Benign && Score >= threshold && Evidence;
}

/// <summary>
/// The least an entity must have done before a model verdict may act on it (a flag throttles). A
/// classifier scores a brand-new account after one message, or an address after one wrong password,
/// from how new it is as much as from what it did; in a live run that throttled legitimate people on
/// their first session. An attack leaves more than that: a harvest misses mailboxes, a password attack
/// fails logins, a hijacked account sends. The bar is low on purpose: it removes only verdicts that
/// no analyst could justify from the evidence, and the evaluation counts what it costs in recall.
/// </summary>
public static class Evidence
{
    /// <summary>Unknown-mailbox rejections: 2 in the last hour, or 5 in 24 h (a slow harvest).</summary>
    public const int HarvestUnknown1h = 2, HarvestUnknown24h = 5;

    /// <summary>
    /// AUTH failures: 2 in the last hour that no success in the same session put right (<see cref="UncorrectedFailures1h"/>;
    /// one typo is not an attack), or 5 in 24 h (a slow spray); never a stale client's retries (<see cref="StaleClient"/>).
    /// </summary>
    public const int AuthFailures1h = 2, AuthFailures24h = 5;

    /// <summary>
    /// The hour's failed logins less those a success in the same session put right (one per such
    /// session). A failure followed by a success in one session is a person correcting a typo: whoever
    /// logs in knows the password, and a guesser who finds it has failed many times first, which still
    /// counts. A person who mistypes twice in an hour is otherwise two failures, and a scoring that
    /// falls between the second typo and its correction (seconds, but the scorer runs every few) read
    /// it as a brute force. An attacker gains nothing from it: only a password holder can correct.
    /// </summary>
    public static float UncorrectedFailures1h(float[] v) =>
        Math.Max(0, v[FeatureSet.Index("auth_failures_1h")] - v[FeatureSet.Index("auth_ok_after_fail_1h")]);

    /// <summary>Messages: 2 in the last hour, over 2 sessions or more (one message is no pattern).</summary>
    public const int Messages1h = 2, Sessions1h = 2;

    /// <summary>
    /// A taken-over account seen from an address (or a network) rather than from the account: what the
    /// address alone can show is a spam run, 20 recipients in the hour. Whose hands an account is in (new
    /// addresses and networks against its own history, its bounces against its own normal) is the
    /// account's verdict. From the address's side a person's new ISP lease, sending to a stale address
    /// book with a Thunderbird-style literal EHLO, looks like a quiet bot's proxy: on a fresh world every
    /// benign alert of the model was such an address.
    /// </summary>
    public const int AddressRecipients1h = 20;

    /// <summary>
    /// A phone or a mail client retrying a stale password, not a guesser (the fast path lets such retries
    /// count nowhere for the same reason): an account whose failed logins in the hour all tried one and the
    /// same wrong password; or an address (a network) whose every login in the hour was for one account
    /// and failed at least twice with one and the same wrong password, as a stale phone behind an office's
    /// NAT address does in the evening, when the office's other users have gone home. Guessing tries many
    /// passwords; stuffing and spraying try one per account, across accounts (an address spraying one
    /// account an hour fails once in it, and its day still counts). Unknown password tags (0 distinct: a
    /// server that shows none) leave the rule out.
    /// </summary>
    public static bool StaleClient(float[] v) =>
        v[FeatureSet.Index("failed_passwords_1h")] == 1
        && (v[FeatureSet.Index("is_user")] == 1 || (v[FeatureSet.Index("users_tried_1h")] == 1 && v[FeatureSet.Index("auth_failures_1h")] >= 2));

    public static bool Enough(ThreatClass cls, float[] v) => cls switch
    {
        ThreatClass.Harvester => v[FeatureSet.Index("rcpt_unknown_1h")] >= HarvestUnknown1h || v[FeatureSet.Index("rcpt_unknown_24h")] >= HarvestUnknown24h,
        ThreatClass.BruteForce => (UncorrectedFailures1h(v) >= AuthFailures1h || v[FeatureSet.Index("auth_failures_24h")] >= AuthFailures24h) && !StaleClient(v),
        ThreatClass.Compromised => v[FeatureSet.Index("messages_1h")] >= Messages1h && v[FeatureSet.Index("sessions_1h")] >= Sessions1h
            && (v[FeatureSet.Index("is_user")] == 1 || v[FeatureSet.Index("rcpt_1h")] >= AddressRecipients1h),
        _ => true,
    };
}

/// <summary>The model files are missing, corrupt or were trained for another feature layout.</summary>
public sealed class ModelLoadException : Exception
{
    public ModelLoadException()
    {
    }

    public ModelLoadException(string message) : base(message)
    {
    }

    public ModelLoadException(string message, Exception innerException) : base(message, innerException)
    {
    }
}

/// <summary>
/// The trained detector: a one-versus-all FastTree classifier with calibrated (Platt) per-class
/// probabilities, plus a randomized-PCA anomaly model fitted on benign behaviour, for what was
/// never labelled. Immutable once loaded; <see cref="Predict"/> is safe to call from one scorer.
/// </summary>
public sealed class DetectionModel
{
    public const string ClassifierFile = "classifier.zip";
    public const string AnomalyFile = "anomaly.zip";
    public const string CardFile = "model.json";

    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    private readonly MLContext _ml;
    private readonly ITransformer _classifier;
    private readonly ITransformer _anomaly;
    private readonly string[] _slotClasses;
    private readonly ThreatClass[] _classOfSlot;
    private readonly int[] _disabled;
    private readonly CompiledDetector? _compiled;

    internal DetectionModel(MLContext ml, ITransformer classifier, ITransformer anomaly, ModelCard card, string[] slotClasses)
    {
        _ml = ml;
        _classifier = classifier;
        _anomaly = anomaly;
        Card = card;
        _slotClasses = slotClasses;
        _classOfSlot = [.. slotClasses.Select(ThreatClasses.Parse)];
        _disabled = [.. card.DisabledFeatures.Select(FeatureSet.Index)];
        var compiled = CompiledDetector.TryCompile(classifier, anomaly, FeatureSet.Count, out var why);
        if (compiled is not null && compiled.Classes != slotClasses.Length)
        {
            (compiled, why) = (null, "the class count differs from the model's slots");
        }

        _compiled = compiled;
        if (_compiled is not null && Disagreement() is { } disagreement)
        {
            (_compiled, why) = (null, disagreement);
        }

        NotCompiledBecause = why;
    }

    // Tolerances of the compiled evaluator against ML.NET: the same arithmetic, summed in another order
    // (probabilities), or in double where ML.NET sums floats (the anomaly score's cancellation).
    internal const float ProbabilityTolerance = 1e-5f, AnomalyTolerance = 1e-3f;

    /// <summary>
    /// The compiled evaluator against ML.NET on probe vectors (zero; the benign medians; each feature
    /// in turn far above them): a description of the first difference, or null when they agree. A model
    /// whose evaluation is not reproduced keeps ML.NET rather than scoring differently.
    /// </summary>
    private string? Disagreement()
    {
        var medians = Card.BenignMedians.Length == FeatureSet.Count ? Card.BenignMedians : new float[FeatureSet.Count];
        var probes = new List<EntityFeatures> { Probe(new float[FeatureSet.Count]), Probe((float[])medians.Clone()) };
        for (var i = 0; i < FeatureSet.Count; i++)
        {
            var v = (float[])medians.Clone();
            v[i] = (v[i] * 10) + 10;
            probes.Add(Probe(v));
        }

        var compiled = Predict(probes);
        var reference = PredictWithMlNet(probes);
        for (var k = 0; k < probes.Count; k++)
        {
            if (Difference(compiled[k], reference[k]) is { } d)
            {
                return $"the compiled evaluator differs from ML.NET on a probe vector ({d})";
            }
        }

        return null;

        static EntityFeatures Probe(float[] v) => new(EntityRef.User("probe"), DateTime.UnixEpoch, v);
    }

    /// <summary>How two predictions of one row differ beyond the tolerances (null: they agree).</summary>
    internal static string? Difference(Prediction a, Prediction b)
    {
        foreach (var (cls, p) in b.Probabilities)
        {
            if (!a.Probabilities.TryGetValue(cls, out var q) || !Close(p, q, ProbabilityTolerance))
            {
                return $"P({cls}) {q} vs {p}";
            }
        }

        return Close(a.Anomaly, b.Anomaly, AnomalyTolerance) ? null : $"anomaly {a.Anomaly} vs {b.Anomaly}";

        static bool Close(float x, float y, float tolerance) =>
            (float.IsNaN(x) && float.IsNaN(y)) || Math.Abs(x - y) <= tolerance;
    }

    /// <summary>
    /// Why predictions go through ML.NET's data views rather than the compiled evaluator (null: they do
    /// not). Only a model of a shape <see cref="CompiledDetector"/> does not reproduce takes that path.
    /// </summary>
    public string? NotCompiledBecause { get; }

    /// <summary>The vector with the disabled features held at zero (the vector itself when none are).</summary>
    internal static float[] Mask(float[] values, int[] disabled)
    {
        if (disabled.Length == 0)
        {
            return values;
        }

        var copy = (float[])values.Clone();
        foreach (var i in disabled)
        {
            copy[i] = 0;
        }

        return copy;
    }

    public ModelCard Card { get; }

    public string Version => Card.Version;

    public static DetectionModel Load(string directory)
    {
        var cardPath = Path.Combine(directory, CardFile);
        if (!File.Exists(cardPath))
        {
            throw new ModelLoadException($"No model at {directory}: {CardFile} is missing (train one with ./analytics train)");
        }

        ModelCard card;
        try
        {
            card = JsonSerializer.Deserialize<ModelCard>(File.ReadAllText(cardPath), Json)
                ?? throw new ModelLoadException($"{cardPath} is empty.");
        }
        catch (JsonException ex)
        {
            throw new ModelLoadException($"{cardPath} is not a valid model card: {ex.Message}", ex);
        }

        if (card.LayoutHash != FeatureSet.LayoutHash)
        {
            throw new ModelLoadException(
                $"The model at {directory} was trained for feature layout {card.LayoutHash}; this build computes {FeatureSet.LayoutHash}. Retrain it (./analytics train).");
        }

        var ml = new MLContext(card.Seed);
        var classifier = LoadTransformer(ml, Path.Combine(directory, ClassifierFile));
        var anomaly = LoadTransformer(ml, Path.Combine(directory, AnomalyFile));
        var model = new DetectionModel(ml, classifier, anomaly, card, SlotClasses(ml, classifier));

        // A model that loads but cannot score is as bad as a corrupt one: prove it on a zero vector.
        try
        {
            model.Predict([new EntityFeatures(EntityRef.User("probe"), DateTime.UnixEpoch, new float[FeatureSet.Count])]);
        }
        catch (Exception ex) when (ex is not ModelLoadException)
        {
            throw new ModelLoadException($"The model at {directory} cannot score: {ex.Message}", ex);
        }

        return model;
    }

    private static ITransformer LoadTransformer(MLContext ml, string path)
    {
        if (!File.Exists(path))
        {
            throw new ModelLoadException($"Model file {path} is missing.");
        }

        try
        {
            return ml.Model.Load(path, out _);
        }
        catch (Exception ex)
        {
            throw new ModelLoadException($"Model file {path} is corrupt or not an ML.NET model: {ex.Message}", ex);
        }
    }

    internal static string[] SlotClasses(MLContext ml, ITransformer classifier)
    {
        var empty = ml.Data.LoadFromEnumerable(Array.Empty<ModelInput>(), ModelInput.Schema());
        var schema = classifier.GetOutputSchema(empty.Schema);
        VBuffer<ReadOnlyMemory<char>> names = default;
        schema["Score"].GetSlotNames(ref names);
        return names.DenseValues().Select(n => n.ToString()).ToArray();
    }

    // Below this many entities a pass predicts on one thread; above it, in one slice per core.
    private const int ParallelFrom = 20_000;

    /// <summary>
    /// Predictions for <paramref name="entities"/>, in their order: by the compiled evaluator (the
    /// trees, calibration and PCA as arrays, no data view), or through ML.NET when the model is not of
    /// a shape it reproduces. A large pass is cut into one slice per core.
    /// </summary>
    public IReadOnlyList<Prediction> Predict(IReadOnlyList<EntityFeatures> entities)
    {
        if (_compiled is null)
        {
            return PredictWithMlNet(entities);
        }

        var result = new Prediction[entities.Count];
        var slices = entities.Count < ParallelFrom ? 1 : Environment.ProcessorCount * 4;
        var size = (entities.Count + slices - 1) / slices;
        var fallback = new System.Collections.Concurrent.ConcurrentBag<int>();
        Parallel.For(0, slices, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, s =>
        {
            // Rows go through in blocks (see CompiledDetector.ScoreBlock); a masked row is a copy.
            const int Block = 64;
            var classes = _slotClasses.Length;
            var rows = new float[Block][];
            var index = new int[Block];
            var masked = _disabled.Length == 0 ? [] : Enumerable.Range(0, Block).Select(_ => new float[FeatureSet.Count]).ToArray();
            var probabilities = new float[Block * classes];
            var anomalies = new float[Block];
            var sums = new double[Block];
            var scratch = new float[FeatureSet.Count];
            var n = 0;
            for (var i = s * size; i < Math.Min(entities.Count, (s + 1) * size); i++)
            {
                var values = entities[i].Values;
                if (!CompiledDetector.CanScore(values))
                {
                    fallback.Add(i);
                    continue;
                }

                if (_disabled.Length > 0)
                {
                    values.CopyTo(masked[n], 0);
                    foreach (var d in _disabled)
                    {
                        masked[n][d] = 0;
                    }

                    values = masked[n];
                }

                (rows[n], index[n]) = (values, i);
                if (++n == Block)
                {
                    _compiled.ScoreBlock(rows.AsSpan(0, n), probabilities, anomalies, sums, scratch);
                    for (var k = 0; k < n; k++)
                    {
                        result[index[k]] = Build(probabilities.AsSpan(k * classes, classes).ToArray(), anomalies[k], entities[index[k]].Values);
                    }

                    n = 0;
                }
            }

            if (n > 0)
            {
                _compiled.ScoreBlock(rows.AsSpan(0, n), probabilities, anomalies, sums, scratch);
                for (var k = 0; k < n; k++)
                {
                    result[index[k]] = Build(probabilities.AsSpan(k * classes, classes).ToArray(), anomalies[k], entities[index[k]].Values);
                }
            }
        });

        if (!fallback.IsEmpty)
        {
            var indexes = fallback.Order().ToList();
            var slow = PredictWithMlNet(indexes.Select(i => entities[i]).ToList());
            for (var k = 0; k < indexes.Count; k++)
            {
                result[indexes[k]] = slow[k];
            }
        }

        return result;
    }

    // The most likely class (the first of equals, as ML.NET's slot order gives them), its probability,
    // and whether the entity did enough for that class to act on.
    private Prediction Build(float[] probabilities, float anomaly, float[] values)
    {
        var best = 0;
        for (var j = 1; j < probabilities.Length; j++)
        {
            if (probabilities[j] > probabilities[best])
            {
                best = j;
            }
        }

        var cls = _classOfSlot[best];
        return new Prediction(cls, probabilities[best], new ClassProbabilities(_slotClasses, probabilities), anomaly, anomaly > Card.AnomalyThreshold)
        {
            Evidence = Evidence.Enough(cls, values),
        };
    }

    /// <summary>
    /// The same predictions through ML.NET's data views and transformers: the reference the compiled
    /// evaluator is tested against, and the path for models it does not reproduce. Each slice (one per
    /// core) has its own data view and cursors (the transformers are immutable; cursors are not shared).
    /// </summary>
    internal IReadOnlyList<Prediction> PredictWithMlNet(IReadOnlyList<EntityFeatures> entities)
    {
        if (entities.Count == 0)
        {
            return [];
        }

        var result = new Prediction[entities.Count];
        var slices = entities.Count < ParallelFrom ? 1 : Environment.ProcessorCount;
        var size = (entities.Count + slices - 1) / slices;
        Parallel.For(0, slices, new ParallelOptions { MaxDegreeOfParallelism = slices }, s =>
        {
            var from = s * size;
            PredictInto(entities, from, Math.Min(entities.Count, from + size), result);
        });
        return result;
    }

    private void PredictInto(IReadOnlyList<EntityFeatures> entities, int from, int to, Prediction[] result)
    {
        if (from >= to)
        {
            return;
        }

        var rows = new ModelInput[to - from];
        for (var r = 0; r < rows.Length; r++)
        {
            rows[r] = new ModelInput { Features = Mask(entities[from + r].Values, _disabled), Label = "" };
        }

        var data = _ml.Data.LoadFromEnumerable(rows, ModelInput.Schema());
        var anomalies = new float[rows.Length];
        var k = 0;
        foreach (var a in _ml.Data.CreateEnumerable<AnomalyOutput>(_anomaly.Transform(data), reuseRowObject: true))
        {
            anomalies[k++] = a.Score;
        }

        var classes = _ml.Data.CreateEnumerable<ClassifierOutput>(_classifier.Transform(data), reuseRowObject: true);
        var i = from;
        foreach (var c in classes)
        {
            var probabilities = new Dictionary<string, float>(_slotClasses.Length);
            var best = 0;
            for (var j = 0; j < _slotClasses.Length; j++)
            {
                probabilities[_slotClasses[j]] = c.Score[j];
                if (c.Score[j] > c.Score[best])
                {
                    best = j;
                }
            }

            var anomaly = anomalies[i - from];
            var cls = ThreatClasses.Parse(_slotClasses[best]);
            result[i] = new Prediction(cls, c.Score[best], probabilities, anomaly, anomaly > Card.AnomalyThreshold)
            {
                Evidence = Evidence.Enough(cls, entities[i].Values),
            };
            i++;
        }
    }

    internal sealed class ClassifierOutput
    {
        public float[] Score { get; set; } = [];
    }

    internal sealed class AnomalyOutput
    {
        public float Score { get; set; }
    }
}

/// <summary>The row ML.NET sees: the feature vector, the class, and a weight that balances classes.</summary>
internal sealed class ModelInput
{
    public float[] Features { get; set; } = [];

    public string Label { get; set; } = "";

    public float Weight { get; set; } = 1;

    public static SchemaDefinition Schema()
    {
        var schema = SchemaDefinition.Create(typeof(ModelInput));
        schema[nameof(Features)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, FeatureSet.Count);
        return schema;
    }
}
