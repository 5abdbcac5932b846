using System.CommandLine;
using Analytics.Cli.Bench;

namespace Analytics.Cli.Commands;

/// <summary><c>analytics bench …</c>: figures, printed (or as JSON), never asserted.</summary>
internal static class BenchCommand
{
    public static readonly Option<bool> Json = new("--json") { Description = "Print the figures as one JSON object" };

    /// <summary>This process's CPU time so far, every thread (the embedded engine's included).</summary>
    public static TimeSpan ProcessCpu()
    {
        using var process = System.Diagnostics.Process.GetCurrentProcess();
        return process.TotalProcessorTime;
    }

    public static Command Create(CommandContext context)
    {
        var command = new Command("bench", "Benchmarks that print figures (run on an idle machine; compare ratios within one run)");
        command.Subcommands.Add(IngestBenchmark.Create(context));
        command.Subcommands.Add(SmtpBenchmark.Create(context));
        command.Subcommands.Add(RelayBenchmark.Create(context));
        command.Subcommands.Add(MxBenchmark.Create(context));
        command.Subcommands.Add(SimulateBenchmark.Create(context));
        command.Subcommands.Add(ScoreBenchmark.Create(context));
        command.Subcommands.Add(LimitsBenchmark.Create(context));
        command.Subcommands.Add(AuthBenchmark.Create(context));
        command.Subcommands.Add(PolicyBenchmark.Create(context));
        return command;
    }
}
