using System.Diagnostics;
using System.Text;

namespace Analytics.Testing;

/// <summary>Runs the real `analytics` executable (built beside the tests) as a child process.</summary>
internal sealed class CliProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stdout = new();
    private readonly StringBuilder _stderr = new();

    private CliProcess(Process process)
    {
        _process = process;
        _process.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (_stdout) { _stdout.AppendLine(e.Data); } } };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (_stderr) { _stderr.AppendLine(e.Data); } } };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public string Stdout { get { lock (_stdout) { return _stdout.ToString(); } } }

    public string Stderr { get { lock (_stderr) { return _stderr.ToString(); } } }

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

    public static CliProcess Start(params string[] args) => StartWithInput(null, args);

    public static CliProcess StartWithInput(string? stdin, params string[] args) => StartIn(null, stdin, args);

    /// <summary>Starts in <paramref name="workingDirectory"/> (relative paths on the command line resolve there).</summary>
    public static CliProcess StartIn(string? workingDirectory, string? stdin, params string[] args)
    {
        var info = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = workingDirectory ?? "",
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "analytics.dll"));
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        var process = Process.Start(info)!;
        if (stdin is not null)
        {
            process.StandardInput.Write(stdin);
        }

        process.StandardInput.Close();
        return new CliProcess(process);
    }

    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(params string[] args)
    {
        await using var p = Start(args);
        var code = await p.WaitAsync(TimeSpan.FromMinutes(2));
        return (code, p.Stdout, p.Stderr);
    }

    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunWithInputAsync(string stdin, params string[] args)
    {
        await using var p = StartWithInput(stdin, args);
        var code = await p.WaitAsync(TimeSpan.FromMinutes(2));
        return (code, p.Stdout, p.Stderr);
    }

    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunInAsync(string workingDirectory, params string[] args)
    {
        await using var p = StartIn(workingDirectory, null, args);
        var code = await p.WaitAsync(TimeSpan.FromMinutes(2));
        return (code, p.Stdout, p.Stderr);
    }

    public async Task<int> WaitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cts.Token);
        _process.WaitForExit();
        return _process.ExitCode;
    }

    public async Task WaitForOutputAsync(string text, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!Stdout.Contains(text, StringComparison.Ordinal) && !Stderr.Contains(text, StringComparison.Ordinal))
        {
            if (_process.HasExited || DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"'{text}' did not appear. stdout:\n{Stdout}\nstderr:\n{Stderr}");
            }

            await Task.Delay(50);
        }
    }

    /// <summary>Sends SIGTERM, as systemd would.</summary>
    public void Terminate() => Process.Start("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!.WaitForExit();

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }

        _process.Dispose();
    }
}
