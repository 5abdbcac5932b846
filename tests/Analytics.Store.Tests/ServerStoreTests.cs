using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Analytics.Store.Server;
using Xunit;

namespace Analytics.Store.Tests;

/// <summary>
/// The server backend. Setting parsing and "server down" need no server and always run; the rest runs
/// against the server named by <c>ANALYTICS_CLICKHOUSE_URL</c> (a URL or connection string) and is
/// reported as skipped without it.
/// </summary>
public sealed class ServerStoreTests
{
    private const string ServerVariable = "ANALYTICS_CLICKHOUSE_URL";

    private static CancellationToken Cancellation => TestContext.Current.CancellationToken;

    [Fact]
    public void Parse_ConnectionString_KeepsSettingsAndHidesPassword()
    {
        var endpoint = ServerEndpoint.Parse("Host=ch.example.net;Port=9123;Username=mail;Password=s3cret-pw;Database=analytics");

        Assert.Equal("ch.example.net", endpoint.Settings.Host);
        Assert.Equal(9123, endpoint.Settings.Port);
        Assert.Equal("mail", endpoint.Settings.Username);
        Assert.Equal("s3cret-pw", endpoint.Settings.Password);
        Assert.Equal("analytics", endpoint.Settings.Database);
        Assert.Equal("http://ch.example.net:9123/analytics", endpoint.Location);
        Assert.DoesNotContain("s3cret-pw", endpoint.Location, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_Url_DecodesCredentialsAndHidesThem()
    {
        var endpoint = ServerEndpoint.Parse("https://mail%40ops:p%3Ass%2Fword@ch.example.net:8443/events");

        Assert.Equal("https", endpoint.Settings.Protocol);
        Assert.Equal("ch.example.net", endpoint.Settings.Host);
        Assert.Equal(8443, endpoint.Settings.Port);
        Assert.Equal("mail@ops", endpoint.Settings.Username);
        Assert.Equal("p:ss/word", endpoint.Settings.Password);
        Assert.Equal("events", endpoint.Settings.Database);
        Assert.Equal("https://ch.example.net:8443/events", endpoint.Location);
        Assert.DoesNotContain("p%3Ass", endpoint.Location, StringComparison.Ordinal);
        Assert.DoesNotContain("mail", endpoint.Location, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_UrlWithoutPortOrDatabase_UsesTheSchemesPort()
    {
        var endpoint = ServerEndpoint.Parse("http://127.0.0.1");

        Assert.Equal(80, endpoint.Settings.Port);
        Assert.StartsWith("http://127.0.0.1:80/", endpoint.Location, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("ftp://user:s3cret-pw@ch.example.net/db")]
    [InlineData("http://")]
    [InlineData("http://user:s3cret-pw@ch.example.net:8123/db/extra")]
    [InlineData("http://user:s3cret-pw@ch.example.net:8123/db?password=s3cret-pw")]
    [InlineData("ch.example.net:8123")]
    [InlineData("Port=8123;Username=mail;Password=s3cret-pw")]
    [InlineData("Host=ch.example.net;Port=eighty;Password=s3cret-pw")]
    [InlineData("Host=ch.example.net;Port=70000;Password=s3cret-pw")]
    [InlineData("Host=ch.example.net;Protocol=tcp;Password=s3cret-pw")]
    [InlineData("Host=not a host;Password=s3cret-pw")]
    public void Parse_BadSetting_ThrowsArgumentExceptionWithoutThePassword(string server)
    {
        var ex = Assert.ThrowsAny<ArgumentException>(() => ServerEndpoint.Parse(server));

        Assert.DoesNotContain("s3cret-pw", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_BadSetting_ThrowsArgumentException() =>
        Assert.ThrowsAny<ArgumentException>(() => ServerStore.Open("not a server"));

    [Fact]
    public void Open_ServerDown_ThrowsStoreUnavailableWithTheCause()
    {
        var port = UnusedPort();

        var ex = Assert.Throws<StoreUnavailableException>(() => ServerStore.Open($"http://default:s3cret-pw@127.0.0.1:{port}/default"));

        Assert.Contains($"127.0.0.1:{port}", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("s3cret-pw", ex.Message, StringComparison.Ordinal);
        Assert.NotNull(ex.InnerException);
    }

    [Fact]
    public async Task OpenAsync_ServerDown_ThrowsStoreUnavailable()
    {
        var port = UnusedPort();

        await Assert.ThrowsAsync<StoreUnavailableException>(() => ServerStore.OpenAsync($"Host=127.0.0.1;Port={port}", Cancellation));
    }

    [Fact]
    public async Task Open_SelectOne_ReturnsOne()
    {
        await using var store = OpenServerUnderTest();

        var result = await store.QueryAsync("SELECT 1 AS one", cancellationToken: Cancellation);

        Assert.Equal("server", store.Backend);
        Assert.Equal(new QueryColumn("one", "UInt8"), Assert.Single(result.Columns));
        Assert.Equal(1UL, result.Scalar<ulong>());
    }

    [Fact]
    public async Task QueryAsync_ManyTypes_DecodeLikeTheEmbeddedBackend()
    {
        await using var store = OpenServerUnderTest();

        var result = await store.QueryAsync(
            """
            SELECT
                toInt8(-8) AS i8, toInt64('-9223372036854775808') AS i64, toUInt8(255) AS u8,
                toUInt64('18446744073709551615') AS u64, toFloat64(1.5) AS f64, toFloat32(0.25) AS f32,
                toDecimal64(12.34, 2) AS dec, true AS b, toDate('2024-02-29') AS d,
                toDateTime('2024-02-29 12:34:56', 'UTC') AS dt,
                toDateTime64('2024-02-29 12:34:56.789', 3, 'Asia/Kolkata') AS dt64,
                [1, 2, 3] AS arr, ['a', NULL] AS arr_nullable, CAST(NULL AS Nullable(Int32)) AS nothing,
                'tab\there' AS s, toUUID('6f1b7c1e-8c3a-4b1a-9d2e-0a1b2c3d4e5f') AS uuid,
                toIPv4('192.0.2.1') AS ip4, toIPv6('2001:db8::1') AS ip6,
                CAST('b' AS Enum8('a' = 1, 'b' = 2)) AS e, toLowCardinality('lc') AS lc
            """,
            cancellationToken: Cancellation);

        Assert.Equal("Int8", result.Columns[result.Ordinal("i8")].Type);
        Assert.Equal("Array(UInt8)", result.Columns[result.Ordinal("arr")].Type);
        Assert.Equal("Nullable(Int32)", result.Columns[result.Ordinal("nothing")].Type);
        Assert.Equal("LowCardinality(String)", result.Columns[result.Ordinal("lc")].Type);

        var row = result.Rows.Single();
        object? Value(string column) => row[result.Ordinal(column)];
        Assert.Equal(-8L, Value("i8"));
        Assert.Equal(long.MinValue, Value("i64"));
        Assert.Equal(255UL, Value("u8"));
        Assert.Equal(ulong.MaxValue, Value("u64"));
        Assert.Equal(1.5d, Value("f64"));
        Assert.Equal(0.25d, Value("f32"));
        Assert.Equal(12.34m, Value("dec"));
        Assert.Equal(true, Value("b"));
        Assert.Equal(new DateOnly(2024, 2, 29), Value("d"));

        var dt = Assert.IsType<DateTime>(Value("dt"));
        Assert.Equal(DateTimeKind.Utc, dt.Kind);
        Assert.Equal(new DateTime(2024, 2, 29, 12, 34, 56, DateTimeKind.Utc), dt);

        // A column in another time zone still comes back as the same instant in UTC (+05:30 here).
        var dt64 = Assert.IsType<DateTime>(Value("dt64"));
        Assert.Equal(DateTimeKind.Utc, dt64.Kind);
        Assert.Equal(new DateTime(2024, 2, 29, 7, 4, 56, 789, DateTimeKind.Utc), dt64);

        Assert.Equal(new object?[] { 1UL, 2UL, 3UL }, Assert.IsType<object?[]>(Value("arr")));
        Assert.Equal(new object?[] { "a", null }, Assert.IsType<object?[]>(Value("arr_nullable")));
        Assert.Null(Value("nothing"));
        Assert.Equal("tab\there", Value("s"));
        Assert.Equal("6f1b7c1e-8c3a-4b1a-9d2e-0a1b2c3d4e5f", Value("uuid"));
        Assert.Equal("192.0.2.1", Value("ip4"));
        Assert.Equal("2001:db8::1", Value("ip6"));
        Assert.Equal("b", Value("e"));
        Assert.Equal("lc", Value("lc"));
    }

    [Fact]
    public async Task QueryAsync_Parameters_AreBoundNotSpliced()
    {
        await using var store = OpenServerUnderTest();
        const string tricky = "it's a \"quote\", a back\\slash, a\ttab, a\nnewline and '; DROP TABLE x; --";
        var at = new DateTime(2024, 1, 2, 3, 4, 5, 6, DateTimeKind.Utc);
        string[] quoted = ["a'b", "c\\d"];

        var result = await store.QueryAsync(
            "SELECT {s:String} AS s, {n:Int64} AS n, {b:Bool} AS b, {arr:Array(String)} AS arr, " +
            "{at:DateTime64(3, 'UTC')} AS at, {missing:Nullable(String)} AS missing, length({s:String}) AS len",
            QueryParameters.Of(("s", tricky), ("n", -42L), ("b", true), ("arr", quoted), ("at", at), ("missing", null)),
            Cancellation);

        var row = result.Rows.Single();
        Assert.Equal(tricky, row[result.Ordinal("s")]);
        Assert.Equal((ulong)Encoding.UTF8.GetByteCount(tricky), row[result.Ordinal("len")]);
        Assert.Equal(-42L, row[result.Ordinal("n")]);
        Assert.Equal(true, row[result.Ordinal("b")]);
        object?[] expectedArray = ["a'b", "c\\d"];
        Assert.Equal(expectedArray, row[result.Ordinal("arr")]);
        Assert.Equal(at, row[result.Ordinal("at")]);
        Assert.Null(row[result.Ordinal("missing")]);

        var count = await store.QueryAsync(
            "SELECT count() FROM numbers(10) WHERE number < {limit:UInt64}", QueryParameters.Of(("limit", 3UL)), Cancellation);
        Assert.Equal(3UL, count.Scalar<ulong>());
    }

    [Fact]
    public async Task QueryFormattedAsync_ReturnsClickHousesOwnOutput()
    {
        await using var store = OpenServerUnderTest();

        var tsv = await store.QueryFormattedAsync("SELECT 1 AS x, {s:String} AS y", "TSV", QueryParameters.Of(("s", "a\tb")), Cancellation);
        var json = await store.QueryFormattedAsync("SELECT 1 AS x, 'a' AS y", "JSONEachRow", cancellationToken: Cancellation);

        Assert.Equal("1\ta\\tb\n", Encoding.UTF8.GetString(tsv));
        Assert.Equal("{\"x\":1,\"y\":\"a\"}\n", Encoding.UTF8.GetString(json));
    }

    [Fact]
    public async Task InsertRowBinaryAsync_SameTokenTwice_StoresOneCopy()
    {
        await using var store = OpenServerUnderTest();
        var table = "server_store_test_" + Guid.NewGuid().ToString("N");
        await store.ExecuteAsync(
            $"CREATE TABLE {table} (id UInt64, name String) ENGINE = MergeTree ORDER BY id SETTINGS non_replicated_deduplication_window = 100",
            cancellationToken: Cancellation);
        try
        {
            var rows = RowBinary((1, "one"), (2, "tw\to"));

            await store.InsertRowBinaryAsync(table, "id, name", rows, "batch-1", Cancellation);
            await store.InsertRowBinaryAsync(table, "id, name", rows, "batch-1", Cancellation);
            var afterRetry = await store.QueryAsync($"SELECT id, name FROM {table} ORDER BY id", cancellationToken: Cancellation);

            await store.InsertRowBinaryAsync(table, "id, name", rows, "batch-2", Cancellation);
            var afterNewBatch = await store.QueryAsync($"SELECT count() FROM {table}", cancellationToken: Cancellation);

            Assert.Equal(new object?[][] { [1UL, "one"], [2UL, "tw\to"] }, afterRetry.Rows);
            Assert.Equal(4UL, afterNewBatch.Scalar<ulong>());
        }
        finally
        {
            await store.ExecuteAsync($"DROP TABLE IF EXISTS {table}", cancellationToken: CancellationToken.None);
        }
    }

    [Fact]
    public async Task QueryAsync_BadSql_ThrowsClickHouseExceptionWithCodeAndName()
    {
        await using var store = OpenServerUnderTest();

        var ex = await Assert.ThrowsAsync<ClickHouseException>(() => store.QueryAsync("SELEC 1", cancellationToken: Cancellation));

        Assert.Equal(62, ex.Code);
        Assert.Equal("SYNTAX_ERROR", ex.ErrorName);
    }

    [Fact]
    public async Task QueryFormattedAsync_ErrorMidQuery_ThrowsClickHouseExceptionNotPartialOutput()
    {
        await using var store = OpenServerUnderTest();

        var ex = await Assert.ThrowsAsync<ClickHouseException>(() => store.QueryFormattedAsync(
            "SELECT throwIf(number = 3, 'boom') FROM numbers(5) SETTINGS max_block_size = 1", "JSONEachRow", cancellationToken: Cancellation));

        Assert.Equal(395, ex.Code);
        Assert.Equal("FUNCTION_THROW_IF_VALUE_IS_NON_ZERO", ex.ErrorName);
    }

    private static ServerStore OpenServerUnderTest()
    {
        var server = Environment.GetEnvironmentVariable(ServerVariable);
        Assert.SkipWhen(
            string.IsNullOrWhiteSpace(server),
            $"{ServerVariable} is not set; set it to a ClickHouse server (http://user:password@host:8123/database or a connection string) to run this test.");
        return ServerStore.Open(server!);
    }

    private static int UnusedPort()
    {
        // Nothing listens on a port the OS just handed out and took back, so connecting is refused at once.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private static byte[] RowBinary(params (ulong Id, string Name)[] rows)
    {
        using var buffer = new MemoryStream();
        Span<byte> id = stackalloc byte[8];
        foreach (var (rowId, name) in rows)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(id, rowId);
            buffer.Write(id);

            // RowBinary String: LEB128 length, then the bytes.
            var bytes = Encoding.UTF8.GetBytes(name);
            for (var length = (uint)bytes.Length; ; length >>= 7)
            {
                buffer.WriteByte((byte)(length < 0x80 ? length : (length & 0x7F) | 0x80));
                if (length < 0x80)
                {
                    break;
                }
            }

            buffer.Write(bytes);
        }

        return buffer.ToArray();
    }
}
