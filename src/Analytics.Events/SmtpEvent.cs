using System.Net;

namespace Analytics.Events;

/// <summary>Which listener a session came in on.</summary>
public enum ListenerRole : byte
{
    /// <summary>Message submission (587/465): AUTH required, relays for its users.</summary>
    Submission = 1,

    /// <summary>Inbound MX (25): no AUTH, local recipients only — where harvest bots probe.</summary>
    Mx = 2,
}

public enum EventKind : byte
{
    Connect = 1,
    Ehlo = 2,
    StartTls = 3,
    Auth = 4,
    Mail = 5,
    Rcpt = 6,
    Data = 7,
    Rset = 8,
    Invalid = 9,
    Close = 10,

    /// <summary>The server acted on the session: a limit, a tarpit, a lock.</summary>
    Throttle = 11,

    /// <summary>An attempt to hand an accepted message to its next hop, one per recipient (the queue's, not the session's).</summary>
    Delivery = 12,
}

public enum EventOutcome : byte
{
    None = 0,
    Ok = 1,

    /// <summary>A permanent (5xx) refusal.</summary>
    Reject = 2,

    /// <summary>A temporary (4xx) refusal.</summary>
    TempFail = 3,

    /// <summary>A protocol or server error.</summary>
    Error = 4,
}

/// <summary>
/// One thing that happened in an SMTP session. The same record is written by the listener and by
/// the simulator; it maps one to one onto a row of the <c>events</c> table.
/// </summary>
public sealed record SmtpEvent
{
    /// <summary>When it happened (UTC; stored with millisecond precision).</summary>
    public required DateTimeOffset Timestamp { get; init; }

    public required string Node { get; init; }

    public required ListenerRole Role { get; init; }

    public required ulong SessionId { get; init; }

    public required EventKind Kind { get; init; }

    public required IPAddress ClientIp { get; init; }

    public ushort ClientPort { get; init; }

    /// <summary>The user as given in AUTH (even when AUTH failed), else the authenticated user; empty when none.</summary>
    public string User { get; init; } = "";

    /// <summary>AUTH mechanism (PLAIN, LOGIN), or TLS protocol for STARTTLS/connect.</summary>
    public string Mechanism { get; init; } = "";

    public EventOutcome Outcome { get; init; }

    public ushort ReplyCode { get; init; }

    /// <summary>Enhanced status code (RFC 3463), e.g. 5.1.1.</summary>
    public string Status { get; init; } = "";

    public string Sender { get; init; } = "";

    public string Recipient { get; init; } = "";

    public string RecipientDomain { get; init; } = "";

    /// <summary>Message size in bytes for DATA; commands in the session for close.</summary>
    public ulong Size { get; init; }

    /// <summary>Session duration for close; time the server took (tarpit included) for others.</summary>
    public uint DurationMs { get; init; }

    /// <summary>Free text: the HELO name, why a command failed, how a session ended.</summary>
    public string Detail { get; init; } = "";

    /// <summary>
    /// AUTH: a keyed tag of the password tried (an HMAC with a key that lives only in the listener's
    /// memory), so distinct passwords per account and accounts per password can be counted without the
    /// password. Equal tags mean the same password within one run of the server. 0 otherwise.
    /// </summary>
    public ulong SecretTag { get; init; }
}
