using System.Net;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace Analytics.Events.Tests;

/// <summary>
/// The aggregates the sink computes per batch (migration 0030) against the views they replace
/// (0010, 0014), over the same events: every aggregate table must read the same.
/// </summary>
[Collection(EmbeddedCollection.Name)]
public sealed class AggregateParityTests
{
    private static readonly DateTimeOffset T0 = new(2026, 11, 20, 11, 58, 30, TimeSpan.Zero);

    // Addresses whose text form is easy to get wrong: IPv4, IPv4-compatible, loopback, a run of one
    // zero group, two runs of equal length, and an IPv6 address with "::ffff:" inside it.
    private static readonly string[] Addresses =
    [
        "127.9.9.9", "127.9.9.20", "10.1.2.3", "::1.2.3.4", "::1", "2001:db8:0:1:1:1:1:1", "2001:db8::1:0:0:1",
        "2001:db8::ffff:1", "fe80::1:2:3:4", "2a02:6b8::11", "::", "1:0:0:2:0:0:0:3",
    ];

    private static List<SmtpEvent> Events(int count, int seed)
    {
        var random = new Random(seed);
        var list = new List<SmtpEvent>(count);
        EventKind[] kinds = [EventKind.Connect, EventKind.Ehlo, EventKind.Auth, EventKind.Mail, EventKind.Rcpt, EventKind.Rcpt, EventKind.Data, EventKind.Invalid, EventKind.Throttle, EventKind.Close];
        for (var i = 0; i < count; i++)
        {
            var kind = kinds[random.Next(kinds.Length)];
            var user = random.Next(4) == 0 ? "" : "user" + random.Next(12) + "@example.org";
            var ok = random.Next(3) != 0;
            var domain = random.Next(5) == 0 ? "" : "d" + random.Next(4) + ".test";
            list.Add(new SmtpEvent
            {
                Timestamp = T0.AddMilliseconds(random.Next(0, 4 * 60_000)),
                Node = "parity",
                Role = random.Next(2) == 0 ? ListenerRole.Submission : ListenerRole.Mx,
                SessionId = (ulong)random.Next(40),
                Kind = kind,
                ClientIp = IPAddress.Parse(Addresses[random.Next(Addresses.Length)]),
                User = user,
                Outcome = ok ? EventOutcome.Ok : random.Next(2) == 0 ? EventOutcome.Reject : EventOutcome.TempFail,
                ReplyCode = (ushort)(kind == EventKind.Auth ? ok ? 235 : 535 : 250),
                SecretTag = kind == EventKind.Auth && random.Next(5) != 0 ? (ulong)random.Next(1, 9) * 0x9E3779B97F4A7C15UL : 0,
                Status = kind == EventKind.Rcpt && !ok ? "5.1.1" : "2.0.0",
                Recipient = kind == EventKind.Rcpt ? (random.Next(10) == 0 ? "" : "r" + random.Next(30) + "@" + domain) : "",
                RecipientDomain = kind == EventKind.Rcpt ? domain : "",
                Detail = kind == EventKind.Data ? random.Next(4) switch
                {
                    0 => "recipients=" + random.Next(1, 60),
                    1 => "queued as X recipients=x recipients=" + random.Next(1, 9),
                    2 => "recipients=99999999999999999999999",
                    _ => "",
                } : "",
            });
        }

        return list;
    }

    private static readonly string[] Checks =
    [
        """
        SELECT toString(entity_kind), entity, minute, sum(events), sum(auth_attempts), sum(auth_failures), sum(rcpt), sum(rcpt_rejected),
               sum(rcpt_unknown), sum(messages), sum(message_rcpts), max(max_message_rcpts), sum(invalid_commands), sum(throttled),
               uniqMerge(users_tried), uniqMerge(ips), uniqMerge(nets), uniqMerge(recipients), uniqMerge(recipient_domains),
               uniqMerge(sessions), uniqMerge(data_sessions)
        FROM {db}.activity GROUP BY entity_kind, entity, minute ORDER BY entity_kind, entity, minute
        """,
        """
        SELECT toString(entity_kind), entity, hour, sum(events), sum(active_minutes), sum(auth_attempts), sum(auth_failures), sum(rcpt),
               sum(rcpt_unknown), sum(messages), uniqMerge(users_tried), uniqMerge(ips), uniqMerge(recipients)
        FROM {db}.activity_hourly GROUP BY entity_kind, entity, hour ORDER BY entity_kind, entity, hour
        """,
        "SELECT DISTINCT minute, toString(entity_kind), entity FROM {db}.active_entities ORDER BY 1, 2, 3",
        """
        SELECT user, toString(seen_kind), value, min(first_seen), max(last_seen)
        FROM {db}.first_seen WHERE toString(seen_kind) != 'client' -- no view ever made clients (0062): FeatureTests.NewClient_… checks them
        GROUP BY user, seen_kind, value ORDER BY user, seen_kind, value
        """,
    ];

    [Fact]
    public async Task SinkAggregates_ReadTheSameAsTheViewsTheyReplace()
    {
        using var dir = new TempDirectory();
        await using var store = EmbeddedStore.Open(dir.Path);
        var ct = TestContext.Current.CancellationToken;
        await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings(), ct);

        // The schema before 0030, in a database of its own.
        await store.ExecuteAsync("CREATE DATABASE views", null, ct);
        await store.ExecuteAsync("USE views", null, ct);
        try
        {
            foreach (var statement in Migrator.Embedded.Where(m => m.Version < 30).SelectMany(m => m.Statements(new SchemaSettings())))
            {
                await store.ExecuteAsync(statement, null, ct);
            }
        }
        finally
        {
            await store.ExecuteAsync("USE default", null, ct);
        }

        // Three batches, so that aggregates of one entity and minute are merged across inserts.
        var all = Events(3000, seed: 7);
        for (var b = 0; b < 3; b++)
        {
            var part = all.Skip(b * 1000).Take(1000).ToList();
            var events = new EventBlockEncoder();
            var batch = new EventBatch();
            foreach (var e in part)
            {
                events.Add(e);
                batch.Add(e);
            }

            await store.InsertAsync("views.events", null, InsertFormat.Native, events.ToArray(), null, ct);
            await EventFrame.InsertAsync(store, batch.ToArray(), "parity-" + b, ct);
        }

        Assert.Equal(3000UL, (await store.QueryAsync("SELECT count() FROM events", null, ct)).Scalar<ulong>());
        foreach (var check in Checks)
        {
            var expected = await store.QueryFormattedAsync(check.Replace("{db}", "views", StringComparison.Ordinal), "TSV", null, ct);
            var actual = await store.QueryFormattedAsync(check.Replace("{db}", "default", StringComparison.Ordinal), "TSV", null, ct);
            Assert.True(expected.Length > 0, check);
            Assert.Equal(System.Text.Encoding.UTF8.GetString(expected), System.Text.Encoding.UTF8.GetString(actual));
        }

        // Distinct passwords (0040) have no view to compare with: against the events themselves.
        var fromEvents = await store.QueryFormattedAsync(
            """
            SELECT user, toStartOfMinute(toDateTime(ts)) AS m, uniqIf(secret_tag, kind = 'auth' AND secret_tag != 0) AS p,
                   uniqIf(secret_tag, kind = 'auth' AND secret_tag != 0 AND reply_code = 535)
            FROM events WHERE user != '' GROUP BY user, m HAVING p > 0 ORDER BY user, m
            """, "TSV", null, ct);
        var fromStates = await store.QueryFormattedAsync(
            """
            SELECT entity, minute, uniqMerge(passwords) AS p, uniqMerge(failed_passwords)
            FROM activity WHERE entity_kind = 'user' GROUP BY entity, minute HAVING p > 0 ORDER BY entity, minute
            """, "TSV", null, ct);
        Assert.True(fromEvents.Length > 0);
        Assert.Equal(System.Text.Encoding.UTF8.GetString(fromEvents), System.Text.Encoding.UTF8.GetString(fromStates));
    }

    [Fact]
    public async Task LegacyFrame_SpooledByAnOlderBuild_StillFeedsTheAggregates()
    {
        using var dir = new TempDirectory();
        await using var store = EmbeddedStore.Open(dir.Path);
        var ct = TestContext.Current.CancellationToken;
        await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings(), ct);

        // An EVB2 frame as builds before the uniq states were written here made it: the minute row
        // carries its distinct values as arrays, for activity_in and its view.
        var events = new EventBlockEncoder();
        events.Add(new SmtpEvent { Timestamp = T0, Node = "legacy", Role = ListenerRole.Mx, SessionId = 42, Kind = EventKind.Connect, ClientIp = IPAddress.Parse("10.1.2.3") });
        var eventsBlock = events.ToArray();
        var kind = new NativeColumn(8);
        kind.Byte(2);
        var entity = new NativeColumn(32);
        entity.String("10.1.2.3");
        var minute = new NativeColumn(8);
        minute.UInt32((uint)(T0.ToUnixTimeSeconds() / 60 * 60));
        var count = new NativeColumn(8);
        count.UInt64(1);
        var offsets = new NativeColumn(8);
        offsets.UInt64(1);
        var sessions = new NativeColumn(8);
        sessions.UInt64(42);
        var activity = new System.Buffers.ArrayBufferWriter<byte>();
        NativeColumn.WriteBlockHeader(activity, 5, 1);
        NativeColumn.WriteColumn(activity, "entity_kind", "Enum8('user' = 1, 'ip' = 2, 'net' = 3)", kind.Written);
        NativeColumn.WriteColumn(activity, "entity", "String", entity.Written);
        NativeColumn.WriteColumn(activity, "minute", "DateTime('UTC')", minute.Written);
        NativeColumn.WriteColumn(activity, "events", "UInt64", count.Written);
        NativeColumn.WriteArrayColumn(activity, "sessions", "Array(UInt64)", offsets, sessions);
        byte[] blocks = [.. eventsBlock, .. activity.WrittenSpan];
        var frame = new byte[EventFrame.HeaderSize + blocks.Length];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(frame, 0x32425645); // "EVB2"
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(frame.AsSpan(4), 1);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(frame.AsSpan(8), eventsBlock.Length);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(frame.AsSpan(12), activity.WrittenCount);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(frame.AsSpan(EventFrame.HeaderSize - 4), System.IO.Hashing.Crc32.HashToUInt32(blocks));
        blocks.CopyTo(frame.AsSpan(EventFrame.HeaderSize));

        var read = EventFrame.Read(frame, out var valid);
        Assert.Equal(frame.Length, valid);
        Assert.Equal("activity_in", Assert.Single(read).Tables[1]);

        // A current frame after it in the same data: both reach the store, each through its own tables.
        var batch = new EventBatch();
        batch.Add(new SmtpEvent { Timestamp = T0, Node = "new", Role = ListenerRole.Mx, SessionId = 43, Kind = EventKind.Connect, ClientIp = IPAddress.Parse("10.1.2.3") });
        await EventFrame.InsertAsync(store, (byte[])[.. frame, .. batch.ToArray()], "legacy-1", ct);

        var r = await store.QueryAsync("SELECT sum(events), uniqMerge(sessions) FROM activity WHERE entity_kind = 'ip' AND entity = '10.1.2.3'", null, ct);
        Assert.Equal(2UL, Convert.ToUInt64(r.Rows[0][0], System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(2UL, Convert.ToUInt64(r.Rows[0][1], System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(2UL, (await store.QueryAsync("SELECT count() FROM events", null, ct)).Scalar<ulong>());
    }

    [Theory]
    [InlineData("127.0.0.1")]
    [InlineData("::ffff:127.0.0.1")]
    [InlineData("::1.2.3.4")]
    [InlineData("::1")]
    [InlineData("::")]
    [InlineData("2001:db8:0:1:1:1:1:1")]
    [InlineData("2001:db8::1:0:0:1")]
    [InlineData("1:0:0:2:0:0:0:3")]
    [InlineData("2001:db8::ffff:1")]
    [InlineData("fe80::")]
    public async Task IpText_FormatsAsClickHouse(string address)
    {
        using var dir = new TempDirectory();
        await using var store = EmbeddedStore.Open(dir.Path);
        var ip = IpText.ToUInt128(IPAddress.Parse(address));
        var r = await store.QueryAsync("SELECT IPv6NumToString(toIPv6({a:String})), cutIPv6(toIPv6({a:String}), 8, 1)",
            QueryParameters.Of(("a", address)), TestContext.Current.CancellationToken);
        Assert.Equal((string)r.Rows[0][0]!, IpText.Format(ip));
        Assert.Equal((string)r.Rows[0][1]!, IpText.Format(IpText.Network(ip)));
    }
}
