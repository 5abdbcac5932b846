using Analytics.Detection.Features;
using Analytics.Events;
using Analytics.Store;
using Xunit;

namespace Analytics.Detection.Tests;

/// <summary>
/// The scorer's feature query (parts reduced per entity before they meet, read as RowBinary) against
/// the query it replaced (parts joined to every minute row, read as typed rows), on the same store.
/// </summary>
[Collection(EmbeddedCollection.Name)]
public sealed class FeatureQueryTests
{
    private static readonly DateTime T = new(2026, 11, 20, 12, 0, 0, DateTimeKind.Utc);

    /// <summary>
    /// A simulated day (users, heavy senders, harvesters, brute force, spraying, stuffing, hijacked
    /// accounts) written in several batches, so that minutes sit in several parts; scored at the top of
    /// an hour (where the baseline's hour of day is the previous one), inside hours, with lookbacks of a
    /// minute (production cadence), ten minutes and three hours (more than the 1-hour window): the same
    /// entities, every feature and every baseline equal.
    /// </summary>
    [Fact]
    public async Task ReadAsync_GivesTheFeaturesOfTheJoinedPerMinuteQuery()
    {
        using var dir = new TempDirectory();
        await using var store = await SimulatedStore.OpenAsync(dir);
        var start = T.AddDays(-1);
        await SimulatedStore.InsertAsync(store, SimulatedStore.Day(Analytics.Simulation.Scenario.Load("small") with { Users = 20, MailboxesPerDomain = 30 }, start), batches: 7);

        var reference = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Reference", "entity_features_joined_per_minute.sql"));
        var reader = new FeatureReader(store);
        DateTime[] times = [start.AddHours(10), start.AddHours(13).AddMinutes(37).AddSeconds(20), start.AddHours(20).AddMinutes(1), T];
        TimeSpan[] lookbacks = [TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(10), TimeSpan.FromHours(3)];
        var compared = 0;
        foreach (var t in times)
        {
            foreach (var lookback in lookbacks)
            {
                var asOf = FeatureReader.Truncate(t);
                var old = FeatureSet.FromRows(await store.QueryAsync(reference, QueryParameters.Of(("t", asOf), ("since", FeatureReader.Truncate(t - lookback)))), asOf)
                    .ToDictionary(f => f.Entity);
                var now = await reader.ReadAsync(t, t - lookback);
                Assert.True(old.Count == now.Count, $"{t:HH:mm} back {lookback}: {old.Count} entities before, {now.Count} now");
                foreach (var f in now)
                {
                    Assert.True(old.TryGetValue(f.Entity, out var o), $"{f.Entity} at {t:HH:mm} was not scored before");
                    Assert.Equal(o.AsOf, f.AsOf);
                    for (var k = 0; k < FeatureSet.Count; k++)
                    {
                        Assert.True(Close(o.Values[k], f.Values[k]), $"{f.Entity} at {t:HH:mm}: {FeatureSet.All[k].Name} was {o.Values[k]}, is {f.Values[k]}");
                    }

                    Assert.True(Close(o.BaselineMessagesPerDay, f.BaselineMessagesPerDay), $"{f.Entity}: baseline messages");
                    Assert.True(Close(o.BaselineRecipientsPerDay, f.BaselineRecipientsPerDay), $"{f.Entity}: baseline recipients");
                    Assert.True(Close(o.BaselineAuthFailuresPerDay, f.BaselineAuthFailuresPerDay), $"{f.Entity}: baseline AUTH failures");
                    compared++;
                }
            }
        }

        Assert.True(compared > 300, $"only {compared} entity scorings compared");
    }

    // Equal, but for the last bits of a standard deviation taken over the same values in another order.
    private static bool Close(double a, double b) =>
        (double.IsNaN(a) && double.IsNaN(b)) || Math.Abs(a - b) <= 1e-6 * Math.Max(1, Math.Abs(a));

    /// <summary>Prediction in slices on every core gives what one slice gives, in the same order.</summary>
    [Fact]
    public void Predict_InParallelSlices_EqualsOneSlice()
    {
        var random = new Random(7);
        var rows = new List<Model.LabelledRow>();
        for (var i = 0; i < 4000; i++)
        {
            var bad = i % 4 == 0;
            var v = new float[FeatureSet.Count];
            for (var k = 3; k < v.Length; k++)
            {
                v[k] = random.Next(bad ? 30 : 3);
            }

            v[FeatureSet.Index("is_user")] = 1;
            rows.Add(new Model.LabelledRow(new EntityFeatures(EntityRef.User("u" + i), T.AddMinutes(-(i % 900)), v), bad ? ThreatClass.Harvester : ThreatClass.Benign, "", ""));
        }

        using var dir = new TempDirectory();
        var model = Model.ModelTrainer.Train(rows, new Model.LabelIndex([]), new Model.TrainingOptions { HoldOutVariant = null, TrainGroupShare = 1, TrainTimeShare = 0.8 }, dir.Path).Model;
        var entities = Enumerable.Range(0, 50_000).Select(i => rows[i % rows.Count].Features with { Entity = EntityRef.User("e" + i) }).ToList();
        var parallel = model.Predict(entities);
        for (var i = 0; i < entities.Count; i += 9_973)
        {
            var one = model.Predict([entities[i]])[0];
            Assert.Equal(one.Class, parallel[i].Class);
            Assert.Equal(one.Score, parallel[i].Score);
            Assert.Equal(one.Anomaly, parallel[i].Anomaly);
        }
    }
}
