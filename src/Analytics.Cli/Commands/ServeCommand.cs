using System.CommandLine;
using Analytics.Cli.Hosting;

namespace Analytics.Cli.Commands;

/// <summary><c>analytics serve</c>: the whole system in one process.</summary>
internal static class ServeCommand
{
    public static Command Create(CommandContext context)
    {
        var command = new Command("serve", "Run the server: embedded store, event pipeline and admin socket, until SIGINT/SIGTERM");
        command.SetAction(async (parse, cancellationToken) =>
        {
            if (context.Server is not null)
            {
                throw new CliException("serve cannot be run through a running server.");
            }

            var settings = context.Settings(parse);
            return await ServerHost.RunAsync(settings, context.IO, cancellationToken);
        });
        return command;
    }
}
