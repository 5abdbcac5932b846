using System.Diagnostics;
using Xunit;

namespace Analytics.Cli.Tests;

/// <summary>
/// serve's admin socket (DATA/admin.sock) runs any CLI verb against the open store, so it must never be
/// reachable by another local user: not for a moment at start-up, and not even if its mode is widened.
/// </summary>
public sealed class AdminSocketTests
{
    private const UnixFileMode OwnerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const int Nobody = 65534;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Socket_IsOwnerOnly_FromTheFirstMomentItCanBeReached()
    {
        using var dir = new TempDirectory();
        var socket = Path.Combine(dir.Path, "admin.sock");
        var modes = new HashSet<UnixFileMode>();
        var stop = 0;

        // Stat the socket's path as fast as one core allows while serve starts on the other.
        var watcher = Task.Factory.StartNew(() =>
        {
            while (Volatile.Read(ref stop) == 0)
            {
                try
                {
                    modes.Add(File.GetUnixFileMode(socket));
                }
                catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException or IOException or UnauthorizedAccessException)
                {
                }
            }
        }, Ct, TaskCreationOptions.LongRunning, TaskScheduler.Default);

        await using (var serve = CliProcess.Start("serve", "--data", dir.Path, "--submission", "127.0.0.1:0", "--mx", "127.0.0.1:0", "--http", "127.0.0.1:0"))
        {
            await serve.WaitForOutputAsync("serving", TimeSpan.FromSeconds(60));
            var (code, stdout, stderr) = await CliProcess.RunAsync("sql", "SELECT 1 AS one", "--format", "tsv", "--data", dir.Path);
            Assert.True(code == 0, stderr);
            Assert.Equal("one\n1\n", stdout);
            Volatile.Write(ref stop, 1);
            await watcher;
            serve.Terminate();
            Assert.Equal(0, await serve.WaitAsync(TimeSpan.FromSeconds(30)));
        }

        Assert.NotEmpty(modes);
        Assert.All(modes, m => Assert.Equal(OwnerOnly, m));

        // Nothing of the start-up is left behind: no socket, no private directory it was made in.
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir.Path, "*adm*", SearchOption.AllDirectories));
    }

    [Fact]
    public async Task CallerWithAnotherUid_IsRefused_EvenIfTheSocketWereOpenedUp_AndTheRefusalIsLogged()
    {
        if (!OperatingSystem.IsLinux() || Environment.UserName != "root")
        {
            Assert.Skip("Needs root on Linux, to run a client under another uid (CI runs as root).");
        }

        if (!File.Exists("/usr/bin/setpriv") || !File.Exists("/usr/bin/curl"))
        {
            Assert.Skip("Needs setpriv (util-linux) and curl to run a client under another uid; .ci/run installs both.");
        }

        using var dir = new TempDirectory();
        var socket = Path.Combine(dir.Path, "admin.sock");
        await using var serve = CliProcess.Start("serve", "--data", dir.Path, "--submission", "127.0.0.1:0", "--mx", "127.0.0.1:0", "--http", "127.0.0.1:0");
        await serve.WaitForOutputAsync("serving", TimeSpan.FromSeconds(60));

        // The file mode alone keeps another user out.
        var (code, output) = await CurlAsync(socket, asUid: Nobody);
        Assert.True(code == 7, output); // curl: could not connect (EACCES on the socket file)

        // Were it widened by mistake, the server still asks the kernel who is calling (SO_PEERCRED) and refuses.
        File.SetUnixFileMode(socket, OwnerOnly | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead | UnixFileMode.OtherWrite);
        (code, output) = await CurlAsync(socket, asUid: Nobody);
        Assert.True(code == 0, output);
        Assert.StartsWith("403", output, StringComparison.Ordinal);
        Assert.DoesNotContain("\"ExitCode\"", output, StringComparison.Ordinal);
        await serve.WaitForOutputAsync($"uid {Nobody}", TimeSpan.FromSeconds(10));
        Assert.Contains("refused", serve.Stderr + serve.Stdout, StringComparison.OrdinalIgnoreCase);

        // Root (and the server's own user, here the same) is served.
        (code, output) = await CurlAsync(socket, asUid: null);
        Assert.True(code == 0, output);
        Assert.StartsWith("200", output, StringComparison.Ordinal);
        Assert.Contains("\"ExitCode\":0", output, StringComparison.Ordinal);
    }

    /// <summary>POSTs `sql SELECT 1` to the admin socket with curl, as root or as <paramref name="asUid"/>; output starts with the HTTP status.</summary>
    private static async Task<(int ExitCode, string Output)> CurlAsync(string socket, int? asUid)
    {
        var info = new ProcessStartInfo(asUid is null ? "/usr/bin/curl" : "/usr/bin/setpriv") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (asUid is { } uid)
        {
            foreach (var a in new[] { $"--reuid={uid}", $"--regid={uid}", "--clear-groups", "/usr/bin/curl" })
            {
                info.ArgumentList.Add(a);
            }
        }

        foreach (var a in new[]
        {
            "-sS", "--max-time", "20", "--unix-socket", socket, "-w", "\n%{http_code}\n", "-H", "Content-Type: application/json",
            "--data", """{"Args":["sql","SELECT 1"],"Stdin":null}""", "http://admin.local/admin/run",
        })
        {
            info.ArgumentList.Add(a);
        }

        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync(Ct);
        var stderr = process.StandardError.ReadToEndAsync(Ct);
        await process.WaitForExitAsync(Ct);
        var body = await stdout;

        // -w prints the status after the body: put it first.
        var lines = body.TrimEnd('\n').Split('\n');
        return (process.ExitCode, lines[^1] + "\n" + string.Join('\n', lines[..^1]) + await stderr);
    }
}
