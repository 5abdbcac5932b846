using Analytics.Review.Reviewers;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Analytics.Review.Tests;

/// <summary>The login throttle on its own, with a fake clock.</summary>
public sealed class LoginThrottleTests
{
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 3, 1, 12, 0, 0, TimeSpan.Zero));

    private LoginThrottle Throttle(int perIp = 10, int perName = 5, int trackedKeys = 100) =>
        new(Options.Create(new ReviewOptions { LoginFailuresPerIp = perIp, LoginFailuresPerName = perName, LoginTrackedKeys = trackedKeys, LoginWindow = TimeSpan.FromMinutes(15) }),
            _time, NullLogger<LoginThrottle>.Instance);

    [Fact]
    public void TryBegin_ReservesBeforeTheCheck_SoConcurrentAttemptsBeyondTheBudgetAreRefused()
    {
        var throttle = Throttle(perIp: 100, perName: 3);

        // Three attempts in flight at once, none settled yet: a fourth is refused all the same.
        var inFlight = Enumerable.Range(0, 3).Select(i => throttle.TryBegin("192.0.2." + i, "alice", out _)).ToList();
        Assert.All(inFlight, Assert.NotNull);
        Assert.Null(throttle.TryBegin("192.0.2.9", "alice", out var wait));
        Assert.Equal(TimeSpan.FromMinutes(15), wait);
    }

    [Fact]
    public void Succeeded_GivesTheAttemptBack_AndClearsTheNamesFinishedFailures_ButNotOthersInFlight()
    {
        var throttle = Throttle(perIp: 2, perName: 3);
        throttle.Failed(throttle.TryBegin("192.0.2.1", "alice", out _)!);
        var attacker = throttle.TryBegin("192.0.2.2", "alice", out _)!;
        var owner = throttle.TryBegin("192.0.2.1", "alice", out _)!;
        throttle.Succeeded(owner);

        // The owner's address has one failure, not two; the name keeps the attacker's attempt in flight.
        Assert.NotNull(throttle.TryBegin("192.0.2.1", "bob", out _));
        var more = new[] { throttle.TryBegin("192.0.2.3", "alice", out _), throttle.TryBegin("192.0.2.4", "alice", out _) };
        Assert.All(more, Assert.NotNull);
        Assert.Null(throttle.TryBegin("192.0.2.5", "alice", out _));
        throttle.Failed(attacker);
    }

    [Fact]
    public void AFloodOfDistinctNamesAndAddresses_LeavesTheMapsBounded_AndExpiredWindowsAreSwept()
    {
        var throttle = Throttle(perIp: 10, perName: 5, trackedKeys: 100);

        // A name at its budget before the flood.
        for (var i = 0; i < 5; i++)
        {
            throttle.Failed(throttle.TryBegin("198.51.100." + i, "victim", out _)!);
        }

        for (var i = 0; i < 20_000; i++)
        {
            if (throttle.TryBegin($"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "guess-" + i, out _) is { } attempt)
            {
                throttle.Failed(attempt);
            }

            Assert.True(throttle.TrackedKeys <= 200, $"{throttle.TrackedKeys} keys tracked after {i + 1} attempts");
            _time.Advance(TimeSpan.FromMilliseconds(10));
        }

        // The flood did not push the refused name out to make room.
        Assert.Null(throttle.TryBegin("203.0.113.1", "victim", out _));

        // Once the window has passed, everything goes at the next attempt's sweep.
        _time.Advance(TimeSpan.FromMinutes(16));
        Assert.NotNull(throttle.TryBegin("203.0.113.1", "victim", out _));
        Assert.Equal(2, throttle.TrackedKeys);
    }

    [Fact]
    public void WhenEveryTrackedWindowIsAtItsBudget_NewKeysAreRefused_NotTracked()
    {
        var throttle = Throttle(perIp: 1, perName: 1, trackedKeys: 10);
        for (var i = 0; i < 10; i++)
        {
            throttle.Failed(throttle.TryBegin("192.0.2." + i, "n" + i, out _)!);
        }

        Assert.Null(throttle.TryBegin("192.0.2.200", "someone-new", out var wait));
        Assert.True(wait > TimeSpan.Zero);
        Assert.Equal(20, throttle.TrackedKeys);
    }
}
