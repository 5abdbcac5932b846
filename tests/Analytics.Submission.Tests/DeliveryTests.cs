using System.Diagnostics;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Analytics.Submission.Delivery;
using MailKit.Net.Smtp;
using MailKit.Security;
using MimeKit;

namespace Analytics.Submission.Tests;

/// <summary>
/// Accepted mail delivered onward, against real next hops started by the tests on loopback ports in
/// temporary folders: Postfix as the smarthost, Dovecot LMTP as the mailbox server.
/// </summary>
public sealed class DeliveryTests(StoreFixture fixture)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static DeliveryOptions Relay(PostfixRig rig, Action<DeliveryOptions>? configure = null)
    {
        var options = new DeliveryOptions
        {
            Relay = new NextHopOptions { Hosts = [rig.HostPort], Tls = NextHopTls.None },
            MinimalBackoff = TimeSpan.FromMilliseconds(200),
            MaximalBackoff = TimeSpan.FromSeconds(1),
            ConnectTimeout = TimeSpan.FromSeconds(5),
            CommandTimeout = TimeSpan.FromSeconds(30),
            MinFreeBytes = 0,
        };
        configure?.Invoke(options);
        return options;
    }

    private static void SkipWithoutPostfix()
    {
        if (PostfixRig.MissingReason is { } reason)
        {
            Assert.Skip(reason);
        }
    }

    [Fact]
    public async Task SubmittedMessage_ReachesTheSmarthost_WithHeadersAndBodyIntact()
    {
        SkipWithoutPostfix();
        using var dir = new TempDirectory();
        await using var rig = await PostfixRig.CreateAsync(Path.Combine(dir.Path, "postfix"));
        // The first smarthost is down: the next one in the list takes the message.
        await using var h = await Harness.StartAsync(fixture, delivery: Relay(rig, o => o.Relay!.Hosts = ["127.0.0.1:1", rig.HostPort]));

        var message = Message(h.User, "rcpt@dest.test");
        message.Headers.Add("X-Folded", "a header value long enough to be folded by the client when it is written out, " +
            "because it goes on and on past the seventy-eight characters a line should keep to");
        var id = await SubmitAsync(h, message);

        var delivered = Assert.Single(await rig.WaitForMessagesAsync("rcpt@dest.test", 1, Patience));
        var text = Lf(delivered);
        // Postfix's Maildir files end lines with LF; everything we were given arrives after the headers
        // the two hops added, unchanged.
        Assert.EndsWith(Lf(Bytes(message)), text, StringComparison.Ordinal);
        Assert.Contains($"by mx.test (analytics) with ESMTPSA id {id}", text, StringComparison.Ordinal);
        Assert.Contains("for <rcpt@dest.test>", text, StringComparison.Ordinal);
        Assert.StartsWith($"Return-Path: <{h.User}>", text, StringComparison.Ordinal);

        await WaitEmptyAsync(h.Queue!);
        Assert.False(File.Exists(Path.Combine(h.Listener.SpoolDirectory, id + ".json")));
        Assert.False(File.Exists(Path.Combine(h.Listener.SpoolDirectory, id + ".eml")));
        var events = await h.EventsWhenAsync(e => e.Any(x => x.Kind == "delivery"));
        var delivery = Assert.Single(events, e => e.Kind == "delivery");
        Assert.Equal(("ok", 250, "2.0.0", h.User, "rcpt@dest.test", "smtp"), (delivery.Outcome, delivery.ReplyCode, delivery.Status, delivery.User, delivery.Recipient, delivery.Mechanism));
        Assert.Contains("relay " + rig.HostPort, delivery.Detail, StringComparison.Ordinal);
        Assert.Contains("attempt 1 ", delivery.Detail, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("tcp")]
    [InlineData("unix")]
    public async Task InboundMessage_ReachesTheRightMailbox_OverLmtp(string transport)
    {
        if (DovecotRig.MissingReason is { } reason)
        {
            Assert.Skip(reason);
        }

        using var dir = new TempDirectory();
        await using var dovecot = await DovecotRig.StartAsync(Path.Combine(dir.Path, "dovecot"));
        var delivery = new DeliveryOptions
        {
            Mailbox = new NextHopOptions
            {
                Protocol = NextHopProtocol.Lmtp,
                Tls = NextHopTls.None,
                Hosts = [transport == "unix" ? "unix:" + dovecot.LmtpSocket : dovecot.LmtpHostPort],
            },
            MinimalBackoff = TimeSpan.FromMilliseconds(200),
            MaximalBackoff = TimeSpan.FromSeconds(1),
            MinFreeBytes = 0,
        };
        await using var h = await Harness.StartAsync(fixture, delivery: delivery);

        var message = Message("someone@remote.example", $"alice@{h.Domain}");
        using (var client = new SmtpClient { Timeout = 20_000 })
        {
            await client.ConnectAsync(h.Mx.Address.ToString(), h.Mx.Port, SecureSocketOptions.None, Ct);
            await client.SendAsync(message, Ct);
            await client.DisconnectAsync(true, Ct);
        }

        var delivered = Assert.Single(await dovecot.WaitForMessagesAsync($"alice@{h.Domain}", 1, Patience));
        var text = Lf(delivered);
        Assert.EndsWith(Lf(Bytes(message)), text, StringComparison.Ordinal);
        Assert.Contains("by mx.test (analytics) with ESMTP id ", text, StringComparison.Ordinal);
        Assert.Empty(dovecot.Messages($"bob@{h.Domain}"));
        await WaitEmptyAsync(h.Queue!);
        var events = await h.EventsWhenAsync(e => e.Any(x => x.Kind == "delivery"));
        var lmtp = Assert.Single(events, e => e.Kind == "delivery");
        Assert.Equal(("ok", 250, "mx", "lmtp", ""), (lmtp.Outcome, lmtp.ReplyCode, lmtp.Role, lmtp.Mechanism, lmtp.User));
    }

    [Fact]
    public async Task NextHopDown_MessageWaitsInTheQueue_ThenIsDeliveredOnce()
    {
        SkipWithoutPostfix();
        using var dir = new TempDirectory();
        await using var rig = await PostfixRig.CreateAsync(Path.Combine(dir.Path, "postfix"), new PostfixRigOptions { Stopped = true });
        await using var h = await Harness.StartAsync(fixture, delivery: Relay(rig));

        var id = await SubmitAsync(h, Message(h.User, "later@dest.test"));
        await EventuallyAsync(() => h.Queue!.Show(id) is { Attempts: >= 2 });
        var queued = h.Queue!.Show(id)!;
        Assert.Contains("connection refused", queued.LastError, StringComparison.Ordinal);
        Assert.Equal("pending", Assert.Single(queued.Recipients).Status);
        Assert.True(File.Exists(Path.Combine(h.Listener.SpoolDirectory, id + ".state")));

        await rig.StartAsync();
        await rig.WaitForMessagesAsync("later@dest.test", 1, Patience);
        await WaitEmptyAsync(h.Queue);
        await Task.Delay(TimeSpan.FromSeconds(2), Ct);
        Assert.Single(rig.Messages("later@dest.test"));
        var events = await h.EventsWhenAsync(e => e.Any(x => x.Kind == "delivery" && x.Outcome == "ok"));
        Assert.Contains(events, e => e.Kind == "delivery" && e.Outcome == "tempfail" && e.Status == "4.4.1");
        Assert.Single(events, e => e.Kind == "delivery" && e.Outcome == "ok");
    }

    [Fact]
    public async Task NextHopRefusesOneOfThreeRecipients_TheOtherTwoAreDelivered_AndTheSenderGetsADsn()
    {
        SkipWithoutPostfix();
        using var dir = new TempDirectory();
        await using var rig = await PostfixRig.CreateAsync(Path.Combine(dir.Path, "postfix"), new PostfixRigOptions
        {
            RejectRecipients = new Dictionary<string, string> { ["bad@dest.test"] = "550 5.1.1 no such user here" },
        });
        await using var h = await Harness.StartAsync(fixture, delivery: Relay(rig));

        var id = await SubmitAsync(h, Message(h.User, "one@dest.test", "bad@dest.test", "two@dest.test"));
        await rig.WaitForMessagesAsync("one@dest.test", 1, Patience);
        await rig.WaitForMessagesAsync("two@dest.test", 1, Patience);
        var dsnBytes = Assert.Single(await rig.WaitForMessagesAsync(h.User, 1, Patience));
        Assert.Empty(rig.Messages("bad@dest.test"));

        // The DSN goes from the null sender, as RFC 3464 wants, and says who failed and why.
        Assert.StartsWith("Return-Path: <>", Lf(dsnBytes), StringComparison.Ordinal);
        using var dsn = MimeMessage.Load(new MemoryStream(dsnBytes));
        var report = Assert.IsType<MultipartReport>(dsn.Body);
        Assert.Equal("delivery-status", report.ReportType);
        var status = Assert.Single(report.OfType<MessageDeliveryStatus>());
        var perRecipient = Assert.Single(status.StatusGroups, g => g.Contains("Final-Recipient"));
        Assert.Equal("rfc822; bad@dest.test", perRecipient["Final-Recipient"]);
        Assert.Equal("failed", perRecipient["Action"]);
        Assert.Equal("5.1.1", perRecipient["Status"]);
        Assert.Contains("550", perRecipient["Diagnostic-Code"], StringComparison.Ordinal);
        Assert.Contains(id, status.StatusGroups[0]["X-Analytics-Queue-ID"], StringComparison.Ordinal);
        Assert.Contains(report, p => p.ContentType.IsMimeType("text", "rfc822-headers"));

        await WaitEmptyAsync(h.Queue!);
        var events = await h.EventsWhenAsync(e => e.Count(x => x.Kind == "delivery" && x.User == h.User) >= 3);
        var mine = events.Where(e => e.Kind == "delivery" && e.User == h.User).ToList();
        Assert.Equal(2, mine.Count(e => e.Outcome == "ok"));
        var refused = Assert.Single(mine, e => e.Outcome == "reject");
        Assert.Equal(("bad@dest.test", 550, "5.1.1"), (refused.Recipient, refused.ReplyCode, refused.Status));
    }

    [Fact]
    public async Task SpoolQuotaReached_NewMailGets452_AndEveryAcceptedMessageIsDelivered()
    {
        SkipWithoutPostfix();
        using var dir = new TempDirectory();
        await using var rig = await PostfixRig.CreateAsync(Path.Combine(dir.Path, "postfix"), new PostfixRigOptions { Stopped = true });
        await using var h = await Harness.StartAsync(fixture, delivery: Relay(rig, o => o.SpoolQuotaBytes = 20_000));

        var accepted = new List<int>();
        SmtpCommandException? refused = null;
        using (var client = await ConnectAsync(h))
        {
            for (var i = 0; i < 40 && refused is null; i++)
            {
                var message = Message(h.User, $"q{i}@dest.test");
                message.Body = new TextPart("plain") { Text = new string('x', 3000) };
                try
                {
                    await client.SendAsync(message, Ct);
                    accepted.Add(i);
                }
                catch (SmtpCommandException ex)
                {
                    refused = ex;
                }
            }

            await client.DisconnectAsync(true, Ct);
        }

        Assert.NotNull(refused);
        Assert.Equal(452, (int)refused.StatusCode);
        Assert.Contains("4.3.1", refused.Message, StringComparison.Ordinal);
        Assert.InRange(accepted.Count, 3, 7);

        await rig.StartAsync();
        await h.Queue!.FlushAsync(Ct);
        foreach (var i in accepted)
        {
            await rig.WaitForMessagesAsync($"q{i}@dest.test", 1, Patience);
        }

        await WaitEmptyAsync(h.Queue);
        Assert.Equal(accepted.Count, rig.AllMessages().Count);
    }

    [Fact]
    public async Task FullDisk_NewMailGets452_AndWhatWasAcceptedIsWhole()
    {
        if (!PostfixRig.IsRoot())
        {
            Assert.Skip("mounting a small tmpfs as the spool needs root");
        }

        using var dir = new TempDirectory();
        var data = Path.Combine(dir.Path, "data");
        var mail = Path.Combine(data, "mail");
        Directory.CreateDirectory(mail);
        await PostfixRig.RunAsync("/usr/bin/mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", mail);
        try
        {
            var accepted = new List<string>();
            SmtpCommandException? refused = null;
            await using (var h = await Harness.StartAsync(fixture, o => o.DataDirectory = data))
            {
                using var client = await ConnectAsync(h);
                for (var i = 0; i < 20 && refused is null; i++)
                {
                    var message = Message(h.User, "full@dest.test");
                    message.Body = new TextPart("plain") { Text = string.Concat(Enumerable.Repeat(new string('y', 76) + "\r\n", 1000)) };
                    try
                    {
                        var reply = await client.SendAsync(message, Ct);
                        accepted.Add(reply[(reply.IndexOf("queued as ", StringComparison.Ordinal) + 10)..].Trim());
                    }
                    catch (SmtpCommandException ex)
                    {
                        refused = ex;
                    }
                }
            }

            Assert.NotNull(refused);
            Assert.Equal(452, (int)refused.StatusCode);
            Assert.Contains("4.3.1", refused.Message, StringComparison.Ordinal);
            Assert.NotEmpty(accepted);
            foreach (var id in accepted)
            {
                Assert.True(File.Exists(Path.Combine(mail, id + ".json")), id);
                var eml = await File.ReadAllBytesAsync(Path.Combine(mail, id + ".eml"), Ct);
                Assert.True(eml.Length > 78_000, id);
            }

            Assert.Empty(Directory.GetFiles(mail, "*.tmp"));
        }
        finally
        {
            await PostfixRig.RunAsync("/usr/bin/umount", mail);
        }
    }

    [Fact]
    public async Task QueueLifetimeReached_TheMessageBouncesWith447_AndLeavesTheQueue()
    {
        SkipWithoutPostfix();
        using var dir = new TempDirectory();
        // The smarthost defers this recipient every time (450): after the queue lifetime the message
        // bounces, and the DSN (null sender) is delivered to the sender through the same smarthost.
        await using var rig = await PostfixRig.CreateAsync(Path.Combine(dir.Path, "postfix"), new PostfixRigOptions
        {
            RejectRecipients = new Dictionary<string, string> { ["never@dest.test"] = "450 4.2.1 mailbox busy, try later" },
        });
        await using var h = await Harness.StartAsync(fixture, delivery: Relay(rig, o => o.QueueLifetime = TimeSpan.FromSeconds(2)));

        var id = await SubmitAsync(h, Message(h.User, "never@dest.test"));
        var bounce = Lf(Assert.Single(await rig.WaitForMessagesAsync(h.User, 1, Patience)));
        Assert.Null(h.Queue!.Show(id));
        Assert.Contains("Status: 4.4.7", bounce, StringComparison.Ordinal);
        Assert.Contains("Diagnostic-Code: smtp; 450 ", bounce, StringComparison.Ordinal);
        Assert.Contains("mailbox busy", bounce.Replace("\n ", " ", StringComparison.Ordinal), StringComparison.Ordinal);
        Assert.Contains("Final-Recipient: rfc822; never@dest.test", bounce, StringComparison.Ordinal);
        Assert.Contains("delivery time expired", bounce, StringComparison.Ordinal);
        Assert.Empty(rig.Messages("never@dest.test"));
        var events = await h.EventsWhenAsync(e => e.Any(x => x.Kind == "delivery" && x.Status == "4.4.7"));
        Assert.Contains(events, e => e.Kind == "delivery" && e.Status == "4.4.7" && e.Outcome == "reject" && e.Recipient == "never@dest.test");
    }

    [Fact]
    public async Task Routes_DomainRouteFirst_LocalDomainsToTheMailboxServer_TheRestToTheSmarthost()
    {
        var options = new DeliveryOptions
        {
            Relay = new NextHopOptions { Hosts = ["127.0.0.1:2001"] },
            Mailbox = new NextHopOptions { Hosts = ["unix:/run/dovecot/lmtp"], Protocol = NextHopProtocol.Lmtp, Tls = NextHopTls.None },
            Routes = [new RouteOptions { Domains = ["partner.example", ".corp.example"], Hosts = ["127.0.0.1:2002"] }],
        };
        Assert.True(new DeliveryOptionsValidator().Validate(null, options).Succeeded);
        await using var routes = new RouteTable(options, "mx.test", d => d == "local.example", TimeProvider.System);
        Assert.Equal("route:partner.example,.corp.example", routes.Resolve("a@partner.example", "submission")?.Name);
        Assert.Equal("route:partner.example,.corp.example", routes.Resolve("a@eu.corp.example", "submission")?.Name);
        Assert.Equal("relay", routes.Resolve("a@corp.example", "submission")?.Name);
        Assert.Equal("mailbox", routes.Resolve("a@LOCAL.example", "submission")?.Name);
        Assert.Equal("lmtp", routes.Resolve("a@local.example", "mx")?.Protocol);
        Assert.Equal("relay", routes.Resolve("someone@elsewhere.example", "mx")?.Name);

        await using var mxOnly = new RouteTable(new DeliveryOptions { Mailbox = options.Mailbox }, "mx.test", _ => false, TimeProvider.System);
        Assert.Equal("mailbox", mxOnly.Resolve("a@removed.example", "mx")?.Name);
        Assert.Null(mxOnly.Resolve("a@elsewhere.example", "submission"));
    }

    [Fact]
    public async Task DeliveryOptions_BadSettings_AreAllNamed()
    {
        var options = new DeliveryOptions
        {
            Relay = new NextHopOptions { Hosts = ["smarthost.example", "unix:relative"], Username = "u", Tls = NextHopTls.Opportunistic },
            Mailbox = new NextHopOptions { Protocol = NextHopProtocol.Lmtp, Hosts = [] },
            Routes = [new RouteOptions { Hosts = ["127.0.0.1:25"] }],
            MinimalBackoff = TimeSpan.FromHours(2),
            MaximalBackoff = TimeSpan.FromHours(1),
        };
        var result = new DeliveryOptionsValidator().Validate(null, options);
        Assert.True(result.Failed);
        var text = string.Join("\n", result.Failures);
        Assert.Contains("Delivery:Relay:Hosts: 'smarthost.example' is not HOST:PORT", text, StringComparison.Ordinal);
        Assert.Contains("'unix:relative'", text, StringComparison.Ordinal);
        Assert.Contains("Delivery:Relay:Username is set without Password", text, StringComparison.Ordinal);
        Assert.Contains("Delivery:Relay:Tls is Opportunistic with AUTH", text, StringComparison.Ordinal);
        Assert.Contains("Delivery:Mailbox:Hosts: no host", text, StringComparison.Ordinal);
        Assert.Contains("Delivery:Routes:0:Domains", text, StringComparison.Ordinal);
        Assert.Contains("Delivery:MaximalBackoff must be at least MinimalBackoff", text, StringComparison.Ordinal);
        Assert.True(new DeliveryOptionsValidator().Validate(null, new DeliveryOptions()).Succeeded);
    }

    [Fact]
    public async Task Backoff_DoublesFromMinimalToMaximal_LikePostfix()
    {
        await using var queue = new DeliveryQueue(new DeliveryOptions(), Path.Combine(fixture.Root, "backoff-" + Guid.NewGuid().ToString("N")[..6]), "mx.test", "n",
            fixture.Sink, _ => false, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        Assert.Equal(
            [300, 600, 1200, 2400, 4000, 4000],
            Enumerable.Range(1, 6).Select(a => (int)queue.Backoff(a).TotalSeconds).ToArray());
    }

    [Fact]
    public async Task DotStuffing_DoublesLeadingDots_AndEndsWithCrlf()
    {
        using var source = new MemoryStream(".a\r\nb\r\n..c\r\nd."u8.ToArray());
        using var target = new MemoryStream();
        await LmtpSession.DotStuffAsync(source, target, Ct);
        Assert.Equal("..a\r\nb\r\n...c\r\nd.\r\n", Encoding.ASCII.GetString(target.ToArray()));
    }

    // ---- helpers ----

    private static MimeMessage Message(string from, params string[] to)
    {
        var message = new MimeMessage();
        message.From.Add(MailboxAddress.Parse(from));
        foreach (var t in to)
        {
            message.To.Add(MailboxAddress.Parse(t));
        }

        message.Subject = "Delivery " + Guid.NewGuid().ToString("N")[..8];
        message.Date = DateTimeOffset.UtcNow;
        message.MessageId = $"{Guid.NewGuid():N}@client.test";
        message.Body = new TextPart("plain") { Text = "Hello,\r\n.a line that starts with a dot\r\n\r\nbye\r\n" };
        return message;
    }

    private static byte[] Bytes(MimeMessage message)
    {
        using var stream = new MemoryStream();
        message.WriteTo(new FormatOptions { NewLineFormat = NewLineFormat.Dos }, stream);
        return stream.ToArray();
    }

    private static string Lf(byte[] bytes) => Encoding.UTF8.GetString(bytes).Replace("\r\n", "\n", StringComparison.Ordinal).TrimEnd('\n') + "\n";

    private static async Task<SmtpClient> ConnectAsync(Harness h)
    {
        using var expected = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(h.Options.KeyDirectory, CertificateProvider.SelfSignedFileName), null);
        var thumbprint = expected.GetCertHashString();
        var client = new SmtpClient { ServerCertificateValidationCallback = (_, c, _, _) => c?.GetCertHashString() == thumbprint, Timeout = 20_000 };
        await client.ConnectAsync(h.Submission.Address.ToString(), h.Submission.Port, SecureSocketOptions.StartTls, Ct);
        await client.AuthenticateAsync(h.User, Harness.Password, Ct);
        return client;
    }

    private static async Task<string> SubmitAsync(Harness h, MimeMessage message)
    {
        using var client = await ConnectAsync(h);
        var reply = await client.SendAsync(message, Ct);
        await client.DisconnectAsync(true, Ct);
        return reply[(reply.IndexOf("queued as ", StringComparison.Ordinal) + 10)..].Trim();
    }

    private static Task WaitEmptyAsync(DeliveryQueue queue) => EventuallyAsync(() => queue.List().Count == 0);

    private static async Task EventuallyAsync(Func<bool> condition)
    {
        var until = Stopwatch.StartNew();
        while (!condition())
        {
            if (until.Elapsed > Patience)
            {
                throw new TimeoutException("Condition not met in time.");
            }

            await Task.Delay(50, Ct);
        }
    }
}
