using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Analytics.Policy;
using Analytics.Testing;

namespace Analytics.Simulation.Attacks;

/// <summary>
/// The scenarios' other target: Postfix 3.7 (an MX and a submission service with Dovecot SASL and
/// STARTTLS) and Dovecot 2.3, instances of their own in a folder, with the engine (a running
/// <c>serve</c>) beside them as documented: Postfix asks it through <c>check_policy_service</c> (the
/// recommended placement), Dovecot through <c>auth_policy_server_url</c>, and it follows Postfix's log.
/// The world's local domain is Postfix's (its mailboxes in a virtual mailbox map), mail to other
/// domains is discarded (nothing leaves loopback). Built on the test rigs (tests/Shared), which need
/// the Debian packages and root.
/// </summary>
public sealed class PostfixTarget : IAsyncDisposable
{
    private PostfixRig? _postfix;
    private DovecotRig? _dovecot;

    private PostfixTarget(string root) => Root = root;

    /// <summary>Null when the target can run here; otherwise why not.</summary>
    public static string? MissingReason => PostfixRig.MissingReason ?? DovecotRig.MissingReason;

    public string Root { get; }

    /// <summary>Where Postfix writes its log (<c>maillog_file</c>): what serve's <c>Policy:MailLog</c> follows. Known before start.</summary>
    public static string MailLogOf(string root) => Path.Combine(root, "postfix", "maillog");

    public IPEndPoint Mx => _postfix!.EndPoint;

    public IPEndPoint Submission => _postfix!.SubmissionEndPoint;

    /// <summary>What the target is, for a report.</summary>
    public string Description =>
        $"Postfix 3.7 (mx {Mx}, submission {Submission} with Dovecot 2.3 SASL) with analytics serve beside it: check_policy_service (connection check first, limits after reject_unlisted_recipient, end of data), auth_policy_server_url, maillog_file";

    /// <summary>Dovecot settings that differ from its defaults, for a report.</summary>
    public const string DovecotChanges = "auth_failure_delay = 0 (lowered, like PBKDF2, so that hundreds of failed logins take seconds; its per-address penalty stays)";

    /// <param name="policy">serve's <c>Policy:PostfixEndpoint</c>.</param>
    /// <param name="dovecotUrl">serve's Dovecot policy URL.</param>
    public static async Task<PostfixTarget> StartAsync(string root, ScenarioWorld world, string policy, string dovecotUrl)
    {
        var target = new PostfixTarget(root);
        try
        {
            Directory.CreateDirectory(root);
            var (certificate, key) = SelfSigned(root);
            target._postfix = await PostfixRig.CreateAsync(Path.Combine(root, "postfix"), new PostfixRigOptions
            {
                Domains = [ScenarioWorld.Domain],
                Mailboxes = [.. world.DirectoryLines.Where(l => !l.StartsWith('@'))],
                SubmissionPort = 0,
                Tls = (certificate, key),
                MainCf =
                [
                    "mynetworks=127.255.255.254/32", // the scenario's clients are all on loopback: none is trusted
                    "default_transport=discard",
                    "smtpd_relay_restrictions=permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
                    .. PolicySnippets.RecommendedMainCf(policy),
                ],
            });
            var passwords = new Dictionary<string, string>(world.Accounts, StringComparer.Ordinal);
            foreach (var user in world.LegitUsers)
            {
                passwords[user] = ScenarioWorld.LegitPassword;
            }

            target._dovecot = await DovecotRig.StartAsync(Path.Combine(root, "dovecot"), new DovecotRigOptions
            {
                Passwords = passwords,
                PostfixAuthSocket = target._postfix.SaslSocket,
                ExtraConfig = [.. PolicySnippets.DovecotConf(dovecotUrl, Convert.ToHexString(RandomNumberGenerator.GetBytes(16))), "auth_failure_delay = 0"],
            });
            return target;
        }
        catch
        {
            await target.DisposeAsync();
            throw;
        }
    }

    /// <summary>Postfix's log so far (for a failed run's diagnosis).</summary>
    public string MailLogText => _postfix?.MailLogText ?? "";

    private static (string Certificate, string Key) SelfSigned(string root)
    {
        using var rsa = RSA.Create(2048);
        var request = new CertificateRequest("CN=postfix-rig.test", rsa, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        var certificatePath = Path.Combine(root, "smtpd-cert.pem");
        var keyPath = Path.Combine(root, "smtpd-key.pem");
        File.WriteAllText(certificatePath, certificate.ExportCertificatePem());
        File.WriteAllText(keyPath, rsa.ExportPkcs8PrivateKeyPem());
        File.SetUnixFileMode(keyPath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        return (certificatePath, keyPath);
    }

    public async ValueTask DisposeAsync()
    {
        if (_dovecot is not null)
        {
            await _dovecot.DisposeAsync();
        }

        if (_postfix is not null)
        {
            await _postfix.DisposeAsync();
        }
    }
}
