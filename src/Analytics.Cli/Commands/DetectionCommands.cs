using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Analytics.Detection.Model;
using Analytics.Detection.Scoring;
using Analytics.Store;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging.Abstractions;
using Spectre.Console;

namespace Analytics.Cli.Commands;

/// <summary><c>train</c>, <c>evaluate</c> and <c>score</c>: the detector from the command line.</summary>
internal static class DetectionCommands
{
    private static readonly Option<string?> ModelOption = new("--model")
    {
        Description = "Model directory (default: Detection:ModelDirectory, else ./models/default)",
        HelpName = "DIR",
    };

    private static readonly Option<int> StepOption = new("--step")
    {
        Description = "Minutes between evaluation points when building labelled rows (default 15)",
        DefaultValueFactory = _ => 15,
    };

    public static Command Train(CommandContext context)
    {
        var seed = new Option<int>("--seed") { Description = "Seed for the split and the trees (default 42)", DefaultValueFactory = _ => 42 };
        var holdout = new Option<string>("--holdout")
        {
            Description = "Attack variant kept out of training and reported on its own row, or 'none' (default: distributed)",
            DefaultValueFactory = _ => "distributed",
        };
        var trees = new Option<int>("--trees") { Description = "Trees per class (default 100)", DefaultValueFactory = _ => 100 };
        var command = new Command("train", "Train the detector from the store (simulation labels and review decisions) and write it with its model card and metrics")
        {
            ModelOption, seed, holdout, trees, StepOption, BenchCommand.Json,
        };
        command.SetAction((parse, cancellationToken) => context.WithStoreAsync(parse, async store =>
        {
            var directory = ModelDirectory(context, parse);
            var rows = await BuildRowsAsync(store, parse.GetValue(StepOption), context.IO, cancellationToken);
            var options = new TrainingOptions
            {
                Seed = parse.GetValue(seed),
                HoldOutVariant = parse.GetValue(holdout) is "none" or "" ? null : parse.GetValue(holdout),
                Trees = parse.GetValue(trees),
                DataDescription = await DescribeDataAsync(store, rows.Count, cancellationToken),
            };
            Status(context.IO, $"training on {rows.Count:N0} labelled rows (seed {options.Seed})…");
            var (model, report) = ModelTrainer.Train(rows, options, directory);
            await File.WriteAllTextAsync(Path.Combine(directory, "metrics.json"), JsonSerializer.Serialize(report, DetectionModel.Json), cancellationToken);
            await WriteReportAsync(context.IO, report, parse.GetValue(BenchCommand.Json));
            if (!parse.GetValue(BenchCommand.Json))
            {
                await context.IO.Out.WriteLineAsync($"model {model.Version} written to {directory} (model.json, classifier.zip, anomaly.zip, metrics.json)");
            }

            return 0;
        }, cancellationToken));
        return command;
    }

    public static Command Evaluate(CommandContext context)
    {
        var command = new Command("evaluate", "Evaluate the model against the rule baseline on held-out entities and time (same split as training)")
        {
            ModelOption, StepOption, BenchCommand.Json,
        };
        command.SetAction((parse, cancellationToken) => context.WithStoreAsync(parse, async store =>
        {
            var model = LoadModel(ModelDirectory(context, parse));
            var rows = await BuildRowsAsync(store, parse.GetValue(StepOption), context.IO, cancellationToken);
            var options = new TrainingOptions { Seed = model.Card.Seed, HoldOutVariant = model.Card.HeldOutVariant };
            var (_, test, split) = ModelTrainer.Split(rows, options);
            var report = ModelTrainer.Evaluate(model, test, split, options.HoldOutVariant, DateTime.UtcNow);
            await WriteReportAsync(context.IO, report, parse.GetValue(BenchCommand.Json));
            return 0;
        }, cancellationToken));
        return command;
    }

    public static Command Score(CommandContext context)
    {
        var once = new Option<bool>("--once") { Description = "Run one scoring pass and print its verdicts (required: the loop itself runs inside serve)" };
        var at = new Option<string?>("--at") { Description = "Score as of this UTC time (default: now; simulated data lives in the past)", HelpName = "TIME" };
        var lookback = new Option<int>("--lookback") { Description = "Minutes back to look for active entities (default 10)", DefaultValueFactory = _ => 10 };
        var command = new Command("score", "Score the entities active in the last minutes and write verdicts") { once, at, lookback, ModelOption, BenchCommand.Json };
        command.SetAction((parse, cancellationToken) => context.WithStoreAsync(parse, async store =>
        {
            if (!parse.GetValue(once))
            {
                throw new CliException("score runs inside serve every few seconds; use --once to run one pass here.");
            }

            var asOf = parse.GetValue(at) is { } text
                ? DateTime.SpecifyKind(DateTime.Parse(text, CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal), DateTimeKind.Utc)
                : DateTime.UtcNow;
            var provider = new ModelProvider(ModelDirectory(context, parse), NullLogger.Instance);
            provider.Refresh();
            if (provider.LastError is { } error)
            {
                await context.IO.Error.WriteLineAsync($"warning: {error} Scoring with the rules.");
            }

            var scorer = new Scorer(store, provider, [], NullLogger.Instance, Environment.MachineName);
            var pass = await scorer.ScoreOnceAsync(asOf, TimeSpan.FromMinutes(parse.GetValue(lookback)), cancellationToken);
            if (parse.GetValue(BenchCommand.Json))
            {
                await context.IO.Out.WriteLineAsync(JsonSerializer.Serialize(pass, DetectionModel.Json));
                return 0;
            }

            await context.IO.Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                $"scored {pass.Entities} active entities as of {pass.AsOf:yyyy-MM-dd HH:mm:ss} with {pass.ModelVersion} in {pass.Total.TotalMilliseconds:0} ms: {pass.Flagged} flagged"));
            foreach (var v in pass.Verdicts.Where(v => v.Flagged || v.Anomalous).OrderByDescending(v => v.Score))
            {
                await context.IO.Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                    $"  {v.Entity.Kind.ToText(),-4} {v.Entity.Name,-36} {v.Class.ToText(),-12} {v.Score,5:0.00} {(v.Anomalous ? "anomalous " : "")}{v.Explanation}"));
            }

            return 0;
        }, cancellationToken));
        return command;
    }

    private static string ModelDirectory(CommandContext context, ParseResult parse) =>
        parse.GetValue(ModelOption) is { } dir
            ? Path.GetFullPath(dir)
            : (CommandContext.Settings(parse).Configuration.GetSection("Detection").Get<DetectionOptions>() ?? new DetectionOptions()).ResolveModelDirectory();

    private static DetectionModel LoadModel(string directory)
    {
        try
        {
            return DetectionModel.Load(directory);
        }
        catch (ModelLoadException ex)
        {
            throw new CliException(ex.Message, 2);
        }
    }

    private static async Task<List<LabelledRow>> BuildRowsAsync(IClickHouseStore store, int stepMinutes, CliIO io, CancellationToken cancellationToken)
    {
        if (stepMinutes < 1)
        {
            throw new CliException("--step must be at least 1 minute.");
        }

        var builder = new TrainingSetBuilder(store);
        try
        {
            if (ReferenceEquals(io.Error, Console.Error) && !Console.IsErrorRedirected)
            {
                List<LabelledRow>? rows = null;
                await AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) })
                    .Progress().StartAsync(async ctx =>
                    {
                        var task = ctx.AddTask("computing features from aggregates", maxValue: 1.0);
                        rows = await builder.BuildAsync(TimeSpan.FromMinutes(stepMinutes), new Progress<double>(v => task.Value = v), cancellationToken);
                        task.Value = 1.0;
                    });
                return rows!;
            }

            Status(io, "computing features from aggregates…");
            return await builder.BuildAsync(TimeSpan.FromMinutes(stepMinutes), null, cancellationToken);
        }
        catch (InvalidOperationException ex)
        {
            throw new CliException(ex.Message);
        }
    }

    private static async Task<string> DescribeDataAsync(IClickHouseStore store, int rows, CancellationToken cancellationToken)
    {
        var d = await store.QueryFirstOrDefaultAsync<DataDescription>(
            "SELECT count() AS events, min(ts) AS first, max(ts) AS last, (SELECT count() FROM labels FINAL) AS labels, (SELECT groupUniqArray(run_id) FROM labels) AS runs FROM events",
            null, cancellationToken) ?? throw new CliException("The store answered nothing.");
        return string.Create(CultureInfo.InvariantCulture,
            $"{d.Events:N0} events from {d.First:yyyy-MM-dd HH:mm} to {d.Last:yyyy-MM-dd HH:mm}; {d.Labels} labelled entities (runs: {string.Join(", ", d.Runs)}); {rows:N0} labelled feature rows");
    }

    private sealed record DataDescription(ulong Events, DateTime First, DateTime Last, ulong Labels, string[] Runs);

    private static async Task WriteReportAsync(CliIO io, EvaluationReport report, bool json)
    {
        if (json)
        {
            await io.Out.WriteLineAsync(JsonSerializer.Serialize(report, DetectionModel.Json));
            return;
        }

        Evaluator.WriteText(io.Out, report);
    }

    private static void Status(CliIO io, string text) => io.Error.WriteLine(text);
}
