using System.CommandLine;
using Analytics.Cli.Chaos;

namespace Analytics.Cli.Commands;

/// <summary>
/// <c>analytics chaos SCENARIO</c>: a failure made on purpose against the real sink and store, measured.
/// Each scenario prints its figures and PASS, FAIL or SKIP (or one JSON object with <c>--json</c>); the
/// exit code is 0 for PASS and SKIP, 1 for FAIL. Scenarios are a registry: add one to <see cref="Scenarios"/>.
/// </summary>
internal static class ChaosCommand
{
    public static readonly Option<bool> Json = new("--json") { Description = "Print the figures and the verdict as one JSON object" };

    /// <summary>Every scenario, by name.</summary>
    public static IReadOnlyList<ChaosScenario> Scenarios { get; } =
    [
        new StoreOutageScenario(),
        new KillScenario(),
        new ServeKillScenario(),
        new EventDiskFullScenario(),
        new SmtpFuzzScenario(),
        new IdleFloodScenario(),
        new DataFloodScenario(),
    ];

    public static Command Create(CommandContext context)
    {
        var command = new Command("chaos", "Failure and attack scenarios against the real listener, event sink and store, with figures and PASS/FAIL");
        foreach (var scenario in Scenarios)
        {
            var sub = new Command(scenario.Name, scenario.Description) { Json };
            foreach (var option in scenario.Options)
            {
                sub.Options.Add(option);
            }

            sub.SetAction(async (parse, cancellationToken) =>
            {
                var json = parse.GetValue(Json);
                var report = new ChaosReport(scenario.Name);
                var progress = json ? TextWriter.Null : context.IO.Error;
                try
                {
                    await scenario.RunAsync(parse, report, progress, cancellationToken);
                }
                catch (ChaosSkipException ex)
                {
                    report.Skip(ex.Message);
                }

                await report.WriteAsync(context.IO.Out, json);
                return report.Outcome == ChaosOutcome.Fail ? 1 : 0;
            });
            command.Subcommands.Add(sub);
        }

        // The process the kill scenario starts, publishes in and SIGKILLs; not for people.
        command.Subcommands.Add(KillScenario.CreateChild());
        return command;
    }
}
