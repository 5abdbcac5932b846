namespace Analytics.Policy;

/// <summary>
/// The Postfix and Dovecot settings the engine is documented with (docs/operations.md), in one place:
/// the tests against the real Postfix and Dovecot and the <c>--target postfix</c> scenarios run with
/// exactly these.
/// </summary>
public static class PolicySnippets
{
    /// <summary>The <c>policy_context</c> of the connection check placed first.</summary>
    public const string ConnectContext = PostfixPolicy.ConnectContext;

    /// <summary>What Dovecot must send, on top of its default request attributes: the mechanism and the password tag.</summary>
    public const string DovecotRequestAttributes =
        "login=%{requested_username} pwhash=%{hashed_password} remote=%{rip} device_id=%{client_id} protocol=%s session_id=%{session} mech=%m pwtag=%8{pkcs5:password}";

    /// <summary>
    /// <c>check_policy_service</c> for the engine at <paramref name="endpoint"/> (<c>unix:/path</c> or
    /// <c>HOST:PORT</c>), with the settings that keep mail flowing when the engine is down: answer DUNNO
    /// at once instead of 451, and wait at most 10 s. <paramref name="context"/>: <c>connect</c> for the
    /// connection check.
    /// </summary>
    public static string PolicyService(string endpoint, string? context = null)
    {
        var service = endpoint.StartsWith("unix:", StringComparison.Ordinal) || endpoint.StartsWith("inet:", StringComparison.Ordinal) ? endpoint : "inet:" + endpoint;
        return $"check_policy_service {{ {service}, {(context is null ? "" : "policy_context=" + context + ", ")}default_action=DUNNO, timeout=10s, try_limit=1 }}";
    }

    /// <summary>
    /// The recommended main.cf restrictions: the connection check first (a held or blocked client learns
    /// nothing about which addresses exist), Postfix's own recipient checks, then the limits (counted
    /// only for recipients Postfix accepts), and the message at its end.
    /// </summary>
    public static IReadOnlyList<string> RecommendedMainCf(string endpoint) =>
    [
        $"smtpd_recipient_restrictions = {PolicyService(endpoint, ConnectContext)}, reject_unlisted_recipient, {PolicyService(endpoint)}",
        $"smtpd_end_of_data_restrictions = {PolicyService(endpoint)}",
    ];

    /// <summary>The minimal main.cf restrictions: the limits after Postfix's own recipient checks, and the message at its end.</summary>
    public static IReadOnlyList<string> MinimalMainCf(string endpoint) =>
    [
        $"smtpd_recipient_restrictions = reject_unlisted_recipient, {PolicyService(endpoint)}",
        $"smtpd_end_of_data_restrictions = {PolicyService(endpoint)}",
    ];

    /// <summary>The dovecot.conf lines for the engine's policy server at <paramref name="url"/>.</summary>
    public static IReadOnlyList<string> DovecotConf(string url, string nonce) =>
    [
        "auth_policy_server_url = " + url,
        "auth_policy_hash_nonce = " + nonce,
        "auth_policy_request_attributes = " + DovecotRequestAttributes,
    ];
}
