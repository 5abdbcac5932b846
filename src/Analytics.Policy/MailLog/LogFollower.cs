using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;

namespace Analytics.Policy;

/// <summary>Lines appended to a log, as they come, until cancelled.</summary>
internal interface ILogSource
{
    IAsyncEnumerable<string> ReadLinesAsync(CancellationToken cancellationToken);
}

/// <summary>
/// <c>tail -F</c> for one file: starts at its end (at its start if it appears later), yields each complete line appended, and survives
/// rotation. When the name points at another file (logrotate's rename-and-create, or a new file after
/// a delete) the old one is read to its end and the new one from its start; when the file shrinks
/// (copytruncate) it is read again from the start. A line longer than <see cref="MaxLineBytes"/> is
/// cut there. Polls every <paramref name="interval"/>: cheap, and the latency a log reader needs.
/// </summary>
internal sealed partial class FileFollower : ILogSource
{
    public const int MaxLineBytes = 16 * 1024;

    private readonly string _path;
    private readonly TimeSpan _interval;
    private readonly TimeProvider _time;
    private readonly bool _fromStart;

    public FileFollower(string path, TimeSpan interval, TimeProvider time, bool fromStart = false)
    {
        _path = path;
        _interval = interval;
        _time = time;
        _fromStart = fromStart;
    }

    /// <summary>Times the file was found replaced or truncated (for tests and the log).</summary>
    public int Reopened { get; private set; }

    public async IAsyncEnumerable<string> ReadLinesAsync([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        FileStream? file = null;
        var pending = new MemoryStream();
        var buffer = new byte[64 * 1024];
        var first = true;
        var switching = false;
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                if (file is null)
                {
                    // Only a file that was there at start has a past to skip; one that appears later is all news.
                    file = TryOpen(seekToEnd: first && !_fromStart);
                    first = false;
                    if (file is null)
                    {
                        await Task.Delay(_interval, _time, cancellationToken);
                        continue;
                    }
                }

                var n = await file.ReadAsync(buffer, cancellationToken);
                if (n > 0)
                {
                    foreach (var line in Split(buffer.AsSpan(0, n), pending))
                    {
                        yield return line;
                    }

                    continue;
                }

                // At the end of the file: has it been replaced or truncated since?
                if (switching)
                {
                    // Read to the end once more after noticing the switch: a last line may have come in between.
                    await file.DisposeAsync();
                    file = null;
                    switching = false;
                    pending.SetLength(0);
                    Reopened++;
                    continue;
                }

                if (Replaced(file))
                {
                    switching = true;
                    continue;
                }

                if (file.Length < file.Position)
                {
                    file.Position = 0;
                    pending.SetLength(0);
                    Reopened++;
                    continue;
                }

                await Task.Delay(_interval, _time, cancellationToken);
            }
        }
        finally
        {
            if (file is not null)
            {
                await file.DisposeAsync();
            }
        }
    }

    private FileStream? TryOpen(bool seekToEnd)
    {
        try
        {
            var file = new FileStream(_path, new FileStreamOptions
            {
                Mode = FileMode.Open,
                Access = FileAccess.Read,
                Share = FileShare.ReadWrite | FileShare.Delete,
                Options = FileOptions.Asynchronous,
            });
            if (seekToEnd)
            {
                file.Seek(0, SeekOrigin.End);
            }

            return file;
        }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException or UnauthorizedAccessException or IOException)
        {
            return null;
        }
    }

    /// <summary>True when the path now names another file than the one open (or none, after a while: a rotation in progress keeps the old one).</summary>
    private bool Replaced(FileStream file)
    {
        if (!FileId.Of(_path, out var current))
        {
            return false; // renamed away and not yet recreated: keep reading the old file
        }

        return FileId.Of(file.SafeFileHandle, out var open) && current != open;
    }

    private static IEnumerable<string> Split(ReadOnlySpan<byte> data, MemoryStream pending)
    {
        var lines = new List<string>();
        while (true)
        {
            var lf = data.IndexOf((byte)'\n');
            if (lf < 0)
            {
                var room = MaxLineBytes - (int)pending.Length;
                if (room > 0)
                {
                    pending.Write(data[..Math.Min(room, data.Length)]);
                }

                return lines;
            }

            var room2 = MaxLineBytes - (int)pending.Length;
            if (room2 > 0)
            {
                pending.Write(data[..Math.Min(room2, lf)]);
            }

            var text = Encoding.UTF8.GetString(pending.GetBuffer(), 0, (int)pending.Length).TrimEnd('\r');
            pending.SetLength(0);
            lines.Add(text);
            data = data[(lf + 1)..];
        }
    }

    /// <summary>Device and inode of a file: what tells a rotated log from its successor.</summary>
    private readonly partial record struct FileId(ulong Device, ulong Inode)
    {
        // struct stat starts with st_dev and st_ino (8 bytes each) on x86_64 and arm64 Linux.
        private const int StatSize = 256;

        public static unsafe bool Of(string path, out FileId id)
        {
            var buffer = stackalloc byte[StatSize];
            id = default;
            if (Stat(path, buffer) != 0)
            {
                return false;
            }

            id = new FileId(*(ulong*)buffer, *(ulong*)(buffer + 8));
            return true;
        }

        public static unsafe bool Of(Microsoft.Win32.SafeHandles.SafeFileHandle handle, out FileId id)
        {
            var buffer = stackalloc byte[StatSize];
            id = default;
            var added = false;
            try
            {
                handle.DangerousAddRef(ref added);
                if (FStat((int)handle.DangerousGetHandle(), buffer) != 0)
                {
                    return false;
                }
            }
            finally
            {
                if (added)
                {
                    handle.DangerousRelease();
                }
            }

            id = new FileId(*(ulong*)buffer, *(ulong*)(buffer + 8));
            return true;
        }

        [LibraryImport("libc", EntryPoint = "stat", StringMarshalling = StringMarshalling.Utf8)]
        private static unsafe partial int Stat(string path, byte* buffer);

        [LibraryImport("libc", EntryPoint = "fstat")]
        private static unsafe partial int FStat(int fd, byte* buffer);
    }
}

/// <summary>
/// The systemd journal's mail facility, through <c>journalctl --follow</c> (which survives rotation by
/// itself), restarted if it exits.
/// </summary>
internal sealed class JournalFollower : ILogSource
{
    private readonly TimeProvider _time;

    public JournalFollower(TimeProvider time) => _time = time;

    public static string? MissingReason =>
        Environment.GetEnvironmentVariable("PATH")?.Split(':').Any(d => File.Exists(Path.Combine(d, "journalctl"))) == true
            ? null : "journalctl is not installed";

    public async IAsyncEnumerable<string> ReadLinesAsync([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            var info = new ProcessStartInfo("journalctl") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in new[] { "--follow", "--lines=0", "--output=short-iso", "--quiet", "SYSLOG_FACILITY=2" })
            {
                info.ArgumentList.Add(a);
            }

            using var process = Process.Start(info) ?? throw new InvalidOperationException("journalctl did not start.");
            process.ErrorDataReceived += (_, _) => { };
            process.BeginErrorReadLine();
            using var stop = cancellationToken.Register(() =>
            {
                try
                {
                    process.Kill();
                }
                catch (InvalidOperationException)
                {
                }
            });
            while (await process.StandardOutput.ReadLineAsync(cancellationToken) is { } line)
            {
                yield return line;
            }

            await Task.Delay(TimeSpan.FromSeconds(1), _time, cancellationToken);
        }
    }
}
