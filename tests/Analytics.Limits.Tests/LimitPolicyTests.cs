using System.Net;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Analytics.Limits.Tests;

[Collection(EmbeddedCollection.Name)]
public sealed class LimitPolicyTests
{
    private static readonly EntityRef Ip = new(EntityKind.Ip, "127.9.9.9");
    private static readonly EntityRef User = new(EntityKind.User, "alice@example.org");

    private static Verdict V(EntityRef e, ThreatClass cls, float score, FakeTimeProvider time) =>
        new(time.GetUtcNow().UtcDateTime, e, cls, score, new Dictionary<string, float> { [cls.ToText()] = score }, 0, false, cls != ThreatClass.Benign, ["why"], "test-model");

    private static (LimitPolicy Policy, LimitBook Book, FakeTimeProvider Time, EmbeddedStore Store) Create(TempDirectory dir)
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 11, 28, 12, 0, 0, TimeSpan.Zero));
        var store = EmbeddedStore.Open(dir.Path);
        new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings()).GetAwaiter().GetResult();
        var (policy, book) = Policy(store, "a", time);
        return (policy, book, time, store);
    }

    private static (LimitPolicy Policy, LimitBook Book) Policy(EmbeddedStore store, string node, FakeTimeProvider time)
    {
        var options = new LimitsOptions { Dynamic = { Node = node } };
        var book = new LimitBook(options, time);
        return (new LimitPolicy(new LimitRecords(store, node), book, options.Dynamic, time, NullLogger.Instance), book);
    }

    private static LimitSubject Subject(string ip, string user = "") => new(IPAddress.Parse(ip), user);

    [Fact]
    public async Task HarvesterVerdict_BlocksTheIp_InTheBookAtOnce_ThenDecaysStepByStep()
    {
        using var dir = new TempDirectory();
        var (policy, book, time, store) = Create(dir);
        await using var _ = store;
        await using var __ = policy;

        Assert.Equal(LimitAction.Allow, book.CheckRcpt(Subject("127.9.9.9"), 0).Action);
        policy.OnVerdicts([V(Ip, ThreatClass.Harvester, 0.95f, time)]);
        Assert.Equal(LimitLevel.Block, policy.Current(Ip).Level);
        Assert.Equal(LimitAction.Block, book.CheckConnect(Subject("127.9.9.9")).Action);
        Assert.Equal(LimitAction.Block, book.CheckRcpt(Subject("127.9.9.9"), 0).Action);
        Assert.Equal(LimitAction.Allow, book.CheckConnect(Subject("127.9.9.10")).Action);

        // A weaker verdict while blocked does not lower the limit (no flapping).
        time.Advance(TimeSpan.FromMinutes(5));
        policy.OnVerdicts([V(Ip, ThreatClass.Harvester, 0.6f, time)]);
        Assert.Equal(LimitLevel.Block, policy.Current(Ip).Level);

        // Quiet past the block hold: one step down to throttle (rates, not refusal)…
        time.Advance(TimeSpan.FromMinutes(61));
        policy.Decay();
        Assert.Equal(LimitLevel.Throttle, policy.Current(Ip).Level);
        Assert.Equal(LimitAction.Allow, book.CheckConnect(Subject("127.9.9.9")).Action);
        Assert.NotNull(policy.Current(Ip).RecipientsPerHour);

        // …then watch, then normal.
        time.Advance(TimeSpan.FromMinutes(16));
        policy.Decay();
        Assert.Equal(LimitLevel.Watch, policy.Current(Ip).Level);
        time.Advance(TimeSpan.FromMinutes(61));
        policy.Decay();
        Assert.Equal(LimitLevel.Normal, policy.Current(Ip).Level);
        Assert.Empty(book.Limits);

        // Every change is recorded with its reason.
        await policy.FlushAsync(TestContext.Current.CancellationToken);
        var history = await policy.HistoryAsync(Ip);
        Assert.Equal(4, history.Count);
        Assert.StartsWith("harvester 0.95", history[^1].Reason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RepeatOffender_SkipsThrottle_AndAFreshFlagRenewsTheHold()
    {
        using var dir = new TempDirectory();
        var (policy, _, time, store) = Create(dir);
        await using var _s = store;
        await using var _p = policy;
        policy.OnVerdicts([V(User, ThreatClass.Compromised, 0.6f, time)]);
        Assert.Equal(LimitLevel.Throttle, policy.Current(User).Level);
        Assert.Equal(1, policy.Current(User).MessagesPerMinute);

        // Renewed by a new flag just before expiry: still throttled after the original hold.
        time.Advance(TimeSpan.FromMinutes(14));
        policy.OnVerdicts([V(User, ThreatClass.Compromised, 0.6f, time)]);
        time.Advance(TimeSpan.FromMinutes(14));
        policy.Decay();
        Assert.Equal(LimitLevel.Throttle, policy.Current(User).Level);

        time.Advance(TimeSpan.FromMinutes(2));
        policy.Decay();
        Assert.Equal(LimitLevel.Watch, policy.Current(User).Level);

        // Back at it: straight to block.
        policy.OnVerdicts([V(User, ThreatClass.Compromised, 0.6f, time)]);
        Assert.Equal(LimitLevel.Block, policy.Current(User).Level);
        Assert.True(policy.Current(User).Blocked);
    }

    [Fact]
    public async Task Overrides_AlwaysWin_UntilTheyExpireOrAreReleased()
    {
        using var dir = new TempDirectory();
        var (policy, book, time, store) = Create(dir);
        await using var _s = store;
        await using var _p = policy;

        // Allowlisted for a day: the model's block is ignored.
        await policy.ApplyAsync(new LimitOverride(User, OverrideKind.Allow, "newsletter, known sender", "ana", time.GetUtcNow().UtcDateTime.AddDays(1)));
        policy.OnVerdicts([V(User, ThreatClass.Compromised, 0.99f, time)]);
        Assert.Equal(LimitSource.Override, policy.Current(User).Source);
        Assert.Equal(LimitAction.Allow, book.CheckMail(Subject("127.1.1.1", User.Name)).Action);

        // A manual limit is enforced exactly.
        await policy.ApplyAsync(new LimitOverride(User, OverrideKind.Manual, "slow down", "ana", null, MessagesPerMinute: 2));
        var s = Subject("127.1.1.1", User.Name);
        Assert.Equal(LimitAction.Allow, book.CheckMail(s).Action);
        Assert.Equal(LimitAction.Allow, book.CheckMail(s).Action);
        Assert.Equal(LimitAction.TempFail, book.CheckMail(s).Action);
        time.Advance(TimeSpan.FromSeconds(30));
        Assert.Equal(LimitAction.Allow, book.CheckMail(s).Action);

        // Block, then release: normal at once, and the model may act again.
        await policy.ApplyAsync(new LimitOverride(User, OverrideKind.Block, "confirmed takeover", "ana"));
        Assert.Equal(LimitAction.Block, book.CheckMail(s).Action);
        Assert.Equal(LimitAction.Lock, book.CheckAuth(s).Action);
        await policy.ApplyAsync(new LimitOverride(User, OverrideKind.Release, "password reset", "ana"));
        Assert.Equal(LimitAction.Allow, book.CheckMail(s).Action);
        Assert.Equal(LimitLevel.Normal, policy.Current(User).Level);
        await Assert.ThrowsAsync<ArgumentException>(() => policy.ApplyAsync(new LimitOverride(User, OverrideKind.Block, " ", "ana")));
    }

    [Fact]
    public async Task TwoNodesOnOneStore_ConvergeThroughTheLimitsTable()
    {
        using var dir = new TempDirectory();
        var (a, bookA, time, store) = Create(dir);
        await using var _s = store;
        await using var _a = a;
        var (b, bookB) = Policy(store, "b", time);
        await using var _b = b;

        a.OnVerdicts([V(new EntityRef(EntityKind.Net, "127.44.0.0/24"), ThreatClass.BruteForce, 0.9f, time)]);
        await a.ApplyAsync(new LimitOverride(User, OverrideKind.Block, "confirmed", "ana"));
        await a.DisposeAsync(); // flush node A's writes

        Assert.True(await b.PullAsync() >= 2);
        Assert.Equal(LimitAction.Lock, bookB.CheckAuth(Subject("127.44.0.77", "bob@example.org")).Action);
        Assert.Equal(LimitAction.Block, bookB.CheckMail(Subject("127.3.3.3", User.Name)).Action);
        Assert.Equal(bookA.Limits.Count, bookB.Limits.Count);

        // B releases; A (restarted) converges on that.
        await b.ApplyAsync(new LimitOverride(User, OverrideKind.Release, "reset", "bo"));
        var (a2, bookA2) = Policy(store, "a", time);
        await using var _a2 = a2;
        await a2.PullAsync();
        Assert.Equal(LimitAction.Allow, bookA2.CheckMail(Subject("127.3.3.3", User.Name)).Action);
    }

    [Fact]
    public async Task LimitBook_UnderConcurrentChecksAndSwaps_NeverExceedsTheRate()
    {
        using var dir = new TempDirectory();
        var (policy, book, time, store) = Create(dir);
        await using var _s = store;
        await using var _p = policy;
        await policy.ApplyAsync(new LimitOverride(User, OverrideKind.Manual, "cap", "ops", null, RecipientsPerHour: 1000));
        var allowed = 0;
        var swapping = Task.Run(() =>
        {
            for (var i = 0; i < 200; i++)
            {
                policy.OnVerdicts([V(new EntityRef(EntityKind.Ip, "127.7.7." + (i % 250)), ThreatClass.Harvester, 0.6f, time)]);
            }
        });
        var subject = Subject("127.1.1.1", User.Name);
        Parallel.For(0, 4000, _ =>
        {
            if (book.CheckRcpt(subject, 0).IsAllowed)
            {
                Interlocked.Increment(ref allowed);
            }
        });
        await swapping;
        Assert.Equal(1000, allowed);
    }
}
