using System.Globalization;
using System.Net;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace Analytics.Events.Tests;

[Collection(EmbeddedCollection.Name)]
public sealed class EventSinkTests
{
    private static readonly EventSinkOptions Fast = new() { FlushInterval = TimeSpan.FromMilliseconds(20), BatchSize = 500, MaxBackoff = TimeSpan.FromMilliseconds(200) };

    private static async Task<EmbeddedStore> OpenAsync(TempDirectory dir)
    {
        var store = EmbeddedStore.Open(dir.Path);
        await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings());
        return store;
    }

    private static SmtpEvent Event(int i, string node = "test") => NumberedEvents.Of(i, node, 0, role: i % 2 == 0 ? ListenerRole.Submission : ListenerRole.Mx);

    [Fact]
    public async Task Publish_EveryField_RoundTripsThroughClickHouse()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        var sent = new SmtpEvent
        {
            Timestamp = new DateTimeOffset(2026, 11, 28, 13, 14, 15, 678, TimeSpan.Zero),
            Node = "node-a",
            Role = ListenerRole.Mx,
            SessionId = 0xFEDCBA9876543210,
            Kind = EventKind.Auth,
            ClientIp = IPAddress.Parse("2001:db8::42"),
            ClientPort = 54321,
            User = "alice@example.org",
            Mechanism = "LOGIN",
            Outcome = EventOutcome.Reject,
            ReplyCode = 535,
            Status = "5.7.8",
            Sender = "bounce+x@example.net",
            Recipient = "bob@example.com",
            RecipientDomain = "example.com",
            Size = 1234567890123,
            DurationMs = 4321,
            Detail = "bad credentials ✉\n\ttabbed",
        };
        var v4 = sent with { SessionId = 7, ClientIp = IPAddress.Parse("127.1.2.3"), Kind = EventKind.Close, Role = ListenerRole.Submission, Outcome = EventOutcome.TempFail };
        await using (var sink = new EventSink(store, Fast, Path.Combine(dir.Path, "spool"), NullLogger.Instance))
        {
            Assert.True(sink.Publish(sent));
            Assert.True(sink.Publish(v4));
            Assert.True(await sink.FlushAsync(TestContext.Current.CancellationToken));
        }

        var r = await store.QueryAsync("""
            SELECT ts, node, toString(role) AS role, session_id, toString(kind) AS kind, IPv6NumToString(client_ip) AS ip, client_port, user, mechanism,
                   toString(outcome) AS outcome, reply_code, status, sender, recipient, recipient_domain, size, duration_ms, detail
            FROM events ORDER BY session_id DESC
            """);
        Assert.Equal(2, r.Rows.Count);
        Assert.Equal(sent.Timestamp.UtcDateTime, r.Get<DateTime>(0, "ts"));
        Assert.Equal("node-a", r.Get<string>(0, "node"));
        Assert.Equal("mx", r.Get<string>(0, "role"));
        Assert.Equal(sent.SessionId, r.Get<ulong>(0, "session_id"));
        Assert.Equal("auth", r.Get<string>(0, "kind"));
        Assert.Equal("2001:db8::42", r.Get<string>(0, "ip"));
        Assert.Equal(54321UL, r.Get<ulong>(0, "client_port"));
        Assert.Equal(sent.User, r.Get<string>(0, "user"));
        Assert.Equal("LOGIN", r.Get<string>(0, "mechanism"));
        Assert.Equal("reject", r.Get<string>(0, "outcome"));
        Assert.Equal(535UL, r.Get<ulong>(0, "reply_code"));
        Assert.Equal("5.7.8", r.Get<string>(0, "status"));
        Assert.Equal(sent.Sender, r.Get<string>(0, "sender"));
        Assert.Equal(sent.Recipient, r.Get<string>(0, "recipient"));
        Assert.Equal("example.com", r.Get<string>(0, "recipient_domain"));
        Assert.Equal(sent.Size, r.Get<ulong>(0, "size"));
        Assert.Equal(4321UL, r.Get<ulong>(0, "duration_ms"));
        Assert.Equal(sent.Detail, r.Get<string>(0, "detail"));
        Assert.Equal("::ffff:127.1.2.3", r.Get<string>(1, "ip"));
        Assert.Equal("close", r.Get<string>(1, "kind"));
        Assert.Equal("tempfail", r.Get<string>(1, "outcome"));
        Assert.Equal("submission", r.Get<string>(1, "role"));
    }

    [Fact]
    public async Task StoreFailsMidStream_BatchesAreSpooled_ThenReplayedWithoutLossOrDuplicates()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        var ct = TestContext.Current.CancellationToken;
        const int total = 6000;
        await using (var sink = new EventSink(store, Fast, Path.Combine(dir.Path, "spool"), NullLogger.Instance))
        {
            for (var i = 0; i < 2000; i++)
            {
                sink.Publish(Event(i));
            }

            Assert.True(await sink.FlushAsync(ct));

            // A real outage of the real engine: the table goes away under the sink.
            await store.ExecuteAsync("DETACH TABLE events", null, ct);
            for (var i = 2000; i < 4000; i++)
            {
                sink.Publish(Event(i));
            }

            Assert.False(await sink.FlushAsync(ct));
            var down = sink.Stats;
            Assert.False(down.StoreHealthy);
            Assert.True(down.SpoolFiles > 0);
            Assert.True(down.Spooled >= 2000);

            await store.ExecuteAsync("ATTACH TABLE events", null, ct);
            for (var i = 4000; i < total; i++)
            {
                sink.Publish(Event(i));
            }

            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (!await sink.FlushAsync(ct) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(50, ct);
            }

            var up = sink.Stats;
            Assert.True(up.StoreHealthy);
            Assert.Equal(0, up.SpoolFiles);
            Assert.Equal(total, up.Inserted);
        }

        var counts = await store.QueryAsync("SELECT count() AS rows, uniqExact(session_id) AS distinct_ids, min(session_id), max(session_id) FROM events");
        Assert.Equal((ulong)total, counts.Get<ulong>(0, "rows"));
        Assert.Equal((ulong)total, counts.Get<ulong>(0, "distinct_ids"));
    }

    [Fact]
    public async Task SpoolLeftByAStoppedSink_IsReplayedByTheNextOne_AndTheSameBatchIsNotInsertedTwice()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        var ct = TestContext.Current.CancellationToken;
        var spool = Path.Combine(dir.Path, "spool");
        await store.ExecuteAsync("DETACH TABLE events", null, ct);
        await using (var sink = new EventSink(store, Fast, spool, NullLogger.Instance))
        {
            for (var i = 0; i < 1500; i++)
            {
                sink.Publish(Event(i));
            }

            Assert.False(await sink.FlushAsync(ct));
        }

        var files = Directory.GetFiles(spool, "*.frames");
        Assert.NotEmpty(files);
        await store.ExecuteAsync("ATTACH TABLE events", null, ct);

        // Simulate a batch that did reach the store before a crash: insert one spooled file by hand
        // with its token; the replay must not double it.
        var first = files.Order(StringComparer.Ordinal).First();
        var token = Path.GetFileNameWithoutExtension(first).Split('_', 3)[2];
        await EventFrame.InsertAsync(store, await File.ReadAllBytesAsync(first, ct), token, ct);

        await using (var sink = new EventSink(store, Fast, spool, NullLogger.Instance))
        {
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (!await sink.FlushAsync(ct) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(50, ct);
            }

            Assert.Equal(0, sink.Stats.SpoolFiles);
        }

        Assert.Equal(1500UL, (await store.QueryAsync("SELECT count() FROM events", null, ct)).Scalar<ulong>());
        Assert.Equal(1500UL, (await store.QueryAsync("SELECT uniqExact(session_id) FROM events", null, ct)).Scalar<ulong>());

        // The aggregates of the batch inserted by hand are not doubled either.
        Assert.Equal(1500UL, (await store.QueryAsync("SELECT sum(events) FROM activity WHERE entity_kind = 'ip'", null, ct)).Scalar<ulong>());
        Assert.Equal(1500UL, (await store.QueryAsync("SELECT sum(events) FROM activity_hourly WHERE entity_kind = 'net'", null, ct)).Scalar<ulong>());
    }

    /// <summary>
    /// The live server flushes a batch every second, so one busy minute of an entity is spread over many
    /// batches. The hour's active minutes must count that minute once (minute_mask, 0061), as one large
    /// batch (the simulator's) does, not once per batch as active_minutes alone did.
    /// </summary>
    [Fact]
    public async Task Publish_OneMinuteInSeveralBatches_CountsAsOneActiveMinuteOfTheHour()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        var ct = TestContext.Current.CancellationToken;
        var minute = new DateTimeOffset(2026, 11, 28, 12, 7, 0, TimeSpan.Zero);
        var e = NumberedEvents.Of(0, "test", 3);
        await using (var sink = new EventSink(store, Fast, Path.Combine(dir.Path, "spool"), NullLogger.Instance))
        {
            // Minute 7 of the hour in three batches, minute 8 in a fourth.
            foreach (var at in new[] { minute.AddSeconds(5), minute.AddSeconds(25), minute.AddSeconds(45), minute.AddSeconds(65) })
            {
                Assert.True(sink.Publish(e with { Timestamp = at }));
                Assert.True(await sink.FlushAsync(ct));
            }
        }

        var r = await store.QueryAsync("""
            SELECT groupBitOr(minute_mask), bitCount(groupBitOr(minute_mask)), sum(active_minutes), sum(events)
            FROM activity_hourly WHERE entity_kind = 'ip' AND entity = '127.0.3.1' AND hour = '2026-11-28 12:00:00'
            """, null, ct);
        Assert.Equal(4UL, Convert.ToUInt64(r.Rows[0][3], CultureInfo.InvariantCulture));
        Assert.Equal((1UL << 7) | (1UL << 8), Convert.ToUInt64(r.Rows[0][0], CultureInfo.InvariantCulture));
        Assert.Equal(2UL, Convert.ToUInt64(r.Rows[0][1], CultureInfo.InvariantCulture));

        // active_minutes is still written per batch (each batch saw its minute once): four rows, four.
        Assert.Equal(4UL, Convert.ToUInt64(r.Rows[0][2], CultureInfo.InvariantCulture));
    }

    [Fact]
    public async Task ConcurrentProducers_AllEventsArrive_EvenWhenTheQueueOverflows()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        var ct = TestContext.Current.CancellationToken;
        // A tiny queue forces producers to spill to disk; nothing may be lost.
        var options = new EventSinkOptions { Capacity = 1024, BatchSize = 2000, FlushInterval = TimeSpan.FromMilliseconds(20) };
        const int producers = 8;
        const int each = 5000;
        EventSinkStats stats;
        await using (var sink = new EventSink(store, options, Path.Combine(dir.Path, "spool"), NullLogger.Instance))
        {
            await Task.WhenAll(Enumerable.Range(0, producers).Select(p => Task.Run(() =>
            {
                for (var i = 0; i < each; i++)
                {
                    Assert.True(sink.Publish(Event(p * each + i, "p" + p)));
                }
            }, ct)));
            var deadline = DateTime.UtcNow.AddSeconds(60);
            while (!await sink.FlushAsync(ct) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(50, ct);
            }

            stats = sink.Stats;
        }

        Assert.Equal(producers * each, stats.Published);
        Assert.Equal(producers * each, stats.Inserted);
        var r = await store.QueryAsync("SELECT count(), uniqExact(session_id) FROM events", null, ct);
        Assert.Equal((ulong)(producers * each), r.Rows[0][0]);
        Assert.Equal((ulong)(producers * each), r.Rows[0][1]);
    }

    [Fact]
    public async Task Dispose_FlushesWhatWasQueued()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        await using (var sink = new EventSink(store, new EventSinkOptions { FlushInterval = TimeSpan.FromSeconds(30) }, Path.Combine(dir.Path, "spool"), NullLogger.Instance))
        {
            for (var i = 0; i < 100; i++)
            {
                sink.Publish(Event(i));
            }
        }

        Assert.Equal(100UL, (await store.QueryAsync("SELECT count() FROM events")).Scalar<ulong>());
    }
}
