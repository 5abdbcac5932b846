using System.CommandLine;
using System.Globalization;
using System.Text;
using Analytics.Store;
using Analytics.Submission;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Analytics.Cli.Commands;

/// <summary>
/// <c>analytics users add|passwd|disable|enable|list</c>: the accounts that may AUTH on submission.
/// Passwords come from stdin (first line), or a no-echo prompt on a terminal; never from argv, where
/// <c>ps</c> and shell history would show them.
/// </summary>
internal static class UsersCommand
{
    public static Command Create(CommandContext context)
    {
        var command = new Command("users", "Manage the accounts allowed to AUTH on submission (works while serve runs: changes apply at once)");
        command.Subcommands.Add(SetPassword(context, "add", "Create an enabled account; the password is read from stdin (or prompted for without echo)", add: true));
        command.Subcommands.Add(SetPassword(context, "passwd", "Set an account's password, read from stdin (or prompted for without echo)", add: false));
        command.Subcommands.Add(SetEnabled(context, "disable", "Disable an account: AUTH fails from now on (535), the account is kept", enabled: false));
        command.Subcommands.Add(SetEnabled(context, "enable", "Enable a disabled account", enabled: true));
        command.Subcommands.Add(List(context));
        return command;
    }

    private static Argument<string> NameArgument() => new("name") { Description = "User name as given at AUTH (case-insensitive), usually an address" };

    private static Command SetPassword(CommandContext context, string verb, string description, bool add)
    {
        var name = NameArgument();
        var command = new Command(verb, description) { name };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var user = parse.GetRequiredValue(name);
            var password = await Passwords.ReadAsync(context.IO, user, confirm: add, cancellationToken);

            // Forwarded, the server reads the password from the stdin sent along, never from the command line.
            return await context.WithStoreAsync(parse, new Forwarding(Stdin: password + "\n"), async store =>
            {
                var (users, directory) = Resolve(context, parse, store);
                await Run(() => add ? users.AddAsync(user, password, cancellationToken) : users.SetPasswordAsync(user, password, cancellationToken));
                await Refresh(directory, cancellationToken);
                await context.IO.Out.WriteLineAsync(add ? $"User {UserStore.Normalize(user)} added." : $"Password of {UserStore.Normalize(user)} changed.");
                return 0;
            }, cancellationToken);
        });
        return command;
    }

    private static Command SetEnabled(CommandContext context, string verb, string description, bool enabled)
    {
        var name = NameArgument();
        var command = new Command(verb, description) { name };
        command.SetAction((parse, cancellationToken) => context.WithStoreAsync(parse, async store =>
        {
            var user = parse.GetRequiredValue(name);
            var (users, directory) = Resolve(context, parse, store);
            await Run(() => users.SetEnabledAsync(user, enabled, cancellationToken));
            await Refresh(directory, cancellationToken);
            await context.IO.Out.WriteLineAsync($"User {UserStore.Normalize(user)} {(enabled ? "enabled" : "disabled")}.");
            return 0;
        }, cancellationToken));
        return command;
    }

    private static Command List(CommandContext context)
    {
        var command = new Command("list", "List the accounts (name, state, created, updated; never the hashes)");
        command.SetAction((parse, cancellationToken) => context.WithStoreAsync(parse, async store =>
        {
            var (users, _) = Resolve(context, parse, store);
            var accounts = await users.ListAsync(cancellationToken);
            var width = Math.Max(4, accounts.Count == 0 ? 0 : accounts.Max(a => a.Name.Length));
            var text = new StringBuilder();
            text.AppendLine(CultureInfo.InvariantCulture, $"{"name".PadRight(width)}  state     created                  updated");
            foreach (var a in accounts)
            {
                text.AppendLine(CultureInfo.InvariantCulture,
                    $"{a.Name.PadRight(width)}  {(a.Enabled ? "enabled " : "disabled")}  {a.CreatedAt.UtcDateTime:yyyy-MM-dd HH:mm:ss}Z     {a.UpdatedAt.UtcDateTime:yyyy-MM-dd HH:mm:ss}Z");
            }

            text.Append(CultureInfo.InvariantCulture, $"{accounts.Count} user{(accounts.Count == 1 ? "" : "s")}");
            await context.IO.Out.WriteLineAsync(text.ToString());
            return 0;
        }, cancellationToken));
        return command;
    }

    /// <summary>
    /// Inside the server: its own <see cref="UserStore"/> and the listener's directory, so a change is
    /// in the listener's snapshot before the command returns. Otherwise a store over the opened engine.
    /// </summary>
    private static (UserStore Users, UserDirectory? Directory) Resolve(CommandContext context, ParseResult parse, IClickHouseStore store)
    {
        if (context.Server is { } server)
        {
            return (server.Services.GetRequiredService<UserStore>(), server.Services.GetRequiredService<UserDirectory>());
        }

        var iterations = CommandContext.Settings(parse).Configuration.GetValue<int?>("Submission:Directory:Pbkdf2Iterations") ?? PasswordHasher.DefaultIterations;
        if (iterations < 1)
        {
            throw new CliException("Submission:Directory:Pbkdf2Iterations must be at least 1.", 2);
        }

        return (new UserStore(store, new PasswordHasher(iterations)), null);
    }

    private static async Task Refresh(UserDirectory? directory, CancellationToken cancellationToken)
    {
        if (directory is not null)
        {
            await directory.RefreshAsync(cancellationToken);
        }
    }

    /// <summary>The store's refusals become one-line errors with exit code 1.</summary>
    private static async Task Run(Func<Task> change)
    {
        try
        {
            await change();
        }
        catch (InvalidOperationException ex)
        {
            throw new CliException(ex.Message);
        }
        catch (KeyNotFoundException ex)
        {
            throw new CliException(ex.Message);
        }
        catch (ArgumentException ex)
        {
            throw new CliException(ex.ParamName is null ? ex.Message : ex.Message.Replace($" (Parameter '{ex.ParamName}')", "", StringComparison.Ordinal));
        }
    }
}

/// <summary>Reads a password: the first line of stdin when redirected, else a prompt on the terminal without echo.</summary>
internal static class Passwords
{
    public static async Task<string> ReadAsync(CliIO io, string user, bool confirm, CancellationToken cancellationToken)
    {
        if (io.InputRedirected || !ReferenceEquals(io, CliIO.Console))
        {
            var line = await io.In.ReadLineAsync(cancellationToken);
            return string.IsNullOrEmpty(line)
                ? throw new CliException("No password: give it as the first line of stdin (e.g. printf '%s\\n' \"$PASSWORD\" | analytics users add NAME).")
                : line;
        }

        var password = Prompt($"Password for {user}: ");
        if (confirm && Prompt("Again: ") != password)
        {
            throw new CliException("The passwords differ; nothing changed.");
        }

        return password.Length == 0 ? throw new CliException("The password is empty; nothing changed.") : password;
    }

    private static string Prompt(string prompt)
    {
        Console.Error.Write(prompt);
        var text = new StringBuilder();
        while (true)
        {
            var key = Console.ReadKey(intercept: true);
            if (key.Key == ConsoleKey.Enter)
            {
                break;
            }

            if (key.Key == ConsoleKey.Backspace)
            {
                if (text.Length > 0)
                {
                    text.Length--;
                }
            }
            else if (!char.IsControl(key.KeyChar))
            {
                text.Append(key.KeyChar);
            }
        }

        Console.Error.WriteLine();
        return text.ToString();
    }
}
