using System.Collections.Concurrent;
using System.Globalization;

namespace Analytics.Submission;

/// <summary>
/// Emptied spool files kept for the next message (<c>free-N.tmp</c> in the spool directory), so that a
/// message in steady state neither allocates nor frees an inode: its <c>.eml</c> and <c>.json</c> are
/// renamed into the pool when it leaves the queue and renamed out of it for the next one. Creating and
/// deleting files is what the spool's file system spent most on per message (on ext4 without a journal
/// every new inode scans the recently deleted ones of its group, so the cost grows with the rate).
/// A crash leaves only <c>*.tmp</c> names, which the queue deletes at start. One pool per directory,
/// shared by the listener's and the queue's <see cref="MailSpool"/>.
/// </summary>
internal sealed class SpoolFilePool
{
    /// <summary>Most files kept; past it a released file is deleted. Default 256 (a few MB of inode and directory entries, no data).</summary>
    public const int Capacity = 256;

    private static readonly ConcurrentDictionary<string, SpoolFilePool> ByDirectory = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<string> _free = new();
    private readonly string _directory;
    private int _count;
    private long _next;

    private SpoolFilePool(string directory) => _directory = directory;

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
        while (_free.TryDequeue(out var free))
        {
            Interlocked.Decrement(ref _count);
            try
            {
                File.Move(free, path, overwrite: false);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // Gone (a restart's cleanup) or the name is taken: the new file is made the usual way.
                MailSpool.TryDelete(free);
                break;
            }

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
                break;
            }
        }

        return new FileStream(path, options);
    }

    /// <summary>
    /// Takes a file that is no longer mail (its message left the queue) into the pool, emptied, or deletes
    /// it when the pool is full. A file that does not exist is ignored.
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
            File.Move(path, free);
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

        try
        {
            // Emptied now, not at reuse: what the pool holds is never a deleted message's content.
            using var handle = File.OpenHandle(free, FileMode.Open, FileAccess.Write);
            RandomAccess.SetLength(handle, 0);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            MailSpool.TryDelete(free);
            return;
        }

        _free.Enqueue(free);
        Interlocked.Increment(ref _count);
    }
}
