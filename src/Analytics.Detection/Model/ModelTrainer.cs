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

    /// <summary>Attack variant kept out of training and reported on its own row. Default: distributed harvest.</summary>
    public string? HoldOutVariant { get; init; } = "distributed";

    /// <summary>Share of the time span used for training; the rest is the future the model is tested on.</summary>
    public double TrainTimeShare { get; init; } = 0.7;

    /// <summary>Share of entities (by stable hash) that may appear in training.</summary>
    public double TrainEntityShare { get; init; } = 0.7;

    /// <summary>Probability above which a non-benign class flags an entity. Default 0.5.</summary>
    public float FlagThreshold { get; init; } = 0.5f;

    public int Trees { get; init; } = 100;

    public string? DataDescription { get; init; }
}

/// <summary>
/// Trains, evaluates and writes the detector. Rows are split by entity and by time, never at random:
/// training sees only entities of the training hash bucket before the split time; testing sees every
/// entity after it and the other bucket's entities throughout. One attack variant is kept out of
/// training entirely.
/// </summary>
public static class ModelTrainer
{
    public static (DetectionModel Model, EvaluationReport Report) Train(IReadOnlyList<LabelledRow> rows, TrainingOptions options, string directory, TimeProvider? time = null)
    {
        if (rows.Count == 0)
        {
            throw new InvalidOperationException("No training rows.");
        }

        var (train, test, split) = Split(rows, options);
        if (train.Select(r => r.Class).Distinct().Count() < 2)
        {
            throw new InvalidOperationException("The training split holds fewer than two classes: record attacks and legitimate traffic first.");
        }

        var ml = new MLContext(options.Seed);
        var counts = train.GroupBy(r => r.Class).ToDictionary(g => g.Key, g => g.Count());

        // Rare attack rows weigh as much in total as the many benign ones.
        var inputs = train.Select(r => new ModelInput
        {
            Features = r.Features.Values,
            Label = r.Class.ToText(),
            Weight = (float)(train.Count / (double)(counts.Count * counts[r.Class])),
        }).ToList();
        var data = ml.Data.LoadFromEnumerable(inputs, ModelInput.Schema());

        var binary = ml.BinaryClassification.Trainers.FastTree(new FastTreeBinaryTrainer.Options
        {
            NumberOfTrees = options.Trees,
            NumberOfLeaves = 16,
            MinimumExampleCountPerLeaf = 5,
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
        var benign = ml.Data.LoadFromEnumerable(
            train.Where(r => r.Class == ThreatClass.Benign).Select(r => new ModelInput { Features = r.Features.Values, Label = r.Class.ToText() }), ModelInput.Schema());
        // The PCA rank cannot exceed the dimensions benign traffic actually varies in.
        var benignList = train.Where(r => r.Class == ThreatClass.Benign).ToList();
        var varying = Enumerable.Range(0, FeatureSet.Count).Count(i => benignList.Select(r => r.Features.Values[i]).Distinct().Skip(1).Any());
        var anomalyPipeline = ml.Transforms.NormalizeMeanVariance("Features")
            .Append(ml.AnomalyDetection.Trainers.RandomizedPca("Features", rank: Math.Clamp(varying - 1, 1, 8), ensureZeroMean: true, seed: options.Seed));
        var anomaly = anomalyPipeline.Fit(benign);
        var benignScores = ml.Data.CreateEnumerable<DetectionModel.AnomalyOutput>(anomaly.Transform(benign), false).Select(o => o.Score).Order().ToList();
        var threshold = benignScores.Count == 0 ? 1f : benignScores[(int)Math.Min(benignScores.Count - 1, Math.Ceiling(benignScores.Count * 0.995))];

        var medians = new float[FeatureSet.Count];
        var benignRows = train.Where(r => r.Class == ThreatClass.Benign).ToList();
        for (var i = 0; i < medians.Length && benignRows.Count > 0; i++)
        {
            var values = benignRows.Select(r => r.Features.Values[i]).Order().ToList();
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
            Classes = DetectionModel.SlotClasses(ml, classifier),
            AnomalyThreshold = threshold,
            FlagThreshold = options.FlagThreshold,
            BenignMedians = medians,
            TrainingRowsPerClass = counts.ToDictionary(c => c.Key.ToText(), c => c.Value),
            HeldOutVariant = options.HoldOutVariant,
            DataDescription = options.DataDescription,
            Split = split,
        };

        var model = new DetectionModel(ml, classifier, anomaly, card, DetectionModel.SlotClasses(ml, classifier));
        var report = Evaluate(model, test, split, options.HoldOutVariant, created);
        card = card with { Evaluation = report };
        Write(directory, ml, classifier, anomaly, data, benign, card);
        return (DetectionModel.Load(directory), report);
    }

    public static EvaluationReport Evaluate(DetectionModel model, IReadOnlyList<LabelledRow> test, string split, string? heldOut, DateTime created)
    {
        var predictions = model.Predict(test.Select(r => r.Features).ToList());
        var modelRows = test.Select((r, i) => new Evaluator.Scored(r,
            predictions[i].Flagged(model.Card.FlagThreshold) ? predictions[i].Class : ThreatClass.Benign, predictions[i].Probabilities)).ToList();
        var ruleRows = test.Select(r => new Evaluator.Scored(r, BaselineRules.Classify(r.Features), null)).ToList();
        return new EvaluationReport(created, test.Count, split, heldOut,
            Evaluator.Measure("model", modelRows, heldOut), Evaluator.Measure("rules", ruleRows, heldOut));
    }

    public static (List<LabelledRow> Train, List<LabelledRow> Test, string Description) Split(IReadOnlyList<LabelledRow> rows, TrainingOptions options)
    {
        var first = rows.Min(r => r.Features.AsOf);
        var last = rows.Max(r => r.Features.AsOf);
        var cut = first + TimeSpan.FromTicks((long)((last - first).Ticks * options.TrainTimeShare));
        var train = new List<LabelledRow>();
        var test = new List<LabelledRow>();
        foreach (var r in rows)
        {
            var trainEntity = Bucket(r.Features.Entity.ToString(), options.Seed) < options.TrainEntityShare;
            var heldOut = options.HoldOutVariant is not null && r.Variant == options.HoldOutVariant;
            if (trainEntity && r.Features.AsOf < cut)
            {
                if (!heldOut)
                {
                    train.Add(r);
                }
            }
            else
            {
                test.Add(r);
            }
        }

        var description = string.Create(CultureInfo.InvariantCulture,
            $"train: {options.TrainEntityShare:P0} of entities before {cut:yyyy-MM-dd HH:mm}; test: the other entities throughout and every entity after; held out of training: {options.HoldOutVariant ?? "none"}");
        return (train, test, description);
    }

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
