using System.Net;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace Analytics.Events.Tests;

/// <summary>
/// The minute and hour blocks of a frame come in their tables' sort order (the engine then writes them
/// as they are instead of sorting them first; BatchAggregates.SortedRows), and in ClickHouse's own
/// order: each block goes into a Log table, which keeps rows as inserted, and the engine says whether
/// they are sorted. The other blocks go in unsorted: sorting events and first_seen rows here took the
/// sink more CPU than it saved the engine (issue 16).
/// </summary>
[Collection(EmbeddedCollection.Name)]
public sealed class BlockOrderTests
{
    private static readonly DateTimeOffset T0 = new(2026, 11, 20, 23, 58, 30, TimeSpan.Zero);

    // Names that share their first 8 or 16 characters, that are shorter than 8, empty, or leave ASCII
    // early or late (no surrogate pairs: ordinal order is ClickHouse's byte order for all other text).
    private static readonly string[] Users =
    [
        "", "a", "ab@x", "aaaaaaaaaaaaaaaa1@example.org", "aaaaaaaaaaaaaaaa0@example.org", "aaaaaaaaaaaaaaab@example.org",
        "aaaaaaa", "aaaaaaaa", "aaaaaaaaa", "üser@example.org", "user@example.org", "usér@example.org", "zoë@exämple.org",
        "用户@例子.中国", "abcdefghü@example.org", "abcdefghijklmnopü@example.org", "abcdefghijklmnop@example.org", "Zed@example.org",
    ];

    private static readonly string[] Addresses = ["10.1.2.3", "10.1.2.200", "9.9.9.9", "2001:db8::1", "2001:db8::ffff:1", "::1", "127.0.0.1"];

    [Fact]
    public async Task TheMinuteAndHourBlocks_ComeInTheirTablesOrder_AsClickHouseOrdersIt()
    {
        using var dir = new TempDirectory();
        await using var store = EmbeddedStore.Open(dir.Path);
        var ct = TestContext.Current.CancellationToken;
        await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings(), ct);

        // Across midnight (two partitions of events and active_entities) and several minutes and hours.
        var random = new Random(11);
        var batch = new EventBatch();
        EventKind[] kinds = [EventKind.Connect, EventKind.Ehlo, EventKind.Auth, EventKind.Rcpt, EventKind.Rcpt, EventKind.Data, EventKind.Close];
        for (var i = 0; i < 4000; i++)
        {
            var kind = kinds[random.Next(kinds.Length)];
            var user = Users[random.Next(Users.Length)];
            batch.Add(new SmtpEvent
            {
                Timestamp = T0.AddSeconds(random.Next(-7200, 7200)),
                Node = "order",
                Role = ListenerRole.Submission,
                SessionId = (ulong)random.Next(300),
                Kind = kind,
                ClientIp = IPAddress.Parse(Addresses[random.Next(Addresses.Length)]),
                User = user,
                Outcome = EventOutcome.Ok,
                ReplyCode = 250,
                Status = "2.0.0",
                Detail = kind == EventKind.Ehlo ? "host" + random.Next(3) : "",
                Recipient = kind == EventKind.Rcpt ? Users[random.Next(1, Users.Length)] + random.Next(3) : "",
                RecipientDomain = kind == EventKind.Rcpt ? "d" + random.Next(3) + ".test" : "",
            });
        }

        var data = batch.ToArray();
        var frame = Assert.Single(EventFrame.Read(data, out _));
        string[] keys = ["", "entity_kind, entity, minute", "entity_kind, entity, hour"];
        for (var t = 1; t < keys.Length; t++)
        {
            var table = EventFrame.Tables[t];
            await store.ExecuteAsync($"CREATE TABLE inserted_{table} ENGINE = Log AS SELECT * FROM {table} WHERE 0", null, ct);
            await store.InsertAsync($"inserted_{table}", null, InsertFormat.Native, data.AsMemory(frame.Blocks[t]), null, ct);
            var result = await store.QueryAsync(
                $"SELECT count() AS n, toUInt64(groupArray(({keys[t]})) = arraySort(groupArray(({keys[t]})))) AS sorted FROM inserted_{table} SETTINGS max_threads = 1",
                null, ct);
            Assert.True(result.Get<ulong>(0, "n") > 50, $"{table}: {result.Get<ulong>(0, "n")} rows");
            Assert.True(result.Get<ulong>(0, "sorted") == 1, $"{table}: its block is not in the order ({keys[t]})");
        }
    }
}
