using Analytics.Simulation.Tests;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Analytics.Events;
using Microsoft.Extensions.Logging.Abstractions;

[assembly: AssemblyFixture(typeof(StoreFixture))]

namespace Analytics.Simulation.Tests;

/// <summary>One embedded ClickHouse for the assembly (chDB allows one per process); tests keep apart by node name.</summary>
public sealed class StoreFixture : IAsyncLifetime
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "simulation-tests-" + Guid.NewGuid().ToString("N")[..8]);

    public IClickHouseStore Store { get; private set; } = null!;

    public EventSink Sink { get; private set; } = null!;

    public async ValueTask InitializeAsync()
    {
        Directory.CreateDirectory(Root);
        Store = EmbeddedStore.Open(Path.Combine(Root, "store"));
        await new Migrator(Store, NullLogger.Instance).ApplyAsync(new SchemaSettings());
        Sink = new EventSink(Store, new EventSinkOptions { FlushInterval = TimeSpan.FromMilliseconds(20) }, Path.Combine(Root, "event-spool"), NullLogger.Instance);
    }

    public async ValueTask DisposeAsync()
    {
        await Sink.DisposeAsync();
        await Store.DisposeAsync();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
