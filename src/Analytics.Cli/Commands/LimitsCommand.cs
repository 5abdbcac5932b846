using System.CommandLine;
using System.Globalization;
using Analytics.Limits;
using Analytics.Store;
using Analytics.Submission;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Cli.Commands;

/// <summary><c>limits show|set|release</c>: see and change the limits in force. Through a running server, changes apply at once.</summary>
internal static class LimitsCommand
{
    public static Command Create(CommandContext context)
    {
        var command = new Command("limits", "Show, set or release the limits in force for an account (user:NAME or an address), a client IP, or a network (a.b.c.0/24)");
        command.Subcommands.Add(Show(context));
        command.Subcommands.Add(Set(context));
        command.Subcommands.Add(Release(context));
        return command;
    }

    private static readonly Argument<string> EntityArgument = new("entity") { Description = "alice@example.org, 127.1.2.3, 127.1.2.0/24, or kind:name" };

    private static readonly Option<string> ReasonOption = new("--reason") { Description = "Why (recorded with the change)", Required = true };

    private static Command Show(CommandContext context)
    {
        var entity = new Argument<string?>("entity") { Description = "One entity (default: every limit in force)", Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("show", "List the limits in force, or one entity's limit and its history") { entity };
        command.SetAction((parse, cancellationToken) => WithPolicyAsync(context, parse, async policy =>
        {
            var io = context.IO;
            if (parse.GetValue(entity) is not { } text)
            {
                var all = policy.All();
                await io.Out.WriteLineAsync($"{all.Count} entities limited");
                foreach (var l in all)
                {
                    await io.Out.WriteLineAsync(Line(l));
                }

                return 0;
            }

            var target = Parse(text);
            await io.Out.WriteLineAsync(Line(policy.Current(target)));
            var history = await policy.HistoryAsync(target, 20, cancellationToken);
            if (history.Count > 0)
            {
                await io.Out.WriteLineAsync("history (newest first):");
                foreach (var l in history)
                {
                    await io.Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"  {l.SetAt:yyyy-MM-dd HH:mm:ss} ") + Line(l));
                }
            }

            return 0;
        }, cancellationToken));
        return command;
    }

    private static Command Set(CommandContext context)
    {
        var messages = new Option<double?>("--messages-per-minute") { Description = "Messages a minute" };
        var recipients = new Option<double?>("--recipients-per-hour") { Description = "Recipients an hour" };
        var perMessage = new Option<int?>("--recipients-per-message") { Description = "Recipients in one message" };
        var tarpit = new Option<double?>("--tarpit") { Description = "Seconds to delay every reply" };
        var block = new Option<bool>("--block") { Description = "Block outright (AUTH locked, mail refused)" };
        var allow = new Option<bool>("--allow") { Description = "Never limit (allowlist): model verdicts are ignored" };
        var expires = new Option<double?>("--expires") { Description = "Minutes until the override lapses (default: until released)" };
        var command = new Command("set", "Set a manual limit, a block or an allowlist entry (overrides always win over the model)")
        {
            EntityArgument, messages, recipients, perMessage, tarpit, block, allow, expires, ReasonOption,
        };
        command.SetAction((parse, cancellationToken) => WithPolicyAsync(context, parse, async policy =>
        {
            var kind = parse.GetValue(block) ? OverrideKind.Block : parse.GetValue(allow) ? OverrideKind.Allow : OverrideKind.Manual;
            if (parse.GetValue(block) && parse.GetValue(allow))
            {
                throw new CliException("--block and --allow contradict each other.");
            }

            if (kind == OverrideKind.Manual && parse.GetValue(messages) is null && parse.GetValue(recipients) is null
                && parse.GetValue(perMessage) is null && parse.GetValue(tarpit) is null)
            {
                throw new CliException("Say what to limit: --messages-per-minute, --recipients-per-hour, --recipients-per-message, --tarpit, --block or --allow.");
            }

            var change = new LimitOverride(Parse(parse.GetRequiredValue(EntityArgument)), kind, parse.GetRequiredValue(ReasonOption), Actor(),
                parse.GetValue(expires) is { } minutes ? DateTime.UtcNow.AddMinutes(minutes) : null,
                parse.GetValue(messages), parse.GetValue(recipients), parse.GetValue(perMessage),
                parse.GetValue(tarpit) is { } seconds ? TimeSpan.FromSeconds(seconds) : null);
            var limit = await policy.ApplyAsync(change, cancellationToken);
            await context.IO.Out.WriteLineAsync(Line(limit));
            return 0;
        }, cancellationToken));
        return command;
    }

    private static Command Release(CommandContext context)
    {
        var command = new Command("release", "Drop every limit and override on an entity: back to normal now") { EntityArgument, ReasonOption };
        command.SetAction((parse, cancellationToken) => WithPolicyAsync(context, parse, async policy =>
        {
            var limit = await policy.ApplyAsync(new LimitOverride(Parse(parse.GetRequiredValue(EntityArgument)), OverrideKind.Release,
                parse.GetRequiredValue(ReasonOption), Actor()), cancellationToken);
            await context.IO.Out.WriteLineAsync(Line(limit));
            return 0;
        }, cancellationToken));
        return command;
    }

    /// <summary>Inside the server: its policy (changes reach the listener at once). Outside: a policy on the store (a server starting later loads it).</summary>
    private static Task<int> WithPolicyAsync(CommandContext context, ParseResult parse, Func<LimitPolicy, Task<int>> body, CancellationToken cancellationToken) =>
        context.WithStoreAsync(parse, async store =>
        {
            if (context.Server?.Services.GetService<LimitPolicy>() is { } running)
            {
                return await body(running);
            }

            var options = new LimitsOptions();
            await using var policy = new LimitPolicy(new LimitRecords(store, options.Dynamic.Node), new LimitBook(options, TimeProvider.System),
                options.Dynamic, TimeProvider.System, NullLogger.Instance);
            await policy.PullAsync(cancellationToken);
            try
            {
                return await body(policy);
            }
            catch (ArgumentException ex)
            {
                throw new CliException(ex.Message);
            }
        }, cancellationToken);

    private static EntityRef Parse(string text) =>
        EntityRef.TryParse(text, out var entity) ? entity : throw new CliException($"'{text}' is not an account, an IP or a network (a.b.c.0/24).");

    private static string Actor() => "cli:" + Environment.UserName;

    private static string Line(EntityLimit l)
    {
        var parts = new List<string> { l.Entity.ToString(), l.Level.ToString().ToLowerInvariant(), l.Source.ToString().ToLowerInvariant() };
        if (l.Blocked)
        {
            parts.Add("blocked");
        }

        if (l.AuthLocked)
        {
            parts.Add("auth-locked");
        }

        if (l.MessagesPerMinute is { } m)
        {
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"{m:0.##} msg/min"));
        }

        if (l.RecipientsPerHour is { } r)
        {
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"{r:0.##} rcpt/h"));
        }

        if (l.RecipientsPerMessage is { } p)
        {
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"{p} rcpt/msg"));
        }

        if (l.Tarpit > TimeSpan.Zero)
        {
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"tarpit {l.Tarpit.TotalSeconds:0.#}s"));
        }

        if (l.ExpiresAt is { } x)
        {
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"until {x:yyyy-MM-dd HH:mm:ss}"));
        }

        return string.Join("  ", parts) + (l.Reason.Length > 0 ? "  — " + l.Reason + (l.SetBy.Length > 0 ? " (" + l.SetBy + ")" : "") : "");
    }
}
