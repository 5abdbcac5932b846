using SmtpServer;
using SmtpServer.Authentication;

namespace Analytics.Submission.Listener;

/// <summary>AUTH, after SmtpServer decoded PLAIN or LOGIN: SmtpServer's hook into <see cref="Rules.SessionRules.Auth"/>.</summary>
internal sealed class Authenticator : IUserAuthenticator
{
    public Task<bool> AuthenticateAsync(ISessionContext context, string user, string password, CancellationToken cancellationToken) =>
        AuthenticateAsync(SessionState.From(context), user ?? "", password ?? "", cancellationToken).AsTask();

    private static async ValueTask<bool> AuthenticateAsync(SessionState session, string user, string password, CancellationToken cancellationToken)
    {
        var rules = session.Listener.Rules;
        var malformedUser = user.StartsWith(GuardedReader.MalformedMarker, StringComparison.Ordinal);
        var result = malformedUser || password.StartsWith(GuardedReader.MalformedMarker, StringComparison.Ordinal)
            ? rules.MalformedAuth(session, malformedUser ? null : user)
            : await rules.AuthAsync(session, user, password, cancellationToken);
        session.AuthReason = result.Reason;
        if (result.Accepted)
        {
            return true;
        }

        // 535 is SmtpServer's own answer to a false return (and counts toward its per-session budget);
        // anything else (454 by policy, 503 on the MX) is ours.
        if (result.Reply.Code != 535)
        {
            throw session.Refuse(result.Reply, recordReason: false);
        }

        return false;
    }
}
