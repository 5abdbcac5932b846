using System.Collections.Concurrent;
using System.Globalization;

namespace Analytics.Submission;

/// <summary>
/// Spool files kept for the next message (<c>free-N.tmp</c> in the spool directory), so that a message
/// in steady state neither allocates nor frees an inode, nor its data blocks: its <c>.eml</c> and
/// <c>.json</c> are renamed into the pool when it leaves the queue and renamed out of it for the next
/// one, which overwrites them from the start and cuts them to its own length before its fsync
/// (<see cref="SpoolFile.OpenExisting"/>). Creating and deleting files is what the spool's file system
/// spent most on per message (on ext4 without a journal every new inode scans the recently deleted ones
/// of its group, so the cost grows with the rate); emptying each file on release (a truncate freeing its
/// blocks, the next message allocating them again) was the next largest cost, about 5 % of the MX's CPU.
/// So a pooled file holds the content of the message that left until it is reused: mode 0600 in the
/// directory that holds the queued mail itself, as the blocks of a deleted or truncated file held it.
/// A crash leaves only <c>*.tmp</c> names, which the queue deletes at start. One pool per directory,
/// shared by the listener's and the queue's <see cref="MailSpool"/>.
/// <para>
/// A released file is reused only once its release is on disk: once an fsync of the directory that began
/// after the rename into the pool has succeeded (<see cref="DirectorySync.Covers"/>; the commits of other
/// messages make them all the time under load). Otherwise a power loss could bring back the old name
/// (<c>A.json</c>, <c>A.eml</c>) on a file that by then holds another message's envelope or content, and
/// the queue would deliver the one under the other's envelope. Until then a new file is made instead.
/// </para>
/// </summary>
internal sealed class SpoolFilePool
{
    /// <summary>Most files kept; past it a released file is deleted. Default 256 (a few MB of inode and directory entries, no data).</summary>
    public const int Capacity = 256;

    private static readonly ConcurrentDictionary<string, SpoolFilePool> ByDirectory = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<(string Path, long Mark)> _free = new();
    private readonly string _directory;
    private readonly DirectorySync _sync;
    private int _count;
    private long _next;

    private SpoolFilePool(string directory)
    {
        _directory = directory;
        _sync = DirectorySync.For(directory);
    }

    public static SpoolFilePool For(string directory) => ByDirectory.GetOrAdd(Path.GetFullPath(directory), d => new SpoolFilePool(d));

    /// <summary>The pool of the directory that holds <paramref name="path"/>.</summary>
    public static SpoolFilePool Of(string path) => For(Path.GetDirectoryName(Path.GetFullPath(path))!);

    public int Count => Volatile.Read(ref _count);

    /// <summary>
    /// Opens <paramref name="path"/> for writing, empty: a pooled file renamed there, or a new one
    /// (<paramref name="options"/> as given, <see cref="FileMode.CreateNew"/>). Never replaces a file.
    /// </summary>
    public FileStream Create(string path, FileStreamOptions options)
    {
        if (TryTake(path))
        {
            try
            {
                return new FileStream(path, new FileStreamOptions
                {
                    Mode = FileMode.Truncate,
                    Access = options.Access,
                    Share = options.Share,
                    Options = options.Options,
                    BufferSize = options.BufferSize,
                });
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                MailSpool.TryDelete(path);
            }
        }

        return new FileStream(path, options);
    }

    /// <summary>
    /// <see cref="Create(string, FileStreamOptions)"/> without a <see cref="FileStream"/>: the spool's own
    /// writer (<see cref="SpoolFile"/>), a rename and an open for a pooled file, a create for a new one.
    /// </summary>
    public SpoolFile CreateFile(string path)
    {
        if (TryTake(path))
        {
            try
            {
                return SpoolFile.OpenExisting(path);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                MailSpool.TryDelete(path);
            }
        }

        return SpoolFile.CreateNew(path);
    }

    // A pooled file renamed to path; false when the pool is empty or the rename failed (the file is then dropped).
    private bool TryTake(string path)
    {
        if (!_free.TryPeek(out var head) || !_sync.Covers(head.Mark) || !_free.TryDequeue(out var taken))
        {
            return false;
        }

        if (!_sync.Covers(taken.Mark))
        {
            // Another caller took the head first and this one is newer: back to the queue, a new file for now.
            _free.Enqueue(taken);
            return false;
        }

        var free = taken.Path;
        Interlocked.Decrement(ref _count);
        try
        {
            SpoolFile.Rename(free, path);
            return true;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Gone (a restart's cleanup) or the name is taken: the new file is made the usual way.
            MailSpool.TryDelete(free);
            return false;
        }
    }

    /// <summary>
    /// Takes a file that is no longer mail (its message left the queue) into the pool (a rename, nothing
    /// else), or deletes it when the pool is full. A file that does not exist is ignored.
    /// </summary>
    public void Release(string path)
    {
        if (Volatile.Read(ref _count) >= Capacity)
        {
            MailSpool.TryDelete(path);
            return;
        }

        var free = Path.Combine(_directory, "free-" + Interlocked.Increment(ref _next).ToString("x", CultureInfo.InvariantCulture) + ".tmp");
        try
        {
            SpoolFile.Rename(path, free);
        }
        catch (FileNotFoundException)
        {
            return;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            MailSpool.TryDelete(path);
            return;
        }

        _free.Enqueue((free, _sync.Mark()));
        Interlocked.Increment(ref _count);
    }
}
