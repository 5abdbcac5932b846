using System.ComponentModel.DataAnnotations;
using System.Globalization;

namespace Analytics.Policy;

/// <summary>
/// The engine beside Postfix and Dovecot (configuration section <c>Policy</c>): Postfix's policy
/// delegation, Dovecot's authentication policy and Postfix's log. Every part is off until its
/// endpoint or file is set; each one that is set is validated at start, before anything opens.
/// </summary>
public sealed class PolicyOptions : IValidatableObject
{
    public const string SectionName = "Policy";

    /// <summary>
    /// Where Postfix's <c>check_policy_service</c> connects: <c>unix:/path/to/socket</c>, or a loopback
    /// <c>HOST:PORT</c> (<c>inet:127.0.0.1:10040</c> and <c>127.0.0.1:10040</c> both work; port 0 picks
    /// a free one). Empty (default): no policy service.
    /// </summary>
    public string? PostfixEndpoint { get; set; }

    /// <summary>
    /// Mode of the Unix socket (octal). Whoever can connect can spend an account's rates with forged
    /// requests, so by default only the owner and the group may (<c>0660</c>); see <see cref="PostfixSocketGroup"/>.
    /// </summary>
    [RegularExpression("^0?[0-7]{3}$", ErrorMessage = "must be an octal file mode such as 0660.")]
    public string PostfixSocketMode { get; set; } = "0660";

    /// <summary>Group given to the Unix socket (usually <c>postfix</c>, whose smtpd processes connect). Default: the process's own.</summary>
    public string? PostfixSocketGroup { get; set; }

    /// <summary>
    /// Where Dovecot's <c>auth_policy_server_url</c> points: a loopback <c>HOST:PORT</c> served over
    /// HTTP (port 0 picks a free one). Empty (default): no authentication policy server.
    /// </summary>
    public string? DovecotEndpoint { get; set; }

    /// <summary>
    /// When set, Dovecot must send it (<c>auth_policy_server_api_header = KEY</c>, which Dovecot sends as
    /// <c>X-API-Key</c>); requests without it are answered 401. Default: none (the endpoint is loopback only).
    /// </summary>
    public string? DovecotApiKey { get; set; }

    /// <summary>
    /// Postfix's log, for what neither protocol shows (recipients Postfix rejects itself, SASL failures):
    /// a file (<c>maillog_file</c> or syslog's mail log), followed across rotation, or <c>journal</c>
    /// (<c>journalctl --follow</c>, mail facility). Empty (default): not read.
    /// </summary>
    public string? MailLog { get; set; }

    /// <summary>Node name on events from Postfix (the policy service and the log). Default <c>postfix</c>.</summary>
    [Required]
    [StringLength(128, MinimumLength = 1)]
    public string PostfixNode { get; set; } = "postfix";

    /// <summary>Node name on events from Dovecot's authentication policy. Default <c>dovecot</c>.</summary>
    [Required]
    [StringLength(128, MinimumLength = 1)]
    public string DovecotNode { get; set; } = "dovecot";

    /// <summary>
    /// Longest a Postfix reply is held back for a tarpit. It must stay well under the <c>timeout</c> of
    /// <c>check_policy_service</c> (<c>smtpd_policy_service_timeout</c>), or Postfix takes its default
    /// action instead. Default 5 s.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:00", "00:01:00")]
    public TimeSpan MaxReplyDelay { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Longest <c>name=value</c> line of a Postfix request, in bytes. Longer: the request is answered DUNNO. Default 4096.</summary>
    [Range(256, 1 << 20)]
    public int MaxAttributeLength { get; set; } = 4096;

    /// <summary>Attributes in one Postfix request (Postfix 3.7 sends about 30). More: answered DUNNO. Default 100.</summary>
    [Range(10, 10_000)]
    public int MaxAttributes { get; set; } = 100;

    /// <summary>Largest Dovecot request (headers and body), in bytes. Larger: answered allow. Default 64 KiB.</summary>
    [Range(1024, 16 << 20)]
    public int MaxDovecotRequestBytes { get; set; } = 64 * 1024;

    /// <summary>How long a Postfix client session is kept for its log lines after its last policy request. Default 10 minutes.</summary>
    [Range(typeof(TimeSpan), "00:00:01", "1.00:00:00")]
    public TimeSpan SessionIdle { get; set; } = TimeSpan.FromMinutes(10);

    public bool PostfixEnabled => !string.IsNullOrWhiteSpace(PostfixEndpoint);

    public bool DovecotEnabled => !string.IsNullOrWhiteSpace(DovecotEndpoint);

    public bool MailLogEnabled => !string.IsNullOrWhiteSpace(MailLog);

    public bool FollowsJournal => string.Equals(MailLog?.Trim(), "journal", StringComparison.OrdinalIgnoreCase);

    public UnixFileMode SocketMode => (UnixFileMode)Convert.ToInt32(PostfixSocketMode, 8);

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (PostfixEnabled && !PolicyEndpoint.TryParse(PostfixEndpoint, allowUnix: true, out _, out var postfixError))
        {
            yield return new ValidationResult(postfixError, [nameof(PostfixEndpoint)]);
        }

        if (DovecotEnabled && !PolicyEndpoint.TryParse(DovecotEndpoint, allowUnix: false, out _, out var dovecotError))
        {
            yield return new ValidationResult(dovecotError, [nameof(DovecotEndpoint)]);
        }

        if (FollowsJournal && JournalFollower.MissingReason is { } missing)
        {
            yield return new ValidationResult($"'journal': {missing}.", [nameof(MailLog)]);
        }

        if (MailLogEnabled && !FollowsJournal)
        {
            var directory = Path.GetDirectoryName(Path.GetFullPath(MailLog!));
            if (directory is null || !Directory.Exists(directory))
            {
                yield return new ValidationResult($"'{MailLog}': its folder does not exist.", [nameof(MailLog)]);
            }
        }

        if (PostfixSocketGroup is { Length: > 0 } group && PolicyEndpoint.GroupId(group) is null)
        {
            yield return new ValidationResult($"no group '{group}' in /etc/group.", [nameof(PostfixSocketGroup)]);
        }

        if (DovecotApiKey is { Length: > 0 } key && key.Any(c => char.IsControl(c) || char.IsWhiteSpace(c)))
        {
            yield return new ValidationResult("must not contain spaces or control characters.", [nameof(DovecotApiKey)]);
        }
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"postfix {PostfixEndpoint ?? "off"}, dovecot {DovecotEndpoint ?? "off"}, mail log {MailLog ?? "off"}");
}
