using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Analytics.Cli.Commands;
using Analytics.Detection.Features;
using Analytics.Detection.Model;
using Analytics.Detection.Scoring;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Cli.Bench;

/// <summary>
/// <c>bench score</c>: one scoring pass over N active entities (features from the aggregates, then the
/// model), with the stored history varied at fixed N to show that the pass follows active entities,
/// not stored events; prediction cost per entity; training time of a model on the same features.
/// </summary>
internal static class ScoreBenchmark
{
    private static readonly DateTime AsOf = new(2026, 11, 20, 12, 0, 0, DateTimeKind.Utc);

    public static Command Create(CommandContext context)
    {
        var sizes = new Option<string>("--entities") { Description = "Comma-separated active-entity counts (default 100000,1000000)", DefaultValueFactory = _ => "100000,1000000" };
        var history = new Option<int>("--history") { Description = "Inactive entities' history added at the largest size, as a multiple of it (default 10; 0 skips that pass)", DefaultValueFactory = _ => 10 };
        var model = new Option<string?>("--model") { Description = "Model directory (default ./models/default; a model is trained on synthetic rows when there is none)" };
        var changed = new Option<double>("--changed")
        {
            Description = "Share of the largest size active again in the next minute, scored by a second pass as the scorer's next pass scores it (default 0.1; 0 skips that pass)",
            DefaultValueFactory = _ => 0.1,
        };
        var keep = new Option<string?>("--store")
        {
            Description = "Keep the store in this directory and reuse what an earlier run loaded there, for one --entities size (for repeated runs while changing the query; parts are then merged, unlike a fresh load)",
        };
        var command = new Command("score", "Scoring pass cost for 100k and 1M active entities, a pass over a share active again, and 10x stored history") { sizes, history, changed, model, keep, BenchCommand.Json };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var counts = (parse.GetValue(sizes) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToList();
            if (parse.GetValue(keep) is not null && counts.Count != 1)
            {
                // A kept store holds every size an earlier run loaded, all active: a smaller pass would see them all.
                throw new CliException("--store keeps one size: give --entities a single count (a directory per size).");
            }

            var json = parse.GetValue(BenchCommand.Json);
            var report = await RunAsync(counts, parse.GetValue(history), parse.GetValue(changed), parse.GetValue(model), parse.GetValue(keep), context.IO, json, cancellationToken);
            await report.WriteAsync(context.IO.Out, json);
            return 0;
        });
        return command;
    }

    private static async Task<BenchReport> RunAsync(List<int> counts, int historyFactor, double changedShare, string? modelDirectory, string? keep, CliIO io, bool quiet, CancellationToken cancellationToken)
    {
        var data = keep is null ? Path.Combine(Path.GetTempPath(), "analytics-bench-score-" + Guid.NewGuid().ToString("N")[..8]) : Path.GetFullPath(keep);
        var report = new BenchReport("score");
        report.Context("cores", Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture));

        // With --store, a part an earlier run loaded there is not loaded again (a marker file says it was).
        async Task LoadOnceAsync(string part, Func<Task> load)
        {
            var marker = Path.Combine(data, "bench-" + part);
            if (File.Exists(marker))
            {
                return;
            }

            await load();
            if (keep is not null)
            {
                await File.WriteAllTextAsync(marker, "", cancellationToken);
            }
        }

        try
        {
            await using var store = EmbeddedStore.Open(data);
            await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings(), cancellationToken);
            var dir = modelDirectory ?? Path.GetFullPath(Path.Combine("models", "default"));
            DetectionModel model;
            var sw = Stopwatch.StartNew();
            try
            {
                model = DetectionModel.Load(dir);
                report.Context("model", model.Version);
            }
            catch (ModelLoadException)
            {
                Progress(io, quiet, "no model: training one on synthetic rows");
                sw.Restart();
                var tmp = Path.Combine(data, "model");
                model = ModelTrainer.Train(Synthetic(20_000), new LabelIndex([]), new TrainingOptions { HoldOutVariant = null, TrainGroupShare = 1, TrainTimeShare = 0.8 }, tmp).Model;
                report.Add("train_seconds_synthetic_20k_rows", sw.Elapsed.TotalSeconds, "s", "training, 20k synthetic rows");
                report.Context("model", "synthetic");
            }

            var inserted = 0;
            foreach (var n in counts.Order())
            {
                // Active entities: each with 5 minutes of activity in the last 10 minutes.
                Progress(io, quiet, $"loading {n:N0} active entities");
                var from = inserted;
                await LoadOnceAsync($"active-{n}", () => InsertAsync(store, from, n - from, minutesBack: 1, minutes: 5, cancellationToken));

                inserted = n;
                var pass = await PassAsync(store, model, expected: n, AsOf, AsOf.AddMinutes(-10), cancellationToken);
                var key = n.ToString(CultureInfo.InvariantCulture);
                Progress(io, quiet, $"{pass.Entities:N0} entities: pass {pass.Total:F2} s = features {pass.Features:F2} (query {pass.Query:F2} + reading {pass.Parse:F2}) + prediction {pass.Predict:F2} + write-back {pass.Write:F2}; {pass.Flagged:N0} flagged; CPU s {pass.Cpu.Features:F2} + {pass.Cpu.Predict:F2} + {pass.Cpu.Write:F2}");
                report.Add($"pass_seconds_{key}", pass.Total, "s", $"scoring pass, {pass.Entities:N0} active entities");
                report.Add($"features_seconds_{key}", pass.Features, "s", "  of which features (ClickHouse query and reading its rows)");
                report.Add($"query_seconds_{key}", pass.Query, "s", "    the query in ClickHouse, rows handed over");
                report.Add($"parse_seconds_{key}", pass.Parse, "s", "    reading the rows into vectors");
                report.Add($"query_megabytes_{key}", pass.Bytes / 1e6, "MB", "    rows handed over (RowBinary)");
                report.Add($"predict_seconds_{key}", pass.Predict, "s", "  of which prediction");
                report.Add($"write_seconds_{key}", pass.Write, "s", "  of which write-back (flagged and anomalous verdicts)");
                report.Add($"features_cpu_seconds_{key}", pass.Cpu.Features, "s", "  CPU time of features (all threads; steadier than wall time on a shared machine)");
                report.Add($"predict_cpu_seconds_{key}", pass.Cpu.Predict, "s", "  CPU time of prediction");
                report.Add($"write_cpu_seconds_{key}", pass.Cpu.Write, "s", "  CPU time of write-back");
                report.Add($"predict_us_per_entity_{key}", pass.Predict * 1e6 / Math.Max(1, pass.Entities), "µs", "  prediction per entity");
                report.Add($"flagged_{key}", pass.Flagged, "", "  flagged");
                report.Add($"explain_ms_per_flagged_{key}", pass.Explain * 1e3, "ms", "  explanation per flagged entity (not in the pass time)");
            }

            // The next minute: a share of the largest size active again, and the pass that follows, as the
            // scorer makes it (the entities active since its previous pass, less a minute for rows that
            // come late), not again everything active in the last ten minutes.
            var largest = counts.Max();
            if (changedShare > 0)
            {
                var share = (int)Math.Round(largest * changedShare);
                Progress(io, quiet, $"{share:N0} of {largest:N0} active again in the next minute");
                await LoadOnceAsync($"again-{share}", () => InsertAsync(store, 0, share, minutesBack: 0, minutes: 1, cancellationToken));

                var next = await PassAsync(store, model, expected: share, AsOf.AddMinutes(1), AsOf, cancellationToken);
                var key = $"{largest}_{share}_again";
                Progress(io, quiet, $"{next.Entities:N0} active again: pass {next.Total:F2} s = features {next.Features:F2} (query {next.Query:F2} + reading {next.Parse:F2}) + prediction {next.Predict:F2} + write-back {next.Write:F2}");
                report.Add($"pass_seconds_{key}", next.Total, "s", $"next minute's pass, {next.Entities:N0} of {largest:N0} active again ({changedShare:P0})");
                report.Add($"features_seconds_{key}", next.Features, "s", "  of which features");
                report.Add($"query_seconds_{key}", next.Query, "s", "    the query in ClickHouse");
                report.Add($"predict_seconds_{key}", next.Predict, "s", "  of which prediction");
            }

            // Ten times the history (inactive entities, days before) at the largest size: the pass should not care.
            if (historyFactor > 0)
            {
                Progress(io, quiet, $"adding {largest * historyFactor:N0} inactive entities' history");
                await LoadOnceAsync($"history-{largest * historyFactor}",
                    () => InsertAsync(store, 10_000_000, largest * historyFactor, minutesBack: 3 * 24 * 60, minutes: 3, cancellationToken));

                var again = await PassAsync(store, model, expected: largest, AsOf, AsOf.AddMinutes(-10), cancellationToken);
                Progress(io, quiet, $"with history: pass {again.Total:F2} s = features {again.Features:F2} + prediction {again.Predict:F2} + write-back {again.Write:F2}");
                report.Add($"pass_seconds_{largest}_with_{historyFactor}x_history", again.Total, "s", $"same pass with {historyFactor}x stored history");
                report.Add($"features_seconds_{largest}_with_{historyFactor}x_history", again.Features, "s", "  of which features");
            }


            return report;
        }
        finally
        {
            try
            {
                if (keep is null)
                {
                    Directory.Delete(data, recursive: true);
                }
            }
            catch (IOException)
            {
            }
        }
    }

    private sealed record Pass(int Entities, int Flagged, double Features, double Predict, double Write, double Explain)
    {
        public double Total => Features + Predict + Write;

        /// <summary>Features split: the query (rows handed over as bytes) and building the vectors from them.</summary>
        public double Query { get; init; }

        public double Parse { get; init; }

        public long Bytes { get; init; }

        /// <summary>CPU seconds of the whole process (chDB runs in it) per part: on a shared machine, steadier than the wall clock.</summary>
        public (double Features, double Predict, double Write) Cpu { get; init; }
    }

    private static double CpuSeconds() => BenchCommand.ProcessCpu().TotalSeconds;

    // Features, then the model's probabilities and anomaly score for every entity, then the verdicts a
    // pass writes (flagged and anomalous). Explanations (a what-if probe per feature) are timed apart
    // on a sample of the flagged: they are the same work whatever the pass size. A pass that does not
    // see every loaded entity is a broken bench, not a fast one: it stops there.
    private static async Task<Pass> PassAsync(IClickHouseStore store, DetectionModel model, int expected, DateTime asOf, DateTime since, CancellationToken cancellationToken)
    {
        var cpu0 = CpuSeconds();
        var sw = Stopwatch.StartNew();
        var reader = new FeatureReader(store);
        var entities = await reader.ReadAsync(asOf, since, cancellationToken);
        var features = sw.Elapsed.TotalSeconds;
        var cpu1 = CpuSeconds();
        if (entities.Count != expected)
        {
            throw new InvalidOperationException($"The pass scored {entities.Count:N0} entities; {expected:N0} are active.");
        }

        sw.Restart();
        var predictions = model.Predict(entities);
        var predict = sw.Elapsed.TotalSeconds;
        var cpu2 = CpuSeconds();

        sw.Restart();
        var threshold = model.Card.FlagThreshold;
        var verdicts = new List<Verdict>();
        var flagged = new List<int>();
        for (var i = 0; i < entities.Count; i++)
        {
            var p = predictions[i];
            var flag = p.Flagged(threshold);
            if (flag)
            {
                flagged.Add(i);
            }

            if (flag || p.IsAnomalous)
            {
                verdicts.Add(new Verdict(asOf, entities[i].Entity, flag ? p.Class : ThreatClass.Benign, p.Score, p.Probabilities, p.Anomaly, p.IsAnomalous, flag, [], model.Version));
            }
        }

        await Scorer.WriteAsync(store, verdicts, "bench", cancellationToken);
        var write = sw.Elapsed.TotalSeconds;
        var cpu3 = CpuSeconds();

        sw.Restart();
        var sample = flagged.Take(1000).ToList();
        Explainer.Explain(model, sample.Select(i => entities[i]).ToList(), sample.Select(i => predictions[i]).ToList());
        var explainPer = sample.Count == 0 ? 0 : sw.Elapsed.TotalSeconds / sample.Count;
        return new Pass(entities.Count, flagged.Count, features, predict, write, explainPer)
        {
            Cpu = (cpu1 - cpu0, cpu2 - cpu1, cpu3 - cpu2),
            Query = reader.LastRead.Query.TotalSeconds,
            Parse = reader.LastRead.Parse.TotalSeconds,
            Bytes = reader.LastRead.Bytes,
        };
    }

    // Synthetic per-minute rows, shaped like real traffic (mostly quiet IPs, a few noisy ones), written
    // where the event sink writes a batch's aggregates: the minute table, the hourly rollup and the
    // active set (since migration 0030 no view fills the last two from the first; rows in the minute
    // table alone were never found by a pass, which then scored nothing).
    private static async Task InsertAsync(IClickHouseStore store, int offset, int count, int minutesBack, int minutes, CancellationToken cancellationToken)
    {
        var parameters = QueryParameters.Of(("t", AsOf), ("back", minutesBack), ("minutes", minutes), ("offset", offset), ("count", count));
        await store.ExecuteAsync($"""
            INSERT INTO activity (entity_kind, entity, minute, events, auth_attempts, auth_failures, rcpt, rcpt_rejected, rcpt_unknown, messages,
                                  message_rcpts, max_message_rcpts, invalid_commands, throttled, users_tried, ips, nets, recipients, recipient_domains,
                                  sessions, data_sessions)
            SELECT 'ip' AS entity_kind, {EntityName} AS entity, {Minute} AS minute,
                   1 + n % 7 AS events, n % 3 AS auth_attempts, if(n % 50 = 0, 4, 0) AS auth_failures,
                   n % 5 AS rcpt, n % 11 = 0 AS rcpt_rejected, n % 13 = 0 AS rcpt_unknown, n % 2 AS messages, n % 5 AS message_rcpts, n % 5 AS max_message_rcpts,
                   0 AS invalid_commands, 0 AS throttled,
                   uniqState(toString(n % 97)) AS users_tried, uniqState(toIPv6('::ffff:10.0.0.1')) AS ips, uniqState('10.0.0.0') AS nets,
                   uniqState(toString(n % 1000)) AS recipients, uniqState('example.org') AS recipient_domains,
                   uniqState(toUInt64(n)) AS sessions, uniqState(toUInt64(n % 2)) AS data_sessions
            FROM {Rows}
            GROUP BY n, m
            """, parameters, cancellationToken);
        await store.ExecuteAsync($"""
            INSERT INTO active_entities (minute, entity_kind, entity)
            SELECT {Minute}, 'ip', {EntityName} FROM {Rows}
            """, parameters, cancellationToken);
        await store.ExecuteAsync($"""
            INSERT INTO activity_hourly (entity_kind, entity, hour, events, active_minutes, minute_mask, auth_attempts, auth_failures, rcpt, rcpt_unknown, messages,
                                         users_tried, ips, recipients)
            SELECT 'ip', {EntityName} AS entity, toStartOfHour({Minute}) AS hour,
                   sum(1 + n % 7), count(), groupBitOr(bitShiftLeft(toUInt64(1), toMinute({Minute}))), sum(n % 3), sum(if(n % 50 = 0, 4, 0)), sum(n % 5), sum(n % 13 = 0), sum(n % 2),
                   uniqState(toString(n % 97)), uniqState(toIPv6('::ffff:10.0.0.1')), uniqState(toString(n % 1000))
            FROM {Rows}
            GROUP BY n, hour
            """, parameters, cancellationToken);
    }

    private const string Rows = "(SELECT number + {offset:UInt64} AS n, arrayJoin(range({minutes:UInt32})) AS m FROM numbers({count:UInt64}))";
    private const string EntityName = "concat('10.', toString(intDiv(n, 65536) % 256), '.', toString(intDiv(n, 256) % 256), '.', toString(n % 256))";
    private const string Minute = "{t:DateTime('UTC')} - toIntervalMinute({back:UInt32} + m)";

    private static List<LabelledRow> Synthetic(int rows)
    {
        var random = new Random(5);
        var list = new List<LabelledRow>(rows);
        for (var i = 0; i < rows; i++)
        {
            var bad = i % 10 == 0;
            var v = new float[FeatureSet.Count];
            for (var k = 3; k < v.Length; k++)
            {
                v[k] = random.Next(bad ? 20 : 3);
            }

            v[FeatureSet.Index("is_ip")] = 1;
            list.Add(new LabelledRow(new EntityFeatures(new EntityRef(EntityKind.Ip, "10.0.0." + (i % 250)), AsOf.AddMinutes(-i % 1000), v), bad ? ThreatClass.BruteForce : ThreatClass.Benign, "", ""));
        }

        return list;
    }

    private static void Progress(CliIO io, bool quiet, string message)
    {
        if (!quiet)
        {
            io.Error.WriteLine(message);
        }
    }
}
