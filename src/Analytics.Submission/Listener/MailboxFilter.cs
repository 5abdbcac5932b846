using SmtpServer;
using SmtpServer.Mail;
using SmtpServer.Protocol;
using SmtpServer.Storage;

namespace Analytics.Submission.Listener;

/// <summary>The MAIL and RCPT enforcement points: SmtpServer's hook into <see cref="Rules.SessionRules"/>.</summary>
internal sealed class MailboxFilter : IMailboxFilter
{
    public Task<bool> CanAcceptFromAsync(ISessionContext context, IMailbox from, int size, CancellationToken cancellationToken)
    {
        var session = SessionState.From(context);
        if (session.Listener.Queue is { } queue && !queue.HasRoomFor(Math.Max(0, size)))
        {
            // A full spool (disk or quota) refuses new mail for now rather than lose any.
            throw new SmtpResponseException(Replies.Response(452, "4.3.1 Insufficient system storage"));
        }

        if (session.Listener.Rules.Mail(session, size) is { } refusal)
        {
            throw session.Refuse(refusal, recordReason: false);
        }

        return Task.FromResult(true);
    }

    public Task<bool> CanDeliverToAsync(ISessionContext context, IMailbox to, IMailbox from, CancellationToken cancellationToken)
    {
        var session = SessionState.From(context);
        session.RecipientReason = "";
        if (session.Listener.Rules.Rcpt(session, to.AsAddress() ?? "", to.Host ?? "") is { } refusal)
        {
            throw session.Refuse(refusal, recordReason: true);
        }

        return Task.FromResult(true);
    }
}
