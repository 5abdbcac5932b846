using System.Globalization;
using Analytics.Events;
using Analytics.Submission;

namespace Analytics.Simulation;

/// <summary>
/// Plays a <see cref="SessionScript"/> the way the listener (src/Analytics.Submission) answers it and
/// produces the events the listener would record: the same kinds, reply codes, enhanced status
/// codes, detail texts, AUTH/RCPT fast-path defenses (the real <see cref="StaticLimitBook"/> on a
/// virtual clock), tarpit delays and close reasons. Sessions must be played in start order, as the
/// limit book's lockouts depend on it. Not thread-safe: one emulator per run.
/// </summary>
/// <remarks>
/// Conventions copied from the listener (keep in step with SessionState, MailboxFilter,
/// Authenticator, Replies, SpoolMessageStore): EHLO events carry no status and the HELO name as
/// detail; rejected commands carry the reply text (or the listener's reason) as detail; DATA's detail
/// is <c>recipients=N queued=ID</c>; close carries the command count as size and the reason as detail.
/// </remarks>
public sealed class ListenerEmulator
{
    private readonly World _world;
    private readonly SubmissionOptions _options;
    private readonly VirtualClock _clock;
    private readonly StaticLimitBook _limits;
    private readonly HashSet<string> _domains;
    private readonly TimeSpan _authTime;
    private readonly string _node;
    private long _queueSequence;

    public ListenerEmulator(World world, SubmissionOptions? options = null, string? node = null)
    {
        _world = world;
        _options = options ?? new SubmissionOptions();
        _clock = new VirtualClock(world.Start);
        _limits = new StaticLimitBook(LimitSnapshot.From(_options), _options.Defenses, _clock);
        _domains = new HashSet<string>(world.Domains, StringComparer.Ordinal);
        _authTime = TimeSpan.FromMilliseconds(world.Scenario.AuthMilliseconds);
        _node = node ?? world.Scenario.Node;
    }

    /// <summary>Plays one session; events go to <paramref name="emit"/> in the order the listener records them.</summary>
    public void Play(SessionScript script, Action<SmtpEvent> emit)
    {
        var s = new Session(this, script, emit);
        s.Run();
    }

    private sealed class Session
    {
        private readonly ListenerEmulator _e;
        private readonly SessionScript _script;
        private readonly Action<SmtpEvent> _emit;
        private DateTimeOffset _now;
        private string _user = "";
        private string _sender = "";
        private bool _inTransaction;
        private int _accepted;
        private int _unknown;
        private int _authFailures;
        private int _commands;
        private bool _tls;
        private TimeSpan _tarpit;
        private string _closeReason = "";

        public Session(ListenerEmulator emulator, SessionScript script, Action<SmtpEvent> emit)
        {
            _e = emulator;
            _script = script;
            _emit = emit;
            _now = script.Start;
        }

        public void Run()
        {
            var start = _now;
            _e._clock.Set(_now);
            Emit(EventKind.Connect, EventOutcome.Ok, 0, "", "plain");
            var quit = false;
            foreach (var step in _script.Steps)
            {
                _now += step.Delay;
                _e._clock.Set(_now);
                if (step.Kind == StepKind.Auth && _user.Length > 0)
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
            var options = _e._options;
            switch (step.Kind)
            {
                case StepKind.Ehlo:
                    Reply(EventKind.Ehlo, 250, "", step.Text, mechanism: "EHLO");
                    return true;

                case StepKind.StartTls:
                    _tls = true;
                    Reply(EventKind.StartTls, 220, "2.0.0", "", mechanism: "Tls13", work: TimeSpan.FromMilliseconds(3));
                    return true;

                case StepKind.Auth:
                    return Auth(step);


                case StepKind.Mail:
                    _sender = Clip(step.Text, 320);
                    _accepted = 0;
                    if (_script.Role == ListenerRole.Submission && _user.Length == 0)
                    {
                        _inTransaction = false;
                        Reply(EventKind.Mail, 530, "5.7.0", "Authentication required", sender: _sender, size: (ulong)step.Size);
                        return true;
                    }

                    _inTransaction = true;
                    Reply(EventKind.Mail, 250, "2.1.0", "", sender: _sender, size: (ulong)step.Size);
                    return true;

                case StepKind.Rcpt:
                    return Rcpt(step);

                case StepKind.Data when _inTransaction && _accepted > 0:
                    var id = string.Create(CultureInfo.InvariantCulture,
                        $"{_now.UtcDateTime:yyyyMMddHHmmssfff}-{_script.SessionId:x16}-{++_e._queueSequence:x}");
                    Reply(EventKind.Data, 250, "2.0.0", string.Create(CultureInfo.InvariantCulture, $"recipients={_accepted} queued={id}"),
                        sender: _sender, size: (ulong)step.Size + 2, work: TimeSpan.FromMilliseconds(1 + (step.Size / 1_000_000)));
                    _inTransaction = false;
                    _accepted = 0;
                    return true;

                case StepKind.Data:
                case StepKind.Rset:
                    // A client with no accepted recipient resets instead of sending DATA.
                    _inTransaction = false;
                    _accepted = 0;
                    Reply(EventKind.Rset, 250, "2.0.0", "");
                    return true;

                case StepKind.Quit:
                    return true;
            }

            _ = options;
            return true;
        }

        private bool Auth(in Step step)
        {
            var authUser = Clip(step.Text, 320);
            // The listener tags each password with a keyed hash for the spraying defense; any stable,
            // non-zero hash of the secret serves the same purpose here.
            var tag = (ulong)(uint)StringComparer.Ordinal.GetHashCode(step.Secret ?? "") << 1 | 1;
            var subject = new LimitSubject(_script.Role, _script.ClientIp, _user.Length > 0 ? _user : authUser) { SecretTag = tag };
            var decision = _e._limits.CheckAuth(subject);
            if (decision.Action != LimitAction.Allow)
            {
                Throttle(454, "4.7.0", "auth refused: " + decision.Reason, TimeSpan.Zero, authUser);
                Reply(EventKind.Auth, 454, "4.7.0", decision.Reason, mechanism: step.Mechanism, user: authUser);
                return true; // a refusal by policy is not a failed attempt for SmtpServer's per-session budget
            }

            var name = UserStore.Normalize(step.Text);
            string reason;
            if (_e._world.AccountsByName.TryGetValue(name, out var account))
            {
                if (account.Password == step.Secret)
                {
                    _e._limits.RecordAuthSuccess(subject);
                    _user = authUser;
                    Reply(EventKind.Auth, 235, "2.7.0", "ok", mechanism: step.Mechanism, user: authUser, work: _e._authTime);
                    return true;
                }

                reason = "bad password";
            }
            else
            {
                reason = "unknown user";
            }

            var outcome = _e._limits.RecordAuthFailure(subject);
            if (outcome.IpLocked)
            {
                Throttle(454, "4.7.0", $"lock ip {_script.ClientIp} for {outcome.LockDuration}", TimeSpan.Zero, authUser);
            }

            if (outcome.UserLocked)
            {
                Throttle(454, "4.7.0", $"lock user for {outcome.LockDuration}", TimeSpan.Zero, authUser);
            }

            if (outcome.NetworkLocked)
            {
                Throttle(454, "4.7.0", $"lock network of {_script.ClientIp} for {outcome.LockDuration}", TimeSpan.Zero, authUser);
            }

            if (outcome.PasswordBurned)
            {
                Throttle(454, "4.7.0", "refuse a password tried against too many accounts", TimeSpan.Zero, authUser);
            }

            Reply(EventKind.Auth, 535, "5.7.8", reason, mechanism: step.Mechanism, user: authUser, work: _e._authTime);
            return CountFailure();
        }

        // SmtpServer closes the session once the AUTH failures reach MaxAuthenticationAttempts.
        private bool CountFailure()
        {
            if (++_authFailures < _e._options.Limits.MaxAuthFailuresPerSession)
            {
                return true;
            }

            _closeReason = "timeout: session";
            return false;
        }

        private bool Rcpt(in Step step)
        {
            var options = _e._options;
            var recipient = Clip(step.Text, 320);
            var at = recipient.LastIndexOf('@');
            var domain = at < 0 ? "" : recipient[(at + 1)..].ToLowerInvariant();
            if (_accepted >= options.Limits.MaxRecipientsPerMessage)
            {
                Reply(EventKind.Rcpt, 452, "4.5.3", "too many recipients", sender: _sender, recipient: recipient, domain: domain);
                return true;
            }

            if (_e._domains.Contains(domain))
            {
                if (!_e._world.MailboxSet.Contains(recipient.ToLowerInvariant()))
                {
                    _unknown++;
                    var defenses = options.Defenses;
                    if (_unknown >= defenses.UnknownRecipientsBeforeDisconnect)
                    {
                        _closeReason = "server closed: unknown recipients";
                        Throttle(421, "4.7.0", string.Create(CultureInfo.InvariantCulture, $"disconnect after {_unknown} unknown recipients"), _tarpit);
                        Reply(EventKind.Rcpt, 421, "4.7.0", "unknown mailbox; disconnect", sender: _sender, recipient: recipient, domain: domain);
                        return false;
                    }

                    if (_unknown >= defenses.UnknownRecipientsBeforeTarpit && _tarpit == TimeSpan.Zero && defenses.TarpitDelay > TimeSpan.Zero)
                    {
                        _tarpit = defenses.TarpitDelay;
                        Throttle(550, "5.1.1", string.Create(CultureInfo.InvariantCulture, $"tarpit after {_unknown} unknown recipients"), defenses.TarpitDelay);
                    }

                    Reply(EventKind.Rcpt, 550, "5.1.1", "unknown mailbox", sender: _sender, recipient: recipient, domain: domain);
                    return true;
                }
            }
            else if (_script.Role == ListenerRole.Mx || _user.Length == 0)
            {
                Reply(EventKind.Rcpt, 554, "5.7.1", "relay denied", sender: _sender, recipient: recipient, domain: domain);
                return true;
            }

            _accepted++;
            Reply(EventKind.Rcpt, 250, "2.1.5", "", sender: _sender, recipient: recipient, domain: domain);
            return true;
        }

        private void Throttle(ushort reply, string status, string detail, TimeSpan delay, string user = "") =>
            Emit(EventKind.Throttle, reply >= 500 ? EventOutcome.Reject : reply >= 400 ? EventOutcome.TempFail : EventOutcome.None,
                reply, status, detail, user: user, duration: delay);

        /// <summary>The reply goes out after the server's work and any tarpit; the event is stamped then.</summary>
        private void Reply(EventKind kind, ushort code, string status, string detail, string mechanism = "", string? user = null,
            string sender = "", string recipient = "", string domain = "", ulong size = 0, TimeSpan work = default)
        {
            var took = work + _tarpit;
            _now += took;
            _e._clock.Set(_now);
            var outcome = code < 400 ? EventOutcome.Ok : code < 500 ? EventOutcome.TempFail : EventOutcome.Reject;
            Emit(kind, outcome, code, status, detail, mechanism, user, sender, recipient, domain, size, took);
        }

        private void Emit(EventKind kind, EventOutcome outcome, ushort reply, string status, string detail,
            string mechanism = "", string? user = null, string sender = "", string recipient = "", string domain = "", ulong size = 0, TimeSpan duration = default)
        {
            _ = _tls;
            _emit(new SmtpEvent
            {
                Timestamp = _now,
                Node = _e._node,
                Role = _script.Role,
                SessionId = _script.SessionId,
                Kind = kind,
                ClientIp = _script.ClientIp,
                ClientPort = _script.ClientPort,
                User = user ?? _user,
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
            });
        }

        private static string Clip(string value, int max) => value.Length <= max ? value : value[..max];
    }
}
