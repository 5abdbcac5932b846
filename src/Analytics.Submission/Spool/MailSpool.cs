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
/// (after dot-unstuffing), <c>ID.json</c> its envelope. Each file is written under a temporary name
/// (the message as it arrives, by the session's reader), fsynced and renamed, the envelope last, then
/// the directory is fsynced: once <see cref="CommitAsync"/> (or <see cref="WriteAsync"/>) returns (and only then is 250 sent) the
/// message survives a crash or power loss. A message without
/// its envelope is an interrupted write and is not mail.
/// </summary>
internal sealed partial class MailSpool
{
    private static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true };
    private static readonly ReadOnlyMemory<byte> Crlf = "\r\n"u8.ToArray();
    private readonly string _directory;
    private long _sequence;

    public MailSpool(string directory)
    {
        _directory = Path.GetFullPath(directory);
        System.IO.Directory.CreateDirectory(_directory);
    }

    public string Directory => _directory;

    /// <summary>A fresh, sortable, unique message id.</summary>
    public string NewId(DateTimeOffset now, ulong sessionId) => string.Create(CultureInfo.InvariantCulture,
        $"{now.UtcDateTime:yyyyMMddHHmmssfff}-{sessionId:x16}-{Interlocked.Increment(ref _sequence):x}");

    public string MessagePath(string id) => Path.Combine(_directory, id + ".eml");

    public string EnvelopePath(string id) => Path.Combine(_directory, id + ".json");

    /// <summary>Writes a message built here (a DSN) and its envelope durably.</summary>
    public async Task WriteAsync(SpoolEnvelope envelope, ReadOnlySequence<byte> message, CancellationToken cancellationToken)
    {
        var messagePath = MessagePath(envelope.Id);
        var envelopePath = EnvelopePath(envelope.Id);
        await WriteDurablyAsync(messagePath, async stream =>
        {
            foreach (var segment in message)
            {
                await stream.WriteAsync(segment, cancellationToken);
            }

            // The message's last line ends with CRLF (RFC 5321 4.1.1.4).
            await stream.WriteAsync(Crlf, cancellationToken);
        }, cancellationToken);
        await WriteDurablyAsync(envelopePath, stream => JsonSerializer.SerializeAsync(stream, envelope, JsonOptions, cancellationToken), cancellationToken);
        FsyncDirectory(_directory);
    }

    /// <summary>
    /// Takes a message received into <paramref name="tempMessagePath"/> (fsynced by its writer) into the
    /// spool: renamed to <c>ID.eml</c>, the envelope written durably beside it, the directory fsynced.
    /// </summary>
    public async Task CommitAsync(SpoolEnvelope envelope, string tempMessagePath, CancellationToken cancellationToken)
    {
        var messagePath = MessagePath(envelope.Id);
        File.Move(tempMessagePath, messagePath);
        try
        {
            await WriteDurablyAsync(EnvelopePath(envelope.Id), stream => JsonSerializer.SerializeAsync(stream, envelope, JsonOptions, cancellationToken), cancellationToken);
            FsyncDirectory(_directory);
        }
        catch
        {
            // Without its envelope the message is not mail: the client is told to try again.
            TryDelete(EnvelopePath(envelope.Id));
            TryDelete(messagePath);
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
