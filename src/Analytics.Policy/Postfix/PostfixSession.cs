using System.Collections.Concurrent;
using System.Net;
using Analytics.Events;
using Analytics.Submission.Rules;

namespace Analytics.Policy;

/// <summary>
/// One SMTP session of a Postfix smtpd process as the engine sees it: through the policy requests of
/// one client (address and port) on one policy connection, and through Postfix's log lines for that
/// client. It plays the listener's session for <see cref="SessionRules"/>: accepted recipients of the
/// message under way, unknown recipients so far, tarpit, and the events, each with this session's id.
/// Callers hold the session's lock: policy requests and log lines come from different tasks.
/// </summary>
internal sealed class PostfixSession : IRuleSession
{
    private readonly PolicyEngine _engine;
    private TimeSpan _pendingDelay;
    private int _pid;            // the smtpd process (from instance), 0 until known
    private long _sequence = -1; // the last message number seen in this session

    public PostfixSession(PolicyEngine engine, IPAddress client, ushort port, ListenerRole role, string user, ulong id = 0)
    {
        _engine = engine;
        ClientIp = AddressKey.Unmap(client);
        Address = AddressKey.Of(ClientIp);
        ClientPort = port;
        Role = role;
        User = user;
        AuthUser = user;
        Id = id != 0 ? id : PolicyEngine.NewSessionId();
        LastSeen = engine.Time.GetTimestamp();
    }

    public ulong Id { get; }

    /// <summary>Postfix shows the engine no password (Dovecot's policy requests do): always 0 here.</summary>
    public ulong SecretTag { get; set; }

    public ListenerRole Role { get; private set; }

    public IPAddress ClientIp { get; }

    public AddressKey Address { get; }

    public Analytics.Limits.LimitCache LimitCache { get; } = new();

    public ushort ClientPort { get; }

    /// <summary>The SASL user Postfix reports (canonical), empty before AUTH.</summary>
    public string User { get; private set; }

    public string AuthUser { get; set; }

    /// <summary>The sender of the message under way, as Postfix's policy request or log line names it (empty: the null sender).</summary>
    public string Sender { get; set; } = "";

    /// <summary>Recipients accepted (answered DUNNO by the limit check) in the current message.</summary>
    public int AcceptedRecipients { get; set; }

    public int UnknownRecipients { get; set; }

    /// <summary>Recipients accepted in this session, over all its messages.</summary>
    public int KnownRecipients { get; set; }

    public TimeSpan TarpitEachReply { get; set; }

    /// <summary>Postfix's <c>instance</c> of the message under way: one per MAIL transaction.</summary>
    public string Instance { get; private set; } = "";

    /// <summary>What the connection and MAIL checks said about the message under way (null: it goes on).</summary>
    public RuleReply? MessageRefusal { get; set; }

    /// <summary>Set when the rules close the session (the listener's 421): every further request gets it, and Postfix disconnects.</summary>
    public RuleReply? Closing { get; set; }

    /// <summary>When the session was last asked about (<see cref="TimeProvider.GetTimestamp"/>), for the log's attribution and for expiry.</summary>
    public long LastSeen { get; private set; }

    public void Touch() => LastSeen = _engine.Time.GetTimestamp();

    /// <summary>
    /// Whether a request with this smtpd process and message number continues this session (and if so,
    /// remembers them): another process, or a message number going back, is a new session on a reused
    /// client port. Unknown values (0, -1: no message yet) continue it.
    /// </summary>
    public bool Follow(int pid, long sequence)
    {
        if (pid != 0 && _pid != 0 && pid != _pid)
        {
            return false;
        }

        if (pid != 0 && sequence >= 0 && sequence < _sequence)
        {
            return false;
        }

        if (pid != 0)
        {
            _pid = pid;
        }

        if (sequence > _sequence)
        {
            _sequence = sequence;
        }

        return true;
    }

    /// <summary>A user that appeared in the middle of a session (AUTH after a first message): the session becomes a submission.</summary>
    public bool Authenticated(string user)
    {
        if (user.Length == 0 || user == User)
        {
            return false;
        }

        User = user;
        AuthUser = user;
        Role = ListenerRole.Submission;
        return true;
    }

    /// <summary>True when <paramref name="instance"/> starts a new message (its connection and MAIL checks are due).</summary>
    public bool StartsMessage(string instance)
    {
        if (instance == Instance)
        {
            return false;
        }

        Instance = instance;
        AcceptedRecipients = 0;
        MessageRefusal = null;
        return true;
    }

    public void DelayNextReply(TimeSpan delay) => _pendingDelay += delay;

    /// <summary>The delay the reply being written gets: a limit's tarpit plus the session's own.</summary>
    public TimeSpan TakeReplyDelay()
    {
        var delay = _pendingDelay + TarpitEachReply;
        _pendingDelay = TimeSpan.Zero;
        return delay;
    }

    public void Throttle(int code, string status, string detail, TimeSpan delay, string user = "") =>
        Emit(EventKind.Throttle, code >= 500 ? EventOutcome.Reject : code >= 400 ? EventOutcome.TempFail : EventOutcome.None,
            (ushort)code, status, detail, user: user, durationMs: Ms(delay));

    public void Emit(EventKind kind, EventOutcome outcome, ushort reply, string status, string detail,
        string mechanism = "", string? user = null, string sender = "", string recipient = "", string domain = "", ulong size = 0, uint durationMs = 0) =>
        _engine.Events.Publish(new SmtpEvent
        {
            Timestamp = _engine.Time.GetUtcNow(),
            Node = _engine.Options.PostfixNode,
            Role = Role,
            SessionId = Id,
            Kind = kind,
            ClientIp = ClientIp,
            ClientPort = ClientPort,
            User = user ?? (User.Length > 0 ? User : AuthUser),
            Mechanism = mechanism,
            Outcome = outcome,
            ReplyCode = reply,
            Status = status,
            Sender = Clip(sender, 320),
            Recipient = Clip(recipient, 320),
            RecipientDomain = Clip(domain, 253),
            Size = size,
            DurationMs = durationMs,
            Detail = Clip(detail, 512),
        });

    /// <summary>The event outcome of a reply code.</summary>
    public static EventOutcome OutcomeOf(int code) => code switch
    {
        < 400 => EventOutcome.Ok,
        < 500 => EventOutcome.TempFail,
        _ => EventOutcome.Reject,
    };

    public static uint Ms(TimeSpan span) => (uint)Math.Clamp(span.TotalMilliseconds, 0, uint.MaxValue);

    private static string Clip(string value, int max) => value.Length <= max ? value : value[..max];
}

/// <summary>
/// The Postfix client sessions seen lately. One smtpd process serves one client at a time, but asks
/// each <c>check_policy_service</c> of its configuration over a connection of its own, so a session
/// is known by the client's address and port (and the smtpd process and message number Postfix puts
/// in <c>instance</c>, which tell a reused port from the same session), not by the policy connection.
/// The log reader attributes a line (which names the client's address, not its port) to the session
/// of that address asked about last.
/// </summary>
internal sealed class PostfixSessions
{
    private const int SweepThreshold = 10_000;

    private readonly PolicyEngine _engine;
    private readonly ConcurrentDictionary<(AddressKey Address, ushort Port), PostfixSession> _byClient = new();
    private readonly ConcurrentDictionary<AddressKey, PostfixSession> _latest = new();
    private readonly ConcurrentDictionary<AddressKey, (ulong Id, long At)> _logins = new();
    private readonly Lock _starting = new();
    private long _lastSweep;

    public PostfixSessions(PolicyEngine engine) => _engine = engine;

    public int Count => _byClient.Count;

    /// <summary>
    /// The session a request is about, or a new one (<paramref name="create"/> gets, for an
    /// <paramref name="authenticated"/> one, the id of a login from that address waiting to be taken, or 0; <paramref name="start"/> runs once, under the new
    /// session's lock, before any other request can see it) when the client, its smtpd process or its
    /// message numbering says this is another session.
    /// </summary>
    public PostfixSession For(IPAddress client, ushort port, string instance, bool authenticated, Func<ulong, PostfixSession> create, Action<PostfixSession> start)
    {
        var key = (AddressKey.Of(AddressKey.Unmap(client)), port);
        var (pid, sequence) = ParseInstance(instance);
        if (_byClient.TryGetValue(key, out var known) && Continues(known, pid, sequence))
        {
            return known;
        }

        lock (_starting)
        {
            if (_byClient.TryGetValue(key, out known) && Continues(known, pid, sequence))
            {
                return known;
            }

            var session = create(authenticated ? TakeLogin(key.Item1) : 0);
            lock (session)
            {
                session.Follow(pid, sequence);
                _byClient[key] = session;
                start(session);
            }

            if (_byClient.Count > SweepThreshold)
            {
                Sweep();
            }

            return session;
        }
    }

    /// <summary>
    /// A login Dovecot accepted for Postfix's SASL (protocol smtp): Postfix asks about the session only
    /// at its first RCPT, so the next session the policy service starts for this address within a few
    /// seconds takes the login's session id, and the AUTH and the message are one session, as on the listener.
    /// </summary>
    public void LoggedIn(IPAddress client, ulong sessionId)
    {
        _logins[AddressKey.Of(AddressKey.Unmap(client))] = (sessionId, _engine.Time.GetTimestamp());
        if (_logins.Count > SweepThreshold)
        {
            foreach (var (address, login) in _logins)
            {
                if (_engine.Time.GetElapsedTime(login.At) > LoginWindow)
                {
                    _logins.TryRemove(new KeyValuePair<AddressKey, (ulong, long)>(address, login));
                }
            }
        }
    }

    /// <summary>The session id of a login from <paramref name="address"/> that no session has taken yet (0: none).</summary>
    public ulong TakeLogin(AddressKey address) =>
        _logins.TryRemove(address, out var login) && _engine.Time.GetElapsedTime(login.At) <= LoginWindow ? login.Id : 0;

    private static readonly TimeSpan LoginWindow = TimeSpan.FromSeconds(30);

    private bool Continues(PostfixSession session, int pid, long sequence)
    {
        if (_engine.Time.GetElapsedTime(session.LastSeen) > _engine.Options.SessionIdle)
        {
            return false;
        }

        lock (session)
        {
            return session.Follow(pid, sequence);
        }
    }

    /// <summary>Postfix's <c>instance</c> is <c>PID.SECONDS.MICROSECONDS.SEQUENCE</c> (hex): the smtpd process and the message's number in its session.</summary>
    internal static (int Pid, long Sequence) ParseInstance(string instance)
    {
        var parts = instance.Split('.');
        return parts.Length == 4
            && int.TryParse(parts[0], System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture, out var pid)
            && long.TryParse(parts[3], System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture, out var sequence)
            ? (pid, sequence)
            : (0, -1);
    }

    public void Seen(PostfixSession session)
    {
        _latest[session.Address] = session;
        if (_latest.Count > SweepThreshold)
        {
            Sweep();
        }
    }

    /// <summary>The session of <paramref name="address"/> asked about within <paramref name="within"/>, or null.</summary>
    public PostfixSession? Recent(AddressKey address, TimeSpan within) =>
        _latest.TryGetValue(address, out var session) && _engine.Time.GetElapsedTime(session.LastSeen) <= within ? session : null;

    private void Sweep()
    {
        var time = _engine.Time;
        var now = time.GetTimestamp();
        var last = Volatile.Read(ref _lastSweep);
        if (time.GetElapsedTime(last, now) < TimeSpan.FromSeconds(10) || Interlocked.CompareExchange(ref _lastSweep, now, last) != last)
        {
            return;
        }

        var idle = _engine.Options.SessionIdle;
        foreach (var (address, session) in _latest)
        {
            if (time.GetElapsedTime(session.LastSeen, now) > idle)
            {
                _latest.TryRemove(new KeyValuePair<AddressKey, PostfixSession>(address, session));
            }
        }

        foreach (var (key, session) in _byClient)
        {
            if (time.GetElapsedTime(session.LastSeen, now) > idle)
            {
                _byClient.TryRemove(new KeyValuePair<(AddressKey, ushort), PostfixSession>(key, session));
            }
        }
    }
}
