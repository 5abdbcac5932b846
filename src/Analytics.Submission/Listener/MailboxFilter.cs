using System.Globalization;
using Analytics.Events;
using SmtpServer;
using SmtpServer.Mail;
using SmtpServer.Protocol;
using SmtpServer.Storage;

namespace Analytics.Submission.Listener;

/// <summary>
/// The MAIL and RCPT enforcement points. MAIL: size declared, then the user's limits. RCPT:
/// recipients per message, then where the address goes — a local domain must have the mailbox
/// (550 5.1.1, counted for the unknown-recipient defense), any other domain is relayed for an
/// authenticated submission user and refused on MX (554 5.7.1) — then the user's recipient rate.
/// </summary>
internal sealed class MailboxFilter : IMailboxFilter
{
    public Task<bool> CanAcceptFromAsync(ISessionContext context, IMailbox from, int size, CancellationToken cancellationToken)
    {
        var session = SessionState.From(context);
        var listener = session.Listener;
        if (size > listener.Options.Limits.MaxMessageSize)
        {
            throw new SmtpResponseException(Replies.Response(552, "5.3.4 Message size exceeds fixed maximum message size"));
        }

        if (listener.Queue is { } queue && !queue.HasRoomFor(Math.Max(0, size)))
        {
            throw new SmtpResponseException(Replies.Response(452, "4.3.1 Insufficient system storage"));
        }

        var decision = listener.Limits.CheckMail(session.Subject);
        Authenticator.ApplyTarpit(session, decision);
        Enforce(session, decision, "mail");
        return Task.FromResult(true);
    }

    public async Task<bool> CanDeliverToAsync(ISessionContext context, IMailbox to, IMailbox from, CancellationToken cancellationToken)
    {
        var session = SessionState.From(context);
        var listener = session.Listener;
        var defenses = listener.Options.Defenses;
        if (session.Recipients.Count >= listener.Options.Limits.MaxRecipientsPerMessage)
        {
            session.RecipientReason = "too many recipients";
            throw new SmtpResponseException(Replies.Response(452, "4.5.3 Too many recipients"));
        }

        var domain = RecipientStore.NormalizeDomain(to.Host ?? "");
        var address = to.AsAddress() is { } a ? RecipientStore.NormalizeAddress(a) : null;
        if (domain is null || address is null)
        {
            session.RecipientReason = "invalid address";
            throw new SmtpResponseException(Replies.Response(501, "5.1.3 Bad recipient address syntax"));
        }

        if (listener.Recipients.IsLocalDomain(domain))
        {
            if (!listener.Recipients.HasMailbox(address))
            {
                session.UnknownRecipients++;
                session.RecipientReason = "unknown mailbox";

                // Across sessions: a bot that reconnects after every disconnect, or spreads its names
                // over many addresses, is held as a whole (IP, network, account) for a few minutes.
                var hold = listener.Limits.RecordUnknownRecipient(session.Subject);
                if (hold.Held)
                {
                    session.RecipientReason = "unknown mailbox; hold";
                    session.ServerCloses("unknown recipients (hold)");
                    session.EmitThrottle(421, "4.7.0", hold.Duration > TimeSpan.Zero
                        ? string.Create(CultureInfo.InvariantCulture, $"hold {hold.Scope} for {hold.Duration} after unknown recipients")
                        : "disconnect: " + hold.Scope, session.TarpitEachReply);
                    throw new SmtpResponseException(Replies.Response(421, "4.7.0 Too many invalid recipients, try again later"), true);
                }

                if (session.UnknownRecipients >= defenses.UnknownRecipientsBeforeDisconnect)
                {
                    session.RecipientReason = "unknown mailbox; disconnect";
                    session.ServerCloses("unknown recipients");
                    session.EmitThrottle(421, "4.7.0", string.Create(CultureInfo.InvariantCulture,
                        $"disconnect after {session.UnknownRecipients} unknown recipients"), session.TarpitEachReply);
                    throw new SmtpResponseException(Replies.Response(421, "4.7.0 Too many invalid recipients, closing connection"), true);
                }

                if (session.UnknownRecipients >= defenses.UnknownRecipientsBeforeTarpit && session.TarpitEachReply == TimeSpan.Zero && defenses.TarpitDelay > TimeSpan.Zero)
                {
                    session.TarpitEachReply = defenses.TarpitDelay;
                    session.EmitThrottle(550, "5.1.1", string.Create(CultureInfo.InvariantCulture,
                        $"tarpit after {session.UnknownRecipients} unknown recipients"), defenses.TarpitDelay);
                }

                throw new SmtpResponseException(Replies.Response(550, "5.1.1 Mailbox unknown"));
            }
        }
        else if (session.Role == ListenerRole.Mx)
        {
            session.RecipientReason = "relay denied";
            throw new SmtpResponseException(Replies.Response(554, "5.7.1 Relay access denied"));
        }
        else if (session.User.Length == 0)
        {
            // Unreachable while submission requires AUTH before MAIL; kept so that is never an open relay.
            session.RecipientReason = "relay denied";
            throw new SmtpResponseException(Replies.Response(554, "5.7.1 Relay access denied"));
        }

        var decision = listener.Limits.CheckRcpt(session.Subject, session.Recipients.Count);
        Authenticator.ApplyTarpit(session, decision);
        Enforce(session, decision, "rcpt");
        session.RecipientReason = "";
        await Task.CompletedTask;
        return true;
    }

    private static void Enforce(SessionState session, LimitDecision decision, string where)
    {
        var (code, text) = decision.Action switch
        {
            LimitAction.Allow => (0, ""),
            LimitAction.TooManyRecipients => (452, "4.5.3 Too many recipients"),
            LimitAction.Block => (550, "5.7.1 Sending refused by policy"),
            _ => (451, "4.7.1 Rate limit reached, try again later"),
        };
        if (code == 0)
        {
            return;
        }

        if (where == "rcpt")
        {
            session.RecipientReason = decision.Reason;
        }

        session.EmitThrottle(code, text[..5], where + ": " + decision.Reason, decision.Tarpit);
        throw new SmtpResponseException(Replies.Response(code, text));
    }
}
