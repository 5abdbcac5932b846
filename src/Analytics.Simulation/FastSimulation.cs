using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Threading.Channels;
using Analytics.Events;
using Analytics.Simulation.Models;
using Analytics.Store;
using Analytics.Limits;

namespace Analytics.Simulation;

public sealed record SimulationProgress(int Day, int Days, long Sessions, long Events);

public sealed record SimulationResult(string RunId, long Sessions, long Events, int Labels, TimeSpan Elapsed)
{
    public double EventsPerSecond => Events / Math.Max(Elapsed.TotalSeconds, 1e-9);

    /// <summary>Per population (benign label variant or attack variant): sessions, and sessions the server acted on.</summary>
    public IReadOnlyDictionary<string, SessionHarm> Populations { get; init; } = new Dictionary<string, SessionHarm>();
}

/// <summary>
/// What the server did to one population's sessions: how many it played, how many it acted on (any
/// throttle event — a tarpit, a hold, a lock, a rate refusal — or a refused connection), and how many
/// of those it refused outright (a 4xx/5xx throttle; tarpits only slow).
/// </summary>
public sealed record SessionHarm(string Class, long Sessions, long Throttled, long Refused);

/// <summary>
/// Fast mode: plans every entity's sessions day by day (in parallel; each entity-day has its own
/// seed), plays them in start order through the <see cref="ListenerEmulator"/>, and inserts the
/// events as large Native blocks while the next block is being built. Virtual time only.
/// </summary>
public static class FastSimulation
{
    /// <summary>Events per inserted block: big enough that the engine's per-insert cost vanishes.</summary>
    public const int BlockEvents = 250_000;

    public static string RunId(World world) =>
        string.Create(CultureInfo.InvariantCulture, $"{world.Scenario.Name}-{world.Scenario.Seed}-{world.Start:yyyyMMddHHmm}");

    /// <summary>The sessions of one day (from <see cref="World.Start"/> + <paramref name="day"/>), in the order they are played.</summary>
    public static List<SessionScript> PlanDay(World world, int day)
    {
        var from = world.Start.AddDays(day);
        var to = from.AddDays(1) < world.End ? from.AddDays(1) : world.End;
        var perEntity = new List<SessionScript>[world.Entities.Count];
        Parallel.For(0, world.Entities.Count, i =>
        {
            var entity = world.Entities[i];
            var list = new List<SessionScript>();
            entity.Plan(world, from, to, new Random(Entity.Seed(world.Scenario.Seed, entity.Index, day)), list);
            perEntity[i] = list;
        });
        var all = new List<SessionScript>(perEntity.Sum(l => l.Count));
        foreach (var list in perEntity)
        {
            all.AddRange(list);
        }

        all.Sort(static (a, b) => a.Start != b.Start ? a.Start.CompareTo(b.Start) : a.SessionId.CompareTo(b.SessionId));
        return all;
    }

    /// <summary>Plays the whole run and hands every event to <paramref name="emit"/> (no store; for tests and tools).</summary>
    public static (long Sessions, long Events) Play(World world, LimitsOptions? options, Action<SmtpEvent> emit, IProgress<SimulationProgress>? progress = null) =>
        Play(world, options, emit, progress, out _);

    /// <summary>Plays the whole run; <paramref name="harm"/> says what the server did to each population.</summary>
    public static (long Sessions, long Events) Play(World world, LimitsOptions? options, Action<SmtpEvent> emit, IProgress<SimulationProgress>? progress,
        out IReadOnlyDictionary<string, SessionHarm> harm)
    {
        var counts = new Dictionary<string, (string Class, long Sessions, long Throttled, long Refused)>(StringComparer.Ordinal);
        var play = new InterleavedPlay(new ListenerEmulator(world, options), emit, (script, throttled, refused) =>
        {
            var key = script.Population.Length > 0 ? script.Population : script.Class;
            var c = counts.GetValueOrDefault(key, (script.Class, 0, 0, 0));
            counts[key] = (c.Class, c.Sessions + 1, c.Throttled + (throttled ? 1 : 0), c.Refused + (refused ? 1 : 0));
        });
        for (var day = 0; day < world.Scenario.Days; day++)
        {
            foreach (var script in PlanDay(world, day))
            {
                play.Add(script);
            }

            progress?.Report(new SimulationProgress(day + 1, world.Scenario.Days, play.Sessions, play.Events));
        }

        play.Finish();
        harm = counts.ToDictionary(c => c.Key, c => new SessionHarm(c.Value.Class, c.Value.Sessions, c.Value.Throttled, c.Value.Refused), StringComparer.Ordinal);
        return (play.Sessions, play.Events);
    }

    /// <summary>Writes the labels, then the events of the whole run, into <paramref name="store"/>.</summary>
    public static async Task<SimulationResult> RunAsync(IClickHouseStore store, World world, LimitsOptions? options, TimeProvider time,
        IProgress<SimulationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var runId = RunId(world);
        var started = Stopwatch.GetTimestamp();
        await LabelWriter.WriteAsync(store, world.Labels, runId, time.GetUtcNow(), cancellationToken);

        // One producer (planning + emulation + encoding) and one consumer (the engine's insert),
        // two blocks in flight: on two cores the insert and the next block overlap.
        var blocks = Channel.CreateBounded<ArrayBufferWriter<byte>>(new BoundedChannelOptions(2) { SingleReader = true, SingleWriter = true });
        var insert = Task.Run(async () =>
        {
            await foreach (var block in blocks.Reader.ReadAllAsync(cancellationToken))
            {
                await EventFrame.InsertAsync(store, block.WrittenMemory, null, cancellationToken);
            }
        }, cancellationToken);

        (long Sessions, long Events) counts;
        IReadOnlyDictionary<string, SessionHarm>? harm = null;
        try
        {
            counts = await Task.Run(() =>
            {
                var encoder = new EventBatch(BlockEvents);
                void Flush()
                {
                    if (encoder.Count == 0)
                    {
                        return;
                    }

                    var buffer = new ArrayBufferWriter<byte>(BlockEvents * 96);
                    encoder.WriteTo(buffer);
                    encoder.Reset();
                    var write = blocks.Writer.WriteAsync(buffer, cancellationToken);
                    if (!write.IsCompleted)
                    {
                        write.AsTask().GetAwaiter().GetResult();
                    }
                }

                var result = Play(world, options, e =>
                {
                    encoder.Add(e);
                    if (encoder.Count >= BlockEvents)
                    {
                        Flush();
                    }
                }, progress, out harm);
                Flush();
                return result;
            }, cancellationToken);
        }
        finally
        {
            blocks.Writer.TryComplete();
        }

        await insert;
        return new SimulationResult(runId, counts.Sessions, counts.Events, world.Labels.Count, Stopwatch.GetElapsedTime(started)) { Populations = harm! };
    }
}

/// <summary>
/// Sessions played through one <see cref="ListenerEmulator"/>, each command at its own time: sessions in
/// flight wait in a queue ordered by when their next command arrives (ties in the order queued), so
/// sessions that overlap interleave as they do on a real server. Sessions are added in start order.
/// </summary>
internal sealed class InterleavedPlay(ListenerEmulator emulator, Action<SmtpEvent> emit, Action<SessionScript, bool, bool> finished)
{
    private readonly PriorityQueue<Running, (DateTimeOffset At, long Order)> _running = new();
    private long _order;

    public long Sessions { get; private set; }

    public long Events { get; private set; }

    /// <summary>Plays every command of the sessions in flight that arrives before this one connects, then its connection.</summary>
    public void Add(SessionScript script)
    {
        RunUntil(script.Start);
        var r = new Running(script);
        r.Commands = emulator.Start(script, e =>
        {
            Events++;
            if (e.Kind == EventKind.Throttle)
            {
                r.Throttled = true;
                r.Refused |= e.ReplyCode >= 400 && e.ReplyCode != 550;
            }

            emit(e);
        });
        Advance(r);
    }

    /// <summary>Plays the sessions in flight to their ends.</summary>
    public void Finish() => RunUntil(DateTimeOffset.MaxValue);

    private void RunUntil(DateTimeOffset until)
    {
        while (_running.TryPeek(out _, out var next) && next.At < until)
        {
            Advance(_running.Dequeue());
        }
    }

    private void Advance(Running r)
    {
        if (r.Commands.MoveNext())
        {
            _running.Enqueue(r, (r.Commands.Current, _order++));
            return;
        }

        r.Commands.Dispose();
        Sessions++;
        finished(r.Script, r.Throttled, r.Refused);
    }

    /// <summary>A session being played, and what the server did to it so far.</summary>
    private sealed class Running(SessionScript script)
    {
        public SessionScript Script { get; } = script;

        public IEnumerator<DateTimeOffset> Commands { get; set; } = null!;

        public bool Throttled { get; set; }

        public bool Refused { get; set; }
    }
}
