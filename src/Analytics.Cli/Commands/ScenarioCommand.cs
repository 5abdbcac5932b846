using System.CommandLine;
using Analytics.Cli.Scenarios;
using Analytics.Simulation.Attacks;

namespace Analytics.Cli.Commands;

/// <summary><c>scenario run NAME [--json]</c>: one attack, with a legitimate population alongside, against a live <c>serve</c>.</summary>
internal static class ScenarioCommand
{
    private static readonly AttackScenario[] All =
    [
        new BruteforceScenario(), new StuffingScenario(), new SprayingScenario(), new HarvestScenario(), new DistributedHarvestScenario(), new CompromisedScenario(),
    ];

    public static Command Create(CommandContext context)
    {
        var command = new Command("scenario", "End-to-end attack scenarios against a live server over loopback, with their figures and targets");
        command.Subcommands.Add(List(context));
        command.Subcommands.Add(Run(context));
        return command;
    }

    private static Command List(CommandContext context)
    {
        var command = new Command("list", "The scenarios and what each does");
        command.SetAction(async (_, _) =>
        {
            foreach (var s in All)
            {
                await context.IO.Out.WriteLineAsync($"{s.Name,-20} {s.Description}");
            }

            return 0;
        });
        return command;
    }

    private static Command Run(CommandContext context)
    {
        var name = new Argument<string>("name") { Description = "bruteforce, stuffing, spraying, harvest, harvest-distributed or compromised" };
        name.AcceptOnlyFromAmong([.. All.Select(s => s.Name)]);
        var json = new Option<bool>("--json") { Description = "Print the figures as one JSON object" };
        var seed = new Option<int>("--seed") { Description = "Seed of the world (mailbox placement, accounts, pairs). Default 1", DefaultValueFactory = _ => 1 };
        var keep = new Option<bool>("--keep") { Description = "Keep the temporary data directory (store, spool, serve.log)" };
        var target = new Option<ScenarioTarget>("--target")
        {
            Description = "listener: serve's own SMTP listener (default); postfix: Postfix 3.7 and Dovecot 2.3 of the run's own with serve beside them (needs the Debian packages and root)",
            DefaultValueFactory = _ => ScenarioTarget.Listener,
        };
        var runs = new Option<int>("--runs") { Description = "Run it this many times (seeds SEED, SEED+1, …) and report each figure's spread (default 1)", DefaultValueFactory = _ => 1 };
        var command = new Command("run", "Run one scenario: a fresh data directory, serve as a child process, the attack and the legitimate users; exit 0 when every target is met, 3 when one is missed")
        {
            name, json, seed, keep, target, runs,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            if (context.Server is not null)
            {
                throw new CliException("scenario runs its own server; run it directly, not through a running serve.");
            }

            var scenario = All.First(s => s.Name == parse.GetRequiredValue(name));
            var asJson = parse.GetValue(json);
            var count = parse.GetValue(runs);
            if (count < 1)
            {
                throw new CliException("--runs must be at least 1.");
            }

            if (count == 1)
            {
                var report = await new ScenarioRunner(context.IO, asJson).RunAsync(scenario, parse.GetValue(seed), parse.GetValue(keep), parse.GetValue(target), cancellationToken);
                await report.WriteAsync(context.IO.Out, asJson);
                return report.AllPass ? 0 : 3;
            }

            var reports = new List<ScenarioReport>();
            var seeds = Enumerable.Range(parse.GetValue(seed), count).ToList();
            foreach (var s in seeds)
            {
                reports.Add(await new ScenarioRunner(context.IO, asJson).RunAsync(scenario, s, parse.GetValue(keep), parse.GetValue(target), cancellationToken));
            }

            var spread = new ScenarioSpread(scenario.Name, reports, seeds);
            await spread.WriteAsync(context.IO.Out, asJson);
            return spread.AllPass ? 0 : 3;
        });
        return command;
    }
}
