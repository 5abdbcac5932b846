using Xunit;

namespace Analytics.Ops.Tests;

public sealed class ConfigCheckTests
{
    [Fact]
    public async Task ConfigCheck_BrokenFile_ExitsTwo_NamingEachKeyAndItsAllowedRange()
    {
        using var dir = new TempDirectory();
        var file = Path.Combine(dir.Path, "broken.json");
        await File.WriteAllTextAsync(file, """
            {
              "Store": { "RetentionDays": 0 },
              "Events": { "Capacity": "lots" },
              "Submission": { "Limits": { "MaxLineLength": 10 }, "MxEndpoints": [ "nonsense" ], "Defenses": { "Tarpitt": 3 } },
              "Frobnicate": { "x": 1 }
            }
            """, TestContext.Current.CancellationToken);

        var (code, stdout, stderr) = await CliProcess.RunAsync("config", "check", file);

        Assert.Equal(2, code);
        Assert.Contains("Store:RetentionDays", stdout, StringComparison.Ordinal);
        Assert.Contains("between 1 and 3650", stdout, StringComparison.Ordinal);
        Assert.Contains("Events:Capacity: 'lots' is not a whole number", stdout, StringComparison.Ordinal);
        Assert.Contains("Limits:Session:MaxLineLength", stdout, StringComparison.Ordinal);
        Assert.Contains("warning: Submission:Limits:MaxLineLength: renamed to Limits:Session:MaxLineLength", stdout, StringComparison.Ordinal);
        Assert.Contains("'nonsense' is not HOST:PORT", stdout, StringComparison.Ordinal);
        Assert.Contains("warning: Limits:FastPath:Tarpitt: unknown key", stdout, StringComparison.Ordinal);
        Assert.Contains("warning: Frobnicate: unknown section", stdout, StringComparison.Ordinal);
        Assert.Contains("configuration is not valid", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stdout + stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ConfigCheck_ValidFile_ExitsZero()
    {
        using var dir = new TempDirectory();
        var file = Path.Combine(dir.Path, "ok.json");
        await File.WriteAllTextAsync(file, """
            { "Store": { "RetentionDays": 30 }, "Submission": { "SubmissionEndpoints": [ "127.0.0.1:2587" ], "MxEndpoints": [] }, "Detection": { "ScoreInterval": "00:00:10" } }
            """, TestContext.Current.CancellationToken);

        var (code, stdout, stderr) = await CliProcess.RunAsync("config", "check", file);

        Assert.True(code == 0, stdout + stderr);
        Assert.Contains("configuration is valid", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ConfigCheck_NotJson_ExitsTwo_WithTheParserMessage()
    {
        using var dir = new TempDirectory();
        var file = Path.Combine(dir.Path, "bad.json");
        await File.WriteAllTextAsync(file, "{ \"Store\": ", TestContext.Current.CancellationToken);

        var (code, _, stderr) = await CliProcess.RunAsync("config", "check", file);

        Assert.Equal(2, code);
        Assert.Contains("not valid JSON", stderr, StringComparison.Ordinal);
    }
}
