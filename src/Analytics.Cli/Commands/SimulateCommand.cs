using System.CommandLine;
using System.Globalization;
using Analytics.Simulation;
using Analytics.Simulation.Live;
using Analytics.Store;
using Analytics.Limits;
using Analytics.Submission;
using Microsoft.Extensions.Configuration;
using Spectre.Console;

namespace Analytics.Cli.Commands;

/// <summary><c>analytics simulate</c>: labelled traffic, fast into the store or live over SMTP.</summary>
internal static class SimulateCommand
{
    public static Command Create(CommandContext context)
    {
        var scenario = new Option<string>("--scenario") { Description = "Shipped scenario (small, demo, train) or a JSON file", DefaultValueFactory = _ => "small", HelpName = "NAME|FILE" };
        var mode = new Option<string>("--mode") { Description = "fast: events straight into the store on a virtual clock; live: real SMTP sessions against a running listener", DefaultValueFactory = _ => "fast" };
        mode.AcceptOnlyFromAmong("fast", "live");
        var days = new Option<int?>("--days") { Description = "Days of traffic (overrides the scenario)", HelpName = "N" };
        var seed = new Option<int?>("--seed") { Description = "Random seed (overrides the scenario): same seed and start, same events", HelpName = "N" };
        var start = new Option<string?>("--start") { Description = "First simulated day, yyyy-MM-dd (UTC). Default: fast mode ends today; live mode starts now", HelpName = "DATE" };
        var submission = new Option<string?>("--submission") { Description = "Live mode: the listener's submission endpoint", HelpName = "HOST:PORT" };
        var mx = new Option<string?>("--mx") { Description = "Live mode: the listener's MX endpoint", HelpName = "HOST:PORT" };
        var speed = new Option<double>("--speed") { Description = "Live mode: time-scale factor (1 = real time, 60 = an hour a minute)", DefaultValueFactory = _ => 1.0, HelpName = "X" };
        var concurrency = new Option<int>("--concurrency") { Description = "Live mode: sessions open at once, at most", DefaultValueFactory = _ => 200 };
        var command = new Command("simulate",
            "Simulated users and bots with ground-truth labels (table 'labels'): ordinary users, heavy senders, directory harvesters, " +
            "brute force, password spraying, credential stuffing and compromised accounts.\n" +
            "fast: writes the events the listener would record straight into the store (days of traffic in seconds).\n" +
            "live: seeds the world's users and mailboxes into the store, then plays real SMTP sessions against a running listener, " +
            "each simulated host from its own address in 127.0.0.0/8.")
        {
            scenario, mode, days, seed, start, submission, mx, speed, concurrency,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            Scenario loaded;
            try
            {
                loaded = Scenario.Load(parse.GetValue(scenario)!);
                loaded = loaded with { Days = parse.GetValue(days) ?? loaded.Days, Seed = parse.GetValue(seed) ?? loaded.Seed };
                if (loaded.Validate() is { Count: > 0 } errors)
                {
                    throw new ArgumentException(string.Join("; ", errors));
                }
            }
            catch (ArgumentException ex)
            {
                throw new CliException(ex.Message, 2);
            }

            var live = parse.GetValue(mode) == "live";
            var now = TimeProvider.System.GetUtcNow();
            DateTimeOffset first;
            if (parse.GetValue(start) is { } text)
            {
                if (!DateTime.TryParseExact(text, "yyyy-MM-dd", CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out var date))
                {
                    throw new CliException($"--start '{text}' is not yyyy-MM-dd.", 2);
                }

                first = new DateTimeOffset(date, TimeSpan.Zero);
            }
            else
            {
                first = live ? now : new DateTimeOffset(now.UtcDateTime.Date, TimeSpan.Zero).AddDays(1 - loaded.Days);
            }

            var world = WorldBuilder.Build(loaded, first);
            return live
                ? await LiveAsync(context, parse, world, parse.GetValue(submission), parse.GetValue(mx), parse.GetValue(speed), parse.GetValue(concurrency), cancellationToken)
                : await FastAsync(context, parse, world, cancellationToken);
        });
        return command;
    }

    private static async Task<int> FastAsync(CommandContext context, ParseResult parse, World world, CancellationToken cancellationToken)
    {
        var options = CommandContext.Settings(parse).Configuration.GetSection(LimitsOptions.SectionName).Get<LimitsOptions>() ?? new LimitsOptions();
        return await context.WithStoreAsync(parse, async store =>
        {
            var result = await WithProgressAsync(context, $"simulate {world.Scenario.Name} (fast)", world.Scenario.Days,
                progress => FastSimulation.RunAsync(store, world, options, TimeProvider.System, progress, cancellationToken));
            await context.IO.Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                $"run {result.RunId}: {result.Sessions:N0} sessions, {result.Events:N0} events, {result.Labels:N0} labels from {world.Start:yyyy-MM-dd} to {world.End:yyyy-MM-dd} in {result.Elapsed.TotalSeconds:0.0} s ({result.EventsPerSecond:N0} events/s) into {store.Backend} store {store.Location}"));
            await context.IO.Out.WriteLineAsync("sessions the fast path acted on (throttle events: tarpits, holds, locks, rate refusals), per population:");
            foreach (var (population, harm) in result.Populations.OrderBy(p => p.Value.Class != "benign" && p.Value.Class != "heavy_sender").ThenBy(p => p.Key, StringComparer.Ordinal))
            {
                await context.IO.Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                    $"  {population,-18} {harm.Class,-13} {harm.Sessions,9:N0} sessions {harm.Throttled,8:N0} acted on ({harm.Throttled / (double)Math.Max(1, harm.Sessions),6:P1}) {harm.Refused,8:N0} refused"));
            }

            return 0;
        }, cancellationToken);
    }

    private static async Task<int> LiveAsync(CommandContext context, ParseResult parse, World world, string? submission, string? mx, double speed, int concurrency, CancellationToken cancellationToken)
    {
        if (!ListenerEndpoint.TryParse(submission, out var submissionEndPoint) || !ListenerEndpoint.TryParse(mx, out var mxEndPoint))
        {
            throw new CliException("Live mode needs --submission HOST:PORT and --mx HOST:PORT of a running listener.", 2);
        }

        if (speed is <= 0 or > 1_000_000 || concurrency < 1)
        {
            throw new CliException("--speed must be above 0 and --concurrency at least 1.", 2);
        }

        return await context.WithStoreAsync(parse, async store =>
        {
            var (users, mailboxes) = await LiveSimulation.SeedAsync(store, world, 10_000, cancellationToken);
            await LabelWriter.WriteAsync(store, world.Labels, FastSimulation.RunId(world) + "-live", TimeProvider.System.GetUtcNow(), cancellationToken);
            if (context.Server?.Services.GetService(typeof(UserDirectory)) is UserDirectory userDirectory)
            {
                await userDirectory.RefreshAsync(cancellationToken);
            }

            if (context.Server?.Services.GetService(typeof(RecipientDirectory)) is RecipientDirectory recipientDirectory)
            {
                await recipientDirectory.RefreshAsync(cancellationToken);
            }

            await context.IO.Error.WriteLineAsync($"seeded {users} new users and {mailboxes} mailboxes; a listener in another process picks them up at its next directory refresh");
            var targets = new LiveTargets(submissionEndPoint, mxEndPoint);
            var started = TimeProvider.System.GetTimestamp();
            var sessions = await WithProgressAsync(context, $"simulate {world.Scenario.Name} (live x{speed})", world.Scenario.Days,
                progress => LiveSimulation.RunAsync(world, targets, speed, TimeProvider.System, concurrency, progress, cancellationToken));
            var elapsed = TimeProvider.System.GetElapsedTime(started);
            await context.IO.Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                $"live: {sessions:N0} sessions against submission {submissionEndPoint} and mx {mxEndPoint} in {elapsed.TotalSeconds:0.0} s ({sessions / Math.Max(elapsed.TotalSeconds, 1e-9):0.0} sessions/s)"));
            return 0;
        }, cancellationToken);
    }

    /// <summary>A Spectre progress bar on stderr when it is a terminal; nothing otherwise.</summary>
    private static async Task<T> WithProgressAsync<T>(CommandContext context, string title, int days, Func<IProgress<SimulationProgress>?, Task<T>> run)
    {
        if (Console.IsErrorRedirected || !ReferenceEquals(context.IO.Error, Console.Error))
        {
            return await run(null);
        }

        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        T result = default!;
        await console.Progress().AutoClear(false).StartAsync(async ctx =>
        {
            var task = ctx.AddTask(title, maxValue: days);
            var progress = new Progress<SimulationProgress>(p =>
            {
                task.Value = p.Day;
                task.Description = string.Create(CultureInfo.InvariantCulture, $"{title}: day {p.Day}/{p.Days}, {p.Sessions:N0} sessions");
            });
            result = await run(progress);
            task.Value = days;
        });
        return result;
    }
}
