using System.CommandLine;
using System.Reflection;
using Analytics.Cli.Commands;

namespace Analytics.Cli;

/// <summary>The `analytics` command tree. Every verb is here; each lives in its own file under Commands/.</summary>
internal static class AnalyticsCli
{
    public static string Version { get; } =
        typeof(AnalyticsCli).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "0.0.0";

    /// <summary>Parses and runs. <paramref name="server"/> is set when the running server executes the command.</summary>
    public static async Task<int> RunAsync(string[] args, CliIO io, ServerContext? server, CancellationToken cancellationToken)
    {
        var root = Build(io, server);
        // No response files: '@example.org' is a domain here (recipients add), not a file to expand.
        var parse = root.Parse(args, new ParserConfiguration { ResponseFileTokenReplacer = null });
        var invocation = new InvocationConfiguration
        {
            Output = io.Out,
            Error = io.Error,
            EnableDefaultExceptionHandler = false,
        };
        try
        {
            return await parse.InvokeAsync(invocation, cancellationToken);
        }
        catch (CliException ex)
        {
            await io.Error.WriteLineAsync("error: " + ex.Message);
            return ex.ExitCode;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return 130;
        }
    }

    private static RootCommand Build(CliIO io, ServerContext? server)
    {
        var root = new RootCommand(
            "Anti-harvesting and bot-detection engine for mail submission (587) and inbound MX (25).\n" +
            "Records every SMTP session into ClickHouse (embedded by default), learns who is a bot, and throttles it live.");
        root.Options.Add(GlobalOptions.Data);
        root.Options.Add(GlobalOptions.Config);
        var context = new CommandContext(io, server);
        root.Subcommands.Add(ServeCommand.Create(context));
        root.Subcommands.Add(SqlCommand.Create(context));
        root.Subcommands.Add(BenchCommand.Create(context));
        root.Subcommands.Add(ChaosCommand.Create(context));
        root.Subcommands.Add(UsersCommand.Create(context));
        root.Subcommands.Add(RecipientsCommand.Create(context));
        root.Subcommands.Add(SimulateCommand.Create(context));
        root.Subcommands.Add(DetectionCommands.Train(context));
        root.Subcommands.Add(DetectionCommands.Evaluate(context));
        root.Subcommands.Add(DetectionCommands.Score(context));
        root.Subcommands.Add(ReviewersCommand.Create(context));
        root.Subcommands.Add(LimitsCommand.Create(context));
        root.Subcommands.Add(QueueCommand.Create(context));
        root.Subcommands.Add(ConfigCommand.Create(context));
        root.Subcommands.Add(SchemaCommand.Create(context));
        root.Subcommands.Add(ScenarioCommand.Create(context));
        return root;
    }
}

/// <summary>Options every verb understands.</summary>
internal static class GlobalOptions
{
    public static readonly Option<string?> Data = new("--data")
    {
        Description = "Data directory: embedded store, event spool, mail spool, keys. Default: $ANALYTICS_DATA or ./data",
        Recursive = true,
        HelpName = "DIR",
    };

    public static readonly Option<string?> Config = new("--config")
    {
        Description = "Configuration file (JSON) read after appsettings.json and before environment variables (ANALYTICS_*)",
        Recursive = true,
        HelpName = "FILE",
    };
}

/// <summary>A failure to report as one line and an exit code, not a stack trace.</summary>
internal sealed class CliException : Exception
{
    public CliException(string message, int exitCode = 1) : base(message) => ExitCode = exitCode;

    public CliException()
    {
    }

    public CliException(string message) : base(message)
    {
    }

    public CliException(string message, Exception innerException) : base(message, innerException)
    {
    }

    public int ExitCode { get; } = 1;
}
