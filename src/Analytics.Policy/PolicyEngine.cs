using System.Collections.Concurrent;
using System.Security.Cryptography;
using Analytics.Events;
using Analytics.Limits;
using Analytics.Submission.Rules;

namespace Analytics.Policy;

/// <summary>
/// What the Postfix policy service, the Dovecot policy server and the mail log reader share: the one
/// <see cref="SessionRules"/> table over the process's <see cref="ILimitBook"/> (so a rate, a lock or a
/// hold is counted once whichever door it came through, and exactly as the listener counts it), where
/// events go, and the Postfix client sessions both Postfix's requests and its log lines belong to.
/// </summary>
internal sealed class PolicyEngine
{
    // Replies this engine has sent to Postfix: Postfix logs them as rejections, and the log reader
    // must not take them for Postfix's own (a second RCPT event, or a rate limit taken for a harvest).
    private readonly ConcurrentDictionary<string, byte> _ownTexts = new(StringComparer.Ordinal);

    public PolicyEngine(PolicyOptions options, LimitsOptions limits, ILimitBook book, IEventPublisher events, TimeProvider time)
    {
        Options = options;
        Events = events;
        Time = time;
        Rules = new SessionRules(limits, book, OtherServerDecides.Instance, OtherServerDecides.Instance);
        Sessions = new PostfixSessions(this);
    }

    public PolicyOptions Options { get; }

    public SessionRules Rules { get; }

    public IEventPublisher Events { get; }

    public TimeProvider Time { get; }

    public PostfixSessions Sessions { get; }

    /// <summary>
    /// Who records AUTH: Dovecot's reports when its policy server is configured (it sees every login,
    /// Postfix's SASL included); otherwise Postfix (a success on the first request of a session, a
    /// failure from its log).
    /// </summary>
    public bool AuthFromPostfix => !Options.DovecotEnabled;

    public static ulong NewSessionId() => BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8));

    public void SentToPostfix(string text)
    {
        // The texts come from the rules' fixed table: a handful of entries.
        if (_ownTexts.Count < 256)
        {
            _ownTexts.TryAdd(text, 0);
        }
    }

    public bool IsOwnText(string text) => _ownTexts.ContainsKey(text);

    /// <summary>
    /// The directories as the rules see them when another server has decided: Postfix asks about a
    /// recipient only once its own checks found it acceptable, and Dovecot checks passwords itself.
    /// </summary>
    private sealed class OtherServerDecides : IRecipientLookup, ICredentialVerifier
    {
        public static OtherServerDecides Instance { get; } = new();

        public bool IsLocalDomain(string domain) => true;

        public bool HasMailbox(string address) => true;

        public ValueTask<CredentialCheck> VerifyAsync(string user, string password, bool ownersNetwork, CancellationToken cancellationToken) =>
            throw new InvalidOperationException("Passwords are checked by Dovecot; the engine only records the outcome.");
    }
}
