using System.Text.Json;
using Xunit;

namespace Analytics.Cli.Tests;

/// <summary>
/// The single-IP scenarios end to end: `analytics scenario run NAME --json` as a real process, which
/// seeds a fresh data directory, starts `serve` as its own child, attacks it over loopback alongside
/// MailKit users, stops it with SIGTERM and reads the store. The targets are the issue's.
/// </summary>
[Collection(AloneCollection.Name)]
public sealed class ScenarioTests
{
    private static async Task<JsonElement> RunAsync(string name)
    {
        await using var run = CliProcess.Start("scenario", "run", name, "--json");
        var code = await run.WaitAsync(TimeSpan.FromMinutes(3));
        var line = run.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault(l => l.StartsWith('{'));
        Assert.True(line is not null, $"no JSON (exit {code}). stdout:\n{run.Stdout}\nstderr:\n{run.Stderr}");
        var report = JsonDocument.Parse(line!).RootElement.Clone();
        Assert.True(code is 0 or 3, $"exit {code}: {run.Stderr}");
        return report;
    }

    private static double Figure(JsonElement report, string key) => report.GetProperty("figures").GetProperty(key).GetProperty("value").GetDouble();

    private static void AssertTargetsMet(JsonElement report)
    {
        var missed = report.GetProperty("figures").EnumerateObject()
            .Where(f => f.Value.TryGetProperty("pass", out var pass) && !pass.GetBoolean())
            .Select(f => $"{f.Name}={f.Value.GetProperty("value")} (target {f.Value.GetProperty("target")})").ToList();
        Assert.True(missed.Count == 0, "targets missed: " + string.Join(", ", missed) + "\n" + report);
        Assert.True(report.GetProperty("pass").GetBoolean());
    }

    [Fact]
    public async Task Bruteforce_OneIpOneAccount_LockedWithinTenAttemptsAndNoLegitimateUserBlocked()
    {
        var report = await RunAsync("bruteforce");

        Assert.InRange(Figure(report, "auth_attempts_before_lock"), 1, 10);
        Assert.Equal(0, Figure(report, "account_taken"));
        Assert.Equal(0, Figure(report, "legit_blocked"));
        Assert.True(Figure(report, "legit_messages_sent") > 0, "the legitimate population sent nothing");
        Assert.InRange(Figure(report, "time_to_limit_p95_s"), 0, 2);
        AssertTargetsMet(report);
    }

    [Fact]
    public async Task Harvest_OneIpOnMx_ConfirmsAtMostThreeMailboxesAndNoLegitimateUserBlocked()
    {
        var report = await RunAsync("harvest");

        Assert.InRange(Figure(report, "harvest_yield"), 0, 3);
        Assert.Equal(0, Figure(report, "false_confirmations"));
        Assert.Equal(0, Figure(report, "legit_blocked"));
        Assert.True(Figure(report, "legit_messages_sent") > 0, "the legitimate population sent nothing");
        Assert.InRange(Figure(report, "time_to_limit_p95_s"), 0, 2);
        AssertTargetsMet(report);
    }
}
