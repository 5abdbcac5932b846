using System.Globalization;
using System.Net;
using Analytics.Events;
using Analytics.Submission.Rules;

namespace Analytics.Policy;

/// <summary>An answer to Postfix: the action (<c>DUNNO</c>, or <c>CODE STATUS TEXT</c>) and how long to hold it back (tarpit).</summary>
internal readonly record struct PostfixAnswer(string Action, TimeSpan Delay)
{
    public static PostfixAnswer Dunno { get; } = new("DUNNO", TimeSpan.Zero);
}

/// <summary>
/// What the engine answers Postfix, request by request, by the listener's own rules. Postfix asks
/// about a message, not a session, so the rules run where Postfix gives the chance:
/// <list type="bullet">
/// <item>the first request about a message (a new <c>instance</c>) runs the connection check and the
/// MAIL check (one message from the account's and the address's rates), once;</item>
/// <item>a RCPT request runs the recipient check for an acceptable recipient (recipients per message,
/// one from the recipient rates) — Postfix has already refused unknown and relayed addresses;</item>
/// <item>a request with <c>policy_context=connect</c> (placed first, before Postfix says whether an
/// address exists) runs only the connection check, at every command, so a held or blocked client
/// learns nothing more;</item>
/// <item>END-OF-MESSAGE runs the DATA check and records the message.</item>
/// </list>
/// Each answer is the listener's reply as a Postfix action (421 makes Postfix disconnect, as the
/// listener closes); each request becomes the events the listener records for that command.
/// </summary>
internal sealed class PostfixPolicy
{
    public const string ConnectContext = "connect";

    private readonly PolicyEngine _engine;

    public PostfixPolicy(PolicyEngine engine) => _engine = engine;

    public PostfixAnswer Decide(PostfixRequest request)
    {
        if (!IPAddress.TryParse(request.ClientAddress, out var address))
        {
            return PostfixAnswer.Dunno; // not a network client (Postfix sends "unknown" for some local inputs)
        }

        var session = SessionFor(request, address);
        lock (session)
        {
            session.Touch();
            _engine.Sessions.Seen(session);
            var reply = Decide(request, session);
            var delay = session.TakeReplyDelay();
            return reply is { } refused ? Refuse(refused, delay) : PostfixAnswer.Dunno with { Delay = delay };
        }
    }

    private RuleReply? Decide(PostfixRequest request, PostfixSession session)
    {
        if (session.Closing is { } closing)
        {
            return closing;
        }

        var rules = _engine.Rules;
        var state = request.ProtocolState.ToUpperInvariant();
        if (request.PolicyContext == ConnectContext || state is "CONNECT" or "EHLO" or "HELO" or "VRFY" or "ETRN")
        {
            if (rules.Connect(session) is { } refused)
            {
                return ConnectionRefused(session, request, refused);
            }

            // Placed first in smtpd_recipient_restrictions, this is where every message starts: its MAIL check runs here.
            return state is "MAIL" or "RCPT" ? Message(request, session) : null;
        }

        if (state is "MAIL" or "RCPT" or "DATA" or "END-OF-MESSAGE" && Message(request, session) is { } messageRefused)
        {
            return messageRefused;
        }

        switch (state)
        {
            case "RCPT":
                var reply = rules.AcceptedRcpt(session);
                if (reply is null)
                {
                    session.AcceptedRecipients++;
                }

                RecipientEvent(session, request, reply);
                return reply;
            case "END-OF-MESSAGE":
                var size = ParseLong(request.Size);
                var refusal = rules.Data(size);
                session.Emit(EventKind.Data, refusal is null ? EventOutcome.Ok : EventOutcome.Reject, refusal?.Code ?? 250, refusal?.Status ?? "2.0.0",
                    string.Create(CultureInfo.InvariantCulture, $"recipients={ParseLong(request.RecipientCount)}{(request.QueueId.Length > 0 ? " queued=" + request.QueueId : "")}"),
                    sender: request.Sender, size: (ulong)Math.Max(0, size));
                if (refusal is null)
                {
                    rules.Delivered(session, (int)Math.Clamp(ParseLong(request.RecipientCount), 0, int.MaxValue));
                }

                return refusal;
            default:
                return null;
        }
    }

    /// <summary>
    /// The connection and MAIL checks of the message under way, run once per message (Postfix's
    /// <c>instance</c>); null when it goes on, else the refusal every request about it gets.
    /// </summary>
    private RuleReply? Message(PostfixRequest request, PostfixSession session)
    {
        if (request.Instance.Length == 0 || !session.StartsMessage(request.Instance))
        {
            if (session.MessageRefusal is { } refusal && request.ProtocolState.Equals("RCPT", StringComparison.OrdinalIgnoreCase))
            {
                RecipientEvent(session, request, refusal);
            }

            return session.MessageRefusal;
        }

        var rules = _engine.Rules;
        if (rules.Connect(session) is { } refused)
        {
            session.MessageRefusal = refused;
            return ConnectionRefused(session, request, refused);
        }

        session.Sender = request.Sender;
        var declared = ParseLong(request.Size);
        var mail = rules.Mail(session, declared);
        session.Emit(EventKind.Mail, mail is null ? EventOutcome.Ok : PostfixSession.OutcomeOf(mail.Value.Code), mail?.Code ?? 250, mail?.Status ?? "2.1.0",
            mail?.Reason ?? "", sender: request.Sender, size: (ulong)Math.Max(0, declared));
        session.MessageRefusal = mail;
        if (mail is { } mailRefused && request.ProtocolState.Equals("RCPT", StringComparison.OrdinalIgnoreCase))
        {
            RecipientEvent(session, request, mailRefused);
        }

        return mail;
    }

    /// <summary>The listener refuses such a client before its greeting; here the command being asked about is refused, and a 421 ends the session.</summary>
    private static RuleReply ConnectionRefused(PostfixSession session, PostfixRequest request, RuleReply refused)
    {
        session.Throttle(refused.Code, refused.Status, "connection refused: " + refused.Reason, TimeSpan.Zero);
        if (request.ProtocolState.Equals("RCPT", StringComparison.OrdinalIgnoreCase))
        {
            RecipientEvent(session, request, refused);
        }

        if (refused.Closes)
        {
            session.Closing = refused;
        }

        return refused;
    }

    private static void RecipientEvent(PostfixSession session, PostfixRequest request, RuleReply? reply)
    {
        var recipient = request.Recipient;
        var at = recipient.LastIndexOf('@');
        session.Emit(EventKind.Rcpt, reply is { } r ? PostfixSession.OutcomeOf(r.Code) : EventOutcome.Ok, reply?.Code ?? 250, reply?.Status ?? "2.1.5",
            reply?.Reason ?? "", sender: request.Sender, recipient: recipient, domain: at >= 0 ? recipient[(at + 1)..].ToLowerInvariant() : "");
    }

    private PostfixAnswer Refuse(RuleReply reply, TimeSpan delay)
    {
        _engine.SentToPostfix(reply.Text);
        return new PostfixAnswer(string.Create(CultureInfo.InvariantCulture, $"{reply.Code} {reply.Status} {reply.Text}"), delay);
    }

    /// <summary>The client session a request is about (the same for every <c>check_policy_service</c> of one smtpd session), started on its first request.</summary>
    private PostfixSession SessionFor(PostfixRequest request, IPAddress address)
    {
        var port = ushort.TryParse(request.ClientPort, NumberStyles.None, CultureInfo.InvariantCulture, out var p) ? p : (ushort)0;
        var user = request.SaslUsername.Length > 0 ? AccountName.Normalize(request.SaslUsername) : "";
        var session = _engine.Sessions.For(address, port, request.Instance, user.Length > 0,
            id => new PostfixSession(_engine, address, port, user.Length > 0 ? ListenerRole.Submission : ListenerRole.Mx, user, id),
            started =>
            {
                started.Emit(EventKind.Connect, EventOutcome.Ok, 0, "", request.EncryptionProtocol.Length > 0 ? "tls" : "plain", mechanism: request.EncryptionProtocol);
                if (request.HeloName.Length > 0)
                {
                    started.Emit(EventKind.Ehlo, EventOutcome.Ok, 250, "2.0.0", request.HeloName, mechanism: request.ProtocolName.Equals("SMTP", StringComparison.OrdinalIgnoreCase) ? "HELO" : "EHLO");
                }

                if (user.Length > 0)
                {
                    AuthEvent(started, request);
                }
            });
        lock (session)
        {
            if (session.Authenticated(user))
            {
                AuthEvent(session, request); // AUTH after a first message of the session
            }
        }

        return session;
    }

    /// <summary>A login Postfix reports: recorded here only when no Dovecot policy server reports logins itself.</summary>
    private void AuthEvent(PostfixSession session, PostfixRequest request)
    {
        if (_engine.AuthFromPostfix)
        {
            session.Emit(EventKind.Auth, EventOutcome.Ok, 235, "2.7.0", "ok", mechanism: request.SaslMethod.ToUpperInvariant());
        }
    }

    private static long ParseLong(string text) => long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) ? value : 0;
}
