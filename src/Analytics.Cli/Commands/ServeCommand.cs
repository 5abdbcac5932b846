using System.CommandLine;
using Analytics.Cli.Hosting;

namespace Analytics.Cli.Commands;

/// <summary><c>analytics serve</c>: the whole system in one process.</summary>
internal static class ServeCommand
{
    public static Command Create(CommandContext context)
    {
        var submission = new Option<string[]>("--submission")
        {
            Description = "Submission endpoint (AUTH, STARTTLS), repeatable. With --submission or --mx, the command line replaces every configured endpoint",
            HelpName = "HOST:PORT",
            AllowMultipleArgumentsPerToken = false,
        };
        var mx = new Option<string[]>("--mx")
        {
            Description = "Inbound MX endpoint (local recipients only), repeatable",
            HelpName = "HOST:PORT",
            AllowMultipleArgumentsPerToken = false,
        };
        var http = new Option<string?>("--http")
        {
            Description = "Review console and /metrics endpoint (default Review:Http, 127.0.0.1:8025)",
            HelpName = "HOST:PORT",
        };
        var demo = new Option<bool>("--demo")
        {
            Description = "Seed a demo population (accounts, mailboxes, bots) and play it live against this server, sped up; listens on 127.0.0.1:2587 (submission), 127.0.0.1:2525 (MX) unless told otherwise",
        };
        var command = new Command("serve", "Run the server: SMTP listener (submission, MX), embedded store, event pipeline, scorer, dynamic limits, review console and admin socket, until SIGINT/SIGTERM")
        {
            submission,
            mx,
            http,
            demo,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            if (context.Server is not null)
            {
                throw new CliException("serve cannot be run through a running server.");
            }

            var settings = CommandContext.Settings(parse);
            var overrides = new ServeOverrides(parse.GetValue(submission) ?? [], parse.GetValue(mx) ?? [], parse.GetValue(http), parse.GetValue(demo));
            return await ServerHost.RunAsync(settings, overrides, cancellationToken);
        });
        return command;
    }
}
