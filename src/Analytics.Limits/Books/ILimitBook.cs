using System.Net;

namespace Analytics.Limits;

/// <summary>What an enforcement point does with a command.</summary>
public enum LimitAction
{
    /// <summary>Go on (after <see cref="LimitDecision.Tarpit"/>, if any).</summary>
    Allow,

    /// <summary>Try later: 451 4.7.1 at MAIL/RCPT, 421 4.7.0 before the greeting.</summary>
    TempFail,

    /// <summary>AUTH temporarily refused: 454 4.7.0.</summary>
    Lock,

    /// <summary>Too many recipients for one message: 452 4.5.3.</summary>
    TooManyRecipients,

    /// <summary>Refused: 554 5.7.1 before the greeting, 550 5.7.1 later.</summary>
    Block,
}

/// <summary>A limit book's answer. <see cref="Tarpit"/> delays the reply whatever the action.</summary>
public readonly record struct LimitDecision(LimitAction Action, TimeSpan Tarpit, string Reason)
{
    public static LimitDecision Allow { get; } = new(LimitAction.Allow, TimeSpan.Zero, "");

    public bool IsAllowed => Action == LimitAction.Allow;
}

/// <summary>
/// Who is asking: the client address (keyed once per session) and the account, in its canonical
/// spelling (<see cref="AccountName"/>); empty when there is none yet.
/// </summary>
public readonly record struct LimitSubject(AddressKey Address, string User)
{
    public LimitSubject(IPAddress address, string user)
        : this(AddressKey.Of(AddressKey.Unmap(address)), user)
    {
    }

    /// <summary>
    /// At AUTH: a keyed hash of the password tried (a per-process random key; never stored or logged),
    /// so one password sprayed over many accounts can be recognised without keeping it. 0 = none.
    /// </summary>
    public ulong SecretTag { get; init; }

    /// <summary>
    /// The session's <see cref="LimitCache"/>: the subject's limits are then looked up once per session
    /// (and again only when the book's limits change), not on every command. Null: looked up each time.
    /// </summary>
    public LimitCache? Cache { get; init; }
}

/// <summary>
/// What one session keeps of its subject between limit checks: the address's and the account's limits
/// as resolved against the book's current snapshot, and the account's fixed-rate buckets. Checked on
/// every use (same snapshot, same address, same account), so a stale or mismatched cache only costs a
/// fresh lookup. One per session; a session's commands are checked one at a time.
/// </summary>
public sealed class LimitCache
{
    internal object? Resolved;
    internal object? Fixed;
    internal object? Network;
}

/// <summary>What recording an AUTH failure did.</summary>
public readonly record struct AuthFailureOutcome(bool IpLocked, bool UserLocked, TimeSpan LockDuration)
{
    /// <summary>The client's network (/24, /64) is locked for AUTH: failures spread over its addresses.</summary>
    public bool NetworkLocked { get; init; }

    /// <summary>The password tried has now failed against too many accounts: AUTH with it is refused.</summary>
    public bool PasswordBurned { get; init; }

    /// <summary>The account is now locked from every network but its owner's (failures from many networks).</summary>
    public bool AccountLocked { get; init; }
}

/// <summary>What recording an unknown recipient did: nothing, or a hold on the IP, its network or the user.</summary>
public readonly record struct HoldOutcome(bool Held, string Scope, TimeSpan Duration)
{
    public static HoldOutcome None { get; } = new(false, "", TimeSpan.Zero);
}

/// <summary>
/// The limits the listener (and the emulator, and the policy services for other MTAs) enforce,
/// consulted at each enforcement point. Answers come from memory without blocking: immutable
/// snapshots read with <see cref="Volatile"/>, counters with their own small locks. It is called on
/// every command.
/// </summary>
public interface ILimitBook
{
    /// <summary>Before the greeting. Block → 554 5.7.1 and close; TempFail → 421 4.7.0 and close.</summary>
    LimitDecision CheckConnect(LimitSubject subject);

    /// <summary>Before checking credentials. Lock or Block → 454 4.7.0.</summary>
    LimitDecision CheckAuth(LimitSubject subject);

    /// <summary>At MAIL FROM (consumes one message from the account's rates). TempFail → 451 4.7.1; Block → 550 5.7.1.</summary>
    LimitDecision CheckMail(LimitSubject subject);

    /// <summary>At an acceptable RCPT TO, with the recipients already accepted in this message (consumes one from the rates).</summary>
    LimitDecision CheckRcpt(LimitSubject subject, int recipientsInMessage);

    /// <summary>A failed AUTH; may lock the IP, its network, the account from this network, or the account from every network but its owner's.</summary>
    AuthFailureOutcome RecordAuthFailure(LimitSubject subject);

    /// <summary>A successful AUTH: the account's failures from this network are cleared and the network is remembered as its owner's.</summary>
    void RecordAuthSuccess(LimitSubject subject);

    /// <summary>
    /// An unknown local recipient (550 5.1.1), counted across sessions per IP, network and account. Past
    /// a threshold the entity is held (connections 421, MAIL/RCPT 451, AUTH 454) for a few minutes;
    /// <see cref="HoldOutcome.Held"/> is also true when it was held already.
    /// </summary>
    HoldOutcome RecordUnknownRecipient(LimitSubject subject);

    /// <summary>A recipient accepted (a mailbox that exists, or relayed): weighs against the share of unknown ones.</summary>
    void RecordKnownRecipient(LimitSubject subject);

    /// <summary>A message accepted (250 after DATA) for <paramref name="recipients"/> recipients: history that vouches for the sender.</summary>
    void RecordDelivery(LimitSubject subject, int recipients);

    /// <summary>
    /// Recipients the IP or the account delivered to lately (halving every hour), up to
    /// <c>Limits:FastPath:DeliveredHistoryCredit</c>: what a session's own share of unknown recipients is
    /// weighed against besides its known ones, so a list server whose first few addresses are stale is
    /// judged on what it has delivered, as it is across sessions.
    /// </summary>
    double DeliveredCredit(LimitSubject subject);

    /// <summary>The subject's network is one its account logged in from lately (its owner's): such logins go ahead of others.</summary>
    bool IsOwnersNetwork(LimitSubject subject) => false;

    /// <summary>
    /// Networks accounts logged in from before this process started (from the store), with the first and
    /// last login from each, so owners and their long-used networks are recognised at once.
    /// </summary>
    void RememberLogins(IEnumerable<(string User, AddressKey Network, DateTime First, DateTime Last)> logins) { }
}
