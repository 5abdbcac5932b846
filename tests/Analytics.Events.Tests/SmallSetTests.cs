using Xunit;

namespace Analytics.Events.Tests;

/// <summary>The per-row set of uniq hashes through its three shapes: inline, a short array, a hash set.</summary>
public sealed class SmallSetTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(16)]
    [InlineData(17)]
    [InlineData(200)]
    public void Add_WithRepeats_KeepsEachValueOnce(int distinct)
    {
        var set = default(SmallSet<uint>);
        for (var round = 0; round < 3; round++)
        {
            for (var i = 0; i < distinct; i++)
            {
                set.Add((uint)(i * 7919));
            }
        }

        var seen = new List<uint>();
        foreach (var v in set)
        {
            seen.Add(v);
        }

        Assert.Equal(distinct, set.Count);
        Assert.Equal(Enumerable.Range(0, distinct).Select(i => (uint)(i * 7919)).Order(), seen.Order());
        Assert.Equal(distinct <= 16, set.TryGetSmall(out var small));
        if (distinct <= 16)
        {
            Assert.Equal(seen, small.ToArray());
        }
    }

    [Fact]
    public void Clear_AfterGrowing_StartsEmptyAndGrowsAgain()
    {
        var set = default(SmallSet<uint>);
        for (var i = 0u; i < 40; i++)
        {
            set.Add(i);
        }

        set.Clear();
        Assert.Equal(0, set.Count);
        for (var i = 0u; i < 10; i++)
        {
            set.Add(i + 100);
            set.Add(i + 100);
        }

        Assert.True(set.TryGetSmall(out var small));
        Assert.Equal(Enumerable.Range(100, 10).Select(i => (uint)i), small.ToArray());
    }
}
