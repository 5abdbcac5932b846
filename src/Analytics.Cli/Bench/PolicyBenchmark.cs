using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Analytics.Cli.Commands;
using Analytics.Events;
using Analytics.Limits;
using Analytics.Policy;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Cli.Bench;

/// <summary>
/// <c>bench policy</c>: the Postfix policy round trip under load. Many concurrent clients play smtpd
/// processes over the policy socket, each with the two connections the recommended placement opens
/// (the connection check, then the limits and END-OF-MESSAGE), message after message: for each, the
/// connection check and the limit check of 3 recipients, then END-OF-MESSAGE (7 requests). Every round
/// trip is timed. By default the engine runs in this process with the real event sink into the
/// embedded store (so the figure includes building and queueing every event); <c>--endpoint</c>
/// measures a running <c>serve</c> instead.
/// </summary>
internal static class PolicyBenchmark
{
    public static Command Create(CommandContext context)
    {
        var clients = new Option<int>("--clients") { Description = "smtpd processes played at once, two policy connections each (default 50)", DefaultValueFactory = _ => 50 };
        var messages = new Option<int>("--messages") { Description = "Messages in all, 7 requests each (default 20,000)", DefaultValueFactory = _ => 20_000 };
        var endpoint = new Option<string?>("--endpoint") { Description = "A running serve's Policy:PostfixEndpoint (unix:/path or 127.0.0.1:PORT) instead of an engine in this process", HelpName = "ENDPOINT" };
        var command = new Command("policy", "Postfix policy round trip (p50/p99) with many concurrent clients over the socket")
        {
            clients, messages, endpoint, BenchCommand.Json,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var count = parse.GetValue(clients);
            var total = parse.GetValue(messages);
            if (count < 1 || total < count)
            {
                throw new CliException("--clients must be at least 1 and --messages at least --clients.");
            }

            var report = await RunAsync(count, total, parse.GetValue(endpoint), cancellationToken);
            await report.WriteAsync(context.IO.Out, parse.GetValue(BenchCommand.Json));
            return 0;
        });
        return command;
    }

    private static async Task<BenchReport> RunAsync(int clients, int messages, string? endpoint, CancellationToken cancellationToken)
    {
        var report = new BenchReport("policy");
        report.Context("clients", $"{clients} smtpd processes, 2 policy connections each");
        report.Context("message", "connect check + 3 × (connect check, limit check) of RCPT + END-OF-MESSAGE: 7 requests");
        report.Context("cores", Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture) + " (clients and engine share them)");
        if (endpoint is not null)
        {
            report.Context("engine", "running serve at " + endpoint);
            await MeasureAsync(report, endpoint, clients, messages, cancellationToken);
            return report;
        }

        var data = Path.Combine(Path.GetTempPath(), "analytics-bench-policy-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(data);
        try
        {
            await using var store = EmbeddedStore.Open(data);
            await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings(), cancellationToken);
            await using var sink = new EventSink(store, new EventSinkOptions(), Path.Combine(data, "spool", "events"), NullLogger.Instance);
            var limits = new LimitsOptions { Fixed = { MessagesPerMinute = 30 } };
            var options = new PolicyOptions { PostfixEndpoint = "unix:" + Path.Combine(data, "policy.sock"), PostfixSocketMode = "0600" };
            await using var engine = PolicyHostedService.Create(options, limits, new LimitBook(limits, TimeProvider.System), sink, TimeProvider.System, NullLoggerFactory.Instance);
            await engine.StartAsync(cancellationToken);
            report.Context("engine", "in this process, Unix socket; events through the real sink into the embedded store (chDB " + ChdbLibrary.Version + ")");
            report.Context("book", "shipped caps (30 messages/min per account), 10,000 accounts over 2,000 addresses");

            // A short warm-up (JIT, buckets, sessions), then the measurement.
            await MeasureAsync(new BenchReport("warm-up"), engine.PostfixAddress!, clients, Math.Max(clients, messages / 20), cancellationToken);
            await MeasureAsync(report, engine.PostfixAddress!, clients, messages, cancellationToken);
            report.Add("events_published", sink.Stats.Published, "", "events published to the sink (warm-up included)");
        }
        finally
        {
            try
            {
                Directory.Delete(data, recursive: true);
            }
            catch (IOException)
            {
            }
        }

        return report;
    }

    private static async Task MeasureAsync(BenchReport report, string endpoint, int clients, int messages, CancellationToken cancellationToken)
    {
        var samples = new double[messages * 7];
        var refused = 0L;
        var next = -1;
        var watch = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, clients).Select(async client =>
        {
            await using var gate = await Connection.OpenAsync(endpoint, cancellationToken);
            await using var main = await Connection.OpenAsync(endpoint, cancellationToken);
            var sequence = 0;
            var session = 0;
            int message;
            while ((message = Interlocked.Increment(ref next)) < messages)
            {
                // Sessions of 4 messages from one client address and port, as an smtpd process serves them.
                if (sequence == 4)
                {
                    sequence = 0;
                }

                if (sequence == 0)
                {
                    session = message;
                }

                var ip = $"10.{(session / 500) % 4}.{(session / 2) % 250}.{1 + (session % 200)}";
                var user = $"user{session % 10_000}@bench.test";
                var port = 10_000 + (session % 50_000);
                var instance = $"{client + 100:x}.{message:x}.0.{sequence:x}";
                var slot = message * 7;
                var answers = 0;
                for (var r = 0; r < 3; r++)
                {
                    var rcpt = $"r{r}@example.net";
                    answers += await TimedAsync(gate, Request(ip, port, user, instance, "RCPT", rcpt, "connect"), samples, slot++, cancellationToken);
                    answers += await TimedAsync(main, Request(ip, port, user, instance, "RCPT", rcpt, ""), samples, slot++, cancellationToken);
                }

                answers += await TimedAsync(main, Request(ip, port, user, instance, "END-OF-MESSAGE", "", ""), samples, slot, cancellationToken);
                Interlocked.Add(ref refused, answers);
                sequence++;
            }
        }));
        watch.Stop();
        Array.Sort(samples);
        report.Add("requests_per_s", samples.Length / watch.Elapsed.TotalSeconds, "req/s", "policy requests per second");
        report.Add("round_trip_p50_ms", Percentile(samples, 0.50), "ms", "round trip p50");
        report.Add("round_trip_p90_ms", Percentile(samples, 0.90), "ms", "round trip p90");
        report.Add("round_trip_p99_ms", Percentile(samples, 0.99), "ms", "round trip p99");
        report.Add("round_trip_p999_ms", Percentile(samples, 0.999), "ms", "round trip p99.9");
        report.Add("round_trip_max_ms", samples[^1], "ms", "round trip max");
        report.Add("refused", Interlocked.Read(ref refused), "", "requests answered with a refusal (caps)");
    }

    private static async Task<int> TimedAsync(Connection connection, byte[] request, double[] samples, int slot, CancellationToken cancellationToken)
    {
        var start = Stopwatch.GetTimestamp();
        var action = await connection.AskAsync(request, cancellationToken);
        samples[slot] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        return action.StartsWith("action=DUNNO", StringComparison.Ordinal) ? 0 : 1;
    }

    private static byte[] Request(string ip, int port, string user, string instance, string state, string recipient, string context) =>
        Encoding.ASCII.GetBytes(string.Create(CultureInfo.InvariantCulture,
            $"request=smtpd_access_policy\nprotocol_state={state}\nprotocol_name=ESMTP\nclient_address={ip}\nclient_name=unknown\nclient_port={port}\n" +
            $"reverse_client_name=unknown\nserver_address=127.0.0.1\nserver_port=587\nhelo_name=bench.example\nsender={user}\nrecipient={recipient}\n" +
            $"recipient_count={(state == "END-OF-MESSAGE" ? 3 : 0)}\nqueue_id=\ninstance={instance}\nsize={(state == "END-OF-MESSAGE" ? 2048 : 0)}\n" +
            $"etrn_domain=\nstress=\nsasl_method=PLAIN\nsasl_username={user}\nsasl_sender=\nccert_subject=\nccert_issuer=\nccert_fingerprint=\n" +
            $"ccert_pubkey_fingerprint=\nencryption_protocol=TLSv1.3\nencryption_cipher=TLS_AES_256_GCM_SHA384\nencryption_keysize=256\npolicy_context={context}\n\n"));

    private static double Percentile(double[] sorted, double p) => sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];

    /// <summary>One policy connection, as an smtpd process holds it: requests one after another.</summary>
    private sealed class Connection : IAsyncDisposable
    {
        private readonly Socket _socket;
        private readonly byte[] _buffer = new byte[4096];

        private Connection(Socket socket) => _socket = socket;

        public static async Task<Connection> OpenAsync(string endpoint, CancellationToken cancellationToken)
        {
            Socket socket;
            if (endpoint.StartsWith("unix:", StringComparison.Ordinal))
            {
                socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(endpoint[5..]), cancellationToken);
            }
            else
            {
                var ip = IPEndPoint.Parse(endpoint.StartsWith("inet:", StringComparison.Ordinal) ? endpoint[5..] : endpoint);
                socket = new Socket(ip.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                await socket.ConnectAsync(ip, cancellationToken);
            }

            return new Connection(socket);
        }

        /// <summary>Sends a request and reads the answer up to its empty line.</summary>
        public async Task<string> AskAsync(byte[] request, CancellationToken cancellationToken)
        {
            await _socket.SendAsync(request, cancellationToken);
            var length = 0;
            while (length < 2 || _buffer[length - 1] != '\n' || _buffer[length - 2] != '\n')
            {
                var n = await _socket.ReceiveAsync(_buffer.AsMemory(length), cancellationToken);
                if (n == 0)
                {
                    throw new CliException("The policy service closed the connection.");
                }

                length += n;
            }

            return Encoding.ASCII.GetString(_buffer, 0, length);
        }

        public ValueTask DisposeAsync()
        {
            _socket.Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
