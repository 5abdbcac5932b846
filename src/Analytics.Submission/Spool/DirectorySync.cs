using System.Collections.Concurrent;

namespace Analytics.Submission;

/// <summary>
/// Group commit of a directory's fsync. A rename is durable only once its directory is fsynced, and one
/// fsync of the directory makes durable every entry changed before it began. So callers that arrive
/// while an fsync is in flight do not each start their own: they wait together for the next one, which
/// starts as soon as the one in flight ends and answers them all. Under load (twenty sessions
/// committing at once) a handful of fsyncs answers what used to take one each; alone, a caller waits
/// for exactly one fsync, as before.
/// <para>
/// Why this is safe: a caller joins <see cref="_next"/> only after its own rename returned, and the
/// round that answers it takes <see cref="_next"/> before it calls fsync. So the fsync that completes a
/// caller's task always started after that caller's rename: the rename is in it. A failed fsync fails
/// every caller of its round (their 250 is not sent; the client retries), and the next round starts
/// afresh. One instance per directory, shared by the listener's and the queue's <see cref="MailSpool"/>.
/// </para>
/// </summary>
internal sealed class DirectorySync
{
    private static readonly ConcurrentDictionary<string, DirectorySync> ByDirectory = new(StringComparer.Ordinal);

    private readonly string _directory;
    private readonly Action<string> _fsync;
    private readonly Lock _lock = new();

    // Both owned by _lock: the callers waiting for the round after the one in flight, and whether a
    // round is in flight (its runner takes _next once more before it stops).
    private TaskCompletionSource? _next;
    private bool _running;

    // Rounds begun (written under _lock), and the number of the last one whose fsync succeeded (rounds run
    // one after another, so it only grows): see Mark and Covers.
    private long _started;
    private long _durableThrough;
    private long _rounds;
    private long _requests;

    /// <summary>A group commit around <paramref name="fsync"/> (tests); <see cref="For"/> gives the real one.</summary>
    internal DirectorySync(string directory, Action<string> fsync)
    {
        _directory = directory;
        _fsync = fsync;
    }

    public static DirectorySync For(string directory) => ByDirectory.GetOrAdd(Path.GetFullPath(directory), d => new DirectorySync(d, MailSpool.FsyncDirectory));

    /// <summary>fsyncs of the directory so far.</summary>
    public long Rounds => Interlocked.Read(ref _rounds);

    /// <summary>Callers answered so far (<see cref="Requests"/> / <see cref="Rounds"/> is what grouping saved).</summary>
    public long Requests => Interlocked.Read(ref _requests);

    /// <summary>
    /// A mark for "the directory as it is now" (taken after a rename): <see cref="Covers"/> is true once an
    /// fsync that began after the mark was taken has succeeded, i.e. once that rename is on disk.
    /// </summary>
    public long Mark() => Volatile.Read(ref _started);

    /// <summary>Whether an fsync begun after <paramref name="mark"/> was taken has succeeded.</summary>
    public bool Covers(long mark) => Volatile.Read(ref _durableThrough) > mark;

    /// <summary>
    /// Completes once an fsync of the directory that began after this call has succeeded (faults with its
    /// <see cref="IOException"/> if it failed). The first caller with nothing in flight runs the fsync on
    /// its own thread, as a plain fsync would; later rounds run on the thread pool.
    /// </summary>
    public Task SyncAsync()
    {
        Interlocked.Increment(ref _requests);
        TaskCompletionSource waiter;
        lock (_lock)
        {
            waiter = _next ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            if (_running)
            {
                return waiter.Task;
            }

            _running = true;
        }

        RunRound();
        return waiter.Task;
    }

    private void RunRound()
    {
        TaskCompletionSource? round;
        long number;
        lock (_lock)
        {
            round = _next;
            _next = null;
            if (round is null)
            {
                _running = false;
                return;
            }

            number = Interlocked.Increment(ref _started);
        }

        // Taken before the fsync starts: whoever joins from here on waits for the next round.
        try
        {
            _fsync(_directory);
            Volatile.Write(ref _durableThrough, number);
            Interlocked.Increment(ref _rounds);
            round.SetResult();
        }
        catch (Exception ex)
        {
            round.SetException(ex);
        }

        lock (_lock)
        {
            if (_next is null)
            {
                _running = false;
                return;
            }
        }

        // Callers arrived during that fsync: their round goes on without holding up this caller.
        ThreadPool.UnsafeQueueUserWorkItem(static sync => sync.RunRound(), this, preferLocal: false);
    }
}
