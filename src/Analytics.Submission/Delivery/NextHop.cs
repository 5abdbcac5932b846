using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace Analytics.Submission.Delivery;

/// <summary>What one recipient got from one attempt: the next hop's reply, or why no reply came.</summary>
/// <param name="Code">The reply code; 0 when no next hop answered (connection refused, timeout, no route).</param>
/// <param name="Dsn">RFC 3463 status: from the reply when it has one, else from its class.</param>
/// <param name="Host">The host that answered or was tried last.</param>
internal readonly record struct RecipientResult(string Recipient, int Code, string Dsn, string Text, string Host)
{
    public bool Delivered => Code is >= 200 and < 300;

    /// <summary>A 5xx: retrying will not help (a DSN goes to the sender).</summary>
    public bool Permanent => Code is >= 500 and < 600;

    public static RecipientResult From(string recipient, int code, string text, string host) =>
        new(recipient, code, NextHopReply.StatusOf(code, text), NextHopReply.Clean(text), host);

    /// <summary>No reply from any host: temporary, with the reason.</summary>
    public static RecipientResult NoReply(string recipient, string dsn, string text, string host) => new(recipient, 0, dsn, text, host);
}

/// <summary>A message on its way out: the spooled bytes with our Received header in front.</summary>
internal sealed class OutboundMessage
{
    public required string Id { get; init; }

    public required SpoolEnvelope Envelope { get; init; }

    /// <summary>The spooled message (ID.eml), as received: CRLF line ends, ends with CRLF.</summary>
    public required string Path { get; init; }

    /// <summary>The header prepended on the way (Received:), CRLF-terminated.</summary>
    public required byte[] Prepend { get; init; }

    public long Size => Prepend.Length + Envelope.Size;

    /// <summary>The message as sent: Prepend then the file.</summary>
    public Stream Open()
    {
        var file = new FileStream(Path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous | FileOptions.SequentialScan);
        return new PrefixedStream(Prepend, file);
    }
}

/// <summary>A next hop: hosts tried in order, with a pool of open sessions.</summary>
internal interface INextHop : IAsyncDisposable
{
    /// <summary>relay, mailbox, route:example.org, discard.</summary>
    string Name { get; }

    /// <summary>smtp, lmtp, discard (the event's mechanism).</summary>
    string Protocol { get; }

    /// <summary>One attempt for <paramref name="recipients"/>: a result for each, whatever happens (never throws but for cancellation).</summary>
    Task<IReadOnlyList<RecipientResult>> DeliverAsync(OutboundMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken);
}

/// <summary>Accepts everything and keeps nothing: serve --demo's mail, counted as discarded.</summary>
internal sealed class DiscardNextHop : INextHop
{
    public string Name => "discard";

    public string Protocol => "discard";

    public Task<IReadOnlyList<RecipientResult>> DeliverAsync(OutboundMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<RecipientResult>>([.. recipients.Select(r => new RecipientResult(r, 250, "2.0.0", "discarded", "discard"))]);

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}

internal static partial class NextHopReply
{
    public static string StatusOf(int code, string text)
    {
        var match = EnhancedStatus().Match(text.TrimStart());
        if (match.Success && match.Value[0] == (char)('0' + code / 100))
        {
            return match.Groups[1].Value;
        }

        return code switch
        {
            >= 500 => "5.0.0",
            >= 400 => "4.0.0",
            >= 200 and < 300 => "2.0.0",
            _ => "4.4.0",
        };
    }

    /// <summary>One line, without control characters, at most 300 characters (it goes into events, logs and DSNs).</summary>
    public static string Clean(string text)
    {
        var one = ControlCharacters().Replace(text, " ").Trim();
        return one.Length <= 300 ? one : one[..300];
    }

    public static string Describe(Exception ex) => Clean(ex switch
    {
        SocketException s => s.SocketErrorCode switch
        {
            SocketError.ConnectionRefused => "connection refused",
            SocketError.TimedOut => "connection timed out",
            SocketError.HostNotFound or SocketError.NoData => "host not found",
            _ => s.Message,
        },
        OperationCanceledException => "timed out",
        _ => ex.Message,
    });

    [GeneratedRegex(@"^([245]\.\d{1,3}\.\d{1,3})\b")]
    private static partial Regex EnhancedStatus();

    [GeneratedRegex(@"[\x00-\x1f\x7f]+")]
    private static partial Regex ControlCharacters();
}

/// <summary>A fixed byte prefix followed by a stream (read-only, forward only).</summary>
internal sealed class PrefixedStream : Stream
{
    private readonly byte[] _prefix;
    private readonly Stream _inner;
    private int _offset;

    public PrefixedStream(byte[] prefix, Stream inner)
    {
        _prefix = prefix;
        _inner = inner;
    }

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        if (_offset < _prefix.Length)
        {
            var n = Math.Min(buffer.Length, _prefix.Length - _offset);
            _prefix.AsSpan(_offset, n).CopyTo(buffer);
            _offset += n;
            return n;
        }

        return _inner.Read(buffer);
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_offset < _prefix.Length)
        {
            return Read(buffer.Span);
        }

        return await _inner.ReadAsync(buffer, cancellationToken);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _inner.Dispose();
        }

        base.Dispose(disposing);
    }

    public override async ValueTask DisposeAsync()
    {
        await _inner.DisposeAsync();
        await base.DisposeAsync();
    }
}

/// <summary>The <c>Received:</c> header this hop adds (RFC 5321 4.4, with RFC 3848 protocol names).</summary>
internal static class ReceivedHeader
{
    public static byte[] For(SpoolEnvelope envelope, string serverName, string id)
    {
        var text = new StringBuilder("Received: ");
        if (envelope.Role == "dsn")
        {
            // Our own DSN: it was never received over SMTP.
            text.Append("by ").Append(serverName).Append(" (analytics) id ").Append(id);
        }
        else
        {
            // With ESMTP, A means authenticated, S means TLS (RFC 3848). The user's name is not shown
            // (Postfix's smtpd_sasl_authenticated_header default): it is in the events.
            var with = "ESMTP" + (envelope.Tls ? "S" : "") + (envelope.User.Length > 0 ? "A" : "");
            var helo = Sanitize(envelope.Helo);
            text.Append("from ").Append(helo.Length > 0 ? helo : "unknown")
                .Append(" ([").Append(envelope.ClientIp.Replace("::ffff:", "", StringComparison.Ordinal)).Append("])")
                .Append("\r\n\tby ").Append(serverName).Append(" (analytics) with ").Append(with).Append(" id ").Append(id);
            if (envelope.Recipients.Count == 1)
            {
                text.Append("\r\n\tfor <").Append(Sanitize(envelope.Recipients[0])).Append('>');
            }
        }

        text.Append("; ").Append(envelope.ReceivedAt.ToUniversalTime().ToString("ddd, d MMM yyyy HH:mm:ss +0000", CultureInfo.InvariantCulture)).Append("\r\n");
        return Encoding.UTF8.GetBytes(text.ToString());
    }

    // The HELO name and addresses come from the client: nothing in them may break the header.
    private static string Sanitize(string value) =>
        new([.. value.Where(c => c > ' ' && c < 0x7f && c is not ';' and not '(' and not ')' and not '<' and not '>').Take(255)]);
}
