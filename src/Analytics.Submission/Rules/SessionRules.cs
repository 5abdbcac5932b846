using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using Analytics.Events;
using Analytics.Limits;

namespace Analytics.Submission.Rules;

/// <summary>
/// A refusal: the reply code, its enhanced status, the wire text after the status, and the reason the
/// command's event records. With a <see cref="CloseReason"/> the server ends the session after it, and
/// the close event says why.
/// </summary>
public readonly record struct RuleReply(ushort Code, string Status, string Text, string Reason, string? CloseReason = null)
{
    public bool Closes => CloseReason is not null;

    /// <summary>Status and text as they follow the code on the wire.</summary>
    public string StatusAndText => Status + " " + Text;
}

/// <summary>Why a password check failed (the event records it; the client only ever sees 535).</summary>
public enum CredentialCheck
{
    Ok,
    UnknownUser,
    BadPassword,
    Disabled,

    /// <summary>No hashing slot in time (many AUTH attempts at once): try again later, not a failure.</summary>
    Busy,
}

/// <summary>Checks a password against the accounts (the listener's directory; the simulated world's accounts).</summary>
public interface ICredentialVerifier
{
    /// <param name="user">The canonical account name (<see cref="AccountName"/>).</param>
    /// <param name="ownersNetwork">The login comes from a network the account used lately: it may go ahead of others.</param>
    ValueTask<CredentialCheck> VerifyAsync(string user, string password, bool ownersNetwork, CancellationToken cancellationToken);
}

/// <summary>The local domains and mailboxes (the listener's directory; the simulated world's).</summary>
public interface IRecipientLookup
{
    /// <param name="domain">Lower-case ASCII, no trailing dot.</param>
    bool IsLocalDomain(string domain);

    /// <param name="address">Normalised (<see cref="RecipientStore.NormalizeAddress"/>).</param>
    bool HasMailbox(string address);
}

/// <summary>
/// A session as the rules see it: who it is, what it has done so far in this message, and where
/// the rules record what they did. The listener's <c>SessionState</c> and the simulator's emulated
/// session both implement it, so both play by <see cref="SessionRules"/>.
/// </summary>
public interface IRuleSession
{
    ListenerRole Role { get; }

    IPAddress ClientIp { get; }

    /// <summary>The client address, keyed once per session.</summary>
    AddressKey Address { get; }

    /// <summary>The session's limit lookups, kept between commands (null: looked up on every check).</summary>
    LimitCache? LimitCache => null;

    /// <summary>The authenticated account (canonical), empty before AUTH succeeds.</summary>
    string User { get; }

    /// <summary>The account named by the AUTH in progress (canonical).</summary>
    string AuthUser { get; set; }

    /// <summary>The keyed tag of the password of the AUTH in progress (<see cref="SessionRules.TagOf"/>), for its event; 0 when none.</summary>
    ulong SecretTag { get; set; }

    /// <summary>The MAIL FROM address of the transaction under way: empty for the null sender (bounces, callouts).</summary>
    string Sender { get; }

    /// <summary>Recipients accepted in the message under way.</summary>
    int AcceptedRecipients { get; }

    /// <summary>Unknown-mailbox rejections in this session.</summary>
    int UnknownRecipients { get; set; }

    /// <summary>Recipients accepted in this session, over all its messages (the rules count them).</summary>
    int KnownRecipients { get; set; }

    /// <summary>Delay added to every reply from now on (the unknown-recipient tarpit).</summary>
    TimeSpan TarpitEachReply { get; set; }

    /// <summary>Delays the next reply (a limit's tarpit).</summary>
    void DelayNextReply(TimeSpan delay);

    /// <summary>Records that the server acted on the session (a throttle event).</summary>
    void Throttle(int code, string status, string detail, TimeSpan delay, string user = "");
}

/// <summary>What AUTH came to: accepted, or the refusal to send.</summary>
public readonly record struct AuthResult(bool Accepted, RuleReply Reply, string Reason)
{
    /// <summary>Refused by policy before the password was looked at: not a failed attempt.</summary>
    public bool RefusedByPolicy => !Accepted && Reply.Code == 454;
}

/// <summary>
/// The session rules — what the server answers and decides at connect, AUTH, MAIL, RCPT and DATA —
/// in one place, for the listener and for the simulator's emulator alike. Each method returns null
/// (or an accepted result) when the command goes on, else the refusal; limits, holds and locks are
/// recorded in the <see cref="ILimitBook"/> and throttle events through the session as they happen.
/// </summary>
public sealed class SessionRules
{
    private readonly SessionLimitOptions _session;
    private readonly FastPathOptions _fastPath;
    private readonly ILimitBook _book;
    private readonly IRecipientLookup _recipients;
    private readonly ICredentialVerifier _credentials;

    // Key of the password tags: random per instance, so a tag means nothing outside this process's memory
    // (a simulator passes its own, so that one seed gives the same events).
    private readonly byte[] _tagKey;

    public SessionRules(LimitsOptions limits, ILimitBook book, IRecipientLookup recipients, ICredentialVerifier credentials, byte[]? tagKey = null)
    {
        _tagKey = tagKey ?? RandomNumberGenerator.GetBytes(32);
        _session = limits.Session;
        _fastPath = limits.FastPath;
        _book = book;
        _recipients = recipients;
        _credentials = credentials;
    }

    public ILimitBook Book => _book;

    /// <summary>
    /// Before the greeting (after the connection gate): the limit book's verdict on the address.
    /// <paramref name="admitted"/> runs when the session goes on, before any tarpit is recorded.
    /// </summary>
    public RuleReply? Connect(IRuleSession session, Action? admitted = null)
    {
        var decision = _book.CheckConnect(new LimitSubject(session.Address, "") { Cache = session.LimitCache });
        if (decision.Action == LimitAction.Allow)
        {
            admitted?.Invoke();
            ApplyTarpit(session, decision);
            return null;
        }

        return decision.Action == LimitAction.Block
            ? new RuleReply(554, "5.7.1", "Connection refused by policy", decision.Reason, decision.Reason)
            : new RuleReply(421, "4.7.0", "Try again later", decision.Reason, decision.Reason);
    }

    /// <summary>
    /// AUTH with a decoded user and password: the limit book first (<see cref="AuthPolicy"/>: a locked
    /// address, network or account, a burned password: 454 without hashing anything), then the password,
    /// then the outcome back into the book (<see cref="AuthOutcome"/>), which may lock the address, its
    /// network or the account.
    /// </summary>
    public async ValueTask<AuthResult> AuthAsync(IRuleSession session, string user, string password, CancellationToken cancellationToken = default)
    {
        if (session.Role != ListenerRole.Submission)
        {
            return new AuthResult(false, new RuleReply(503, "5.5.1", "AUTH not available on this service", "auth not offered on mx"), "auth not offered on mx");
        }

        var tag = TagOf(password);
        if (AuthPolicy(session, user, tag) is { } refused)
        {
            return new AuthResult(false, refused, refused.Reason);
        }

        var subject = new LimitSubject(session.Address, session.AuthUser) { SecretTag = tag, Cache = session.LimitCache };
        var check = await _credentials.VerifyAsync(session.AuthUser, password, _book.IsOwnersNetwork(subject), cancellationToken);
        if (check == CredentialCheck.Busy)
        {
            session.Throttle(454, "4.7.0", "auth refused: busy hashing other attempts", TimeSpan.Zero, session.AuthUser);
            return new AuthResult(false, new RuleReply(454, "4.7.0", "Temporary authentication failure, try again later", "busy"), "busy");
        }

        return AuthOutcome(session, tag, check);
    }

    /// <summary>
    /// The limit book's part of AUTH, before any password is looked at: null when the attempt may go on,
    /// else the 454 refusal (and its throttle event). Also where another server's AUTH is asked about
    /// (Dovecot's auth policy, before it checks the password); <paramref name="secretTag"/> is
    /// <see cref="LimitSubject.SecretTag"/> (0 when the password is not known in any form).
    /// </summary>
    public RuleReply? AuthPolicy(IRuleSession session, string user, ulong secretTag)
    {
        session.AuthUser = AccountName.Normalize(user);
        session.SecretTag = secretTag;
        var decision = _book.CheckAuth(new LimitSubject(session.Address, session.AuthUser) { SecretTag = secretTag, Cache = session.LimitCache });
        ApplyTarpit(session, decision);
        if (decision.Action == LimitAction.Allow)
        {
            return null;
        }

        session.Throttle(454, "4.7.0", "auth refused: " + decision.Reason, decision.Tarpit, session.AuthUser);
        return new RuleReply(454, "4.7.0", "Temporary authentication failure, try again later", decision.Reason);
    }

    /// <summary>
    /// What a password check came to, recorded in the limit book (a success clears the account's
    /// failures; a failure may lock the address, its network or the account, and burn the password):
    /// after <see cref="AuthAsync"/>'s own check, or another server's (Dovecot's report).
    /// </summary>
    public AuthResult AuthOutcome(IRuleSession session, ulong secretTag, CredentialCheck check)
    {
        var subject = new LimitSubject(session.Address, session.AuthUser) { SecretTag = secretTag, Cache = session.LimitCache };
        if (check == CredentialCheck.Ok)
        {
            _book.RecordAuthSuccess(subject);
            return new AuthResult(true, default, "ok");
        }

        var reason = check switch
        {
            CredentialCheck.UnknownUser => "unknown user",
            CredentialCheck.Disabled => "account disabled",
            _ => "bad password",
        };
        RecordFailure(session, subject);
        return new AuthResult(false, new RuleReply(535, "5.7.8", "Authentication credentials invalid", reason), reason);
    }

    /// <summary>An AUTH exchange that could not be decoded: a failed attempt without a password to check.</summary>
    public AuthResult MalformedAuth(IRuleSession session, string? user)
    {
        session.AuthUser = user is null ? "" : AccountName.Normalize(user);
        RecordFailure(session, new LimitSubject(session.Address, session.AuthUser) { Cache = session.LimitCache });
        return new AuthResult(false, new RuleReply(535, "5.7.8", "Authentication credentials invalid", "malformed response"), "malformed response");
    }

    /// <summary>MAIL FROM with the size the client declared (0 when none).</summary>
    public RuleReply? Mail(IRuleSession session, long declaredSize)
    {
        if (session.Role == ListenerRole.Submission && session.User.Length == 0)
        {
            return new RuleReply(530, "5.7.0", "Authentication required", "Authentication required");
        }

        if (declaredSize > _session.MaxMessageSize)
        {
            return new RuleReply(552, "5.3.4", "Message size exceeds fixed maximum message size", "Message size exceeds fixed maximum message size");
        }

        return Enforce(session, _book.CheckMail(Subject(session)), "mail");
    }

    /// <summary>
    /// RCPT TO: recipients per message, then where the address goes — a local domain must have the
    /// mailbox (550 5.1.1, counted within the session and across sessions: tarpit, disconnect, hold),
    /// any other domain is relayed for an authenticated submission user and refused on the MX — then
    /// the account's and the address's limits.
    /// </summary>
    public RuleReply? Rcpt(IRuleSession session, string address, string host)
    {
        if (session.AcceptedRecipients >= _session.MaxRecipientsPerMessage)
        {
            return TooManyRecipients;
        }

        var domain = RecipientStore.NormalizeDomain(host);
        var normalized = RecipientStore.NormalizeAddress(address);
        if (domain is null || normalized is null)
        {
            return new RuleReply(501, "5.1.3", "Bad recipient address syntax", "invalid address");
        }

        if (_recipients.IsLocalDomain(domain))
        {
            if (!_recipients.HasMailbox(normalized))
            {
                return UnknownRecipient(session);
            }
        }
        else if (session.Role == ListenerRole.Mx || session.User.Length == 0)
        {
            // On submission the second test is unreachable while AUTH comes before MAIL; kept so that is never an open relay.
            return new RuleReply(554, "5.7.1", "Relay access denied", "relay denied");
        }

        if (Enforce(session, _book.CheckRcpt(Subject(session), session.AcceptedRecipients), "rcpt") is { } refused)
        {
            return refused;
        }

        session.KnownRecipients++;
        _book.RecordKnownRecipient(Subject(session));
        return null;
    }

    /// <summary>
    /// RCPT TO for an address another server has already found acceptable (Postfix, which asks through
    /// policy delegation once its own recipient checks passed): recipients per message, then the
    /// account's and the address's limits, counted and remembered as <see cref="Rcpt"/> does an acceptable recipient.
    /// </summary>
    public RuleReply? AcceptedRcpt(IRuleSession session)
    {
        if (session.AcceptedRecipients >= _session.MaxRecipientsPerMessage)
        {
            return TooManyRecipients;
        }

        if (Enforce(session, _book.CheckRcpt(Subject(session), session.AcceptedRecipients), "rcpt") is { } refused)
        {
            return refused;
        }

        session.KnownRecipients++;
        _book.RecordKnownRecipient(Subject(session));
        return null;
    }

    /// <summary>A message accepted (250 after DATA) for <paramref name="recipients"/> recipients: the sender's record of real mail.</summary>
    public void Delivered(IRuleSession session, int recipients) => _book.RecordDelivery(Subject(session), recipients);

    /// <summary>DATA, with the size of the message received.</summary>
    public RuleReply? Data(long size) =>
        size > _session.MaxMessageSize
            ? new RuleReply(552, "5.3.4", "Message size exceeds fixed maximum message size", "Message size exceeds fixed maximum message size")
            : null;

    /// <summary>A keyed hash of an AUTH password for the spraying defense (<see cref="LimitSubject.SecretTag"/>); never stored.</summary>
    public ulong TagOf(string password)
    {
        Span<byte> hash = stackalloc byte[32];
        HMACSHA256.HashData(_tagKey, Encoding.UTF8.GetBytes(password), hash);
        return Math.Max(1UL, System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(hash));
    }

    /// <summary>
    /// A RCPT for a local address without a mailbox (550 5.1.1), counted within the session (tarpit, then
    /// disconnect) and across sessions (hold): from <see cref="Rcpt"/>, or from another server's log
    /// (Postfix's "User unknown" rejections). Returns the reply the listener sends: 550, or 421 and close.
    /// </summary>
    public RuleReply UnknownRecipient(IRuleSession session)
    {
        session.UnknownRecipients++;

        // A bounce or a sender-verification callout on the MX — the null sender, the session's one
        // recipient — names an address a spammer forged in a local domain (a joe job), not one the client
        // guessed: refused, and counted in the session, but it holds nobody across sessions. Other
        // providers' MTAs send those in bursts while a joe job lasts. A prober that takes this shape pays
        // a connection per guess, and the model still sees each one (unknown recipients, null senders).
        if (session.Role == ListenerRole.Mx && session.Sender.Length == 0 && session.UnknownRecipients + session.KnownRecipients == 1)
        {
            return UnknownMailbox;
        }

        // Across sessions: a bot that reconnects after every disconnect, or spreads its names over
        // many addresses, is held as a whole (IP, network, account) for a few minutes.
        var hold = _book.RecordUnknownRecipient(Subject(session));
        if (hold.Held)
        {
            session.Throttle(421, "4.7.0", hold.Duration > TimeSpan.Zero
                ? string.Create(CultureInfo.InvariantCulture, $"hold {hold.Scope} for {hold.Duration} after unknown recipients")
                : "disconnect: " + hold.Scope, session.TarpitEachReply);
            return new RuleReply(421, "4.7.0", "Too many invalid recipients, try again later", "unknown mailbox; hold", "unknown recipients (hold)");
        }

        // Within the session, unknown recipients count only while they are a large share of its
        // recipients and of what the sender delivered lately: a list server's few stale addresses among
        // hundreds are not probing, even when they come first in its list.
        if (session.UnknownRecipients < _fastPath.UnknownRecipientShare * (session.UnknownRecipients + session.KnownRecipients + _book.DeliveredCredit(Subject(session))))
        {
            return UnknownMailbox;
        }

        if (session.UnknownRecipients >= _fastPath.UnknownRecipientsBeforeDisconnect)
        {
            session.Throttle(421, "4.7.0", string.Create(CultureInfo.InvariantCulture,
                $"disconnect after {session.UnknownRecipients} unknown recipients"), session.TarpitEachReply);
            return new RuleReply(421, "4.7.0", "Too many invalid recipients, closing connection", "unknown mailbox; disconnect", "unknown recipients");
        }

        if (session.UnknownRecipients >= _fastPath.UnknownRecipientsBeforeTarpit && session.TarpitEachReply == TimeSpan.Zero && _fastPath.TarpitDelay > TimeSpan.Zero)
        {
            session.TarpitEachReply = _fastPath.TarpitDelay;
            session.Throttle(550, "5.1.1", string.Create(CultureInfo.InvariantCulture,
                $"tarpit after {session.UnknownRecipients} unknown recipients"), _fastPath.TarpitDelay);
        }

        return UnknownMailbox;
    }

    private static readonly RuleReply TooManyRecipients = new(452, "4.5.3", "Too many recipients", "too many recipients");

    private static readonly RuleReply UnknownMailbox = new(550, "5.1.1", "Mailbox unknown", "unknown mailbox");

    private void RecordFailure(IRuleSession session, LimitSubject subject)
    {
        var outcome = _book.RecordAuthFailure(subject);
        if (outcome.IpLocked)
        {
            session.Throttle(454, "4.7.0", $"lock ip {session.ClientIp} for {outcome.LockDuration}", TimeSpan.Zero, session.AuthUser);
        }

        if (outcome.UserLocked)
        {
            session.Throttle(454, "4.7.0", $"lock user for {outcome.LockDuration}", TimeSpan.Zero, session.AuthUser);
        }

        if (outcome.NetworkLocked)
        {
            session.Throttle(454, "4.7.0", $"lock network of {session.ClientIp} for {outcome.LockDuration}", TimeSpan.Zero, session.AuthUser);
        }

        if (outcome.AccountLocked)
        {
            session.Throttle(454, "4.7.0", $"lock user everywhere but its owner's networks for {outcome.LockDuration}", TimeSpan.Zero, session.AuthUser);
        }

        if (outcome.PasswordBurned)
        {
            session.Throttle(454, "4.7.0", "refuse a password tried against too many accounts", TimeSpan.Zero, session.AuthUser);
        }
    }

    private static LimitSubject Subject(IRuleSession session) => new(session.Address, session.User.Length > 0 ? session.User : session.AuthUser) { Cache = session.LimitCache };

    /// <summary>A limit's refusal (and any tarpit) for MAIL or RCPT.</summary>
    private static RuleReply? Enforce(IRuleSession session, LimitDecision decision, string where)
    {
        ApplyTarpit(session, decision);
        var (code, status, text) = decision.Action switch
        {
            LimitAction.Allow => ((ushort)0, "", ""),
            LimitAction.TooManyRecipients => ((ushort)452, "4.5.3", "Too many recipients"),
            LimitAction.Block => ((ushort)550, "5.7.1", "Sending refused by policy"),
            _ => ((ushort)451, "4.7.1", "Rate limit reached, try again later"),
        };
        if (code == 0)
        {
            return null;
        }

        session.Throttle(code, status, where + ": " + decision.Reason, decision.Tarpit);
        return new RuleReply(code, status, text, decision.Reason);
    }

    /// <summary>A limit book's tarpit: the reply to this command goes out that much later.</summary>
    private static void ApplyTarpit(IRuleSession session, LimitDecision decision)
    {
        if (decision.Tarpit > TimeSpan.Zero)
        {
            session.DelayNextReply(decision.Tarpit);
            if (decision.Action == LimitAction.Allow)
            {
                session.Throttle(0, "", "tarpit: " + decision.Reason, decision.Tarpit);
            }
        }
    }
}
