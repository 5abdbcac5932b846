using Analytics.Events;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Testing;

/// <summary>
/// Shared by the test projects that need it (linked; each registers it as its assembly fixture).
/// One embedded ClickHouse for the whole assembly (chDB allows one per process), migrated, with an
/// event sink in front of it. Tests keep apart by unique node names, users and domains.
/// </summary>
public sealed class StoreFixture : IAsyncLifetime
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "analytics-store-tests-" + Guid.NewGuid().ToString("N")[..8]);

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
