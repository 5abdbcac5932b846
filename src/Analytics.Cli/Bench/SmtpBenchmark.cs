using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Analytics.Cli.Commands;
using Analytics.Events;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Analytics.Limits;
using Analytics.Submission;
using MailKit;
using MailKit.Net.Smtp;
using MailKit.Security;
using Microsoft.Extensions.Logging.Abstractions;
using MimeKit;

namespace Analytics.Cli.Bench;

/// <summary>
/// <c>bench smtp</c>: the listener in this process on free loopback ports, driven by MailKit clients
/// (connect, STARTTLS, AUTH PLAIN, one message to 3 recipients, QUIT) with event capture on (the
/// real sink into the embedded store) and off (<see cref="NullEventPublisher"/>), alternating so drift
/// hits both; then resident memory with thousands of idle sessions held open by raw sockets.
/// </summary>
internal static class SmtpBenchmark
{
    private const string Password = "bench password, long enough to be real";
    private const string Domain = "bench.test";
    private const string User = "sender@" + Domain;
    private static readonly string[] Recipients = ["alice@" + Domain, "bob@" + Domain, "carol@" + Domain];

    public static Command Create(CommandContext context)
    {
        var sessions = new Option<int>("--sessions") { Description = "Sessions per measurement (default 200)", DefaultValueFactory = _ => 200 };
        var concurrency = new Option<int>("--concurrency") { Description = "Clients at once (default 4 per core)", DefaultValueFactory = _ => 4 * Environment.ProcessorCount };
        var runs = new Option<int>("--runs") { Description = "Runs of each measurement; the median is reported (default 3)", DefaultValueFactory = _ => 3 };
        var idle = new Option<int>("--idle") { Description = "Idle sessions for the memory figure (default 5000; 0 skips it)", DefaultValueFactory = _ => 5000 };
        var iterations = new Option<int>("--pbkdf2-iterations")
        {
            Description = "PBKDF2 iterations of the bench user's hash (default: the production default, 210,000; every AUTH pays it)",
            DefaultValueFactory = _ => PasswordHasher.DefaultIterations,
        };
        var insecure = new Option<bool>("--no-tls") { Description = "AUTH in the clear (AllowInsecureAuth) instead of STARTTLS" };
        var command = new Command("smtp", "Sessions/s and messages/s for AUTH + one message to 3 recipients, events on vs off; DATA reply latency; memory with idle sessions")
        {
            sessions, concurrency, runs, idle, iterations, insecure, BenchCommand.Json,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var settings = new Settings(parse.GetValue(sessions), parse.GetValue(concurrency), parse.GetValue(runs), parse.GetValue(idle),
                parse.GetValue(iterations), !parse.GetValue(insecure));
            if (settings.Sessions < 10 || settings.Concurrency < 1 || settings.Runs < 1 || settings.Idle < 0 || settings.Iterations < 1)
            {
                throw new CliException("--sessions must be at least 10, --concurrency, --runs and --pbkdf2-iterations at least 1, --idle at least 0.");
            }

            var json = parse.GetValue(BenchCommand.Json);
            var report = await RunAsync(settings, parse.GetValue(GlobalOptions.Data), context.IO, json, cancellationToken);
            await report.WriteAsync(context.IO.Out, json);
            return 0;
        });
        return command;
    }

    private sealed record Settings(int Sessions, int Concurrency, int Runs, int Idle, int Iterations, bool Tls);

    private sealed record Measurement(double SessionsPerSecond, double P50Ms, double P99Ms, int Failed);

    private static async Task<BenchReport> RunAsync(Settings settings, string? dataOption, CliIO io, bool quiet, CancellationToken cancellationToken)
    {
        var temp = dataOption is null;
        var data = dataOption ?? Path.Combine(Path.GetTempPath(), "analytics-bench-smtp-" + Guid.NewGuid().ToString("N")[..8]);
        var report = new BenchReport("smtp");
        report.Context("transport", settings.Tls ? "STARTTLS (self-signed certificate), AUTH PLAIN" : "plain TCP, AUTH PLAIN before TLS (AllowInsecureAuth)");
        report.Context("pbkdf2_iterations", settings.Iterations.ToString(CultureInfo.InvariantCulture)
            + (settings.Iterations == PasswordHasher.DefaultIterations ? " (production default: AUTH cost is real)" : " (LOWERED: AUTH is cheaper than in production)"));
        report.Context("session", "connect, EHLO, " + (settings.Tls ? "STARTTLS, EHLO, " : "") + "AUTH, MAIL, 3×RCPT, DATA (~2 KB, fsynced to the spool), QUIT");
        report.Context("sessions_per_run", settings.Sessions.ToString(CultureInfo.InvariantCulture));
        report.Context("concurrency", settings.Concurrency.ToString(CultureInfo.InvariantCulture));
        report.Context("runs", settings.Runs.ToString(CultureInfo.InvariantCulture));
        report.Context("cores", Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture) + " (clients and listener share them)");
        report.Context("engine", "chDB " + ChdbLibrary.Version);
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

            await using var sink = new EventSink(store, new EventSinkOptions(), Path.Combine(data, "spool", "events"), NullLogger.Instance);
            var on = new List<Measurement>();
            var off = new List<Measurement>();
            var listenerData = Path.Combine(data, "listener");

            SubmissionOptions Options() => new()
            {
                NodeName = "bench",
                ServerName = "bench.localhost",
                DataDirectory = listenerData,
                SubmissionEndpoints = ["127.0.0.1:0"],
                MxEndpoints = [],
                AllowInsecureAuth = !settings.Tls,
            };

            LimitsOptions Limits() => new()
            {
                Session = { MaxSessionsPerIp = Math.Max(100, settings.Concurrency * 2), ShutdownDeadline = TimeSpan.FromSeconds(5) },
            };

            async Task<SubmissionListener> StartAsync(SubmissionOptions options, IEventPublisher events, LimitsOptions? limits = null)
            {
                limits ??= Limits();
                var listener = new SubmissionListener(options, limits, users, recipients,
                    new LimitBook(limits, TimeProvider.System), events, NullLogger<SubmissionListener>.Instance);
                await listener.StartAsync(cancellationToken);
                return listener;
            }

            // One short warm-up (JIT, certificate generation, TLS session setup code paths), not measured.
            await using (var warm = await StartAsync(Options(), NullEventPublisher.Instance))
            {
                await DriveAsync(warm, settings with { Sessions = Math.Min(settings.Sessions, 4 * settings.Concurrency) }, listenerData, cancellationToken);
            }

            var published = 0L;
            for (var run = 0; run < settings.Runs; run++)
            {
                // Alternate which goes first, so warm-up and drift do not favour one side.
                foreach (var capture in run % 2 == 0 ? new[] { true, false } : [false, true])
                {
                    Progress(io, quiet, $"run {run + 1}/{settings.Runs}: events {(capture ? "on" : "off")}");
                    await using var listener = await StartAsync(Options(), capture ? sink : NullEventPublisher.Instance);
                    var m = await DriveAsync(listener, settings, listenerData, cancellationToken);
                    await listener.StopAsync(cancellationToken);
                    (capture ? on : off).Add(m);
                }
            }

            if (!await sink.FlushAsync(cancellationToken))
            {
                throw new CliException("The event sink did not get every event into the store.");
            }

            published = (long)(await store.QueryAsync("SELECT count() FROM events WHERE node = 'bench'", null, cancellationToken)).Scalar<ulong>();
            var failed = on.Concat(off).Sum(m => m.Failed);
            var onRate = Median(on.Select(m => m.SessionsPerSecond));
            var offRate = Median(off.Select(m => m.SessionsPerSecond));
            report.Add("sessions_per_s_events_on", onRate, "sessions/s", "sessions/s, events on (median)");
            report.Add("sessions_per_s_events_off", offRate, "sessions/s", "sessions/s, events off (median)");
            report.Add("messages_per_s_events_on", onRate, "messages/s", "messages/s, events on (one per session)");
            report.Add("messages_per_s_events_off", offRate, "messages/s", "messages/s, events off (one per session)");
            report.Add("event_overhead_ratio", offRate / onRate - 1, "", "events overhead, off/on − 1 (target ≤ 0.1)");
            report.Add("data_reply_p50_ms_events_on", Median(on.Select(m => m.P50Ms)), "ms", "DATA reply p50, events on");
            report.Add("data_reply_p99_ms_events_on", Median(on.Select(m => m.P99Ms)), "ms", "DATA reply p99, events on");
            report.Add("data_reply_p50_ms_events_off", Median(off.Select(m => m.P50Ms)), "ms", "DATA reply p50, events off");
            report.Add("data_reply_p99_ms_events_off", Median(off.Select(m => m.P99Ms)), "ms", "DATA reply p99, events off");
            report.Add("events_stored", published, "events", "events stored by the 'on' runs");
            report.Add("failed_sessions", failed, "", "failed sessions (should be 0)");

            if (settings.Idle > 0)
            {
                Progress(io, quiet, $"memory: {settings.Idle} idle sessions");
                var limits = Limits();
                limits.Session.MaxSessions = settings.Idle * 2;
                limits.Session.MaxSessionsPerIp = settings.Idle;
                await using var listener = await StartAsync(Options(), sink, limits);
                var (before, after, held) = await IdleMemoryAsync(listener, settings.Idle, cancellationToken);
                report.Add("idle_sessions", held, "sessions", "idle sessions held (greeted, then silent)");
                report.Add("rss_before_mb", before / 1048576.0, "MB", "RSS, listener up, no session");
                report.Add("rss_idle_sessions_mb", after / 1048576.0, "MB", $"RSS with {held:N0} idle sessions");
                report.Add("rss_per_idle_session_kb", held == 0 ? 0 : (after - before) / 1024.0 / held, "KB", "RSS growth per idle session (incl. client)");
            }

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

    /// <summary>Runs <see cref="Settings.Sessions"/> sessions over <see cref="Settings.Concurrency"/> clients.</summary>
    private static async Task<Measurement> DriveAsync(SubmissionListener listener, Settings settings, string listenerData, CancellationToken cancellationToken)
    {
        var endpoint = listener.Endpoints.First(e => e.Role == ListenerRole.Submission).EndPoint;
        string? thumbprint = null;
        if (settings.Tls)
        {
            using var certificate = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(listenerData, "keys", "smtp-self-signed.pfx"), null);
            thumbprint = certificate.GetCertHashString();
        }

        var latencies = new List<double>[settings.Concurrency];
        var next = 0;
        var failed = 0;
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, settings.Concurrency).Select(worker => Task.Run(async () =>
        {
            var mine = latencies[worker] = [];
            var timer = new DataReplyTimer();
            while (Interlocked.Increment(ref next) <= settings.Sessions)
            {
                try
                {
                    using var client = new SmtpClient(timer) { Timeout = 60_000, CheckCertificateRevocation = false };
                    client.ServerCertificateValidationCallback = (_, certificate, _, _) => thumbprint is null || certificate?.GetCertHashString() == thumbprint;
                    await client.ConnectAsync(endpoint.Address.ToString(), endpoint.Port, settings.Tls ? SecureSocketOptions.StartTls : SecureSocketOptions.None, cancellationToken);
                    client.AuthenticationMechanisms.RemoveWhere(m => m != "PLAIN");
                    await client.AuthenticateAsync(User, Password, cancellationToken);
                    await client.SendAsync(Message(), cancellationToken);
                    await client.DisconnectAsync(true, cancellationToken);
                    if (timer.TakeLatency() is { } ms)
                    {
                        mine.Add(ms);
                    }
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    Interlocked.Increment(ref failed);
                }
            }
        }, cancellationToken)));
        var elapsed = clock.Elapsed.TotalSeconds;
        var all = latencies.SelectMany(l => l).Order().ToArray();
        return new Measurement((settings.Sessions - failed) / elapsed, Percentile(all, 0.50), Percentile(all, 0.99), failed);
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

    /// <summary>
    /// Holds <paramref name="count"/> connections open, each from one of many loopback addresses
    /// (127.0.0.0/8) so the per-IP cap is exercised as real traffic would, reads each greeting and
    /// stays silent; measures resident memory before and with them.
    /// </summary>
    private static async Task<(long Before, long After, int Held)> IdleMemoryAsync(SubmissionListener listener, int count, CancellationToken cancellationToken)
    {
        var endpoint = listener.Endpoints.First(e => e.Role == ListenerRole.Submission).EndPoint;
        var before = SettledRss();
        var sockets = new Socket?[count];
        var held = 0;
        try
        {
            using var gate = new SemaphoreSlim(256);
            await Task.WhenAll(Enumerable.Range(0, count).Select(async i =>
            {
                await gate.WaitAsync(cancellationToken);
                try
                {
                    var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    socket.Bind(new IPEndPoint(new IPAddress([127, 1, (byte)(i / 50 / 250), (byte)(1 + i / 50 % 250)]), 0));
                    await socket.ConnectAsync(endpoint, cancellationToken);
                    var buffer = new byte[512];
                    var n = await socket.ReceiveAsync(buffer, cancellationToken);
                    sockets[i] = socket;
                    if (n > 3 && buffer[0] == (byte)'2')
                    {
                        Interlocked.Increment(ref held);
                    }
                }
                catch (SocketException)
                {
                }
                finally
                {
                    gate.Release();
                }
            }));
            await Task.Delay(TimeSpan.FromSeconds(1), cancellationToken);
            var after = SettledRss();
            return (before, after, Math.Min(held, listener.ActiveSessions));
        }
        finally
        {
            foreach (var socket in sockets)
            {
                socket?.Dispose();
            }
        }
    }

    /// <summary>RSS after a full collection, so what is counted is what is held, not garbage.</summary>
    private static long SettledRss()
    {
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                {
                    return long.Parse(line.AsSpan(6).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture) * 1024;
                }
            }
        }
        catch (IOException)
        {
        }

        using var self = Process.GetCurrentProcess();
        return self.WorkingSet64;
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

    /// <summary>
    /// Times the DATA reply as the client sees it: from the last bytes written after the server's 354
    /// (the end-of-data dot) to the next reply (250 once the message is fsynced). One per client.
    /// </summary>
    private sealed class DataReplyTimer : IProtocolLogger
    {
        private bool _inData;
        private long _lastWrite;
        private double? _latency;

        public IAuthenticationSecretDetector? AuthenticationSecretDetector { get; set; }

        public double? TakeLatency()
        {
            var value = _latency;
            _latency = null;
            _inData = false;
            return value;
        }

        public void LogConnect(Uri uri)
        {
        }

        public void LogClient(byte[] buffer, int offset, int count)
        {
            if (_inData)
            {
                _lastWrite = Stopwatch.GetTimestamp();
            }
        }

        public void LogServer(byte[] buffer, int offset, int count)
        {
            if (count < 3)
            {
                return;
            }

            if (_inData && _lastWrite != 0)
            {
                _latency = Stopwatch.GetElapsedTime(_lastWrite).TotalMilliseconds;
                _inData = false;
                _lastWrite = 0;
            }
            else if (ContainsReply(buffer.AsSpan(offset, count), "354"u8))
            {
                _inData = true;
                _lastWrite = 0;
            }
        }

        public void Dispose()
        {
        }

        // Pipelined replies may arrive together: look for the code at the start of any line.
        private static bool ContainsReply(ReadOnlySpan<byte> chunk, ReadOnlySpan<byte> code)
        {
            while (true)
            {
                if (chunk.StartsWith(code))
                {
                    return true;
                }

                var newline = chunk.IndexOf((byte)'\n');
                if (newline < 0)
                {
                    return false;
                }

                chunk = chunk[(newline + 1)..];
            }
        }
    }
}
