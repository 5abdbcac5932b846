using System.Net;
using Analytics.Events;
using Analytics.Submission.Rules;
using Microsoft.Extensions.Logging;

namespace Analytics.Policy;

/// <summary>
/// What only Postfix's log shows, applied as the listener applies it. A recipient Postfix rejected as
/// unknown is the listener's 550 5.1.1: a RCPT event, and the unknown-recipient rules (tarpit and
/// disconnect within the session, holds on the address, its network and the account across sessions),
/// enforced back through the policy service at the client's next command. A SASL failure (recorded here
/// only when no Dovecot policy server reports logins) is a failed AUTH for the limit book. A line is
/// attributed to the client's session the policy service saw last, else to the smtpd process's own.
/// </summary>
internal sealed partial class MailLogReader
{
    // A policy session this recent is taken to be the one the line is about (the placement that asks
    // first at every RCPT makes it milliseconds).
    private static readonly TimeSpan SameSession = TimeSpan.FromMinutes(1);

    private readonly PolicyEngine _engine;
    private readonly ILogger _logger;

    // smtpd process → the session it serves, for lines no policy request has seen a session for. Only the reader task touches it.
    private readonly Dictionary<int, PostfixSession> _byProcess = [];

    public MailLogReader(PolicyEngine engine, ILogger logger)
    {
        _engine = engine;
        _logger = logger;
    }

    public long Lines { get; private set; }

    public long Applied { get; private set; }

    public async Task RunAsync(ILogSource source, CancellationToken cancellationToken)
    {
        try
        {
            await foreach (var line in source.ReadLinesAsync(cancellationToken))
            {
                try
                {
                    Apply(MailLogLine.Parse(line));
                }
                catch (Exception ex)
                {
                    LogLineFailed(_logger, ex);
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    internal void Apply(MailLogLine line)
    {
        Lines++;
        switch (line.Kind)
        {
            case MailLogKind.Connect:
            case MailLogKind.Disconnect:
                _byProcess.Remove(line.Pid);
                return;
            case MailLogKind.RejectRcpt when line.Client is { } client && !_engine.IsOwnText(line.Text):
                Rejected(line, SessionOf(line.Pid, client, ListenerRole.Mx));
                break;
            case MailLogKind.SaslFailed when line.Client is { } client && _engine.AuthFromPostfix:
                SaslFailed(line, SessionOf(line.Pid, client, ListenerRole.Submission));
                break;
            default:
                return;
        }

        Applied++;
    }

    private void Rejected(MailLogLine line, PostfixSession session)
    {
        lock (session)
        {
            var at = line.Recipient.LastIndexOf('@');
            session.Emit(EventKind.Rcpt, PostfixSession.OutcomeOf(line.Code), (ushort)line.Code, line.Status, line.UnknownRecipient ? "unknown mailbox" : line.Text,
                sender: line.Sender, recipient: line.Recipient, domain: at >= 0 ? line.Recipient[(at + 1)..].ToLowerInvariant() : "");
            if (!line.UnknownRecipient)
            {
                return;
            }

            session.Sender = line.Sender;
            var reply = _engine.Rules.UnknownRecipient(session);
            if (reply.Closes)
            {
                // The listener closes here; Postfix will, at the client's next command, when the policy service answers 421.
                session.Closing ??= reply;
            }
        }
    }

    private void SaslFailed(MailLogLine line, PostfixSession session)
    {
        lock (session)
        {
            session.AuthUser = AccountName.Normalize(line.User);
            var outcome = _engine.Rules.AuthOutcome(session, 0, CredentialCheck.BadPassword);
            session.Emit(EventKind.Auth, EventOutcome.Reject, 535, "5.7.8", outcome.Reason, mechanism: line.Mechanism.ToUpperInvariant(), user: session.AuthUser);
        }
    }

    private PostfixSession SessionOf(int pid, IPAddress client, ListenerRole role)
    {
        var address = AddressKey.Of(client);
        if (_engine.Sessions.Recent(address, SameSession) is { } seen)
        {
            return seen;
        }

        if (_byProcess.TryGetValue(pid, out var own) && own.Address == address)
        {
            return own;
        }

        own = new PostfixSession(_engine, client, 0, role, "");
        if (_byProcess.Count > 10_000)
        {
            _byProcess.Clear(); // connect/disconnect lines were missed (a log filtered elsewhere): start over
        }

        _byProcess[pid] = own;
        return own;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "A mail log line could not be applied")]
    private static partial void LogLineFailed(ILogger logger, Exception exception);
}
