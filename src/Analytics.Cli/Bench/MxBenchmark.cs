using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;
using Analytics.Cli.Commands;
using Analytics.Cli.Hosting;
using Analytics.Simulation.Attacks;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Analytics.Submission;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Cli.Bench;

/// <summary>
/// <c>bench mx</c>: our MX beside Postfix's, driven by the same client, Postfix's own <c>smtp-source</c>.
/// Ours is <c>analytics serve</c> as a child process at its shipped settings (full event capture into an
/// embedded store of its own, every check on) with one MX endpoint and mail discarded after it is spooled
/// (<c>Delivery:Discard</c>); Postfix is a private instance in a temporary folder (<see cref="PostfixMx"/>),
/// its mailboxes in a recipient table, mail discarded after it is queued. Both know the same mailboxes, so
/// every RCPT is accepted on both. Runs alternate, ours first, so drift hits both; the figure is the ratio
/// of the medians.
/// </summary>
internal static class MxBenchmark
{
    private const string SmtpSource = "/usr/sbin/smtp-source";
    private const string Domain = "mx.bench.test";
    private const string LocalPart = "user";
    private const string Sender = "sender@client.bench.test";

    public static Command Create(CommandContext context)
    {
        var messages = new Option<int>("--messages") { Description = "Sessions per run, one message each (smtp-source -m; default 2000)", DefaultValueFactory = _ => 2000 };
        var sessions = new Option<int>("--sessions") { Description = "Sessions in parallel (smtp-source -s; default 20, under both servers' 50 per client)", DefaultValueFactory = _ => 20 };
        var recipients = new Option<int>("--recipients") { Description = "Recipients per message (smtp-source -r; default 3)", DefaultValueFactory = _ => 3 };
        var runs = new Option<int>("--runs") { Description = "Runs against each server, alternating, ours first; medians are compared (default 3)", DefaultValueFactory = _ => 3 };
        var keep = new Option<bool>("--keep") { Description = "Keep the temporary folder (serve's data and log, Postfix's instance and maillog)" };
        var command = new Command("mx",
            "Our MX (serve, full event capture) against Postfix as an MX (recipient table, mail discarded), both driven by Postfix's smtp-source: " +
            "sessions/s per run, medians and the ratio ours/Postfix. Both run in a temporary folder of their own (--data and --config are not used). " +
            "Needs the Debian postfix package (smtp-source, postfix) and root; exits 2 without them")
        {
            messages, sessions, recipients, runs, keep, BenchCommand.Json,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var settings = new Settings(parse.GetValue(messages), parse.GetValue(sessions), parse.GetValue(recipients), parse.GetValue(runs), parse.GetValue(keep));
            if (settings.Messages < 1 || settings.Sessions < 1 || settings.Sessions > 50 || settings.Recipients < 1 || settings.Recipients > 100 || settings.Runs < 1)
            {
                throw new CliException("--messages and --runs must be at least 1, --sessions 1 to 50 (both servers' per-client cap), --recipients 1 to 100.");
            }

            if (MissingReason() is { } missing)
            {
                throw new CliException("bench mx: " + missing + ".", 2);
            }

            var json = parse.GetValue(BenchCommand.Json);
            var report = await RunAsync(settings, context.IO, json, cancellationToken);
            await report.WriteAsync(context.IO.Out, json);
            return 0;
        });
        return command;
    }

    /// <summary>Null when the bench can run here; otherwise what is missing.</summary>
    public static string? MissingReason() =>
        !File.Exists(SmtpSource)
            ? $"{SmtpSource} is missing (apt-get install postfix; it ships smtp-source)"
            : PostfixMx.MissingReason;

    private sealed record Settings(int Messages, int Sessions, int Recipients, int Runs, bool Keep);

    /// <summary>smtp-source -r N sends to LOCAL, 2LOCAL … NLOCAL; 1LOCAL too, in case a version counts from 1.</summary>
    private static List<string> Mailboxes(int recipients) =>
        [$"{LocalPart}@{Domain}", .. Enumerable.Range(1, recipients).Select(i => $"{i.ToString(CultureInfo.InvariantCulture)}{LocalPart}@{Domain}")];

    private static async Task<BenchReport> RunAsync(Settings settings, CliIO io, bool quiet, CancellationToken cancellationToken)
    {
        var root = Path.Combine(Path.GetTempPath(), "analytics-bench-mx-" + Guid.NewGuid().ToString("N")[..8]);
        var data = Path.Combine(root, "data");
        var serveLog = Path.Combine(root, "serve.log");
        Directory.CreateDirectory(data);
        var mailboxes = Mailboxes(settings.Recipients);
        var report = new BenchReport("mx");
        var failed = true;
        try
        {
            Progress(io, quiet, $"seeding {data}");
            await using (var store = EmbeddedStore.Open(data))
            {
                await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings(), cancellationToken);
                await new RecipientStore(store).ImportAsync(new StringReader(string.Join('\n', mailboxes)), cancellationToken);
            }

            // Shipped settings, but for what a bench must choose: ports, the node name, and where accepted
            // mail goes (dropped after the spool's fsync, as Postfix's discard transport drops it after its queue).
            var config = Path.Combine(root, "bench-mx.json");
            var http = "127.0.0.1:" + ServeChild.FreePort().ToString(CultureInfo.InvariantCulture);
            await File.WriteAllTextAsync(config, new JsonObject
            {
                ["Submission"] = new JsonObject { ["NodeName"] = "bench-mx" },
                ["Delivery"] = new JsonObject { ["Discard"] = true },
            }.ToJsonString(), cancellationToken);
            var ours = new IPEndPoint(IPAddress.Loopback, ServeChild.FreePort());

            Progress(io, quiet, "starting serve (MX only)");
            // Run from the folder that holds its data directory, as the default (./data) has it.
            using var serve = await ServeChild.StartAsync(["--data", data, "--config", config, "--mx", ours.ToString(), "--http", http], serveLog, cancellationToken, root);
            try
            {
                Progress(io, quiet, "starting Postfix (MX role)");
                await using var postfix = await PostfixMx.StartAsync(Path.Combine(root, "postfix"), Domain, mailboxes);
                var theirs = postfix.EndPoint;

                report.Context("client", $"smtp-source -s {settings.Sessions} -m {settings.Messages} -r {settings.Recipients} (HELO, MAIL, {settings.Recipients}×RCPT, DATA, QUIT; one message per session)");
                report.Context("ours", $"analytics serve (child process, run from the folder of its ./data) MX on {ours}, shipped settings, full event capture into embedded chDB {ChdbLibrary.Version}, Delivery:Discard");
                report.Context("postfix", $"{await PostfixVersionAsync(cancellationToken)} on {theirs}, private instance, recipient table, " + string.Join(", ", PostfixMx.MxSettings.Select(s => s.Replace("=", " = ", StringComparison.Ordinal))));
                report.Context("postfix_rig", "rig settings: smtpd_peername_lookup = no, no DNS, chroot off, smtputf8_enable = no; other smtpd settings at their defaults");
                report.Context("runs", settings.Runs.ToString(CultureInfo.InvariantCulture) + " each, alternating (ours first) after one unmeasured warm-up run each, as long as a measured one");
                report.Context("cores", Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture) + " (client and both servers share them; the idle server sleeps)");

                // Warm-up, a run's length: the tiered JIT on ours (serve's start leaves seconds of compilation
                // behind it; a quarter run left the first measured run ~30 % low), process pools and map caches on Postfix.
                var warm = settings;
                Progress(io, quiet, "warm-up");
                await DriveAsync(warm, ours, cancellationToken);
                await DriveAsync(warm, theirs, cancellationToken);

                var ourRates = new List<double>();
                var theirRates = new List<double>();
                for (var run = 1; run <= settings.Runs; run++)
                {
                    Progress(io, quiet, $"run {run}/{settings.Runs}: ours");
                    ourRates.Add(await DriveAsync(settings, ours, cancellationToken));
                    Progress(io, quiet, $"run {run}/{settings.Runs}: postfix");
                    theirRates.Add(await DriveAsync(settings, theirs, cancellationToken));
                    Progress(io, quiet, string.Create(CultureInfo.InvariantCulture, $"  ours {ourRates[^1]:0} sessions/s, postfix {theirRates[^1]:0} sessions/s"));
                }

                for (var i = 0; i < settings.Runs; i++)
                {
                    var n = (i + 1).ToString(CultureInfo.InvariantCulture);
                    report.Add("ours_sessions_per_s_run_" + n, ourRates[i], "sessions/s", $"ours, run {n}");
                    report.Add("postfix_sessions_per_s_run_" + n, theirRates[i], "sessions/s", $"postfix, run {n}");
                }

                var ourMedian = Median(ourRates);
                var theirMedian = Median(theirRates);
                report.Add("ours_sessions_per_s", ourMedian, "sessions/s", "ours, median");
                report.Add("postfix_sessions_per_s", theirMedian, "sessions/s", "postfix, median");
                report.Add("ratio_ours_to_postfix", ourMedian / theirMedian, "", "ratio of medians, ours/postfix (target ≥ 2)");
            }
            finally
            {
                if (!serve.HasExited)
                {
                    Progress(io, quiet, "stopping serve (SIGTERM)");
                    try
                    {
                        await ServeChild.StopAsync(serve, serveLog, TimeSpan.FromSeconds(90), cancellationToken);
                    }
                    finally
                    {
                        if (!serve.HasExited)
                        {
                            serve.Kill(entireProcessTree: true);
                        }
                    }
                }
            }

            // Full capture, checked: every session the client ran against ours is in the store.
            await using (var store = EmbeddedStore.Open(data))
            {
                var counts = await store.QueryAsync(
                    "SELECT countIf(kind = 'connect') AS sessions, countIf(kind = 'rcpt' AND outcome = 'ok') AS recipients, count() AS events FROM events WHERE node = 'bench-mx'",
                    null, cancellationToken);
                var driven = (settings.Runs + 1) * settings.Messages;
                report.Add("ours_sessions_stored", counts.Get<ulong>(0, "sessions"), "sessions", $"ours: sessions in the event store (of {driven:N0} driven)");
                report.Add("ours_recipients_stored", counts.Get<ulong>(0, "recipients"), "recipients", "ours: accepted RCPT events stored");
                report.Add("ours_events_stored", counts.Get<ulong>(0, "events"), "events", "ours: events stored");
            }

            failed = false;
            return report;
        }
        finally
        {
            if (settings.Keep || failed)
            {
                Progress(io, quiet, $"kept {root}");
            }
            else
            {
                try
                {
                    Directory.Delete(root, recursive: true);
                }
                catch (IOException)
                {
                }
                catch (UnauthorizedAccessException)
                {
                }
            }
        }
    }

    /// <summary>One smtp-source run; sessions/s from its start to its exit. Any refused command fails it (smtp-source stops on one).</summary>
    private static async Task<double> DriveAsync(Settings settings, IPEndPoint target, CancellationToken cancellationToken)
    {
        var info = new ProcessStartInfo(SmtpSource) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[]
                 {
                     "-4", "-s", settings.Sessions.ToString(CultureInfo.InvariantCulture), "-m", settings.Messages.ToString(CultureInfo.InvariantCulture),
                     "-r", settings.Recipients.ToString(CultureInfo.InvariantCulture), "-M", "client.bench.test", "-f", Sender, "-t", $"{LocalPart}@{Domain}",
                     "-S", "bench mx", $"{target.Address}:{target.Port.ToString(CultureInfo.InvariantCulture)}",
                 })
        {
            info.ArgumentList.Add(a);
        }

        var clock = Stopwatch.StartNew();
        using var process = Process.Start(info) ?? throw new CliException("Could not start smtp-source.");
        var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        try
        {
            await process.WaitForExitAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
            process.Kill();
            throw;
        }

        var elapsed = clock.Elapsed.TotalSeconds;
        if (process.ExitCode != 0)
        {
            throw new CliException($"smtp-source against {target} exited {process.ExitCode}: {(await stdout + await stderr).Trim()}");
        }

        return settings.Messages / elapsed;
    }

    private static async Task<string> PostfixVersionAsync(CancellationToken cancellationToken)
    {
        try
        {
            var info = new ProcessStartInfo("/usr/sbin/postconf", ["-d", "-h", "mail_version"]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            using var process = Process.Start(info)!;
            var version = (await process.StandardOutput.ReadToEndAsync(cancellationToken)).Trim();
            await process.WaitForExitAsync(cancellationToken);
            return "Postfix " + version;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return "Postfix";
        }
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
}
