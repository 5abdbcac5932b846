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
