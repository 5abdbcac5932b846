using System.Diagnostics;
using System.Text;
using System.Text.Json;
using MailKit.Net.Smtp;
using MailKit.Security;
using MimeKit;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Options;

namespace Analytics.Submission.Tests;

public sealed class SubmissionListenerTests(StoreFixture fixture)
{
    private static readonly string[] SwaksPaths = ["/usr/bin/swaks", "/usr/local/bin/swaks"];

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static string Plain(string user, string password) => Convert.ToBase64String(Encoding.UTF8.GetBytes($"\0{user}\0{password}"));

    private static async Task<SmtpClient> ConnectMailKitAsync(Harness h)
    {
        // The listener generated a self-signed certificate in its data directory: trust exactly that one.
        using var expected = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(h.Options.KeyDirectory, CertificateProvider.SelfSignedFileName), null);
        var thumbprint = expected.GetCertHashString();
        var client = new SmtpClient { ServerCertificateValidationCallback = (_, certificate, _, _) => certificate?.GetCertHashString() == thumbprint, Timeout = 20_000 };
        await client.ConnectAsync(h.Submission.Address.ToString(), h.Submission.Port, SecureSocketOptions.StartTls, Ct);
        return client;
    }

    private static MimeMessage Message(Harness h, string from, params string[] to)
    {
        var message = new MimeMessage();
        message.From.Add(MailboxAddress.Parse(from));
        foreach (var t in to)
        {
            message.To.Add(MailboxAddress.Parse(t));
        }

        message.Subject = "Quarterly numbers";
        message.MessageId = $"{Guid.NewGuid():N}@{h.Domain}";
        message.Body = new TextPart("plain") { Text = "Hello,\r\n.a line that starts with a dot\r\n\r\nbye\r\n" };
        return message;
    }

    [Theory]
    [InlineData("PLAIN")]
    [InlineData("LOGIN")]
    public async Task Auth_OverStartTls_MessageToThreeRecipients_ArrivesInSpoolByteForByte(string mechanism)
    {
        await using var h = await Harness.StartAsync(fixture);
        using var client = await ConnectMailKitAsync(h);
        Assert.True(client.IsSecure);
        Assert.Contains(mechanism, client.AuthenticationMechanisms);
        client.AuthenticationMechanisms.RemoveWhere(m => m != mechanism);
        await client.AuthenticateAsync(h.User, Harness.Password, Ct);

        var message = Message(h, h.User, $"alice@{h.Domain}", $"bob@{h.Domain}", "someone@example.org");
        var reply = await client.SendAsync(message, Ct);
        await client.DisconnectAsync(true, Ct);
        Assert.Contains("queued as", reply, StringComparison.Ordinal);

        using var expected = new MemoryStream();
        message.WriteTo(new FormatOptions { NewLineFormat = NewLineFormat.Dos }, expected);
        var expectedBytes = expected.ToArray();
        if (!expectedBytes.AsSpan().EndsWith("\r\n"u8))
        {
            expectedBytes = [.. expectedBytes, .. "\r\n"u8];
        }

        var id = reply[(reply.IndexOf("queued as ", StringComparison.Ordinal) + 10)..].Trim();
        var spooled = await File.ReadAllBytesAsync(Path.Combine(h.Listener.SpoolDirectory, id + ".eml"), Ct);
        Assert.Equal(Encoding.Latin1.GetString(expectedBytes), Encoding.Latin1.GetString(spooled));

        using var envelope = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(h.Listener.SpoolDirectory, id + ".json"), Ct));
        Assert.Equal(h.User, envelope.RootElement.GetProperty("sender").GetString());
        Assert.Equal([$"alice@{h.Domain}", $"bob@{h.Domain}", "someone@example.org"],
            envelope.RootElement.GetProperty("recipients").EnumerateArray().Select(e => e.GetString()!).ToArray());
        Assert.Equal(h.User, envelope.RootElement.GetProperty("user").GetString());
        Assert.Equal("submission", envelope.RootElement.GetProperty("role").GetString());
        Assert.True(envelope.RootElement.GetProperty("tls").GetBoolean());
        Assert.Empty(Directory.GetFiles(h.Listener.SpoolDirectory, "*.tmp"));

        var events = await h.EventsWhenAsync(e => e.Any(x => x.Kind == "close"));
        Assert.Single(events.Select(e => e.SessionId).Distinct());
        Assert.Contains(events, e => e.Kind == "connect" && e.ClientIp == "::ffff:127.0.0.1");
        Assert.Contains(events, e => e.Kind == "starttls" && e.Outcome == "ok" && e.Mechanism.StartsWith("Tls1", StringComparison.Ordinal) && e.Detail.StartsWith("TLS_", StringComparison.Ordinal));
        Assert.Contains(events, e => e.Kind == "auth" && e.Outcome == "ok" && e.Mechanism == mechanism && e.User == h.User && e.ReplyCode == 235);
        Assert.Contains(events, e => e.Kind == "mail" && e.Sender == h.User && e.ReplyCode == 250);
        Assert.Equal(3, events.Count(e => e.Kind == "rcpt" && e.Outcome == "ok"));
        Assert.Contains(events, e => e.Kind == "data" && e.ReplyCode == 250 && e.Size == (ulong)spooled.Length && e.Detail.StartsWith("recipients=3", StringComparison.Ordinal));
        Assert.Contains(events, e => e.Kind == "close" && e.Detail == "quit");
        Assert.DoesNotContain(events, e => e.Detail.Contains(Harness.Password, StringComparison.Ordinal) || e.User.Contains(Harness.Password, StringComparison.Ordinal));
        Assert.All(events, e => Assert.Equal("submission", e.Role));
    }

    /// <summary>
    /// On an implicit-TLS endpoint (465) the handshake is recorded as the session's TLS, protocol and
    /// cipher suite, as STARTTLS is, so its sessions count as TLS and the account's client reads the same.
    /// </summary>
    [Fact]
    public async Task ImplicitTls_Handshake_IsRecordedAsTheSessionsTls()
    {
        await using var h = await Harness.StartAsync(fixture, o => o.ImplicitTlsEndpoints = ["127.0.0.1:0"]);
        var endpoint = h.Listener.Endpoints.First(e => e.ImplicitTls).EndPoint;
        using var expected = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(h.Options.KeyDirectory, CertificateProvider.SelfSignedFileName), null);
        var thumbprint = expected.GetCertHashString();
        using var client = new SmtpClient { ServerCertificateValidationCallback = (_, certificate, _, _) => certificate?.GetCertHashString() == thumbprint, Timeout = 20_000 };
        await client.ConnectAsync(endpoint.Address.ToString(), endpoint.Port, SecureSocketOptions.SslOnConnect, Ct);
        Assert.True(client.IsSecure);
        await client.AuthenticateAsync(h.User, Harness.Password, Ct);
        await client.DisconnectAsync(true, Ct);

        var events = await h.EventsWhenAsync(e => e.Any(x => x.Kind == "close"));
        var tls = Assert.Single(events, e => e.Kind == "starttls");
        Assert.Equal("ok", tls.Outcome);
        Assert.StartsWith("Tls1", tls.Mechanism, StringComparison.Ordinal);
        Assert.StartsWith("TLS_", tls.Detail, StringComparison.Ordinal);
        Assert.Contains(events, e => e.Kind == "auth" && e.Outcome == "ok" && e.User == h.User);
    }

    [Fact]
    public async Task Auth_WrongPassword_Gets535_AndAnAuthFailureEvent()
    {
        await using var h = await Harness.StartAsync(fixture);
        using var client = await ConnectMailKitAsync(h);
        client.AuthenticationMechanisms.RemoveWhere(m => m != "PLAIN"); // MailKit would otherwise retry with LOGIN
        var ex = await Assert.ThrowsAsync<AuthenticationException>(() => client.AuthenticateAsync(h.User, "wrong password", Ct));
        Assert.Contains("5.7.8", ex.Message, StringComparison.Ordinal);
        await client.DisconnectAsync(true, Ct);

        var events = await h.EventsWhenAsync(e => e.Any(x => x.Kind == "auth"));
        var auth = Assert.Single(events, e => e.Kind == "auth");
        Assert.Equal(("reject", 535, "5.7.8", h.User, "bad password"), (auth.Outcome, auth.ReplyCode, auth.Status, auth.User, auth.Detail));
        Assert.DoesNotContain(events, e => e.Detail.Contains("wrong password", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Mx_UnknownLocalRecipient_Gets550_511_AndARejectedRcptEvent()
    {
        await using var h = await Harness.StartAsync(fixture);
        await using var smtp = await RawSmtp.ConnectAsync(h.Mx);
        Assert.StartsWith("220 mx.test", smtp.Greeting, StringComparison.Ordinal);
        Assert.StartsWith("250", await smtp.CommandAsync("EHLO client.example"), StringComparison.Ordinal);
        Assert.StartsWith("250 2.1.0", await smtp.CommandAsync("MAIL FROM:<sender@example.org>"), StringComparison.Ordinal);
        Assert.StartsWith("250 2.1.5", await smtp.CommandAsync($"RCPT TO:<alice@{h.Domain}>"), StringComparison.Ordinal);
        Assert.Equal("550 5.1.1 Mailbox unknown", await smtp.CommandAsync($"RCPT TO:<nobody@{h.Domain}>"));
        Assert.StartsWith("221 2.0.0", await smtp.CommandAsync("QUIT"), StringComparison.Ordinal);

        var events = await h.EventsWhenAsync(e => e.Any(x => x.Kind == "close"));
        var rejected = Assert.Single(events, e => e.Kind == "rcpt" && e.Outcome == "reject");
        Assert.Equal(($"nobody@{h.Domain}", h.Domain, 550, "5.1.1", "unknown mailbox", "mx"),
            (rejected.Recipient, rejected.RecipientDomain, rejected.ReplyCode, rejected.Status, rejected.Detail, rejected.Role));
        Assert.Contains(events, e => e.Kind == "ehlo" && e.Detail == "client.example");
    }

    [Fact]
    public async Task Submission_MailBeforeAuth_Gets530()
    {
        await using var h = await Harness.StartAsync(fixture);
        await using var smtp = await RawSmtp.ConnectAsync(h.Submission);
        await smtp.CommandAsync("EHLO client.example");
        Assert.StartsWith("530 5.7.0", await smtp.CommandAsync($"MAIL FROM:<{h.User}>"), StringComparison.Ordinal);
        var events = await h.EventsWhenAsync(e => e.Any(x => x.Kind == "mail"));
        Assert.Contains(events, e => e.Kind == "mail" && e.ReplyCode == 530);
    }

    [Fact]
    public async Task Submission_AuthNotOfferedBeforeTls_UnlessAllowed()
    {
        await using var h = await Harness.StartAsync(fixture);
        await using var smtp = await RawSmtp.ConnectAsync(h.Submission);
        await smtp.CommandAsync("EHLO client.example");
        Assert.Contains("250-STARTTLS", smtp.LastReplyLines);
        Assert.DoesNotContain(smtp.LastReplyLines, l => l.Contains("AUTH", StringComparison.Ordinal));
        Assert.StartsWith("5", await smtp.CommandAsync("AUTH PLAIN " + Plain(h.User, Harness.Password)), StringComparison.Ordinal);

        await using var allowed = await Harness.StartAsync(fixture, o => o.AllowInsecureAuth = true);
        await using var insecure = await RawSmtp.ConnectAsync(allowed.Submission);
        await insecure.CommandAsync("EHLO client.example");
        Assert.Contains(insecure.LastReplyLines, l => l.EndsWith("AUTH PLAIN LOGIN", StringComparison.Ordinal));
        Assert.StartsWith("235 2.7.0", await insecure.CommandAsync("AUTH PLAIN " + Plain(allowed.User, Harness.Password)), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Mx_RelayAttempt_Gets554()
    {
        await using var h = await Harness.StartAsync(fixture);
        await using var smtp = await RawSmtp.ConnectAsync(h.Mx);
        await smtp.CommandAsync("EHLO client.example");
        await smtp.CommandAsync("MAIL FROM:<spammer@example.org>");
        Assert.Equal("554 5.7.1 Relay access denied", await smtp.CommandAsync("RCPT TO:<victim@elsewhere.example>"));
        var events = await h.EventsWhenAsync(e => e.Any(x => x.Kind == "rcpt"));
        Assert.Contains(events, e => e.Kind == "rcpt" && e.ReplyCode == 554 && e.Detail == "relay denied" && e.RecipientDomain == "elsewhere.example");
    }

    [Fact]
    public async Task Mx_HarvestProbing_TarpitsThenClosesAtConfiguredN()
    {
        await using var h = await Harness.StartAsync(fixture, limits: l =>
        {
            l.FastPath.UnknownRecipientsBeforeTarpit = 2;
            l.FastPath.UnknownRecipientsBeforeDisconnect = 4;
        });
        await using var smtp = await RawSmtp.ConnectAsync(h.Mx);
        await smtp.CommandAsync("EHLO harvester.example");
        await smtp.CommandAsync("MAIL FROM:<>");
        string[] guesses = ["aaron", "abby", "adam", "adrian", "agnes"];
        var replies = new List<string?>();
        foreach (var local in guesses)
        {
            var reply = await smtp.CommandAsync($"RCPT TO:<{local}@{h.Domain}>");
            replies.Add(reply);
            if (reply is null || reply.StartsWith("421", StringComparison.Ordinal))
            {
                break;
            }
        }

        Assert.Equal(["550 5.1.1 Mailbox unknown", "550 5.1.1 Mailbox unknown", "550 5.1.1 Mailbox unknown", "421 4.7.0 Too many invalid recipients, closing connection"], replies);
        Assert.True(await smtp.IsClosedAsync());

        var events = await h.EventsWhenAsync(e => e.Any(x => x.Kind == "close"));
        Assert.Equal(4, events.Count(e => e.Kind == "rcpt" && e.ReplyCode is 550 or 421));
        Assert.Contains(events, e => e.Kind == "throttle" && e.Detail.StartsWith("tarpit after 2", StringComparison.Ordinal));
        Assert.Contains(events, e => e.Kind == "throttle" && e.ReplyCode == 421 && e.Detail.StartsWith("disconnect after 4", StringComparison.Ordinal));
        Assert.Contains(events, e => e.Kind == "close" && e.Detail == "server closed: unknown recipients");
    }

    [Fact]
    public async Task JoeJob_CalloutsFromTheNullSender_AreNeverHeld_TheSameGuessesFromASenderAre()
    {
        // A spammer forged addresses in the local domain: another provider's MTA verifies each one it
        // was sent (MAIL FROM:<>, one RCPT, QUIT), from one address, many times in a few minutes.
        await using var h = await Harness.StartAsync(fixture);
        async Task<List<string?>> Sessions(System.Net.IPAddress from, string sender, int count)
        {
            var replies = new List<string?>();
            for (var i = 0; i < count; i++)
            {
                await using var smtp = await RawSmtp.ConnectAsync(h.Mx, from: from);
                if (!smtp.Greeting.StartsWith("220", StringComparison.Ordinal))
                {
                    replies.Add(smtp.Greeting);
                    continue;
                }

                await smtp.CommandAsync("EHLO mta1.provider.example");
                await smtp.CommandAsync($"MAIL FROM:<{sender}>");
                replies.Add(await smtp.CommandAsync($"RCPT TO:<forged{i}x@{h.Domain}>"));
                await smtp.CommandAsync("QUIT");
            }

            return replies;
        }

        var callouts = await Sessions(System.Net.IPAddress.Parse("127.40.0.1"), "", 30);
        Assert.All(callouts, r => Assert.Equal("550 5.1.1 Mailbox unknown", r));

        // The same 30 guesses, one a session, with a sender: the address is held past the network's
        // threshold, and its next connection refused for now.
        var prober = await Sessions(System.Net.IPAddress.Parse("127.41.0.1"), "probe@elsewhere.example", 30);
        Assert.Contains(prober, r => r is not null && r.StartsWith("421 4.7.0", StringComparison.Ordinal));

        var events = await h.EventsWhenAsync(e => e.Count(x => x.Kind == "close") >= 60);
        Assert.DoesNotContain(events, e => e.Kind == "throttle" && e.ClientIp.EndsWith("127.40.0.1", StringComparison.Ordinal));
        Assert.Contains(events, e => e.Kind == "throttle" && e.ClientIp.EndsWith("127.41.0.1", StringComparison.Ordinal) && e.Detail.Contains("after unknown recipients", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ListServer_WhoseFirstAddressesAreStale_IsNotTarpitted_OnceItHasDeliveredLately()
    {
        // Issue 17, world C: a ticket system whose list begins with three stale addresses was tarpitted
        // on every send (51 of 295 sessions): within a session the share of unknown recipients was of
        // the first few recipients only. What the sender delivered lately now counts as well.
        await using var h = await Harness.StartAsync(fixture, o => o.AllowInsecureAuth = true, limits: l => l.FastPath.TarpitDelay = TimeSpan.FromMilliseconds(10));
        async Task<List<string?>> SendAsync(IEnumerable<string> recipients)
        {
            await using var smtp = await RawSmtp.ConnectAsync(h.Submission);
            await smtp.CommandAsync("EHLO tickets.example");
            Assert.StartsWith("235", await smtp.CommandAsync("AUTH PLAIN " + Plain(h.User, Harness.Password)), StringComparison.Ordinal);
            await smtp.CommandAsync($"MAIL FROM:<{h.User}>");
            var replies = new List<string?>();
            foreach (var r in recipients)
            {
                replies.Add(await smtp.CommandAsync($"RCPT TO:<{r}>"));
            }

            if (replies.Any(r => r?.StartsWith("250", StringComparison.Ordinal) == true))
            {
                Assert.StartsWith("354", await smtp.CommandAsync("DATA"), StringComparison.Ordinal);
                Assert.StartsWith("250", await smtp.CommandAsync("Subject: ticket\r\n\r\nupdate\r\n."), StringComparison.Ordinal);
            }

            await smtp.CommandAsync("QUIT");
            return replies;
        }

        string[] stale = [$"gone1@{h.Domain}", $"gone2@{h.Domain}", $"gone3@{h.Domain}"];
        string[] team = [.. Enumerable.Range(0, 30).Select(i => $"customer{i}@elsewhere.example")];

        // The first send of the day: no history, so the three stale addresses up front tarpit it, as a probe.
        await SendAsync([.. stale, .. team]);
        var events = await h.EventsWhenAsync(e => e.Any(x => x.Kind == "close"));
        Assert.Single(events, e => e.Kind == "throttle" && e.Detail.StartsWith("tarpit after 3", StringComparison.Ordinal));

        // The next send, after 30 recipients delivered: the same stale addresses are only 550s.
        var replies = await SendAsync([.. stale, .. team]);
        Assert.All(replies.Take(3), r => Assert.Equal("550 5.1.1 Mailbox unknown", r));
        events = await h.EventsWhenAsync(e => e.Count(x => x.Kind == "close") >= 2);
        Assert.Single(events, e => e.Kind == "throttle" && e.Detail.StartsWith("tarpit after 3", StringComparison.Ordinal));
        Assert.Equal(60, events.Count(e => e.Kind == "rcpt" && e.ReplyCode == 250));
    }

    [Fact]
    public async Task Auth_FailuresFromOneIp_LockTheIpAtConfiguredN()
    {
        await using var h = await Harness.StartAsync(fixture, o => o.AllowInsecureAuth = true, limits: l =>
        {
            l.FastPath.AuthFailuresPerIp = 3;
            l.FastPath.AuthFailuresPerUser = 100;
            l.Session.MaxAuthFailuresPerSession = 10;
        });
        await using var smtp = await RawSmtp.ConnectAsync(h.Submission);
        await smtp.CommandAsync("EHLO sprayer.example");
        var replies = new List<string?>();
        for (var i = 0; i < 4; i++)
        {
            replies.Add(await smtp.CommandAsync("AUTH PLAIN " + Plain($"guess{i}@{h.Domain}", "123456")));
        }

        Assert.Equal(["535 5.7.8 Authentication credentials invalid", "535 5.7.8 Authentication credentials invalid", "535 5.7.8 Authentication credentials invalid"], replies.Take(3));
        Assert.StartsWith("454 4.7.0", replies[3], StringComparison.Ordinal);

        // Even the right password is refused while the IP is locked.
        Assert.StartsWith("454 4.7.0", await smtp.CommandAsync("AUTH PLAIN " + Plain(h.User, Harness.Password)), StringComparison.Ordinal);

        var events = await h.EventsWhenAsync(e => e.Count(x => x.Kind == "auth") >= 5);
        Assert.Contains(events, e => e.Kind == "throttle" && e.Detail.StartsWith("lock ip 127.0.0.1", StringComparison.Ordinal));
        Assert.Equal(2, events.Count(e => e.Kind == "auth" && e.ReplyCode == 454));
    }

    [Fact]
    public async Task Auth_MalformedBase64_Gets535_AndTheSessionGoesOn()
    {
        await using var h = await Harness.StartAsync(fixture, o => o.AllowInsecureAuth = true);
        await using var smtp = await RawSmtp.ConnectAsync(h.Submission);
        await smtp.CommandAsync("EHLO client.example");
        // SmtpServer's parser refuses a non-base64 token itself (5xx); a well-formed token that is not PLAIN's shape reaches us.
        Assert.StartsWith("5", await smtp.CommandAsync("AUTH PLAIN !!!not-base64!!!"), StringComparison.Ordinal);
        Assert.StartsWith("535 5.7.8", await smtp.CommandAsync("AUTH PLAIN " + Convert.ToBase64String("no separators"u8.ToArray())), StringComparison.Ordinal);
        Assert.StartsWith("334", await smtp.CommandAsync("AUTH LOGIN"), StringComparison.Ordinal);
        Assert.StartsWith("334", await smtp.CommandAsync("*** garbage ***"), StringComparison.Ordinal);
        Assert.StartsWith("535 5.7.8", await smtp.CommandAsync("also garbage"), StringComparison.Ordinal);
        Assert.StartsWith("235 2.7.0", await smtp.CommandAsync("AUTH PLAIN " + Plain(h.User, Harness.Password)), StringComparison.Ordinal);
        var events = await h.EventsWhenAsync(e => e.Count(x => x.Kind == "auth") >= 3);
        Assert.Equal(2, events.Count(e => e.Kind == "auth" && e.Detail == "malformed response"));
    }

    [Fact]
    public async Task Message_LargerThanSize_Gets552_AtMailAndAtData()
    {
        await using var h = await Harness.StartAsync(fixture, limits: l => l.Session.MaxMessageSize = 64 * 1024);

        // MailKit declares SIZE, so the refusal comes at MAIL FROM.
        using (var client = await ConnectMailKitAsync(h))
        {
            await client.AuthenticateAsync(h.User, Harness.Password, Ct);
            var message = Message(h, h.User, $"alice@{h.Domain}");
            message.Body = new TextPart("plain") { Text = new string('x', 100 * 1024) };
            var ex = await Assert.ThrowsAsync<SmtpCommandException>(() => client.SendAsync(message, Ct));
            Assert.Equal(552, (int)ex.StatusCode);
        }

        // A client that declares nothing is cut off once the data passes the limit.
        await using var smtp = await RawSmtp.ConnectAsync(h.Mx);
        await smtp.CommandAsync("EHLO client.example");
        await smtp.CommandAsync("MAIL FROM:<a@example.org>");
        await smtp.CommandAsync($"RCPT TO:<alice@{h.Domain}>");
        Assert.StartsWith("354", await smtp.CommandAsync("DATA"), StringComparison.Ordinal);
        var line = Encoding.ASCII.GetBytes(new string('y', 998) + "\r\n");
        try
        {
            for (var i = 0; i < 200; i++)
            {
                await smtp.SendAsync(line);
            }

            await smtp.SendAsync(".\r\n"u8.ToArray());
        }
        catch (IOException)
        {
            // The server may close while we are still sending.
        }

        Assert.Equal("552 5.3.4 Message size exceeds fixed maximum message size", await smtp.ReadReplyAsync());
        Assert.True(await smtp.IsClosedAsync());
        Assert.Empty(Directory.GetFiles(h.Listener.SpoolDirectory, "*.eml"));
    }

    [Fact]
    public async Task GarbageInvalidUtf8AndAHugeLine_GetCleanRepliesOrClose_WhileAnotherClientIsServed()
    {
        await using var h = await Harness.StartAsync(fixture);
        await using var good = await RawSmtp.ConnectAsync(h.Mx);
        Assert.StartsWith("250", await good.CommandAsync("EHLO good.example"), StringComparison.Ordinal);

        await using (var garbage = await RawSmtp.ConnectAsync(h.Mx))
        {
            var random = new byte[4096];
            new Random(42).NextBytes(random);
            for (var i = 0; i + 1 < random.Length; i += 97)
            {
                random[i] = (byte)'\r';
                random[i + 1] = (byte)'\n';
            }

            await garbage.SendAsync(random);
            var reply = await garbage.ReadReplyAsync();
            Assert.True(reply is null || reply.StartsWith('5'), reply);
        }

        await using (var utf8 = await RawSmtp.ConnectAsync(h.Mx))
        {
            var reply = await utf8.CommandAsync(Encoding.Latin1.GetString([0x45, 0x48, 0x4c, 0x4f, 0x20, 0xff, 0xfe, 0xc3, 0x28, 0x80]));
            Assert.True(reply is null || reply.StartsWith('5') || reply.StartsWith("250", StringComparison.Ordinal), reply);
            await utf8.SendAsync([0x4d, 0x41, 0x49, 0x4c, 0x20, 0xc0, 0xaf, 0xed, 0xa0, 0x80, 0x0d, 0x0a]);
            reply = await utf8.ReadReplyAsync();
            Assert.True(reply is null || reply.StartsWith('5'), reply);
        }

        await using (var huge = await RawSmtp.ConnectAsync(h.Mx))
        {
            var line = new byte[10 * 1024 * 1024];
            line.AsSpan().Fill((byte)'A');
            try
            {
                await huge.SendAsync(line);
                await huge.SendAsync("\r\n"u8.ToArray());
            }
            catch (IOException)
            {
            }

            var reply = await huge.ReadReplyAsync();
            Assert.True(reply is null || reply == "500 5.5.2 Line too long, closing connection", reply);
            Assert.True(await huge.IsClosedAsync());
        }

        Assert.StartsWith("250 2.1.0", await good.CommandAsync("MAIL FROM:<a@example.org>"), StringComparison.Ordinal);
        Assert.StartsWith("250 2.1.5", await good.CommandAsync($"RCPT TO:<bob@{h.Domain}>"), StringComparison.Ordinal);
        Assert.StartsWith("221", await good.CommandAsync("QUIT"), StringComparison.Ordinal);

        var events = await h.EventsWhenAsync(e => e.Count(x => x.Kind == "close") >= 4);
        Assert.Contains(events, e => e.Kind == "invalid");
        Assert.Contains(events, e => e.Kind == "close" && e.Detail == "server closed: line too long");
    }

    [Fact]
    public async Task Swaks_ScriptedSession_DeliversOverStartTls()
    {
        var swaks = SwaksPaths.FirstOrDefault(File.Exists);
        if (swaks is null)
        {
            Assert.Skip("swaks is not installed (apt-get install swaks)");
        }

        await using var h = await Harness.StartAsync(fixture);
        var start = new ProcessStartInfo(swaks)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            ArgumentList =
            {
                "--server", h.Submission.Address.ToString(), "--port", h.Submission.Port.ToString(System.Globalization.CultureInfo.InvariantCulture),
                "--tls", "--auth", "LOGIN", "--auth-user", h.User, "--auth-password", Harness.Password,
                "--from", h.User, "--to", $"alice@{h.Domain},friend@example.org", "--header", "Subject: swaks test", "--body", "sent by swaks",
                "--timeout", "20",
            },
        };
        using var process = Process.Start(start)!;
        var output = await process.StandardOutput.ReadToEndAsync(Ct);
        await process.WaitForExitAsync(Ct);
        if (output.Contains("TLS not available", StringComparison.Ordinal))
        {
            Assert.Skip("swaks has no TLS support (apt-get install libnet-ssleay-perl)");
        }

        Assert.True(process.ExitCode == 0, output + await process.StandardError.ReadToEndAsync(Ct));
        Assert.Contains("250 2.0.0 OK: queued as", output, StringComparison.Ordinal);
        var eml = Assert.Single(Directory.GetFiles(h.Listener.SpoolDirectory, "*.eml"));
        Assert.Contains("sent by swaks", await File.ReadAllTextAsync(eml, Ct), StringComparison.Ordinal);
    }

    [Fact]
    public async Task BadConfiguration_FailsBeforeAnyPortOpens()
    {
        var options = new SubmissionOptions
        {
            DataDirectory = Path.Combine(fixture.Root, "bad-" + Guid.NewGuid().ToString("N")[..6]),
            SubmissionEndpoints = ["not-an-endpoint"],
            MxEndpoints = [],
        };
        var ex = await Assert.ThrowsAsync<OptionsValidationException>(() => Harness.StartAsync(fixture, o =>
        {
            o.SubmissionEndpoints = options.SubmissionEndpoints;
            o.MxEndpoints = options.MxEndpoints;
        }, limits: l => l.Session.MaxLineLength = 10));
        Assert.Contains("not-an-endpoint", ex.Message, StringComparison.Ordinal);
        Assert.Contains("MaxLineLength", ex.Message, StringComparison.Ordinal);
    }
}

public sealed class ShutdownTests(StoreFixture fixture)
{
    [Fact]
    public async Task StopAsync_ClosesIdleSessions_AndLetsATransactionInFlightFinish()
    {
        var h = await Harness.StartAsync(fixture, limits: l => l.Session.ShutdownDeadline = TimeSpan.FromSeconds(5));
        await using var idle = await RawSmtp.ConnectAsync(h.Mx);
        await idle.CommandAsync("EHLO idle.example");
        await using var busy = await RawSmtp.ConnectAsync(h.Mx);
        await busy.CommandAsync("EHLO busy.example");
        await busy.CommandAsync("MAIL FROM:<a@example.org>");
        Assert.StartsWith("250", await busy.CommandAsync($"RCPT TO:<alice@{h.Domain}>"), StringComparison.Ordinal);

        var stopping = h.Listener.StopAsync(TestContext.Current.CancellationToken);
        Assert.Equal("421 4.3.2 Service shutting down, closing connection", await idle.ReadReplyAsync());

        Assert.StartsWith("354", await busy.CommandAsync("DATA"), StringComparison.Ordinal);
        Assert.StartsWith("250 2.0.0 OK: queued as", await busy.CommandAsync("Subject: last one\r\n\r\nbody\r\n."), StringComparison.Ordinal);
        Assert.StartsWith("421 4.3.2", await busy.CommandAsync("MAIL FROM:<a@example.org>"), StringComparison.Ordinal);
        await stopping;
        Assert.Equal(0, h.Listener.ActiveSessions);
        Assert.Single(Directory.GetFiles(h.Listener.SpoolDirectory, "*.eml"));

        var events = await h.EventsWhenAsync(e => e.Count(x => x.Kind == "close") >= 2);
        Assert.Equal(2, events.Count(e => e.Kind == "close" && e.Detail == "server closed: shutdown"));
        await h.DisposeAsync();
    }
}

public sealed class EnforcementTests(StoreFixture fixture)
{
    private static string Plain(string user, string password) => Convert.ToBase64String(Encoding.UTF8.GetBytes($"\0{user}\0{password}"));

    [Fact]
    public async Task Auth_FailuresAgainstOneUser_LockThatUserAtConfiguredN_With454()
    {
        await using var h = await Harness.StartAsync(fixture, o => o.AllowInsecureAuth = true, limits: l =>
        {
            l.FastPath.AuthFailuresPerUser = 3;
            l.FastPath.AuthFailuresPerIp = 100;
            l.Session.MaxAuthFailuresPerSession = 10;
        });
        await using var smtp = await RawSmtp.ConnectAsync(h.Submission);
        await smtp.CommandAsync("EHLO stuffer.example");
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal("535 5.7.8 Authentication credentials invalid", await smtp.CommandAsync("AUTH PLAIN " + Plain(h.User, "guess" + i)));
        }

        // The user is locked now, even with the right password; another name from the same IP is not.
        Assert.StartsWith("454 4.7.0", await smtp.CommandAsync("AUTH PLAIN " + Plain(h.User, Harness.Password)), StringComparison.Ordinal);
        Assert.StartsWith("535 5.7.8", await smtp.CommandAsync("AUTH PLAIN " + Plain("other@" + h.Domain, "guess")), StringComparison.Ordinal);

        var events = await h.EventsWhenAsync(e => e.Count(x => x.Kind == "auth") >= 5);
        Assert.Contains(events, e => e.Kind == "throttle" && e.Detail.StartsWith("lock user", StringComparison.Ordinal) && e.User == h.User);
        Assert.Single(events, e => e.Kind == "auth" && e.ReplyCode == 454);
    }

    [Fact]
    public async Task Mail_PastTheStaticMessageRate_Gets451()
    {
        await using var h = await Harness.StartAsync(fixture, o => o.AllowInsecureAuth = true, limits: l => l.Fixed.MessagesPerMinute = 2);
        await using var smtp = await RawSmtp.ConnectAsync(h.Submission);
        await smtp.CommandAsync("EHLO client.example");
        Assert.StartsWith("235", await smtp.CommandAsync("AUTH PLAIN " + Plain(h.User, Harness.Password)), StringComparison.Ordinal);
        for (var i = 0; i < 2; i++)
        {
            Assert.StartsWith("250 2.1.0", await smtp.CommandAsync($"MAIL FROM:<{h.User}>"), StringComparison.Ordinal);
            Assert.StartsWith("250", await smtp.CommandAsync("RSET"), StringComparison.Ordinal);
        }

        Assert.Equal("451 4.7.1 Rate limit reached, try again later", await smtp.CommandAsync($"MAIL FROM:<{h.User}>"));
        var events = await h.EventsWhenAsync(e => e.Any(x => x.Kind == "mail" && x.ReplyCode == 451));
        Assert.Contains(events, e => e.Kind == "mail" && e.ReplyCode == 451 && e.Status == "4.7.1");
    }

    [Fact]
    public async Task Rcpt_PastTheStaticRecipientRate_Gets451()
    {
        await using var h = await Harness.StartAsync(fixture, o => o.AllowInsecureAuth = true, limits: l => l.Fixed.RecipientsPerHour = 2);
        await using var smtp = await RawSmtp.ConnectAsync(h.Submission);
        await smtp.CommandAsync("EHLO client.example");
        Assert.StartsWith("235", await smtp.CommandAsync("AUTH PLAIN " + Plain(h.User, Harness.Password)), StringComparison.Ordinal);
        Assert.StartsWith("250", await smtp.CommandAsync($"MAIL FROM:<{h.User}>"), StringComparison.Ordinal);
        Assert.StartsWith("250 2.1.5", await smtp.CommandAsync($"RCPT TO:<alice@{h.Domain}>"), StringComparison.Ordinal);
        Assert.StartsWith("250 2.1.5", await smtp.CommandAsync("RCPT TO:<friend@example.org>"), StringComparison.Ordinal);
        Assert.Equal("451 4.7.1 Rate limit reached, try again later", await smtp.CommandAsync($"RCPT TO:<bob@{h.Domain}>"));
        var events = await h.EventsWhenAsync(e => e.Any(x => x.Kind == "rcpt" && x.ReplyCode == 451));
        Assert.Contains(events, e => e.Kind == "rcpt" && e.ReplyCode == 451 && e.Recipient == $"bob@{h.Domain}");
    }

    [Fact]
    public async Task Connect_PastThePerIpSessionCap_Gets421_AndASlotFreesWhenASessionEnds()
    {
        await using var h = await Harness.StartAsync(fixture, limits: l => l.Session.MaxSessionsPerIp = 2);
        await using var first = await RawSmtp.ConnectAsync(h.Mx);
        await using var second = await RawSmtp.ConnectAsync(h.Mx);
        Assert.StartsWith("220", first.Greeting, StringComparison.Ordinal);
        Assert.StartsWith("220", second.Greeting, StringComparison.Ordinal);

        await using (var third = await RawSmtp.ConnectAsync(h.Mx))
        {
            Assert.Equal("421 4.7.0 Too many connections, try again later", third.Greeting);
            Assert.True(await third.IsClosedAsync());
        }

        Assert.StartsWith("221", await first.CommandAsync("QUIT"), StringComparison.Ordinal);
        await Harness.EventuallyAsync(() => h.Listener.ActiveSessions < 2);
        await using var fourth = await RawSmtp.ConnectAsync(h.Mx);
        Assert.StartsWith("220", fourth.Greeting, StringComparison.Ordinal);

        var events = await h.EventsWhenAsync(e => e.Any(x => x.Kind == "connect" && x.ReplyCode == 421));
        Assert.Contains(events, e => e.Kind == "connect" && e.ReplyCode == 421 && e.Detail == "too many sessions from this address");
    }
}
