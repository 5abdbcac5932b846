using Analytics.Events;
using Analytics.Simulation;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Detection.Tests;

/// <summary>The stores the detection tests read: migrated, empty or holding a simulated day.</summary>
internal static class SimulatedStore
{
    public static async Task<EmbeddedStore> OpenAsync(TempDirectory dir)
    {
        var store = EmbeddedStore.Open(dir.Path);
        await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings());
        return store;
    }

    /// <summary>The events of <paramref name="scenario"/>'s world from <paramref name="start"/>, in time order.</summary>
    public static List<SmtpEvent> Day(Scenario scenario, DateTime start)
    {
        var events = new List<SmtpEvent>();
        FastSimulation.Play(WorldBuilder.Build(scenario, new DateTimeOffset(start)), null, events.Add);
        events.Sort((a, b) => a.Timestamp.CompareTo(b.Timestamp));
        return events;
    }

    /// <summary>Writes the events the way every writer does (the sink's encoding) in about <paramref name="batches"/> batches, so minutes sit in several parts.</summary>
    public static async Task InsertAsync(IClickHouseStore store, List<SmtpEvent> events, int batches = 1)
    {
        foreach (var chunk in events.Chunk(Math.Max(1, events.Count / batches)))
        {
            await EventBatch.InsertAsync(store, chunk);
        }
    }
}
