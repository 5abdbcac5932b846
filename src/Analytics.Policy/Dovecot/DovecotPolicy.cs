using System.Collections.Concurrent;
using System.Net;
using System.Text;
using System.Text.Json;
using Analytics.Events;
using Analytics.Submission.Rules;

namespace Analytics.Policy;

/// <summary>
/// A request of Dovecot's authentication policy client (<c>auth_policy_server_url</c>), as the
/// default <c>auth_policy_request_attributes</c> and the engine's recommended additions name them.
/// </summary>
internal sealed record DovecotRequest
{
    /// <summary><c>allow</c> (before the password check, and again after a correct one) or <c>report</c> (the outcome).</summary>
    public required string Command { get; init; }

    public string Login { get; init; } = "";

    public string Remote { get; init; } = "";

    /// <summary>
    /// Dovecot's <c>%{hashed_password}</c>: H(nonce ‖ login ‖ 0 ‖ password), truncated. It binds the
    /// login, so it tells apart passwords tried against one account, never one password tried against many.
    /// </summary>
    public string PasswordHash { get; init; } = "";

    /// <summary>
    /// The engine's <c>pwtag=%8{pkcs5:password}</c>: a digest of the password alone, so one password
    /// sprayed over many accounts is recognised (see docs/operations.md for what it reveals).
    /// </summary>
    public string PasswordTag { get; init; } = "";

    public string Protocol { get; init; } = "";

    public string SessionId { get; init; } = "";

    /// <summary><c>mech=%m</c> when configured: PLAIN, LOGIN, ….</summary>
    public string Mechanism { get; init; } = "";

    public bool? Success { get; init; }

    public bool PolicyReject { get; init; }

    public bool Tls { get; init; }

    /// <summary>Parses the JSON body; top-level strings and booleans are read, nested objects and unknown names skipped.</summary>
    public static bool TryParse(string command, ReadOnlySpan<byte> json, out DovecotRequest request, out string error)
    {
        request = new DovecotRequest { Command = command };
        error = "";
        string login = "", remote = "", pwhash = "", pwtag = "", protocol = "", session = "", mech = "";
        bool? success = null;
        bool policyReject = false, tls = false;
        try
        {
            var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = 16, CommentHandling = JsonCommentHandling.Skip });
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                error = "the body is not a JSON object";
                return false;
            }

            while (reader.Read())
            {
                if (reader.TokenType == JsonTokenType.EndObject && reader.CurrentDepth == 0)
                {
                    break;
                }

                if (reader.TokenType != JsonTokenType.PropertyName || reader.CurrentDepth != 1)
                {
                    continue;
                }

                var name = reader.GetString() ?? "";
                if (!reader.Read())
                {
                    break;
                }

                if (reader.TokenType is JsonTokenType.StartObject or JsonTokenType.StartArray)
                {
                    reader.Skip();
                    continue;
                }

                switch (name)
                {
                    case "login": login = Text(ref reader); break;
                    case "remote": remote = Text(ref reader); break;
                    case "pwhash": pwhash = Text(ref reader); break;
                    case "pwtag": pwtag = Text(ref reader); break;
                    case "protocol": protocol = Text(ref reader); break;
                    case "session_id": session = Text(ref reader); break;
                    case "mech": mech = Text(ref reader); break;
                    case "success": success = Bool(ref reader); break;
                    case "policy_reject": policyReject = Bool(ref reader) == true; break;
                    case "tls": tls = Bool(ref reader) == true; break;
                }
            }

            // Drain to the end: a document cut short or with trailing garbage is malformed.
            while (reader.Read())
            {
            }
        }
        catch (JsonException ex)
        {
            error = "malformed JSON: " + ex.Message;
            return false;
        }

        request = new DovecotRequest
        {
            Command = command, Login = login, Remote = remote, PasswordHash = pwhash, PasswordTag = pwtag, Protocol = protocol,
            SessionId = session, Mechanism = mech, Success = success, PolicyReject = policyReject, Tls = tls,
        };
        return true;
    }

    private static string Text(ref Utf8JsonReader reader) => reader.TokenType switch
    {
        JsonTokenType.String => Clip(reader.GetString() ?? ""),
        JsonTokenType.Number or JsonTokenType.True or JsonTokenType.False => Encoding.UTF8.GetString(reader.ValueSpan),
        _ => "",
    };

    private static bool? Bool(ref Utf8JsonReader reader) => reader.TokenType switch
    {
        JsonTokenType.True => true,
        JsonTokenType.False => false,
        JsonTokenType.String => reader.GetString() is "true" or "yes" or "1",
        _ => null,
    };

    private static string Clip(string value) => value.Length <= 512 ? value : value[..512];
}

/// <summary>What the engine answers Dovecot: <c>status</c> (negative: reject, 0: allow, positive: delay so many seconds) and <c>msg</c>.</summary>
internal readonly record struct DovecotAnswer(int Status, string Message)
{
    public static DovecotAnswer Allow { get; } = new(0, "");
}

/// <summary>
/// Dovecot's logins by the listener's AUTH rules. <c>allow</c> is the part of AUTH before the password:
/// the limit book's lock, the burned password, a tarpit (status -1 with the reason, or a positive delay);
/// it is asked again after a correct password and answers the same. <c>report</c> is the outcome, which
/// goes back into the limit book (a failure may lock the address, its network, the account; a
/// password failing against too many accounts is burned) and becomes the AUTH event. A refusal by the
/// engine itself is not a failed attempt, as on the listener. The password never reaches the engine:
/// only Dovecot's digests of it, turned at once into a keyed in-memory tag.
/// </summary>
internal sealed class DovecotPolicy
{
    // Logins asked about (allow) and not yet reported, so that both carry one session id when Dovecot
    // sends none (Postfix's SASL logins): by address, login and password hash; a few seconds at most.
    private readonly ConcurrentDictionary<(AddressKey, string, string), (ulong Id, long At, bool Verified)> _open = new();
    private readonly PolicyEngine _engine;

    public DovecotPolicy(PolicyEngine engine) => _engine = engine;

    public DovecotAnswer Decide(DovecotRequest request)
    {
        if (!IPAddress.TryParse(request.Remote, out var remote) || request.Login.Length == 0)
        {
            return DovecotAnswer.Allow; // no client address (a local login) or no name: nothing to count it against
        }

        var (id, verified) = SessionId(remote, request);
        var session = new DovecotSession(_engine, remote, request, id);
        var tag = Tag(request);
        var smtp = request.Protocol.Equals("smtp", StringComparison.OrdinalIgnoreCase);
        if (request.Command == "allow")
        {
            if (verified && smtp)
            {
                // Asked again after a correct password, before Postfix answers 235: the message that follows is this SMTP session.
                _engine.Sessions.LoggedIn(remote, session.Id);
            }

            var refused = _engine.Rules.AuthPolicy(session, request.Login, tag);
            if (refused is { } reply)
            {
                return new DovecotAnswer(-1, reply.Text);
            }

            var delay = session.TakeDelay();
            return delay > TimeSpan.Zero ? new DovecotAnswer((int)Math.Ceiling(delay.TotalSeconds), "") : DovecotAnswer.Allow;
        }

        session.AuthUser = AccountName.Normalize(request.Login);
        session.SecretTag = tag;
        if (request.Success == true)
        {
            _engine.Rules.AuthOutcome(session, tag, CredentialCheck.Ok);
            session.Emit(EventKind.Auth, EventOutcome.Ok, 235, "2.7.0", Detail("ok", request));
            if (smtp && !verified)
            {
                _engine.Sessions.LoggedIn(remote, session.Id); // no check after the password (auth_policy_check_after_auth = no)
            }
        }
        else if (request.PolicyReject)
        {
            // Refused before (or despite) the password: the engine's own decision, already recorded as a throttle.
            session.Emit(EventKind.Auth, EventOutcome.TempFail, 454, "4.7.0", Detail("refused by policy", request));
        }
        else if (request.Success == false)
        {
            var outcome = _engine.Rules.AuthOutcome(session, tag, CredentialCheck.BadPassword);
            session.Emit(EventKind.Auth, EventOutcome.Reject, 535, "5.7.8", Detail(outcome.Reason, request));
        }

        return DovecotAnswer.Allow;
    }

    /// <summary>
    /// Dovecot's own session id when it sends one; else the id given at this login's first allow, kept
    /// until its report. <c>Verified</c>: this login was asked about a second time, which Dovecot does
    /// only after a correct password.
    /// </summary>
    private (ulong Id, bool Verified) SessionId(IPAddress remote, DovecotRequest request)
    {
        var key = (AddressKey.Of(AddressKey.Unmap(remote)), request.Login, request.PasswordHash);
        var now = _engine.Time.GetTimestamp();
        var fresh = _open.TryGetValue(key, out var open) && _engine.Time.GetElapsedTime(open.At, now) < OpenLogin;
        if (request.Command == "report")
        {
            _open.TryRemove(key, out _);
            return (request.SessionId.Length > 0 ? StableId(request.SessionId) : fresh ? open.Id : PolicyEngine.NewSessionId(), fresh && open.Verified);
        }

        if (fresh)
        {
            _open[key] = open with { Verified = true };
            return (open.Id, true);
        }

        var id = request.SessionId.Length > 0 ? StableId(request.SessionId) : PolicyEngine.NewSessionId();
        _open[key] = (id, now, false);
        if (_open.Count > 10_000)
        {
            foreach (var (k, v) in _open)
            {
                if (_engine.Time.GetElapsedTime(v.At, now) >= OpenLogin)
                {
                    _open.TryRemove(new KeyValuePair<(AddressKey, string, string), (ulong, long, bool)>(k, v));
                }
            }
        }

        return (id, false);
    }

    private static readonly TimeSpan OpenLogin = TimeSpan.FromSeconds(30);

    private static ulong StableId(string text)
    {
        Span<byte> hash = stackalloc byte[32];
        System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(text), hash);
        return System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(hash);
    }

    /// <summary>
    /// The password's tag in the limit book: from <c>pwtag</c> (the password alone) when Dovecot sends
    /// it, else from <c>pwhash</c> (bound to the login: one account's repeated passwords only).
    /// </summary>
    private ulong Tag(DovecotRequest request) =>
        request.PasswordTag.Length > 0 ? _engine.Rules.TagOf("dovecot-pwtag\0" + request.PasswordTag)
        : request.PasswordHash.Length > 0 ? _engine.Rules.TagOf("dovecot-pwhash\0" + request.PasswordHash)
        : 0;

    private static string Detail(string reason, DovecotRequest request) =>
        request.Protocol.Length > 0 ? reason + " (" + request.Protocol + (request.Tls ? ", tls" : "") + ")" : reason;

    /// <summary>One login attempt as the rules see a session: its address, its account, its throttle events.</summary>
    private sealed class DovecotSession : IRuleSession
    {
        private readonly PolicyEngine _engine;
        private readonly DovecotRequest _request;
        private TimeSpan _delay;

        public DovecotSession(PolicyEngine engine, IPAddress remote, DovecotRequest request, ulong id)
        {
            _engine = engine;
            _request = request;
            ClientIp = AddressKey.Unmap(remote);
            Address = AddressKey.Of(ClientIp);
            Id = id;
        }

        public ulong Id { get; }

        public ListenerRole Role => ListenerRole.Submission;

        /// <summary>A login has no transaction.</summary>
        public string Sender => "";

        public IPAddress ClientIp { get; }

        public AddressKey Address { get; }

        public string User => "";

        public string AuthUser { get; set; } = "";

        public ulong SecretTag { get; set; }

        public int AcceptedRecipients => 0;

        public int KnownRecipients { get; set; }

        public int UnknownRecipients { get; set; }

        public TimeSpan TarpitEachReply { get; set; }

        public void DelayNextReply(TimeSpan delay) => _delay += delay;

        public TimeSpan TakeDelay() => _delay;

        public void Throttle(int code, string status, string detail, TimeSpan delay, string user = "") =>
            Emit(EventKind.Throttle, code >= 500 ? EventOutcome.Reject : code >= 400 ? EventOutcome.TempFail : EventOutcome.None,
                (ushort)code, status, detail, PostfixSession.Ms(delay), user);

        public void Emit(EventKind kind, EventOutcome outcome, ushort reply, string status, string detail, uint durationMs = 0, string? user = null) =>
            _engine.Events.Publish(new SmtpEvent
            {
                Timestamp = _engine.Time.GetUtcNow(),
                Node = _engine.Options.DovecotNode,
                Role = Role,
                SessionId = Id,
                Kind = kind,
                ClientIp = ClientIp,
                User = user is { Length: > 0 } ? user : AuthUser,
                Mechanism = _request.Mechanism.ToUpperInvariant(),
                Outcome = outcome,
                ReplyCode = reply,
                Status = status,
                DurationMs = durationMs,
                Detail = detail,
                SecretTag = kind == EventKind.Auth ? SecretTag : 0,
            });
    }
}
