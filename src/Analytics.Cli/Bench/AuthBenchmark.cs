using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using Analytics.Cli.Commands;
using Analytics.Events;
using Analytics.Limits;
using Analytics.Simulation.Attacks;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Analytics.Submission;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Cli.Bench;

/// <summary>
/// <c>bench auth</c>: what AUTH costs users while attackers try passwords. The listener in this process
/// (plain AUTH, the production hash cost), legitimate users logging in over and over from their own
/// networks, and — in the attack runs — many addresses trying wrong passwords for real and made-up
/// accounts as fast as they can. The same runs with the old behaviour (no credential cache, hashing
/// unbounded) in the same process give the comparison. Figures only; nothing is asserted.
/// </summary>
internal static class AuthBenchmark
{
    private const string Domain = "bench.test";
    private const string Password = "bench password, long enough to be real";

    public static Command Create(CommandContext context)
    {
        var seconds = new Option<int>("--seconds") { Description = "Length of each run (default 15)", DefaultValueFactory = _ => 15 };
        var attackers = new Option<int>("--attackers") { Description = "Attacking addresses, each in its own /24 (default 200)", DefaultValueFactory = _ => 200 };
        var users = new Option<int>("--users") { Description = "Legitimate users logging in concurrently (default 8)", DefaultValueFactory = _ => 8 };
        var iterations = new Option<int>("--pbkdf2-iterations")
        {
            Description = "PBKDF2 iterations (default: the production default, 210,000)",
            DefaultValueFactory = _ => PasswordHasher.DefaultIterations,
        };
        var command = new Command("auth", "AUTH latency for legitimate users with and without many addresses guessing passwords, and logins/s for returning users; new behaviour against the old in one run")
        {
            seconds, attackers, users, iterations, BenchCommand.Json,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var settings = new Settings(parse.GetValue(seconds), parse.GetValue(attackers), parse.GetValue(users), parse.GetValue(iterations));
            if (settings.Seconds < 2 || settings.Attackers is < 0 or > 20_000 || settings.Users < 1 || settings.Iterations < 1)
            {
                throw new CliException("--seconds must be at least 2, --attackers 0 to 20000, --users and --pbkdf2-iterations at least 1.");
            }

            var json = parse.GetValue(BenchCommand.Json);
            var report = await RunAsync(settings, context.IO, json, cancellationToken);
            await report.WriteAsync(context.IO.Out, json);
            return 0;
        });
        return command;
    }

    private sealed record Settings(int Seconds, int Attackers, int Users, int Iterations);

    private sealed record Run(double LoginsPerSecond, double P50Ms, double P99Ms, int Refused, long AttackAttempts, long Hashes);

    private static async Task<BenchReport> RunAsync(Settings settings, CliIO io, bool quiet, CancellationToken cancellationToken)
    {
        var data = Path.Combine(Path.GetTempPath(), "analytics-bench-auth-" + Guid.NewGuid().ToString("N")[..8]);
        var report = new BenchReport("auth");
        report.Context("pbkdf2_iterations", settings.Iterations.ToString(CultureInfo.InvariantCulture));
        report.Context("users", $"{settings.Users} logging in again and again (connect, EHLO, AUTH PLAIN, QUIT), each from its own network");
        report.Context("attack", $"{settings.Attackers} addresses in {settings.Attackers} /24s, wrong passwords for real and made-up accounts, as fast as they can");
        report.Context("old", "no credential cache, every AUTH hashes at once (the behaviour before)");
        report.Context("cores", Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture) + " (clients and listener share them)");
        try
        {
            await using var store = EmbeddedStore.Open(data);
            await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings(), cancellationToken);
            var hasher = new PasswordHasher(settings.Iterations);
            var userStore = new UserStore(store, hasher);
            var accounts = Enumerable.Range(0, Math.Max(settings.Users, 20)).Select(i => $"user{i}@{Domain}").ToList();
            foreach (var account in accounts)
            {
                await userStore.AddAsync(account, Password, cancellationToken);
            }

            var recipientStore = new RecipientStore(store);
            await recipientStore.ImportAsync(new StringReader("@" + Domain), cancellationToken);
            var recipients = new RecipientDirectory(recipientStore, NullLogger<RecipientDirectory>.Instance);
            await recipients.RefreshAsync(cancellationToken);

            async Task<Run> MeasureAsync(string label, bool newBehaviour, int attackerCount)
            {
                Progress(io, quiet, label);
                var directory = new DirectoryOptions
                {
                    AuthCacheTtl = newBehaviour ? TimeSpan.FromMinutes(5) : TimeSpan.Zero,
                    HashConcurrency = newBehaviour ? 0 : 1024,
                    AuthQueue = newBehaviour ? 256 : 1_000_000,
                };
                var users = new UserDirectory(userStore, hasher, NullLogger<UserDirectory>.Instance, directory);
                await users.RefreshAsync(cancellationToken);
                var limits = new LimitsOptions { Session = { MaxSessions = 100_000, MaxSessionsPerIp = 1000, MaxAuthFailuresPerSession = 100 } };
                var options = new SubmissionOptions
                {
                    NodeName = "bench-auth",
                    DataDirectory = Path.Combine(data, "listener"),
                    SubmissionEndpoints = ["127.0.0.1:0"],
                    MxEndpoints = [],
                    AllowInsecureAuth = true,
                };
                await using var listener = new SubmissionListener(options, limits, users, recipients, new LimitBook(limits, TimeProvider.System),
                    NullEventPublisher.Instance, NullLogger<SubmissionListener>.Instance);
                await listener.StartAsync(cancellationToken);
                var server = listener.Endpoints[0].EndPoint;
                using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                stop.CancelAfter(TimeSpan.FromSeconds(settings.Seconds));
                long attempts = 0;
                var attack = Enumerable.Range(0, attackerCount).Select(a => Task.Run(async () =>
                {
                    var ip = IPAddress.Parse($"127.{70 + (a / 250)}.{a % 250}.9");
                    var random = new Random(a);
                    while (!stop.IsCancellationRequested)
                    {
                        try
                        {
                            await using var probe = await SmtpProbe.ConnectAsync(ip, server, stop.Token);
                            await probe.EhloAsync("bot.example", stop.Token);
                            for (var i = 0; i < 3 && !probe.Closed && !stop.IsCancellationRequested; i++)
                            {
                                var user = random.Next(2) == 0 ? accounts[random.Next(accounts.Count)] : $"x{random.Next(1_000_000)}@{Domain}";
                                await probe.AuthPlainAsync(user, "guess" + random.Next(), stop.Token);
                                Interlocked.Increment(ref attempts);
                            }
                        }
                        catch (Exception ex) when (ex is OperationCanceledException or IOException or System.Net.Sockets.SocketException)
                        {
                        }
                    }
                }, CancellationToken.None)).ToList();

                var latencies = new List<double>();
                var refused = 0;
                var logins = Enumerable.Range(0, settings.Users).Select(u => Task.Run(async () =>
                {
                    var ip = IPAddress.Parse($"127.{60 + (u / 250)}.{u % 250}.5");
                    var mine = new List<double>();
                    while (!stop.IsCancellationRequested)
                    {
                        try
                        {
                            await using var client = await SmtpProbe.ConnectAsync(ip, server, stop.Token);
                            await client.EhloAsync("laptop.example", stop.Token);
                            var watch = Stopwatch.StartNew();
                            var code = await client.AuthPlainAsync(accounts[u], Password, stop.Token);
                            if (code == 235)
                            {
                                mine.Add(watch.Elapsed.TotalMilliseconds);
                            }
                            else
                            {
                                Interlocked.Increment(ref refused);
                            }

                            await client.QuitAsync(stop.Token);
                        }
                        catch (Exception ex) when (ex is OperationCanceledException or IOException or System.Net.Sockets.SocketException)
                        {
                        }
                    }

                    lock (latencies)
                    {
                        latencies.AddRange(mine);
                    }
                }, CancellationToken.None)).ToList();
                await Task.WhenAll(logins.Concat(attack));
                await listener.StopAsync(CancellationToken.None);
                latencies.Sort();
                double P(double q) => latencies.Count == 0 ? double.NaN : latencies[Math.Clamp((int)Math.Ceiling(q * latencies.Count) - 1, 0, latencies.Count - 1)];
                return new Run(latencies.Count / (double)settings.Seconds, P(0.5), P(0.99), refused, attempts, users.HashesComputed);
            }

            void Add(string key, string label, Run run)
            {
                report.Add(key + "_logins_per_s", run.LoginsPerSecond, "logins/s", label + ": user logins/s");
                report.Add(key + "_p50_ms", run.P50Ms, "ms", label + ": user AUTH p50");
                report.Add(key + "_p99_ms", run.P99Ms, "ms", label + ": user AUTH p99");
                report.Add(key + "_refused", run.Refused, "", label + ": user logins refused");
                report.Add(key + "_attack_attempts", run.AttackAttempts, "", label + ": attacker AUTH attempts");
                report.Add(key + "_hashes", run.Hashes, "", label + ": password hashes computed");
            }

            var oldQuiet = await MeasureAsync("old behaviour, no attack", false, 0);
            var newQuiet = await MeasureAsync("new behaviour, no attack", true, 0);
            var oldAttack = settings.Attackers > 0 ? await MeasureAsync($"old behaviour, {settings.Attackers} attackers", false, settings.Attackers) : null;
            var newAttack = settings.Attackers > 0 ? await MeasureAsync($"new behaviour, {settings.Attackers} attackers", true, settings.Attackers) : null;
            Add("old_quiet", "old, no attack", oldQuiet);
            Add("new_quiet", "new, no attack", newQuiet);
            if (oldAttack is not null && newAttack is not null)
            {
                Add("old_attack", "old, under attack", oldAttack);
                Add("new_attack", "new, under attack", newAttack);
                report.Add("attack_p99_ratio", oldAttack.P99Ms / newAttack.P99Ms, "×", "user AUTH p99 under attack, old / new");
            }

            report.Add("returning_logins_ratio", newQuiet.LoginsPerSecond / oldQuiet.LoginsPerSecond, "×", "returning users' logins/s, new / old");
            return report;
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
    }

    private static void Progress(CliIO io, bool quiet, string message)
    {
        if (!quiet)
        {
            io.Error.WriteLine("bench auth: " + message);
        }
    }
}
