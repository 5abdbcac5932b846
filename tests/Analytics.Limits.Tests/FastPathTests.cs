using System.Net;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Analytics.Limits.Tests;

/// <summary>
/// The fast path judges by share and history: the hard legitimate cases (an office behind one NAT, a
/// phone with a stale password, a list server with stale addresses) pass while the attacks they
/// resemble are still locked or held, at the shipped defaults.
/// </summary>
public sealed class FastPathTests
{
    private static (LimitBook Book, FakeTimeProvider Time) Create()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 11, 30, 9, 0, 0, TimeSpan.Zero));
        return (new LimitBook(new LimitsOptions(), time), time);
    }

    private static LimitSubject S(string ip, string user = "", ulong tag = 0) => new(IPAddress.Parse(ip), user) { SecretTag = tag };

    [Fact]
    public void OfficeNat_HundredsOfLoginsWithSomeTyposAndAStalePhone_IsNeverLocked()
    {
        var (book, time) = Create();
        const string nat = "127.20.1.1";
        for (var minute = 0; minute < 60; minute++)
        {
            // 20 logins a minute, a typo every minute, the phone's stale password every third minute.
            for (var u = 0; u < 20; u++)
            {
                book.RecordAuthSuccess(S(nat, $"staff{(minute * 20) + u}@office.example"));
            }

            book.RecordAuthFailure(S(nat, $"staff{minute}@office.example", tag: 1000 + (ulong)minute));
            if (minute % 3 == 0)
            {
                book.RecordAuthFailure(S(nat, "phone.owner@office.example", tag: 42));
            }

            time.Advance(TimeSpan.FromMinutes(1));
            Assert.Equal(LimitAction.Allow, book.CheckAuth(S(nat, "anyone@office.example")).Action);
        }

        Assert.Equal(LimitAction.Allow, book.CheckAuth(S(nat, "phone.owner@office.example")).Action);
    }

    [Fact]
    public void TakenOverAccount_BurstFromANewNetwork_IsHeldAtItsRate_TheOwnerAndANewAccountAreNot()
    {
        var (book, time) = Create();
        const string user = "victim@example.test";
        var utc = time.GetUtcNow().UtcDateTime;

        // History from the store: the owner's network for three weeks, a network first used two hours ago.
        book.RememberLogins([
            (user, AddressKey.Of(IPAddress.Parse("127.20.0.0")).Network(), utc.AddDays(-21), utc.AddHours(-3)),
            (user, AddressKey.Of(IPAddress.Parse("127.21.0.0")).Network(), utc.AddHours(-2), utc.AddHours(-1)),
        ]);

        // The attacker logs in from a dozen proxies first: none of them pushes the owner's network out.
        for (var n = 0; n < 12; n++)
        {
            book.RecordAuthSuccess(S($"127.{70 + n}.0.1", user));
        }

        var attacker = S("127.66.6.6", user) with { Cache = new LimitCache() };
        book.RecordAuthSuccess(attacker);
        for (var m = 0; m < 10; m++)
        {
            Assert.True(book.CheckMail(attacker).IsAllowed);
        }

        var refused = book.CheckMail(attacker);
        Assert.Equal(LimitAction.TempFail, refused.Action);
        Assert.Contains("new network", refused.Reason, StringComparison.Ordinal);

        // Every new network of the account shares the rate, the one from two hours ago too.
        Assert.Equal(LimitAction.TempFail, book.CheckMail(S("127.75.0.1", user)).Action);
        Assert.Equal(LimitAction.TempFail, book.CheckMail(S("127.21.0.9", user)).Action);

        // The owner, from the network of three weeks, sends as much as ever.
        var owner = S("127.20.0.7", user) with { Cache = new LimitCache() };
        for (var m = 0; m < 100; m++)
        {
            Assert.True(book.CheckMail(owner).IsAllowed);
        }

        // An account with no older network (a new one) is not judged by the rate.
        var fresh = S("127.90.0.1", "newcomer@example.test");
        book.RecordAuthSuccess(fresh);
        for (var m = 0; m < 100; m++)
        {
            Assert.True(book.CheckMail(fresh).IsAllowed);
        }

        // A day after its first login a network is the account's own.
        time.Advance(TimeSpan.FromDays(1));
        book.RecordAuthSuccess(attacker);
        var later = S("127.66.6.6", user) with { Cache = new LimitCache() };
        for (var m = 0; m < 30; m++)
        {
            Assert.True(book.CheckMail(later).IsAllowed);
        }

        // Off, nothing is held.
        var off = new LimitBook(new LimitsOptions { FastPath = { NewNetworkMessagesPerMinute = 0 } }, time);
        off.RememberLogins([(user, AddressKey.Of(IPAddress.Parse("127.20.0.0")).Network(), utc.AddDays(-21), utc)]);
        off.RecordAuthSuccess(S("127.66.6.6", user));
        for (var m = 0; m < 30; m++)
        {
            Assert.True(off.CheckMail(S("127.66.6.6", user)).IsAllowed);
        }
    }

    [Fact]
    public void Guesser_OneIpManyFailures_IsLockedAtTheThreshold()
    {
        var (book, _) = Create();
        AuthFailureOutcome outcome = default;
        for (var i = 0; i < 10; i++)
        {
            outcome = book.RecordAuthFailure(S("127.120.0.9", $"user{i}@example.test", tag: (ulong)(i + 1)));
        }

        Assert.True(outcome.IpLocked);
        Assert.Equal(LimitAction.Lock, book.CheckAuth(S("127.120.0.9", "other@example.test")).Action);
    }

    [Fact]
    public void Account_OneStalePasswordRetried_IsNotLocked_DistinctGuessesAre_ButNeverForTheOwnersNetwork()
    {
        var (book, time) = Create();
        const string user = "alice@example.test";
        book.RecordAuthSuccess(S("127.5.5.5", user));
        for (var i = 0; i < 20; i++)
        {
            book.RecordAuthFailure(S("127.5.5.5", user, tag: 7));
        }

        Assert.Equal(LimitAction.Allow, book.CheckAuth(S("127.5.5.5", user)).Action);

        // Five different wrong passwords from one network far away lock the account for that network, not for Alice at home.
        time.Advance(TimeSpan.FromMinutes(11));
        for (var i = 0; i < 5; i++)
        {
            book.RecordAuthFailure(S("127.140.0.1", user, tag: (ulong)(100 + i)));
        }

        Assert.Equal(LimitAction.Lock, book.CheckAuth(S("127.140.0.9", user)).Action);
        Assert.Equal(LimitAction.Allow, book.CheckAuth(S("127.5.5.9", user)).Action);

        // Guessing spread over many networks locks it everywhere but Alice's own network.
        time.Advance(TimeSpan.FromMinutes(11));
        for (var i = 0; i < 20; i++)
        {
            book.RecordAuthFailure(S($"127.{150 + i}.0.1", user, tag: (ulong)(200 + i)));
        }

        Assert.Equal(LimitAction.Lock, book.CheckAuth(S("127.199.0.1", user)).Action);
        Assert.Equal(LimitAction.Allow, book.CheckAuth(S("127.5.5.9", user)).Action);
    }

    [Fact]
    public void ListServer_FiveHundredRecipientsWithStaleOnes_IsNotHeld_AHarvesterIs()
    {
        var (book, time) = Create();
        var list = S("127.30.0.1", "newsletter@example.test");
        var held = false;
        for (var i = 0; i < 500; i++)
        {
            if (i % 20 == 7)
            {
                held |= book.RecordUnknownRecipient(list).Held; // 5 % stale
            }
            else
            {
                book.RecordKnownRecipient(list);
            }
        }

        Assert.False(held);
        Assert.Equal(LimitAction.Allow, book.CheckConnect(list).Action);

        time.Advance(TimeSpan.FromSeconds(30));
        var harvester = S("127.130.0.1");
        var harvesterHeld = false;
        for (var i = 0; i < 10; i++)
        {
            if (i == 3)
            {
                book.RecordKnownRecipient(harvester); // one guess in ten is a real mailbox
            }
            else
            {
                harvesterHeld |= book.RecordUnknownRecipient(harvester).Held;
            }
        }

        Assert.True(harvesterHeld);
        Assert.Equal(LimitAction.TempFail, book.CheckConnect(harvester).Action);
    }

    [Fact]
    public void Sender_WithARecordOfDeliveredMail_NeedsMoreUnknownRecipientsToBeHeld_ThanANewOne()
    {
        var (book, time) = Create();
        var known = S("127.31.0.1", "tickets@example.test");
        book.RecordDelivery(known, 400);
        time.Advance(TimeSpan.FromHours(2));

        // A burst of stale addresses: 9 unknown, 5 known in a few minutes.
        bool Burst(LimitSubject s)
        {
            var held = false;
            for (var i = 0; i < 14; i++)
            {
                if (i % 3 == 0)
                {
                    book.RecordKnownRecipient(s);
                }
                else
                {
                    held |= book.RecordUnknownRecipient(s).Held;
                }
            }

            return held;
        }

        Assert.False(Burst(known));
        Assert.True(Burst(S("127.32.0.1", "fresh@example.test")));
    }
}
