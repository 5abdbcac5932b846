using System.Text.Json.Nodes;
using Xunit;

namespace Analytics.Cli.Tests;

/// <summary>
/// Issue 13, SIGKILL: `chaos kill-serve` SIGKILLs a real `serve` under MX traffic and restarts it. Before
/// the event journal, the DATA events of messages answered 250 in the last flush interval were lost
/// (93 of 5,209 in one run); this round must lose none, store none twice, and keep every message.
/// </summary>
[Collection(nameof(ServeDeliveryTests))]
public sealed class ChaosKillServeTests
{
    [Fact]
    public async Task KillServe_OneRound_EveryMessageAndItsDataEventKept_NothingTwice()
    {
        var (code, stdout, stderr) = await CliProcess.RunAsync("chaos", "kill-serve", "--rounds", "1", "--after", "6", "--clients", "4", "--json");
        var report = JsonNode.Parse(stdout.Trim().Split('\n')[^1])!;
        var figures = report["figures"]!;
        Assert.True(code == 0 && (string?)report["outcome"] == "PASS", stdout + stderr);
        Assert.True((double)figures["accepted"]! > 0, stdout);
        Assert.Equal(0, (double)figures["data_events_missing"]!);
        Assert.Equal(0, (double)figures["duplicate_events"]!);
        Assert.Equal(0, (double)figures["missing_mail"]!);
    }
}
