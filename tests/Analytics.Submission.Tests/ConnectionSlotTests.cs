using System.Net;
using System.Text;
using Analytics.Limits;
using Xunit;

namespace Analytics.Submission.Tests;

/// <summary>Connection slots are not cheap to take: pools per role, caps per address and per network, short idle time before AUTH.</summary>
public sealed class ConnectionSlotTests(StoreFixture fixture)
{
    private static string Plain(string user, string password) => Convert.ToBase64String(Encoding.UTF8.GetBytes($"\0{user}\0{password}"));

    [Fact]
    public async Task OneNetwork_TakesAtMostItsShare_OthersAreStillServed()
    {
        await using var h = await Harness.StartAsync(fixture, limits: l =>
        {
            l.Session.MaxSessionsPerIp = 2;
            l.Session.MaxSessionsPerNetwork = 4;
        });
        var held = new List<RawSmtp>();
        try
        {
            for (var i = 1; i <= 4; i++)
            {
                held.Add(await RawSmtp.ConnectAsync(h.Mx, from: IPAddress.Parse($"127.36.0.{i}")));
                Assert.StartsWith("220", held[^1].Greeting, StringComparison.Ordinal);
            }

            // A fifth address of the same /24 is refused, one of another /24 is not.
            await using (var fifth = await RawSmtp.ConnectAsync(h.Mx, from: IPAddress.Parse("127.36.0.5")))
            {
                Assert.Equal("421 4.7.0 Too many connections, try again later", fifth.Greeting);
            }

            await using var other = await RawSmtp.ConnectAsync(h.Mx, from: IPAddress.Parse("127.37.0.1"));
            Assert.StartsWith("220", other.Greeting, StringComparison.Ordinal);
            Assert.Equal(1, h.Listener.Refusals["too many sessions from this network"]);
        }
        finally
        {
            foreach (var c in held)
            {
                await c.DisposeAsync();
            }
        }

        // A refusal is one connect event (no close event, no log line each).
        var events = await h.EventsWhenAsync(e => e.Any(x => x.Kind == "connect" && x.ReplyCode == 421));
        var refused = Assert.Single(events, e => e.Kind == "connect" && e.ReplyCode == 421);
        Assert.Equal("too many sessions from this network", refused.Detail);
    }

    [Fact]
    public async Task AFloodOnTheMx_DoesNotTakeSubmissionsSlots()
    {
        await using var h = await Harness.StartAsync(fixture, o => o.AllowInsecureAuth = true, limits: l => l.Session.MaxSessions = 3);
        var flood = new List<RawSmtp>();
        try
        {
            for (var i = 1; i <= 3; i++)
            {
                flood.Add(await RawSmtp.ConnectAsync(h.Mx, from: IPAddress.Parse($"127.38.{i}.1")));
            }

            await using (var fourth = await RawSmtp.ConnectAsync(h.Mx, from: IPAddress.Parse("127.38.9.1")))
            {
                Assert.StartsWith("421", fourth.Greeting, StringComparison.Ordinal);
            }

            await using var user = await RawSmtp.ConnectAsync(h.Submission, from: IPAddress.Parse("127.39.0.1"));
            Assert.StartsWith("220", user.Greeting, StringComparison.Ordinal);
            await user.CommandAsync("EHLO laptop.example");
            Assert.StartsWith("235", await user.CommandAsync("AUTH PLAIN " + Plain(h.User, Harness.Password)), StringComparison.Ordinal);
        }
        finally
        {
            foreach (var c in flood)
            {
                await c.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task IdleBeforeAuth_IsClosedSoon_AfterAuthTheLongTimeoutApplies()
    {
        await using var h = await Harness.StartAsync(fixture, o => o.AllowInsecureAuth = true, limits: l => l.Session.PreAuthTimeout = TimeSpan.FromMilliseconds(800));
        await using var idle = await RawSmtp.ConnectAsync(h.Submission);
        await idle.CommandAsync("EHLO idle.example");
        await using var user = await RawSmtp.ConnectAsync(h.Submission);
        await user.CommandAsync("EHLO laptop.example");
        Assert.StartsWith("235", await user.CommandAsync("AUTH PLAIN " + Plain(h.User, Harness.Password)), StringComparison.Ordinal);

        Assert.Equal("421 4.4.2 Timeout, closing connection", await idle.ReadReplyAsync());
        Assert.True(await idle.IsClosedAsync());

        // The authenticated session outlived the pre-AUTH timeout and still works.
        await Task.Delay(TimeSpan.FromMilliseconds(400), TestContext.Current.CancellationToken);
        Assert.StartsWith("250", await user.CommandAsync("NOOP"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task AFullPoolOfIdleConnections_GivesTheLongestIdleSlotToANewClient()
    {
        await using var h = await Harness.StartAsync(fixture, limits: l => l.Session.MaxSessions = 3);
        var idle = new List<RawSmtp>();
        try
        {
            for (var i = 1; i <= 3; i++)
            {
                idle.Add(await RawSmtp.ConnectAsync(h.Mx, from: IPAddress.Parse($"127.51.{i}.1")));
                await idle[^1].CommandAsync("EHLO idle.example");
            }

            // Just connected and busy is not idle: a client is not cut off between two commands.
            await using (var early = await RawSmtp.ConnectAsync(h.Mx, from: IPAddress.Parse("127.52.0.1")))
            {
                Assert.StartsWith("421 4.7.0", early.Greeting, StringComparison.Ordinal);
            }

            await Task.Delay(TimeSpan.FromSeconds(2.5), TestContext.Current.CancellationToken);
            Assert.Equal(3, h.Listener.ActiveSessions);
            await using var client = await RawSmtp.ConnectAsync(h.Mx, from: IPAddress.Parse("127.53.0.1"));
            Assert.StartsWith("220", client.Greeting, StringComparison.Ordinal);
            Assert.StartsWith("250", await client.CommandAsync("EHLO ordinary.example"), StringComparison.Ordinal);
            Assert.StartsWith("250", await client.CommandAsync("MAIL FROM:<someone@remote.example>"), StringComparison.Ordinal);
            Assert.StartsWith("250", await client.CommandAsync($"RCPT TO:<alice@{h.Domain}>"), StringComparison.Ordinal);
            Assert.StartsWith("354", await client.CommandAsync("DATA"), StringComparison.Ordinal);
            Assert.StartsWith("250", await client.CommandAsync("Subject: hi\r\n\r\nhello\r\n."), StringComparison.Ordinal);

            // The first idle connection (waiting longest) made room, told why.
            Assert.Equal(1, h.Listener.IdleSessionsEvicted);
            Assert.Equal("421 4.4.2 Timeout, closing connection", await idle[0].ReadReplyAsync());
            Assert.True(await idle[0].IsClosedAsync());
            // Only that one made room (IdleSessionsEvicted above). The count of sessions still open is not
            // checked: at a full pool the others' pre-AUTH wait is cut to 5 s, which a slow machine's
            // transaction above can outlast (seen once in the suite, beside an evaluation run).
        }
        finally
        {
            foreach (var c in idle)
            {
                await c.DisposeAsync();
            }
        }
    }

    [Theory]
    [InlineData("127.54.0.0/16", "127.54.200.9", "127.55.0.1")]
    [InlineData("127.56.7.0/24", "127.56.7.200", "127.56.8.1")]
    [InlineData("127.57.0.0/12", "127.63.1.1", "127.64.0.1")]
    public async Task ANetworkLimit_CoversItsWholePrefix_AndNothingBeyond(string network, string inside, string outside)
    {
        // A /16 blocked only the /24 of its first address once (its prefix length was dropped).
        await using var h = await Harness.StartAsync(fixture);
        h.Book.Replace([new EntityLimit
        {
            Entity = new EntityRef(EntityKind.Net, network), Level = LimitLevel.Block, Source = LimitSource.Override, Blocked = true,
            Reason = "reviewer blocked the network", SetAt = DateTime.UtcNow, Version = 1,
        }]);

        await using (var blocked = await RawSmtp.ConnectAsync(h.Mx, from: IPAddress.Parse(inside)))
        {
            Assert.StartsWith("554 5.7.1", blocked.Greeting, StringComparison.Ordinal);
        }

        await using var served = await RawSmtp.ConnectAsync(h.Mx, from: IPAddress.Parse(outside));
        Assert.StartsWith("220", served.Greeting, StringComparison.Ordinal);
    }
}
