using Xunit;

namespace Analytics.Cli.Tests;

/// <summary>`bench ingest` truncates the events table of the store it measures: never a real one.</summary>
public sealed class BenchIngestTests
{
    private const string OneEvent = "INSERT INTO events (ts, node, role, session_id, kind, client_ip) VALUES (now64(3), 'prod', 'mx', 1, 'connect', '::ffff:192.0.2.1')";

    [Fact]
    public async Task BenchIngest_RefusesADataDirectoryThatHoldsData_AndLeavesItsEventsAlone()
    {
        using var dir = new TempDirectory();
        var (code, _, stderr) = await CliProcess.RunAsync("sql", OneEvent, "--data", dir.Path);
        Assert.True(code == 0, stderr);

        (code, _, stderr) = await CliProcess.RunAsync("bench", "ingest", "--events", "1000", "--runs", "1", "--data", dir.Path);
        Assert.Equal(2, code);
        Assert.Contains("already holds data", stderr, StringComparison.Ordinal);
        Assert.Contains("--overwrite-bench-data", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);

        var (code2, stdout, stderr2) = await CliProcess.RunAsync("sql", "SELECT count() AS c FROM events WHERE node = 'prod'", "--format", "tsv", "--data", dir.Path);
        Assert.True(code2 == 0, stderr2);
        Assert.Equal("c\n1\n", stdout);
    }

    [Fact]
    public async Task BenchIngest_UsesAnEmptyDirectory_OrANonEmptyOneWhenToldTo()
    {
        using var dir = new TempDirectory();
        var bench = Path.Combine(dir.Path, "bench");
        var (code, stdout, stderr) = await CliProcess.RunAsync("bench", "ingest", "--events", "1000", "--runs", "1", "--json", "--data", bench);
        Assert.True(code == 0, stderr);
        Assert.Contains("sink_events_per_s", stdout, StringComparison.Ordinal);

        // Now it holds the benchmark's own store: a second run needs the flag.
        (code, _, stderr) = await CliProcess.RunAsync("bench", "ingest", "--events", "1000", "--runs", "1", "--json", "--data", bench);
        Assert.Equal(2, code);
        (code, stdout, stderr) = await CliProcess.RunAsync("bench", "ingest", "--events", "1000", "--runs", "1", "--json", "--data", bench, "--overwrite-bench-data");
        Assert.True(code == 0, stderr);
        Assert.Contains("sink_events_per_s", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task BenchIngest_TheWorldShape_MeasuresTheSimulatedWorldsEvents_AndAnUnknownShapeIsRefused()
    {
        var (code, stdout, stderr) = await CliProcess.RunAsync("bench", "ingest", "--events", "2000", "--runs", "1", "--json", "--shape", "world");
        Assert.True(code == 0, stderr);
        Assert.Contains("\"shape\":\"world\"", stdout, StringComparison.Ordinal);
        Assert.Contains("sink_cpu_us_per_event", stdout, StringComparison.Ordinal);
        Assert.Contains("raw_cpu_us_per_event", stdout, StringComparison.Ordinal);

        (code, _, stderr) = await CliProcess.RunAsync("bench", "ingest", "--events", "2000", "--runs", "1", "--shape", "wrld");
        Assert.NotEqual(0, code);
        Assert.Contains("wrld", stderr, StringComparison.Ordinal);
    }
}
