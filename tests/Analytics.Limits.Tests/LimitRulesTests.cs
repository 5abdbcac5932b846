using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Analytics.Limits.Tests;

/// <summary>The policy's decisions alone: verdict + standing + time in, limit change out; no store, no lock.</summary>
public sealed class LimitRulesTests
{
    private static readonly EntityRef Ip = new(EntityKind.Ip, "127.9.9.9");
    private static readonly EntityRef User = EntityRef.User("alice@example.org");
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 11, 28, 12, 0, 0, TimeSpan.Zero));
    private readonly LimitRules _rules = new(new DynamicLimitOptions());

    private DateTime Now => _time.GetUtcNow().UtcDateTime;

    private Verdict V(EntityRef entity, ThreatClass cls, float score, bool flagged = true) =>
        new(Now, entity, cls, score, new Dictionary<string, float> { [cls.ToText()] = score }, 0, false, flagged, ["why"], "m1");

    [Fact]
    public void OnVerdict_ScoreAtBlockThreshold_BlocksAHostWithTheClassAsAField()
    {
        var change = _rules.OnVerdict(V(Ip, ThreatClass.Harvester, 0.9f), default, Now);

        Assert.NotNull(change);
        Assert.True(change.Recorded);
        Assert.True(change.Strike);
        Assert.Equal(LimitLevel.Block, change.Limit.Level);
        Assert.Equal(ThreatClass.Harvester, change.Limit.Class);
        Assert.True(change.Limit.Blocked);
        Assert.Equal(Now + TimeSpan.FromHours(1), change.Limit.ExpiresAt);
    }

    [Fact]
    public void OnVerdict_NotFlagged_ChangesNothing() =>
        Assert.Null(_rules.OnVerdict(V(Ip, ThreatClass.Benign, 0.1f, flagged: false), default, Now));

    [Fact]
    public void OnVerdict_AccountUnderBruteForce_IsSlowedNeverLocked()
    {
        var change = _rules.OnVerdict(V(User, ThreatClass.BruteForce, 0.99f), default, Now)!;

        Assert.Equal(LimitLevel.Block, change.Limit.Level);
        Assert.False(change.Limit.AuthLocked);
        Assert.False(change.Limit.Blocked);
        Assert.Equal(TimeSpan.FromSeconds(2), change.Limit.Tarpit);
    }

    [Fact]
    public void OnVerdict_RepeatOffenderAtThrottleScore_GoesStraightToBlock()
    {
        var change = _rules.OnVerdict(V(User, ThreatClass.Compromised, 0.6f), new EntityStanding(null, Strikes: 1), Now)!;
        Assert.Equal(LimitLevel.Block, change.Limit.Level);
    }

    [Fact]
    public void OnVerdict_WeakerVerdictWhileBlocked_NeverStepsDown()
    {
        var blocked = _rules.OnVerdict(V(Ip, ThreatClass.Harvester, 0.95f), default, Now)!.Limit;
        _time.Advance(TimeSpan.FromMinutes(5));
        Assert.Null(_rules.OnVerdict(V(Ip, ThreatClass.Harvester, 0.6f), new EntityStanding(blocked, 1), Now));
    }

    [Fact]
    public void OnVerdict_SameLevel_RenewsTheHoldInMemoryOnly()
    {
        var throttled = _rules.OnVerdict(V(User, ThreatClass.Compromised, 0.6f), default, Now)!.Limit;
        _time.Advance(TimeSpan.FromMinutes(14));
        var renewed = _rules.OnVerdict(V(User, ThreatClass.Compromised, 0.6f), new EntityStanding(throttled, 1), Now)!;

        Assert.False(renewed.Recorded);
        Assert.Equal(Now + TimeSpan.FromMinutes(15), renewed.Limit.ExpiresAt);
        Assert.Equal(throttled.Reason, renewed.Limit.Reason);
    }

    [Fact]
    public void OnVerdict_ActiveOverride_Wins()
    {
        var allowed = LimitRules.FromOverride(new LimitOverride(User, OverrideKind.Allow, "known sender", "ana", Now.AddDays(1)), Now);
        Assert.Null(_rules.OnVerdict(V(User, ThreatClass.Compromised, 0.99f), new EntityStanding(allowed, 0), Now));
    }

    [Fact]
    public void Decay_StepsDownOneLevelPerHold_KeepingTheClass()
    {
        var limit = _rules.OnVerdict(V(Ip, ThreatClass.Harvester, 0.95f), default, Now)!.Limit;
        Assert.Null(_rules.Decay(limit, Now.AddMinutes(59)));

        _time.Advance(TimeSpan.FromMinutes(61));
        limit = _rules.Decay(limit, Now)!;
        Assert.Equal(LimitLevel.Throttle, limit.Level);
        Assert.Equal(ThreatClass.Harvester, limit.Class);
        Assert.Equal(20, limit.RecipientsPerHour);

        _time.Advance(TimeSpan.FromMinutes(16));
        limit = _rules.Decay(limit, Now)!;
        Assert.Equal(LimitLevel.Watch, limit.Level);

        _time.Advance(TimeSpan.FromMinutes(61));
        limit = _rules.Decay(limit, Now)!;
        Assert.True(limit.IsNormal);
    }

    [Fact]
    public void Decay_ExpiredOverride_ReturnsToNormal()
    {
        var manual = LimitRules.FromOverride(new LimitOverride(User, OverrideKind.Manual, "slow down", "ana", Now.AddHours(1), MessagesPerMinute: 2), Now);
        _time.Advance(TimeSpan.FromHours(2));
        var next = _rules.Decay(manual, Now)!;

        Assert.True(next.IsNormal);
        Assert.Equal(LimitSource.Default, next.Source);
    }
}
