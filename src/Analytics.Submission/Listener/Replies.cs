using System.Text.RegularExpressions;
using SmtpServer.Protocol;

namespace Analytics.Submission.Listener;

/// <summary>
/// How replies read on the wire. SmtpServer writes fixed texts without RFC 3463 enhanced status
/// codes (and appends retry counters to errors); every reply passes through here on its way out,
/// so this table is the one place where replies get their codes and wording.
/// </summary>
internal static partial class Replies
{
    public static SmtpResponse Response(int code, string text) => new((SmtpReplyCode)code, text);

    /// <summary>Renders the final line of a reply: returns the code, the enhanced status and the text after it.</summary>
    public static (int Code, string Status, string Text) Render(int code, string text, SessionState session, object? current)
    {
        if (session.Oversize && code is 554 or 552)
        {
            // DataCommand answers our "too large" read error with a generic 554.
            return (552, "5.3.4", "Message size exceeds fixed maximum message size");
        }

        text = RetrySuffix().Replace(text, "");
        var match = EnhancedStatus().Match(text);
        if (match.Success)
        {
            return (code, match.Groups[1].Value, text[match.Length..].TrimStart());
        }

        var (status, wording) = code switch
        {
            220 => ("2.0.0", "Ready to start TLS"),
            221 => ("2.0.0", "Bye"),
            235 => ("2.7.0", "Authentication successful"),
            250 when current is MailCommand => ("2.1.0", "Sender OK"),
            250 when current is RcptCommand => ("2.1.5", "Recipient OK"),
            250 => ("2.0.0", "OK"),
            421 when session.Listener.Draining => ("4.3.2", "Service shutting down, closing connection"),
            421 => ("4.4.2", "Timeout, closing connection"),
            500 => ("5.5.2", "Syntax error, command unrecognized"),
            501 => ("5.5.4", "Syntax error in parameters or arguments"),
            502 => ("5.5.1", "Command not implemented"),
            503 => ("5.5.1", "Bad sequence of commands"),
            504 => ("5.5.4", "Command parameter not implemented"),
            530 => ("5.7.0", "Authentication required"),
            535 => ("5.7.8", "Authentication credentials invalid"),
            552 => ("5.3.4", "Message size exceeds fixed maximum message size"),
            554 => ("5.3.0", "Transaction failed"),
            >= 500 => ("5.0.0", text),
            >= 400 => ("4.0.0", text),
            _ => ("2.0.0", text),
        };
        return (code, status, wording);
    }

    [GeneratedRegex(@",\s*-?\d+\s+(retry\(ies\)|attempt\(s\))\s+remaining\.?\s*$")]
    private static partial Regex RetrySuffix();

    [GeneratedRegex(@"^([245]\.\d{1,3}\.\d{1,3})(\s|$)")]
    private static partial Regex EnhancedStatus();
}
