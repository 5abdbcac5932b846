using Analytics.Detection.Features;
using Analytics.Detection.Model;
using Analytics.Detection.Scoring;
using Analytics.Simulation;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace Analytics.Detection.Tests;

[Collection(EmbeddedCollection.Name)]
public sealed class ModelTests
{
    [Theory]
    [InlineData(ThreatClass.BruteForce, "auth_failures_1h", 1f, false)] // one typo
    [InlineData(ThreatClass.BruteForce, "auth_failures_1h", 2f, true)]
    [InlineData(ThreatClass.BruteForce, "auth_failures_24h", 5f, true)] // a slow spray
    [InlineData(ThreatClass.Harvester, "rcpt_unknown_1h", 1f, false)] // one mistyped recipient
    [InlineData(ThreatClass.Harvester, "rcpt_unknown_24h", 5f, true)]
    [InlineData(ThreatClass.Compromised, "messages_1h", 1f, false)] // a new account's first message
    public void Evidence_ThinEvidenceNeverFlags_HoweverSureTheClassifier(ThreatClass cls, string feature, float value, bool enough)
    {
        var v = new float[FeatureSet.Count];
        v[FeatureSet.Index(feature)] = value;
        v[FeatureSet.Index("sessions_1h")] = 3;
        if (feature == "messages_1h")
        {
            v[FeatureSet.Index("sessions_1h")] = 1;
        }

        Assert.Equal(enough, Evidence.Enough(cls, v));
        var prediction = new Prediction(cls, 0.99f, new Dictionary<string, float>(), 0, false) { Evidence = Evidence.Enough(cls, v) };
        Assert.Equal(enough, prediction.Flagged(0.5f));
    }

    [Theory]
    [InlineData(1f, false)] // a phone retrying its stale password: one wrong password, however often
    [InlineData(4f, true)] // a guesser
    [InlineData(0f, true)] // no password tags (a server that shows none): the rule stays out
    public void Evidence_AccountRetryingOneWrongPassword_IsAStaleClientNotABruteForce(float wrongPasswords, bool enough)
    {
        var v = new float[FeatureSet.Count];
        v[FeatureSet.Index("is_user")] = 1;
        v[FeatureSet.Index("auth_failures_1h")] = 12;
        v[FeatureSet.Index("failed_passwords_1h")] = wrongPasswords;
        Assert.Equal(enough, Evidence.Enough(ThreatClass.BruteForce, v));

        v[FeatureSet.Index("is_user")] = 0;
        v[FeatureSet.Index("is_ip")] = 1;
        v[FeatureSet.Index("users_tried_1h")] = 5;
        Assert.True(Evidence.Enough(ThreatClass.BruteForce, v)); // an address is judged by what it tried: here five accounts
    }

    [Theory]
    [InlineData(1f, 6f, 1f, 0f, false)] // an office's NAT address in the evening: its one stale phone, the same wrong password
    [InlineData(1f, 1f, 1f, 6f, true)] // a slow spray: one account an hour, its day still counts
    [InlineData(3f, 6f, 1f, 0f, true)] // one password sprayed over accounts
    [InlineData(1f, 6f, 3f, 0f, true)] // guessing one account's password
    public void Evidence_AddressRetryingOneAccountsStalePassword_IsAStaleClient(float users, float failures, float wrongPasswords, float failures24h, bool enough)
    {
        var v = new float[FeatureSet.Count];
        v[FeatureSet.Index("is_ip")] = 1;
        v[FeatureSet.Index("users_tried_1h")] = users;
        v[FeatureSet.Index("auth_failures_1h")] = failures;
        v[FeatureSet.Index("failed_passwords_1h")] = wrongPasswords;
        v[FeatureSet.Index("auth_failures_24h")] = failures24h;
        Assert.Equal(enough, Evidence.Enough(ThreatClass.BruteForce, v));
    }

    [Fact]
    public void ChooseThreshold_WithinTheAlertBudget_TakesTheBestRecall_TheHighestOfEquals()
    {
        static ThresholdPoint P(float t, double alerts, double harvester, double bruteForce) =>
            new(t, alerts, new Dictionary<string, double> { ["harvester"] = harvester, ["brute_force"] = bruteForce });

        // The training world of the shipped model: no validation alert from 0.8 up, the same recall to 0.99.
        var points = new[] { P(0.5f, 6.3, 1, 0.2), P(0.7f, 1.6, 1, 0.2), P(0.8f, 0, 1, 0.2), P(0.9f, 0, 1, 0.2), P(0.99f, 0, 1, 0.2), P(0.995f, 0, 1, 0) };
        Assert.Equal(0.99f, ModelTrainer.ChooseThreshold(points, 0.5));

        // Recall that a lower threshold buys within the budget is taken.
        points[2] = P(0.8f, 0.4, 1, 0.6);
        Assert.Equal(0.8f, ModelTrainer.ChooseThreshold(points, 0.5));

        // Nothing within the budget: the most cautious candidate.
        Assert.Equal(ModelTrainer.CandidateThresholds[^1], ModelTrainer.ChooseThreshold([P(0.5f, 9, 1, 1)], 0.5));
    }

    [Fact]
    public void Weights_EveryClassWeighsAlike_AndEveryAttackVariantWithinIt_BenignRowsOneEach()
    {
        LabelledRow Row(ThreatClass cls, string variant) =>
            new(new EntityFeatures(EntityRef.User("u"), T0, new float[FeatureSet.Count]), cls, variant, "c-" + variant);

        // A harvest through one account leaves a few rows, one spread over many addresses thousands.
        var rows = new List<LabelledRow>();
        rows.AddRange(Enumerable.Range(0, 5000).Select(i => Row(ThreatClass.Benign, i % 10 == 0 ? "office_nat" : "ordinary")));
        rows.AddRange(Enumerable.Range(0, 990).Select(_ => Row(ThreatClass.Harvester, "sparse")));
        rows.AddRange(Enumerable.Range(0, 10).Select(_ => Row(ThreatClass.Harvester, "submission")));
        rows.AddRange(Enumerable.Range(0, 40).Select(_ => Row(ThreatClass.BruteForce, "wordlist")));

        var w = ModelTrainer.Weights(rows);
        double Total(Func<LabelledRow, bool> which) => rows.Select((r, i) => which(r) ? w[i] : 0).Sum();

        var perClass = rows.Count / 3.0;
        Assert.Equal(perClass, Total(r => r.Class == ThreatClass.Benign), 3);
        Assert.Equal(perClass, Total(r => r.Class == ThreatClass.Harvester), 3);
        Assert.Equal(perClass, Total(r => r.Class == ThreatClass.BruteForce), 3);
        Assert.Equal(Total(r => r.Variant == "sparse"), Total(r => r.Variant == "submission"), 3);
        Assert.Equal(99 * w[rows.FindIndex(r => r.Variant == "sparse")], w[rows.FindIndex(r => r.Variant == "submission")], 1);

        // Benign populations keep a row's worth each: the alert rate is counted over rows, not populations.
        Assert.Equal(w[0], w[rows.FindIndex(r => r.Variant == "office_nat")]);
    }

    private static readonly DateTime T0 = new(2026, 11, 30, 12, 0, 0, DateTimeKind.Utc);

    [Theory]
    [InlineData("is_user", 4f, true)] // the account: its own verdict, whatever its volume
    [InlineData("is_ip", 4f, false)] // an address sending a person's few messages: a new lease or a quiet proxy, no telling
    [InlineData("is_ip", 20f, true)] // an address running spam through the account
    [InlineData("is_net", 19f, false)]
    [InlineData("is_net", 40f, true)]
    public void Evidence_CompromisedOnAnAddress_NeedsASpamRunsVolume(string kind, float recipients, bool enough)
    {
        var v = new float[FeatureSet.Count];
        v[FeatureSet.Index(kind)] = 1;
        v[FeatureSet.Index("messages_1h")] = 3;
        v[FeatureSet.Index("sessions_1h")] = 3;
        v[FeatureSet.Index("rcpt_1h")] = recipients;
        Assert.Equal(enough, Evidence.Enough(ThreatClass.Compromised, v));
    }

    [Theory]
    [InlineData(2f, 1f, false)] // two typos in the hour: one already put right, the other scored before its retry
    [InlineData(2f, 0f, true)] // two failures nothing put right
    [InlineData(6f, 1f, true)] // a guesser that found the password failed many times first
    public void Evidence_FailuresASuccessInTheSessionPutRight_AreTyposNotGuesses(float failures, float corrected, bool enough)
    {
        var v = new float[FeatureSet.Count];
        v[FeatureSet.Index("is_ip")] = 1;
        v[FeatureSet.Index("auth_failures_1h")] = failures;
        v[FeatureSet.Index("auth_ok_after_fail_1h")] = corrected;
        v[FeatureSet.Index("failed_passwords_1h")] = failures;
        Assert.Equal(enough, Evidence.Enough(ThreatClass.BruteForce, v));

        v[FeatureSet.Index("auth_failures_24h")] = 5;
        Assert.True(Evidence.Enough(ThreatClass.BruteForce, v)); // a slow attack's day still counts
    }

    [Fact]
    public async Task TrainOnSmallScenario_HeldOutMetricsClearAFloor_ModelRoundTrips_AndScores()
    {
        using var dir = new TempDirectory();
        await using var store = EmbeddedStore.Open(Path.Combine(dir.Path, "data"));
        await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings());
        var world = WorldBuilder.Build(Scenario.Load("small"), new DateTimeOffset(2026, 11, 1, 0, 0, 0, TimeSpan.Zero));
        await FastSimulation.RunAsync(store, world, null, TimeProvider.System);

        var builder = new TrainingSetBuilder(store);
        var rows = await builder.BuildAsync(TimeSpan.FromMinutes(15));
        Assert.Contains(rows, r => r.Class == ThreatClass.Harvester);
        Assert.Contains(rows, r => r.Class == ThreatClass.BruteForce);
        Assert.Contains(rows, r => r.Class == ThreatClass.Compromised);
        var labels = await builder.ReadLabelIndexAsync();

        // A one-day world: a one-hour gap after the cut instead of a day.
        var options = new TrainingOptions { Seed = 7, HoldOutVariant = "distributed", Trees = 40, Gap = TimeSpan.FromHours(1), FlagThreshold = 0.5f };
        var modelDir = Path.Combine(dir.Path, "model");
        var (model, report) = ModelTrainer.Train(rows, labels, options, modelDir);
        var output = new StringWriter();
        HonestEvaluator.WriteText(output, report.Validation);
        TestContext.Current.TestOutputHelper?.WriteLine(output.ToString());

        // Validation holds only groups training never saw, from after the cut.
        var (train, validation, _) = ModelTrainer.Split(rows, labels, options);
        Assert.NotEmpty(validation);
        Assert.Empty(train.Select(r => labels.GroupOf(r.Features.Entity)).Intersect(validation.Select(r => labels.GroupOf(r.Features.Entity))));
        Assert.True(train.Max(r => r.Features.AsOf) < validation.Min(r => r.Features.AsOf));
        Assert.DoesNotContain(train, r => r.Variant == "distributed");
        // A one-day world is far too small to learn from; this checks the pipeline, not the quality
        // (that is measured on another world: ./analytics evaluate).
        var detected = report.Validation.Detectors[0].Families.Sum(f => f.Detected);
        Assert.True(detected >= 2, output.ToString());

        // Every campaign it missed is named, with its variant and entities, in the report and its text.
        var missed = report.Validation.Detectors[0].MissedCampaigns;
        Assert.Equal(report.Validation.Detectors[0].Families.Sum(f => f.Campaigns - f.Detected), missed.Count);
        Assert.All(missed, m => Assert.Contains("missed: " + m, output.ToString(), StringComparison.Ordinal));

        // Same data, same seed: the same model.
        var again = ModelTrainer.Train(rows, labels, options, Path.Combine(dir.Path, "model2"));
        var probe = rows.Take(200).Select(r => r.Features).ToList();
        Assert.Equal(model.Predict(probe).Select(p => p.Score), again.Model.Predict(probe).Select(p => p.Score));

        // The written model loads back and predicts exactly as the trained one.
        var loaded = DetectionModel.Load(modelDir);
        Assert.Equal(model.Version, loaded.Version);
        Assert.Equal(model.Predict(probe).Select(p => (p.Class, p.Score)), loaded.Predict(probe).Select(p => (p.Class, p.Score)));

        // A scoring pass at a time inside the simulated day writes explained verdicts.
        var provider = new ModelProvider(modelDir, NullLogger.Instance);
        var scorer = new Scorer(store, provider, [], NullLogger.Instance, "test");
        var harvest = rows.Where(r => r.Class == ThreatClass.Harvester).OrderBy(r => r.Features.AsOf).First();
        var pass = await scorer.ScoreOnceAsync(harvest.Features.AsOf, TimeSpan.FromMinutes(15));
        Assert.True(pass.Entities > 0);
        var flagged = pass.Verdicts.Where(v => v.Flagged).ToList();
        Assert.NotEmpty(flagged);
        Assert.All(flagged, v => Assert.NotEmpty(v.Reasons));
        var stored = await store.QueryAsync("SELECT count() FROM verdicts WHERE flagged");
        Assert.Equal((ulong)flagged.Count, stored.Scalar<ulong>());
    }

    [Fact]
    public async Task CorruptOrIncompatibleModel_IsRefusedClearly_AndTheProviderKeepsThePreviousOne()
    {
        using var dir = new TempDirectory();
        var rows = Synthetic();
        var modelDir = Path.Combine(dir.Path, "model");
        ModelTrainer.Train(rows, new LabelIndex([]), new TrainingOptions { Seed = 1, HoldOutVariant = null, Trees = 5, TrainGroupShare = 1, TrainTimeShare = 0.8 }, modelDir);
        var provider = new ModelProvider(modelDir, NullLogger.Instance);
        var first = provider.Refresh();
        Assert.NotNull(first);

        // Corrupt the classifier: Load refuses it with the file named.
        var corruptDir = Path.Combine(dir.Path, "corrupt");
        Directory.CreateDirectory(corruptDir);
        foreach (var f in Directory.GetFiles(modelDir))
        {
            File.Copy(f, Path.Combine(corruptDir, Path.GetFileName(f)));
        }

        await File.WriteAllBytesAsync(Path.Combine(corruptDir, DetectionModel.ClassifierFile), [1, 2, 3, 4], TestContext.Current.CancellationToken);
        var ex = Assert.Throws<ModelLoadException>(() => DetectionModel.Load(corruptDir));
        Assert.Contains(DetectionModel.ClassifierFile, ex.Message, StringComparison.Ordinal);

        // A card for another feature layout is refused before anything is loaded.
        var card = await File.ReadAllTextAsync(Path.Combine(modelDir, DetectionModel.CardFile), TestContext.Current.CancellationToken);
        await File.WriteAllTextAsync(Path.Combine(corruptDir, DetectionModel.CardFile), card.Replace(FeatureSet.LayoutHash, "0000000000000000", StringComparison.Ordinal), TestContext.Current.CancellationToken);
        ex = Assert.Throws<ModelLoadException>(() => DetectionModel.Load(corruptDir));
        Assert.Contains("feature layout", ex.Message, StringComparison.Ordinal);

        // The running provider keeps its model when the files on disk go bad.
        await File.WriteAllBytesAsync(Path.Combine(modelDir, DetectionModel.ClassifierFile), [9, 9, 9], TestContext.Current.CancellationToken);
        File.SetLastWriteTimeUtc(Path.Combine(modelDir, DetectionModel.CardFile), DateTime.UtcNow.AddMinutes(1));
        Assert.Same(first, provider.Refresh());
        Assert.NotNull(provider.LastError);

        // No model at all: the provider has none and says why.
        var none = new ModelProvider(Path.Combine(dir.Path, "missing"), NullLogger.Instance);
        Assert.Null(none.Refresh());
        Assert.Contains("missing", none.LastError, StringComparison.Ordinal);
    }

    // Two obvious classes, enough for a model that loads and scores.
    private static List<LabelledRow> Synthetic()
    {
        var random = new Random(3);
        var rows = new List<LabelledRow>();
        var t0 = new DateTime(2026, 11, 1, 0, 0, 0, DateTimeKind.Utc);
        for (var i = 0; i < 400; i++)
        {
            var bad = i % 4 == 0;
            var v = new float[FeatureSet.Count];
            v[FeatureSet.Index("is_ip")] = 1;
            v[FeatureSet.Index("auth_failures_1h")] = bad ? 20 + random.Next(20) : random.Next(2);
            for (var k = 3; k < v.Length; k++)
            {
                v[k] += random.Next(3);
            }
            rows.Add(new LabelledRow(new EntityFeatures(new EntityRef(EntityKind.Ip, "127.0.0." + (i % 200)), t0.AddMinutes(i), v), bad ? ThreatClass.BruteForce : ThreatClass.Benign, "", ""));
        }

        return rows;
    }
}
