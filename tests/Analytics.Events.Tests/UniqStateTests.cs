using System.Buffers;
using System.Globalization;
using System.Net;
using System.Text;
using Analytics.Store;
using Analytics.Store.Embedded;
using Xunit;

namespace Analytics.Events.Tests;

/// <summary>
/// The uniq states the sink builds against the engine's own: the same hashes (a state of ours merged
/// with ClickHouse's state of the same values counts each value once), the same counts, thinning past
/// 65,536 values included.
/// </summary>
[Collection(EmbeddedCollection.Name)]
public sealed class UniqStateTests
{
    private const string Text = "The quick brown fox jumps over the lazy dog 0123456789 ";

    [Fact]
    public async Task CityHash64_MatchesClickHouse_ForEveryLengthUpTo300()
    {
        using var dir = new TempDirectory();
        await using var store = EmbeddedStore.Open(dir.Path);
        var text = string.Concat(Enumerable.Repeat(Text, 10));
        var tsv = Encoding.UTF8.GetString(await store.QueryFormattedAsync(
            $"SELECT number, cityHash64(substring('{text}', 1 + (number % 7), number)) FROM numbers(300) ORDER BY number", "TSV", null,
            TestContext.Current.CancellationToken));
        var lines = tsv.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(300, lines.Length);
        foreach (var line in lines)
        {
            var parts = line.Split('\t');
            var n = int.Parse(parts[0], CultureInfo.InvariantCulture);
            var bytes = Encoding.ASCII.GetBytes(text.Substring(n % 7, n));
            Assert.Equal(ulong.Parse(parts[1], CultureInfo.InvariantCulture), UniqState.CityHash64(bytes));
        }
    }

    public static TheoryData<string> Types => new() { "String", "IPv6", "UInt64" };

    [Theory]
    [MemberData(nameof(Types))]
    public async Task State_MergesWithClickHousesStateOfTheSameValues(string type)
    {
        using var dir = new TempDirectory();
        await using var store = EmbeddedStore.Open(dir.Path);
        var ct = TestContext.Current.CancellationToken;

        // Values of each kind the sink counts, with the empty string, non-ASCII text, IPv4-mapped and :: among them.
        var (hashes, values) = type switch
        {
            "String" => (
                Enumerable.Range(0, 1000).Select(i => UniqState.OfString("r" + i.ToString(CultureInfo.InvariantCulture) + "@example.org"))
                    .Append(UniqState.OfString("")).Append(UniqState.OfString("grüße@例え.jp")).ToArray(),
                "arrayConcat(arrayMap(i -> concat('r', toString(i), '@example.org'), range(1000)), ['', 'grüße@例え.jp'])"),
            "IPv6" => (
                Enumerable.Range(0, 1000).Select(i => UniqState.OfIPv6(IpText.ToUInt128(IPAddress.Parse("2001:db8::" + i.ToString(CultureInfo.InvariantCulture)))))
                    .Concat(Enumerable.Range(0, 500).Select(i => UniqState.OfIPv6(IpText.ToUInt128(IPAddress.Parse(
                        string.Create(CultureInfo.InvariantCulture, $"10.{i / 256}.{i % 256}.1"))))))
                    .Append(UniqState.OfIPv6(0)).ToArray(),
                "arrayConcat(arrayMap(i -> toIPv6(concat('2001:db8::', toString(i))), range(1000)), " +
                "arrayMap(i -> toIPv6(concat('10.', toString(intDiv(i, 256)), '.', toString(i % 256), '.1')), range(500)), [toIPv6('::')])"),
            _ => (
                Enumerable.Range(0, 1000).Select(i => UniqState.OfUInt64((ulong)i * 0x9E3779B97F4A7C15UL)).Append(UniqState.OfUInt64(0)).ToArray(),
                "arrayPushBack(arrayMap(i -> toUInt64(i) * 11400714819323198485, range(1000)), 0)"),
        };

        var distinct = hashes.Distinct().ToArray();
        await store.ExecuteAsync($"CREATE TABLE t (k UInt8, s AggregateFunction(uniq, {type})) ENGINE = Memory", null, ct);
        await InsertStateAsync(store, type, distinct, ct);
        await store.ExecuteAsync($"INSERT INTO t SELECT 2, uniqState(x) FROM (SELECT arrayJoin({values}) AS x)", null, ct);

        var r = await store.QueryAsync("SELECT uniqMergeIf(s, k = 1), uniqMergeIf(s, k = 2), uniqMerge(s) FROM t", null, ct);
        var ours = Convert.ToUInt64(r.Rows[0][0], CultureInfo.InvariantCulture);
        var theirs = Convert.ToUInt64(r.Rows[0][1], CultureInfo.InvariantCulture);
        var both = Convert.ToUInt64(r.Rows[0][2], CultureInfo.InvariantCulture);
        Assert.True(ours > 500, $"{ours}");
        Assert.Equal(theirs, ours);
        Assert.Equal(theirs, both);
    }

    [Fact]
    public async Task State_PastTheThinningLimit_CountsAsClickHouse()
    {
        using var dir = new TempDirectory();
        await using var store = EmbeddedStore.Open(dir.Path);
        var ct = TestContext.Current.CancellationToken;
        const int N = 300_000;
        var hashes = Enumerable.Range(0, N).Select(i => UniqState.OfUInt64((ulong)i)).Distinct().ToArray();
        await store.ExecuteAsync("CREATE TABLE t (k UInt8, s AggregateFunction(uniq, UInt64)) ENGINE = Memory", null, ct);
        await InsertStateAsync(store, "UInt64", hashes, ct);
        await store.ExecuteAsync($"INSERT INTO t SELECT 2, uniqState(number) FROM numbers({N})", null, ct);

        var r = await store.QueryAsync("SELECT uniqMergeIf(s, k = 1), uniqMergeIf(s, k = 2), uniqMerge(s) FROM t", null, ct);
        var theirs = Convert.ToUInt64(r.Rows[0][1], CultureInfo.InvariantCulture);
        Assert.NotEqual((ulong)N, theirs); // thinned: an estimate, not the exact count
        Assert.Equal(theirs, Convert.ToUInt64(r.Rows[0][0], CultureInfo.InvariantCulture));
        Assert.Equal(theirs, Convert.ToUInt64(r.Rows[0][2], CultureInfo.InvariantCulture));
    }

    private static async Task InsertStateAsync(EmbeddedStore store, string type, uint[] hashes, CancellationToken ct)
    {
        var key = new NativeColumn(16);
        key.Byte(1);
        var state = new NativeColumn(1024);
        UniqState.Write(state, hashes.ToArray());
        var block = new ArrayBufferWriter<byte>();
        NativeColumn.WriteBlockHeader(block, 2, 1);
        NativeColumn.WriteColumn(block, "k", "UInt8", key.Written);
        NativeColumn.WriteColumn(block, "s", $"AggregateFunction(uniq, {type})", state.Written);
        await store.InsertAsync("t", null, InsertFormat.Native, block.WrittenMemory, null, ct);
    }
}
