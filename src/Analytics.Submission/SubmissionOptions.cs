using System.ComponentModel.DataAnnotations;
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

    /// <summary>
    /// Run the SMTP listener. Default true. False: serve has no SMTP port of its own — the engine beside
    /// an MTA that keeps its ports (Postfix and Dovecot through the <c>Policy</c> section).
    /// </summary>
    public bool Enabled { get; set; } = true;

    // Endpoint lists default to null, not to a filled list: the configuration binder appends to a
    // list that already has items, so a configured endpoint would come on top of the default.

    /// <summary>Submission endpoints (<c>HOST:PORT</c>; AUTH required, STARTTLS). Unset: <c>0.0.0.0:587</c>; empty: none.</summary>
    public List<string>? SubmissionEndpoints { get; set; }

    /// <summary>Submission endpoints with implicit TLS (RFC 8314, usually port 465). Unset or empty: none.</summary>
    public List<string>? ImplicitTlsEndpoints { get; set; }

    /// <summary>Inbound MX endpoints (no AUTH, local recipients only). Unset: <c>0.0.0.0:25</c>; empty: none.</summary>
    public List<string>? MxEndpoints { get; set; }

    public IReadOnlyList<string> EffectiveSubmissionEndpoints => !Enabled ? [] : SubmissionEndpoints ?? ["0.0.0.0:587"];

    public IReadOnlyList<string> EffectiveImplicitTlsEndpoints => !Enabled ? [] : ImplicitTlsEndpoints ?? [];

    public IReadOnlyList<string> EffectiveMxEndpoints => !Enabled ? [] : MxEndpoints ?? ["0.0.0.0:25"];

    /// <summary>Advertise and accept AUTH PLAIN/LOGIN before STARTTLS. Default false (tests and demos only).</summary>
    public bool AllowInsecureAuth { get; set; }

    [Required]
    [ValidateObjectMembers]
    public TlsOptions Tls { get; set; } = new();

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

/// <summary>User and local recipient directories.</summary>
public sealed class DirectoryOptions
{
    /// <summary>PBKDF2-SHA256 iterations for new password hashes (stored per hash, so changing it is safe). Default 210,000.</summary>
    [Range(1, 10_000_000)]
    public int Pbkdf2Iterations { get; set; } = Analytics.Store.PasswordHasher.DefaultIterations;

    /// <summary>Password hashes computed at once (AUTH waits for a slot beyond that). Default 0: one per core.</summary>
    [Range(0, 1024)]
    public int HashConcurrency { get; set; }

    /// <summary>AUTH attempts that may wait for a hashing slot; past it they get 454 at once. Default 256.</summary>
    [Range(0, 1_000_000)]
    public int AuthQueue { get; set; } = 256;

    /// <summary>Longest wait for a hashing slot before 454. Default 5 s.</summary>
    [Range(typeof(TimeSpan), "00:00:00.010", "00:01:00")]
    public TimeSpan AuthQueueWait { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a verified credential is recognised without hashing again (0: never). Default 5 minutes.</summary>
    [Range(typeof(TimeSpan), "00:00:00", "1.00:00:00")]
    public TimeSpan AuthCacheTtl { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>How often the in-memory snapshots are reloaded from the store (changes made by other nodes). Default 30 s.</summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "1.00:00:00")]
    public TimeSpan RefreshInterval { get; set; } = TimeSpan.FromSeconds(30);
}

/// <summary>Cross-field rules that attributes cannot say; failures name the setting and the bad value.</summary>
internal sealed class SubmissionOptionsValidator : IValidateOptions<SubmissionOptions>
{
    public ValidateOptionsResult Validate(string? name, SubmissionOptions options)
    {
        var errors = new List<string>();

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
        if (all.Count == 0 && options.Enabled)
        {
            errors.Add("Submission: no endpoint configured; set SubmissionEndpoints or MxEndpoints (or Enabled=false for no listener).");
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
