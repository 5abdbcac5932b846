using System.Buffers;
using System.Net;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace Analytics.Events.Tests;

/// <summary>
/// Issue 13, SIGKILL: the events of a message answered 250 outlive the process. A caller waits for
/// durability (<see cref="EventSink.WaitDurableAsync"/>); the loop writes the batch in collection to
/// its journal; a journal a crash leaves behind is replayed, and dropped by its token when its batch
/// did reach the store.
/// </summary>
[Collection(EmbeddedCollection.Name)]
public sealed class EventJournalTests
{
    private static SmtpEvent Event(int i) => NumberedEvents.Of(i, "journal", 5, kind: EventKind.Data);

    private static byte[] Frame(int from, int count)
    {
        var batch = new EventBatch();
        for (var i = from; i < from + count; i++)
        {
            batch.Add(Event(i));
        }

        return batch.ToArray();
    }

    private static byte[] Journal(int from, int count)
    {
        var output = new ArrayBufferWriter<byte>();
        JournalCodec.Write(output, [.. Enumerable.Range(from, count).Select(Event)]);
        return output.WrittenSpan.ToArray();
    }

    private static async Task<EmbeddedStore> OpenAsync(string path)
    {
        var store = EmbeddedStore.Open(path);
        await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings());
        return store;
    }

    // A spool found at start is replayed by the loop; a flush returns true once it is all in the store.
    private static async Task ReplayedAsync(EventSink sink, CancellationToken ct)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!await sink.FlushAsync(ct))
        {
            Assert.True(DateTime.UtcNow < deadline, "the spool was not replayed within 30 s");
            await Task.Delay(50, ct);
        }
    }

    [Fact]
    public async Task WaitDurable_WritesTheQueuedEventsToTheBatchJournal_WhichACrashLeavesForTheNextStart()
    {
        using var dir = new TempDirectory();
        var ct = TestContext.Current.CancellationToken;
        var spool = Path.Combine(dir.Path, "spool");
        var crashed = Path.Combine(dir.Path, "crashed");
        Directory.CreateDirectory(crashed);
        await using var store = await OpenAsync(Path.Combine(dir.Path, "store"));

        // A flush interval far longer than the test: without a journal, every event below would be in
        // memory only until the sink is disposed.
        var options = new EventSinkOptions { FlushInterval = TimeSpan.FromMinutes(1) };
        await using (var sink = new EventSink(store, options, spool, NullLogger.Instance))
        {
            // The first caller since start: the batch has no journal yet, so it is shipped and awaited.
            for (var i = 0; i < 100; i++)
            {
                Assert.True(sink.Publish(Event(i)));
            }

            Assert.True(await sink.WaitDurableAsync(TimeSpan.FromSeconds(20), ct));
            Assert.Equal(100UL, (await store.QueryAsync("SELECT count() FROM events", null, ct)).Scalar<ulong>());

            // From then on the batch keeps growing and its journal takes what callers wait for.
            for (var i = 100; i < 600; i++)
            {
                Assert.True(sink.Publish(Event(i)));
            }

            var waiters = Enumerable.Range(0, 20).Select(_ => sink.WaitDurableAsync(TimeSpan.FromSeconds(20), ct).AsTask()).ToArray();
            Assert.All(await Task.WhenAll(waiters), Assert.True);
            var journal = Assert.Single(Directory.GetFiles(spool, "*" + EventSpool.JournalExtension));
            Assert.Equal(500, JournalCodec.Read(await File.ReadAllBytesAsync(journal, ct), out _).Count);
            Assert.Equal(100UL, (await store.QueryAsync("SELECT count() FROM events", null, ct)).Scalar<ulong>());
            Assert.Equal(500, sink.Stats.Journaled);

            // What a SIGKILL now would leave on disk.
            File.Copy(journal, Path.Combine(crashed, Path.GetFileName(journal)));
        }

        // A clean stop ships the batch and deletes its journal.
        Assert.Empty(Directory.GetFiles(spool, "*" + EventSpool.JournalExtension));
        Assert.Equal(600UL, (await store.QueryAsync("SELECT count() FROM events", null, ct)).Scalar<ulong>());

        // The crashed copy, started again: its 500 events come back from the journal, and since the clean
        // stop above did ship that batch under the same token, ClickHouse drops them as a second copy.
        await using (var sink = new EventSink(store, options, crashed, NullLogger.Instance))
        {
            Assert.Equal(500, sink.Stats.Recovered);
            await ReplayedAsync(sink, ct);
        }

        Assert.Equal(600UL, (await store.QueryAsync("SELECT count() FROM events", null, ct)).Scalar<ulong>());
        Assert.Equal(600UL, (await store.QueryAsync("SELECT sum(events) FROM activity WHERE entity_kind = 'ip'", null, ct)).Scalar<ulong>());
    }

    [Fact]
    public async Task Journal_OfABatchThatReachedTheStore_IsDroppedByTheBatchToken_AndOneThatDidNotIsReplayed()
    {
        using var dir = new TempDirectory();
        var ct = TestContext.Current.CancellationToken;
        var spool = Path.Combine(dir.Path, "spool");
        Directory.CreateDirectory(spool);
        await using var store = await OpenAsync(Path.Combine(dir.Path, "store"));

        // Batch 5 reached the store (300 events) before the kill, its journal (the first 200, then a torn
        // frame) not yet deleted: one frame per round of waiting sessions; batch 9 had only its journal (50 events).
        await EventFrame.InsertAsync(store, Frame(0, 300), "ev-test-5", ct);
        var torn = Journal(200, 100);
        await File.WriteAllBytesAsync(Path.Combine(spool, "0000000000000005_ev-test-5" + EventSpool.JournalExtension), [.. Journal(0, 120), .. Journal(120, 50), .. Journal(170, 30), .. torn.AsSpan(0, torn.Length / 3)], ct);
        await File.WriteAllBytesAsync(Path.Combine(spool, "0000000000000009_ev-test-9" + EventSpool.JournalExtension), Journal(1000, 50), ct);

        await using (var sink = new EventSink(store, new EventSinkOptions { FlushInterval = TimeSpan.FromMilliseconds(20) }, spool, NullLogger.Instance))
        {
            Assert.Equal(250, sink.Stats.Recovered);
            Assert.Equal(100, sink.Stats.Quarantined);
            await ReplayedAsync(sink, ct);
        }

        Assert.Equal(350UL, (await store.QueryAsync("SELECT count() FROM events", null, ct)).Scalar<ulong>());
        Assert.Equal(350UL, (await store.QueryAsync("SELECT uniqExact(session_id) FROM events", null, ct)).Scalar<ulong>());
        Assert.Equal(350UL, (await store.QueryAsync("SELECT sum(events) FROM activity WHERE entity_kind = 'ip'", null, ct)).Scalar<ulong>());
        Assert.Empty(Directory.GetFiles(spool, "*" + EventSpool.JournalExtension));
    }

    [Fact]
    public void Journal_WhoseBatchWasSpooledWhole_IsDropped()
    {
        using var dir = new TempDirectory();
        var spool = Path.Combine(dir.Path, "spool");
        Directory.CreateDirectory(spool);
        File.WriteAllBytes(Path.Combine(spool, "0000000000000004_300_ev-test-4" + EventSpool.Extension), Frame(0, 300));
        File.WriteAllBytes(Path.Combine(spool, "0000000000000004_ev-test-4" + EventSpool.JournalExtension), Journal(0, 300));
        using var recovered = new EventSpool(spool);
        Assert.Equal(0, recovered.RecoveredEvents);
        var batch = Assert.Single(recovered.Pending());
        Assert.Equal(300, batch.Count);
        Assert.Empty(Directory.GetFiles(spool, "*" + EventSpool.JournalExtension));
    }

    [Fact]
    public void JournalCodec_RoundTripsEveryField_AndStopsAtACorruptGroup()
    {
        var full = new SmtpEvent
        {
            Timestamp = new DateTimeOffset(2026, 11, 28, 13, 14, 15, 678, TimeSpan.FromHours(2)).AddTicks(9),
            Node = "node-ü",
            Role = ListenerRole.Submission,
            SessionId = ulong.MaxValue,
            Kind = EventKind.Auth,
            ClientIp = IPAddress.Parse("2001:db8::42"),
            ClientPort = 65535,
            User = "alice@example.org",
            Mechanism = "PLAIN",
            Outcome = EventOutcome.Reject,
            ReplyCode = 535,
            Status = "5.7.8",
            Sender = "s@example.net",
            Recipient = "r@example.com",
            RecipientDomain = "example.com",
            Size = 1234567890123,
            DurationMs = 4321,
            Detail = "bad ✉\n\ttab",
            SecretTag = 0xFEEDFACE,
        };
        var output = new ArrayBufferWriter<byte>();
        JournalCodec.Write(output, [full, Event(7)]);
        JournalCodec.Write(output, [Event(8)]);
        var data = output.WrittenSpan.ToArray();
        var events = JournalCodec.Read(data, out var valid);
        Assert.Equal([full, Event(7), Event(8)], events);
        Assert.Equal(data.Length, valid);

        data[^1] ^= 0x40; // the second group's payload no longer matches its checksum
        Assert.Equal([full, Event(7)], JournalCodec.Read(data, out valid));
        Assert.Equal(1, JournalCodec.ClaimedCount(data.AsSpan(valid)));
    }
}
