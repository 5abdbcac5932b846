namespace Analytics.Submission.Tests;

/// <summary>
/// The spool directory's group-committed fsync: callers share fsyncs, but a caller is only ever answered by
/// an fsync that began after it asked (else its rename might not be in it).
/// </summary>
public sealed class DirectorySyncTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task CallersArrivingDuringAnFsync_WaitForTheNextOne_WhichAnswersThemAll()
    {
        using var inFlight = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var started = 0;
        var sync = new DirectorySync("/spool", _ =>
        {
            if (Interlocked.Increment(ref started) == 1)
            {
                inFlight.Set();
                release.Wait(TestContext.Current.CancellationToken);
            }
        });

        // The first caller runs the fsync on its own thread; it is held inside it.
        var first = Task.Run(sync.SyncAsync, Ct);
        Assert.True(inFlight.Wait(TimeSpan.FromSeconds(10), Ct));
        var mark = sync.Mark();
        var second = sync.SyncAsync();
        var third = sync.SyncAsync();
        Assert.False(second.IsCompleted);

        release.Set();
        await first.WaitAsync(TimeSpan.FromSeconds(10), Ct);
        await Task.WhenAll(second, third).WaitAsync(TimeSpan.FromSeconds(10), Ct);

        // A mark taken while the first fsync was in flight is covered by the second only.
        Assert.True(sync.Covers(mark));
        Assert.False(sync.Covers(sync.Mark()));

        // Had the late callers been answered by the fsync in flight, there would have been one round.
        Assert.Equal(2, started);
        Assert.Equal(2, sync.Rounds);
        Assert.Equal(3, sync.Requests);
    }

    [Fact]
    public async Task AFailedFsync_FailsItsRound_AndTheNextRoundStartsAfresh()
    {
        var fail = true;
        var sync = new DirectorySync("/spool", _ =>
        {
            if (fail)
            {
                throw new IOException("fsync of the spool directory failed (errno 5).");
            }
        });

        var mark = sync.Mark();
        await Assert.ThrowsAsync<IOException>(() => sync.SyncAsync().WaitAsync(TimeSpan.FromSeconds(10), Ct));
        Assert.False(sync.Covers(mark));
        fail = false;
        await sync.SyncAsync().WaitAsync(TimeSpan.FromSeconds(10), Ct);
        Assert.Equal(1, sync.Rounds);
    }

    [Fact]
    public async Task ManyConcurrentCallers_AllAnswered_WithFewerFsyncsThanCallers()
    {
        var sync = new DirectorySync("/spool", _ => Thread.Sleep(5));
        using var go = new ManualResetEventSlim();
        var callers = Enumerable.Range(0, 32).Select(_ => Task.Run(async () =>
        {
            go.Wait(Ct);
            for (var i = 0; i < 5; i++)
            {
                await sync.SyncAsync();
            }
        }, Ct)).ToArray();
        go.Set();
        await Task.WhenAll(callers).WaitAsync(TimeSpan.FromSeconds(60), Ct);

        Assert.Equal(160, sync.Requests);
        Assert.InRange(sync.Rounds, 1, 159);
    }
}
