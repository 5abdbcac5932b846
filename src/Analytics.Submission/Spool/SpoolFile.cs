using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Analytics.Submission;

/// <summary>
/// A spool file open for writing, through libc directly: open, pwrite, fsync, close and nothing else.
/// A <see cref="FileStream"/> around the same file added, per message, an fstat, an fstatfs, two flock
/// calls, an ftruncate, a 64 KB buffer and a thread-pool hop for every write (async file I/O on Linux is
/// a blocking pwrite on a pool thread); <see cref="File.Move(string, string)"/> added three lstat calls
/// and path normalisation to every rename. Per accepted message that was about half of what the spool
/// cost in system calls, on the MX's hot path. Writes here go to the page cache and return at once; only
/// <see cref="Fsync"/> waits for the disk. Errors are <see cref="IOException"/>s whose
/// <see cref="Exception.HResult"/> is the errno, as .NET's own (so ENOSPC is still told apart).
/// </summary>
internal sealed partial class SpoolFile : SafeHandleMinusOneIsInvalid
{
    private const int OWronly = 0x1;
    private const int OCreat = 0x40;
    private const int OExcl = 0x80;
    private const int OCloexec = 0x80000;
    private const int AtFdcwd = -100;
    private const uint RenameNoreplace = 1;
    private const int EINVAL = 22;
    private const int ENOSYS = 38;
    private const int EINTR = 4;

    private long _length;

    // A pooled file still holds what it held before (see SpoolFilePool): cut to what was written before the fsync.
    private bool _reused;

    public SpoolFile()
        : base(ownsHandle: true)
    {
    }

    /// <summary>Bytes written so far (every write appends).</summary>
    public long Length => _length;

    /// <summary>
    /// Opens an existing file (a pooled one) for writing from its start, its blocks kept: <see cref="Fsync"/>
    /// cuts it to what was written, so what it held before never outlives the fsync.
    /// </summary>
    public static SpoolFile OpenExisting(string path)
    {
        var file = Open(path, OWronly | OCloexec);
        file._reused = true;
        return file;
    }

    /// <summary>Creates <paramref name="path"/> (mode 0600); fails if it exists.</summary>
    public static SpoolFile CreateNew(string path) => Open(path, OWronly | OCreat | OExcl | OCloexec);

    private static SpoolFile Open(string path, int flags)
    {
        // open(2) returns an int: taken as such (a SafeHandle return would read a pointer-sized value).
        var fd = Native.Open(path, flags, 0x180 /* 0600 */);
        if (fd < 0)
        {
            throw Error("open", path, Marshal.GetLastPInvokeError());
        }

        var file = new SpoolFile();
        file.SetHandle(fd);
        return file;
    }

    /// <summary>Appends <paramref name="bytes"/> (to the page cache: no wait for the disk).</summary>
    public void Write(ReadOnlySpan<byte> bytes)
    {
        while (!bytes.IsEmpty)
        {
            var n = Native.PWrite(this, ref MemoryMarshal.GetReference(bytes), (nuint)bytes.Length, _length);
            if (n < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno == EINTR)
                {
                    continue;
                }

                throw Error("write", null, errno);
            }

            _length += n;
            bytes = bytes[(int)n..];
        }
    }

    /// <summary>
    /// Waits until what was written, and the file's size and blocks, are on the disk. A reused file is cut
    /// to what was written first (the same size as before, the common case, frees and allocates nothing).
    /// </summary>
    public void Fsync()
    {
        if (_reused && Native.FTruncate(this, _length) != 0)
        {
            throw Error("ftruncate", null, Marshal.GetLastPInvokeError());
        }

        if (Native.Fsync(this) != 0)
        {
            throw Error("fsync", null, Marshal.GetLastPInvokeError());
        }
    }

    /// <summary>
    /// Renames <paramref name="from"/> to <paramref name="to"/>, never replacing a file there (as
    /// <c>File.Move(from, to, overwrite: false)</c>, in one system call). Not durable until the directory is fsynced.
    /// </summary>
    public static void Rename(string from, string to)
    {
        if (Native.RenameAt2(AtFdcwd, from, AtFdcwd, to, RenameNoreplace) == 0)
        {
            return;
        }

        var errno = Marshal.GetLastPInvokeError();
        if (errno is EINVAL or ENOSYS)
        {
            // A file system without RENAME_NOREPLACE: what File.Move does (a check, then the rename).
            File.Move(from, to, overwrite: false);
            return;
        }

        throw Error("rename", from, errno);
    }

    protected override bool ReleaseHandle() => Native.Close((int)handle) == 0;

    private const int ENOENT = 2;

    // As .NET's own: the errno as HResult, and a missing file as FileNotFoundException.
    private static IOException Error(string call, string? path, int errno)
    {
        var message = $"{call} {path} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})";
        return errno == ENOENT ? new FileNotFoundException(message, path) { HResult = errno } : new IOException(message, errno);
    }

    private static partial class Native
    {
        [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
        public static partial int Open(string path, int flags, int mode);

        [LibraryImport("libc", EntryPoint = "pwrite", SetLastError = true)]
        public static partial nint PWrite(SpoolFile fd, ref byte buffer, nuint count, long offset);

        [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
        public static partial int Fsync(SpoolFile fd);

        [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
        public static partial int Close(int fd);

        [LibraryImport("libc", EntryPoint = "renameat2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
        public static partial int RenameAt2(int olddirfd, string oldpath, int newdirfd, string newpath, uint flags);

        [LibraryImport("libc", EntryPoint = "ftruncate", SetLastError = true)]
        public static partial int FTruncate(SpoolFile fd, long length);
    }
}
