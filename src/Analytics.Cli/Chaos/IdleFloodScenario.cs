using System.CommandLine;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Analytics.Events;
using Analytics.Limits;
using Analytics.Submission;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Cli.Chaos;

/// <summary>
/// <c>chaos idle-flood</c>: thousands of connections that connect and say nothing, from many IPv4
/// addresses and from one IPv6 /64 (where one host owns millions of addresses), against the real
/// listener with its default limits; meanwhile an ordinary MX client and an ordinary submission user
/// from other networks must be served in under a second.
/// </summary>
internal sealed class IdleFloodScenario : ChaosScenario
{
    private const string V6Prefix = "fd00:5eed:1:2";
    private static readonly Option<int> Connections = new("--connections") { Description = "Idle connections from IPv4 addresses (default 5000)", DefaultValueFactory = _ => 5000 };
    private static readonly Option<int> V6Connections = new("--v6-connections") { Description = "Idle connections from one IPv6 /64 (default 2000; needs root for the local route)", DefaultValueFactory = _ => 2000 };

    public override string Name => "idle-flood";

    public override string Description => "Thousands of idle connections from many addresses and one IPv6 /64: ordinary clients from other networks are still served within a second";

    public override IReadOnlyList<Option> Options => [Connections, V6Connections];

    public override async Task RunAsync(ParseResult parse, ChaosReport report, TextWriter progress, CancellationToken cancellationToken)
    {
        var v4 = parse.GetValue(Connections);
        var v6 = parse.GetValue(V6Connections);
        var v6Ready = v6 > 0 && await ChaosProcess.AddLocalV6RouteAsync(V6Prefix + "::/64", cancellationToken);
        var data = TempDirectory(Name);
        var held = new List<TcpClient>();
        try
        {
            await using var store = await OpenStoreAsync(Path.Combine(data, "store"), cancellationToken);
            var (users, recipients) = await DirectoriesAsync(store, ("user@flood.test", "flood password 1"), "user@flood.test\n", cancellationToken);
            var limits = new LimitsOptions(); // the defaults are what is under test
            var options = new SubmissionOptions
            {
                NodeName = "chaos-flood",
                DataDirectory = Path.Combine(data, "listener"),
                SubmissionEndpoints = ["127.0.0.1:0"],
                MxEndpoints = ["127.0.0.1:0", "[::1]:0"],
                AllowInsecureAuth = true,
            };
            await using var sink = new EventSink(store, new EventSinkOptions(), Path.Combine(data, "spool"), NullLogger.Instance);
            await using var listener = new SubmissionListener(options, limits, users, recipients, new LimitBook(limits, TimeProvider.System), sink, NullLogger<SubmissionListener>.Instance);
            await listener.StartAsync(cancellationToken);
            var mx4 = listener.Endpoints.First(e => e.Role == ListenerRole.Mx && e.EndPoint.AddressFamily == AddressFamily.InterNetwork).EndPoint;
            var mx6 = listener.Endpoints.First(e => e.Role == ListenerRole.Mx && e.EndPoint.AddressFamily == AddressFamily.InterNetworkV6).EndPoint;
            var submissionEndpoint = listener.Endpoints.First(e => e.Role == ListenerRole.Submission).EndPoint;
            var rssStart = ChaosProcess.ResidentBytes();

            // The flood: IPv4 addresses over many /24s (50 per /24), then one IPv6 /64.
            var opened = 0;
            for (var i = 0; i < v4; i++)
            {
                var source = new IPAddress([127, (byte)(150 + (i / 12_500)), (byte)(i / 50 % 250), (byte)(1 + (i % 50))]);
                if (await TryOpenAsync(held, source, mx4, cancellationToken))
                {
                    opened++;
                }
            }

            var openedV6 = 0;
            for (var i = 0; v6Ready && i < v6; i++)
            {
                var source = IPAddress.Parse($"{V6Prefix}::{i + 1:x}");
                if (await TryOpenAsync(held, source, mx6, cancellationToken))
                {
                    openedV6++;
                }
            }

            progress.WriteLine($"idle-flood: {opened} IPv4 and {openedV6} IPv6 connections attempted and open; {listener.ActiveSessions} sessions held by the server");
            var sessionsHeld = listener.ActiveSessions;
            var rssFlood = ChaosProcess.ResidentBytes();

            // Ordinary clients from networks of their own, several times each.
            var mx = new List<double>();
            var submission = new List<double>();
            for (var i = 0; i < 5; i++)
            {
                mx.Add(await TransactionAsync(IPAddress.Parse("127.9.1." + (10 + i)), mx4, login: false, cancellationToken));
                submission.Add(await TransactionAsync(IPAddress.Parse("127.9.2." + (10 + i)), submissionEndpoint, login: true, cancellationToken));
            }

            mx.Sort();
            submission.Sort();
            report.Add("idle_v4", opened, "", "idle IPv4 connections opened");
            report.Add("idle_v6", openedV6, "", "idle connections opened from one IPv6 /64");
            report.Add("sessions_held", sessionsHeld, "", "sessions the server held during the flood");
            report.Add("refused_per_network", listener.Refusals.GetValueOrDefault("too many sessions from this network"), "", "refused: too many from one network");
            report.Add("refused_pool", listener.Refusals.GetValueOrDefault("too many sessions"), "", "refused: role's pool full");
            report.Add("evicted_idle", listener.IdleSessionsEvicted, "", "idle sessions closed to give a full pool's slot to a new connection");
            report.Add("mx_transaction_max_s", mx[^1], "s", "ordinary MX client, connect → 250 after DATA, worst of 5");
            report.Add("submission_transaction_max_s", submission[^1], "s", "ordinary user, connect → AUTH → 250 after DATA, worst of 5");
            report.Add("rss_flood_mb", (rssFlood - rssStart) / 1048576.0, "MB", "resident memory added by the flood");
            report.Check("mx_served", mx[^1] < 1, $"worst MX transaction {mx[^1]:0.000} s (target < 1 s)");
            report.Check("submission_served", submission[^1] < 1, $"worst submission transaction {submission[^1]:0.000} s (target < 1 s)");
            if (v6 > 0 && !v6Ready)
            {
                report.Add("v6_skipped", 1, "", "IPv6 /64 part skipped: adding a local route needs root");
            }

            await listener.StopAsync(cancellationToken);
        }
        finally
        {
            foreach (var c in held)
            {
                c.Dispose();
            }

            if (v6Ready)
            {
                await ChaosProcess.RemoveLocalV6RouteAsync(V6Prefix + "::/64", CancellationToken.None);
            }

            TryDelete(data);
        }
    }

    private static async Task<bool> TryOpenAsync(List<TcpClient> held, IPAddress source, IPEndPoint server, CancellationToken cancellationToken)
    {
        var client = new TcpClient(source.AddressFamily);
        try
        {
            if (source.AddressFamily == AddressFamily.InterNetworkV6)
            {
                // The /64 is routed to lo but no address of it is assigned: IPV6_FREEBIND lets a socket bind one.
                client.Client.SetRawSocketOption(41 /* IPPROTO_IPV6 */, 78 /* IPV6_FREEBIND */, BitConverter.GetBytes(1));
            }

            client.Client.Bind(new IPEndPoint(source, 0));
            await client.ConnectAsync(server, cancellationToken);
            held.Add(client);
            return true;
        }
        catch (SocketException)
        {
            client.Dispose();
            return false;
        }
    }

    /// <summary>Seconds from connect to the 250 after DATA.</summary>
    private static async Task<double> TransactionAsync(IPAddress source, IPEndPoint server, bool login, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        try
        {
            using var client = new TcpClient(new IPEndPoint(source, 0));
            await client.ConnectAsync(server, cancellationToken);
            using var smtp = new ChaosSmtp(client.GetStream(), TimeSpan.FromSeconds(10));
            Task<string> ReplyAsync() => smtp.ReplyAsync(cancellationToken);
            Task<string> CommandAsync(string line) => smtp.CommandAsync(line, cancellationToken);

            if (!(await ReplyAsync()).StartsWith("220", StringComparison.Ordinal))
            {
                return double.PositiveInfinity;
            }

            await CommandAsync("EHLO ordinary.example");
            if (login && !(await CommandAsync("AUTH PLAIN " + Convert.ToBase64String(Encoding.UTF8.GetBytes("\0user@flood.test\0flood password 1")))).StartsWith("235", StringComparison.Ordinal))
            {
                return double.PositiveInfinity;
            }

            await CommandAsync("MAIL FROM:<someone@ordinary.example>");
            await CommandAsync("RCPT TO:<user@flood.test>");
            await CommandAsync("DATA");
            var done = await CommandAsync("Subject: hello\r\n\r\nhi\r\n.");
            await CommandAsync("QUIT");
            return done.StartsWith("250", StringComparison.Ordinal) ? watch.Elapsed.TotalSeconds : double.PositiveInfinity;
        }
        catch (Exception ex) when (ex is IOException or SocketException or TimeoutException)
        {
            return double.PositiveInfinity;
        }
    }
}

/// <summary>What chaos scenarios read and change on the machine.</summary>
internal static class ChaosProcess
{
    /// <summary>This process's resident memory (VmRSS), in bytes.</summary>
    public static long ResidentBytes()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line.AsSpan(6).Trim().ToString().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture) * 1024;
            }
        }

        return 0;
    }

    /// <summary>A child process of this same CLI (under <c>dotnet</c> when that is how it runs) with <paramref name="args"/>, its output redirected.</summary>
    public static ProcessStartInfo Cli(IEnumerable<string> args)
    {
        var info = new ProcessStartInfo(Environment.ProcessPath!)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet")
        {
            info.ArgumentList.Add(typeof(ChaosProcess).Assembly.Location);
        }

        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        return info;
    }

    /// <summary>Makes every address of <paramref name="prefix"/> local (ip -6 route add local … dev lo); false when that is not allowed.</summary>
    public static async Task<bool> AddLocalV6RouteAsync(string prefix, CancellationToken cancellationToken) =>
        await RunAsync("ip", ["-6", "route", "replace", "local", prefix, "dev", "lo"], cancellationToken) == 0;

    public static Task<int> RemoveLocalV6RouteAsync(string prefix, CancellationToken cancellationToken) =>
        RunAsync("ip", ["-6", "route", "del", "local", prefix, "dev", "lo"], cancellationToken);

    private static async Task<int> RunAsync(string file, string[] args, CancellationToken cancellationToken)
    {
        try
        {
            var info = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (var a in args)
            {
                info.ArgumentList.Add(a);
            }

            using var process = Process.Start(info)!;
            await process.WaitForExitAsync(cancellationToken);
            return process.ExitCode;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return -1;
        }
    }
}
