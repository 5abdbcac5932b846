using System.Text;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Analytics.Submission.Tests;

/// <summary>AUTH that stays fast for users and expensive for attackers: a bounded hashing gate and a short credential cache.</summary>
public sealed class CredentialCheckTests(StoreFixture fixture)
{
    private static string Plain(string user, string password) => Convert.ToBase64String(Encoding.UTF8.GetBytes($"\0{user}\0{password}"));

    [Fact]
    public async Task HashGate_FullQueue_AnswersBusyAtOnce_AndTheOwnerGoesAhead()
    {
        var gate = new HashGate(capacity: 1, maxQueue: 1);
        var time = TimeProvider.System;
        var ct = TestContext.Current.CancellationToken;
        Assert.True(await gate.EnterAsync(false, TimeSpan.FromSeconds(5), time, ct));
        var queued = gate.EnterAsync(false, TimeSpan.FromSeconds(5), time, ct).AsTask();
        Assert.False(await gate.EnterAsync(false, TimeSpan.FromSeconds(5), time, ct)); // queue full: busy, no wait
        var owner = gate.EnterAsync(true, TimeSpan.FromSeconds(5), time, ct).AsTask(); // the owner's lane is never refused for a full queue

        gate.Release();
        Assert.True(await owner);
        Assert.False(queued.IsCompleted);
        gate.Release();
        Assert.True(await queued);
        gate.Release();
        Assert.Equal(0, gate.Waiting);
    }

    [Fact]
    public async Task HashGate_WaitPastTheLimit_IsBusy()
    {
        var gate = new HashGate(capacity: 1, maxQueue: 10);
        var ct = TestContext.Current.CancellationToken;
        Assert.True(await gate.EnterAsync(false, TimeSpan.FromSeconds(5), TimeProvider.System, ct));
        Assert.False(await gate.EnterAsync(false, TimeSpan.FromMilliseconds(50), TimeProvider.System, ct));
    }

    [Fact]
    public void CredentialCache_RemembersASuccess_UntilTheTtlOrAPasswordChange()
    {
        var time = new FakeTimeProvider();
        var cache = new CredentialCache(TimeSpan.FromMinutes(5), time);
        cache.Add("ann@x.test", "pw", "hash-1");

        Assert.True(cache.Contains("ann@x.test", "pw", "hash-1"));
        Assert.False(cache.Contains("ann@x.test", "other", "hash-1"));
        Assert.False(cache.Contains("ann@x.test", "pw", "hash-2")); // the password was changed since
        time.Advance(TimeSpan.FromMinutes(6));
        Assert.False(cache.Contains("ann@x.test", "pw", "hash-1"));
    }

    [Fact]
    public async Task ReturningUser_IsNotHashedAgain_AndAChangedPasswordIsCheckedAfresh()
    {
        await using var h = await Harness.StartAsync(fixture, o => o.AllowInsecureAuth = true);
        for (var i = 0; i < 3; i++)
        {
            await using var smtp = await RawSmtp.ConnectAsync(h.Submission);
            await smtp.CommandAsync("EHLO laptop.example");
            Assert.StartsWith("235", await smtp.CommandAsync("AUTH PLAIN " + Plain(h.User, Harness.Password)), StringComparison.Ordinal);
        }

        Assert.Equal(1, h.UserDirectory.HashesComputed);

        await h.Users.SetPasswordAsync(h.User, "a-new-password-1", TestContext.Current.CancellationToken);
        await Harness.EventuallyAsync(() => h.UserDirectory.VerifyAsync(h.User, Harness.Password, false).AsTask().Result == Rules.CredentialCheck.BadPassword);
        await using var old = await RawSmtp.ConnectAsync(h.Submission);
        await old.CommandAsync("EHLO laptop.example");
        Assert.StartsWith("535", await old.CommandAsync("AUTH PLAIN " + Plain(h.User, Harness.Password)), StringComparison.Ordinal);
    }
}
