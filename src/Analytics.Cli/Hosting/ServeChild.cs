using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Analytics.Cli.Hosting;

/// <summary>
/// <c>analytics serve</c> as a child process of this one, as an operator runs it (its own process, its
/// shipped configuration, its logging): what scenarios and <c>bench mx</c> put under load. Its output goes to
/// a log file; it is ready once it logs that it is serving.
/// </summary>
internal static class ServeChild
{
    private static readonly HashSet<int> HandedOut = [];

    /// <summary>
    /// Starts <c>serve ARGS</c> (in <paramref name="workingDirectory"/>, or this process's) and waits (up to a
    /// minute) until it serves; kills it if it does not.
    /// </summary>
    public static async Task<Process> StartAsync(IEnumerable<string> args, string logPath, CancellationToken cancellationToken, string? workingDirectory = null)
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
        info.ArgumentList.Add("serve");
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        var process = Process.Start(info) ?? throw new CliException("Could not start serve.");
        process.StandardInput.Close();
        var output = new StreamWriter(logPath) { AutoFlush = true };
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void OnLine(string? line)
        {
            if (line is null)
            {
                return;
            }

            lock (output)
            {
                output.WriteLine(line);
            }

            if (line.Contains(" serving; ", StringComparison.Ordinal))
            {
                ready.TrySetResult();
            }
        }

        process.OutputDataReceived += (_, e) => OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        process.Exited += (_, _) => ready.TrySetException(new CliException($"serve exited before it was ready; its log is {logPath}"));
        process.EnableRaisingEvents = true;
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            await ready.Task.WaitAsync(TimeSpan.FromSeconds(60), cancellationToken);
        }
        catch
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }

            throw;
        }

        return process;
    }

    /// <summary>SIGTERM (as systemd stops it), then waits for its exit; throws unless it exits 0 in time.</summary>
    public static async Task StopAsync(Process serve, string logPath, TimeSpan timeout, CancellationToken cancellationToken)
    {
        Signal(serve.Id, "TERM");
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        await serve.WaitForExitAsync(deadline.Token);
        if (serve.ExitCode != 0)
        {
            throw new CliException($"serve exited with {serve.ExitCode}; its log is {logPath}");
        }
    }

    public static void Signal(int pid, string signal)
    {
        using var kill = Process.Start("kill", ["-" + signal, pid.ToString(CultureInfo.InvariantCulture)]);
        kill?.WaitForExit();
    }

    /// <summary>
    /// A loopback port nothing listens on, never one this process handed out before: the kernel may give
    /// a just-closed ephemeral port again, and two endpoints of one serve on the same port fail its start.
    /// </summary>
    public static int FreePort()
    {
        while (true)
        {
            using var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            var port = ((IPEndPoint)listener.LocalEndpoint).Port;
            lock (HandedOut)
            {
                if (HandedOut.Add(port))
                {
                    return port;
                }
            }
        }
    }
}
