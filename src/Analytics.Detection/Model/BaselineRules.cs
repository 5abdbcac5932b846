using Analytics.Detection.Features;

namespace Analytics.Detection.Model;

/// <summary>
/// What operators run today, as a detector on the same feature rows, for the side-by-side report:
/// fail2ban's default postfix-sasl jail (an IP with 5 AUTH failures within 10 minutes), Postfix's
/// per-session error limits applied per client (smtpd_soft_error_limit 10: an IP with 10 unknown-mailbox
/// rejections within 10 minutes), and a fixed per-account rate cap (more than 100 messages or 500
/// recipients in an hour, as policyd/Rspamd ratelimit setups commonly use).
/// </summary>
internal static class BaselineRules
{
    public const int Fail2BanMaxRetry = 5;
    public const int PostfixErrorLimit = 10;
    public const int UserMessagesPerHour = 100;
    public const int UserRecipientsPerHour = 500;

    public static ThreatClass Classify(EntityFeatures f)
    {
        if (f.Entity.Kind == EntityKind.Ip)
        {
            if (f["auth_failures_10m"] >= Fail2BanMaxRetry)
            {
                return ThreatClass.BruteForce;
            }

            if (f["rcpt_unknown_10m"] >= PostfixErrorLimit)
            {
                return ThreatClass.Harvester;
            }
        }

        if (f.Entity.Kind == EntityKind.User && (f["messages_1h"] > UserMessagesPerHour || f["rcpt_1h"] > UserRecipientsPerHour))
        {
            return ThreatClass.Compromised;
        }

        return ThreatClass.Benign;
    }
}
