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
/// <c>chaos data-flood</c>: thousands of unauthenticated MX sessions to one valid mailbox, each in DATA
/// with a large message it never finishes (the attack that once cost the whole message in memory per
/// session), against the real listener with its default limits. PASS: the listener's resident memory
/// stays bounded, the bytes in flight never pass <c>Limits:Session:MaxDataInFlightBytes</c>, nothing is
/// left in the spool once the attackers leave, and an ordinary client is served afterwards.
/// </summary>
internal sealed class DataFloodScenario : ChaosScenario
{
    private static readonly Option<int> Sessions = new("--sessions") { Description = "MX sessions in DATA at once (default 2000)", DefaultValueFactory = _ => 2000 };
    private static readonly Option<int> Megabytes = new("--mb") { Description = "Megabytes each session sends of its message (default 2)", DefaultValueFactory = _ => 2 };
    private static readonly Option<long> Cap = new("--cap-mb") { Description = "Limits:Session:MaxDataInFlightBytes in MB (default 1024, the default)", DefaultValueFactory = _ => 1024 };

    public override string Name => "data-flood";

    public override string Description => "Thousands of MX sessions in DATA with large unfinished messages: memory bounded, bytes in flight capped, ordinary mail still served";

    public override IReadOnlyList<Option> Options => [Sessions, Megabytes, Cap];

    public override async Task RunAsync(ParseResult parse, ChaosReport report, TextWriter progress, CancellationToken cancellationToken)
    {
        var sessions = Math.Max(1, parse.GetValue(Sessions));
        var bytesEach = Math.Max(1, parse.GetValue(Megabytes)) << 20;
        var cap = Math.Max(1, parse.GetValue(Cap)) << 20;
        var data = TempDirectory(Name);
        var clients = new List<TcpClient>();
        try
        {
            await using var store = await OpenStoreAsync(Path.Combine(data, "store"), cancellationToken);
            var (users, recipients) = await DirectoriesAsync(store, null, "postmaster@flood.test\n", cancellationToken);
            var limits = new LimitsOptions { Session = { MaxDataInFlightBytes = cap } }; // otherwise the defaults
            var options = new SubmissionOptions
            {
                NodeName = "chaos-data-flood",
                DataDirectory = Path.Combine(data, "listener"),
                SubmissionEndpoints = ["127.0.0.1:0"],
                MxEndpoints = ["127.0.0.1:0"],
            };
            await using var sink = new EventSink(store, new EventSinkOptions(), Path.Combine(data, "spool"), NullLogger.Instance);
            await using var listener = new SubmissionListener(options, limits, users, recipients, new LimitBook(limits, TimeProvider.System), sink, NullLogger<SubmissionListener>.Instance);
            await listener.StartAsync(cancellationToken);
            var mx = listener.Endpoints.First(e => e.Role == ListenerRole.Mx).EndPoint;
            var rssStart = ChaosProcess.ResidentBytes();
            long rssMax = rssStart;

            // One body shared by every attacker (client memory is not what is measured).
            var line = Encoding.ASCII.GetBytes(new string('z', 998) + "\r\n");
            var body = new byte[bytesEach / line.Length * line.Length];
            for (var i = 0; i < body.Length; i += line.Length)
            {
                line.CopyTo(body, i);
            }

            var watch = Stopwatch.StartNew();
            using var sampling = new CancellationTokenSource();
            var sampler = Task.Run(async () =>
            {
                while (!sampling.IsCancellationRequested)
                {
                    rssMax = Math.Max(rssMax, ChaosProcess.ResidentBytes());
                    await Task.Delay(200, CancellationToken.None);
                }
            }, CancellationToken.None);

            // Every attacker: 50 sessions per /24 (the per-network cap is 200), MAIL, RCPT postmaster, DATA, then the body, unfinished.
            var started = 0;
            using var gate = new SemaphoreSlim(64);
            await Task.WhenAll(Enumerable.Range(0, sessions).Select(async i =>
            {
                await gate.WaitAsync(cancellationToken);
                try
                {
                    var source = new IPAddress([127, (byte)(100 + (i / 12_500)), (byte)(i / 50 % 250), (byte)(1 + (i % 50))]);
                    var client = await OpenDataAsync(source, mx, cancellationToken);
                    if (client is null)
                    {
                        return;
                    }

                    lock (clients)
                    {
                        clients.Add(client);
                    }

                    Interlocked.Increment(ref started);
                    _ = client.GetStream().WriteAsync(body, cancellationToken).AsTask().ContinueWith(_ => { }, TaskScheduler.Default);
                }
                finally
                {
                    gate.Release();
                }
            }));

            // Until the listener has taken in what the kernel lets through (or 60 s).
            long lastRead = -1;
            var quiet = Stopwatch.StartNew();
            while (watch.Elapsed < TimeSpan.FromSeconds(60) && quiet.Elapsed < TimeSpan.FromSeconds(5))
            {
                var now = listener.DataBytesInFlight + listener.DataRefusedOverCap;
                if (now != lastRead)
                {
                    lastRead = now;
                    quiet.Restart();
                }

                await Task.Delay(250, cancellationToken);
            }

            var inFlight = listener.DataBytesInFlight;
            var peak = listener.DataBytesInFlightPeak;
            var refused = listener.DataRefusedOverCap;
            var tmpFiles = Directory.GetFiles(listener.SpoolDirectory, "*.tmp").Length;
            await progress.WriteLineAsync($"data-flood: {started} sessions in DATA; {inFlight / 1048576.0:0} MB in flight (peak {peak / 1048576.0:0} MB); {refused} refused over the cap; RSS +{(rssMax - rssStart) / 1048576.0:0} MB");

            // The attackers leave; the spool is emptied of their temporaries; an ordinary client is served.
            foreach (var c in clients)
            {
                c.Dispose();
            }

            var drained = Stopwatch.StartNew();
            while ((listener.DataBytesInFlight > 0 || listener.ActiveSessions > 0) && drained.Elapsed < TimeSpan.FromSeconds(30))
            {
                await Task.Delay(100, cancellationToken);
            }

            var served = await OrdinaryAsync(mx, cancellationToken);
            await sampling.CancelAsync();
            await sampler;
            var left = Directory.GetFiles(listener.SpoolDirectory, "*.tmp").Length;
            await listener.StopAsync(cancellationToken);

            report.Add("sessions", started, "", "MX sessions in DATA at once");
            report.Add("offered_mb", started * (double)body.Length / 1048576.0, "MB", "bytes the attackers sent or tried to send");
            report.Add("in_flight_mb", inFlight / 1048576.0, "MB", "bytes of unfinished messages held (on disk) at the height of the flood");
            report.Add("in_flight_peak_mb", peak / 1048576.0, "MB", "highest bytes in flight");
            report.Add("cap_mb", cap / 1048576.0, "MB", "Limits:Session:MaxDataInFlightBytes");
            report.Add("refused_over_cap", refused, "", "messages refused (452 4.3.1 at their end) over the cap");
            report.Add("temp_files", tmpFiles, "files", "unfinished messages on disk at the height of the flood");
            report.Add("rss_start_mb", rssStart / 1048576.0, "MB", "resident memory before the flood");
            report.Add("rss_growth_mb", (rssMax - rssStart) / 1048576.0, "MB", "resident memory added by the flood, highest sample");
            report.Add("ordinary_s", served, "s", "an ordinary MX client afterwards, connect → 250 after DATA");
            report.Check("in_flight_capped", peak <= cap, $"peak {peak / 1048576.0:0} MB, cap {cap / 1048576.0:0} MB");
            report.Check("memory_bounded", rssMax - rssStart < 1024L << 20, $"RSS grew by {(rssMax - rssStart) / 1048576.0:0} MB for {started * (double)body.Length / 1048576.0:0} MB offered (bound 1 GB)");
            report.Check("spool_clean", left == 0, $"{left} temporaries left after the attackers left");
            report.Check("ordinary_served", served < 1, $"{served:0.000} s (target < 1 s)");
        }
        finally
        {
            foreach (var c in clients)
            {
                c.Dispose();
            }

            TryDelete(data);
        }
    }

    private static async Task<TcpClient?> OpenDataAsync(IPAddress source, IPEndPoint server, CancellationToken cancellationToken)
    {
        var client = new TcpClient(new IPEndPoint(source, 0));
        try
        {
            await client.ConnectAsync(server, cancellationToken);
            using var smtp = new ChaosSmtp(client.GetStream(), TimeSpan.FromSeconds(30));
            foreach (var command in new[] { "", "EHLO flood.example", "MAIL FROM:<flood@attacker.example>", "RCPT TO:<postmaster@flood.test>", "DATA" })
            {
                var reply = command.Length > 0 ? await smtp.CommandAsync(command, cancellationToken) : await smtp.ReplyAsync(cancellationToken);
                if (reply.Length == 0 || reply[0] is not ('2' or '3'))
                {
                    client.Dispose();
                    return null;
                }
            }

            return client;
        }
        catch (Exception ex) when (ex is IOException or SocketException or TimeoutException)
        {
            client.Dispose();
            return null;
        }
    }

    private static async Task<double> OrdinaryAsync(IPEndPoint server, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        var client = await OpenDataAsync(IPAddress.Parse("127.9.3.10"), server, cancellationToken);
        if (client is null)
        {
            return double.PositiveInfinity;
        }

        using (client)
        {
            using var smtp = new ChaosSmtp(client.GetStream(), TimeSpan.FromSeconds(10));
            var reply = await smtp.CommandAsync("Subject: hello\r\n\r\nhi\r\n.", cancellationToken);
            return reply.StartsWith("250", StringComparison.Ordinal) ? watch.Elapsed.TotalSeconds : double.PositiveInfinity;
        }
    }
}
