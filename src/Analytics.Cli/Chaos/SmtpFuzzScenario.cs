using System.CommandLine;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Analytics.Events;
using Analytics.Limits;
using Analytics.Submission;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Cli.Chaos;

/// <summary>
/// <c>chaos fuzz-smtp</c>: a grammar-based fuzzer against the real listener over loopback sockets,
/// both roles, for a million inputs by default: commands built from SMTP's grammar with mutated
/// arguments (overlong, invalid UTF-8, NULs, bare CR or LF, broken base64 for AUTH PLAIN and LOGIN,
/// odd ESMTP parameters, dot-stuffing and unterminated DATA), pipelined. PASS: the listener answers a
/// NOOP after every burst, no session fails with an exception of ours, and resident memory stays bounded.
/// </summary>
internal sealed class SmtpFuzzScenario : ChaosScenario
{
    private static readonly Option<int> Inputs = new("--inputs") { Description = "Inputs to send (default 1,000,000)", DefaultValueFactory = _ => 1_000_000 };
    private static readonly Option<int> Clients = new("--clients") { Description = "Fuzzing connections at once (default 16)", DefaultValueFactory = _ => 16 };
    private static readonly Option<int> Seed = new("--seed") { Description = "Random seed (default 1)", DefaultValueFactory = _ => 1 };

    public override string Name => "fuzz-smtp";

    public override string Description => "Grammar-based fuzzing of SMTP commands and AUTH against the real listener: no crash, the server keeps answering, memory bounded";

    public override IReadOnlyList<Option> Options => [Inputs, Clients, Seed];

    public override async Task RunAsync(ParseResult parse, ChaosReport report, TextWriter progress, CancellationToken cancellationToken)
    {
        var total = parse.GetValue(Inputs);
        var clients = Math.Max(1, parse.GetValue(Clients));
        var seed = parse.GetValue(Seed);
        var data = TempDirectory(Name);
        try
        {
            await using var store = await OpenStoreAsync(Path.Combine(data, "store"), cancellationToken);
            var (users, recipients) = await DirectoriesAsync(store, ("fuzz@fuzz.test", "fuzz password 1"), "fuzz@fuzz.test\npostmaster@fuzz.test\n", cancellationToken);

            // The parsers are under test, not the fast path: thresholds high enough that inputs keep reaching them.
            var limits = new LimitsOptions
            {
                Session = { MaxSessionsPerIp = 1000, MaxMessageSize = 1 << 20, PreAuthTimeout = TimeSpan.FromSeconds(10), MaxCommandsPerSession = 1_000_000 },
                FastPath = { AuthFailuresPerIp = 100_000, AuthFailuresPerNetwork = 100_000, AuthFailuresPerUser = 100_000, AuthFailuresPerUserAcrossNetworks = 100_000,
                    UnknownRecipientsPerIp = 100_000, UnknownRecipientsPerNetwork = 100_000, UnknownRecipientsPerUser = 100_000, TarpitDelay = TimeSpan.Zero },
            };
            var options = new SubmissionOptions
            {
                NodeName = "chaos-fuzz",
                DataDirectory = Path.Combine(data, "listener"),
                SubmissionEndpoints = ["127.0.0.1:0"],
                MxEndpoints = ["127.0.0.1:0"],
                AllowInsecureAuth = true,
            };
            var errors = new ErrorCounter();
            await using var sink = new EventSink(store, new EventSinkOptions(), Path.Combine(data, "spool"), NullLogger.Instance);
            await using var listener = new SubmissionListener(options, limits, users, recipients, new LimitBook(limits, TimeProvider.System), sink, errors);
            await listener.StartAsync(cancellationToken);
            var endpoints = listener.Endpoints.Select(e => e.EndPoint).ToArray();

            var rssStart = ChaosProcess.ResidentBytes();
            long rssMax = rssStart;
            long sent = 0;
            long unanswered = 0;
            long sessions = 0;
            var watch = Stopwatch.StartNew();
            using var sampler = new PeriodicTimer(TimeSpan.FromSeconds(1));
            using var stop = new CancellationTokenSource();
            var sampling = Task.Run(async () =>
            {
                while (await sampler.WaitForNextTickAsync(stop.Token).AsTask().ContinueWith(t => t is { IsCompletedSuccessfully: true, Result: true }, TaskScheduler.Default))
                {
                    rssMax = Math.Max(rssMax, ChaosProcess.ResidentBytes());
                    progress.WriteLine($"fuzz-smtp: {Interlocked.Read(ref sent):N0} inputs, {Interlocked.Read(ref sessions):N0} sessions, RSS {ChaosProcess.ResidentBytes() / 1048576.0:0} MB");
                }
            }, CancellationToken.None);

            await Task.WhenAll(Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
            {
                var random = new Random(seed * 1000 + c);
                while (Interlocked.Read(ref sent) < total && !cancellationToken.IsCancellationRequested)
                {
                    var endpoint = endpoints[random.Next(endpoints.Length)];
                    var source = new IPAddress([127, (byte)(200 + random.Next(50)), (byte)random.Next(256), (byte)(1 + random.Next(250))]);
                    Interlocked.Increment(ref sessions);
                    var (count, answered) = await FuzzSessionAsync(random, source, endpoint, cancellationToken);
                    Interlocked.Add(ref sent, count);
                    if (!answered)
                    {
                        Interlocked.Increment(ref unanswered);
                    }
                }
            }, cancellationToken)));
            await stop.CancelAsync();
            await sampling;
            var elapsed = watch.Elapsed;

            // After it all, an ordinary client is still served, and no fuzzed session is left holding a slot.
            var alive = await ProbeAsync(endpoints[0], cancellationToken);
            var lingering = listener.ActiveSessions;
            for (var wait = 0; wait < 50 && lingering > 0; wait++)
            {
                await Task.Delay(100, cancellationToken);
                lingering = listener.ActiveSessions;
            }

            await listener.StopAsync(cancellationToken);
            await sink.FlushAsync(cancellationToken);

            report.Add("inputs", sent, "", "fuzzed inputs sent");
            report.Add("sessions", sessions, "", "sessions");
            report.Add("inputs_per_s", sent / elapsed.TotalSeconds, "inputs/s", "throughput");
            report.Add("unanswered_bursts", unanswered, "", "bursts after which NOOP got no reply (server closed or slow)");
            report.Add("session_errors", errors.Count, "", "sessions that failed with an exception of ours");
            report.Add("sessions_lingering", lingering, "", "sessions still open 5 s after the clients left");
            report.Add("rss_start_mb", rssStart / 1048576.0, "MB", "resident memory at start");
            report.Add("rss_max_mb", rssMax / 1048576.0, "MB", "resident memory, highest sample");
            report.Check("inputs", sent >= total, $"{sent:N0} of {total:N0} inputs sent");
            report.Check("no_session_error", errors.Count == 0, errors.Count == 0 ? "no exception of ours in any session" : "first: " + errors.First);
            report.Check("no_lingering_session", lingering == 0, $"{lingering} sessions still open after the clients left");
            report.Check("still_serving", alive, alive ? "EHLO/NOOP answered after the run" : "the listener stopped answering");
            report.Check("memory_bounded", rssMax - rssStart < 512L * 1024 * 1024, $"RSS grew by {(rssMax - rssStart) / 1048576.0:0} MB (bound 512 MB)");
        }
        finally
        {
            TryDelete(data);
        }
    }

    /// <summary>One session: a burst of fuzzed inputs, pipelined, then a NOOP that must be answered (unless the server closed on purpose).</summary>
    private static async Task<(int Sent, bool Answered)> FuzzSessionAsync(Random random, IPAddress source, IPEndPoint server, CancellationToken cancellationToken)
    {
        using var client = new TcpClient(new IPEndPoint(source, 0));
        try
        {
            await client.ConnectAsync(server, cancellationToken);
        }
        catch (SocketException)
        {
            return (0, true);
        }

        var stream = client.GetStream();
        var drain = DrainAsync(stream, cancellationToken);
        var count = 0;
        // Many inputs a connection (a connection costs more than an input), pipelined in large writes.
        var burst = 50 + random.Next(2000);
        try
        {
            var batch = new MemoryStream();
            var inBatch = 0;
            for (var i = 0; i < burst; i++)
            {
                batch.Write(SmtpGrammar.Input(random));
                inBatch++;
                if (batch.Length >= 16 * 1024 || i == burst - 1)
                {
                    await stream.WriteAsync(batch.GetBuffer().AsMemory(0, (int)batch.Length), cancellationToken);
                    count += inBatch; // counted once on the wire
                    inBatch = 0;
                    batch.SetLength(0);
                }
            }

            await stream.WriteAsync("NOOP\r\n"u8.ToArray(), cancellationToken);
            client.Client.Shutdown(SocketShutdown.Send);
        }
        catch (IOException)
        {
            // The server closed (a line too long, too many errors, a 421): allowed; the inputs were sent up to here.
            return (count, true);
        }

        var answered = await drain.WaitAsync(TimeSpan.FromSeconds(15), cancellationToken).ContinueWith(t => t.IsCompletedSuccessfully, TaskScheduler.Default);
        return (count, answered);
    }

    // Reads until the server closes; true when it did (every input got its answer or the session was cut on purpose).
    private static async Task<bool> DrainAsync(NetworkStream stream, CancellationToken cancellationToken)
    {
        var buffer = new byte[16 * 1024];
        try
        {
            while (await stream.ReadAsync(buffer, cancellationToken) > 0)
            {
            }
        }
        catch (IOException)
        {
        }

        return true;
    }

    private static async Task<bool> ProbeAsync(IPEndPoint server, CancellationToken cancellationToken)
    {
        try
        {
            using var client = new TcpClient();
            await client.ConnectAsync(server, cancellationToken);
            using var reader = new StreamReader(client.GetStream(), Encoding.ASCII);
            var greeting = await reader.ReadLineAsync(cancellationToken);
            await client.GetStream().WriteAsync("NOOP\r\n"u8.ToArray(), cancellationToken);
            var reply = await reader.ReadLineAsync(cancellationToken).AsTask().WaitAsync(TimeSpan.FromSeconds(5), cancellationToken);
            return greeting?.StartsWith("220", StringComparison.Ordinal) == true && reply?.StartsWith("250", StringComparison.Ordinal) == true;
        }
        catch (Exception ex) when (ex is IOException or SocketException or TimeoutException)
        {
            return false;
        }
    }

    /// <summary>Counts sessions that failed with an exception of ours (the listener logs them as errors).</summary>
    private sealed class ErrorCounter : ILogger<SubmissionListener>
    {
        private int _count;

        public int Count => Volatile.Read(ref _count);

        public string First { get; private set; } = "";

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Error;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel >= LogLevel.Error && Interlocked.Increment(ref _count) == 1)
            {
                First = formatter(state, exception) + (exception is null ? "" : ": " + exception);
            }
        }
    }
}

/// <summary>SMTP's command grammar with the arguments mutated; every input ends its line (or deliberately does not).</summary>
internal static class SmtpGrammar
{
    private static readonly string[] Verbs = ["EHLO", "HELO", "MAIL FROM:", "RCPT TO:", "DATA", "RSET", "NOOP", "VRFY", "EXPN", "HELP", "AUTH PLAIN", "AUTH LOGIN", "AUTH CRAM-MD5", "AUTH XOAUTH2", "BDAT", "ETRN", "STARTTLS", "TURN", "X"];
    private static readonly string[] Params = ["SIZE=", "BODY=8BITMIME", "BODY=BINARYMIME", "SMTPUTF8", "AUTH=<>", "RET=HDRS", "ENVID=", "NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;"];

    public static byte[] Input(Random random)
    {
        var roll = random.Next(100);
        return roll switch
        {
            < 55 => Line(random, Command(random)),
            < 65 => Line(random, Base64Garbage(random)), // an AUTH continuation, or garbage where a command goes
            < 75 => RandomBytes(random, random.Next(1, 300)),
            < 80 => Line(random, new string('A', random.Next(500, 20_000))), // overlong
            < 88 => Data(random),
            < 94 => Line(random, Command(random).ToLowerInvariant()),
            _ => Encoding.UTF8.GetBytes(Command(random)), // no line end: joined with the next input
        };
    }

    private static string Command(Random random)
    {
        var verb = Verbs[random.Next(Verbs.Length)];
        var sb = new StringBuilder(verb);
        if (verb.EndsWith(':'))
        {
            sb.Append(Address(random));
            for (var i = random.Next(3); i > 0; i--)
            {
                var p = Params[random.Next(Params.Length)];
                sb.Append(' ').Append(p).Append(p.EndsWith('=') || p.EndsWith(';') ? Word(random) : "");
            }
        }
        else if (verb.StartsWith("AUTH", StringComparison.Ordinal))
        {
            if (random.Next(2) == 0)
            {
                sb.Append(' ').Append(random.Next(3) == 0 ? "=" : Base64Garbage(random));
            }
        }
        else if (random.Next(2) == 0)
        {
            sb.Append(' ').Append(Word(random));
        }

        return sb.ToString();
    }

    private static string Address(Random random) => random.Next(10) switch
    {
        0 => "<>",
        1 => "<" + Word(random) + ">",
        2 => Word(random) + "@" + Word(random),
        3 => "<\"" + Word(random) + " \\\"x\"@[IPv6:::1]>",
        4 => "<@relay.example:" + Word(random) + "@fuzz.test>",
        5 => "<" + Word(random) + "%" + Word(random) + "@fuzz.test>",
        6 => "<" + new string('a', random.Next(60, 600)) + "@fuzz.test>",
        7 => "<postmaster>",
        _ => "<" + Word(random) + "@fuzz.test>",
    };

    private static string Word(Random random)
    {
        var length = random.Next(0, 24);
        var sb = new StringBuilder(length);
        for (var i = 0; i < length; i++)
        {
            sb.Append(random.Next(10) switch
            {
                0 => (char)random.Next(0, 32),
                1 => (char)random.Next(0x80, 0x800),
                2 => "\"<>()[]\\,;:@ "[random.Next(13)],
                _ => (char)random.Next('a', 'z' + 1),
            });
        }

        return sb.ToString();
    }

    private static string Base64Garbage(Random random)
    {
        var bytes = new byte[random.Next(0, 200)];
        random.NextBytes(bytes);
        if (random.Next(3) == 0 && bytes.Length > 2)
        {
            bytes[random.Next(bytes.Length)] = 0; // PLAIN's separator in odd places
        }

        var text = Convert.ToBase64String(bytes);
        return random.Next(4) == 0 && text.Length > 2 ? text[..^random.Next(1, 3)] + "*" : text;
    }

    private static byte[] Data(Random random)
    {
        var sb = new StringBuilder("Subject: fuzz\r\n\r\n");
        for (var i = random.Next(20); i > 0; i--)
        {
            sb.Append(random.Next(5) switch { 0 => ".", 1 => "..", 2 => ".\r\n.", _ => Word(random) }).Append(random.Next(6) == 0 ? "\n" : "\r\n");
        }

        if (random.Next(4) != 0)
        {
            sb.Append(".\r\n");
        }

        return Encoding.UTF8.GetBytes(sb.ToString());
    }

    private static byte[] Line(Random random, string text)
    {
        var end = random.Next(20) switch { 0 => "\n", 1 => "\r", 2 => "\r\r\n", _ => "\r\n" };
        return random.Next(30) == 0 ? [.. Latin1(text), 0xff, 0xfe, .. Encoding.ASCII.GetBytes(end)] : Encoding.UTF8.GetBytes(text + end);
    }

    private static byte[] Latin1(string text) => Encoding.Latin1.GetBytes(text);

    private static byte[] RandomBytes(Random random, int n)
    {
        var bytes = new byte[n];
        random.NextBytes(bytes);
        return bytes;
    }
}
