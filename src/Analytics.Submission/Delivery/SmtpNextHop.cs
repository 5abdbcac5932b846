using System.Collections.Concurrent;
using System.Net.Sockets;
using MailKit;
using MailKit.Net.Smtp;
using MailKit.Security;
using MimeKit;

namespace Analytics.Submission.Delivery;

/// <summary>
/// A next hop spoken to over SMTP with MailKit's client: a smarthost (AUTH, STARTTLS) or a Postfix
/// in front of the mailboxes. Sessions are pooled (at most <see cref="NextHopOptions.MaxConnections"/>)
/// and reused for up to <see cref="NextHopOptions.MessagesPerConnection"/> messages.
/// </summary>
internal sealed class SmtpNextHop : INextHop
{
    private readonly NextHopOptions _options;
    private readonly DeliveryOptions _delivery;
    private readonly string _heloName;
    private readonly NextHopAddress[] _hosts;
    private readonly SemaphoreSlim _slots;
    private readonly ConcurrentStack<Session> _idle = new();
    private readonly TimeProvider _time;
    private readonly string? _password;

    public SmtpNextHop(string name, NextHopOptions options, DeliveryOptions delivery, string heloName, TimeProvider time)
    {
        Name = name;
        _options = options;
        _delivery = delivery;
        _heloName = heloName;
        _time = time;
        _hosts = [.. (options.Hosts ?? []).Select(h => NextHopAddress.TryParse(h, out var a) ? a : throw new FormatException($"{name}: '{h}' is not HOST:PORT."))];
        _slots = new SemaphoreSlim(options.MaxConnections, options.MaxConnections);
        _password = !string.IsNullOrEmpty(options.PasswordFile)
            ? File.ReadLines(options.PasswordFile).FirstOrDefault() ?? ""
            : options.Password;
    }

    public string Name { get; }

    public string Protocol => "smtp";

    public async Task<IReadOnlyList<RecipientResult>> DeliverAsync(OutboundMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken)
    {
        await _slots.WaitAsync(cancellationToken);
        try
        {
            MimeMessage mime;
            await using (var stream = message.Open())
            {
                mime = await MimeMessage.LoadAsync(stream, cancellationToken);
            }

            using (mime)
            {
                // A pooled session may have been closed by the next hop while idle: that failure says
                // nothing about the message, so it gets one more try on a fresh session.
                for (var fresh = false; ; fresh = true)
                {
                    var session = fresh ? null : TakeIdle();
                    var host = "";
                    if (session is null)
                    {
                        (session, host, var error) = await ConnectAnyAsync(cancellationToken);
                        if (session is null)
                        {
                            return [.. recipients.Select(r => RecipientResult.NoReply(r, error.Dsn, error.Text, host))];
                        }
                    }

                    var (results, keep, retry) = await SendAsync(session, mime, message, recipients, reused: !fresh && session.Messages > 0, cancellationToken);
                    if (keep && session.Messages < _options.MessagesPerConnection)
                    {
                        session.LastUsed = _time.GetTimestamp();
                        _idle.Push(session);
                    }
                    else
                    {
                        await session.CloseAsync();
                    }

                    if (!retry)
                    {
                        return results;
                    }
                }
            }
        }
        finally
        {
            _slots.Release();
        }
    }

    private Session? TakeIdle()
    {
        while (_idle.TryPop(out var session))
        {
            if (session.Client.IsConnected && _time.GetElapsedTime(session.LastUsed) < _options.IdleTimeout)
            {
                return session;
            }

            _ = session.CloseAsync();
        }

        return null;
    }

    private static async Task<(IReadOnlyList<RecipientResult> Results, bool Keep, bool Retry)> SendAsync(
        Session session, MimeMessage mime, OutboundMessage message, IReadOnlyList<string> recipients, bool reused, CancellationToken cancellationToken)
    {
        var client = session.Client;
        client.Rejected.Clear();
        client.SenderRefused = null;
        session.Messages++;
        var host = session.Host.ToString();
        try
        {
            var sender = new MailboxAddress("", message.Envelope.Sender);
            var to = recipients.Select(r => new MailboxAddress("", r)).ToList();
            var reply = await client.SendAsync(FormatOptions.Default, mime, sender, to, cancellationToken);
            return ([.. recipients.Select(r => Outcome(client, r, 250, reply, host))], true, false);
        }
        catch (NoRecipientsAcceptedException)
        {
            return ([.. recipients.Select(r => client.SenderRefused is null && !client.Rejected.ContainsKey(r)
                ? RecipientResult.NoReply(r, "4.4.2", "no reply to RCPT", host)
                : Outcome(client, r, 0, "", host))], false, false);
        }
        catch (SmtpCommandException ex)
        {
            // MAIL FROM or the end of DATA refused: the same answer for every recipient still in play.
            return ([.. recipients.Select(r => Outcome(client, r, (int)ex.StatusCode, ex.Message, host))], false, false);
        }
        catch (Exception ex) when (ex is IOException or SmtpProtocolException or ServiceNotConnectedException or SocketException
                                   || ex is OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            if (reused && client.Rejected.Count == 0)
            {
                return ([], false, true);
            }

            // The session broke mid-transaction: nothing was confirmed, so nothing counts as delivered.
            return ([.. recipients.Select(r => RecipientResult.NoReply(r, "4.4.2", "lost connection with " + host + ": " + NextHopReply.Describe(ex), host))], false, false);
        }
    }

    /// <summary>
    /// A refused MAIL FROM decides for every recipient: with PIPELINING the RCPTs sent behind it get
    /// "503 need MAIL command", which must not read as a permanent refusal of the recipient. Otherwise a
    /// refused RCPT keeps its own reply, and the rest get <paramref name="code"/>.
    /// </summary>
    private static RecipientResult Outcome(RecordingSmtpClient client, string recipient, int code, string text, string host) =>
        client.SenderRefused is { } sender ? RecipientResult.From(recipient, sender.Code, sender.Text, host)
        : client.Rejected.TryGetValue(recipient, out var no) ? RecipientResult.From(recipient, no.Code, no.Text, host)
        : RecipientResult.From(recipient, code, text, host);

    private async Task<(Session? Session, string Host, (string Dsn, string Text) Error)> ConnectAnyAsync(CancellationToken cancellationToken)
    {
        var error = ("4.4.1", "no host");
        var last = "";
        foreach (var host in _hosts)
        {
            last = host.ToString();
            var client = new RecordingSmtpClient
            {
                LocalDomain = _heloName,
                Timeout = (int)Math.Min(int.MaxValue, _delivery.CommandTimeout.TotalMilliseconds),
                // Revocation lists are on the network; a hop behind a firewall would never be reached.
                CheckCertificateRevocation = false,
            };
            if (!_options.VerifyCertificate)
            {
#pragma warning disable CA5359 // the operator turned verification off for this hop (VerifyCertificate false)
                client.ServerCertificateValidationCallback = (_, _, _, _) => true;
#pragma warning restore CA5359
            }

            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(_delivery.ConnectTimeout);
            try
            {
                var security = _options.Tls switch
                {
                    NextHopTls.Required => SecureSocketOptions.StartTls,
                    NextHopTls.Implicit => SecureSocketOptions.SslOnConnect,
                    NextHopTls.None => SecureSocketOptions.None,
                    _ => SecureSocketOptions.StartTlsWhenAvailable,
                };
                if (host.UnixPath is { } path)
                {
                    var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                    try
                    {
                        await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), timeout.Token);
                    }
                    catch
                    {
                        socket.Dispose();
                        throw;
                    }

                    await client.ConnectAsync(socket, "localhost", 25, SecureSocketOptions.None, timeout.Token);
                }
                else
                {
                    await client.ConnectAsync(host.Host, host.Port, security, timeout.Token);
                }

                if (!string.IsNullOrEmpty(_options.Username))
                {
                    await client.AuthenticateAsync(_options.Username, _password ?? "", timeout.Token);
                }

                return (new Session(client, host), last, error);
            }
            catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
            {
                error = ex switch
                {
                    AuthenticationException => ("4.7.0", $"AUTH to {host} failed: {NextHopReply.Describe(ex)}"),
                    NotSupportedException when _options.Tls == NextHopTls.Required => ("4.7.4", $"{host} offers no STARTTLS, which is required"),
                    System.Security.Authentication.AuthenticationException or SslHandshakeException => ("4.7.5", $"TLS with {host} failed: {NextHopReply.Describe(ex)}"),
                    SmtpCommandException c => (NextHopReply.StatusOf((int)c.StatusCode, c.Message), $"{host} refused the session: {(int)c.StatusCode} {NextHopReply.Clean(c.Message)}"),
                    _ => ("4.4.1", $"connect to {host}: {NextHopReply.Describe(ex)}"),
                };
                client.Dispose();
            }
        }

        return (null, last, error);
    }

    public async ValueTask DisposeAsync()
    {
        while (_idle.TryPop(out var session))
        {
            await session.CloseAsync();
        }

        _slots.Dispose();
    }

    private sealed class Session
    {
        public Session(RecordingSmtpClient client, NextHopAddress host)
        {
            Client = client;
            Host = host;
        }

        public RecordingSmtpClient Client { get; }

        public NextHopAddress Host { get; }

        public int Messages { get; set; }

        public long LastUsed { get; set; }

        public async Task CloseAsync()
        {
            try
            {
                if (Client.IsConnected)
                {
                    using var quit = new CancellationTokenSource(TimeSpan.FromSeconds(2));
                    await Client.DisconnectAsync(quit: true, quit.Token);
                }
            }
            catch (Exception ex) when (ex is IOException or SmtpProtocolException or SmtpCommandException or OperationCanceledException or SocketException)
            {
            }
            finally
            {
                Client.Dispose();
            }
        }
    }

    /// <summary>MailKit's client, told to note a refused recipient and carry on with the others instead of throwing.</summary>
    private sealed class RecordingSmtpClient : SmtpClient
    {
        public Dictionary<string, (int Code, string Text)> Rejected { get; } = new(StringComparer.OrdinalIgnoreCase);

        public (int Code, string Text)? SenderRefused { get; set; }

        protected override void OnSenderNotAccepted(MimeMessage message, MailboxAddress mailbox, SmtpResponse response)
        {
            SenderRefused = ((int)response.StatusCode, response.Response);
            base.OnSenderNotAccepted(message, mailbox, response);
        }

        protected override void OnRecipientNotAccepted(MimeMessage message, MailboxAddress mailbox, SmtpResponse response) =>
            Rejected[mailbox.Address] = ((int)response.StatusCode, response.Response);

        protected override void OnNoRecipientsAccepted(MimeMessage message) => throw new NoRecipientsAcceptedException();
    }

    private sealed class NoRecipientsAcceptedException : Exception
    {
        public NoRecipientsAcceptedException()
            : base("No recipient was accepted.")
        {
        }

        public NoRecipientsAcceptedException(string message)
            : base(message)
        {
        }

        public NoRecipientsAcceptedException(string message, Exception innerException)
            : base(message, innerException)
        {
        }
    }
}
