using System.Globalization;
using System.Net;
using Analytics.Events;
using Analytics.Limits;
using Analytics.Submission;
using Analytics.Submission.Rules;

namespace Analytics.Simulation;

/// <summary>
/// Plays a <see cref="SessionScript"/> the way the listener answers it and produces the events the
/// listener would record. The decisions are the listener's own: the same <see cref="SessionRules"/>
/// over a real <see cref="LimitBook"/> on a virtual clock, with the world's accounts and mailboxes as
/// the directories. What is emulated here is only the wire: reply timing, the event each reply
/// becomes, and how a session ends. Sessions must be played in start order, as locks and holds depend
/// on it (<see cref="Start"/> plays them interleaved). Not thread-safe: one emulator per run.
/// </summary>
internal sealed class ListenerEmulator
{
    private readonly World _world;
    private readonly LimitsOptions _options;
    private readonly VirtualClock _clock;
    private readonly SessionRules _rules;
    private readonly TimeSpan _authTime;
    private readonly string _node;
    private long _queueSequence;

    public ListenerEmulator(World world, LimitsOptions? options = null, string? node = null)
    {
        _world = world;
        _options = options ?? new LimitsOptions();
        _clock = new VirtualClock(world.Start);
        _rules = new SessionRules(_options, new LimitBook(_options, _clock), new WorldDirectory(world), new WorldDirectory(world),
            tagKey: System.Security.Cryptography.SHA256.HashData(BitConverter.GetBytes(world.Scenario.Seed)));
        _authTime = TimeSpan.FromMilliseconds(world.Scenario.AuthMilliseconds);
        _node = node ?? world.Scenario.Node;
    }

    /// <summary>Plays one session to its end, alone; events go to <paramref name="emit"/> in the order the listener records them.</summary>
    public void Play(SessionScript script, Action<SmtpEvent> emit)
    {
        using var commands = Start(script, emit);
        while (commands.MoveNext())
        {
        }
    }

    /// <summary>
    /// A session played command by command: the first <see cref="IEnumerator{T}.MoveNext"/> answers the
    /// connection, each later one the next command, and <see cref="IEnumerator{T}.Current"/> says when
    /// that next command arrives. Played from a queue ordered by those times (<see cref="FastSimulation"/>),
    /// sessions that overlap interleave as they do on a real server: two campaigns of one list server
    /// share its account's rate as they go, where played one after the other the second saw a bucket
    /// the first had already emptied up to its end.
    /// </summary>
    public IEnumerator<DateTimeOffset> Start(SessionScript script, Action<SmtpEvent> emit) =>
        new Session(this, script, emit).Run().GetEnumerator();

    /// <summary>The world's accounts and mailboxes, as the listener's directories would hold them.</summary>
    private sealed class WorldDirectory(World world) : ICredentialVerifier, IRecipientLookup
    {
        private readonly HashSet<string> _domains = new(world.Domains, StringComparer.Ordinal);

        public ValueTask<CredentialCheck> VerifyAsync(string user, string password, bool ownersNetwork, CancellationToken cancellationToken) =>
            ValueTask.FromResult(!world.AccountsByName.TryGetValue(user, out var account) ? CredentialCheck.UnknownUser
                : account.Password == password ? CredentialCheck.Ok
                : CredentialCheck.BadPassword);

        public bool IsLocalDomain(string domain) => _domains.Contains(domain);

        public bool HasMailbox(string address) => world.MailboxSet.Contains(address);
    }

    private sealed class Session : IRuleSession
    {
        private readonly ListenerEmulator _e;
        private readonly SessionScript _script;
        private readonly Action<SmtpEvent> _emit;
        private DateTimeOffset _now;
        private string _sender = "";
        private readonly List<string> _accepted = [];
        private bool _inTransaction;
        private int _authFailures;
        private int _commands;
        private TimeSpan _pendingDelay;
        private string _closeReason = "";

        public Session(ListenerEmulator emulator, SessionScript script, Action<SmtpEvent> emit)
        {
            _e = emulator;
            _script = script;
            _emit = emit;
            _now = script.Start;
            Address = AddressKey.Of(script.ClientIp);
        }

        public ListenerRole Role => _script.Role;

        public IPAddress ClientIp => _script.ClientIp;

        public AddressKey Address { get; }

        public string Sender => _sender;

        public LimitCache LimitCache { get; } = new();

        public string User { get; private set; } = "";

        public string AuthUser { get; set; } = "";

        public ulong SecretTag { get; set; }

        public int AcceptedRecipients { get; private set; }

        public int UnknownRecipients { get; set; }

        public int KnownRecipients { get; set; }

        public TimeSpan TarpitEachReply { get; set; }

        public void DelayNextReply(TimeSpan delay) => _pendingDelay += delay;

        public void Throttle(int code, string status, string detail, TimeSpan delay, string user = "") =>
            Emit(EventKind.Throttle, code >= 500 ? EventOutcome.Reject : code >= 400 ? EventOutcome.TempFail : EventOutcome.None,
                (ushort)code, status, detail, user: user, duration: delay);

        /// <summary>Answers the connection, then yields the arrival time of each command before answering it.</summary>
        public IEnumerable<DateTimeOffset> Run()
        {
            var start = _now;
            _e._clock.Set(_now);
            if (_e._rules.Connect(this, () => Emit(EventKind.Connect, EventOutcome.Ok, 0, "", "plain")) is { } refused)
            {
                Emit(EventKind.Connect, refused.Code >= 500 ? EventOutcome.Reject : EventOutcome.TempFail, refused.Code, refused.Status, refused.Reason);
                Throttle(refused.Code, refused.Status, "connection refused: " + refused.Reason, TimeSpan.Zero);
                Emit(EventKind.Close, EventOutcome.None, 0, "", "server closed: " + refused.CloseReason, size: 0, duration: TimeSpan.Zero);
                yield break;
            }

            var quit = false;
            foreach (var step in _script.Steps)
            {
                var arrives = _now + step.Delay;
                yield return arrives;
                _now = arrives;
                _e._clock.Set(_now);
                if (step.Kind == StepKind.Auth && User.Length > 0)
                {
                    continue; // clients stop guessing once they are in (see LiveClient)
                }

                _commands++;
                if (!Execute(step))
                {
                    break;
                }

                if (step.Kind == StepKind.Quit)
                {
                    quit = true;
                    break;
                }
            }

            var reason = _closeReason.Length > 0 ? _closeReason : quit ? "quit" : "client dropped";
            Emit(EventKind.Close, EventOutcome.None, 0, "", reason, size: (ulong)_commands, duration: _now - start);
        }

        /// <summary>Executes one command; false when the server ends the session.</summary>
        private bool Execute(in Step step)
        {
            switch (step.Kind)
            {
                case StepKind.Ehlo:
                    Reply(EventKind.Ehlo, 250, "", step.Text, mechanism: "EHLO");
                    return true;

                case StepKind.StartTls:
                    Reply(EventKind.StartTls, 220, "2.0.0", step.Text, mechanism: step.Mechanism.Length > 0 ? step.Mechanism : "Tls13", work: TimeSpan.FromMilliseconds(3));
                    return true;

                case StepKind.Auth:
                    return Auth(step);

                case StepKind.Mail:
                    _sender = Clip(step.Text, 320);
                    AcceptedRecipients = 0;
                    _accepted.Clear();
                    if (_e._rules.Mail(this, step.Size) is { } refusal)
                    {
                        _inTransaction = false;
                        Reply(EventKind.Mail, refusal.Code, refusal.Status, refusal.Text, sender: _sender, size: (ulong)step.Size);
                        return !refusal.Closes || Close(refusal);
                    }

                    _inTransaction = true;
                    Reply(EventKind.Mail, 250, "2.1.0", "", sender: _sender, size: (ulong)step.Size);
                    return true;

                case StepKind.Rcpt:
                    return Rcpt(step);

                case StepKind.Data when _inTransaction && AcceptedRecipients > 0:
                    var id = string.Create(CultureInfo.InvariantCulture,
                        $"{_now.UtcDateTime:yyyyMMddHHmmssfff}-{_script.SessionId:x16}-{++_e._queueSequence:x}");
                    Reply(EventKind.Data, 250, "2.0.0", string.Create(CultureInfo.InvariantCulture, $"recipients={AcceptedRecipients} queued={id}"),
                        sender: _sender, size: (ulong)step.Size + 2, work: TimeSpan.FromMilliseconds(1 + (step.Size / 1_000_000)));
                    _e._rules.Delivered(this, AcceptedRecipients);
                    Deliver(id);
                    _inTransaction = false;
                    AcceptedRecipients = 0;
                    _accepted.Clear();
                    return true;

                case StepKind.Data:
                case StepKind.Rset:
                    // A client with no accepted recipient resets instead of sending DATA.
                    _inTransaction = false;
                    AcceptedRecipients = 0;
                    _accepted.Clear();
                    Reply(EventKind.Rset, 250, "2.0.0", "");
                    return true;

                case StepKind.Quit:
                    return true;
            }

            return true;
        }

        private bool Auth(in Step step)
        {
            // The world's verifier answers at once: the task is always complete here.
            var result = _e._rules.AuthAsync(this, step.Text, step.Secret ?? "").AsTask().GetAwaiter().GetResult();
            if (result.Accepted)
            {
                User = AuthUser;
                Reply(EventKind.Auth, 235, "2.7.0", "ok", mechanism: step.Mechanism, user: AuthUser, work: _e._authTime);
                SecretTag = 0;
                return true;
            }

            var reply = result.Reply;
            Reply(EventKind.Auth, reply.Code, reply.Status, result.Reason, mechanism: step.Mechanism, user: AuthUser,
                work: result.RefusedByPolicy ? TimeSpan.Zero : _e._authTime);
            SecretTag = 0;

            // A refusal by policy is not a failed attempt for SmtpServer's per-session budget; 535 is,
            // and SmtpServer closes the session once the failures reach MaxAuthenticationAttempts.
            if (reply.Code != 535 || ++_authFailures < _e._options.Session.MaxAuthFailuresPerSession)
            {
                return true;
            }

            _closeReason = "timeout: session";
            return false;
        }

        private bool Rcpt(in Step step)
        {
            var recipient = Clip(step.Text, 320);
            var at = recipient.LastIndexOf('@');
            var host = at < 0 ? "" : recipient[(at + 1)..];
            var domain = host.ToLowerInvariant();
            if (_e._rules.Rcpt(this, recipient, host) is { } refusal)
            {
                Reply(EventKind.Rcpt, refusal.Code, refusal.Status, refusal.Reason, sender: _sender, recipient: recipient, domain: domain);
                return !refusal.Closes || Close(refusal);
            }

            AcceptedRecipients++;
            _accepted.Add(recipient);
            Reply(EventKind.Rcpt, 250, "2.1.5", "", sender: _sender, recipient: recipient, domain: domain);
            return true;
        }

        /// <summary>
        /// The accepted message handed onward, one delivery event per recipient a few seconds later, as the
        /// queue records them: local mailboxes take it; outside mailboxes that do not exist refuse it (5.1.1).
        /// </summary>
        private void Deliver(string queueId)
        {
            var at = _now;
            foreach (var recipient in _accepted)
            {
                var ok = _e._world.Deliverable(recipient);
                var domain = recipient[(recipient.LastIndexOf('@') + 1)..].ToLowerInvariant();
                var local = _e._world.MailboxSet.Contains(recipient);
                _emit(new SmtpEvent
                {
                    Timestamp = at.AddMilliseconds(400 + (int)(_script.SessionId % 9000)),
                    Node = _e._node,
                    Role = _script.Role,
                    SessionId = _script.SessionId,
                    Kind = EventKind.Delivery,
                    ClientIp = _script.ClientIp,
                    ClientPort = _script.ClientPort,
                    User = User,
                    Mechanism = local ? "lmtp" : "smtp",
                    Outcome = ok ? EventOutcome.Ok : EventOutcome.Reject,
                    ReplyCode = (ushort)(ok ? 250 : 550),
                    Status = ok ? "2.0.0" : "5.1.1",
                    Sender = _sender,
                    Recipient = recipient,
                    RecipientDomain = domain,
                    Detail = string.Create(CultureInfo.InvariantCulture, $"queue {queueId} attempt 1 via {(local ? "mailstore" : "mx." + domain)}: {(ok ? "ok" : "user unknown")}"),
                });
            }
        }

        private bool Close(RuleReply reply)
        {
            _closeReason = "server closed: " + reply.CloseReason;
            return false;
        }

        /// <summary>The reply goes out after the server's work and any tarpit; the event is stamped then.</summary>
        private void Reply(EventKind kind, ushort code, string status, string detail, string mechanism = "", string? user = null,
            string sender = "", string recipient = "", string domain = "", ulong size = 0, TimeSpan work = default)
        {
            var took = work + _pendingDelay + TarpitEachReply;
            _pendingDelay = TimeSpan.Zero;
            _now += took;
            _e._clock.Set(_now);
            var outcome = code < 400 ? EventOutcome.Ok : code < 500 ? EventOutcome.TempFail : EventOutcome.Reject;
            Emit(kind, outcome, code, status, detail, mechanism, user, sender, recipient, domain, size, took);
        }

        private void Emit(EventKind kind, EventOutcome outcome, ushort reply, string status, string detail,
            string mechanism = "", string? user = null, string sender = "", string recipient = "", string domain = "", ulong size = 0, TimeSpan duration = default)
        {
            _emit(new SmtpEvent
            {
                Timestamp = _now,
                Node = _e._node,
                Role = _script.Role,
                SessionId = _script.SessionId,
                Kind = kind,
                ClientIp = _script.ClientIp,
                ClientPort = _script.ClientPort,
                User = user ?? User,
                Mechanism = mechanism,
                Outcome = outcome,
                ReplyCode = reply,
                Status = status,
                Sender = sender,
                Recipient = recipient,
                RecipientDomain = domain,
                Size = size,
                DurationMs = (uint)Math.Clamp(duration.TotalMilliseconds, 0, uint.MaxValue),
                Detail = detail,
                SecretTag = kind == EventKind.Auth ? SecretTag : 0,
            });
        }

        private static string Clip(string value, int max) => value.Length <= max ? value : value[..max];
    }
}
