using System.Buffers;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using Analytics.Cli.Commands;
using Analytics.Events;
using Analytics.Simulation;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Cli.Bench;

/// <summary>
/// <c>bench ingest</c>: events/s through the sink into the embedded engine (events and their detection
/// aggregates), against the raw engine rate for the same rows inserted directly into events (the
/// sink's overhead, aggregation included, is the ratio); the schema before 0030, where views computed
/// the aggregates on insert, for comparison; bytes per event on disk; the producer's cost per publish.
/// </summary>
internal static class IngestBenchmark
{
    public static Command Create(CommandContext context)
    {
        var events = new Option<int>("--events") { Description = "Events per run (default 2,000,000)", DefaultValueFactory = _ => 2_000_000 };
        var runs = new Option<int>("--runs") { Description = "Runs of each measurement; the median is reported (default 3)", DefaultValueFactory = _ => 3 };
        var batch = new Option<int>("--batch") { Description = "Events per batch (default: the sink's Events:BatchSize default)", DefaultValueFactory = _ => new EventSinkOptions().BatchSize };
        var shape = new Option<string>("--shape")
        {
            Description = "The events: 'synthetic' (default; every session from a new random address, each recipient drawn from 100,000: almost every event " +
                "opens aggregate rows of its own, the sink's worst case) or 'world' (the first events of the simulated eval world, people and bots as simulate writes them)",
            DefaultValueFactory = _ => "synthetic",
        };
        shape.AcceptOnlyFromAmong("synthetic", "world");
        var overwrite = new Option<bool>("--overwrite-bench-data")
        {
            Description = "With --data DIR: run even though DIR already holds data (its events table is truncated and refilled). Never give it a real store's directory.",
        };
        var command = new Command("ingest", "Sustained events/s through the event sink vs. raw INSERT into the embedded engine, in a temporary directory (or an empty --data DIR)")
        {
            events,
            runs,
            batch,
            shape,
            overwrite,
            BenchCommand.Json,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var n = parse.GetValue(events);
            var r = parse.GetValue(runs);
            var b = parse.GetValue(batch);
            if (n < 1000 || r < 1 || b < 1000 || b > 1_000_000)
            {
                throw new CliException("--events must be at least 1000, --runs at least 1 and --batch within 1,000..1,000,000.");
            }

            var data = BenchDirectory(parse.GetValue(GlobalOptions.Data), parse.GetValue(overwrite));
            var report = await RunAsync(n, r, b, parse.GetValue(shape)!, data, context.IO, parse.GetValue(BenchCommand.Json), cancellationToken);
            await report.WriteAsync(context.IO.Out, parse.GetValue(BenchCommand.Json));
            return 0;
        });
        return command;
    }

    /// <summary>
    /// The directory to measure in: null (a temporary one of its own) unless --data names one, which must
    /// be new or empty, since the benchmark truncates the events table of the store it opens. Only the
    /// command line counts: ANALYTICS_DATA and the configuration name the real store, never a bench one.
    /// </summary>
    private static string? BenchDirectory(string? given, bool overwrite)
    {
        if (given is null)
        {
            return null;
        }

        var path = Path.GetFullPath(given);
        if (File.Exists(path))
        {
            throw new CliException($"--data {path} is a file; bench ingest needs a directory of its own (or no --data: a temporary one).", 2);
        }

        if (!overwrite && Directory.Exists(path) && Directory.EnumerateFileSystemEntries(path).Any())
        {
            throw new CliException(
                $"{path} already holds data. bench ingest truncates and refills the events table of the store it opens, so it runs in a " +
                "temporary directory of its own, or in an empty (or new) --data DIR. Give --overwrite-bench-data to use this one anyway " +
                "(never a real store's directory: its events would be lost).", 2);
        }

        return path;
    }

    private static async Task<BenchReport> RunAsync(int count, int runs, int batchSize, string shape, string? dataOption, CliIO io, bool quiet, CancellationToken cancellationToken)
    {
        var temp = dataOption is null;
        var data = dataOption ?? Path.Combine(Path.GetTempPath(), "analytics-bench-" + Guid.NewGuid().ToString("N")[..8]);
        Progress(io, quiet, shape == "world" ? "simulating the eval world's events…" : "making synthetic events…");
        var sample = shape == "world" ? WorldEvents.Create(count) : SyntheticEvents.Create(count, seed: 42);
        var report = new BenchReport("ingest");
        report.Context("shape", shape);
        report.Context("events_per_run", count.ToString(CultureInfo.InvariantCulture));
        report.Context("runs", runs.ToString(CultureInfo.InvariantCulture));
        report.Context("batch_size", batchSize.ToString(CultureInfo.InvariantCulture));
        report.Context("engine", "chDB " + ChdbLibrary.Version);
        report.Context("cores", Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture));
        try
        {
            EmbeddedStore store;
            try
            {
                store = EmbeddedStore.Open(data);
            }
            catch (Exception ex) when (ex is DataDirectoryInUseException or StoreUnavailableException)
            {
                throw new CliException(ex.Message, 2);
            }

            await using var owned = store;
            await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings(), cancellationToken);

            // Raw engine: the same rows, pre-encoded as Native blocks of the sink's batch size, inserted
            // directly into events (which has no views since 0030): the engine alone, nothing computed.
            // Each block with a deduplication token, as the sink inserts: without one the engine hashes
            // every block for deduplication instead (events has a deduplication window), which cost it
            // 15-25% more per event and flattered the ratio.
            var encoded = new List<byte[]>();
            for (var i = 0; i < count; i += batchSize)
            {
                var encoder = new EventBlockEncoder(batchSize);
                var n = Math.Min(batchSize, count - i);
                for (var j = 0; j < n; j++)
                {
                    encoder.Add(sample[i + j]);
                }

                encoded.Add(encoder.ToArray());
            }

            // The schema as it was before 0030 (views on events feeding the aggregates), in a database of
            // its own: what the same rows cost when ClickHouse computed the aggregates on every insert.
            await store.ExecuteAsync("CREATE DATABASE IF NOT EXISTS bench_views", null, cancellationToken);
            await store.ExecuteAsync("USE bench_views", null, cancellationToken);
            try
            {
                foreach (var statement in Migrator.Embedded.Where(m => m.Version < 30).SelectMany(m => m.Statements(new SchemaSettings())))
                {
                    await store.ExecuteAsync(statement, null, cancellationToken);
                }
            }
            finally
            {
                await store.ExecuteAsync("USE default", null, cancellationToken);
            }

            // Delivery attempts are stored but are not the client's activity (BatchAggregates.Add).
            var clientEvents = (ulong)sample.Count(e => e.Kind != EventKind.Delivery);
            var raw = new List<double>();
            var rawCpu = new List<double>();
            var sinkCpu = new List<double>();
            var views = new List<double>();
            var sinkRates = new List<double>();
            var publishNs = new List<double>();
            for (var run = 0; run < runs; run++)
            {
                Progress(io, quiet, $"run {run + 1}/{runs}: raw insert into events");
                await TruncateAsync(store, "", cancellationToken);
                var cpu = BenchCommand.ProcessCpu();
                var sw = Stopwatch.StartNew();
                for (var i = 0; i < encoded.Count; i++)
                {
                    var token = "bench-raw-" + run.ToString(CultureInfo.InvariantCulture) + "-" + i.ToString(CultureInfo.InvariantCulture);
                    await store.InsertAsync(EventBlockEncoder.Table, null, InsertFormat.Native, encoded[i], token, cancellationToken);
                }

                raw.Add(count / sw.Elapsed.TotalSeconds);
                rawCpu.Add((BenchCommand.ProcessCpu() - cpu).TotalMicroseconds / count);

                Progress(io, quiet, $"run {run + 1}/{runs}: raw insert, aggregates by views (schema before 0030)");
                await TruncateAsync(store, "bench_views.", cancellationToken);
                sw.Restart();
                foreach (var rows in encoded)
                {
                    await store.InsertAsync("bench_views.events", null, InsertFormat.Native, rows, null, cancellationToken);
                }

                views.Add(count / sw.Elapsed.TotalSeconds);

                Progress(io, quiet, $"run {run + 1}/{runs}: through the sink (events and aggregates)");
                await TruncateAsync(store, "", cancellationToken);
                var spool = Path.Combine(data, "spool-bench-" + run.ToString(CultureInfo.InvariantCulture));
                var options = new EventSinkOptions { Capacity = Math.Max(count, 1024), BatchSize = batchSize };
                await using (var sink = new EventSink(store, options, spool, NullLogger.Instance))
                {
                    cpu = BenchCommand.ProcessCpu();
                    sw.Restart();
                    var publishTicks = 0L;
                    for (var i = 0; i < count; i += 10_000)
                    {
                        var t0 = Stopwatch.GetTimestamp();
                        var end = Math.Min(count, i + 10_000);
                        for (var j = i; j < end; j++)
                        {
                            sink.Publish(sample[j]);
                        }

                        publishTicks += Stopwatch.GetTimestamp() - t0;
                    }

                    if (!await sink.FlushAsync(cancellationToken))
                    {
                        throw new CliException("The sink did not get every event into the store; see the spool.");
                    }

                    sinkRates.Add(count / sw.Elapsed.TotalSeconds);
                    sinkCpu.Add((BenchCommand.ProcessCpu() - cpu).TotalMicroseconds / count);
                    publishNs.Add(publishTicks * 1e9 / Stopwatch.Frequency / count);
                }

                var stored = (await store.QueryAsync("SELECT count() FROM events", null, cancellationToken)).Scalar<ulong>();
                var aggregated = (await store.QueryAsync("SELECT sum(events) FROM activity WHERE entity_kind = 'ip'", null, cancellationToken)).Scalar<ulong>();
                if (stored != (ulong)count || aggregated != clientEvents)
                {
                    throw new CliException($"Expected {count} events and {clientEvents} in the aggregates after the sink run, found {stored} and {aggregated}.");
                }
            }

            // The breakdown leaves the same events in the table, which bytes_per_event below measures.
            await BreakdownAsync(store, sample, batchSize, report, cancellationToken);
            await store.ExecuteAsync("OPTIMIZE TABLE events FINAL", null, cancellationToken);
            var bytes = (await store.QueryAsync(
                "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = currentDatabase() AND table = 'events' AND active", null, cancellationToken)).Scalar<ulong>();

            var rawMedian = Median(raw);
            var sinkMedian = Median(sinkRates);
            report.Add("sink_events_per_s", sinkMedian, "events/s", "sustained through the sink, aggregates included (median)");
            report.Add("raw_events_per_s", rawMedian, "events/s", "raw INSERT of the same rows into events alone, tokens as the sink's (median)");
            report.Add("sink_to_raw_ratio", sinkMedian / rawMedian, "", "sink / raw");
            report.Add("sink_cpu_us_per_event", Median(sinkCpu), "µs", "CPU time of the whole process (every thread, the engine's too) per event, through the sink (median)");
            report.Add("raw_cpu_us_per_event", Median(rawCpu), "µs", "the same for the raw INSERT (median)");
            report.Add("views_events_per_s", Median(views), "events/s", "raw INSERT into the schema before 0030 (aggregates by views on events)");
            report.Add("bytes_per_event", (double)bytes / count, "bytes", "on disk per event (compressed)");
            report.Add("publish_ns_per_event", Median(publishNs), "ns", "producer cost per Publish (median)");
            return report;
        }
        finally
        {
            if (temp)
            {
                TryDelete(data);
            }
        }
    }

    /// <summary>
    /// Where the sink's time goes, over the same events: the C# side (the events block alone, the
    /// events and their aggregates, the frame written) and each table's insert in the engine, timed
    /// alone (with a token, as the sink inserts). Figures are ns per event of the whole run.
    /// </summary>
    private static async Task BreakdownAsync(EmbeddedStore store, SmtpEvent[] sample, int batchSize, BenchReport report, CancellationToken cancellationToken)
    {
        var encoder = new EventBlockEncoder(batchSize);
        var batch = new EventBatch(batchSize);
        var buffer = new ArrayBufferWriter<byte>(1 << 20);
        var frames = new List<byte[]>();
        long encodeTicks = 0, addTicks = 0, writeTicks = 0;
        for (var i = 0; i < sample.Length; i += batchSize)
        {
            var end = Math.Min(sample.Length, i + batchSize);
            var t0 = Stopwatch.GetTimestamp();
            for (var j = i; j < end; j++)
            {
                encoder.Add(sample[j]);
            }

            encoder.ToArray();
            encoder.Reset();
            var t1 = Stopwatch.GetTimestamp();
            for (var j = i; j < end; j++)
            {
                batch.Add(sample[j]);
            }

            var t2 = Stopwatch.GetTimestamp();
            buffer.ResetWrittenCount();
            batch.WriteTo(buffer);
            batch.Reset();
            var t3 = Stopwatch.GetTimestamp();
            frames.Add(buffer.WrittenSpan.ToArray());
            encodeTicks += t1 - t0;
            addTicks += t2 - t1;
            writeTicks += t3 - t2;
        }

        double PerEvent(double ticks) => ticks * 1e9 / Stopwatch.Frequency / sample.Length;
        report.Add("encode_events_ns_per_event", PerEvent(encodeTicks), "ns", "C#: events block alone, per event");
        report.Add("batch_add_ns_per_event", PerEvent(addTicks), "ns", "C#: EventBatch.Add (events + aggregates), per event");
        report.Add("batch_write_ns_per_event", PerEvent(writeTicks), "ns", "C#: EventBatch.WriteTo (all blocks), per event");

        await TruncateAsync(store, "", cancellationToken);
        var tables = EventFrame.Tables;
        var ticks = new long[tables.Length];
        var bytes = new long[tables.Length];
        for (var f = 0; f < frames.Count; f++)
        {
            var frame = EventFrame.Read(frames[f], out _)[0];
            for (var t = 0; t < tables.Length; t++)
            {
                var block = frames[f].AsMemory(frame.Blocks[t]);
                if (block.IsEmpty)
                {
                    continue;
                }

                var t0 = Stopwatch.GetTimestamp();
                await store.InsertAsync(tables[t], null, InsertFormat.Native, block, "breakdown-" + f.ToString(CultureInfo.InvariantCulture) + "-" + t.ToString(CultureInfo.InvariantCulture), cancellationToken);
                ticks[t] += Stopwatch.GetTimestamp() - t0;
                bytes[t] += block.Length;
            }
        }

        for (var t = 0; t < tables.Length; t++)
        {
            report.Add("insert_" + tables[t] + "_ns_per_event", PerEvent(ticks[t]), "ns", "engine: insert into " + tables[t] + ", per event");
            report.Add("block_" + tables[t] + "_bytes_per_event", (double)bytes[t] / sample.Length, "bytes", "Native block for " + tables[t] + ", per event");
        }
    }

    private static async Task TruncateAsync(IClickHouseStore store, string database, CancellationToken cancellationToken)
    {
        foreach (var table in new[] { "events", "activity", "activity_hourly", "active_entities", "first_seen" })
        {
            await store.ExecuteAsync($"TRUNCATE TABLE {database}{table}", null, cancellationToken);
        }
    }

    private static void Progress(CliIO io, bool quiet, string message)
    {
        if (!quiet)
        {
            io.Error.WriteLine(message);
        }
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static void TryDelete(string path)
    {
        try
        {
            Directory.Delete(path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>
/// The first events of the simulated eval world (seed 42), in the order simulate writes them: ordinary
/// users, heavy senders, mailing lists, office NAT and the attackers, with the populations' own address
/// reuse, recipients and session shapes. A day of the world is ~0.6M events; enough days are played.
/// </summary>
internal static class WorldEvents
{
    public static SmtpEvent[] Create(int count)
    {
        var scenario = Scenario.Load("eval") with { Seed = 42 };
        var world = WorldBuilder.Build(scenario with { Days = Math.Max(1, Math.Min(scenario.Days, count / 400_000 + 1)) }, new DateTimeOffset(2026, 11, 1, 0, 0, 0, TimeSpan.Zero));
        var events = new List<SmtpEvent>(count);
        FastSimulation.Play(world, null, e =>
        {
            if (events.Count < count)
            {
                events.Add(e);
            }
        });
        if (events.Count < count)
        {
            throw new CliException($"The eval world has {events.Count:N0} events in {world.Scenario.Days} days; give --events {events.Count} or fewer with --shape world.");
        }

        return [.. events];
    }
}

/// <summary>A plausible mix of session events (connect, AUTH, MAIL, RCPT, DATA, close) for benchmarks.</summary>
internal static class SyntheticEvents
{
    public static SmtpEvent[] Create(int count, int seed)
    {
        var random = new Random(seed);
        var result = new SmtpEvent[count];
        var start = new DateTimeOffset(2026, 11, 1, 0, 0, 0, TimeSpan.Zero);
        EventKind[] cycle = [EventKind.Connect, EventKind.Ehlo, EventKind.Auth, EventKind.Mail, EventKind.Rcpt, EventKind.Rcpt, EventKind.Rcpt, EventKind.Data, EventKind.Close];
        ulong session = 0;
        var ip = IPAddress.Loopback;
        var user = "";
        for (var i = 0; i < count; i++)
        {
            var kind = cycle[i % cycle.Length];
            if (kind == EventKind.Connect)
            {
                session = (ulong)random.NextInt64();
                ip = new IPAddress([(byte)random.Next(1, 224), (byte)random.Next(256), (byte)random.Next(256), (byte)random.Next(1, 255)]);
                user = "user" + random.Next(50_000).ToString(CultureInfo.InvariantCulture) + "@example.net";
            }

            var rejected = kind == EventKind.Rcpt && random.Next(10) == 0;
            var local = "r" + random.Next(100_000).ToString(CultureInfo.InvariantCulture);
            result[i] = new SmtpEvent
            {
                Timestamp = start.AddMilliseconds(i * 3),
                Node = "bench",
                Role = ListenerRole.Submission,
                SessionId = session,
                Kind = kind,
                ClientIp = ip,
                ClientPort = (ushort)random.Next(1024, 65535),
                User = kind >= EventKind.Auth ? user : "",
                Mechanism = kind == EventKind.Auth ? "PLAIN" : "",
                Outcome = rejected ? EventOutcome.Reject : EventOutcome.Ok,
                ReplyCode = (ushort)(rejected ? 550 : kind == EventKind.Auth ? 235 : 250),
                Status = rejected ? "5.1.1" : "2.0.0",
                Sender = kind is EventKind.Mail or EventKind.Rcpt or EventKind.Data ? user : "",
                Recipient = kind == EventKind.Rcpt ? local + "@example.org" : "",
                RecipientDomain = kind == EventKind.Rcpt ? "example.org" : "",
                Size = kind == EventKind.Data ? (ulong)random.Next(500, 200_000) : 0,
                DurationMs = kind == EventKind.Close ? (uint)random.Next(50, 5000) : 0,
                Detail = kind == EventKind.Ehlo ? "mail.example.net" : rejected ? "unknown mailbox" : "",
            };
        }

        return result;
    }
}
