using System.Collections.Concurrent;
using System.Globalization;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;

namespace Analytics.Submission.Delivery;

/// <summary>
/// A mailbox server spoken to over LMTP (RFC 2033), e.g. Dovecot's lmtp service on a Unix socket or a
/// TCP port. MailKit (4.18) has no LMTP client, so this is the small one LMTP needs: LHLO, MAIL, RCPT
/// each, DATA, then one reply per accepted recipient, which is what makes per-recipient state exact.
/// Sessions are pooled like <see cref="SmtpNextHop"/>'s.
/// </summary>
internal sealed class LmtpNextHop : INextHop
{
    private readonly NextHopOptions _options;
    private readonly DeliveryOptions _delivery;
    private readonly string _heloName;
    private readonly NextHopAddress[] _hosts;
    private readonly SemaphoreSlim _slots;
    private readonly ConcurrentStack<LmtpSession> _idle = new();
    private readonly TimeProvider _time;

    public LmtpNextHop(string name, NextHopOptions options, DeliveryOptions delivery, string heloName, TimeProvider time)
    {
        Name = name;
        _options = options;
        _delivery = delivery;
        _heloName = heloName;
        _time = time;
        _hosts = [.. (options.Hosts ?? []).Select(h => NextHopAddress.TryParse(h, out var a) ? a : throw new FormatException($"{name}: '{h}' is not HOST:PORT."))];
        _slots = new SemaphoreSlim(options.MaxConnections, options.MaxConnections);
    }

    public string Name { get; }

    public string Protocol => "lmtp";

    public async Task<IReadOnlyList<RecipientResult>> DeliverAsync(OutboundMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken)
    {
        await _slots.WaitAsync(cancellationToken);
        try
        {
            for (var fresh = false; ; fresh = true)
            {
                var session = fresh ? null : TakeIdle();
                var reused = session is not null;
                if (session is null)
                {
                    var (connected, host, dsn, text) = await ConnectAnyAsync(cancellationToken);
                    if (connected is null)
                    {
                        return [.. recipients.Select(r => RecipientResult.NoReply(r, dsn, text, host))];
                    }

                    session = connected;
                }

                var hostName = session.Host.ToString();
                var replies = new Dictionary<string, RecipientResult>(StringComparer.OrdinalIgnoreCase);
                var started = false;
                try
                {
                    session.Messages++;
                    var results = await session.TransactAsync(message, recipients, replies, () => started = true, _delivery.CommandTimeout, cancellationToken);
                    if (session.Messages < _options.MessagesPerConnection)
                    {
                        session.LastUsed = _time.GetTimestamp();
                        _idle.Push(session);
                    }
                    else
                    {
                        await session.DisposeAsync();
                    }

                    return results;
                }
                catch (Exception ex) when (ex is IOException or SocketException or LmtpProtocolException
                                           || ex is OperationCanceledException && !cancellationToken.IsCancellationRequested)
                {
                    await session.DisposeAsync();
                    if (reused && !started)
                    {
                        continue; // an idle session the server had closed
                    }

                    // Whatever a recipient got before the break stands (LMTP replies are final per recipient).
                    return [.. recipients.Select(r => replies.TryGetValue(r, out var got) && got.Code != 0 && (got.Delivered || got.Permanent)
                        ? got
                        : RecipientResult.NoReply(r, "4.4.2", "lost connection with " + hostName + ": " + NextHopReply.Describe(ex), hostName))];
                }
                catch
                {
                    await session.DisposeAsync();
                    throw;
                }
            }
        }
        finally
        {
            _slots.Release();
        }
    }

    private LmtpSession? TakeIdle()
    {
        while (_idle.TryPop(out var session))
        {
            if (session.Usable && _time.GetElapsedTime(session.LastUsed) < _options.IdleTimeout)
            {
                return session;
            }

            _ = session.DisposeAsync().AsTask();
        }

        return null;
    }

    private async Task<(LmtpSession? Session, string Host, string Dsn, string Text)> ConnectAnyAsync(CancellationToken cancellationToken)
    {
        var (dsn, text, last) = ("4.4.1", "no host", "");
        foreach (var host in _hosts)
        {
            last = host.ToString();
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(_delivery.ConnectTimeout);
            try
            {
                return (await LmtpSession.ConnectAsync(host, _heloName, _options, timeout.Token), last, "", "");
            }
            catch (LmtpRefusedException ex)
            {
                (dsn, text) = (NextHopReply.StatusOf(ex.Code, ex.Text), $"{host} refused the session: {ex.Code} {NextHopReply.Clean(ex.Text)}");
            }
            catch (Exception ex) when (!cancellationToken.IsCancellationRequested && ex is IOException or SocketException or LmtpProtocolException or OperationCanceledException
                                       or System.Security.Authentication.AuthenticationException)
            {
                (dsn, text) = ("4.4.1", $"connect to {host}: {NextHopReply.Describe(ex)}");
            }
        }

        return (null, last, dsn, text);
    }

    public async ValueTask DisposeAsync()
    {
        while (_idle.TryPop(out var session))
        {
            await session.DisposeAsync();
        }

        _slots.Dispose();
    }
}

/// <summary>One LMTP session: line-oriented, one command at a time (no pipelining: recipients are few).</summary>
internal sealed class LmtpSession : IAsyncDisposable
{
    private static readonly byte[] Crlf = "\r\n"u8.ToArray();
    private readonly Stream _stream;
    private readonly byte[] _buffer = new byte[8192];
    private int _start;
    private int _end;

    private LmtpSession(Stream stream, NextHopAddress host)
    {
        _stream = stream;
        Host = host;
    }

    public NextHopAddress Host { get; }

    public int Messages { get; set; }

    public long LastUsed { get; set; }

    public bool EightBitMime { get; private set; }

    public bool Usable { get; private set; } = true;

    public static async Task<LmtpSession> ConnectAsync(NextHopAddress host, string heloName, NextHopOptions options, CancellationToken cancellationToken)
    {
        Socket socket;
        if (host.UnixPath is { } path)
        {
            socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), cancellationToken);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        }
        else
        {
            socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(host.Host, host.Port, cancellationToken);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        }

        Stream stream = new NetworkStream(socket, ownsSocket: true);
        if (options.Tls == NextHopTls.Implicit)
        {
            stream = await StartTlsAsync(stream, host, options, cancellationToken);
        }

        var session = new LmtpSession(stream, host);
        try
        {
            var greeting = await session.ReadReplyAsync(cancellationToken);
            if (greeting.Code != 220)
            {
                throw new LmtpRefusedException(greeting.Code, greeting.Text);
            }

            var lhlo = await session.CommandAsync("LHLO " + heloName, cancellationToken);
            if (lhlo.Code != 250)
            {
                throw new LmtpRefusedException(lhlo.Code, lhlo.Text);
            }

            var starttls = lhlo.Lines.Any(l => l.Equals("STARTTLS", StringComparison.OrdinalIgnoreCase));
            if (options.Tls is NextHopTls.Required or NextHopTls.Opportunistic && starttls)
            {
                var ready = await session.CommandAsync("STARTTLS", cancellationToken);
                if (ready.Code != 220)
                {
                    throw new LmtpRefusedException(ready.Code, ready.Text);
                }

                var secured = new LmtpSession(await StartTlsAsync(stream, host, options, cancellationToken), host);
                lhlo = await secured.CommandAsync("LHLO " + heloName, cancellationToken);
                session = secured;
            }
            else if (options.Tls == NextHopTls.Required)
            {
                throw new LmtpRefusedException(421, "4.7.4 STARTTLS is required but not offered");
            }

            session.EightBitMime = lhlo.Lines.Any(l => l.Equals("8BITMIME", StringComparison.OrdinalIgnoreCase));
            return session;
        }
        catch
        {
            await session.DisposeAsync();
            throw;
        }
    }

    private static async Task<Stream> StartTlsAsync(Stream stream, NextHopAddress host, NextHopOptions options, CancellationToken cancellationToken)
    {
        var tls = new SslStream(stream, leaveInnerStreamOpen: false);
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = host.Host,
            CertificateRevocationCheckMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck,
#pragma warning disable CA5359 // the operator turned verification off for this hop (VerifyCertificate false)
            RemoteCertificateValidationCallback = options.VerifyCertificate ? null : (_, _, _, _) => true,
#pragma warning restore CA5359
        }, cancellationToken);
        return tls;
    }

    /// <summary>
    /// One transaction. <paramref name="replies"/> fills as recipients get final answers, so a break
    /// after some of the per-recipient replies to DATA keeps theirs.
    /// </summary>
    public async Task<IReadOnlyList<RecipientResult>> TransactAsync(OutboundMessage message, IReadOnlyList<string> recipients,
        Dictionary<string, RecipientResult> replies, Action started, TimeSpan commandTimeout, CancellationToken cancellationToken)
    {
        var host = Host.ToString();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(commandTimeout);
        var mail = await CommandAsync($"MAIL FROM:<{message.Envelope.Sender}>{(EightBitMime ? " BODY=8BITMIME" : "")}", timeout.Token);
        started();
        if (mail.Code != 250)
        {
            await ResetAsync(timeout.Token);
            return [.. recipients.Select(r => RecipientResult.From(r, mail.Code, mail.Text, host))];
        }

        var accepted = new List<string>();
        foreach (var recipient in recipients)
        {
            timeout.CancelAfter(commandTimeout);
            var rcpt = await CommandAsync($"RCPT TO:<{recipient}>", timeout.Token);
            if (rcpt.Code is >= 200 and < 300)
            {
                accepted.Add(recipient);
            }
            else
            {
                replies[recipient] = RecipientResult.From(recipient, rcpt.Code, rcpt.Text, host);
            }
        }

        if (accepted.Count == 0)
        {
            await ResetAsync(timeout.Token);
            return [.. recipients.Select(r => replies[r])];
        }

        timeout.CancelAfter(commandTimeout);
        var data = await CommandAsync("DATA", timeout.Token);
        if (data.Code != 354)
        {
            await ResetAsync(timeout.Token);
            return [.. recipients.Select(r => replies.TryGetValue(r, out var got) ? got : RecipientResult.From(r, data.Code, data.Text, host))];
        }

        await using (var body = message.Open())
        {
            await DotStuffAsync(body, _stream, timeout.Token);
        }

        await _stream.WriteAsync(".\r\n"u8.ToArray(), timeout.Token);
        await _stream.FlushAsync(timeout.Token);
        foreach (var recipient in accepted)
        {
            timeout.CancelAfter(commandTimeout);
            var reply = await ReadReplyAsync(timeout.Token);
            replies[recipient] = RecipientResult.From(recipient, reply.Code, reply.Text, host);
        }

        return [.. recipients.Select(r => replies[r])];
    }

    private async Task ResetAsync(CancellationToken cancellationToken)
    {
        var reset = await CommandAsync("RSET", cancellationToken);
        if (reset.Code != 250)
        {
            Usable = false;
        }
    }

    /// <summary>Copies the message, doubling a leading '.' on every line (RFC 5321 4.5.2); the message ends with CRLF.</summary>
    internal static async Task DotStuffAsync(Stream source, Stream target, CancellationToken cancellationToken)
    {
        var input = new byte[1 << 16];
        var output = new byte[(1 << 17) + 2];
        var atLineStart = true;
        var last = (byte)'\n';
        int read;
        while ((read = await source.ReadAsync(input, cancellationToken)) > 0)
        {
            var n = 0;
            for (var i = 0; i < read; i++)
            {
                var b = input[i];
                if (atLineStart && b == '.')
                {
                    output[n++] = (byte)'.';
                }

                output[n++] = b;
                atLineStart = b == '\n';
                last = b;
            }

            await target.WriteAsync(output.AsMemory(0, n), cancellationToken);
        }

        if (last != '\n')
        {
            await target.WriteAsync(Crlf, cancellationToken);
        }
    }

    private async Task<LmtpReply> CommandAsync(string command, CancellationToken cancellationToken)
    {
        await _stream.WriteAsync(Encoding.UTF8.GetBytes(command + "\r\n"), cancellationToken);
        await _stream.FlushAsync(cancellationToken);
        return await ReadReplyAsync(cancellationToken);
    }

    private async Task<LmtpReply> ReadReplyAsync(CancellationToken cancellationToken)
    {
        var lines = new List<string>();
        while (true)
        {
            var line = await ReadLineAsync(cancellationToken);
            if (line.Length < 3 || !int.TryParse(line.AsSpan(0, 3), NumberStyles.None, CultureInfo.InvariantCulture, out var code) || line.Length > 3 && line[3] is not (' ' or '-'))
            {
                throw new LmtpProtocolException("malformed reply: " + NextHopReply.Clean(line));
            }

            lines.Add(line.Length > 4 ? line[4..] : "");
            if (line.Length == 3 || line[3] == ' ')
            {
                return new LmtpReply(code, string.Join(" ", lines), lines);
            }
        }
    }

    private async Task<string> ReadLineAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            var newline = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
            if (newline >= 0)
            {
                var line = Encoding.UTF8.GetString(_buffer, _start, newline - _start).TrimEnd('\r');
                _start = newline + 1;
                return line;
            }

            if (_start > 0)
            {
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }

            if (_end == _buffer.Length)
            {
                throw new LmtpProtocolException("reply line too long");
            }

            var read = await _stream.ReadAsync(_buffer.AsMemory(_end), cancellationToken);
            if (read == 0)
            {
                Usable = false;
                throw new IOException("the server closed the connection");
            }

            _end += read;
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Usable)
        {
            try
            {
                using var quit = new CancellationTokenSource(TimeSpan.FromSeconds(1));
                await _stream.WriteAsync("QUIT\r\n"u8.ToArray(), quit.Token);
            }
            catch (Exception ex) when (ex is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
            {
            }
        }

        Usable = false;
        await _stream.DisposeAsync();
    }

    private sealed record LmtpReply(int Code, string Text, IReadOnlyList<string> Lines);
}

internal sealed class LmtpProtocolException : Exception
{
    public LmtpProtocolException(string message)
        : base(message)
    {
    }

    public LmtpProtocolException()
    {
    }

    public LmtpProtocolException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

internal sealed class LmtpRefusedException : Exception
{
    public LmtpRefusedException(int code, string text)
        : base($"{code} {text}")
    {
        Code = code;
        Text = text;
    }

    public LmtpRefusedException()
    {
    }

    public LmtpRefusedException(string message)
        : base(message)
    {
    }

    public LmtpRefusedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public int Code { get; }

    public string Text { get; } = "";
}
