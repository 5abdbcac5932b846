using Analytics.Events;
using SmtpServer;
using SmtpServer.Authentication;
using SmtpServer.Protocol;

namespace Analytics.Submission.Listener;

/// <summary>
/// AUTH, after SmtpServer decoded PLAIN or LOGIN: the limit book first (locked IP or user → 454
/// 4.7.0 without looking at the password), then the password against the in-memory directory, then
/// the outcome back into the book, which may lock the IP or the user (the fast-path defense).
/// </summary>
internal sealed class Authenticator : IUserAuthenticator
{
    public Task<bool> AuthenticateAsync(ISessionContext context, string user, string password, CancellationToken cancellationToken) =>
        Task.FromResult(Authenticate(SessionState.From(context), user, password));

    private static bool Authenticate(SessionState session, string? user, string? password)
    {
        var listener = session.Listener;
        if (session.Role != ListenerRole.Submission)
        {
            session.AuthReason = "auth not offered on mx";
            throw new SmtpResponseException(Replies.Response(503, "5.5.1 AUTH not available on this service"));
        }

        user ??= "";
        password ??= "";
        session.AuthUser = SessionState.Clip(user, 320);
        if (user.StartsWith(GuardedReader.MalformedMarker, StringComparison.Ordinal) || password.StartsWith(GuardedReader.MalformedMarker, StringComparison.Ordinal))
        {
            session.AuthUser = user.StartsWith(GuardedReader.MalformedMarker, StringComparison.Ordinal) ? "" : session.AuthUser;
            session.AuthReason = "malformed response";
            Fail(session);
            return false;
        }

        var subject = session.Subject with { SecretTag = listener.TagOf(password) };
        var decision = listener.Limits.CheckAuth(subject);
        ApplyTarpit(session, decision);
        if (decision.Action != LimitAction.Allow)
        {
            session.AuthReason = decision.Reason;
            session.EmitThrottle(454, "4.7.0", "auth refused: " + decision.Reason, decision.Tarpit, session.AuthUser);
            throw new SmtpResponseException(Replies.Response(454, "4.7.0 Temporary authentication failure, try again later"));
        }

        var check = listener.Users.Verify(user, password);
        if (check == CredentialCheck.Ok)
        {
            session.AuthReason = "ok";
            listener.Limits.RecordAuthSuccess(subject);
            return true;
        }

        session.AuthReason = check switch
        {
            CredentialCheck.UnknownUser => "unknown user",
            CredentialCheck.Disabled => "account disabled",
            _ => "bad password",
        };
        Fail(session, subject);
        return false;
    }

    private static void Fail(SessionState session, LimitSubject? subject = null)
    {
        var outcome = session.Listener.Limits.RecordAuthFailure(subject ?? session.Subject);
        if (outcome.IpLocked)
        {
            session.EmitThrottle(454, "4.7.0", $"lock ip {session.ClientIp} for {outcome.LockDuration}", TimeSpan.Zero, session.AuthUser);
        }

        if (outcome.UserLocked)
        {
            session.EmitThrottle(454, "4.7.0", $"lock user for {outcome.LockDuration}", TimeSpan.Zero, session.AuthUser);
        }

        if (outcome.NetworkLocked)
        {
            session.EmitThrottle(454, "4.7.0", $"lock network of {session.ClientIp} for {outcome.LockDuration}", TimeSpan.Zero, session.AuthUser);
        }

        if (outcome.PasswordBurned)
        {
            session.EmitThrottle(454, "4.7.0", "refuse a password tried against too many accounts", TimeSpan.Zero, session.AuthUser);
        }
    }

    /// <summary>A limit book's tarpit: the reply to this command goes out that much later.</summary>
    internal static void ApplyTarpit(SessionState session, LimitDecision decision)
    {
        if (decision.Tarpit > TimeSpan.Zero)
        {
            session.DelayNextReply(decision.Tarpit);
            if (decision.Action == LimitAction.Allow)
            {
                session.EmitThrottle(0, "", "tarpit: " + decision.Reason, decision.Tarpit);
            }
        }
    }
}
