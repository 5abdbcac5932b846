using Xunit;

namespace Analytics.Cli.Tests;

public sealed class CliTests
{
    [Fact]
    public async Task Help_ListsTheVerbs()
    {
        var (code, stdout, _) = await CliProcess.RunAsync("--help");
        Assert.Equal(0, code);
        Assert.Contains("serve", stdout, StringComparison.Ordinal);
        Assert.Contains("sql", stdout, StringComparison.Ordinal);
        Assert.Contains("--data", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Version_PrintsTheVersion()
    {
        var (code, stdout, _) = await CliProcess.RunAsync("--version");
        Assert.Equal(0, code);
        Assert.Matches(@"^\d+\.\d+\.\d+", stdout.Trim());
    }

    [Fact]
    public async Task Settings_OldKeyInTheOperatorsFile_BeatsTheShippedDefault_AndANewKeyBesideItWins()
    {
        using var dir = new TempDirectory();
        var file = Path.Combine(dir.Path, "old.json");
        // appsettings.json ships Limits:Fixed:MessagesPerMinute = 60; the operator's file turns it off under its old name.
        await File.WriteAllTextAsync(file, """
            { "Submission": { "Policy": { "MessagesPerMinute": 0, "RecipientsPerHour": 7 } }, "Limits": { "Fixed": { "RecipientsPerHour": 9 } } }
            """, TestContext.Current.CancellationToken);

        var settings = AnalyticsSettings.Load(dir.Path, file);

        Assert.Equal("0", settings.Configuration["Limits:Fixed:MessagesPerMinute"]);
        Assert.Equal("9", settings.Configuration["Limits:Fixed:RecipientsPerHour"]);
        Assert.Contains(("Submission:Policy:MessagesPerMinute", "Limits:Fixed:MessagesPerMinute"), settings.Renamed);
    }

    [Fact]
    public async Task UnknownVerb_FailsWithUsage()
    {
        var (code, _, stderr) = await CliProcess.RunAsync("frobnicate");
        Assert.NotEqual(0, code);
        Assert.Contains("frobnicate", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Sql_WithoutServer_OpensTheStore_AndDataSurvivesTheProcess()
    {
        using var dir = new TempDirectory();
        var (code, _, stderr) = await CliProcess.RunAsync("sql", "CREATE TABLE notes (n UInt32, s String) ENGINE = MergeTree ORDER BY n", "--data", dir.Path);
        Assert.True(code == 0, stderr);
        (code, _, stderr) = await CliProcess.RunAsync("sql", "INSERT INTO notes VALUES (1, 'one'), (2, 'two')", "--data", dir.Path);
        Assert.True(code == 0, stderr);
        var (code2, stdout, stderr2) = await CliProcess.RunAsync("sql", "SELECT n, s FROM notes ORDER BY n", "--format", "tsv", "--data", dir.Path);
        Assert.True(code2 == 0, stderr2);
        Assert.Equal("n\ts\n1\tone\n2\ttwo\n", stdout);
    }

    [Fact]
    public async Task Sql_BadQuery_ExitsNonZero_WithClickHouseMessage()
    {
        using var dir = new TempDirectory();
        var (code, _, stderr) = await CliProcess.RunAsync("sql", "SELEC 1", "--data", dir.Path);
        Assert.Equal(3, code);
        Assert.Contains("SYNTAX_ERROR", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Serve_OwnsTheDataDirectory_SqlGoesThroughIt_SecondServeIsRefused_SigtermStopsCleanly()
    {
        using var dir = new TempDirectory();
        await using var serve = CliProcess.Start("serve", "--data", dir.Path, "--submission", "127.0.0.1:0", "--mx", "127.0.0.1:0", "--http", "127.0.0.1:0");
        await serve.WaitForOutputAsync("serving", TimeSpan.FromSeconds(60));

        // While serve runs, `sql` cannot open the engine itself: it is forwarded to the server.
        var (code, stdout, stderr) = await CliProcess.RunAsync("sql", "SELECT count() AS c FROM events", "--format", "tsv", "--data", dir.Path);
        Assert.True(code == 0, stderr);
        Assert.Equal("c\n0\n", stdout);

        var (code3, _, stderr3) = await CliProcess.RunAsync("sql", "SELEC 1", "--data", dir.Path);
        Assert.Equal(3, code3);
        Assert.Contains("SYNTAX_ERROR", stderr3, StringComparison.Ordinal);

        var (code2, _, stderr2) = await CliProcess.RunAsync("serve", "--data", dir.Path);
        Assert.Equal(2, code2);
        Assert.Contains("in use by another process", stderr2, StringComparison.Ordinal);
        Assert.Contains(serve.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture), stderr2, StringComparison.Ordinal);

        serve.Terminate();
        Assert.Equal(0, await serve.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains("stopped", serve.Stderr + serve.Stdout, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(dir.Path, "admin.sock")));
    }

    [Fact]
    public async Task BadConfig_IsRejectedBeforeStarting()
    {
        using var dir = new TempDirectory();
        var config = Path.Combine(dir.Path, "bad.json");
        await File.WriteAllTextAsync(config, """{ "Store": { "RetentionDays": 0 }, "Events": { "BatchSize": -1 } }""", TestContext.Current.CancellationToken);
        var (code, _, stderr) = await CliProcess.RunAsync("serve", "--data", dir.Path, "--config", config);
        Assert.Equal(2, code);
        Assert.Contains("RetentionDays", stderr, StringComparison.Ordinal);
        Assert.Contains("BatchSize", stderr, StringComparison.Ordinal);

        // A value the binder cannot convert (from the file here; ANALYTICS_* takes the same path) was an
        // unhandled exception and exit 134.
        await File.WriteAllTextAsync(config, """{ "Events": { "BatchSize": "lots" } }""", TestContext.Current.CancellationToken);
        (code, _, stderr) = await CliProcess.RunAsync("serve", "--data", dir.Path, "--config", config);
        Assert.Equal(2, code);
        Assert.Contains("Events:BatchSize: 'lots' is not a whole number", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("Unhandled exception", stderr, StringComparison.Ordinal);

        await File.WriteAllTextAsync(config, "{ not json", TestContext.Current.CancellationToken);
        (code, _, stderr) = await CliProcess.RunAsync("serve", "--data", dir.Path, "--config", config);
        Assert.Equal(2, code);
        Assert.Contains("not valid JSON", stderr, StringComparison.Ordinal);
    }
}
