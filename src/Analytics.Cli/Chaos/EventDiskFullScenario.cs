using System.CommandLine;
using System.Diagnostics;
using Analytics.Events;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Cli.Chaos;

/// <summary>
/// <c>chaos event-disk-full</c>: the event spool lives on a small tmpfs that this scenario mounts (as
/// root; otherwise it is skipped) and then fills. With the store up the sink needs no disk; then the
/// store fails too, so batches have nowhere to go: they are held in memory, the queue fills, new events
/// are refused — and no call throws. Space returns, then the store: the sink recovers by itself, and
/// every event it accepted is stored once.
/// </summary>
internal sealed class EventDiskFullScenario : ChaosScenario
{
    private readonly Option<double> _full = new("--full") { Description = "Seconds the disk stays full while the store fails (default 20)", DefaultValueFactory = _ => 20 };
    private readonly Option<int> _rate = new("--rate") { Description = "Events per second published throughout (default 20,000)", DefaultValueFactory = _ => 20_000 };
    private readonly Option<int> _sizeMb = new("--size-mb") { Description = "Size of the tmpfs for the spool (default 64)", DefaultValueFactory = _ => 64 };

    public override string Name => "event-disk-full";

    public override string Description => "The event spool's disk fills (a tmpfs, root only): the sink keeps serving, loses nothing it accepted, recovers by itself";

    public override IReadOnlyList<Option> Options => [_full, _rate, _sizeMb];

    public override async Task RunAsync(ParseResult parse, ChaosReport report, TextWriter progress, CancellationToken cancellationToken)
    {
        if (!OperatingSystem.IsLinux() || !Environment.IsPrivilegedProcess)
        {
            throw new ChaosSkipException("mounting a tmpfs for the spool needs root on Linux");
        }

        var full = TimeSpan.FromSeconds(parse.GetValue(_full));
        var rate = parse.GetValue(_rate);
        var root = TempDirectory(Name);
        var disk = Path.Combine(root, "spool-disk");
        Directory.CreateDirectory(disk);
        var (mounted, error) = await RunAsync("mount", ["-t", "tmpfs", "-o", $"size={parse.GetValue(_sizeMb)}m", "tmpfs", disk], cancellationToken);
        if (!mounted)
        {
            TryDelete(root);
            throw new ChaosSkipException("cannot mount a tmpfs: " + error.Trim());
        }

        const string node = "chaos-disk-full";
        try
        {
            await using var real = EmbeddedStore.Open(Path.Combine(root, "data"));
            await new Migrator(real, NullLogger.Instance).ApplyAsync(new SchemaSettings(), cancellationToken);
            var store = new FaultInjectingStore(real);
            var options = new EventSinkOptions { MaxBackoff = TimeSpan.FromSeconds(2) };
            var filler = Path.Combine(disk, "filler");
            EventSinkStats stats, whileFull;
            ChaosTraffic traffic;
            long refusedWithStoreUp, threwWhileFull;
            await using (var sink = new EventSink(store, options, Path.Combine(disk, "spool"), NullLogger.Instance))
            {
                await using (traffic = new ChaosTraffic(sink, node, rate))
                {
                    await progress.WriteLineAsync($"traffic at {rate:N0} events/s; filling the spool's disk");
                    await Task.Delay(TimeSpan.FromSeconds(3), cancellationToken);
                    var filled = Fill(filler);
                    await progress.WriteLineAsync($"disk full ({filled / (1 << 20)} MiB of filler); store up for 5 s; {Describe(sink.Stats)}");
                    await Task.Delay(TimeSpan.FromSeconds(5), cancellationToken);
                    refusedWithStoreUp = traffic.Refused;

                    await progress.WriteLineAsync($"store down too, for {full.TotalSeconds:0} s");
                    store.Failing = true;
                    await Task.Delay(full, cancellationToken);
                    whileFull = sink.Stats;
                    threwWhileFull = traffic.Threw;

                    await progress.WriteLineAsync($"space returns; store still down for 5 s; {Describe(whileFull)}");
                    File.Delete(filler);
                    await Task.Delay(TimeSpan.FromSeconds(5), cancellationToken);
                    await progress.WriteLineAsync($"store up; traffic goes on for 5 s; {Describe(sink.Stats)}");
                    store.Failing = false;
                    await Task.Delay(TimeSpan.FromSeconds(5), cancellationToken);
                }

                await progress.WriteLineAsync($"traffic stopped; {Describe(sink.Stats)}");
                using (var flushDeadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
                {
                    flushDeadline.CancelAfter(TimeSpan.FromMinutes(2));
                    try
                    {
                        while (!await sink.FlushAsync(flushDeadline.Token))
                        {
                            await Task.Delay(100, flushDeadline.Token);
                        }
                    }
                    catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                    {
                        await progress.WriteLineAsync($"the sink did not drain within 2 minutes; {Describe(sink.Stats)}");
                    }
                }

                stats = sink.Stats;
            }

            var (rows, distinct, aggregated) = await CountAsync(real, node, cancellationToken);
            report.Add("published", traffic.Accepted, "events", "events accepted by the sink");
            report.Add("refused", traffic.Refused, "events", "events refused (queue full, disk full, store down)");
            report.Add("refused_store_up", refusedWithStoreUp, "events", "of them while the store was up (disk full only)");
            report.Add("stored", rows, "events", "events stored");
            report.Add("duplicates", rows - distinct, "events", "duplicate ids stored");
            report.Add("aggregated", aggregated, "events", "events counted by the activity aggregates");
            report.Add("spool_failures", stats.SpoolFailures, "", "spool writes the full disk refused");
            report.Add("held_at_worst", whileFull.Held, "events", "events held in memory while full (bounded)");
            report.Add("loop_errors", stats.LoopErrors, "", "errors the loop caught and survived");
            report.Add("quarantined", stats.Quarantined, "events", "events set aside as unreadable");
            report.Check("published = stored", (ulong)traffic.Accepted == rows, $"{traffic.Accepted} accepted, {rows} stored");
            report.Check("no duplicates", rows == distinct, $"{rows - distinct} duplicate ids");
            report.Check("aggregates counted once", aggregated == rows, $"{aggregated} counted, {rows} stored");
            report.Check("never threw into a session", traffic.Threw == 0, $"{traffic.Threw} Publish calls threw ({threwWhileFull} while full)");
            report.Check("kept serving with the store up", refusedWithStoreUp == 0, $"{refusedWithStoreUp} refused while only the disk was full");
            report.Check("the disk really was full", whileFull.SpoolFailures > 0 && whileFull.Held > 0, $"{whileFull.SpoolFailures} spool failures, {whileFull.Held} events held, health {whileFull.Health}");
            report.Check("recovered by itself", stats.Health == EventSinkHealth.Healthy && stats.SpoolFiles == 0 && stats.Held == 0, $"{stats.Health}, {stats.SpoolFiles} spool files, {stats.Held} held");
        }
        finally
        {
            if (Environment.GetEnvironmentVariable("ANALYTICS_CHAOS_KEEP") == "1")
            {
                await RunAsync("cp", ["-a", disk, root + "-kept"], CancellationToken.None);
            }

            await RunAsync("umount", ["-l", disk], CancellationToken.None);
            TryDelete(root);
        }
    }

    private static string Describe(EventSinkStats s) =>
        $"sink {s.Health}, {s.Held} held, {s.SpoolFiles} spool files, {s.Refused} refused, {s.SpoolFailures} spool failures, last error: {s.LastError ?? "none"}";

    // Writes until the disk refuses; returns the bytes written.
    private static long Fill(string path)
    {
        var chunk = new byte[1 << 20];
        long written = 0;
        try
        {
            using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
            while (true)
            {
                stream.Write(chunk);
                stream.Flush(flushToDisk: true);
                written += chunk.Length;
            }
        }
        catch (IOException)
        {
            return written;
        }
    }

    private static async Task<(bool Ok, string Error)> RunAsync(string file, string[] args, CancellationToken cancellationToken)
    {
        try
        {
            var info = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (var a in args)
            {
                info.ArgumentList.Add(a);
            }

            using var process = Process.Start(info)!;
            var error = await process.StandardError.ReadToEndAsync(cancellationToken);
            await process.WaitForExitAsync(cancellationToken);
            return (process.ExitCode == 0, error);
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            return (false, ex.Message);
        }
    }
}
