using System.CommandLine;
using System.Globalization;
using System.Text;
using Analytics.Review;
using Analytics.Review.Reviewers;
using Analytics.Store;
using Analytics.Submission;
using Microsoft.Extensions.DependencyInjection;

namespace Analytics.Cli.Commands;

/// <summary>
/// <c>analytics reviewers add|list|disable|enable|token|tokens|revoke-token</c>: the abuse team's accounts
/// for the review console and their API tokens. Passwords come from stdin (first line) or a no-echo prompt, never argv (see <see cref="Passwords"/>).
/// Works while serve runs: the command is forwarded to it and applies at once.
/// </summary>
internal static class ReviewersCommand
{
    public static Command Create(CommandContext context)
    {
        var command = new Command("reviewers", "Manage the review console's accounts (roles: viewer reads, analyst also acts)");
        command.Subcommands.Add(Add(context));
        command.Subcommands.Add(List(context));
        command.Subcommands.Add(SetEnabled(context, "disable", "Disable a reviewer: sessions and API tokens stop working at their next request", enabled: false));
        command.Subcommands.Add(SetEnabled(context, "enable", "Enable a disabled reviewer", enabled: true));
        command.Subcommands.Add(Token(context));
        command.Subcommands.Add(Tokens(context));
        command.Subcommands.Add(RevokeToken(context));
        return command;
    }

    private static Argument<string> NameArgument() => new("name") { Description = "Reviewer name (case-insensitive, no spaces)" };

    private static Command Add(CommandContext context)
    {
        var name = NameArgument();
        var role = new Option<string>("--role")
        {
            Description = "viewer (reads the queue and evidence) or analyst (also confirms, dismisses, limits, releases)",
            Required = true,
            HelpName = "viewer|analyst",
        };
        role.AcceptOnlyFromAmong(ReviewerRoles.Viewer, ReviewerRoles.Analyst);
        var command = new Command("add", "Create an enabled reviewer; the password is read from stdin (or prompted for without echo)") { name, role };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var reviewer = parse.GetRequiredValue(name);
            var password = await Passwords.ReadAsync(context.IO, reviewer, confirm: true, cancellationToken);
            return await context.WithStoreAsync(parse, new Forwarding(Stdin: password + "\n"), async store =>
            {
                var added = await Run(() => Resolve(context, parse, store).AddAsync(reviewer, password, parse.GetRequiredValue(role), cancellationToken));
                await context.IO.Out.WriteLineAsync($"Reviewer {added.Name} added ({added.Role}).");
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
            var reviewer = parse.GetRequiredValue(name);
            await Run(async () =>
            {
                await Resolve(context, parse, store).SetEnabledAsync(reviewer, enabled, cancellationToken);
                return true;
            });
            await context.IO.Out.WriteLineAsync($"Reviewer {ReviewerStore.Normalize(reviewer)} {(enabled ? "enabled" : "disabled")}.");
            return 0;
        }, cancellationToken));
        return command;
    }

    private static Command Token(CommandContext context)
    {
        var name = NameArgument();
        var days = new Option<int?>("--days")
        {
            Description = "The token expires after this many days (default Review:TokenLifetime, 90 days; at most Review:TokenMaxLifetime, 365)",
            HelpName = "N",
        };
        var command = new Command("token", "Issue an API token (Authorization: Bearer …) acting as the reviewer, with its role; printed once (stdout), stored only as a hash; its id goes to stderr") { name, days };
        command.SetAction((parse, cancellationToken) => context.WithStoreAsync(parse, async store =>
        {
            var lifetime = parse.GetValue(days) is { } d ? (d < 1 ? throw new CliException("--days must be at least 1.", 2) : TimeSpan.FromDays(d)) : (TimeSpan?)null;
            var issued = await Run(() => Resolve(context, parse, store).IssueTokenAsync(parse.GetRequiredValue(name), lifetime, cancellationToken));
            await context.IO.Out.WriteLineAsync(issued.Token);
            await context.IO.Error.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                $"Token id {issued.Id} for {issued.Name}, expires {issued.ExpiresAt:yyyy-MM-dd HH:mm:ss}Z. Revoke it alone with: analytics reviewers revoke-token {issued.Id}"));
            return 0;
        }, cancellationToken));
        return command;
    }

    private static Command Tokens(CommandContext context)
    {
        var name = NameArgument();
        var command = new Command("tokens", "List the reviewer's API tokens: id, state (active, expired, revoked), created, expires, last used (to within 10 minutes); never the secrets") { name };
        command.SetAction((parse, cancellationToken) => context.WithStoreAsync(parse, async store =>
        {
            var tokens = await Run(() => Resolve(context, parse, store).ListTokensAsync(parse.GetRequiredValue(name), cancellationToken));
            var now = TimeProvider.System.GetUtcNow().UtcDateTime;
            var width = Math.Max(2, tokens.Count == 0 ? 0 : tokens.Max(t => t.Id.Length));
            var text = new StringBuilder();
            text.AppendLine(CultureInfo.InvariantCulture, $"{"id".PadRight(width)}  state    created               expires               last used");
            foreach (var t in tokens)
            {
                var used = t.LastUsedAt is { } u ? u.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture) + "Z" : "never";
                text.AppendLine(CultureInfo.InvariantCulture,
                    $"{t.Id.PadRight(width)}  {t.State(now),-7}  {t.CreatedAt:yyyy-MM-dd HH:mm:ss}Z  {t.ExpiresAt:yyyy-MM-dd HH:mm:ss}Z  {used}");
            }

            text.Append(CultureInfo.InvariantCulture, $"{tokens.Count} token{(tokens.Count == 1 ? "" : "s")}");
            await context.IO.Out.WriteLineAsync(text.ToString());
            return 0;
        }, cancellationToken));
        return command;
    }

    private static Command RevokeToken(CommandContext context)
    {
        var id = new Argument<string>("id") { Description = "The token's id, as `reviewers token` printed it and `reviewers tokens` lists it (or the whole token)" };
        var command = new Command("revoke-token", "Revoke one API token: it is refused (401) from its next request on; the reviewer's other tokens and sessions go on") { id };
        command.SetAction((parse, cancellationToken) => context.WithStoreAsync(parse, async store =>
        {
            var revoked = await Run(() => Resolve(context, parse, store).RevokeTokenAsync(parse.GetRequiredValue(id), cancellationToken));
            await context.IO.Out.WriteLineAsync($"Token {revoked.Id} of {revoked.Name} revoked.");
            return 0;
        }, cancellationToken));
        return command;
    }

    private static Command List(CommandContext context)
    {
        var command = new Command("list", "List the reviewers (name, role, state, created, updated; never the hashes)");
        command.SetAction((parse, cancellationToken) => context.WithStoreAsync(parse, async store =>
        {
            var reviewers = await Resolve(context, parse, store).ListAsync(cancellationToken);
            var width = Math.Max(4, reviewers.Count == 0 ? 0 : reviewers.Max(a => a.Name.Length));
            var text = new StringBuilder();
            text.AppendLine(CultureInfo.InvariantCulture, $"{"name".PadRight(width)}  role     state     created                  updated");
            foreach (var r in reviewers)
            {
                text.AppendLine(CultureInfo.InvariantCulture,
                    $"{r.Name.PadRight(width)}  {r.Role,-7}  {(r.Enabled ? "enabled " : "disabled")}  {r.CreatedAt:yyyy-MM-dd HH:mm:ss}Z     {r.UpdatedAt:yyyy-MM-dd HH:mm:ss}Z");
            }

            text.Append(CultureInfo.InvariantCulture, $"{reviewers.Count} reviewer{(reviewers.Count == 1 ? "" : "s")}");
            await context.IO.Out.WriteLineAsync(text.ToString());
            return 0;
        }, cancellationToken));
        return command;
    }

    /// <summary>Inside the server: its own store (registered by AddReviewConsole). Otherwise one over the opened engine.</summary>
    private static ReviewerStore Resolve(CommandContext context, ParseResult parse, IClickHouseStore store)
    {
        if (context.Server?.Services.GetService<ReviewerStore>() is { } inServer)
        {
            return inServer;
        }

        var options = ReviewOptions.FromConfiguration(CommandContext.Settings(parse).Configuration);
        if (options.Validate() is { Count: > 0 } errors)
        {
            throw new CliException("Invalid configuration: " + string.Join(" ", errors), 2);
        }

        return new ReviewerStore(store, new PasswordHasher(options.Pbkdf2Iterations), TimeProvider.System, options);
    }

    /// <summary>The store's refusals become one-line errors with exit code 1.</summary>
    private static async Task<T> Run<T>(Func<Task<T>> change)
    {
        try
        {
            return await change();
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
