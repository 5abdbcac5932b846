using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Analytics.Cli.Hosting;
using Analytics.Events;
using Analytics.Submission;
using Analytics.Submission.Delivery;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Cli.Commands;

/// <summary>
/// <c>queue list|show|flush|retry|delete|hold|release</c>: the delivery queue, like Postfix's mailq,
/// postqueue and postsuper. Through a running server the verbs act on its queue at once; without one
/// they read and change the spool files, and the next <c>serve</c> takes them as they are.
/// </summary>
internal static class QueueCommand
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static Command Create(CommandContext context)
    {
        var command = new Command("queue", "The delivery queue: list, show, flush, retry, delete, hold, release (like mailq / postqueue / postsuper)");
        command.Subcommands.Add(List(context));
        command.Subcommands.Add(Show(context));
        command.Subcommands.Add(Flush(context));
        command.Subcommands.Add(OnOne(context, "retry", "Try one message now (postqueue -i)", (q, id, ct) => q.RetryAsync(id, ct), "will be tried now"));
        command.Subcommands.Add(OnOne(context, "delete", "Remove one message without a DSN (postsuper -d)", (q, id, ct) => q.DeleteAsync(id, ct), "deleted"));
        command.Subcommands.Add(OnOne(context, "hold", "Keep one message from delivery until released (postsuper -h)", (q, id, ct) => q.HoldAsync(id, ct), "held"));
        command.Subcommands.Add(OnOne(context, "release", "Release a held message and try it now (postsuper -H)", (q, id, ct) => q.ReleaseAsync(id, ct), "released"));
        return command;
    }

    private static readonly Option<bool> JsonOption = new("--json") { Description = "Print JSON instead of text" };

    private static Command List(CommandContext context)
    {
        var command = new Command("list", "Every queued message: id, size, age, state, sender, and each recipient still owed with its last error") { JsonOption };
        command.SetAction((parse, cancellationToken) => WithQueueAsync(context, parse, async (queue, now) =>
        {
            var messages = queue.List();
            if (parse.GetValue(JsonOption))
            {
                await context.IO.Out.WriteLineAsync(JsonSerializer.Serialize(messages, Json));
                return 0;
            }

            var text = new StringBuilder();
            if (messages.Count == 0)
            {
                text.Append("Mail queue is empty\n");
            }
            else
            {
                text.Append(CultureInfo.InvariantCulture, $"{"ID",-46} {"SIZE",9} {"AGE",8} {"STATE",-8} SENDER\n");
                foreach (var m in messages)
                {
                    text.Append(CultureInfo.InvariantCulture, $"{m.Id,-46} {m.Size,9} {Age(now - m.ReceivedAt),8} {State(m),-8} <{m.Sender}>");
                    if (m.Attempts > 0 && !m.Held)
                    {
                        text.Append(CultureInfo.InvariantCulture, $"  (attempt {m.Attempts}, next {When(m.NextAttempt, now)})");
                    }

                    text.Append('\n');
                    foreach (var r in m.Recipients.Where(r => r.Status == "pending"))
                    {
                        text.Append("    ").Append(r.Address);
                        if (r.Reply.Length > 0)
                        {
                            text.Append("  ").Append(r.Reply);
                        }

                        text.Append('\n');
                    }
                }

                text.Append(CultureInfo.InvariantCulture, $"-- {messages.Count} message{(messages.Count == 1 ? "" : "s")}, {messages.Sum(m => m.Size)} bytes\n");
            }

            await context.IO.Out.WriteAsync(text.ToString());
            return 0;
        }, cancellationToken));
        return command;
    }

    private static Command Show(CommandContext context)
    {
        var id = new Argument<string>("id") { Description = "The queue id (from queue list, or the 250 reply's 'queued as')" };
        var command = new Command("show", "One message: envelope, state, and every recipient's status, last reply and next hop") { id, JsonOption };
        command.SetAction((parse, cancellationToken) => WithQueueAsync(context, parse, async (queue, now) =>
        {
            var m = queue.Show(parse.GetRequiredValue(id)) ?? throw new CliException($"No message {parse.GetRequiredValue(id)} in the queue.");
            if (parse.GetValue(JsonOption))
            {
                await context.IO.Out.WriteLineAsync(JsonSerializer.Serialize(m, Json));
                return 0;
            }

            var text = new StringBuilder();
            text.Append(CultureInfo.InvariantCulture, $"id:           {m.Id}\n");
            text.Append(CultureInfo.InvariantCulture, $"sender:       <{m.Sender}>\n");
            text.Append(CultureInfo.InvariantCulture, $"user:         {(m.User.Length > 0 ? m.User : "-")}\n");
            text.Append(CultureInfo.InvariantCulture, $"received:     {m.ReceivedAt:yyyy-MM-dd HH:mm:ss} UTC over {m.Role} ({Age(now - m.ReceivedAt)} ago)\n");
            text.Append(CultureInfo.InvariantCulture, $"size:         {m.Size} bytes\n");
            text.Append(CultureInfo.InvariantCulture, $"state:        {State(m)}\n");
            text.Append(CultureInfo.InvariantCulture, $"attempts:     {m.Attempts}\n");
            if (m.Attempts > 0 && !m.Held)
            {
                text.Append(CultureInfo.InvariantCulture, $"next attempt: {m.NextAttempt:yyyy-MM-dd HH:mm:ss} UTC ({When(m.NextAttempt, now)})\n");
            }

            if (m.LastError.Length > 0)
            {
                text.Append(CultureInfo.InvariantCulture, $"last error:   {m.LastError}\n");
            }

            text.Append("recipients:\n");
            foreach (var r in m.Recipients)
            {
                text.Append(CultureInfo.InvariantCulture, $"  {r.Address}  {r.Status}");
                if (r.Attempts > 0)
                {
                    text.Append(CultureInfo.InvariantCulture, $"  {r.Dsn}  attempts {r.Attempts}  via {(r.Hop.Length > 0 ? r.Hop : "-")}  {r.Reply}");
                }

                text.Append('\n');
            }

            await context.IO.Out.WriteAsync(text.ToString());
            return 0;
        }, cancellationToken));
        return command;
    }

    private static Command Flush(CommandContext context)
    {
        var command = new Command("flush", "Try every deferred message now (postqueue -f); held messages stay held");
        command.SetAction((parse, cancellationToken) => WithQueueAsync(context, parse, async (queue, _) =>
        {
            var n = await queue.FlushAsync(cancellationToken);
            await context.IO.Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                $"{n} message{(n == 1 ? "" : "s")} {(queue.Delivering ? "will be tried now" : "will be tried when serve starts")}."));
            return 0;
        }, cancellationToken));
        return command;
    }

    private static Command OnOne(CommandContext context, string name, string description, Func<DeliveryQueue, string, CancellationToken, Task<bool>> action, string done)
    {
        var id = new Argument<string>("id") { Description = "The queue id" };
        var command = new Command(name, description) { id };
        command.SetAction((parse, cancellationToken) => WithQueueAsync(context, parse, async (queue, _) =>
        {
            var target = parse.GetRequiredValue(id);
            if (name == "retry" && queue.Show(target) is { Held: true })
            {
                throw new CliException($"{target} is held; release it to try it.");
            }

            if (!await action(queue, target, cancellationToken))
            {
                throw new CliException($"No message {target} in the queue.");
            }

            await context.IO.Out.WriteLineAsync($"{target} {done}.");
            return 0;
        }, cancellationToken));
        return command;
    }

    /// <summary>Inside serve: its queue. Otherwise, the spool of this data directory (forwarded to serve when it runs).</summary>
    private static Task<int> WithQueueAsync(CommandContext context, ParseResult parse, Func<DeliveryQueue, DateTimeOffset, Task<int>> body, CancellationToken cancellationToken) =>
        context.WithStoreAsync(parse, async _ =>
        {
            if (context.Server?.Services.GetService<DeliveryQueue>() is { } running)
            {
                return await body(running, TimeProvider.System.GetUtcNow());
            }

            var settings = CommandContext.Settings(parse);
            var submission = new SubmissionOptions();
            settings.Configuration.GetSection(SubmissionOptions.SectionName).Bind(submission);
            submission.DataDirectory = settings.SubmissionDataDirectory;
            // No delivery here, so no next hop settings are needed (nor checked): the spool is all there is.
            await using var queue = new DeliveryQueue(new DeliveryOptions(), submission.SpoolDirectory, submission.ServerName, submission.NodeName,
                NullEventPublisher.Instance, _ => false, NullLogger.Instance);
            await queue.StartAsync(deliver: false, cancellationToken);
            return await body(queue, TimeProvider.System.GetUtcNow());
        }, cancellationToken);

    private static string State(QueuedMessage m) => m.Held ? "held" : m.Active ? "active" : m.Attempts > 0 ? "deferred" : "queued";

    private static string Age(TimeSpan age) =>
        age < TimeSpan.Zero ? "0s"
        : age.TotalSeconds < 60 ? string.Create(CultureInfo.InvariantCulture, $"{(int)age.TotalSeconds}s")
        : age.TotalMinutes < 60 ? string.Create(CultureInfo.InvariantCulture, $"{(int)age.TotalMinutes}m{age.Seconds:00}s")
        : age.TotalHours < 48 ? string.Create(CultureInfo.InvariantCulture, $"{(int)age.TotalHours}h{age.Minutes:00}m")
        : string.Create(CultureInfo.InvariantCulture, $"{(int)age.TotalDays}d{age.Hours:00}h");

    private static string When(DateTimeOffset at, DateTimeOffset now) => at <= now ? "now" : "in " + Age(at - now);
}
