using Analytics.Detection.Features;
using Analytics.Detection.Model;
using Analytics.Events;
using Xunit;

namespace Analytics.Detection.Tests;

/// <summary>
/// The compiled evaluator (trees, calibration and PCA as arrays) against ML.NET's own transformers,
/// the reference, on the features a scoring pass computes from simulated traffic: the same class
/// probabilities (1e-5), the same anomaly score (1e-3: ML.NET sums it in float), the same verdicts.
/// </summary>
[Collection(EmbeddedCollection.Name)]
public sealed class CompiledDetectorTests
{
    private static readonly DateTime T = new(2026, 11, 20, 12, 0, 0, DateTimeKind.Utc);

    [Fact]
    public async Task Predict_ShippedModels_GiveMlNetsProbabilitiesAndAnomalyScores_OnRealFeatureRows()
    {
        var rows = await RealFeatureRowsAsync();
        foreach (var directory in new[] { Shipped("default"), Path.Combine(Shipped("default"), "full") })
        {
            var model = DetectionModel.Load(directory);
            AssertSameAsMlNet(model, rows, directory);
        }
    }

    [Fact]
    public void Predict_FreshlyTrainedModels_WithAndWithoutDisabledFeatures_GiveMlNetsPredictions()
    {
        var rows = Synthetic();
        var probe = rows.Select(r => r.Features).ToList();
        foreach (var disabled in new[] { Array.Empty<string>(), ["auth_failures_1h", "rcpt_unknown_1h"] })
        {
            using var dir = new TempDirectory();
            var options = new TrainingOptions { Seed = 3, HoldOutVariant = null, Trees = 30, TrainGroupShare = 1, TrainTimeShare = 0.8, DisabledFeatures = disabled };
            var model = ModelTrainer.Train(rows, new LabelIndex([]), options, dir.Path).Model;
            AssertSameAsMlNet(model, probe, $"disabled: {string.Join(",", disabled)}");
        }
    }

    /// <summary>Guards the comparison itself: a changed feature vector must change what both paths say.</summary>
    [Fact]
    public void Difference_SeesAChangedProbabilityOrAnomaly()
    {
        var a = new Prediction(ThreatClass.Benign, 0.9f, new Dictionary<string, float> { ["benign"] = 0.9f, ["harvester"] = 0.1f }, 0.2f, false);
        Assert.Null(DetectionModel.Difference(a, a));
        Assert.NotNull(DetectionModel.Difference(a with { Probabilities = new Dictionary<string, float> { ["benign"] = 0.89f, ["harvester"] = 0.11f } }, a));
        Assert.NotNull(DetectionModel.Difference(a with { Anomaly = 0.21f }, a));
    }

    private static void AssertSameAsMlNet(DetectionModel model, IReadOnlyList<EntityFeatures> rows, string what)
    {
        Assert.True(model.NotCompiledBecause is null, $"{what}: not compiled: {model.NotCompiledBecause}");
        var compiled = model.Predict(rows);
        var reference = model.PredictWithMlNet(rows);
        Assert.Equal(reference.Count, compiled.Count);
        var attacks = 0;
        for (var i = 0; i < rows.Count; i++)
        {
            var (c, r) = (compiled[i], reference[i]);
            Assert.True(DetectionModel.Difference(c, r) is null, $"{what}, {rows[i].Entity} at {rows[i].AsOf:HH:mm}: {DetectionModel.Difference(c, r)}");
            Assert.Equal(r.Class, c.Class);
            Assert.Equal(r.Flagged(model.Card.FlagThreshold), c.Flagged(model.Card.FlagThreshold));
            if (Math.Abs(r.Anomaly - model.Card.AnomalyThreshold) > DetectionModel.AnomalyTolerance)
            {
                Assert.Equal(r.IsAnomalous, c.IsAnomalous);
            }

            attacks += r.Class == ThreatClass.Benign ? 0 : 1;
        }

        // Not a comparison of zero vectors: attacks were scored as attacks on both paths.
        Assert.True(attacks >= 5, $"{what}: only {attacks} of {rows.Count} rows scored as attacks");
    }

    // A simulated day of traffic (users, heavy senders, harvesters, brute force, spraying, stuffing,
    // hijacked accounts), its features at every 20 minutes as the scorer computes them.
    private static async Task<List<EntityFeatures>> RealFeatureRowsAsync()
    {
        using var dir = new TempDirectory();
        await using var store = await SimulatedStore.OpenAsync(dir);
        var start = T.AddDays(-1);
        await SimulatedStore.InsertAsync(store, SimulatedStore.Day(Analytics.Simulation.Scenario.Load("small"), start), batches: 4);

        var rows = await new FeatureReader(store).ReadManyAsync(start.AddHours(1), T, TimeSpan.FromMinutes(20), TimeSpan.FromMinutes(20));
        Assert.True(rows.Count > 1000, $"only {rows.Count} feature rows");
        return rows;
    }

    private static string Shipped(string name)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "models", name);
            if (File.Exists(Path.Combine(candidate, DetectionModel.CardFile)))
            {
                return candidate;
            }
        }

        throw new InvalidOperationException($"models/{name} not found above {AppContext.BaseDirectory}");
    }

    private static List<LabelledRow> Synthetic()
    {
        var random = new Random(11);
        var rows = new List<LabelledRow>();
        ThreatClass[] classes = [ThreatClass.Benign, ThreatClass.Harvester, ThreatClass.BruteForce, ThreatClass.Compromised];
        for (var i = 0; i < 3000; i++)
        {
            var cls = i % 3 == 0 ? classes[1 + (i / 3 % 3)] : ThreatClass.Benign;
            var v = new float[FeatureSet.Count];
            for (var k = 3; k < v.Length; k++)
            {
                v[k] = random.Next(3);
            }

            v[FeatureSet.Index(i % 2 == 0 ? "is_user" : "is_ip")] = 1;
            var signal = cls switch
            {
                ThreatClass.Harvester => "rcpt_unknown_1h",
                ThreatClass.BruteForce => "auth_failures_1h",
                ThreatClass.Compromised => "messages_1h",
                _ => null,
            };
            if (signal is not null)
            {
                v[FeatureSet.Index(signal)] = 10 + random.Next(40);
                v[FeatureSet.Index("sessions_1h")] = 3 + random.Next(5);
            }

            rows.Add(new LabelledRow(new EntityFeatures(new EntityRef(i % 2 == 0 ? EntityKind.User : EntityKind.Ip, "e" + (i % 500)), T.AddMinutes(-(i % 900)), v), cls, "", ""));
        }

        return rows;
    }
}
