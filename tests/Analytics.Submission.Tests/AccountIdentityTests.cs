using System.Net;
using System.Text;
using Analytics.Limits;
using Xunit;

namespace Analytics.Submission.Tests;

/// <summary>
/// One account, one identity: whatever spelling AUTH carries, the account's limits, locks and events
/// are the canonical name's; and guessing an account's password from elsewhere never locks its owner out.
/// </summary>
public sealed class AccountIdentityTests(StoreFixture fixture)
{
    private static string Plain(string user, string password) => Convert.ToBase64String(Encoding.UTF8.GetBytes($"\0{user}\0{password}"));

    [Fact]
    public async Task BlockedAccount_IsRefusedUnderEverySpellingOfItsName()
    {
        await using var h = await Harness.StartAsync(fixture, o => o.AllowInsecureAuth = true);
        var now = DateTime.UtcNow;
        h.Book.Replace([new EntityLimit
        {
            Entity = EntityRef.User(h.User), Level = LimitLevel.Block, Source = LimitSource.Override, Blocked = true, AuthLocked = true,
            Reason = "confirmed takeover", SetAt = now, Version = 1,
        }]);

        string[] spellings = [h.User, " " + h.User, h.User + "\t", h.User.ToUpperInvariant(), "\u00a0" + h.User, h.User + "\r"];
        foreach (var spelling in spellings)
        {
            await using var smtp = await RawSmtp.ConnectAsync(h.Submission);
            await smtp.CommandAsync("EHLO client.example");
            var reply = await smtp.CommandAsync("AUTH PLAIN " + Plain(spelling, Harness.Password));
            Assert.True(reply?.StartsWith("454 4.7.0", StringComparison.Ordinal) == true, $"'{spelling.Replace("\t", "\\t", StringComparison.Ordinal)}' got {reply}");
        }

        var events = await h.EventsWhenAsync(e => e.Count(x => x.Kind == "auth") >= spellings.Length);
        Assert.All(events.Where(e => e.Kind == "auth"), e => Assert.Equal(h.User, e.User));
    }

    [Fact]
    public async Task StrangersGuessingFromManyNetworks_LockTheAccount_ButNotAgainstItsOwner()
    {
        await using var h = await Harness.StartAsync(fixture, o => o.AllowInsecureAuth = true, limits: l => l.Session.MaxAuthFailuresPerSession = 10);
        var owner = IPAddress.Parse("127.30.1.7");

        // The owner has logged in from home before.
        await using (var first = await RawSmtp.ConnectAsync(h.Submission, from: owner))
        {
            await first.CommandAsync("EHLO home.example");
            Assert.StartsWith("235", await first.CommandAsync("AUTH PLAIN " + Plain(h.User, Harness.Password)), StringComparison.Ordinal);
        }

        // 30 wrong passwords from 10 strangers' addresses, each in a network of its own.
        for (var s = 0; s < 10; s++)
        {
            await using var stranger = await RawSmtp.ConnectAsync(h.Submission, from: IPAddress.Parse($"127.31.{s}.9"));
            await stranger.CommandAsync("EHLO bot.example");
            for (var i = 0; i < 3; i++)
            {
                await stranger.CommandAsync("AUTH PLAIN " + Plain(h.User, $"guess-{s}-{i}"));
            }
        }

        // The owner, from home, with the right password: served, five times out of five.
        for (var i = 0; i < 5; i++)
        {
            await using var smtp = await RawSmtp.ConnectAsync(h.Submission, from: owner);
            await smtp.CommandAsync("EHLO home.example");
            Assert.StartsWith("235", await smtp.CommandAsync("AUTH PLAIN " + Plain(h.User, Harness.Password)), StringComparison.Ordinal);
        }

        // A network the owner never used gets 454 even with the right password while the account is locked.
        await using (var elsewhere = await RawSmtp.ConnectAsync(h.Submission, from: IPAddress.Parse("127.32.0.5")))
        {
            await elsewhere.CommandAsync("EHLO cafe.example");
            Assert.StartsWith("454 4.7.0", await elsewhere.CommandAsync("AUTH PLAIN " + Plain(h.User, Harness.Password)), StringComparison.Ordinal);
        }

        var events = await h.EventsWhenAsync(e => e.Count(x => x.Kind == "auth") >= 37);
        Assert.Contains(events, e => e.Kind == "throttle" && e.Detail.StartsWith("lock user everywhere but its owner's networks", StringComparison.Ordinal));
    }

    [Fact]
    public async Task GuessingFromOneNetwork_LocksThatNetworkOnly()
    {
        await using var h = await Harness.StartAsync(fixture, o => o.AllowInsecureAuth = true, limits: l =>
        {
            l.FastPath.AuthFailuresPerUser = 3;
            l.Session.MaxAuthFailuresPerSession = 10;
        });
        await using (var attacker = await RawSmtp.ConnectAsync(h.Submission, from: IPAddress.Parse("127.33.0.9")))
        {
            await attacker.CommandAsync("EHLO bot.example");
            for (var i = 0; i < 3; i++)
            {
                Assert.StartsWith("535", await attacker.CommandAsync("AUTH PLAIN " + Plain(h.User, "guess" + i)), StringComparison.Ordinal);
            }

            Assert.StartsWith("454 4.7.0", await attacker.CommandAsync("AUTH PLAIN " + Plain(h.User, Harness.Password)), StringComparison.Ordinal);
        }

        // Anyone else, even a first login from a new network, is served.
        await using var owner = await RawSmtp.ConnectAsync(h.Submission, from: IPAddress.Parse("127.34.0.5"));
        await owner.CommandAsync("EHLO laptop.example");
        Assert.StartsWith("235", await owner.CommandAsync("AUTH PLAIN " + Plain(h.User, Harness.Password)), StringComparison.Ordinal);
    }
}
