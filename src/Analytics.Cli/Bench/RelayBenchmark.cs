using System.Collections.Concurrent;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Analytics.Cli.Commands;
using Analytics.Events;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Analytics.Limits;
using Analytics.Store;
using Analytics.Submission;
using Analytics.Submission.Delivery;
using MailKit.Net.Smtp;
using MailKit.Security;
using Microsoft.Extensions.Logging.Abstractions;
using MimeKit;

namespace Analytics.Cli.Bench;

/// <summary>
/// <c>bench relay</c>: the cost of delivering onward. The listener in this process takes sessions
/// (connect, STARTTLS, AUTH PLAIN, one message to 3 recipients, QUIT) with relay off (mail stays in the
/// spool, as before issue 14) and on (the delivery queue relays every message to a next hop), runs
/// alternating; with relay on, the end-to-end latency from the client's 250 to the next hop's 250 for
/// each message. The next hop is a minimal SMTP sink in this process (no MailKit on its side, it
/// only answers), or a real server given with --next-hop (e.g. a Postfix on loopback).
/// </summary>
internal static class RelayBenchmark
{
    private const string Password = "bench password, long enough to be real";
    private const string Domain = "bench.test";
    private const string User = "sender@" + Domain;
    private static readonly string[] Recipients = ["alice@" + Domain, "bob@" + Domain, "carol@" + Domain];

    public static Command Create(CommandContext context)
    {
        var sessions = new Option<int>("--sessions") { Description = "Sessions per measurement (default 300)", DefaultValueFactory = _ => 300 };
        var concurrency = new Option<int>("--concurrency") { Description = "Clients at once (default 4 per core)", DefaultValueFactory = _ => 4 * Environment.ProcessorCount };
        var runs = new Option<int>("--runs") { Description = "Runs of each measurement; the median is reported (default 3)", DefaultValueFactory = _ => 3 };
        var iterations = new Option<int>("--pbkdf2-iterations")
        {
            Description = "PBKDF2 iterations of the bench user's hash (default: the production default, 210,000; every AUTH pays it)",
            DefaultValueFactory = _ => PasswordHasher.DefaultIterations,
        };
        var nextHop = new Option<string?>("--next-hop") { Description = "Relay to this HOST:PORT (a real smarthost on loopback) instead of the built-in sink", HelpName = "HOST:PORT" };
        var command = new Command("relay", "Sessions/s with relay on vs off, and end-to-end latency (client's 250 to the next hop's 250) p50/p99")
        {
            sessions, concurrency, runs, iterations, nextHop, BenchCommand.Json,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var settings = new Settings(parse.GetValue(sessions), parse.GetValue(concurrency), parse.GetValue(runs), parse.GetValue(iterations), parse.GetValue(nextHop));
            if (settings.Sessions < 10 || settings.Concurrency < 1 || settings.Runs < 1 || settings.Iterations < 1)
            {
                throw new CliException("--sessions must be at least 10, --concurrency, --runs and --pbkdf2-iterations at least 1.");
            }

            if (settings.NextHop is { } hop && !NextHopAddress.TryParse(hop, out _))
            {
                throw new CliException($"--next-hop '{hop}' is not HOST:PORT.");
            }

            var json = parse.GetValue(BenchCommand.Json);
            var report = await RunAsync(settings, parse.GetValue(GlobalOptions.Data), context.IO, json, cancellationToken);
            await report.WriteAsync(context.IO.Out, json);
            return 0;
        });
        return command;
    }

    private sealed record Settings(int Sessions, int Concurrency, int Runs, int Iterations, string? NextHop);

    private sealed record Measurement(double SessionsPerSecond, int Failed, double DrainSeconds, double P50Ms, double P99Ms, int Delivered, int Accepted);

    private static async Task<BenchReport> RunAsync(Settings settings, string? dataOption, CliIO io, bool quiet, CancellationToken cancellationToken)
    {
        var temp = dataOption is null;
        var data = dataOption ?? Path.Combine(Path.GetTempPath(), "analytics-bench-relay-" + Guid.NewGuid().ToString("N")[..8]);
        var report = new BenchReport("relay");
        await using var sink = settings.NextHop is null ? SmtpSink.Start() : null;
        var hop = settings.NextHop ?? sink!.HostPort;
        report.Context("next_hop", settings.NextHop is null ? $"built-in SMTP sink on {hop} (answers 250, keeps nothing)" : hop);
        report.Context("pbkdf2_iterations", settings.Iterations.ToString(CultureInfo.InvariantCulture)
            + (settings.Iterations == PasswordHasher.DefaultIterations ? " (production default: AUTH cost is real)" : " (LOWERED: AUTH is cheaper than in production)"));
        report.Context("session", "connect, EHLO, STARTTLS, EHLO, AUTH, MAIL, 3×RCPT, DATA (~2 KB, fsynced), QUIT; relay on: + queue, SMTP to the next hop (pooled), state, delete");
        report.Context("sessions_per_run", settings.Sessions.ToString(CultureInfo.InvariantCulture));
        report.Context("concurrency", settings.Concurrency.ToString(CultureInfo.InvariantCulture));
        report.Context("runs", settings.Runs.ToString(CultureInfo.InvariantCulture));
        report.Context("cores", Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture) + " (clients, listener, queue and sink share them)");
        try
        {
            await using var store = EmbeddedStore.Open(data);
            await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings(), cancellationToken);
            var hasher = new PasswordHasher(settings.Iterations);
            var userStore = new UserStore(store, hasher);
            var recipientStore = new RecipientStore(store);
            await userStore.AddAsync(User, Password, cancellationToken);
            await recipientStore.ImportAsync(new StringReader(string.Join('\n', Recipients)), cancellationToken);
            var users = new UserDirectory(userStore, hasher, NullLogger<UserDirectory>.Instance);
            var recipients = new RecipientDirectory(recipientStore, NullLogger<RecipientDirectory>.Instance);
            await users.RefreshAsync(cancellationToken);
            await recipients.RefreshAsync(cancellationToken);

            var on = new List<Measurement>();
            var off = new List<Measurement>();
            for (var run = 0; run <= settings.Runs; run++)
            {
                // Run 0 warms up both sides (JIT, certificate, TLS and pool code paths) and is not counted;
                // then alternate which side goes first, so drift does not favour one.
                foreach (var relay in run % 2 == 0 ? new[] { true, false } : [false, true])
                {
                    Progress(io, quiet, run == 0 ? $"warm-up: relay {(relay ? "on" : "off")}" : $"run {run}/{settings.Runs}: relay {(relay ? "on" : "off")}");
                    var listenerData = Path.Combine(data, $"listener-{run}-{(relay ? "on" : "off")}");
                    var m = await MeasureAsync(settings with { Sessions = run == 0 ? Math.Min(settings.Sessions, 4 * settings.Concurrency) : settings.Sessions },
                        relay ? hop : null, listenerData, users, recipients, cancellationToken);
                    if (run > 0)
                    {
                        (relay ? on : off).Add(m);
                    }
                }
            }

            var onRate = Median(on.Select(m => m.SessionsPerSecond));
            var offRate = Median(off.Select(m => m.SessionsPerSecond));
            report.Add("sessions_per_s_relay_off", offRate, "sessions/s", "sessions/s, relay off (median)");
            report.Add("sessions_per_s_relay_on", onRate, "sessions/s", "sessions/s, relay on (median)");
            report.Add("relay_overhead_ratio", offRate / onRate - 1, "", "relay overhead on sessions/s, off/on − 1");
            report.Add("e2e_p50_ms", Median(on.Select(m => m.P50Ms)), "ms", "client's 250 → next hop's 250, p50");
            report.Add("e2e_p99_ms", Median(on.Select(m => m.P99Ms)), "ms", "client's 250 → next hop's 250, p99");
            report.Add("drain_after_last_session_s", Median(on.Select(m => m.DrainSeconds)), "s", "queue empty after the last session, relay on");
            report.Add("delivered", on.Sum(m => m.Delivered), "messages", "messages delivered by the 'on' runs");
            report.Add("accepted", on.Sum(m => m.Accepted), "messages", "messages accepted by the 'on' runs");
            report.Add("failed_sessions", on.Concat(off).Sum(m => m.Failed), "", "failed sessions (should be 0)");
            return report;
        }
        finally
        {
            if (temp)
            {
                try
                {
                    Directory.Delete(data, recursive: true);
                }
                catch (IOException)
                {
                }
            }
        }
    }

    private static async Task<Measurement> MeasureAsync(Settings settings, string? hop, string listenerData, UserDirectory users, RecipientDirectory recipients,
        CancellationToken cancellationToken)
    {
        var options = new SubmissionOptions
        {
            NodeName = "bench",
            ServerName = "bench.localhost",
            DataDirectory = listenerData,
            SubmissionEndpoints = ["127.0.0.1:0"],
            MxEndpoints = [],
        };
        var limits = new LimitsOptions { Session = { MaxSessionsPerIp = Math.Max(100, settings.Concurrency * 2), ShutdownDeadline = TimeSpan.FromSeconds(5) } };
        var delivered = new DeliveryClock();
        await using var queue = hop is null ? null : new DeliveryQueue(new DeliveryOptions
        {
            Relay = new NextHopOptions { Hosts = [hop], Tls = NextHopTls.None, MaxConnections = 4 },
            Concurrency = 8,
            MinimalBackoff = TimeSpan.FromSeconds(1),
            MaximalBackoff = TimeSpan.FromSeconds(2),
            MinFreeBytes = 0,
        }, options.SpoolDirectory, options.ServerName, options.NodeName, delivered, recipients.IsLocalDomain, NullLogger.Instance);
        if (queue is not null)
        {
            await queue.StartAsync(deliver: true, cancellationToken);
        }

        await using var listener = new SubmissionListener(options, limits, users, recipients,
            new LimitBook(limits, TimeProvider.System), NullEventPublisher.Instance,
            NullLogger<SubmissionListener>.Instance, queue: queue);
        await listener.StartAsync(cancellationToken);
        var endpoint = listener.Endpoints.First(e => e.Role == Analytics.Events.ListenerRole.Submission).EndPoint;
        using var certificate = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(listenerData, "keys", "smtp-self-signed.pfx"), null);
        var thumbprint = certificate.GetCertHashString();

        var acceptedAt = new ConcurrentDictionary<string, long>(StringComparer.Ordinal);
        var next = 0;
        var failed = 0;
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, settings.Concurrency).Select(_ => Task.Run(async () =>
        {
            while (Interlocked.Increment(ref next) <= settings.Sessions)
            {
                try
                {
                    using var client = new SmtpClient { Timeout = 60_000, CheckCertificateRevocation = false };
                    client.ServerCertificateValidationCallback = (_, c, _, _) => c?.GetCertHashString() == thumbprint;
                    await client.ConnectAsync(endpoint.Address.ToString(), endpoint.Port, SecureSocketOptions.StartTls, cancellationToken);
                    client.AuthenticationMechanisms.RemoveWhere(m => m != "PLAIN");
                    await client.AuthenticateAsync(User, Password, cancellationToken);
                    var reply = await client.SendAsync(Message(), cancellationToken);
                    var at = Stopwatch.GetTimestamp();
                    acceptedAt[reply[(reply.IndexOf("queued as ", StringComparison.Ordinal) + 10)..].Trim()] = at;
                    await client.DisconnectAsync(true, cancellationToken);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    Interlocked.Increment(ref failed);
                }
            }
        }, cancellationToken)));
        var elapsed = clock.Elapsed.TotalSeconds;
        var drain = 0.0;
        if (queue is not null)
        {
            var last = Stopwatch.StartNew();
            while (queue.List().Count > 0 && last.Elapsed < TimeSpan.FromMinutes(2))
            {
                await Task.Delay(5, cancellationToken);
            }

            drain = last.Elapsed.TotalSeconds;
            await queue.StopAsync(TimeSpan.FromSeconds(5), cancellationToken);
        }

        await listener.StopAsync(cancellationToken);
        var latencies = acceptedAt
            .Select(a => delivered.At.TryGetValue(a.Key, out var done) ? Stopwatch.GetElapsedTime(a.Value, done).TotalMilliseconds : double.NaN)
            .Where(ms => !double.IsNaN(ms)).Order().ToArray();
        return new Measurement((settings.Sessions - failed) / elapsed, failed, drain, Percentile(latencies, 0.50), Percentile(latencies, 0.99),
            delivered.At.Count, acceptedAt.Count);
    }

    private static MimeMessage Message()
    {
        var message = new MimeMessage();
        message.From.Add(MailboxAddress.Parse(User));
        foreach (var r in Recipients)
        {
            message.To.Add(MailboxAddress.Parse(r));
        }

        message.Subject = "Quarterly numbers";
        message.Body = new TextPart("plain") { Text = string.Concat(Enumerable.Repeat("The figures are attached; call me if anything looks odd.\r\n", 36)) };
        return message;
    }

    private static void Progress(CliIO io, bool quiet, string message)
    {
        if (!quiet)
        {
            io.Error.WriteLine(message);
        }
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length == 0 ? 0 : sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static double Percentile(double[] sorted, double p) =>
        sorted.Length == 0 ? 0 : sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p * sorted.Length) - 1)];

    /// <summary>When each message's delivery was confirmed: the queue publishes a delivery event right after the next hop's 250.</summary>
    private sealed class DeliveryClock : IEventPublisher
    {
        public ConcurrentDictionary<string, long> At { get; } = new(StringComparer.Ordinal);

        public bool Publish(SmtpEvent smtpEvent)
        {
            if (smtpEvent is { Kind: EventKind.Delivery, Outcome: EventOutcome.Ok } && smtpEvent.Detail.StartsWith("queue ", StringComparison.Ordinal))
            {
                var id = smtpEvent.Detail[6..smtpEvent.Detail.IndexOf(' ', 6)];
                var now = Stopwatch.GetTimestamp();
                At.AddOrUpdate(id, now, (_, was) => Math.Max(was, now));
            }

            return true;
        }

        public ValueTask<bool> WaitDurableAsync(TimeSpan timeout, CancellationToken cancellationToken = default) => ValueTask.FromResult(true);
    }

    /// <summary>
    /// The smallest next hop: ESMTP without extensions, 250 to everything, 354 to DATA, reads to the
    /// lone dot, keeps nothing. Written here, not with a library, so the next hop costs as little as
    /// possible and its cost is in plain sight.
    /// </summary>
    private sealed class SmtpSink : IAsyncDisposable
    {
        private readonly TcpListener _listener;
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _accept;

        private SmtpSink()
        {
            _listener = new TcpListener(IPAddress.Loopback, 0);
            _listener.Start(512);
            _accept = AcceptAsync(_stop.Token);
        }

        public string HostPort => "127.0.0.1:" + ((IPEndPoint)_listener.LocalEndpoint).Port.ToString(CultureInfo.InvariantCulture);

        public static SmtpSink Start() => new();

        private async Task AcceptAsync(CancellationToken cancellationToken)
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                Socket socket;
                try
                {
                    socket = await _listener.AcceptSocketAsync(cancellationToken);
                }
                catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
                {
                    return;
                }

                _ = Task.Run(() => ServeAsync(socket, cancellationToken), CancellationToken.None);
            }
        }

        private static async Task ServeAsync(Socket socket, CancellationToken cancellationToken)
        {
            using var stream = new NetworkStream(socket, ownsSocket: true);
            var buffer = new byte[1 << 16];
            var line = new StringBuilder();
            var inData = false;
            var window = new byte[5];
            try
            {
                await stream.WriteAsync("220 sink ESMTP\r\n"u8.ToArray(), cancellationToken);
                int read;
                while ((read = await stream.ReadAsync(buffer, cancellationToken)) > 0)
                {
                    var replies = new StringBuilder();
                    for (var i = 0; i < read; i++)
                    {
                        var b = buffer[i];
                        if (inData)
                        {
                            // The end of data is CRLF . CRLF: the last five bytes seen.
                            Array.Copy(window, 1, window, 0, 4);
                            window[4] = b;
                            if (window.AsSpan().SequenceEqual("\r\n.\r\n"u8))
                            {
                                inData = false;
                                replies.Append("250 2.0.0 Ok: kept nothing\r\n");
                            }

                            continue;
                        }

                        if (b != '\n')
                        {
                            line.Append((char)b);
                            continue;
                        }

                        var command = line.ToString().TrimEnd('\r');
                        line.Clear();
                        var verb = command.Length >= 4 ? command[..4].ToUpperInvariant() : command.ToUpperInvariant();
                        switch (verb)
                        {
                            case "EHLO":
                                replies.Append("250-sink\r\n250 8BITMIME\r\n");
                                break;
                            case "DATA":
                                inData = true;
                                window.AsSpan().Clear();
                                window[3] = (byte)'\r';
                                window[4] = (byte)'\n';
                                replies.Append("354 go on\r\n");
                                break;
                            case "QUIT":
                                await stream.WriteAsync("221 2.0.0 Bye\r\n"u8.ToArray(), cancellationToken);
                                return;
                            default:
                                replies.Append("250 2.0.0 Ok\r\n");
                                break;
                        }
                    }

                    if (replies.Length > 0)
                    {
                        await stream.WriteAsync(Encoding.ASCII.GetBytes(replies.ToString()), cancellationToken);
                    }
                }
            }
            catch (Exception ex) when (ex is IOException or SocketException or OperationCanceledException)
            {
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Stop();
            try
            {
                await _accept;
            }
            catch (OperationCanceledException)
            {
            }

            _stop.Dispose();
        }
    }
}
