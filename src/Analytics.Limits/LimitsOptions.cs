using System.ComponentModel.DataAnnotations;
using System.Globalization;
using Microsoft.Extensions.Options;

namespace Analytics.Limits;

/// <summary>
/// Every limit in one configuration section, <c>Limits</c>: what one session may do (<see cref="Session"/>),
/// fixed caps and blocks from configuration (<see cref="Fixed"/>), the defenses that act without a model
/// (<see cref="FastPath"/>) and how verdicts become limits (<see cref="Dynamic"/>). Defaults are what a
/// small single-node deployment should run with.
/// </summary>
public sealed class LimitsOptions
{
    public const string SectionName = "Limits";

    [Required]
    [ValidateObjectMembers]
    public SessionLimitOptions Session { get; set; } = new();

    [Required]
    [ValidateObjectMembers]
    public FixedLimitOptions Fixed { get; set; } = new();

    [Required]
    [ValidateObjectMembers]
    public FastPathOptions FastPath { get; set; } = new();

    [Required]
    [ValidateObjectMembers]
    public DynamicLimitOptions Dynamic { get; set; } = new();

    /// <summary>
    /// Keys read under their earlier names, each with its new one: <c>config check</c> reports them as
    /// renamed, and configuration loading maps them (a key given under its new name wins).
    /// </summary>
    public static IReadOnlyList<(string Old, string New)> RenamedSections { get; } =
    [
        ("Submission:Limits", "Limits:Session"),
        ("Submission:Policy", "Limits:Fixed"),
        ("Submission:Defenses", "Limits:FastPath"),
        ("Limits:ThrottleScore", "Limits:Dynamic:ThrottleScore"),
        ("Limits:BlockScore", "Limits:Dynamic:BlockScore"),
        ("Limits:ThrottleHold", "Limits:Dynamic:ThrottleHold"),
        ("Limits:BlockHold", "Limits:Dynamic:BlockHold"),
        ("Limits:WatchHold", "Limits:Dynamic:WatchHold"),
        ("Limits:PullInterval", "Limits:Dynamic:PullInterval"),
        ("Limits:Node", "Limits:Dynamic:Node"),
    ];
}

/// <summary>What one session and one connection may do, on every endpoint (<c>Limits:Session</c>).</summary>
public sealed class SessionLimitOptions
{
    /// <summary>Longest command line in bytes, CRLF included (RFC 5321 minimum 512). Default 4096. AUTH lines get at least 12288 (RFC 4954).</summary>
    [Range(512, 1 << 20)]
    public int MaxLineLength { get; set; } = 4096;

    /// <summary>Largest message in bytes (advertised with SIZE; 552 past it). Default 25 MiB.</summary>
    [Range(1024, int.MaxValue / 2)]
    public int MaxMessageSize { get; set; } = 25 * 1024 * 1024;

    /// <summary>
    /// Bytes of messages being received at once, across all sessions of both roles (DATA streams to the
    /// spool's disk as it arrives; this bounds what unfinished messages hold there). A message that would
    /// go past it is read to its end and refused with 452 4.3.1. Default 1 GiB.
    /// </summary>
    [Range(typeof(long), "65536", "9223372036854775807")]
    public long MaxDataInFlightBytes { get; set; } = 1L << 30;

    /// <summary>Recipients in one message (452 4.5.3 past it). Default 100 (RFC 5321's required minimum).</summary>
    [Range(1, 100_000)]
    public int MaxRecipientsPerMessage { get; set; } = 100;

    /// <summary>Commands in one session before 421 and close. Default 1000.</summary>
    [Range(10, 10_000_000)]
    public int MaxCommandsPerSession { get; set; } = 1000;

    /// <summary>AUTH failures in one session before the server closes it. Default 3.</summary>
    [Range(1, 100)]
    public int MaxAuthFailuresPerSession { get; set; } = 3;

    /// <summary>Longest session, whatever it does. Default 10 minutes.</summary>
    [Range(typeof(TimeSpan), "00:00:01", "1.00:00:00")]
    public TimeSpan SessionTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>Longest wait for the next command (RFC 5321 §4.5.3.2 suggests 5 minutes). Default 5 minutes.</summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "01:00:00")]
    public TimeSpan CommandTimeout { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// Longest wait for a command before a session has authenticated (submission) or started a
    /// transaction (MX): a connection that does nothing gives its slot back soon. Default 30 s.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "01:00:00")]
    public TimeSpan PreAuthTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Longest TLS handshake (STARTTLS or implicit TLS). Default 10 s.</summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "00:10:00")]
    public TimeSpan HandshakeTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Concurrent sessions of one role (submission, MX) over its endpoints (421 past it); each role has
    /// its own. Past 80 % of it, idle sessions before AUTH are closed after 5 s; when it is full, a new
    /// connection takes the slot of the session idle longest (2 s at least) before AUTH. Default 5000.
    /// </summary>
    [Range(1, 1_000_000)]
    public int MaxSessions { get; set; } = 5000;

    /// <summary>Concurrent sessions of one role from one client address (421 past it). Default 50, as Postfix's smtpd_client_connection_count_limit.</summary>
    [Range(1, 1_000_000)]
    public int MaxSessionsPerIp { get; set; } = 50;

    /// <summary>Concurrent sessions of one role from one network, IPv4 /24 or IPv6 /64 (421 past it). Default 200.</summary>
    [Range(1, 1_000_000)]
    public int MaxSessionsPerNetwork { get; set; } = 200;

    /// <summary>On shutdown, how long transactions in flight may take to finish. Default 30 s.</summary>
    [Range(typeof(TimeSpan), "00:00:00", "00:10:00")]
    public TimeSpan ShutdownDeadline { get; set; } = TimeSpan.FromSeconds(30);
}

/// <summary>Caps and blocks an operator sets by hand, before and beside the model (<c>Limits:Fixed</c>).</summary>
public sealed class FixedLimitOptions
{
    /// <summary>Client addresses or CIDR networks refused before the greeting (554 5.7.1). Default none.</summary>
    public List<string> BlockedNetworks { get; set; } = [];

    /// <summary>Accounts refused at AUTH (454 4.7.0) and MAIL (550 5.7.1). Default none.</summary>
    public List<string> BlockedUsers { get; set; } = [];

    /// <summary>Messages one account may start per minute (451 4.7.1 past it); 0 = unlimited. Default 0.</summary>
    [Range(0, 1_000_000)]
    public int MessagesPerMinute { get; set; }

    /// <summary>Recipients one account may add per hour (451 4.7.1 past it); 0 = unlimited. Default 0.</summary>
    [Range(0, 100_000_000)]
    public int RecipientsPerHour { get; set; }
}

/// <summary>Defenses that need no model and act at once, inside a session and across sessions (<c>Limits:FastPath</c>).</summary>
public sealed class FastPathOptions
{
    /// <summary>
    /// Unknown-recipient (550 5.1.1) rejections in one session after which every reply is tarpitted,
    /// when they are also <see cref="UnknownRecipientShare"/> of the session's recipients. Default 3.
    /// </summary>
    [Range(1, 10_000)]
    public int UnknownRecipientsBeforeTarpit { get; set; } = 3;

    /// <summary>Unknown-recipient rejections in one session after which the server answers 421 4.7.0 and closes (with the same share). Default 10.</summary>
    [Range(1, 10_000)]
    public int UnknownRecipientsBeforeDisconnect { get; set; } = 10;

    /// <summary>
    /// Share of the recipients tried that must be unknown mailboxes before unknown recipients tarpit or
    /// close a session or hold an entity: a harvester's guesses are mostly unknown, a list server's
    /// stale addresses are a few in a hundred. Within a session the share is of the session's
    /// recipients; across sessions it is of the entity's recipients in <see cref="UnknownRecipientWindow"/>
    /// plus its recent deliveries (<see cref="DeliveredHistoryCredit"/>). Default 0.5.
    /// </summary>
    [Range(0.0, 1.0)]
    public double UnknownRecipientShare { get; set; } = 0.5;

    /// <summary>
    /// Recipients of the mail an IP, network or account delivered lately — a count that halves every six
    /// hours — counted, up to this many, as known recipients when the share of its unknown ones is
    /// judged: a sender with a record of real mail needs more unknown recipients to be held, a new one
    /// is judged on what it does. 0 turns history off. Default 50.
    /// </summary>
    [Range(0, 1_000_000)]
    public int DeliveredHistoryCredit { get; set; } = 50;

    /// <summary>Delay added to a tarpitted reply. Default 2 s.</summary>
    [Range(typeof(TimeSpan), "00:00:00", "00:05:00")]
    public TimeSpan TarpitDelay { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>AUTH failures from one IP within <see cref="AuthFailureWindow"/> that lock the IP, when they are also <see cref="AuthFailureShare"/> of its AUTH attempts. Default 10.</summary>
    [Range(1, 100_000)]
    public int AuthFailuresPerIp { get; set; } = 10;

    /// <summary>
    /// Distinct wrong passwords (compared as keyed hashes in memory) against one account from one network
    /// (/24, /64) within <see cref="AuthFailureWindow"/> that lock AUTH to that account from that network —
    /// never from its owner's networks. A client retrying one stale password is not guessing. Default 5.
    /// </summary>
    [Range(1, 100_000)]
    public int AuthFailuresPerUser { get; set; } = 5;

    /// <summary>
    /// Share of an IP's or network's AUTH attempts in the window that must have failed before its
    /// failures lock it: an office or a carrier NAT where hundreds log in, a few with typos, stays open;
    /// a guesser's attempts nearly all fail. Default 0.5.
    /// </summary>
    [Range(0.0, 1.0)]
    public double AuthFailureShare { get; set; } = 0.5;

    /// <summary>
    /// AUTH failures against one account, over all networks, within <see cref="AuthFailureWindow"/> that
    /// lock the account everywhere except the networks its owner logged in from recently
    /// (<see cref="KnownNetworkTtl"/>): distributed guessing. Default 20.
    /// </summary>
    [Range(2, 1_000_000)]
    public int AuthFailuresPerUserAcrossNetworks { get; set; } = 20;

    /// <summary>How long a network an account logged in from counts as its owner's. Default 30 days.</summary>
    [Range(typeof(TimeSpan), "00:01:00", "365.00:00:00")]
    public TimeSpan KnownNetworkTtl { get; set; } = TimeSpan.FromDays(30);

    /// <summary>
    /// Messages per minute (and at once) an account may start from a network it first logged in from less
    /// than <see cref="NewNetworkPeriod"/> ago, when it has an older network of its own (451 4.7.1 past
    /// it): a taken-over account's burst from the attacker's address is held at once, before any scoring
    /// pass, while its owner on a trip, or with a new phone, still sends as a person does. All of the
    /// account's new networks share the rate; an account without an older network (a new one, a fresh
    /// install without history) is not judged by it. 0 = off. Default 10.
    /// </summary>
    [Range(0, 1_000_000)]
    public int NewNetworkMessagesPerMinute { get; set; } = 10;

    /// <summary>How long after an account's first login from a network the network counts as its own (no longer new). Default 1 day.</summary>
    [Range(typeof(TimeSpan), "00:01:00", "365.00:00:00")]
    public TimeSpan NewNetworkPeriod { get; set; } = TimeSpan.FromDays(1);

    /// <summary>Window the failures are counted in. Default 10 minutes.</summary>
    [Range(typeof(TimeSpan), "00:00:01", "7.00:00:00")]
    public TimeSpan AuthFailureWindow { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>First lock duration; each further lock of the same IP or user doubles it. Default 1 minute.</summary>
    [Range(typeof(TimeSpan), "00:00:00.001", "1.00:00:00")]
    public TimeSpan LockoutBase { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>
    /// AUTH failures from one network (IPv4 /24, IPv6 /64) within <see cref="AuthFailureWindow"/> that
    /// lock AUTH from the whole network (with the same share): stuffing spreads a few attempts over many
    /// addresses of a handful of networks, under every per-IP threshold. Default 10.
    /// </summary>
    [Range(1, 100_000)]
    public int AuthFailuresPerNetwork { get; set; } = 10;

    /// <summary>
    /// Distinct accounts one password may fail against within <see cref="AuthFailureWindow"/> before
    /// AUTH with that password is refused (454) from anywhere: password spraying. Passwords are only
    /// compared as keyed hashes held in memory. Default 3.
    /// </summary>
    [Range(2, 100_000)]
    public int SprayAccountsPerPassword { get; set; } = 3;

    /// <summary>Unknown-recipient rejections from one IP, over all its sessions within <see cref="UnknownRecipientWindow"/>, that hold the IP (with <see cref="UnknownRecipientShare"/>). Default 8.</summary>
    [Range(1, 100_000)]
    public int UnknownRecipientsPerIp { get; set; } = 8;

    /// <summary>Unknown-recipient rejections from one network (/24, /64) within the window that hold the network (distributed harvesting). Default 12.</summary>
    [Range(1, 100_000)]
    public int UnknownRecipientsPerNetwork { get; set; } = 12;

    /// <summary>
    /// Unknown-recipient rejections by one authenticated user within the window that hold the user (with
    /// the same share and history credit). An account's own mail seldom names a local mailbox that does
    /// not exist; one that probes the directory through submission is a harvester holding a password.
    /// Default 5.
    /// </summary>
    [Range(1, 100_000)]
    public int UnknownRecipientsPerUser { get; set; } = 5;

    /// <summary>Window the unknown recipients are counted in. Default 10 minutes.</summary>
    [Range(typeof(TimeSpan), "00:00:01", "7.00:00:00")]
    public TimeSpan UnknownRecipientWindow { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>
    /// First hold after unknown-recipient probing (connections 421 4.7.0, MAIL/RCPT 451 4.7.1, AUTH
    /// 454: temporary, so a real MTA retries later); each further hold of the same entity doubles it
    /// up to <see cref="LockoutMax"/>. Default 5 minutes.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:00.001", "1.00:00:00")]
    public TimeSpan HoldDuration { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>Longest lock. Default 1 hour.</summary>
    [Range(typeof(TimeSpan), "00:00:00.001", "30.00:00:00")]
    public TimeSpan LockoutMax { get; set; } = TimeSpan.FromHours(1);
}

/// <summary>How verdicts become limits (<c>Limits:Dynamic</c>).</summary>
public sealed class DynamicLimitOptions
{
    /// <summary>A flagged verdict at or above this score throttles. Default 0.5.</summary>
    [Range(0.0, 1.0)]
    public double ThrottleScore { get; set; } = 0.5;

    /// <summary>At or above this score (or a repeat offence), block. Default 0.85.</summary>
    [Range(0.0, 1.0)]
    public double BlockScore { get; set; } = 0.85;

    /// <summary>How long a throttle holds without a new flag before stepping down. Default 15 min.</summary>
    [Range(typeof(TimeSpan), "00:00:10", "7.00:00:00")]
    public TimeSpan ThrottleHold { get; set; } = TimeSpan.FromMinutes(15);

    /// <summary>How long a block holds without a new flag before stepping down to throttle. Default 1 h.</summary>
    [Range(typeof(TimeSpan), "00:00:10", "30.00:00:00")]
    public TimeSpan BlockHold { get; set; } = TimeSpan.FromHours(1);

    /// <summary>How long an entity stays watched after its last limit. Default 1 h.</summary>
    [Range(typeof(TimeSpan), "00:00:10", "30.00:00:00")]
    public TimeSpan WatchHold { get; set; } = TimeSpan.FromHours(1);

    /// <summary>How often other nodes' changes are pulled from the limits table. Default 2 s.</summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "00:10:00")]
    public TimeSpan PullInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Name written with each change. Default: the machine name.</summary>
    [Required]
    public string Node { get; set; } = Environment.MachineName;
}

/// <summary>Cross-field rules that attributes cannot say; each failure names the key and the bad value.</summary>
public sealed class LimitsOptionsValidator : IValidateOptions<LimitsOptions>
{
    public ValidateOptionsResult Validate(string? name, LimitsOptions options)
    {
        var errors = new List<string>();
        var fast = options.FastPath;
        if (fast.UnknownRecipientsBeforeDisconnect < fast.UnknownRecipientsBeforeTarpit)
        {
            errors.Add(string.Create(CultureInfo.InvariantCulture,
                $"Limits:FastPath:UnknownRecipientsBeforeDisconnect ({fast.UnknownRecipientsBeforeDisconnect}) must be at least UnknownRecipientsBeforeTarpit ({fast.UnknownRecipientsBeforeTarpit})."));
        }

        if (fast.LockoutMax < fast.LockoutBase)
        {
            errors.Add("Limits:FastPath:LockoutMax must be at least LockoutBase.");
        }

        if (options.Dynamic.BlockScore < options.Dynamic.ThrottleScore)
        {
            errors.Add("Limits:Dynamic:BlockScore must be at least ThrottleScore.");
        }

        foreach (var network in options.Fixed.BlockedNetworks)
        {
            if (!AddressKey.TryParseNetwork(network, out _))
            {
                errors.Add($"Limits:Fixed:BlockedNetworks: '{network}' is not an IP address or CIDR network.");
            }
        }

        foreach (var user in options.Fixed.BlockedUsers)
        {
            if (!AccountName.IsValid(AccountName.Normalize(user)))
            {
                errors.Add($"Limits:Fixed:BlockedUsers: '{user}' is not an account name.");
            }
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
