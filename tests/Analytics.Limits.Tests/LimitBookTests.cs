using System.Net;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Analytics.Limits.Tests;

/// <summary>The limit book's checks as a session makes them: the subject keyed once (its cache), rates, locks that end.</summary>
public sealed class LimitBookTests
{
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 11, 28, 12, 0, 0, TimeSpan.Zero));

    private DateTime Now => _time.GetUtcNow().UtcDateTime;

    private static LimitSubject Session(string ip, string user) => new(IPAddress.Parse(ip), user) { Cache = new LimitCache() };

    private EntityLimit Limit(EntityRef entity, LimitLevel level, ulong version, double? messagesPerMinute = null) => new()
    {
        Entity = entity, Level = level, Blocked = level == LimitLevel.Block, Source = LimitSource.Model, MessagesPerMinute = messagesPerMinute, Reason = "test " + version,
        SetAt = Now, ExpiresAt = Now.AddHours(1), Version = version,
    };

    [Fact]
    public void CachedSubject_SeesALimitSetAfterItsFirstCheck_AndItsRelease()
    {
        var book = new LimitBook(new LimitsOptions(), _time);
        var subject = Session("127.5.5.5", "alice@example.org");
        Assert.True(book.CheckMail(subject).IsAllowed);

        book.Replace([Limit(new EntityRef(EntityKind.Ip, "127.5.5.0/24"), LimitLevel.Block, 1)]);
        Assert.Equal(LimitAction.Block, book.CheckMail(subject).Action);
        Assert.Equal(LimitAction.Block, book.CheckConnect(subject).Action);

        book.Replace([]);
        Assert.True(book.CheckMail(subject).IsAllowed);
    }

    [Fact]
    public void OneCache_ForAnotherAccountOrAddress_LooksThemUpAgain()
    {
        var book = new LimitBook(new LimitsOptions(), _time);
        book.Replace([Limit(EntityRef.User("mallory@example.org"), LimitLevel.Block, 1)]);
        var cache = new LimitCache();
        Assert.True(book.CheckMail(new LimitSubject(IPAddress.Parse("127.5.5.5"), "alice@example.org") { Cache = cache }).IsAllowed);
        Assert.Equal(LimitAction.Block, book.CheckMail(new LimitSubject(IPAddress.Parse("127.5.5.5"), "mallory@example.org") { Cache = cache }).Action);

        book.Replace([Limit(new EntityRef(EntityKind.Ip, "127.6.6.6"), LimitLevel.Block, 2)]);
        Assert.True(book.CheckConnect(new LimitSubject(IPAddress.Parse("127.5.5.5"), "") { Cache = cache }).IsAllowed);
        Assert.Equal(LimitAction.Block, book.CheckConnect(new LimitSubject(IPAddress.Parse("127.6.6.6"), "") { Cache = cache }).Action);
    }

    [Fact]
    public void FixedMessageRate_AllowsItsBurst_ThenRefillsOneMessagePerInterval_AcrossSessions()
    {
        var book = new LimitBook(new LimitsOptions { Fixed = { MessagesPerMinute = 6 } }, _time);
        var first = Session("127.5.5.5", "bob@example.org");
        for (var i = 0; i < 6; i++)
        {
            Assert.True(book.CheckMail(first).IsAllowed);
        }

        // Another session of the same account shares the account's bucket.
        var second = Session("127.5.5.6", "bob@example.org");
        Assert.Equal(LimitAction.TempFail, book.CheckMail(second).Action);

        _time.Advance(TimeSpan.FromSeconds(9));
        Assert.Equal(LimitAction.TempFail, book.CheckMail(first).Action);
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(book.CheckMail(second).IsAllowed);
        Assert.Equal(LimitAction.TempFail, book.CheckMail(first).Action);

        // A full minute refills the whole burst, never more.
        _time.Advance(TimeSpan.FromMinutes(5));
        for (var i = 0; i < 6; i++)
        {
            Assert.True(book.CheckMail(first).IsAllowed);
        }

        Assert.Equal(LimitAction.TempFail, book.CheckMail(first).Action);
    }

    [Fact]
    public void ModelRateOfZero_AllowsOneMessage_ThenNone()
    {
        var book = new LimitBook(new LimitsOptions(), _time);
        book.Replace([Limit(EntityRef.User("carol@example.org"), LimitLevel.Throttle, 1, messagesPerMinute: 0)]);
        var subject = Session("127.5.5.5", "carol@example.org");
        Assert.True(book.CheckMail(subject).IsAllowed);
        _time.Advance(TimeSpan.FromHours(1));
        Assert.Equal(LimitAction.TempFail, book.CheckMail(subject).Action);
    }

    [Fact]
    public void IpLock_Ends_AndASecondAttackLocksAgain()
    {
        var options = new LimitsOptions();
        var book = new LimitBook(options, _time);
        var attacker = Session("127.120.0.9", "");
        void Attack()
        {
            for (var i = 0; i < options.FastPath.AuthFailuresPerIp; i++)
            {
                book.RecordAuthFailure(new LimitSubject(IPAddress.Parse("127.120.0.9"), $"user{i}@example.test") { SecretTag = (ulong)(i + 1) });
            }
        }

        Attack();
        Assert.Equal(LimitAction.Lock, book.CheckAuth(attacker).Action);

        // Past the lock and the failure window: the address is free again.
        _time.Advance(options.FastPath.LockoutMax + options.FastPath.AuthFailureWindow);
        Assert.True(book.CheckAuth(attacker).IsAllowed);

        Attack();
        Assert.Equal(LimitAction.Lock, book.CheckAuth(attacker).Action);
    }
}
