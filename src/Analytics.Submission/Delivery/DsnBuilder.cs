using System.Globalization;
using System.Text;
using MimeKit;

namespace Analytics.Submission.Delivery;

/// <summary>
/// A delivery status notification (RFC 3464): <c>multipart/report; report-type=delivery-status</c> with
/// a human-readable part, the <c>message/delivery-status</c> fields per failed recipient, and the
/// original message's header (<c>text/rfc822-headers</c>, not its body: a bounce should not carry a
/// harvester's payload back, nor double a large message).
/// </summary>
internal static class DsnBuilder
{
    private const int MaxHeaderBytes = 64 * 1024;

    public static byte[] Build(SpoolEnvelope original, IReadOnlyList<RecipientState> failed, string originalPath, string serverName, DateTimeOffset now, bool expired)
    {
        var message = new MimeMessage();
        message.From.Add(new MailboxAddress("Mail Delivery System", "MAILER-DAEMON@" + serverName));
        message.To.Add(MailboxAddress.TryParse(original.Sender, out var sender) ? sender : new MailboxAddress("", original.Sender));
        message.Subject = expired ? "Undelivered Mail Returned to Sender (delivery time expired)" : "Undelivered Mail Returned to Sender";
        message.Date = now;
        message.MessageId = MimeKit.Utils.MimeUtils.GenerateMessageId(serverName);
        // RFC 3834: an automatic reply; vacation responders and list managers leave it alone.
        message.Headers.Add("Auto-Submitted", "auto-replied");

        var explanation = new StringBuilder();
        explanation.Append("This is the mail system at ").Append(serverName).Append(".\r\n\r\n");
        explanation.Append(expired
            ? "Your message could not be delivered in the time allowed to the following recipients; the mail system gave up:\r\n\r\n"
            : "Your message could not be delivered to one or more recipients; its header is attached below.\r\n\r\n");
        foreach (var r in failed)
        {
            explanation.Append('<').Append(r.Address).Append(">: ").Append(r.Reply.Length > 0 ? r.Reply : r.Dsn).Append("\r\n");
        }

        var report = new MultipartReport("delivery-status")
        {
            new TextPart("plain") { Text = explanation.ToString() },
            DeliveryStatus(original, failed, serverName),
            OriginalHeaders(originalPath),
        };
        message.Body = report;

        using var output = new MemoryStream();
        var format = FormatOptions.Default.Clone();
        format.NewLineFormat = NewLineFormat.Dos;
        message.WriteTo(format, output);
        return output.ToArray();
    }

    private static MessageDeliveryStatus DeliveryStatus(SpoolEnvelope original, IReadOnlyList<RecipientState> failed, string serverName)
    {
        var status = new MessageDeliveryStatus();
        var perMessage = new HeaderList
        {
            { "Reporting-MTA", "dns; " + serverName },
            { "X-Analytics-Queue-ID", original.Id },
            { "Arrival-Date", DateUtils(original.ReceivedAt) },
        };
        status.StatusGroups.Add(perMessage);
        foreach (var r in failed)
        {
            var group = new HeaderList
            {
                { "Final-Recipient", "rfc822; " + r.Address },
                { "Action", "failed" },
                { "Status", r.Dsn.Length > 0 ? r.Dsn : "5.0.0" },
            };
            if (r.Hop.Length > 0 && r.Code != 0)
            {
                group.Add("Remote-MTA", "dns; " + r.Hop);
                group.Add("Diagnostic-Code", "smtp; " + r.Code.ToString(CultureInfo.InvariantCulture) + " " + r.Reply);
            }
            else if (r.Reply.Length > 0)
            {
                group.Add("X-Analytics-Reason", r.Reply);
            }

            if (r.At is { } at)
            {
                group.Add("Last-Attempt-Date", DateUtils(at));
            }

            status.StatusGroups.Add(group);
        }

        return status;
    }

    private static MimePart OriginalHeaders(string path)
    {
        var header = new MemoryStream();
        try
        {
            using var file = File.OpenRead(path);
            var buffer = new byte[MaxHeaderBytes];
            var n = file.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
            var end = buffer.AsSpan(0, n).IndexOf("\r\n\r\n"u8);
            header.Write(buffer, 0, end >= 0 ? end + 2 : n);
        }
        catch (IOException)
        {
            // The original is gone (deleted by an operator meanwhile): the report stands without it.
        }

        header.Position = 0;
        return new MimePart("text", "rfc822-headers")
        {
            Content = new MimeContent(header),
            ContentTransferEncoding = ContentEncoding.SevenBit,
        };
    }

    private static string DateUtils(DateTimeOffset at) => MimeKit.Utils.DateUtils.FormatDate(at.ToUniversalTime());
}
