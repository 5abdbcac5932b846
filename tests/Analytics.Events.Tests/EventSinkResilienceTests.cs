using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace Analytics.Events.Tests;

/// <summary>Issue 13, item 5: the sink's loop survives the disk and the store failing together, and never throws into a session.</summary>
[Collection(EmbeddedCollection.Name)]
public sealed class EventSinkResilienceTests
{
    private static readonly EventSinkOptions Fast = new()
    {
        Capacity = 1024,
        FlushInterval = TimeSpan.FromMilliseconds(20),
        BatchSize = 500,
        MaxBackoff = TimeSpan.FromMilliseconds(100),
    };

    private static async Task<EmbeddedStore> OpenAsync(TempDirectory dir)
    {
        var store = EmbeddedStore.Open(Path.Combine(dir.Path, "store"));
        await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings());
        return store;
    }

    private static SmtpEvent Event(int i) => NumberedEvents.Of(i, "resilience", 3);

    // Root ignores permissions, so the disk "fails" by the spool folder turning into a file: every
    // create, write and rename under it fails with an IOException, as on a full or broken disk.
    private static void BreakDisk(string spool)
    {
        Directory.Delete(spool, recursive: true);
        File.WriteAllText(spool, "not a directory");
    }

    private static void MendDisk(string spool)
    {
        File.Delete(spool);
        Directory.CreateDirectory(spool);
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> done, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!await done())
        {
            Assert.True(DateTime.UtcNow < deadline, "timed out");
            await Task.Delay(50, TestContext.Current.CancellationToken);
        }
    }

    [Fact]
    public async Task StoreDownAndDiskFailing_PublishNeverThrows_LoopSurvives_AndEveryAcceptedEventArrivesOnce()
    {
        using var dir = new TempDirectory();
        await using var real = await OpenAsync(dir);
        var store = new FaultInjectingStore(real) { Failing = true };
        var spool = Path.Combine(dir.Path, "spool");
        var ct = TestContext.Current.CancellationToken;
        long accepted = 0;
        await using (var sink = new EventSink(store, Fast, spool, NullLogger.Instance))
        {
            BreakDisk(spool);

            // Far more than memory holds: the first batches are held, the queue fills, spills fail,
            // and from then on events are refused — with false, never an exception.
            for (var i = 0; i < 20_000; i++)
            {
                if (sink.Publish(Event(i)))
                {
                    accepted++;
                }

                if (i % 1000 == 0)
                {
                    await Task.Delay(10, ct);
                }
            }

            await WaitUntilAsync(() => Task.FromResult(sink.Stats.Health == EventSinkHealth.SpoolFailing), TimeSpan.FromSeconds(10));
            var failing = sink.Stats;
            Assert.True(failing.Refused > 0);
            Assert.True(failing.SpoolFailures > 0);
            Assert.True(failing.Held > 0);
            Assert.NotNull(failing.LastError);
            Assert.Equal(accepted, failing.Published);

            // The disk comes back first: held batches go to the spool; then the store.
            MendDisk(spool);
            await WaitUntilAsync(() => Task.FromResult(sink.Stats is { Held: 0, Health: EventSinkHealth.StoreDown }), TimeSpan.FromSeconds(20));
            store.Failing = false;
            await WaitUntilAsync(() => sink.FlushAsync(ct), TimeSpan.FromSeconds(30));

            // Still alive: new events go straight through.
            Assert.True(sink.Publish(Event(1_000_000)));
            accepted++;
            Assert.True(await sink.FlushAsync(ct));
            Assert.Equal(EventSinkHealth.Healthy, sink.Stats.Health);
        }

        var r = await real.QueryAsync("SELECT count(), uniqExact(session_id) FROM events", null, ct);
        Assert.Equal((ulong)accepted, r.Rows[0][0]);
        Assert.Equal((ulong)accepted, r.Rows[0][1]);
        Assert.Equal((ulong)accepted, (await real.QueryAsync("SELECT sum(events) FROM activity WHERE entity_kind = 'ip'", null, ct)).Scalar<ulong>());
    }

    [Fact]
    public async Task Publish_MalformedEvent_IsRefusedWithoutThrowing()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        await using var sink = new EventSink(store, Fast, Path.Combine(dir.Path, "spool"), NullLogger.Instance);
        Assert.False(sink.Publish(null!));
        Assert.False(sink.Publish(Event(1) with { ClientIp = null! }));
        Assert.False(sink.Publish(Event(2) with { User = null! }));
        Assert.True(sink.Publish(Event(3)));
        Assert.True(await sink.FlushAsync(TestContext.Current.CancellationToken));
        Assert.Equal(3, sink.Stats.Refused);
        Assert.Equal(1, sink.Stats.Inserted);
    }

    [Fact]
    public async Task Publish_AfterDispose_ReturnsFalse()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        var sink = new EventSink(store, Fast, Path.Combine(dir.Path, "spool"), NullLogger.Instance);
        await sink.DisposeAsync();
        Assert.False(sink.Publish(Event(1)));
    }
}
