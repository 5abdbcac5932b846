using System.Net;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace Analytics.Store.Tests;

[Collection(EmbeddedCollection.Name)]
public sealed class EmbeddedStoreTests
{
    [Fact]
    public async Task NullReferenceException_AfterEngineLoaded_IsCaughtNormally()
    {
        using var dir = new TempDirectory();
        await using var store = EmbeddedStore.Open(dir.Path);
        Assert.Equal(1UL, (await store.QueryAsync("SELECT 1")).Scalar<ulong>());

        // ClickHouse's own signal handlers would turn this SIGSEGV into a hang or a crash.
        string? nothing = Environment.GetEnvironmentVariable("ANALYTICS_TEST_UNSET_" + Guid.NewGuid().ToString("N"));
        var caught = 0;
        for (var i = 0; i < 3; i++)
        {
            try
            {
                _ = nothing!.Length;
            }
            catch (NullReferenceException)
            {
                caught++;
            }
        }

        Assert.Equal(3, caught);
        Assert.Equal(2UL, (await store.QueryAsync("SELECT 2")).Scalar<ulong>());
    }

    [Fact]
    public async Task QueryAsync_ReturnsTypedValues()
    {
        using var dir = new TempDirectory();
        await using var store = EmbeddedStore.Open(dir.Path);
        var result = await store.QueryAsync("""
            SELECT toInt32(-5) AS i, toUInt64(18446744073709551615) AS u, 2.5 AS f, toDecimal64(1.25, 2) AS d,
                   true AS b, toDate('2026-11-28') AS day, toDateTime64('2026-11-28 10:11:12.345', 3, 'UTC') AS ts,
                   'tab\there' AS s, [1, 2, 3] AS arr, ['a', 'b''c'] AS sarr, CAST(NULL AS Nullable(String)) AS n,
                   toIPv6('::ffff:127.0.0.1') AS ip, toLowCardinality('lc') AS lc
            """);
        var row = result.Rows.Single();
        Assert.Equal(-5L, row[result.Ordinal("i")]);
        Assert.Equal(ulong.MaxValue, row[result.Ordinal("u")]);
        Assert.Equal(2.5, row[result.Ordinal("f")]);
        Assert.Equal(1.25m, row[result.Ordinal("d")]);
        Assert.Equal(true, row[result.Ordinal("b")]);
        Assert.Equal(new DateOnly(2026, 11, 28), row[result.Ordinal("day")]);
        var ts = Assert.IsType<DateTime>(row[result.Ordinal("ts")]);
        Assert.Equal(new DateTime(2026, 11, 28, 10, 11, 12, 345, DateTimeKind.Utc), ts);
        Assert.Equal(DateTimeKind.Utc, ts.Kind);
        Assert.Equal("tab\there", row[result.Ordinal("s")]);
        Assert.Equal(new object?[] { 1UL, 2UL, 3UL }, row[result.Ordinal("arr")]);
        Assert.Equal(new object?[] { "a", "b'c" }, row[result.Ordinal("sarr")]);
        Assert.Null(row[result.Ordinal("n")]);
        Assert.Equal(IPAddress.Parse("::ffff:127.0.0.1"), IPAddress.Parse((string)row[result.Ordinal("ip")]!));
        Assert.Equal("lc", row[result.Ordinal("lc")]);
        Assert.Equal("Decimal(18, 2)", result.Columns[result.Ordinal("d")].Type);
    }

    [Fact]
    public async Task Parameters_ByTheHundredThousand_DoNotOverflowTheStack()
    {
        // 4 pointers a parameter on the stack was 3.2 MB here: past a thread-pool thread's stack, a
        // crash no handler catches. The call must simply work.
        using var dir = new TempDirectory();
        await using var store = EmbeddedStore.Open(dir.Path);
        var parameters = new QueryParameters();
        for (var i = 0; i < 100_000; i++)
        {
            parameters["p" + i] = i;
        }

        var result = await store.QueryAsync("SELECT {p0:UInt32} + {p99999:UInt32} AS v", parameters, TestContext.Current.CancellationToken);
        Assert.Equal(99_999UL, result.Scalar<ulong>());
    }

    [Theory]
    [InlineData("O'Hara")]
    [InlineData("back\\slash")]
    [InlineData("tab\tand\nnewline")]
    [InlineData("'; DROP TABLE t; --")]
    [InlineData("ünïcödé ✉")]
    public async Task Parameters_AreBoundByClickHouse_NotSpliced(string value)
    {
        using var dir = new TempDirectory();
        await using var store = EmbeddedStore.Open(dir.Path);
        var result = await store.QueryAsync("SELECT {v:String} AS v, length({v:String}) AS n", QueryParameters.Of(("v", value)));
        Assert.Equal(value, result.Rows[0][0]);
        Assert.Equal((ulong)System.Text.Encoding.UTF8.GetByteCount(value), result.Rows[0][1]);
    }

    [Fact]
    public async Task BadSql_ThrowsClickHouseException_WithCodeAndName()
    {
        using var dir = new TempDirectory();
        await using var store = EmbeddedStore.Open(dir.Path);
        var syntax = await Assert.ThrowsAsync<ClickHouseException>(() => store.QueryAsync("SELEC 1"));
        Assert.Equal(62, syntax.Code);
        Assert.Equal("SYNTAX_ERROR", syntax.ErrorName);
        var table = await Assert.ThrowsAsync<ClickHouseException>(() => store.QueryAsync("SELECT * FROM no_such_table"));
        Assert.Equal(60, table.Code);
        Assert.Equal("UNKNOWN_TABLE", table.ErrorName);

        // The connection is still good after errors.
        Assert.Equal(3UL, (await store.QueryAsync("SELECT 3")).Scalar<ulong>());
    }

    [Fact]
    public async Task RowBinaryInsert_WithSameToken_IsStoredOnce_AndSurvivesRestart()
    {
        using var dir = new TempDirectory();
        byte[] rows = [1, 0, 0, 0, 3, (byte)'\n', (byte)'\n', (byte)'x', 2, 0, 0, 0, 0];
        await using (var store = EmbeddedStore.Open(dir.Path))
        {
            await store.ExecuteAsync("CREATE TABLE t (a UInt32, s String) ENGINE = MergeTree ORDER BY a SETTINGS non_replicated_deduplication_window = 100");
            await store.InsertRowBinaryAsync("t", "a, s", rows, "batch-1");
            await store.InsertRowBinaryAsync("t", "a, s", rows, "batch-1");
            await store.InsertRowBinaryAsync("t", "a, s", rows, "batch-2");
            Assert.Equal(4UL, (await store.QueryAsync("SELECT count() FROM t")).Scalar<ulong>());
        }

        await using (var reopened = EmbeddedStore.Open(dir.Path))
        {
            var result = await reopened.QueryAsync("SELECT a, s FROM t ORDER BY a, s");
            Assert.Equal(4, result.Rows.Count);
            Assert.Equal("\n\nx", result.Rows[0][1]);
            Assert.Equal("", result.Rows[2][1]);
        }
    }

    [Fact]
    public async Task SecondOpen_OfTheSameDirectory_IsRefusedClearly()
    {
        using var dir = new TempDirectory();
        await using var store = EmbeddedStore.Open(dir.Path);
        var ex = Assert.Throws<DataDirectoryInUseException>(() => EmbeddedStore.Open(dir.Path));
        Assert.Contains(Path.GetFullPath(dir.Path), ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Migrations_AreAppliedOnce_AndRecorded()
    {
        using var dir = new TempDirectory();
        await using var store = EmbeddedStore.Open(dir.Path);
        var migrator = new Migrator(store, NullLogger.Instance);
        var first = await migrator.ApplyAsync(new SchemaSettings { RetentionDays = 30 });
        var second = await migrator.ApplyAsync(new SchemaSettings { RetentionDays = 30 });
        Assert.Equal(Migrator.Embedded.Select(m => m.Version), first);
        Assert.Empty(second);
        var recorded = await store.QueryAsync("SELECT version, name FROM schema_migrations FINAL ORDER BY version");
        Assert.Equal(Migrator.Embedded.Count, recorded.Rows.Count);
        var engine = (await store.QueryAsync("SELECT engine_full FROM system.tables WHERE name = 'events' AND database = currentDatabase()")).Scalar<string>();
        Assert.Contains("toIntervalDay(30)", engine, StringComparison.Ordinal);

        // Retention is configuration: changing it changes the TTL without a new migration.
        await migrator.ApplyAsync(new SchemaSettings { RetentionDays = 7 });
        engine = (await store.QueryAsync("SELECT engine_full FROM system.tables WHERE name = 'events' AND database = currentDatabase()")).Scalar<string>();
        Assert.Contains("toIntervalDay(7)", engine, StringComparison.Ordinal);
    }

    [Fact]
    public void MissingEngine_GivesClearError()
    {
        Assert.EndsWith(Path.Combine(ChdbLibrary.Version, "libchdb.so"), ChdbLibrary.ExpectedPath, StringComparison.Ordinal);
        Assert.True(File.Exists(ChdbLibrary.ExpectedPath), "the build fetches the pinned engine into the cache");
    }

    [Fact]
    public async Task Writes_GoAheadOfQueuedReads_SoHeavyQueriesCannotHoldInsertsBack()
    {
        using var dir = new TempDirectory();
        await using var store = EmbeddedStore.Open(dir.Path);
        var ct = TestContext.Current.CancellationToken;
        await store.ExecuteAsync("CREATE TABLE t (x UInt32) ENGINE = MergeTree ORDER BY x", null, ct);
        var order = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var reads = new List<Task>();
        for (var i = 0; i < 4; i++)
        {
            var n = i;
            reads.Add(Task.Run(async () =>
            {
                await store.QueryAsync("SELECT sleep(0.3)", null, ct);
                order.Enqueue("read " + n);
            }, ct));
            await Task.Delay(30, ct);
        }

        var write = Task.Run(async () =>
        {
            await store.ExecuteAsync("INSERT INTO t VALUES (1)", null, ct);
            order.Enqueue("write");
        }, ct);
        await Task.WhenAll([.. reads, write]);

        // The first read held the connection when the insert came; three reads were queued before it.
        Assert.Equal(1, order.ToList().IndexOf("write"));
    }
}
