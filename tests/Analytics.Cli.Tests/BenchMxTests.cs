using System.Globalization;
using System.Text.RegularExpressions;
using Xunit;

namespace Analytics.Cli.Tests;

/// <summary>`bench mx`: serve and a private Postfix, both driven by smtp-source. Figures are printed, never asserted as timings.</summary>
public sealed class BenchMxTests
{
    [Fact]
    public async Task BenchMx_TinyRun_PrintsBothRatesTheRatio_AndEverySessionReachedTheStore()
    {
        if (PostfixRig.MissingReason is { } missing)
        {
            Assert.Skip(missing);
        }

        if (!File.Exists("/usr/sbin/smtp-source"))
        {
            Assert.Skip("smtp-source is not installed (apt-get install postfix; .ci/run does)");
        }

        var (code, stdout, stderr) = await CliProcess.RunAsync("bench", "mx", "--messages", "40", "--runs", "1");
        Assert.True(code == 0, stdout + stderr);

        var ours = Figure(stdout, "ours, median");
        var postfix = Figure(stdout, "postfix, median");
        Assert.True(ours > 0 && postfix > 0, stdout);
        Assert.True(Figure(stdout, "ours, run 1") > 0, stdout);
        Assert.True(Figure(stdout, "postfix, run 1") > 0, stdout);
        var ratio = Figure(stdout, "ratio of medians, ours/postfix (target ≥ 2)");
        Assert.InRange(ratio, ours / postfix * 0.99, ours / postfix * 1.01);

        // Full capture: the warm-up's 40 sessions and the run's 40, every one in the store.
        Assert.Equal(80, Figure(stdout, "ours: sessions in the event store (of 80 driven)"));
        Assert.Equal(240, Figure(stdout, "ours: accepted RCPT events stored"));
    }

    [Fact]
    public async Task BenchMx_MoreSessionsThanEitherServerTakesFromOneClient_IsRefused()
    {
        var (code, _, stderr) = await CliProcess.RunAsync("bench", "mx", "--sessions", "51");
        Assert.Equal(1, code);
        Assert.Contains("--sessions 1 to 50", stderr, StringComparison.Ordinal);
    }

    /// <summary>The number printed after a figure's label (rates may have thousands separators).</summary>
    private static double Figure(string output, string label)
    {
        var match = Regex.Match(output, "^  " + Regex.Escape(label) + @"\s+([0-9][0-9,]*(?:\.[0-9]+)?)", RegexOptions.Multiline);
        Assert.True(match.Success, $"'{label}' is not in:\n{output}");
        return double.Parse(match.Groups[1].Value.Replace(",", "", StringComparison.Ordinal), CultureInfo.InvariantCulture);
    }
}
