using System.Diagnostics;
using Xunit;

namespace Analytics.Ops.Tests;

/// <summary>The analyst notebooks execute headlessly (notebooks/run.sh), so they never rot.</summary>
public sealed class NotebookTests
{
    // notebooks/run.sh exits with this when jupyter or the .NET Interactive kernel is missing.
    private const int Unavailable = 77;

    [Fact]
    public async Task Notebooks_ExecuteHeadlessly()
    {
        var root = RepositoryRoot();
        var info = new ProcessStartInfo("bash", [Path.Combine(root, "notebooks", "run.sh")])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = root,
        };

        // The CLI built beside these tests: no second build of the solution while the suite runs.
        info.Environment["ANALYTICS_NB_CLI"] = Path.Combine(AppContext.BaseDirectory, "analytics.dll");
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        var stderr = process.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(8));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }

        var output = await stdout + await stderr;
        if (process.ExitCode == Unavailable)
        {
            Assert.Skip(output.Trim());
        }

        Assert.True(process.ExitCode == 0, output);
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Analytics.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("Analytics.sln not found above " + AppContext.BaseDirectory);
    }
}
