using System.Buffers;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Analytics.Submission;

/// <summary>The envelope stored next to each spooled message (<c>ID.json</c>).</summary>
public sealed record SpoolEnvelope(
    [property: JsonPropertyName("id")] string Id,
    [property: JsonPropertyName("sender")] string Sender,
    [property: JsonPropertyName("recipients")] IReadOnlyList<string> Recipients,
    [property: JsonPropertyName("client_ip")] string ClientIp,
    [property: JsonPropertyName("client_port")] int ClientPort,
    [property: JsonPropertyName("user")] string User,
    [property: JsonPropertyName("role")] string Role,
    [property: JsonPropertyName("helo")] string Helo,
    [property: JsonPropertyName("tls")] bool Tls,
    [property: JsonPropertyName("received_at")] DateTimeOffset ReceivedAt,
    [property: JsonPropertyName("session_id")] string SessionId,
    [property: JsonPropertyName("node")] string Node,
    [property: JsonPropertyName("size")] long Size);

/// <summary>
/// Accepted mail on disk (<c>DATA/mail/</c>): <c>ID.eml</c> holds the message exactly as received
/// (after dot-unstuffing), <c>ID.json</c> its envelope. A message without its envelope is an interrupted
/// write and is not mail (the queue deletes it at start). Once <see cref="CommitAsync"/> (or
/// <see cref="WriteAsync"/>) returns, and only then is 250 sent, the message survives a crash or power
/// loss: both files' contents were fsynced under temporary names, then renamed into place (the message
/// first, the envelope last), then the directory was fsynced.
/// <para>
/// Three fsyncs per message, but not three waits in a row: the message's fsync runs while the envelope
/// is written and fsynced (neither name exists yet, so their order does not matter), and the
/// directory's fsync is a group commit shared with every session renaming at the same time
/// (<see cref="DirectorySync"/>). What a crash can leave, step by step: before the renames, only
/// <c>*.tmp</c> files (deleted at start; no 250 was sent); between the renames or before the directory's
/// fsync ends, an <c>ID.eml</c> alone (not mail, deleted at start) or an <c>ID.json</c> whose message is
/// whole (both contents were durable before either rename), which was never answered 250 and may be
/// delivered once more: never a 250 for mail that is not on disk.
/// </para>
/// </summary>
internal sealed partial class MailSpool
{
    private static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true };
    private static readonly byte[] Crlf = "\r\n"u8.ToArray();
    private readonly string _directory;
    private readonly SpoolFilePool _pool;
    private readonly DirectorySync _sync;
    private long _sequence;

    public MailSpool(string directory)
    {
        _directory = Path.GetFullPath(directory);
        System.IO.Directory.CreateDirectory(_directory);
        _pool = SpoolFilePool.For(_directory);
        _sync = DirectorySync.For(_directory);
    }

    public string Directory => _directory;

    /// <summary>The pool of emptied files this spool's new files come from.</summary>
    public SpoolFilePool Pool => _pool;

    /// <summary>The directory's group-committed fsync.</summary>
    public DirectorySync Sync => _sync;

    /// <summary>A fresh, sortable, unique message id.</summary>
    public string NewId(DateTimeOffset now, ulong sessionId) => string.Create(CultureInfo.InvariantCulture,
        $"{now.UtcDateTime:yyyyMMddHHmmssfff}-{sessionId:x16}-{Interlocked.Increment(ref _sequence):x}");

    public string MessagePath(string id) => Path.Combine(_directory, id + ".eml");

    public string EnvelopePath(string id) => Path.Combine(_directory, id + ".json");

    /// <summary>Writes a message built here (a DSN) and its envelope durably.</summary>
    public async Task WriteAsync(SpoolEnvelope envelope, ReadOnlySequence<byte> message, CancellationToken cancellationToken)
    {
        var temp = MessagePath(envelope.Id) + ".tmp";
        var file = _pool.CreateFile(temp);
        try
        {
            foreach (var segment in message)
            {
                file.Write(segment.Span);
            }

            // The message's last line ends with CRLF (RFC 5321 4.1.1.4).
            file.Write(Crlf);
        }
        catch
        {
            file.Dispose();
            TryDelete(temp);
            throw;
        }

        var flushed = Task.Run(() =>
        {
            using (file)
            {
                file.Fsync();
            }
        }, CancellationToken.None);
        try
        {
            await CommitAsync(envelope, temp, flushed, cancellationToken);
        }
        finally
        {
            TryDelete(temp); // a no-op once committed (renamed away)
        }
    }

    /// <summary>
    /// Takes a message written into <paramref name="tempMessagePath"/> into the spool. <paramref name="messageFlushed"/>
    /// is the writer's fsync of that file, under way: the envelope is written and fsynced meanwhile, and
    /// nothing is renamed before both are done. Then the message is renamed to <c>ID.eml</c>, the envelope
    /// to <c>ID.json</c>, and the directory fsynced (shared with whoever renamed meanwhile). On failure
    /// nothing of the message is left under its own name (the temporary is the caller's).
    /// </summary>
    public async Task CommitAsync(SpoolEnvelope envelope, string tempMessagePath, Task messageFlushed, CancellationToken cancellationToken)
    {
        var messagePath = MessagePath(envelope.Id);
        var envelopePath = EnvelopePath(envelope.Id);
        var envelopeTemp = envelopePath + ".tmp";
        try
        {
            cancellationToken.ThrowIfCancellationRequested();
            var json = JsonSerializer.SerializeToUtf8Bytes(envelope, JsonOptions);
            using (var file = _pool.CreateFile(envelopeTemp))
            {
                file.Write(json);
                file.Fsync();
            }

            // Both contents are durable before either name exists: an ID.json on disk always has its whole message.
            await messageFlushed;
            SpoolFile.Rename(tempMessagePath, messagePath);
            SpoolFile.Rename(envelopeTemp, envelopePath);
            await _sync.SyncAsync();
        }
        catch
        {
            // Without its envelope the message is not mail: the client is told to try again. The envelope
            // goes first, and the message's fsync is let finish before the caller drops its file.
            TryDelete(envelopePath);
            TryDelete(envelopeTemp);
            TryDelete(messagePath);
            try
            {
                await messageFlushed;
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ObjectDisposedException)
            {
            }

            throw;
        }
    }

    /// <summary>Writes <paramref name="path"/> under a temporary name, fsyncs it and renames it into place (replacing it when <paramref name="overwrite"/>).</summary>
    internal static async Task WriteDurablyAsync(string path, Func<Stream, Task> write, CancellationToken cancellationToken, bool overwrite = false)
    {
        var temp = path + ".tmp";
        if (overwrite)
        {
            // A file rewritten in place (queue state) may have left its temporary behind in a crash.
            TryDelete(temp);
        }

        try
        {
            var options = new FileStreamOptions
            {
                Mode = FileMode.CreateNew,
                Access = FileAccess.Write,
                Share = FileShare.None,
                Options = FileOptions.Asynchronous,
                BufferSize = 1 << 16,
                UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
            };

            // A state file is rewritten in place and deleted with its message: only new files come from the pool.
            await using (var stream = overwrite ? new FileStream(temp, options) : SpoolFilePool.Of(temp).Create(temp, options))
            {
                await write(stream);
                await stream.FlushAsync(cancellationToken);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temp, path, overwrite);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    internal static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    // A rename is durable only once the directory entry is: fsync the directory itself. .NET cannot
    // open a directory as a file, so this goes to libc.
    internal static void FsyncDirectory(string directory)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS() && !OperatingSystem.IsFreeBSD())
        {
            return;
        }

        var fd = Native.Open(directory, 0 /* O_RDONLY */);
        if (fd < 0)
        {
            throw new IOException($"Cannot open the spool directory {directory} to fsync it (errno {Marshal.GetLastPInvokeError()}).");
        }

        try
        {
            if (Native.Fsync(fd) != 0)
            {
                throw new IOException($"fsync of the spool directory {directory} failed (errno {Marshal.GetLastPInvokeError()}).");
            }
        }
        finally
        {
            _ = Native.Close(fd);
        }
    }

    private static partial class Native
    {
        [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
        public static partial int Open(string path, int flags);

        [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
        public static partial int Fsync(int fd);

        [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
        public static partial int Close(int fd);
    }
}
