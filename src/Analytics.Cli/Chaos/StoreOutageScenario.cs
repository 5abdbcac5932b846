using System.CommandLine;
using System.Diagnostics;
using Analytics.Events;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Cli.Chaos;

/// <summary>
/// <c>chaos store-outage</c>: steady traffic through the real sink while the store fails (a fault
/// injected in front of the real embedded engine) for <c>--outage</c>, then answers again. Every
/// published event must be stored once: published = stored, no duplicate ids, aggregates counted once.
/// </summary>
internal sealed class StoreOutageScenario : ChaosScenario
{
    private readonly Option<double> _outage = new("--outage") { Description = "Seconds the store fails (default 60)", DefaultValueFactory = _ => 60 };
    private readonly Option<int> _rate = new("--rate") { Description = "Events per second published throughout (default 20,000)", DefaultValueFactory = _ => 20_000 };
    private readonly Option<double> _maxBackoff = new("--max-backoff") { Description = "The sink's longest pause between retries, in seconds (default: as Events:MaxBackoff, 30)", DefaultValueFactory = _ => new EventSinkOptions().MaxBackoff.TotalSeconds };

    public override string Name => "store-outage";

    public override string Description => "The store fails for --outage under steady traffic, then recovers: published = stored, no duplicates";

    public override IReadOnlyList<Option> Options => [_outage, _rate, _maxBackoff];

    public override async Task RunAsync(ParseResult parse, ChaosReport report, TextWriter progress, CancellationToken cancellationToken)
    {
        var outage = TimeSpan.FromSeconds(parse.GetValue(_outage));
        var rate = parse.GetValue(_rate);
        var root = TempDirectory(Name);
        const string node = "chaos-outage";
        try
        {
            await using var real = EmbeddedStore.Open(Path.Combine(root, "data"));
            await new Migrator(real, NullLogger.Instance).ApplyAsync(new SchemaSettings(), cancellationToken);
            var store = new FaultInjectingStore(real);
            var options = new EventSinkOptions { MaxBackoff = TimeSpan.FromSeconds(parse.GetValue(_maxBackoff)) };
            EventSinkStats stats;
            ChaosTraffic traffic;
            TimeSpan replay;
            var worstLag = TimeSpan.Zero;
            await using (var sink = new EventSink(store, options, Path.Combine(root, "spool"), NullLogger.Instance))
            {
                await using (traffic = new ChaosTraffic(sink, node, rate))
                {
                    await progress.WriteLineAsync($"traffic at {rate:N0} events/s; store up for 5 s");
                    await Task.Delay(TimeSpan.FromSeconds(5), cancellationToken);
                    await progress.WriteLineAsync($"store down for {outage.TotalSeconds:0} s");
                    store.Failing = true;
                    var down = Stopwatch.StartNew();
                    while (down.Elapsed < outage)
                    {
                        await Task.Delay(TimeSpan.FromSeconds(1), cancellationToken);
                        worstLag = sink.Stats.Lag > worstLag ? sink.Stats.Lag : worstLag;
                    }

                    store.Failing = false;
                    await progress.WriteLineAsync("store up; traffic goes on for 10 s");
                    var up = Stopwatch.StartNew();
                    await Task.Delay(TimeSpan.FromSeconds(10), cancellationToken);
                    while (sink.Stats.SpoolFiles > 0 && up.Elapsed < outage + options.MaxBackoff * 2 + TimeSpan.FromSeconds(60))
                    {
                        await Task.Delay(100, cancellationToken);
                    }

                    replay = up.Elapsed;
                }

                var deadline = Stopwatch.StartNew();
                while (!await sink.FlushAsync(cancellationToken) && deadline.Elapsed < TimeSpan.FromMinutes(2))
                {
                    await Task.Delay(100, cancellationToken);
                }

                stats = sink.Stats;
            }

            var (rows, distinct, aggregated) = await CountAsync(real, node, cancellationToken);
            report.Add("outage_s", outage.TotalSeconds, "s", "store outage");
            report.Add("published", traffic.Accepted, "events", "events published (accepted by the sink)");
            report.Add("refused", traffic.Refused, "events", "events refused by the sink");
            report.Add("stored", rows, "events", "events stored");
            report.Add("duplicates", rows - distinct, "events", "duplicate ids stored");
            report.Add("aggregated", aggregated, "events", "events counted by the activity aggregates");
            report.Add("spooled", stats.Spooled + stats.Spilled, "events", "events that went through the disk spool");
            report.Add("insert_failures", stats.InsertFailures, "", "failed inserts (each retried or spooled)");
            report.Add("refused_store_calls", store.Refused, "", "store calls refused by the injected outage");
            report.Add("recovery_s", replay.TotalSeconds, "s", "from the store's return to an empty spool");
            report.Add("worst_lag_s", worstLag.TotalSeconds, "s", "oldest event waiting in memory, worst seen");
            report.Check("published = stored", (ulong)traffic.Accepted == rows, $"{traffic.Accepted} published, {rows} stored");
            report.Check("no duplicates", rows == distinct, $"{rows - distinct} duplicate ids");
            report.Check("aggregates counted once", aggregated == rows, $"{aggregated} counted, {rows} stored");
            report.Check("nothing refused", traffic.Refused == 0 && traffic.Threw == 0, $"{traffic.Refused} refused, {traffic.Threw} threw");
            report.Check("the store was really down", store.Refused > 0 && stats.Spooled + stats.Spilled > 0, $"{store.Refused} calls refused, {stats.Spooled + stats.Spilled} events spooled");
            report.Check("healthy again", stats.Health == EventSinkHealth.Healthy && stats.SpoolFiles == 0, $"{stats.Health}, {stats.SpoolFiles} spool files");
        }
        finally
        {
            TryDelete(root);
        }
    }
}
