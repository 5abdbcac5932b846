using System.Collections.Concurrent;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Analytics.Store;
using Analytics.Store.Embedded;

namespace Analytics.Cli.Chaos;

/// <summary>
/// <c>chaos kill-serve</c>: the real <c>analytics serve</c> as a child process takes MX mail (each message
/// to a known mailbox and one unknown, so every session makes events of several kinds) from several
/// clients at once, and is SIGKILLed at a random moment, several times; then it is started once more
/// and stopped with SIGTERM. Every message answered 250 must be in the mail spool, whole, once; its
/// DATA event stored once; no event stored twice. An event still in the sink's memory at the kill (the
/// last flush interval) is lost: counted, with how many of those were older than 3 s at the kill.
/// </summary>
internal sealed class ServeKillScenario : ChaosScenario
{
    private const string Mailbox = "postmaster@chaos-kill.test";

    private readonly Option<int> _rounds = new("--rounds") { Description = "serve processes started and SIGKILLed (default 3)", DefaultValueFactory = _ => 3 };
    private readonly Option<double> _after = new("--after") { Description = "Longest run under traffic before the SIGKILL, in seconds; each is killed between half of it and all of it (default 10)", DefaultValueFactory = _ => 10 };
    private readonly Option<int> _clients = new("--clients") { Description = "MX clients sending at once (default 8)", DefaultValueFactory = _ => 8 };
    private readonly Option<int> _seed = new("--seed") { Description = "Seed of the kill times (default 17)", DefaultValueFactory = _ => 17 };

    public override string Name => "kill-serve";

    public override string Description => "SIGKILL of serve under mail and event traffic, then restart: every message answered 250 in the spool once, its events stored once";

    public override IReadOnlyList<Option> Options => [_rounds, _after, _clients, _seed];

    private sealed record Accepted(string QueueId, string Marker, int Size, DateTime At, int Round);

    public override async Task RunAsync(ParseResult parse, ChaosReport report, TextWriter progress, CancellationToken cancellationToken)
    {
        var rounds = Math.Max(1, parse.GetValue(_rounds));
        var after = Math.Max(1, parse.GetValue(_after));
        var clients = Math.Max(1, parse.GetValue(_clients));
        var random = new Random(parse.GetValue(_seed));
        var root = TempDirectory(Name);
        var data = Path.Combine(root, "data");
        try
        {
            var (code, output) = await RunToEndAsync(["recipients", "add", Mailbox, "--data", data], cancellationToken);
            if (code != 0)
            {
                throw new InvalidOperationException("recipients add failed:\n" + output);
            }

            var accepted = new ConcurrentBag<Accepted>();
            var kills = new List<DateTime>();
            long attempts = 0, unanswered = 0;
            for (var round = 0; round < rounds; round++)
            {
                using var serve = await StartServeAsync(data, cancellationToken);
                using var traffic = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                var r = round;
                var senders = Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
                {
                    var n = 0;
                    while (!traffic.IsCancellationRequested)
                    {
                        var source = new IPAddress([127, 61, (byte)r, (byte)(1 + c)]);
                        var (sent, lost) = await SessionAsync(serve.Mx, source, $"r{r}c{c}s{n++}", accepted, r, traffic.Token);
                        Interlocked.Add(ref attempts, sent);
                        Interlocked.Add(ref unanswered, lost);
                        if (sent == 0)
                        {
                            await Task.Delay(50, CancellationToken.None);
                        }
                    }
                }, CancellationToken.None)).ToArray();

                var killAt = TimeSpan.FromSeconds(after * (0.5 + 0.5 * random.NextDouble()));
                await Task.Delay(killAt, cancellationToken);
                serve.Process.Kill(); // SIGKILL
                kills.Add(DateTime.UtcNow);
                await serve.Process.WaitForExitAsync(cancellationToken);
                await traffic.CancelAsync();
                await Task.WhenAll(senders);
                await progress.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                    $"round {round + 1}/{rounds}: SIGKILL after {killAt.TotalSeconds:0.0} s; {accepted.Count(a => a.Round == round):N0} messages answered 250"));
            }

            var spoolLeft = Directory.Exists(Path.Combine(data, "spool", "events")) ? Directory.GetFiles(Path.Combine(data, "spool", "events"), "*", SearchOption.TopDirectoryOnly).Length : 0;
            var tempsLeft = Directory.GetFiles(Path.Combine(data, "mail"), "*.tmp").Length;

            // The restart: serve recovers the event spool and the queue, then a clean stop (SIGTERM) flushes.
            using (var last = await StartServeAsync(data, cancellationToken))
            {
                await Task.Delay(TimeSpan.FromSeconds(5), cancellationToken);
                await RunToEndAsync("kill", ["-TERM", last.Process.Id.ToString(CultureInfo.InvariantCulture)], cancellationToken);
                await last.Process.WaitForExitAsync(cancellationToken).WaitAsync(TimeSpan.FromMinutes(2), cancellationToken);
            }

            // Mail: every message answered 250 is in the spool (nothing is configured to deliver it), whole, once.
            var mail = Path.Combine(data, "mail");
            var all = accepted.ToList();
            var missingMail = 0;
            var damaged = 0;
            foreach (var a in all)
            {
                var eml = Path.Combine(mail, a.QueueId + ".eml");
                if (!File.Exists(eml) || !File.Exists(Path.Combine(mail, a.QueueId + ".json")))
                {
                    missingMail++;
                }
                else if (new FileInfo(eml).Length != a.Size || !File.ReadAllText(eml).Contains(a.Marker, StringComparison.Ordinal))
                {
                    damaged++;
                }
            }

            var spooled = Directory.GetFiles(mail, "*.eml").Length;
            var markers = Directory.GetFiles(mail, "*.eml").Select(p => MarkerOf(File.ReadAllText(p))).Where(m => m.Length > 0).ToList();
            var duplicateMail = markers.Count - markers.Distinct(StringComparer.Ordinal).Count();

            // Events: the DATA event of each message answered 250, once; no event twice.
            await using var store = EmbeddedStore.Open(data);
            var dataEvents = (await store.QueryAsync(
                "SELECT extract(detail, 'queued=([^ ]+)') AS id, count() FROM events WHERE kind = 'data' AND reply_code = 250 GROUP BY id", null, cancellationToken)).Rows
                .ToDictionary(row => (string)row[0]!, row => Convert.ToInt64(row[1], CultureInfo.InvariantCulture), StringComparer.Ordinal);
            var totals = (await store.QueryAsync(
                "SELECT count(), uniqExact(session_id, kind, ts, recipient, reply_code, detail) FROM events", null, cancellationToken)).Rows[0];
            var rows = Convert.ToInt64(totals[0], CultureInfo.InvariantCulture);
            var distinct = Convert.ToInt64(totals[1], CultureInfo.InvariantCulture);
            var lostEvents = all.Where(a => !dataEvents.ContainsKey(a.QueueId)).ToList();
            var lostEarly = lostEvents.Count(a => kills.All(k => (k - a.At).TotalSeconds > 3 || k < a.At));
            var duplicateData = dataEvents.Values.Count(c => c > 1);

            report.Add("rounds", rounds, "", "serve processes SIGKILLed under traffic");
            report.Add("transactions", attempts, "", "MX transactions attempted");
            report.Add("accepted", all.Count, "messages", "messages answered 250 before a kill");
            report.Add("unanswered", unanswered, "", "transactions cut by a kill before their DATA reply");
            report.Add("spooled", spooled, "messages", "messages in the mail spool after the restart");
            report.Add("missing_mail", missingMail, "messages", "messages answered 250 not in the spool");
            report.Add("damaged_mail", damaged, "messages", "messages answered 250 whose spooled copy differs");
            report.Add("duplicate_mail", duplicateMail, "messages", "messages spooled twice");
            report.Add("temp_files_left_by_kills", tempsLeft, "files", "messages being received at a kill (removed at the next start)");
            report.Add("event_spool_files_left_by_kills", spoolLeft, "files", "event spool files left by the kills (replayed at the restart)");
            report.Add("events_stored", rows, "events", "events stored");
            report.Add("duplicate_events", rows - distinct, "events", "events stored twice");
            report.Add("data_events_missing", lostEvents.Count, "events", "messages answered 250 without a stored DATA event (in the sink's memory at the kill)");
            report.Add("data_events_missing_early", lostEarly, "events", "of those, answered more than 3 s before a kill");
            report.Check("every message answered 250 is spooled", missingMail == 0, $"{missingMail} of {all.Count} missing");
            report.Check("spooled messages are whole", damaged == 0, $"{damaged} differ");
            report.Check("no message spooled twice", duplicateMail == 0, $"{duplicateMail} duplicates");
            report.Check("no event stored twice", rows == distinct && duplicateData == 0, $"{rows - distinct} duplicate rows, {duplicateData} DATA events twice");
            report.Check("every DATA event of a message answered 250 stored", lostEvents.Count == 0,
                $"{lostEvents.Count} of {all.Count} lost (the sink holds events in memory for up to a flush interval; {lostEarly} were older than 3 s at the kill)");
            report.Check("the mail spool has no temporary left after the restart", Directory.GetFiles(mail, "*.tmp").Length == 0, "");
        }
        finally
        {
            TryDelete(root);
        }
    }

    private static string MarkerOf(string message)
    {
        var at = message.IndexOf("X-Chaos-Id: ", StringComparison.Ordinal);
        return at < 0 ? "" : message[(at + 12)..message.IndexOf('\r', at)];
    }

    private sealed class Serve(Process process, IPEndPoint mx) : IDisposable
    {
        public Process Process { get; } = process;

        public IPEndPoint Mx { get; } = mx;

        public void Dispose()
        {
            if (!Process.HasExited)
            {
                Process.Kill();
            }

            Process.Dispose();
        }
    }

    private static async Task<Serve> StartServeAsync(string data, CancellationToken cancellationToken)
    {
        var mx = new IPEndPoint(IPAddress.Loopback, FreePort());
        var info = ChaosProcess.Cli(["serve", "--data", data, "--mx", mx.ToString(), "--submission", $"127.0.0.1:{FreePort()}", "--http", $"127.0.0.1:{FreePort()}"]);

        // The chaos clients all come from one /24 and a message each: no limit of the listener in the way.
        info.Environment["ANALYTICS_Limits__Session__MaxSessionsPerNetwork"] = "1000";
        info.Environment["ANALYTICS_Limits__FastPath__UnknownRecipientsPerIp"] = "100000";
        info.Environment["ANALYTICS_Limits__FastPath__UnknownRecipientsPerNetwork"] = "100000";
        info.Environment["ANALYTICS_Limits__FastPath__TarpitDelay"] = "00:00:00";
        var process = Process.Start(info)!;
        var output = new StringBuilder();
        process.OutputDataReceived += (_, e) =>
        {
            lock (output)
            {
                output.AppendLine(e.Data);
            }
        };
        process.ErrorDataReceived += (_, e) =>
        {
            lock (output)
            {
                output.AppendLine(e.Data);
            }
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var ready = Stopwatch.StartNew();
        while (ready.Elapsed < TimeSpan.FromMinutes(2) && !process.HasExited)
        {
            try
            {
                using var probe = new TcpClient();
                await probe.ConnectAsync(mx, cancellationToken);
                using var reader = new StreamReader(probe.GetStream(), Encoding.ASCII);
                if ((await reader.ReadLineAsync(cancellationToken))?.StartsWith("220", StringComparison.Ordinal) == true)
                {
                    return new Serve(process, mx);
                }
            }
            catch (SocketException)
            {
            }
            catch (IOException)
            {
            }

            await Task.Delay(200, cancellationToken);
        }

        if (!process.HasExited)
        {
            process.Kill();
        }

        lock (output)
        {
            throw new InvalidOperationException("serve did not start listening within 2 minutes:\n" + output);
        }
    }

    private static int FreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    /// <summary>One MX session of up to 5 messages, each to the mailbox and to an unknown address. Returns messages sent and those cut before their DATA reply.</summary>
    private static async Task<(int Sent, int Lost)> SessionAsync(IPEndPoint server, IPAddress source, string tag, ConcurrentBag<Accepted> accepted, int round, CancellationToken cancellationToken)
    {
        var sent = 0;
        var awaitingReply = false;
        try
        {
            using var client = new TcpClient(new IPEndPoint(source, 0));
            await client.ConnectAsync(server, cancellationToken);
            var stream = client.GetStream();
            using var smtp = new ChaosSmtp(stream, TimeSpan.FromSeconds(30));
            async Task<string> ReplyAsync()
            {
                var reply = await smtp.ReplyAsync(cancellationToken);
                return reply.Length > 0 ? reply : throw new IOException("closed");
            }

            async Task<string> CommandAsync(string line)
            {
                await stream.WriteAsync(Encoding.ASCII.GetBytes(line + "\r\n"), cancellationToken);
                return await ReplyAsync();
            }

            await ReplyAsync();
            await CommandAsync("EHLO chaos.example");
            for (var m = 0; m < 5; m++)
            {
                var marker = $"{tag}m{m}";
                await CommandAsync("MAIL FROM:<sender@chaos.example>");
                await CommandAsync($"RCPT TO:<{Mailbox}>");
                if (m == 0)
                {
                    await CommandAsync("RCPT TO:<nobody-" + marker + "@chaos-kill.test>"); // a 550, an event of its own
                }

                if (!(await CommandAsync("DATA")).StartsWith("354", StringComparison.Ordinal))
                {
                    await CommandAsync("RSET");
                    continue;
                }

                var body = $"X-Chaos-Id: {marker}\r\nSubject: chaos\r\n\r\n" + string.Concat(Enumerable.Repeat(new string('k', 70) + "\r\n", 100 + (marker.GetHashCode(StringComparison.Ordinal) & 255)));
                sent++;
                awaitingReply = true;
                await stream.WriteAsync(Encoding.ASCII.GetBytes(body + ".\r\n"), cancellationToken);
                var reply = await ReplyAsync();
                awaitingReply = false;
                if (reply.StartsWith("250", StringComparison.Ordinal))
                {
                    var id = reply[(reply.IndexOf("queued as ", StringComparison.Ordinal) + 10)..].Trim();
                    accepted.Add(new Accepted(id, marker, Encoding.ASCII.GetByteCount(body), DateTime.UtcNow, round));
                }
            }

            await CommandAsync("QUIT");
            return (sent, 0);
        }
        catch (Exception ex) when (ex is IOException or SocketException or OperationCanceledException or TimeoutException)
        {
            return (sent, awaitingReply ? 1 : 0);
        }
    }

    private static Task<(int Code, string Output)> RunToEndAsync(IEnumerable<string> args, CancellationToken cancellationToken) =>
        RunToEndAsync(null, args, cancellationToken);

    private static async Task<(int Code, string Output)> RunToEndAsync(string? file, IEnumerable<string> args, CancellationToken cancellationToken)
    {
        ProcessStartInfo info;
        if (file is null)
        {
            info = ChaosProcess.Cli(args);
        }
        else
        {
            info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var a in args)
            {
                info.ArgumentList.Add(a);
            }
        }

        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        await process.WaitForExitAsync(cancellationToken);
        return (process.ExitCode, await stdout + await stderr);
    }
}
