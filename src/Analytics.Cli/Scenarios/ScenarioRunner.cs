using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Analytics.Cli.Hosting;
using Analytics.Detection.Scoring;
using Analytics.Policy;
using Analytics.Simulation.Attacks;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Analytics.Submission;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Cli.Scenarios;

/// <summary>Whom the scenario attacks: serve's own listener, or Postfix and Dovecot with serve beside them.</summary>
internal enum ScenarioTarget
{
    Listener,
    Postfix,
}

/// <summary>
/// Runs one scenario end to end: a fresh data directory seeded with accounts (known passwords, low
/// PBKDF2 cost) and the local recipient directory; the real server started as a child process
/// (<c>analytics serve</c>) with a scenario configuration; the legitimate population and the attack
/// over loopback from their own 127.0.0.0/8 addresses; SIGTERM; then the figures from what the
/// clients saw and from the store the server left behind (events, limit_changes, verdicts). With
/// <see cref="ScenarioTarget.Postfix"/> the clients talk to a Postfix and a Dovecot of the run's own
/// (<see cref="PostfixTarget"/>) that serve stands beside, configured as the operator's guide says.
/// </summary>
internal sealed class ScenarioRunner
{
    private readonly CliIO _io;
    private readonly bool _quiet;
    private static readonly TimeSpan AttackDeadline = TimeSpan.FromSeconds(90);

    private readonly TimeProvider _time = TimeProvider.System;

    public ScenarioRunner(CliIO io, bool quiet)
    {
        _io = io;
        _quiet = quiet;
    }

    public async Task<ScenarioReport> RunAsync(AttackScenario scenario, int seed, bool keep, ScenarioTarget target, CancellationToken cancellationToken)
    {
        if (target == ScenarioTarget.Postfix && PostfixTarget.MissingReason is { } missing)
        {
            throw new CliException("--target postfix: " + missing + ".");
        }

        var data = Path.Combine(Path.GetTempPath(), "analytics-scenario-" + scenario.Name + "-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(data);
        var world = new ScenarioWorld(seed);
        var report = new ScenarioReport(scenario.Name);
        var failed = true;
        try
        {
            Progress($"seeding {data}");
            await SeedAsync(scenario, world, data, cancellationToken);
            var submission = new IPEndPoint(IPAddress.Loopback, FreePort());
            var mx = new IPEndPoint(IPAddress.Loopback, FreePort());
            var policy = target == ScenarioTarget.Postfix ? new PolicyEndpoints(data) : null;
            var config = WriteConfig(data, policy);
            var log = new ClientLog(_time);
            var modelDirectory = new DetectionOptions().ResolveModelDirectory();

            Progress("starting serve");
            var serveLog = Path.Combine(data, "serve.log");
            PostfixTarget? peers = null;
            using (var serve = await StartServeAsync(data, config, submission, mx, serveLog, cancellationToken))
            try
            {
                if (policy is not null)
                {
                    Progress("starting Postfix and Dovecot beside it");
                    peers = await PostfixTarget.StartAsync(policy.PeersRoot, world, policy.PostfixEndpoint, policy.DovecotUrl);
                }

                var context = new AttackContext(world, peers?.Submission ?? submission, peers?.Mx ?? mx, log, _time);
                using var stopLegit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                var legit = LegitPopulation.RunAsync(context, stopLegit.Token);

                // The legitimate population is already sending when the attack starts, and goes on a little
                // after it, so scoring passes that run on the attack's aftermath see them too.
                await Task.Delay(TimeSpan.FromSeconds(1), _time, cancellationToken);
                Progress("attack: " + scenario.Description);
                var attackWatch = Stopwatch.StartNew();
                using (var attackDeadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
                {
                    // A bot that is never stopped would run for many minutes; the figures then show it.
                    attackDeadline.CancelAfter(AttackDeadline);
                    try
                    {
                        await scenario.AttackAsync(context, attackDeadline.Token);
                    }
                    catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                    {
                        report.Context("attack_cut_off", $"the attack was still running after {AttackDeadline.TotalSeconds:0} s and was stopped");
                    }
                }

                report.Context("attack_duration", attackWatch.Elapsed.TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture) + " s");
                await Task.Delay(TimeSpan.FromSeconds(2), _time, cancellationToken);
                await stopLegit.CancelAsync();
                await legit;
                if (peers is not null)
                {
                    // What Postfix logged last reaches serve before it stops.
                    await Task.Delay(TimeSpan.FromMilliseconds(500), _time, cancellationToken);
                    Progress("stopping Postfix and Dovecot");
                    await peers.DisposeAsync();
                }

                Progress("stopping serve (SIGTERM)");
                Signal(serve.Id, "TERM");
                using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                deadline.CancelAfter(TimeSpan.FromSeconds(90));
                await serve.WaitForExitAsync(deadline.Token);
                if (serve.ExitCode != 0)
                {
                    throw new CliException($"serve exited with {serve.ExitCode}; its log is {serveLog}");
                }
            }
            finally
            {
                if (peers is not null)
                {
                    await peers.DisposeAsync();
                }

                if (!serve.HasExited)
                {
                    serve.Kill(entireProcessTree: true);
                }
            }

            Progress("reading the store");
            await using (var store = EmbeddedStore.Open(data))
            {
                report.Context("seed", seed.ToString(CultureInfo.InvariantCulture));
                if (policy is null)
                {
                    report.Context("server", $"analytics serve (child process), submission {submission}, mx {mx}");
                    report.Context("transport", "attackers: AUTH PLAIN in the clear (AllowInsecureAuth); legitimate users: MailKit with STARTTLS");
                }
                else
                {
                    report.Context("server", PostfixTargetDescription);
                    report.Context("transport", "attackers: AUTH PLAIN in the clear; legitimate users: MailKit with STARTTLS (Postfix's self-signed certificate)");
                    report.Context("dovecot", PostfixTarget.DovecotChanges);
                    report.Context("auth_refusals", "a login refused by the engine reaches the client as 535 5.7.8 …: Temporary authentication failure…; the figures count it as the 454 it is");
                }

                report.Context("pbkdf2_iterations", ScenarioWorld.Pbkdf2Iterations.ToString(CultureInfo.InvariantCulture) + " (LOWERED for seeded accounts and the server's dummy hash)");
                report.Context("score_interval", "1 s");
                report.Context("model", await ModelUsedAsync(store, modelDirectory, cancellationToken));
                scenario.Report(report, log, world);
                await CommonFiguresAsync(report, scenario, world, log, store, cancellationToken);
            }

            failed = false;
            return report;
        }
        finally
        {
            if (keep || failed)
            {
                Progress($"data directory kept: {data}");
            }
            else
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

    private static async Task SeedAsync(AttackScenario scenario, ScenarioWorld world, string data, CancellationToken cancellationToken)
    {
        await using var store = EmbeddedStore.Open(data);
        await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings(), cancellationToken);
        var users = new UserStore(store, new PasswordHasher(ScenarioWorld.Pbkdf2Iterations));
        foreach (var (name, password) in world.Accounts)
        {
            await users.AddAsync(name, password, cancellationToken);
        }

        foreach (var name in world.LegitUsers)
        {
            await users.AddAsync(name, ScenarioWorld.LegitPassword, cancellationToken);
        }

        await new RecipientStore(store).ImportAsync(new StringReader(string.Join('\n', world.DirectoryLines)), cancellationToken);
        await scenario.SeedAsync(store, world, data, cancellationToken);
    }

    /// <summary>
    /// The scenario configuration: scoring every second; AUTH allowed before STARTTLS (the bots speak
    /// plain SMTP; the legitimate clients still use STARTTLS); the server's dummy hash as cheap as the
    /// seeded ones, so unknown and known users cost the same; a per-IP session cap that the bots'
    /// parallelism does not hit. Every defense runs at its default.
    /// </summary>
    private const string PostfixTargetDescription =
        "Postfix 3.7 (MX, and submission with Dovecot 2.3 SASL) and Dovecot 2.3, child instances, with analytics serve (child process) beside them: " +
        "check_policy_service as recommended (connection check first, limits after reject_unlisted_recipient, end of data), auth_policy_server_url with pwtag, maillog_file followed";

    /// <summary>Where serve's policy services listen for the run's Postfix and Dovecot, in the run's data directory.</summary>
    private sealed class PolicyEndpoints(string data)
    {
        public string PeersRoot { get; } = Path.Combine(data, "peers");

        public string PostfixEndpoint { get; } = "unix:" + Path.Combine(data, "policy.sock");

        public int DovecotPort { get; } = FreePort();

        public string DovecotUrl => $"http://127.0.0.1:{DovecotPort.ToString(CultureInfo.InvariantCulture)}/";

        public JsonObject Section => new()
        {
            [nameof(PolicyOptions.PostfixEndpoint)] = PostfixEndpoint,
            [nameof(PolicyOptions.PostfixSocketGroup)] = "postfix", // smtpd runs as postfix; the socket is 0660
            [nameof(PolicyOptions.DovecotEndpoint)] = "127.0.0.1:" + DovecotPort.ToString(CultureInfo.InvariantCulture),
            [nameof(PolicyOptions.MailLog)] = PostfixTarget.MailLogOf(PeersRoot),
        };
    }

    private static string WriteConfig(string data, PolicyEndpoints? policy)
    {
        if (policy is not null)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(PostfixTarget.MailLogOf(policy.PeersRoot))!);
        }

        var config = new JsonObject
        {
            ["Detection"] = new JsonObject { ["ScoreInterval"] = "00:00:01" },
            ["Submission"] = new JsonObject
            {
                ["NodeName"] = "scenario",
                ["AllowInsecureAuth"] = true,
                ["Directory"] = new JsonObject { ["Pbkdf2Iterations"] = ScenarioWorld.Pbkdf2Iterations },
                ["Limits"] = new JsonObject { ["ShutdownDeadline"] = "00:00:05" },
            },
            ["Store"] = new JsonObject { ["Backend"] = "embedded" },

            // The review console and /metrics, on a free port: another server may hold the default one.
            ["Review"] = new JsonObject { ["Http"] = "127.0.0.1:" + FreePort().ToString(CultureInfo.InvariantCulture) },
        };
        if (policy is not null)
        {
            config[PolicyOptions.SectionName] = policy.Section;
        }

        var path = Path.Combine(data, "scenario.json");
        File.WriteAllText(path, config.ToJsonString());
        return path;
    }

    private static Task<Process> StartServeAsync(string data, string config, IPEndPoint submission, IPEndPoint mx, string logPath, CancellationToken cancellationToken) =>
        ServeChild.StartAsync(["--data", data, "--config", config, "--submission", submission.ToString(), "--mx", mx.ToString()], logPath, cancellationToken);

    private static void Signal(int pid, string signal) => ServeChild.Signal(pid, signal);

    private static int FreePort() => ServeChild.FreePort();

    private static async Task<string> ModelUsedAsync(IClickHouseStore store, string modelDirectory, CancellationToken cancellationToken)
    {
        var rows = await store.QueryListAsync<ModelCount>(
            "SELECT model_version AS model, count() AS verdicts FROM verdicts GROUP BY model_version ORDER BY verdicts DESC", null, cancellationToken);
        var used = string.Join(", ", rows.Select(r => $"{r.Model} ({r.Verdicts} verdicts)"));
        var present = File.Exists(Path.Combine(modelDirectory, "model.json"));
        return (used.Length > 0 ? used : "no verdicts written") + (present ? $"; model directory {modelDirectory}" : $"; no model at {modelDirectory}: rules fallback");
    }

    private const string IpText = "replaceOne(IPv6NumToString(client_ip), '::ffff:', '')";

    /// <summary>
    /// Legitimate users throttled/blocked (the server's own throttle events for their addresses), and
    /// time from each attacking unit's first event to the first limit enforced on it (a throttle event
    /// — refusal, lock or tarpit — for one of its addresses, or a limit change on it), p95 over units.
    /// </summary>
    private static async Task CommonFiguresAsync(ScenarioReport report, AttackScenario scenario, ScenarioWorld world, ClientLog log, IClickHouseStore store, CancellationToken cancellationToken)
    {
        var legitIps = world.LegitIps.Select(ip => ip.ToString()).ToHashSet(StringComparer.Ordinal);
        var throttles = await store.QueryListAsync<Throttled>(
            $"SELECT {IpText} AS ip, min(ts) AS first, countIf(reply_code >= 500) AS refusals FROM events WHERE kind = 'throttle' GROUP BY ip", null, cancellationToken);
        var legitThrottled = throttles.Count(r => legitIps.Contains(r.Ip));
        var legitBlocked = throttles.Count(r => legitIps.Contains(r.Ip) && r.Refusals > 0);
        var legitRecords = log.Of(Side.Legit).ToList();
        var sent = legitRecords.Count(r => r.Step == "data" && r.Code == 250);
        var refused = legitRecords.Count(r => r.Code >= 400 && !(r.Step == "auth" && r.Code == 535));
        var clientFailures = legitRecords.Where(r => r.Code == ClientLog.ClientFailure).ToList();
        report.Add("legit_client_failures", "legitimate sessions that failed on the client's side (TLS, timeouts)", clientFailures.Count);
        if (clientFailures.Count > 0)
        {
            report.Context("legit_client_failures", string.Join(", ", clientFailures.GroupBy(r => r.Step + ": " + r.Subject).Select(g => $"{g.Key} x{g.Count()}")));
        }

        report.Add("legit_messages_sent", "legitimate messages delivered", sent);
        report.Add("legit_refusals", "legitimate commands refused (4xx/5xx, typos aside)", refused);
        report.Add("legit_throttled", $"legitimate clients throttled (of {legitIps.Count})", legitThrottled);
        report.Add("legit_blocked", $"legitimate clients blocked (of {legitIps.Count})", legitBlocked, 0);

        var first = (await store.QueryListAsync<FirstSeen>($"SELECT {IpText} AS ip, min(ts) AS first FROM events GROUP BY ip", null, cancellationToken))
            .ToDictionary(r => r.Ip, r => r.First, StringComparer.Ordinal);
        var enforced = throttles.ToDictionary(r => r.Ip, r => r.First, StringComparer.Ordinal);
        var changes = await store.QueryListAsync<LimitedAt>(
            "SELECT entity_kind AS kind, entity, min(set_at) AS at FROM limit_changes WHERE level IN ('throttle', 'block') GROUP BY entity_kind, entity", null, cancellationToken);

        var units = new Dictionary<string, (DateTime Start, DateTime? End)>(StringComparer.Ordinal);
        foreach (var ip in scenario.AttackIps)
        {
            var text = ip.ToString();
            if (!first.TryGetValue(text, out var start))
            {
                continue; // never reached the server
            }

            DateTime? end = enforced.TryGetValue(text, out var e) ? e : null;
            foreach (var (kind, entity, at) in changes)
            {
                if ((kind == EntityKind.Ip && entity == text) || (kind == EntityKind.Net && entity == AttackScenario.Net24(ip)))
                {
                    end = end is null || at < end ? at : end;
                }
            }

            var unit = scenario.UnitOf(ip);
            if (units.TryGetValue(unit, out var u))
            {
                units[unit] = (start < u.Start ? start : u.Start, end is null ? u.End : u.End is null || end < u.End ? end : u.End);
            }
            else
            {
                units[unit] = (start, end);
            }
        }

        var latencies = units.Values.Select(u => u.End is { } end ? Math.Max(0, (end - u.Start).TotalSeconds) : double.PositiveInfinity).Order().ToList();
        double? p95 = latencies.Count == 0 ? null : latencies[Math.Clamp((int)Math.Ceiling(0.95 * latencies.Count) - 1, 0, latencies.Count - 1)];
        report.Add("attack_units", "attacking units (IPs, or /24s when distributed)", units.Count);
        report.Add("units_never_limited", "attacking units never limited", latencies.Count(double.IsPositiveInfinity));
        report.Add("time_to_limit_p95_s", "first attack event → enforced limit, p95", p95, 2, "s");
        report.Add("time_to_limit_max_s", "first attack event → enforced limit, max", latencies.Count == 0 ? null : latencies[^1], null, "s");

        var flagged = await store.QueryFirstOrDefaultAsync<Count>("SELECT countIf(flagged) AS n FROM verdicts", null, cancellationToken);
        report.Add("verdicts_flagged", "verdicts flagged by the scorer", flagged?.N ?? 0);
        var modelChanges = await store.QueryFirstOrDefaultAsync<Count>("SELECT count() AS n FROM limit_changes WHERE source IN ('model', 'rules')", null, cancellationToken);
        report.Add("policy_limit_changes", "limit changes made by the policy from verdicts", modelChanges?.N ?? 0);
    }

    private sealed record ModelCount(string Model, ulong Verdicts);

    private sealed record Throttled(string Ip, DateTime First, ulong Refusals);

    private sealed record FirstSeen(string Ip, DateTime First);

    private sealed record LimitedAt(EntityKind Kind, string Entity, DateTime At);

    private sealed record Count(ulong N);

    private void Progress(string message)
    {
        if (!_quiet)
        {
            _io.Error.WriteLine("scenario: " + message);
        }
    }
}
