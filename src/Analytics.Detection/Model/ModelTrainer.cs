using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Analytics.Detection.Features;
using Microsoft.ML;
using Microsoft.ML.Trainers.FastTree;

namespace Analytics.Detection.Model;

public sealed record TrainingOptions
{
    /// <summary>Seed of every random choice; the same data and seed give the same model. Default 42.</summary>
    public int Seed { get; init; } = 42;

    /// <summary>Attack variant kept out of training entirely (reported on its own row). Default: distributed harvest.</summary>
    public string? HoldOutVariant { get; init; } = "distributed";

    /// <summary>Share of the time span before the cut: training rows come from before it. Default 0.7.</summary>
    public double TrainTimeShare { get; init; } = 0.7;

    /// <summary>Time between the cut and the first validation row, so no 24-hour window spans both. Default 24 h.</summary>
    public TimeSpan Gap { get; init; } = TimeSpan.FromHours(24);

    /// <summary>Share of groups (campaigns; benign address groups) that may appear in training. Default 0.7.</summary>
    public double TrainGroupShare { get; init; } = 0.7;

    /// <summary>
    /// Probability above which a non-benign class flags an entity; null: of the candidates that keep validation
    /// alerts at or under <see cref="TargetAlertsPer10k"/>, the one with the best validation recall, the highest of equals.
    /// </summary>
    public float? FlagThreshold { get; init; }

    /// <summary>Benign alerts per 10,000 entity-days the calibrated threshold allows on validation. Default 0.5.</summary>
    public double TargetAlertsPer10k { get; init; } = 0.5;

    public int Trees { get; init; } = 100;

    public string? DataDescription { get; init; }

    /// <summary>How often the validation rows score each entity, for the report. Default: "training cadence" (the rows' own step).</summary>
    public string ValidationCadence { get; init; } = "training cadence";

    /// <summary>Features the model is trained and scores without (held at zero): the ablation.</summary>
    public IReadOnlyList<string> DisabledFeatures { get; init; } = [];
}

/// <summary>How the rows were split, and what the model did on the validation part.</summary>
public sealed record TrainingReport(string Split, int TrainRows, int ValidationRows, float FlagThreshold, IReadOnlyList<ThresholdPoint> Thresholds, HonestReport Validation);

/// <summary>Validation figures at one candidate threshold.</summary>
public sealed record ThresholdPoint(float Threshold, double AlertsPer10k, IReadOnlyDictionary<string, double> Recall);

/// <summary>
/// Trains, validates and writes the detector. Rows are split by group and by time, never at random:
/// groups (an attack campaign with every address and account it used or attacked; a benign group of
/// entities sharing addresses) fall wholly on one side; training sees its groups before the time cut;
/// validation sees the other groups from a gap after the cut on. One attack variant is kept out of
/// training entirely. The flag threshold keeps benign alerts on validation under a target and, of those
/// that do, is the one with the best validation recall, the highest of equals. The real test is another
/// world (<c>evaluate</c>).
/// </summary>
public static class ModelTrainer
{
    public static readonly float[] CandidateThresholds = [0.5f, 0.6f, 0.7f, 0.8f, 0.9f, 0.95f, 0.98f, 0.99f, 0.995f];

    /// <summary>
    /// Of the thresholds whose validation alerts stay within <paramref name="targetAlertsPer10k"/>, the one
    /// with the best mean recall over the families; of equals, the highest. None within: the highest candidate.
    /// </summary>
    public static float ChooseThreshold(IReadOnlyList<ThresholdPoint> points, double targetAlertsPer10k)
    {
        static double Recall(ThresholdPoint p) => Math.Round(p.Recall.Values.DefaultIfEmpty(0).Average(), 9);
        return points.Where(p => p.AlertsPer10k <= targetAlertsPer10k)
            .OrderByDescending(Recall).ThenByDescending(p => p.Threshold)
            .Select(p => (float?)p.Threshold).FirstOrDefault() ?? CandidateThresholds[^1];
    }

    public static (DetectionModel Model, TrainingReport Report) Train(IReadOnlyList<LabelledRow> rows, LabelIndex labels, TrainingOptions options, string directory,
        IReadOnlyList<LabelledRow>? validationRows = null, TimeProvider? time = null)
    {
        if (rows.Count == 0)
        {
            throw new InvalidOperationException("No training rows.");
        }

        var (train, validation, split) = Split(rows, labels, options);
        if (validationRows is not null)
        {
            var validFrom = ValidationStart(rows, options);
            validation = [.. validationRows.Where(r => !IsTrainGroup(labels, r, options) && r.Features.AsOf >= validFrom)];
        }

        if (train.Select(r => r.Class).Distinct().Count() < 2)
        {
            throw new InvalidOperationException("The training split holds fewer than two classes: record attacks and legitimate traffic first.");
        }

        var disabled = options.DisabledFeatures.Select(FeatureSet.Index).ToArray();
        float[] Input(LabelledRow r) => DetectionModel.Mask(r.Features.Values, disabled);

        var ml = new MLContext(options.Seed);
        var weights = Weights(train);
        var inputs = train.Select((r, i) => new ModelInput { Features = Input(r), Label = r.Class.ToText(), Weight = weights[i] }).ToList();
        var data = ml.Data.LoadFromEnumerable(inputs, ModelInput.Schema());

        var binary = ml.BinaryClassification.Trainers.FastTree(new FastTreeBinaryTrainer.Options
        {
            NumberOfTrees = options.Trees,
            NumberOfLeaves = 16,
            MinimumExampleCountPerLeaf = 20,
            LearningRate = 0.15,
            NumberOfThreads = 1,
            Seed = options.Seed,
            FeatureColumnName = "Features",
            ExampleWeightColumnName = "Weight",
        });
        var pipeline = ml.Transforms.Conversion.MapValueToKey("Label", keyOrdinality: Microsoft.ML.Transforms.ValueToKeyMappingEstimator.KeyOrdinality.ByValue)
            .Append(ml.MulticlassClassification.Trainers.OneVersusAll(binary, useProbabilities: true))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
        var classifier = pipeline.Fit(data);

        // Anomaly model: what benign behaviour looks like, so that the never-labelled stands out.
        var benignList = train.Where(r => r.Class == ThreatClass.Benign).ToList();
        var benign = ml.Data.LoadFromEnumerable(benignList.Select(r => new ModelInput { Features = Input(r), Label = r.Class.ToText() }), ModelInput.Schema());

        // The PCA rank cannot exceed the dimensions benign traffic actually varies in.
        var varying = Enumerable.Range(0, FeatureSet.Count).Count(i => benignList.Select(r => Input(r)[i]).Distinct().Skip(1).Any());
        var anomalyPipeline = ml.Transforms.NormalizeMeanVariance("Features")
            .Append(ml.AnomalyDetection.Trainers.RandomizedPca("Features", rank: Math.Clamp(varying - 1, 1, 8), ensureZeroMean: true, seed: options.Seed));
        var anomaly = anomalyPipeline.Fit(benign);
        var benignScores = ml.Data.CreateEnumerable<DetectionModel.AnomalyOutput>(anomaly.Transform(benign), false).Select(o => o.Score).Order().ToList();
        var anomalyThreshold = benignScores.Count == 0 ? 1f : benignScores[(int)Math.Min(benignScores.Count - 1, Math.Ceiling(benignScores.Count * 0.999))];

        var medians = new float[FeatureSet.Count];
        for (var i = 0; i < medians.Length && benignList.Count > 0; i++)
        {
            var values = benignList.Select(r => r.Features.Values[i]).Order().ToList();
            medians[i] = values[values.Count / 2];
        }

        var created = (time ?? TimeProvider.System).GetUtcNow().UtcDateTime;
        var card = new ModelCard
        {
            Version = created.ToString("yyyyMMdd'T'HHmmss", CultureInfo.InvariantCulture) + "-s" + options.Seed.ToString(CultureInfo.InvariantCulture) + "-" + DataHash(train),
            CreatedAt = created,
            Seed = options.Seed,
            LayoutHash = FeatureSet.LayoutHash,
            Features = FeatureSet.All.Select(f => f.Name).ToList(),
            DisabledFeatures = options.DisabledFeatures,
            Classes = DetectionModel.SlotClasses(ml, classifier),
            AnomalyThreshold = anomalyThreshold,
            FlagThreshold = options.FlagThreshold ?? 0.5f,
            BenignMedians = medians,
            TrainingRowsPerClass = train.GroupBy(r => r.Class).ToDictionary(g => g.Key.ToText(), g => g.Count()),
            HeldOutVariant = options.HoldOutVariant,
            DataDescription = options.DataDescription,
            Split = split,
        };

        var model = new DetectionModel(ml, classifier, anomaly, card, DetectionModel.SlotClasses(ml, classifier));

        // Calibrate the threshold on validation: within the alert budget, the best recall; of equals, the
        // highest. The validation groups hold a few thousand benign entity-days, so "no alert" often holds
        // from 0.8 up, and the lowest of those bought no validation recall for what it cost on a fresh
        // world (a model at 0.8 alerted 10 times per 10,000 entity-days there).
        var predictions = model.Predict(validation.Select(r => r.Features).ToList());
        IReadOnlyDictionary<string, DateTime> firstEvents = labels.FirstActivity.Count > 0 ? labels.FirstActivity
            : validation.Where(r => r.IsMalicious).GroupBy(r => r.Campaign, StringComparer.Ordinal)
                .ToDictionary(g => g.Key, g => g.Min(r => r.MaliciousFrom ?? r.Features.AsOf), StringComparer.Ordinal);
        var points = new List<ThresholdPoint>();
        foreach (var threshold in CandidateThresholds)
        {
            var report = HonestEvaluator.Measure("model", "", Flags(validation, predictions, threshold), labels, validation, firstEvents, options.HoldOutVariant);
            points.Add(new ThresholdPoint(threshold, report.BenignAlertsPer10kEntityDays, report.Families.ToDictionary(f => f.Family, f => f.Recall, StringComparer.Ordinal)));
        }

        var chosen = options.FlagThreshold ?? ChooseThreshold(points, options.TargetAlertsPer10k);
        card = card with { FlagThreshold = chosen };
        model = new DetectionModel(ml, classifier, anomaly, card, DetectionModel.SlotClasses(ml, classifier));
        var validationReport = Report(model, labels, validation, firstEvents, created,
            "validation: the validation groups of the training world, after the cut and the gap", options.ValidationCadence, []);
        var trainingReport = new TrainingReport(split, train.Count, validation.Count, chosen, points, validationReport);
        card = card with { Validation = trainingReport };
        Write(directory, ml, classifier, anomaly, data, benign, card);
        return (DetectionModel.Load(directory), trainingReport);
    }

    /// <summary>The model's flags (and, separately, its anomaly alerts) on rows, as actions.</summary>
    public static IEnumerable<DetectorAction> Flags(IReadOnlyList<LabelledRow> rows, IReadOnlyList<Prediction> predictions, float threshold) =>
        rows.Select((r, i) => (r, p: predictions[i])).Where(x => x.p.Flagged(threshold)).Select(x => new DetectorAction(x.r.Features.AsOf, x.r.Features.Entity, "model", x.p.Class));

    public static IEnumerable<DetectorAction> Anomalies(IReadOnlyList<LabelledRow> rows, IReadOnlyList<Prediction> predictions) =>
        rows.Select((r, i) => (r, p: predictions[i])).Where(x => x.p.IsAnomalous).Select(x => new DetectorAction(x.r.Features.AsOf, x.r.Features.Entity, "anomaly"));

    /// <summary>
    /// Each row's training weight. Every class weighs as much in total as the benign rows, so rare attacks count.
    /// Within an attack class every variant weighs the same: a harvest through one authenticated account
    /// leaves tens of rows where one spread over a thousand addresses leaves thousands, and weighed by rows
    /// the model learned the second and called the first benign (world O: both submission harvests
    /// missed, probability of harvester under 0.001 at 27 unknown recipients in 32). Benign rows keep one
    /// weight each: their populations are what the alert rate is counted over.
    /// </summary>
    internal static float[] Weights(IReadOnlyList<LabelledRow> rows)
    {
        var classes = rows.GroupBy(r => r.Class).ToDictionary(g => g.Key, g => g.Count());
        var variants = rows.Where(r => r.IsMalicious).GroupBy(r => (r.Class, r.Variant)).ToDictionary(g => g.Key, g => g.Count());
        var variantsPerClass = variants.Keys.GroupBy(k => k.Class).ToDictionary(g => g.Key, g => g.Count());
        var share = rows.Count / (double)classes.Count;
        return [.. rows.Select(r => (float)(r.IsMalicious
            ? share / (variantsPerClass[r.Class] * variants[(r.Class, r.Variant)])
            : share / classes[r.Class]))];
    }

    private static string Without(DetectionModel model) =>
        model.Card.DisabledFeatures.Count == 0 ? "" : "; trained and scored without " + string.Join(", ", model.Card.DisabledFeatures);

    /// <summary>The model, its anomaly score alone, and any other detectors' actions, measured on the rows.</summary>
    public static HonestReport Report(DetectionModel model, LabelIndex labels, IReadOnlyList<LabelledRow> rows, IReadOnlyDictionary<string, DateTime> firstEvents,
        DateTime created, string world, string cadence, IReadOnlyList<DetectorReport> others, DetectionModel? comparison = null)
    {
        var predictions = model.Predict(rows.Select(r => r.Features).ToList());
        var threshold = model.Card.FlagThreshold;
        var detectors = new List<DetectorReport>
        {
            HonestEvaluator.Measure("model", $"classifier flags at probability {threshold:0.###} (a flag throttles){Without(model)}", Flags(rows, predictions, threshold), labels, rows, firstEvents, model.Card.HeldOutVariant),
            HonestEvaluator.Measure("anomaly", "PCA anomaly score alone, fitted on benign traffic only: every attack family is unseen by it (alerts go to review, not to limits)",
                Anomalies(rows, predictions), labels, rows, firstEvents, model.Card.HeldOutVariant),
        };
        if (comparison is not null)
        {
            // The same classifier trained on the same rows with every feature, the ones the model goes without
            // too: the ablation, read the other way round.
            var compared = comparison.Predict(rows.Select(r => r.Features).ToList());
            var description = "the same classifier trained and scored with every feature" +
                (model.Card.DisabledFeatures.Count == 0 ? "" : ", " + string.Join(", ", model.Card.DisabledFeatures) + " too");
            detectors.Add(HonestEvaluator.Measure("model-full", description,
                Flags(rows, compared, comparison.Card.FlagThreshold), labels, rows, firstEvents, model.Card.HeldOutVariant));
        }

        detectors.AddRange(others);
        var predicted = predictions.Select(p => p.Flagged(threshold) ? p.Class : ThreatClass.Benign).ToList();
        return new HonestReport
        {
            CreatedAt = created,
            World = world,
            Cadence = cadence,
            From = rows.Count == 0 ? default : rows.Min(r => r.Features.AsOf),
            To = rows.Count == 0 ? default : rows.Max(r => r.Features.AsOf),
            ScoringPoints = rows.Select(r => r.Features.AsOf).Distinct().Count(),
            Rows = rows.Count,
            ModelVersion = model.Version,
            HeldOutVariant = model.Card.HeldOutVariant,
            Detectors = detectors,
            FastPath = [],
            ModelRows = HonestEvaluator.Rows(rows, predicted),
            Targets = [],
        };
    }

    /// <summary>
    /// Where validation begins on the training rows' span (the time cut plus the gap): rows of the
    /// validation groups from there on may be computed again at another cadence (the scorer's, every
    /// minute) and passed to <see cref="Train"/>, so that the threshold is calibrated on as many
    /// scorings per entity-day as production makes.
    /// </summary>
    public static DateTime ValidationStart(IReadOnlyList<LabelledRow> rows, TrainingOptions options) => Cut(rows, options) + options.Gap;

    private static DateTime Cut(IReadOnlyList<LabelledRow> rows, TrainingOptions options)
    {
        var first = rows.Min(r => r.Features.AsOf);
        var last = rows.Max(r => r.Features.AsOf);
        return first + TimeSpan.FromTicks((long)((last - first).Ticks * options.TrainTimeShare));
    }

    public static (List<LabelledRow> Train, List<LabelledRow> Validation, string Description) Split(IReadOnlyList<LabelledRow> rows, LabelIndex labels, TrainingOptions options)
    {
        var cut = Cut(rows, options);
        var validFrom = cut + options.Gap;
        var train = new List<LabelledRow>();
        var validation = new List<LabelledRow>();
        foreach (var r in rows)
        {
            var inTrain = IsTrainGroup(labels, r, options);
            if (inTrain && r.Features.AsOf < cut)
            {
                if (options.HoldOutVariant is null || r.Variant != options.HoldOutVariant)
                {
                    train.Add(r);
                }
            }
            else if (!inTrain && r.Features.AsOf >= validFrom)
            {
                validation.Add(r);
            }
        }

        var description = string.Create(CultureInfo.InvariantCulture,
            $"by group and time: training = {options.TrainGroupShare:P0} of groups (a campaign with its addresses and accounts; a benign address group) before {cut:yyyy-MM-dd HH:mm}; validation = the other groups from {validFrom:yyyy-MM-dd HH:mm} ({options.Gap.TotalHours:0} h gap); held out of training: {options.HoldOutVariant ?? "none"}");
        return (train, validation, description);
    }

    private static bool IsTrainGroup(LabelIndex labels, LabelledRow r, TrainingOptions options) =>
        Bucket(labels.GroupOf(r.Features.Entity), options.Seed) < options.TrainGroupShare;

    private static double Bucket(string key, int seed)
    {
        var hash = BitConverter.ToUInt64(SHA256.HashData(Encoding.UTF8.GetBytes(seed.ToString(CultureInfo.InvariantCulture) + "/" + key)));
        return (hash % 10_000) / 10_000.0;
    }

    private static string DataHash(IEnumerable<LabelledRow> rows)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var r in rows)
        {
            h.AppendData(Encoding.UTF8.GetBytes(r.Features.Entity.Name + "|" + r.Class.ToText() + "|" + r.Features.AsOf.Ticks.ToString(CultureInfo.InvariantCulture)));
        }

        return Convert.ToHexStringLower(h.GetHashAndReset())[..8];
    }

    private static void Write(string directory, MLContext ml, ITransformer classifier, ITransformer anomaly, IDataView data, IDataView benign, ModelCard card)
    {
        Directory.CreateDirectory(directory);

        // Written beside, then moved in, so a running scorer never sees half a model.
        var staging = Path.Combine(directory, ".staging-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(staging);
        ml.Model.Save(classifier, data.Schema, Path.Combine(staging, DetectionModel.ClassifierFile));
        ml.Model.Save(anomaly, benign.Schema, Path.Combine(staging, DetectionModel.AnomalyFile));
        File.WriteAllText(Path.Combine(staging, DetectionModel.CardFile), JsonSerializer.Serialize(card, DetectionModel.Json));
        foreach (var file in new[] { DetectionModel.ClassifierFile, DetectionModel.AnomalyFile, DetectionModel.CardFile })
        {
            File.Move(Path.Combine(staging, file), Path.Combine(directory, file), overwrite: true);
        }

        Directory.Delete(staging, recursive: true);
    }
}
