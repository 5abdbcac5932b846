using System.Buffers;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace Analytics.Events.Tests;

/// <summary>Issue 13, item 7: what a SIGKILL leaves in the spool is recovered, counted, and never overwritten.</summary>
[Collection(EmbeddedCollection.Name)]
public sealed class EventSpoolRecoveryTests
{
    private static SmtpEvent Event(int i) => NumberedEvents.Of(i, "recovery", 4);

    // A spill segment as a producer leaves it when the process dies: whole frames, then a torn one.
    private static byte[] Segment(int frames, int perFrame, bool tornTail)
    {
        var output = new ArrayBufferWriter<byte>();
        var batch = new EventBatch();
        for (var f = 0; f < frames + (tornTail ? 1 : 0); f++)
        {
            batch.Reset();
            for (var i = 0; i < perFrame; i++)
            {
                batch.Add(Event(f * perFrame + i));
            }

            var frame = batch.ToArray();
            output.Write(tornTail && f == frames ? frame.AsSpan(0, frame.Length / 2) : frame);
        }

        return output.WrittenSpan.ToArray();
    }

    [Fact]
    public async Task PartialSegment_LeftByACrash_KeepsEveryCompleteFrame_AndCountsTheTornTail()
    {
        using var dir = new TempDirectory();
        var spool = Path.Combine(dir.Path, "spool");
        Directory.CreateDirectory(spool);
        await File.WriteAllBytesAsync(Path.Combine(spool, "0000000000000007.partial"), Segment(frames: 3, perFrame: 100, tornTail: true));

        await using var store = EmbeddedStore.Open(Path.Combine(dir.Path, "store"));
        var ct = TestContext.Current.CancellationToken;
        await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings(), ct);
        EventSinkStats stats;
        await using (var sink = new EventSink(store, new EventSinkOptions { FlushInterval = TimeSpan.FromMilliseconds(20) }, spool, NullLogger.Instance))
        {
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (!await sink.FlushAsync(ct) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(50, ct);
            }

            stats = sink.Stats;
        }

        Assert.Equal(300, stats.Recovered);
        Assert.Equal(1, stats.QuarantinedFiles);
        Assert.Equal(100, stats.Quarantined);
        Assert.Equal(300UL, (await store.QueryAsync("SELECT count() FROM events", null, ct)).Scalar<ulong>());
        Assert.Equal(300UL, (await store.QueryAsync("SELECT sum(events) FROM activity WHERE entity_kind = 'ip'", null, ct)).Scalar<ulong>());
        Assert.Empty(Directory.GetFiles(spool, "*.partial"));
        Assert.Single(Directory.GetFiles(Path.Combine(spool, "quarantine")));
    }

    [Fact]
    public void Recovery_NeverOverwritesAnEarlierQuarantinedFile_NorReusesItsSequence()
    {
        using var dir = new TempDirectory();
        var spool = Path.Combine(dir.Path, "spool");
        var quarantine = Path.Combine(spool, "quarantine");
        Directory.CreateDirectory(quarantine);

        // A segment quarantined by an earlier start, whose sequence is above everything pending.
        var earlier = Path.Combine(quarantine, "0000000000000042.partial.tail");
        File.WriteAllText(earlier, "earlier");

        // The same segment name again, torn from its first byte.
        File.WriteAllBytes(Path.Combine(spool, "0000000000000042.partial"), Segment(frames: 0, perFrame: 10, tornTail: true));
        using var recovered = new EventSpool(spool);
        Assert.Equal("earlier", File.ReadAllText(earlier));
        Assert.Equal(2, Directory.GetFiles(quarantine).Length);
        Assert.Equal(1, recovered.QuarantinedFiles);
        Assert.True(recovered.NextSequence() > 42);
    }

    [Fact]
    public void Frames_AreReadUpToTheFirstTornOrCorruptOne()
    {
        var data = Segment(frames: 2, perFrame: 10, tornTail: false);
        Assert.Equal(2, EventFrame.Read(data, out var valid).Count);
        Assert.Equal(data.Length, valid);

        var corrupt = data.ToArray();
        corrupt[^3] ^= 0xff;
        Assert.Single(EventFrame.Read(corrupt, out var beforeCorrupt));
        Assert.True(beforeCorrupt < data.Length);
        Assert.Equal(20, EventFrame.CountEvents(data));
    }
}
