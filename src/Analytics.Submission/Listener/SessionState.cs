using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using Analytics.Events;
using Analytics.Submission.Rules;
using SmtpServer;
using SmtpServer.Mail;
using SmtpServer.Protocol;

namespace Analytics.Submission.Listener;

/// <summary>Which bytes the session is reading: command lines, AUTH responses or a message.</summary>
internal enum SessionPhase
{
    Command,
    Auth,
    Data,
}

/// <summary>
/// One SMTP session as we see it. SmtpServer runs one command at a time per session, so the fields
/// below are written by that one flow (its command events, the reply writer, the reader, the
/// filters); only <see cref="Pipe"/> teardown and shutdown (<see cref="ListenerContext.Draining"/>)
/// come from elsewhere. Every event of the session is built here, so each carries the same id,
/// role, client and node.
/// </summary>
internal sealed partial class SessionState : IRuleSession
{
    public const string PropertyKey = "Analytics.Submission:Session";

    // Markers for "the reply being written answers no client command".
    private static readonly object Greeting = new();
    private static readonly object ServerInitiated = new();

    private readonly long _started;
    private long _commandStarted;
    private object? _current;
    private string _invalidVerb = "";
    private string _closeReason = "";
    private int _finished;
    private TimeSpan _pendingDelay;

    public SessionState(ListenerContext listener, ListenerEndpoint endpoint, IPEndPoint client)
    {
        Listener = listener;
        Endpoint = endpoint;
        ClientIp = client.Address.IsIPv4MappedToIPv6 ? client.Address.MapToIPv4() : client.Address;
        Address = AddressKey.Of(ClientIp);
        ClientPort = (ushort)client.Port;
        Id = BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8));
        _started = listener.Time.GetTimestamp();
        _current = Greeting;
    }

    public ListenerContext Listener { get; }

    public ListenerEndpoint Endpoint { get; }

    public ListenerRole Role => Endpoint.Role;

    public ulong Id { get; }

    public IPAddress ClientIp { get; }

    public AddressKey Address { get; }

    public Analytics.Limits.LimitCache LimitCache { get; } = new();

    public ushort ClientPort { get; }

    public SessionPipe? Pipe { get; set; }

    public SessionPhase Phase { get; private set; }

    public int CommandCount { get; private set; }

    public string Helo { get; private set; } = "";

    /// <summary>The authenticated user, once AUTH succeeded.</summary>
    public string User { get; private set; } = "";

    /// <summary>The account named by the AUTH attempt in progress, canonical (<see cref="AccountName"/>).</summary>
    public string AuthUser { get; set; } = "";

    public string AuthReason { get; set; } = "";

    public ulong SecretTag { get; set; }

    public string Sender { get; private set; } = "";

    public List<string> Recipients { get; } = [];

    public int AcceptedRecipients => Recipients.Count;

    public int UnknownRecipients { get; set; }

    public int KnownRecipients { get; set; }

    public string RecipientReason { get; set; } = "";

    public bool InTransaction { get; private set; }

    /// <summary>Authenticated (submission) or has started a transaction (MX): the short pre-AUTH timeout no longer applies.</summary>
    public bool PastGreetingStage => User.Length > 0 || (Role == ListenerRole.Mx && (InTransaction || Sender.Length > 0));

    /// <summary>The message being received went past the size limit; the DATA reply is 552 and the session ends.</summary>
    public bool Oversize { get; set; }

    /// <summary>After the next reply the reader reports end of input, which ends the session.</summary>
    public bool CloseAfterReply { get; set; }

    /// <summary>The reader reports end of input from now on.</summary>
    public bool Closed { get; set; }

    public bool ClientEof { get; set; }

    public bool QuitReceived { get; private set; }

    /// <summary>Delay added to every reply from now on (the unknown-recipient tarpit).</summary>
    public TimeSpan TarpitEachReply { get; set; }

    public long DataSize { get; set; }

    /// <summary>When the reader began to wait for a command before the greeting stage was passed (0: not waiting).</summary>
    public long WaitingSince;

    private int _evicted;

    /// <summary>How long the session has waited for a command before AUTH (submission) or a transaction (MX); null when it is not waiting.</summary>
    public TimeSpan? IdleBeforeGreetingStage
    {
        get
        {
            var since = Interlocked.Read(ref WaitingSince);
            return since == 0 || PastGreetingStage || Volatile.Read(ref _evicted) != 0 ? null : Listener.Time.GetElapsedTime(since);
        }
    }

    /// <summary>The gate gave this session's slot to a new connection: its reader closes it (421 4.4.2).</summary>
    public bool Evicted => Volatile.Read(ref _evicted) != 0;

    /// <summary>Marks the session evicted; false when it was already.</summary>
    public bool TryEvict() => Interlocked.Exchange(ref _evicted, 1) == 0;

    /// <summary>The message being received (DATA), on disk in the spool until the store takes it.</summary>
    public IncomingMessage? Message
    {
        get => MessageSlot;
        set => MessageSlot = value;
    }

    /// <summary>The field behind <see cref="Message"/>, for the store and teardown to take it atomically.</summary>
    public IncomingMessage? MessageSlot;

    /// <summary>Drops the message being received, if any (its temporary file and its share of the DATA budget).</summary>
    public void DiscardMessage() => Interlocked.Exchange(ref MessageSlot, null)?.Discard();

    public string QueueId { get; set; } = "";

    /// <summary>The command being answered (null for an invalid line; a marker object for server-initiated replies).</summary>
    public object? CurrentCommand => _current;

    /// <summary>True until the greeting has gone out.</summary>
    public bool AwaitingGreeting => ReferenceEquals(_current, Greeting);

    public bool IsHeloReply => _current is HeloCommand or EhloCommand;

    public TimeSpan Elapsed => Listener.Time.GetElapsedTime(_started);

    public static SessionState From(ISessionContext context) => (SessionState)context.Properties[PropertyKey];

    public void Attach(ISessionContext context)
    {
        context.Properties[PropertyKey] = this;
        context.CommandExecuting += (_, e) => OnCommandExecuting(e.Command);
        context.CommandExecuted += (_, e) => OnCommandExecuted(e.Command);
        context.ResponseException += (_, e) => OnResponseException(e.Exception);
    }

    /// <summary>
    /// The exception that makes SmtpServer send <paramref name="reply"/> (and close, when the reply
    /// closes). <paramref name="recordReason"/>: the reply's reason is what the command's event records
    /// (RCPT), else its wire text is.
    /// </summary>
    public SmtpResponseException Refuse(RuleReply reply, bool recordReason)
    {
        if (recordReason)
        {
            RecipientReason = reply.Reason;
        }

        if (reply.CloseReason is { } why)
        {
            ServerCloses(why);
        }

        return new SmtpResponseException(Replies.Response(reply.Code, reply.StatusAndText), reply.Closes);
    }

    /// <summary>Marks the session as ended by the server for <paramref name="reason"/> (first reason wins).</summary>
    public void ServerCloses(string reason)
    {
        if (_closeReason.Length == 0)
        {
            _closeReason = "server closed: " + reason;
        }
    }

    /// <summary>The next reply is the server's own (a close), not an answer to a command.</summary>
    public void PrepareServerReply() => _current = ServerInitiated;

    /// <summary>Delays the next reply (a limit book's tarpit); adds up within one command.</summary>
    public void DelayNextReply(TimeSpan delay) => _pendingDelay += delay;

    public TimeSpan TakeReplyDelay()
    {
        var delay = _pendingDelay + TarpitEachReply;
        _pendingDelay = TimeSpan.Zero;
        return delay;
    }

    private void OnCommandExecuting(SmtpCommand command)
    {
        CommandCount++;
        _current = command;
        _commandStarted = Listener.Time.GetTimestamp();
        Phase = command switch
        {
            AuthCommand => SessionPhase.Auth,
            DataCommand => SessionPhase.Data,
            _ => SessionPhase.Command,
        };
        switch (command)
        {
            case EhloCommand ehlo:
                Helo = Clip(ehlo.DomainOrAddress, 255);
                break;
            case HeloCommand helo:
                Helo = Clip(helo.DomainOrAddress, 255);
                break;
            case AuthCommand:
                AuthUser = "";
                AuthReason = "";
                break;
            case MailCommand mail:
                Sender = Clip(mail.Address.AsAddress() ?? "", 320);
                Recipients.Clear();
                break;
            case RcptCommand:
                RecipientReason = "";
                break;
            case QuitCommand:
                QuitReceived = true;
                break;
        }
    }

    private void OnCommandExecuted(SmtpCommand command)
    {
        if (command is StartTlsCommand && Pipe is { IsSecure: true } pipe)
        {
            // The protocol and the cipher suite: with the EHLO name and the AUTH mechanism, the client's fingerprint.
            Emit(EventKind.StartTls, EventOutcome.Ok, 220, "2.0.0", pipe.CipherSuite, mechanism: pipe.SslProtocol.ToString(), durationMs: SinceCommand());
        }

        Phase = SessionPhase.Command;
        _current = null;
    }

    private void OnResponseException(SmtpResponseException exception)
    {
        if (_current is SmtpCommand)
        {
            return; // a filter or the authenticator refused: the reply event says so
        }

        if (exception.IsQuitRequested && exception.Response.ReplyCode == SmtpReplyCode.ServiceClosingTransmissionChannel && exception.Properties.Count == 0)
        {
            // SmtpServer's own close: idle timeout, session timeout or shutdown.
            _current = ServerInitiated;
            if (_closeReason.Length == 0)
            {
                _closeReason = Listener.Draining ? "server closed: shutdown"
                    : exception.Response.Message?.StartsWith("Timeout", StringComparison.Ordinal) == true ? "timeout: idle" : "timeout: session";
            }

            return;
        }

        if (exception.IsQuitRequested)
        {
            ServerCloses(exception.Response.Message ?? "");
            _current = ServerInitiated;
            return;
        }

        // A line that did not parse, or a command out of sequence. Only the verb is kept: the rest
        // may be anything, including credentials typed in the wrong place.
        CommandCount++;
        _commandStarted = Listener.Time.GetTimestamp();
        _invalidVerb = exception.Properties.TryGetValue("SmtpSession:Buffer", out var raw) && raw is byte[] bytes ? Verb(bytes) : "(out of sequence)";
        _current = null;
    }

    /// <summary>
    /// How long a reply that says a message was taken waits for the session's events to outlive the
    /// process. The event journal answers in well under a millisecond; this bounds a sink that cannot
    /// (store and disk both failing): the message is in the spool either way, so the reply goes out.
    /// </summary>
    public static readonly TimeSpan DurableEventsWait = TimeSpan.FromSeconds(2);

    /// <summary>
    /// Called by the reply writer with each reply about to be sent (after rendering and any delay):
    /// publishes the command's event. True when the reply tells the client its message was taken, so
    /// the events must outlive the process before it goes out.
    /// </summary>
    public bool OnReply(int code, string status, string text)
    {
        if (code is >= 300 and < 400)
        {
            return false; // 334 / 354: the command goes on
        }

        var accepted = false;

        var current = _current;
        _current = null;
        Phase = SessionPhase.Command;
        var outcome = code switch
        {
            < 400 => EventOutcome.Ok,
            < 500 => EventOutcome.TempFail,
            _ => EventOutcome.Reject,
        };
        var reply = (ushort)code;
        var duration = SinceCommand();
        switch (current)
        {
            case null:
                Emit(EventKind.Invalid, outcome, reply, status, _invalidVerb, durationMs: duration);
                break;
            case EhloCommand:
                Emit(EventKind.Ehlo, outcome, reply, status, Helo, mechanism: "EHLO", durationMs: duration);
                break;
            case HeloCommand:
                Emit(EventKind.Ehlo, outcome, reply, status, Helo, mechanism: "HELO", durationMs: duration);
                break;
            case StartTlsCommand when code != 220:
                Emit(EventKind.StartTls, outcome, reply, status, text, durationMs: duration);
                break;
            case AuthCommand auth:
                if (code == 235)
                {
                    User = AuthUser;
                }

                Emit(EventKind.Auth, outcome, reply, status, AuthReason.Length > 0 ? AuthReason : text,
                    mechanism: auth.Method.ToString().ToUpperInvariant(), user: AuthUser, durationMs: duration, secretTag: SecretTag);
                SecretTag = 0;
                break;
            case MailCommand mail:
                InTransaction = code < 400;
                Emit(EventKind.Mail, outcome, reply, status, code < 400 ? "" : text, sender: Sender,
                    size: mail.Parameters.TryGetValue("SIZE", out var s) && ulong.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var declared) ? declared : 0,
                    durationMs: duration);
                break;
            case RcptCommand rcpt:
                var recipient = Clip(rcpt.Address.AsAddress() ?? "", 320);
                if (code < 400)
                {
                    Recipients.Add(recipient);
                }

                Emit(EventKind.Rcpt, outcome, reply, status, RecipientReason.Length > 0 ? RecipientReason : (code < 400 ? "" : text),
                    sender: Sender, recipient: recipient, domain: Clip(rcpt.Address.Host ?? "", 253).ToLowerInvariant(), durationMs: duration);
                break;
            case DataCommand:
                accepted = code < 400 && QueueId.Length > 0;
                Emit(EventKind.Data, outcome, reply, status,
                    string.Create(CultureInfo.InvariantCulture, $"recipients={Recipients.Count}{(QueueId.Length > 0 && code < 400 ? " queued=" + QueueId : "")}"),
                    sender: Sender, size: (ulong)DataSize, durationMs: duration);
                InTransaction = false;
                QueueId = "";
                DataSize = 0;
                Recipients.Clear();
                break;
            case RsetCommand:
                InTransaction = false;
                Recipients.Clear();
                Emit(EventKind.Rset, outcome, reply, status, "", durationMs: duration);
                break;
        }

        if (CloseAfterReply)
        {
            Closed = true;
        }

        return accepted;
    }

    /// <summary>Publishes the close event, once, however the session ended.</summary>
    public void Finish(string fallbackReason)
    {
        DiscardMessage();
        if (Interlocked.Exchange(ref _finished, 1) != 0)
        {
            return;
        }

        var reason = _closeReason.Length > 0 ? _closeReason
            : QuitReceived ? "quit"
            : ClientEof ? "client dropped"
            : fallbackReason;
        Emit(EventKind.Close, EventOutcome.None, 0, "", reason, size: (ulong)CommandCount, durationMs: Ms(Elapsed));
    }

    public void Throttle(int code, string status, string detail, TimeSpan delay, string user = "") => EmitThrottle(code, status, detail, delay, user);

    public void EmitThrottle(int reply, string status, string detail, TimeSpan delay, string user = "")
    {
        Emit(EventKind.Throttle, reply >= 500 ? EventOutcome.Reject : reply >= 400 ? EventOutcome.TempFail : EventOutcome.None,
            (ushort)reply, status, detail, user: user, durationMs: Ms(delay));
        LogThrottle(Listener.Logger, Id, Role, ClientIp, detail);
    }

    public void Emit(EventKind kind, EventOutcome outcome, ushort reply, string status, string detail,
        string mechanism = "", string? user = null, string sender = "", string recipient = "", string domain = "", ulong size = 0, uint durationMs = 0, ulong secretTag = 0)
    {
        Listener.Events.Publish(new SmtpEvent
        {
            Timestamp = Listener.Time.GetUtcNow(),
            Node = Listener.Options.NodeName,
            Role = Role,
            SessionId = Id,
            Kind = kind,
            ClientIp = ClientIp,
            ClientPort = ClientPort,
            User = user ?? User,
            Mechanism = mechanism,
            Outcome = outcome,
            ReplyCode = reply,
            Status = status,
            Sender = sender,
            Recipient = recipient,
            RecipientDomain = domain,
            Size = size,
            DurationMs = durationMs,
            Detail = detail,
            SecretTag = secretTag,
        });
    }

    private uint SinceCommand() => _commandStarted == 0 ? 0 : Ms(Listener.Time.GetElapsedTime(_commandStarted));

    private static uint Ms(TimeSpan span) => (uint)Math.Clamp(span.TotalMilliseconds, 0, uint.MaxValue);

    internal static string Clip(string value, int max) => value.Length <= max ? value : value[..max];

    /// <summary>The first word of a raw line, printable ASCII only, at most 16 characters.</summary>
    internal static string Verb(ReadOnlySpan<byte> line)
    {
        var sb = new StringBuilder(16);
        foreach (var b in line)
        {
            if (b is (byte)' ' or (byte)'\r' or (byte)'\n' || sb.Length == 16)
            {
                break;
            }

            sb.Append(b is > 32 and < 127 ? (char)b : '?');
        }

        return sb.Length == 0 ? "(empty)" : sb.ToString().ToUpperInvariant();
    }

    [Microsoft.Extensions.Logging.LoggerMessage(Level = Microsoft.Extensions.Logging.LogLevel.Information, Message = "Session {SessionId:x16} ({Role}, {ClientIp}): {Action}")]
    private static partial void LogThrottle(Microsoft.Extensions.Logging.ILogger logger, ulong sessionId, ListenerRole role, IPAddress clientIp, string action);
}
