using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;

namespace Analytics.Policy;

/// <summary>What a line of Postfix's log says that the engine uses.</summary>
internal enum MailLogKind
{
    Other,

    /// <summary><c>connect from NAME[IP]</c>: an smtpd process starts a session.</summary>
    Connect,

    /// <summary><c>disconnect from NAME[IP] …</c>: the session ended.</summary>
    Disconnect,

    /// <summary><c>reject: RCPT from NAME[IP]: CODE STATUS &lt;rcpt&gt;: TEXT; from=&lt;…&gt; to=&lt;…&gt;</c>.</summary>
    RejectRcpt,

    /// <summary><c>warning: NAME[IP]: SASL METHOD authentication failed: REASON, sasl_username=USER</c>.</summary>
    SaslFailed,
}

/// <summary>
/// One smtpd line of Postfix's log, in any of the timestamp styles it is written with (syslog's
/// <c>Dec  1 02:58:33 host</c>, RFC 3339, journalctl's <c>short-iso</c>, <c>maillog_file</c>): only the
/// part from <c>…smtpd[PID]: </c> on is read. Lines of other programs, and smtpd lines the engine does
/// not use, come back as <see cref="MailLogKind.Other"/>.
/// </summary>
internal sealed partial record MailLogLine(MailLogKind Kind, int Pid, IPAddress? Client)
{
    public int Code { get; init; }

    public string Status { get; init; } = "";

    public string Recipient { get; init; } = "";

    public string Sender { get; init; } = "";

    /// <summary>The reject's text after <c>Recipient address rejected: </c> (or the whole text), the SASL failure's reason.</summary>
    public string Text { get; init; } = "";

    public string Mechanism { get; init; } = "";

    public string User { get; init; } = "";

    public static MailLogLine Other { get; } = new(MailLogKind.Other, 0, null);

    /// <summary>A recipient Postfix does not know: the harvest signal (x.1.1, "User unknown").</summary>
    public bool UnknownRecipient => Kind == MailLogKind.RejectRcpt &&
        (Status.EndsWith(".1.1", StringComparison.Ordinal) || Text.Contains("User unknown", StringComparison.OrdinalIgnoreCase));

    public static MailLogLine Parse(string line)
    {
        var smtpd = Smtpd().Match(line);
        if (!smtpd.Success)
        {
            return Other;
        }

        var pid = int.Parse(smtpd.Groups["pid"].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture);
        var message = line.AsSpan(smtpd.Index + smtpd.Length);
        Match m;
        if (message.StartsWith("connect from ", StringComparison.Ordinal) && (m = ClientName().Match(line, smtpd.Index + smtpd.Length + 13)).Success)
        {
            return new MailLogLine(MailLogKind.Connect, pid, Address(m));
        }

        if (message.StartsWith("disconnect from ", StringComparison.Ordinal) && (m = ClientName().Match(line, smtpd.Index + smtpd.Length + 16)).Success)
        {
            return new MailLogLine(MailLogKind.Disconnect, pid, Address(m));
        }

        var text = line[(smtpd.Index + smtpd.Length)..];
        if ((m = Reject().Match(text)).Success)
        {
            var reason = m.Groups["text"].Value;
            var colon = reason.IndexOf(" rejected: ", StringComparison.Ordinal);
            return new MailLogLine(MailLogKind.RejectRcpt, pid, Address(m))
            {
                Code = int.Parse(m.Groups["code"].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture),
                Status = m.Groups["status"].Value,
                Recipient = m.Groups["rcpt"].Value,
                Sender = m.Groups["from"].Value,
                Text = colon >= 0 ? reason[(colon + 11)..] : reason,
            };
        }

        if ((m = Sasl().Match(text)).Success)
        {
            return new MailLogLine(MailLogKind.SaslFailed, pid, Address(m))
            {
                Mechanism = m.Groups["mech"].Value,
                Text = m.Groups["reason"].Value,
                User = m.Groups["user"].Success && m.Groups["user"].Value != "(unavailable)" ? m.Groups["user"].Value : "",
            };
        }

        return Other;
    }

    private static IPAddress? Address(Match m)
    {
        var text = m.Groups["ip"].Value;
        if (text.StartsWith("ipv6:", StringComparison.OrdinalIgnoreCase))
        {
            text = text[5..];
        }

        return IPAddress.TryParse(text, out var ip) ? AddressKey.Unmap(ip) : null;
    }

    // "postfix/smtpd[123]: ", "postfix/submission/smtpd[123]: ", "postfix-out/smtpd[9]: " (postmulti instances).
    [GeneratedRegex(@"(?:^|\s)\S*smtpd\[(?<pid>\d{1,10})\]: ", RegexOptions.CultureInvariant)]
    private static partial Regex Smtpd();

    [GeneratedRegex(@"\G[^\[\s]*\[(?<ip>[^\]]{1,64})\]", RegexOptions.CultureInvariant)]
    private static partial Regex ClientName();

    [GeneratedRegex(@"^\S+: reject: RCPT from [^\[\s]*\[(?<ip>[^\]]{1,64})\](?::\d+)?: (?<code>[45]\d\d) (?<status>[45]\.\d{1,3}\.\d{1,3}) <(?<rcpt>[^>]{0,512})>: (?<text>.*?); from=<(?<from>[^>]{0,512})> to=<", RegexOptions.CultureInvariant)]
    private static partial Regex Reject();

    [GeneratedRegex(@"^warning: [^\[\s]*\[(?<ip>[^\]]{1,64})\](?::\d+)?: SASL (?<mech>\S{1,32}) authentication failed: (?<reason>.*?)(?:, sasl_username=(?<user>.{0,320}))?$", RegexOptions.CultureInvariant)]
    private static partial Regex Sasl();
}
