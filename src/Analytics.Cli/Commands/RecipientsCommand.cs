using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Text;
using Analytics.Store;
using Analytics.Submission;
using Microsoft.Extensions.DependencyInjection;

namespace Analytics.Cli.Commands;

/// <summary>
/// <c>analytics recipients import FILE|add ADDRESS|list [DOMAIN]</c>: the domains this server is
/// authoritative for and their mailboxes (RCPT to anything else in those domains gets 550 5.1.1).
/// </summary>
internal static class RecipientsCommand
{
    public static Command Create(CommandContext context)
    {
        var command = new Command("recipients", "Manage the local domains and mailboxes (works while serve runs: changes apply at once)");
        command.Subcommands.Add(Import(context));
        command.Subcommands.Add(Add(context));
        command.Subcommands.Add(List(context));
        return command;
    }

    private static Command Import(CommandContext context)
    {
        var file = new Argument<string>("file")
        {
            Description = "One entry a line: user@example.org adds a mailbox (and its domain), @example.org a domain; '#' starts a comment; '-' reads stdin. A file with any bad line imports nothing",
        };
        var command = new Command("import", "Add the domains and mailboxes listed in a file") { file };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var path = parse.GetRequiredValue(file);
            var forwarding = Forwarding.AsTyped;
            if (path != "-" && context.Server is null)
            {
                // A server that owns the store reads the file itself (same machine), from wherever it runs.
                path = Path.GetFullPath(path);
                if (!File.Exists(path))
                {
                    throw new CliException($"{path} does not exist.");
                }

                forwarding = new Forwarding(Args: ReplaceArgument(parse, "import", path));
            }

            return await context.WithStoreAsync(parse, forwarding, async store =>
            {
                var (recipients, directory) = Resolve(context, store);
                RecipientImportResult result;
                try
                {
                    result = path == "-"
                        ? await recipients.ImportAsync(context.IO.In, cancellationToken)
                        : await recipients.ImportFileAsync(path, cancellationToken);
                }
                catch (FormatException ex)
                {
                    throw new CliException(ex.Message);
                }
                catch (IOException ex)
                {
                    throw new CliException($"Cannot read {path}: {ex.Message}");
                }
                catch (UnauthorizedAccessException ex)
                {
                    throw new CliException($"Cannot read {path}: {ex.Message}");
                }

                await Refresh(directory, cancellationToken);
                await context.IO.Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                    $"Imported {result.Domains} domain{(result.Domains == 1 ? "" : "s")} and {result.Mailboxes} mailbox{(result.Mailboxes == 1 ? "" : "es")} ({result.Lines} lines)."));
                return 0;
            }, cancellationToken);
        });
        return command;
    }

    private static Command Add(CommandContext context)
    {
        var address = new Argument<string>("address") { Description = "user@example.org (a mailbox; its domain becomes local) or example.org / @example.org (a domain)" };
        var command = new Command("add", "Add one mailbox or local domain") { address };
        command.SetAction((parse, cancellationToken) => context.WithStoreAsync(parse, async store =>
        {
            var entry = parse.GetRequiredValue(address);
            var (recipients, directory) = Resolve(context, store);
            try
            {
                await recipients.AddAsync(entry, cancellationToken);
            }
            catch (FormatException ex)
            {
                throw new CliException(ex.Message);
            }

            await Refresh(directory, cancellationToken);
            var normalized = entry.Contains('@', StringComparison.Ordinal) && !entry.StartsWith('@')
                ? "mailbox " + RecipientStore.NormalizeAddress(entry)
                : "domain " + RecipientStore.NormalizeDomain(entry.TrimStart('@'));
            await context.IO.Out.WriteLineAsync($"Added {normalized}.");
            return 0;
        }, cancellationToken));
        return command;
    }

    private static Command List(CommandContext context)
    {
        var domain = new Argument<string?>("domain") { Description = "Only this domain's mailboxes", Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("list", "Print the local domains (@example.org) and mailboxes, in the import format") { domain };
        command.SetAction((parse, cancellationToken) => context.WithStoreAsync(parse, async store =>
        {
            var (recipients, _) = Resolve(context, store);
            var only = parse.GetValue(domain);
            var text = new StringBuilder();
            if (only is null)
            {
                foreach (var d in await recipients.ListDomainsAsync(cancellationToken))
                {
                    text.Append('@').AppendLine(d);
                }
            }
            else
            {
                var normalized = RecipientStore.NormalizeDomain(only.TrimStart('@')) ?? throw new CliException($"'{only}' is not a domain.");
                if (!(await recipients.ListDomainsAsync(cancellationToken)).Contains(normalized, StringComparer.Ordinal))
                {
                    throw new CliException($"{normalized} is not a local domain.");
                }
            }

            foreach (var mailbox in await recipients.ListMailboxesAsync(only?.TrimStart('@'), cancellationToken))
            {
                text.AppendLine(mailbox);
            }

            await context.IO.Out.WriteAsync(text.ToString());
            return 0;
        }, cancellationToken));
        return command;
    }

    /// <summary>Inside the server: its store instance and the listener's directory, refreshed before the command returns.</summary>
    private static (RecipientStore Recipients, RecipientDirectory? Directory) Resolve(CommandContext context, IClickHouseStore store) =>
        context.Server is { } server
            ? (server.Services.GetRequiredService<RecipientStore>(), server.Services.GetRequiredService<RecipientDirectory>())
            : (new RecipientStore(store), null);

    private static async Task Refresh(RecipientDirectory? directory, CancellationToken cancellationToken)
    {
        if (directory is not null)
        {
            await directory.RefreshAsync(cancellationToken);
        }
    }

    /// <summary>The command line as typed, with the argument after <paramref name="verb"/> replaced.</summary>
    private static string[] ReplaceArgument(ParseResult parse, string verb, string value)
    {
        var tokens = parse.Tokens.ToList();
        var at = tokens.FindIndex(t => t.Type == TokenType.Command && t.Value == verb);
        var args = tokens.Select(t => t.Value).ToArray();
        for (var i = at + 1; at >= 0 && i < tokens.Count; i++)
        {
            if (tokens[i].Type == TokenType.Option)
            {
                i++; // its value (--data DIR, --config FILE)
            }
            else if (tokens[i].Type == TokenType.Argument)
            {
                args[i] = value;
                break;
            }
        }

        return args;
    }
}
