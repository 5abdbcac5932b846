using System.ComponentModel.DataAnnotations;
using System.Globalization;
using System.Net;
using Microsoft.Extensions.Options;

namespace Analytics.Submission;

/// <summary>
/// The SMTP listener (configuration section <c>Submission</c>). Every default is what a small
/// single-node deployment should run with; the comment on each member says what it is.
/// </summary>
public sealed class SubmissionOptions
{
    public const string SectionName = "Submission";

    /// <summary>Node name stamped on every event (several listener nodes share one store). Default: the machine name.</summary>
    [Required]
    [StringLength(128, MinimumLength = 1)]
    public string NodeName { get; set; } = Environment.MachineName;

    /// <summary>Host name in the greeting, EHLO reply and the self-signed certificate. Default <c>localhost</c>.</summary>
    [Required]
    [StringLength(253, MinimumLength = 1)]
    public string ServerName { get; set; } = "localhost";

    /// <summary>Where the spool (<c>mail/</c>) and the generated certificate (<c>keys/</c>) live. Default <c>data</c>.</summary>
    [Required]
    public string DataDirectory { get; set; } = "data";

    // Endpoint lists default to null, not to a filled list: the configuration binder appends to a
    // list that already has items, so a configured endpoint would come on top of the default.

    /// <summary>Submission endpoints (<c>HOST:PORT</c>; AUTH required, STARTTLS). Unset: <c>0.0.0.0:587</c>; empty: none.</summary>
    public List<string>? SubmissionEndpoints { get; set; }

    /// <summary>Submission endpoints with implicit TLS (RFC 8314, usually port 465). Unset or empty: none.</summary>
    public List<string>? ImplicitTlsEndpoints { get; set; }

    /// <summary>Inbound MX endpoints (no AUTH, local recipients only). Unset: <c>0.0.0.0:25</c>; empty: none.</summary>
    public List<string>? MxEndpoints { get; set; }

    public IReadOnlyList<string> EffectiveSubmissionEndpoints => SubmissionEndpoints ?? ["0.0.0.0:587"];

    public IReadOnlyList<string> EffectiveImplicitTlsEndpoints => ImplicitTlsEndpoints ?? [];

    public IReadOnlyList<string> EffectiveMxEndpoints => MxEndpoints ?? ["0.0.0.0:25"];

    /// <summary>Advertise and accept AUTH PLAIN/LOGIN before STARTTLS. Default false (tests and demos only).</summary>
    public bool AllowInsecureAuth { get; set; }

    [Required]
    [ValidateObjectMembers]
    public TlsOptions Tls { get; set; } = new();

    [Required]
    [ValidateObjectMembers]
    public ListenerLimitOptions Limits { get; set; } = new();

    [Required]
    [ValidateObjectMembers]
    public DefenseOptions Defenses { get; set; } = new();

    [Required]
    [ValidateObjectMembers]
    public StaticLimitOptions Policy { get; set; } = new();

    [Required]
    [ValidateObjectMembers]
    public DirectoryOptions Directory { get; set; } = new();

    public string SpoolDirectory => Path.Combine(DataDirectory, "mail");

    public string KeyDirectory => Path.Combine(DataDirectory, "keys");
}

/// <summary>The certificate for STARTTLS and implicit TLS.</summary>
public sealed class TlsOptions
{
    /// <summary>
    /// A PFX/PKCS#12 file (<c>.pfx</c>, <c>.p12</c>) or a PEM certificate chain. Empty (default): a
    /// self-signed certificate is generated on first start and kept in <c>DATA/keys/</c>.
    /// </summary>
    public string? CertificatePath { get; set; }

    /// <summary>PEM private key, when <see cref="CertificatePath"/> is PEM and the key is in its own file.</summary>
    public string? KeyPath { get; set; }

    /// <summary>Password of the PFX file, if any.</summary>
    public string? Password { get; set; }
}

/// <summary>Protocol limits, applied to every session.</summary>
public sealed class ListenerLimitOptions
{
    /// <summary>Longest command line in bytes, CRLF included (RFC 5321 minimum 512). Default 4096. AUTH lines get at least 12288 (RFC 4954).</summary>
    [Range(512, 1 << 20)]
    public int MaxLineLength { get; set; } = 4096;

    /// <summary>Largest message in bytes (advertised with SIZE; 552 past it). Default 25 MiB.</summary>
    [Range(1024, int.MaxValue / 2)]
    public int MaxMessageSize { get; set; } = 25 * 1024 * 1024;

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

    /// <summary>Concurrent sessions over all endpoints (421 past it). Default 2000.</summary>
    [Range(1, 1_000_000)]
    public int MaxSessions { get; set; } = 2000;

    /// <summary>Concurrent sessions from one client IP (421 past it). Default 20.</summary>
    [Range(1, 1_000_000)]
    public int MaxSessionsPerIp { get; set; } = 20;

    /// <summary>On shutdown, how long transactions in flight may take to finish. Default 30 s.</summary>
    [Range(typeof(TimeSpan), "00:00:00", "00:10:00")]
    public TimeSpan ShutdownDeadline { get; set; } = TimeSpan.FromSeconds(30);
}

/// <summary>Defenses that need no model and act inside a session at once.</summary>
public sealed class DefenseOptions
{
    /// <summary>Unknown-recipient (550 5.1.1) rejections in one session after which every reply is tarpitted. Default 3.</summary>
    [Range(1, 10_000)]
    public int UnknownRecipientsBeforeTarpit { get; set; } = 3;

    /// <summary>Unknown-recipient rejections in one session after which the server answers 421 4.7.0 and closes. Default 10.</summary>
    [Range(1, 10_000)]
    public int UnknownRecipientsBeforeDisconnect { get; set; } = 10;

    /// <summary>Delay added to a tarpitted reply. Default 2 s.</summary>
    [Range(typeof(TimeSpan), "00:00:00", "00:05:00")]
    public TimeSpan TarpitDelay { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>AUTH failures from one IP within <see cref="AuthFailureWindow"/> that lock the IP. Default 10.</summary>
    [Range(1, 100_000)]
    public int AuthFailuresPerIp { get; set; } = 10;

    /// <summary>AUTH failures against one user within <see cref="AuthFailureWindow"/> that lock the user. Default 5.</summary>
    [Range(1, 100_000)]
    public int AuthFailuresPerUser { get; set; } = 5;

    /// <summary>Window the failures are counted in. Default 10 minutes.</summary>
    [Range(typeof(TimeSpan), "00:00:01", "7.00:00:00")]
    public TimeSpan AuthFailureWindow { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>First lock duration; each further lock of the same IP or user doubles it. Default 1 minute.</summary>
    [Range(typeof(TimeSpan), "00:00:00.001", "1.00:00:00")]
    public TimeSpan LockoutBase { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>
    /// AUTH failures from one network (IPv4 /24, IPv6 /64) within <see cref="AuthFailureWindow"/> that
    /// lock AUTH from the whole network: stuffing spreads a few attempts over many addresses of a
    /// handful of networks, under every per-IP threshold. Default 10.
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

    /// <summary>Unknown-recipient rejections from one IP, over all its sessions within <see cref="UnknownRecipientWindow"/>, that hold the IP. Default 8.</summary>
    [Range(1, 100_000)]
    public int UnknownRecipientsPerIp { get; set; } = 8;

    /// <summary>Unknown-recipient rejections from one network (/24, /64) within the window that hold the network (distributed harvesting). Default 12.</summary>
    [Range(1, 100_000)]
    public int UnknownRecipientsPerNetwork { get; set; } = 12;

    /// <summary>Unknown-recipient rejections by one authenticated user within the window that hold the user. Default 8.</summary>
    [Range(1, 100_000)]
    public int UnknownRecipientsPerUser { get; set; } = 8;

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

/// <summary>Static limits until the dynamic limit policy takes over (section <c>Submission:Policy</c>).</summary>
public sealed class StaticLimitOptions
{
    /// <summary>Client addresses or CIDR networks refused before the greeting (554 5.7.1). Default none.</summary>
    public List<string> BlockedNetworks { get; set; } = [];

    /// <summary>Users refused at AUTH (454 4.7.0) and MAIL (550 5.7.1). Default none.</summary>
    public List<string> BlockedUsers { get; set; } = [];

    /// <summary>Messages one user may start per minute (451 4.7.1 past it); 0 = unlimited. Default 0.</summary>
    [Range(0, 1_000_000)]
    public int MessagesPerMinute { get; set; }

    /// <summary>Recipients one user may add per hour (451 4.7.1 past it); 0 = unlimited. Default 0.</summary>
    [Range(0, 100_000_000)]
    public int RecipientsPerHour { get; set; }
}

/// <summary>User and local recipient directories.</summary>
public sealed class DirectoryOptions
{
    /// <summary>PBKDF2-SHA256 iterations for new password hashes (stored per hash, so changing it is safe). Default 210,000.</summary>
    [Range(1, 10_000_000)]
    public int Pbkdf2Iterations { get; set; } = PasswordHasher.DefaultIterations;

    /// <summary>How often the in-memory snapshots are reloaded from the store (changes made by other nodes). Default 30 s.</summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "1.00:00:00")]
    public TimeSpan RefreshInterval { get; set; } = TimeSpan.FromSeconds(30);
}

/// <summary>Cross-field rules that attributes cannot say; failures name the setting and the bad value.</summary>
public sealed class SubmissionOptionsValidator : IValidateOptions<SubmissionOptions>
{
    public ValidateOptionsResult Validate(string? name, SubmissionOptions options)
    {
        var errors = new List<string>();

        // Nested sections are validated here too, so the rules hold however the options were registered.
        foreach (var (section, value) in new (string, object)[]
                 { ("Tls", options.Tls), ("Limits", options.Limits), ("Defenses", options.Defenses), ("Policy", options.Policy), ("Directory", options.Directory) })
        {
            var results = new List<ValidationResult>();
            if (!Validator.TryValidateObject(value, new ValidationContext(value), results, validateAllProperties: true))
            {
                errors.AddRange(results.Select(r => $"Submission:{section}: {r.ErrorMessage}"));
            }
        }

        var all = new List<IPEndPoint>();
        void Check(string setting, IReadOnlyList<string> values)
        {
            foreach (var value in values)
            {
                if (ListenerEndpoint.TryParse(value, out var endpoint))
                {
                    if (endpoint.Port != 0 && all.Any(e => e.Port == endpoint.Port && (e.Address.Equals(endpoint.Address) || e.Address.Equals(IPAddress.Any) || endpoint.Address.Equals(IPAddress.Any))))
                    {
                        errors.Add($"Submission:{setting}: '{value}' is configured twice (or overlaps another endpoint).");
                    }

                    all.Add(endpoint);
                }
                else
                {
                    errors.Add($"Submission:{setting}: '{value}' is not HOST:PORT (an IP address or 'localhost', port 0-65535).");
                }
            }
        }

        Check(nameof(options.SubmissionEndpoints), options.EffectiveSubmissionEndpoints);
        Check(nameof(options.ImplicitTlsEndpoints), options.EffectiveImplicitTlsEndpoints);
        Check(nameof(options.MxEndpoints), options.EffectiveMxEndpoints);
        if (all.Count == 0)
        {
            errors.Add("Submission: no endpoint configured; set SubmissionEndpoints or MxEndpoints.");
        }

        if (options.Defenses.UnknownRecipientsBeforeDisconnect < options.Defenses.UnknownRecipientsBeforeTarpit)
        {
            errors.Add(string.Create(CultureInfo.InvariantCulture,
                $"Submission:Defenses:UnknownRecipientsBeforeDisconnect ({options.Defenses.UnknownRecipientsBeforeDisconnect}) must be at least UnknownRecipientsBeforeTarpit ({options.Defenses.UnknownRecipientsBeforeTarpit})."));
        }

        if (options.Defenses.LockoutMax < options.Defenses.LockoutBase)
        {
            errors.Add("Submission:Defenses:LockoutMax must be at least LockoutBase.");
        }

        foreach (var network in options.Policy.BlockedNetworks)
        {
            if (!StaticLimitBook.TryParseNetwork(network, out _))
            {
                errors.Add($"Submission:Policy:BlockedNetworks: '{network}' is not an IP address or CIDR network.");
            }
        }

        if (!string.IsNullOrWhiteSpace(options.Tls.CertificatePath) && !File.Exists(options.Tls.CertificatePath))
        {
            errors.Add($"Submission:Tls:CertificatePath: '{options.Tls.CertificatePath}' does not exist.");
        }

        if (!string.IsNullOrWhiteSpace(options.Tls.KeyPath) && !File.Exists(options.Tls.KeyPath))
        {
            errors.Add($"Submission:Tls:KeyPath: '{options.Tls.KeyPath}' does not exist.");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
