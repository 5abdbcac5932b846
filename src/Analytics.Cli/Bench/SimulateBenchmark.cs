using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Analytics.Cli.Commands;
using Analytics.Events;
using Analytics.Simulation;
using Analytics.Simulation.Live;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Analytics.Limits;
using Analytics.Store;
using Analytics.Submission;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Cli.Bench;

/// <summary>
/// <c>bench simulate</c>: fast-mode events/s into a fresh embedded store (planning, emulation,
/// encoding and insert, end to end), and live-mode sessions/s against the real listener started
/// in-process on free loopback ports over the same store.
/// </summary>
internal static class SimulateBenchmark
{
    public static Command Create(CommandContext context)
    {
        var scenario = new Option<string>("--scenario") { Description = "Scenario for the fast run (default demo)", DefaultValueFactory = _ => "demo" };
        var days = new Option<int>("--days") { Description = "Days for the fast run (default 7)", DefaultValueFactory = _ => 7 };
        var sessions = new Option<int>("--live-sessions") { Description = "Sessions for the live run (default 400; 0 skips it)", DefaultValueFactory = _ => 400 };
        var command = new Command("simulate", "Fast-mode events/s into the embedded store and live-mode SMTP sessions/s against an in-process listener")
        {
            scenario, days, sessions, BenchCommand.Json,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var json = parse.GetValue(BenchCommand.Json);
            var report = new BenchReport("simulate");
            var data = Path.Combine(Path.GetTempPath(), "analytics-bench-sim-" + Guid.NewGuid().ToString("N")[..8]);
            try
            {
                await using var store = EmbeddedStore.Open(data);
                await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings(), cancellationToken);
                var loaded = Scenario.Load(parse.GetValue(scenario)!) with { Days = parse.GetValue(days) };
                var now = TimeProvider.System.GetUtcNow();
                var world = WorldBuilder.Build(loaded, new DateTimeOffset(now.UtcDateTime.Date, TimeSpan.Zero).AddDays(1 - loaded.Days));
                report.Context("scenario", $"{loaded.Name}, {loaded.Days} days, {world.EntityCount} entities");
                report.Context("engine", "chDB " + ChdbLibrary.Version);
                report.Context("cores", Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture));
                if (!json)
                {
                    await context.IO.Error.WriteLineAsync("fast mode…");
                }

                var fast = await FastSimulation.RunAsync(store, world, null, TimeProvider.System, null, cancellationToken);
                report.Add("fast_events", fast.Events, "events", "fast mode: events written");
                report.Add("fast_events_per_s", fast.EventsPerSecond, "events/s", "fast mode: events/s end to end");
                report.Add("fast_sessions_per_s", fast.Sessions / fast.Elapsed.TotalSeconds, "sessions/s", "fast mode: sessions/s");

                var liveSessions = parse.GetValue(sessions);
                if (liveSessions > 0)
                {
                    if (!json)
                    {
                        await context.IO.Error.WriteLineAsync("live mode…");
                    }

                    var (count, rate) = await LiveAsync(store, data, liveSessions, cancellationToken);
                    report.Add("live_sessions", count, "sessions", "live mode: sessions played");
                    report.Add("live_sessions_per_s", rate, "sessions/s", "live mode: sessions/s (in-process listener)");
                }

                await report.WriteAsync(context.IO.Out, json);
                return 0;
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
        });
        return command;
    }

    private static async Task<(int Sessions, double PerSecond)> LiveAsync(Analytics.Store.IClickHouseStore store, string data, int count, CancellationToken cancellationToken)
    {
        var options = new SubmissionOptions
        {
            NodeName = "bench-live",
            DataDirectory = Path.Combine(data, "listener"),
            SubmissionEndpoints = ["127.0.0.1:0"],
            MxEndpoints = ["127.0.0.1:0"],
            Directory = { Pbkdf2Iterations = 1000 },
        };
        var limits = new LimitsOptions { Session = { MaxSessionsPerIp = 1000 }, FastPath = { TarpitDelay = TimeSpan.FromMilliseconds(20) } };
        var world = WorldBuilder.Build(Scenario.Load("small") with { Seed = 99 }, TimeProvider.System.GetUtcNow());
        await LiveSimulation.SeedAsync(store, world, 1000, cancellationToken);
        var hasher = new PasswordHasher(1000);
        var users = new UserDirectory(new UserStore(store, hasher), hasher, NullLogger<UserDirectory>.Instance);
        var recipients = new RecipientDirectory(new RecipientStore(store), NullLogger<RecipientDirectory>.Instance);
        await users.RefreshAsync(cancellationToken);
        await recipients.RefreshAsync(cancellationToken);
        await using var sink = new EventSink(store, new EventSinkOptions(), Path.Combine(data, "event-spool"), NullLogger.Instance);
        await using var listener = new SubmissionListener(options, limits, users, recipients,
            new LimitBook(limits, TimeProvider.System), sink, NullLogger<SubmissionListener>.Instance);
        await listener.StartAsync(cancellationToken);
        var targets = new LiveTargets(
            listener.Endpoints.First(e => e.Role == ListenerRole.Submission).EndPoint,
            listener.Endpoints.First(e => e.Role == ListenerRole.Mx).EndPoint);
        var scripts = FastSimulation.PlanDay(world, 0).Take(count).ToList();
        using var gate = new SemaphoreSlim(64);
        var sw = Stopwatch.StartNew();
        await Task.WhenAll(scripts.Select(async script =>
        {
            await gate.WaitAsync(cancellationToken);
            try
            {
                await LiveClient.RunAsync(script, targets.For(script.Role), speed: 1000, TimeProvider.System, cancellationToken);
            }
            finally
            {
                gate.Release();
            }
        }));
        var elapsed = sw.Elapsed;
        await listener.StopAsync(cancellationToken);
        return (scripts.Count, scripts.Count / elapsed.TotalSeconds);
    }
}
