using System.Diagnostics;
using System.Globalization;
using System.Net;
using Analytics.Events;
using Analytics.Limits;

namespace Analytics.Policy.Tests;

/// <summary>One Postfix + Dovecot stack with the engine beside it, shared by the tests of a class (each uses its own accounts and addresses).</summary>
public sealed class MailStackFixture : IAsyncLifetime
{
    internal MailStack? Stack { get; private set; }

    public static readonly Dictionary<string, string> Accounts = BuildAccounts();

    private static Dictionary<string, string> BuildAccounts()
    {
        var accounts = new Dictionary<string, string>
        {
            ["alice@example.test"] = "alice-pw",
            ["bob@example.test"] = "bob-pw",
            ["carol@example.test"] = "carol-pw",
            ["dave@example.test"] = "dave-pw",
        };
        for (var i = 0; i < 50; i++)
        {
            // The last one really has the sprayed password.
            accounts[string.Create(CultureInfo.InvariantCulture, $"user{i:00}@example.test")] = i == 49 ? "Summer2024!" : "pw-" + i;
        }

        return accounts;
    }

    public async ValueTask InitializeAsync()
    {
        if (MailStack.MissingReason is null)
        {
            Stack = await MailStack.StartAsync(Accounts);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Stack is not null)
        {
            await Stack.DisposeAsync();
        }
    }
}

/// <summary>Against the real Postfix 3.7 and Dovecot 2.3 from Debian, started by the tests: what the engine sees and what it makes them do.</summary>
public sealed class PostfixDovecotTests(MailStackFixture fixture) : IClassFixture<MailStackFixture>
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(15);

    private MailStack Stack
    {
        get
        {
            Assert.SkipWhen(MailStack.MissingReason is not null, MailStack.MissingReason ?? "");
            return fixture.Stack!;
        }
    }

    [Fact]
    public async Task AuthFailuresAndSuccesses_ThroughPostfixAndDovecot_BecomeAuthEvents()
    {
        var stack = Stack;
        await using (var bot = await Smtp.ConnectAsync("127.61.0.1", stack.Postfix.SubmissionEndPoint))
        {
            Assert.Equal(535, await bot.AuthAsync("bob@example.test", "wrong"));
            Assert.Equal(235, await bot.AuthAsync("bob@example.test", "bob-pw"));
        }

        var failed = await stack.Events.WaitForAsync(e => e.Kind == EventKind.Auth && e.ReplyCode == 535 && e.ClientIp.ToString() == "127.61.0.1", Wait, "auth 535");
        var ok = await stack.Events.WaitForAsync(e => e.Kind == EventKind.Auth && e.ReplyCode == 235 && e.ClientIp.ToString() == "127.61.0.1", Wait, "auth 235");
        Assert.Equal("bob@example.test", failed.User);
        Assert.Equal("dovecot", failed.Node);
        Assert.Equal("PLAIN", failed.Mechanism);
        Assert.Contains("smtp", failed.Detail, StringComparison.Ordinal);
        Assert.Equal("bob@example.test", ok.User);

        // Dovecot reports logins: Postfix's own SASL warning in its log is not counted a second time.
        await Task.Delay(500);
        Assert.Single(stack.Events.Of(EventKind.Auth), e => e.ReplyCode == 535 && e.ClientIp.ToString() == "127.61.0.1");
    }

    [Fact]
    public async Task BlockedAccount_IsRefusedByPostfixAtRcpt()
    {
        var stack = Stack;
        stack.Book.Replace([.. stack.Book.Limits, new EntityLimit
        {
            Entity = EntityRef.User("carol@example.test"), Level = LimitLevel.Block, Source = LimitSource.Override, Blocked = true, Reason = "confirmed compromised",
        }]);

        await using var client = await Smtp.ConnectAsync("127.61.0.2", stack.Postfix.SubmissionEndPoint);
        Assert.Equal(235, await client.AuthAsync("carol@example.test", "carol-pw"));
        var (rcpt, data) = await client.MailAsync("carol@example.test", "alice@example.test", "friend@example.net");

        Assert.Equal([550, 550], rcpt);
        Assert.Equal(0, data);
        var refused = await stack.Events.WaitForAsync(e => e.Kind == EventKind.Rcpt && e.User == "carol@example.test" && e.ReplyCode == 550, Wait, "carol's refused RCPT");
        Assert.Equal("postfix", refused.Node);
        Assert.Equal("confirmed compromised", refused.Detail);
    }

    [Fact]
    public async Task ThrottledAccount_Gets4xx_AfterItsRate()
    {
        var stack = Stack;
        stack.Book.Replace([.. stack.Book.Limits, new EntityLimit
        {
            Entity = EntityRef.User("dave@example.test"), Level = LimitLevel.Throttle, Source = LimitSource.Override, MessagesPerMinute = 2, Reason = "burst",
        }]);

        await using var client = await Smtp.ConnectAsync("127.61.0.3", stack.Postfix.SubmissionEndPoint);
        Assert.Equal(235, await client.AuthAsync("dave@example.test", "dave-pw"));
        var results = new List<(List<int> Rcpt, int Data)>();
        for (var i = 0; i < 3; i++)
        {
            results.Add(await client.MailAsync("dave@example.test", "alice@example.test", "bob@example.test"));
        }

        Assert.Equal([250, 250], results[0].Rcpt);
        Assert.Equal(250, results[0].Data);
        Assert.Equal(250, results[1].Data);
        Assert.Equal([451, 451], results[2].Rcpt);
        Assert.Equal(0, results[2].Data);
        await stack.Postfix.WaitForMessagesAsync("alice@example.test", 2, Wait);
        var data = await stack.Events.WaitForAsync(e => e.Kind == EventKind.Data && e.User == "dave@example.test", Wait, "dave's DATA");
        Assert.Equal("recipients=2", data.Detail.Split(' ')[0]);

        // Dovecot's report of the login and Postfix's requests about the messages are one session, as on the listener.
        var login = stack.Events.Of(EventKind.Auth).Single(e => e.User == "dave@example.test");
        Assert.Equal("dovecot", login.Node);
        Assert.Equal(login.SessionId, data.SessionId);
    }

    [Fact]
    public async Task SprayingOnePasswordOverFiftyAccounts_IsSeenAsOnePassword_AndBurned()
    {
        var stack = Stack;
        var codes = new List<int>();
        for (var i = 0; i < 50; i++)
        {
            // One attempt per address: Dovecot's own per-address penalty never comes into it.
            await using var bot = await Smtp.ConnectAsync(string.Create(CultureInfo.InvariantCulture, $"127.62.{i / 200}.{1 + (i % 200)}"), stack.Postfix.SubmissionEndPoint);
            codes.Add(await bot.AuthAsync(string.Create(CultureInfo.InvariantCulture, $"user{i:00}@example.test"), "Summer2024!"));
        }

        // The client only ever sees 535 (Postfix's SASL client has no other answer for a refusal), the account with that very password included.
        Assert.All(codes, c => Assert.Equal(535, c));
        await stack.Events.WaitForAsync(e => e.Kind == EventKind.Auth && e.User == "user49@example.test", Wait, "the 50th report");
        var reports = stack.Events.Of(EventKind.Auth).Where(e => e.User.StartsWith("user", StringComparison.Ordinal)).ToList();
        Assert.Equal(3, reports.Count(e => e.ReplyCode == 535));
        Assert.Equal(47, reports.Count(e => e.ReplyCode == 454));
        Assert.Contains(stack.Events.Of(EventKind.Throttle), e => e.Detail == "refuse a password tried against too many accounts");
    }

    [Fact]
    public async Task UnknownRecipientProbes_OnThePostfixMx_BecomeEvents_AndHoldTheProber()
    {
        var stack = Stack;
        var names = Enumerable.Range(0, 30).Select(i => string.Create(CultureInfo.InvariantCulture, $"guess{i:00}@example.test")).ToList();
        var codes = new List<int>();
        await using (var bot = await Smtp.ConnectAsync("127.63.0.9", stack.Postfix.EndPoint))
        {
            Assert.Equal(250, await bot.SendAsync("MAIL FROM:<probe@bulk.example>"));
            foreach (var name in names)
            {
                var code = await bot.SendAsync($"RCPT TO:<{name}>");
                codes.Add(code);
                if (code is 421 or 0)
                {
                    break;
                }

                // A harvester's pace; the hold comes from the log, a few milliseconds behind Postfix.
                await Task.Delay(50);
            }
        }

        Assert.Equal(421, codes[^1]);
        Assert.InRange(codes.Count(c => c == 550), 8, 12);
        await using (var again = await Smtp.ConnectAsync("127.63.0.9", stack.Postfix.EndPoint))
        {
            Assert.Equal(250, await again.SendAsync("MAIL FROM:<probe@bulk.example>"));
            Assert.Equal(421, await again.SendAsync("RCPT TO:<alice@example.test>"));
        }

        var unknown = stack.Events.Of(EventKind.Rcpt).Where(e => e.ClientIp.ToString() == "127.63.0.9" && e.Status == "5.1.1").ToList();
        Assert.Equal(codes.Count(c => c == 550), unknown.Count);
        Assert.All(unknown, e => Assert.Equal(ListenerRole.Mx, e.Role));
        Assert.Contains(stack.Events.Of(EventKind.Throttle), e => e.ClientIp.ToString() == "127.63.0.9" && e.Detail.StartsWith("hold ip", StringComparison.Ordinal));

        // A legitimate sender elsewhere is untouched.
        await using var relay = await Smtp.ConnectAsync("127.64.0.1", stack.Postfix.EndPoint);
        Assert.Equal(250, (await relay.MailAsync("news@partner.example", "alice@example.test")).Data);
    }
}

/// <summary>The engine stopped under a running Postfix and Dovecot: mail keeps flowing.</summary>
public sealed class EngineDownTests
{
    [Fact]
    public async Task EngineStopped_PostfixAndDovecotKeepWorking()
    {
        Assert.SkipWhen(MailStack.MissingReason is not null, MailStack.MissingReason ?? "");
        await using var stack = await MailStack.StartAsync(new Dictionary<string, string> { ["alice@example.test"] = "alice-pw" });

        var watch = Stopwatch.StartNew();
        await SendAsync(stack, "127.65.0.1");
        var withEngine = watch.Elapsed;
        await stack.Engine.StopAsync(CancellationToken.None);
        watch.Restart();
        await SendAsync(stack, "127.65.0.2");
        var withoutEngine = watch.Elapsed;
        TestContext.Current.TestOutputHelper?.WriteLine($"AUTH + message on submission, and a message on the MX: {withEngine.TotalMilliseconds:0} ms with the engine, {withoutEngine.TotalMilliseconds:0} ms without");

        await stack.Postfix.WaitForMessagesAsync("bob@example.test", 2, TimeSpan.FromSeconds(15));
        await stack.Postfix.WaitForMessagesAsync("carol@example.test", 2, TimeSpan.FromSeconds(15));
        Assert.True(withoutEngine < TimeSpan.FromSeconds(10), $"a message without the engine took {withoutEngine}");
        Assert.Contains("problem talking to server", stack.Postfix.MailLogText, StringComparison.Ordinal);
    }

    private static async Task SendAsync(MailStack stack, string source)
    {
        await using (var submission = await Smtp.ConnectAsync(source, stack.Postfix.SubmissionEndPoint))
        {
            Assert.Equal(235, await submission.AuthAsync("alice@example.test", "alice-pw"));
            Assert.Equal(250, (await submission.MailAsync("alice@example.test", "bob@example.test")).Data);
        }

        await using var mx = await Smtp.ConnectAsync(source, stack.Postfix.EndPoint);
        Assert.Equal(250, (await mx.MailAsync("news@partner.example", "carol@example.test")).Data);
    }
}
