using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Analytics.Events;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Cli.Chaos;

/// <summary>
/// <c>chaos kill</c>: a child process publishes bursts of events through the real sink into the real
/// embedded store (a small queue, so bursts spill to disk) and acknowledges each burst once its flush
/// returned (every event of it stored or durably spooled). It is SIGKILLed at a random moment, several
/// times; a sink opened afterwards replays what was left. Every acknowledged event must be stored,
/// and no event stored twice.
/// </summary>
internal sealed class KillScenario : ChaosScenario
{
    private const string Node = "chaos-kill";
    private const long IdsPerRound = 1_000_000_000;

    private readonly Option<int> _rounds = new("--rounds") { Description = "Child processes started and killed (default 3)", DefaultValueFactory = _ => 3 };
    private readonly Option<double> _after = new("--after") { Description = "Longest run of a child before its SIGKILL, in seconds; each is killed at a random time between half of it and all of it (default 8)", DefaultValueFactory = _ => 8 };
    private readonly Option<int> _seed = new("--seed") { Description = "Seed of the kill times (default 13)", DefaultValueFactory = _ => 13 };

    public override string Name => "kill";

    public override string Description => "SIGKILL of a child publishing under load, then restart: every acknowledged event stored, none twice";

    public override IReadOnlyList<Option> Options => [_rounds, _after, _seed];

    public override async Task RunAsync(ParseResult parse, ChaosReport report, TextWriter progress, CancellationToken cancellationToken)
    {
        var rounds = Math.Max(1, parse.GetValue(_rounds));
        var after = Math.Max(1, parse.GetValue(_after));
        var random = new Random(parse.GetValue(_seed));
        var root = TempDirectory(Name);
        var data = Path.Combine(root, "data");
        var spool = Path.Combine(data, "spool", "events");
        try
        {
            var acked = new long[rounds];
            long published = 0;
            for (var round = 0; round < rounds; round++)
            {
                var start = round * IdsPerRound;
                var killAt = TimeSpan.FromSeconds(after * (0.5 + 0.5 * random.NextDouble()));
                var (lastAck, lastPublished, output) = await RunChildAsync(data, spool, start, killAt, cancellationToken);
                if (lastAck < 0)
                {
                    throw new InvalidOperationException($"The child never acknowledged a burst before its kill:\n{output}");
                }

                acked[round] = lastAck - start;
                published += lastPublished - start;
                await progress.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                    $"round {round + 1}/{rounds}: SIGKILL after {killAt.TotalSeconds:0.0} s; {acked[round]:N0} events acknowledged, {lastPublished - start:N0} published"));
            }

            var partials = Directory.GetFiles(spool, "*.partial").Length;
            var pending = Directory.GetFiles(spool, "*" + ".frames").Length;

            // The restart: the same data directory and spool, a new sink that recovers and replays.
            await using var store = EmbeddedStore.Open(data);
            await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings(), cancellationToken);
            EventSinkStats stats;
            await using (var sink = new EventSink(store, new EventSinkOptions(), spool, NullLogger.Instance))
            {
                var deadline = Stopwatch.StartNew();
                while (!await sink.FlushAsync(cancellationToken) && deadline.Elapsed < TimeSpan.FromMinutes(3))
                {
                    await Task.Delay(100, cancellationToken);
                }

                stats = sink.Stats;
            }

            var (rows, distinct, aggregated) = await CountAsync(store, Node, cancellationToken);
            long missing = 0;
            for (var round = 0; round < rounds; round++)
            {
                var start = round * IdsPerRound;
                var present = (await store.QueryAsync(
                    "SELECT uniqExact(session_id) FROM events WHERE node = {n:String} AND session_id >= {a:UInt64} AND session_id < {b:UInt64}",
                    QueryParameters.Of(("n", Node), ("a", (ulong)start), ("b", (ulong)(start + acked[round]))), cancellationToken)).Scalar<ulong>();
                missing += acked[round] - (long)present;
            }

            var totalAcked = acked.Sum();
            report.Add("rounds", rounds, "", "child processes SIGKILLed");
            report.Add("acknowledged", totalAcked, "events", "events acknowledged (flushed) before a kill");
            report.Add("published", published, "events", "events in bursts published whole before a kill");
            report.Add("stored", rows, "events", "events stored after the restart");
            report.Add("missing_acknowledged", missing, "events", "acknowledged events not stored");
            report.Add("duplicates", rows - distinct, "events", "duplicate ids stored");
            report.Add("aggregated", aggregated, "events", "events counted by the activity aggregates");
            report.Add("spool_batches_left", pending, "files", "sealed spool batches left by the kills");
            report.Add("partial_segments_left", partials, "files", "spill segments left open by the kills");
            report.Add("recovered", stats.Recovered, "events", "events recovered from open spill segments");
            report.Add("quarantined", stats.Quarantined, "events", "events set aside (torn tails)");
            report.Add("quarantined_files", stats.QuarantinedFiles, "files", "files set aside in quarantine");
            report.Check("every acknowledged event stored", missing == 0, $"{missing} of {totalAcked} missing");
            report.Check("no duplicates", rows == distinct, $"{rows - distinct} duplicate ids");
            report.Check("aggregates counted once", aggregated == rows, $"{aggregated} counted, {rows} stored");
            report.Check("spool drained", stats.SpoolFiles == 0, $"{stats.SpoolFiles} batches left");
        }
        finally
        {
            TryDelete(root);
        }
    }

    private static async Task<(long LastAck, long LastPublished, string Output)> RunChildAsync(string data, string spool, long start, TimeSpan killAt, CancellationToken cancellationToken)
    {
        var info = ChaosProcess.Cli(["chaos", "kill-child", "--data", data, "--spool", spool, "--start", start.ToString(CultureInfo.InvariantCulture)]);

        long lastAck = -1, lastPublished = start;
        var output = new System.Text.StringBuilder();
        using var child = Process.Start(info)!;
        child.OutputDataReceived += (_, e) =>
        {
            if (e.Data is not { } line)
            {
                return;
            }

            lock (output)
            {
                output.AppendLine(line);
                var parts = line.Split(' ');
                if (parts.Length == 2 && long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var id))
                {
                    if (parts[0] == "acked")
                    {
                        lastAck = id;
                    }
                    else if (parts[0] == "published")
                    {
                        lastPublished = id;
                    }
                }
            }
        };
        child.ErrorDataReceived += (_, e) =>
        {
            lock (output)
            {
                output.AppendLine(e.Data);
            }
        };
        child.BeginOutputReadLine();
        child.BeginErrorReadLine();

        // The kill clock starts once the child is publishing (its engine takes a while to open).
        var ready = Stopwatch.StartNew();
        while (Volatile.Read(ref lastAck) < 0 && !child.HasExited && ready.Elapsed < TimeSpan.FromMinutes(2))
        {
            await Task.Delay(20, cancellationToken);
        }

        await Task.Delay(killAt, cancellationToken);
        child.Kill(); // SIGKILL
        await child.WaitForExitAsync(cancellationToken);
        lock (output)
        {
            return (lastAck, Math.Max(lastPublished, lastAck), output.ToString());
        }
    }

    /// <summary><c>chaos kill-child</c>: what the scenario runs and kills. Publishes bursts and prints <c>acked ID</c> after each flush.</summary>
    public static Command CreateChild()
    {
        var data = new Option<string>("--data") { Required = true };
        var spool = new Option<string>("--spool") { Required = true };
        var start = new Option<long>("--start");
        var command = new Command("kill-child", "Publishes bursts of events until killed (run by chaos kill)") { Hidden = true };
        command.Options.Add(data);
        command.Options.Add(spool);
        command.Options.Add(start);
        command.SetAction(async (parse, cancellationToken) =>
        {
            await using var store = EmbeddedStore.Open(parse.GetRequiredValue(data));
            await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings(), cancellationToken);

            // A small queue: bursts overflow it and spill to disk, so a kill finds spill segments open.
            var options = new EventSinkOptions { Capacity = 8192, BatchSize = 20_000, FlushInterval = TimeSpan.FromMilliseconds(50) };
            await using var sink = new EventSink(store, options, parse.GetRequiredValue(spool), NullLogger.Instance);
            var next = parse.GetValue(start);
            var at = DateTimeOffset.UtcNow;
            var stdout = Console.Out;
            await stdout.WriteLineAsync("acked " + next.ToString(CultureInfo.InvariantCulture));
            await stdout.FlushAsync(cancellationToken);
            while (!cancellationToken.IsCancellationRequested)
            {
                for (var i = 0; i < 50_000; i++, next++)
                {
                    sink.Publish(Event(Node, next, at.AddMilliseconds(next % 600_000 / 10.0)));
                }

                await stdout.WriteLineAsync("published " + next.ToString(CultureInfo.InvariantCulture));
                await stdout.FlushAsync(cancellationToken);
                await sink.FlushAsync(cancellationToken);
                await stdout.WriteLineAsync("acked " + next.ToString(CultureInfo.InvariantCulture));
                await stdout.FlushAsync(cancellationToken);
            }

            return 0;
        });
        return command;
    }
}
