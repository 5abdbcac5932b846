using System.Net;
using Analytics.Events;
using Analytics.Limits;
using Analytics.Simulation.Live;
using Analytics.Store;
using Analytics.Submission;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Simulation.Tests;

/// <summary>
/// The same sessions played live against the real listener and through the emulator must give the
/// same per-session features: events by kind, reply codes, RCPT rejections, AUTH failures, close reason.
/// </summary>
public sealed class LiveParityTests(StoreFixture fixture)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task SampleOfEveryClass_LiveAndFast_GiveTheSameSessionFeatures()
    {
        var tag = Guid.NewGuid().ToString("N")[..8];
        var options = new SubmissionOptions
        {
            NodeName = "live-" + tag,
            ServerName = "mx.test",
            DataDirectory = Path.Combine(fixture.Root, "listener-" + tag),
            SubmissionEndpoints = ["127.0.0.1:0"],
            MxEndpoints = ["127.0.0.1:0"],
            Directory = { Pbkdf2Iterations = 1000 },
        };
        var limits = new LimitsOptions { Session = { ShutdownDeadline = TimeSpan.FromSeconds(2) }, FastPath = { TarpitDelay = TimeSpan.FromMilliseconds(20) } };

        // A world of its own (seed) so its accounts do not collide with other tests' worlds.
        var world = WorldBuilder.Build(Scenario.Load("small") with { Seed = 777, Node = "fast-" + tag }, new DateTimeOffset(DateTime.UtcNow.Date, TimeSpan.Zero));
        await LiveSimulation.SeedAsync(fixture.Store, world, 1000, Ct);

        var hasher = new PasswordHasher(1000);
        var users = new UserDirectory(new UserStore(fixture.Store, hasher), hasher, NullLogger<UserDirectory>.Instance);
        var recipients = new RecipientDirectory(new RecipientStore(fixture.Store), NullLogger<RecipientDirectory>.Instance);
        await users.RefreshAsync(Ct);
        await recipients.RefreshAsync(Ct);
        await using var listener = new SubmissionListener(options, limits, users, recipients,
            new LimitBook(limits, TimeProvider.System), fixture.Sink, NullLogger<SubmissionListener>.Instance);
        await listener.StartAsync(Ct);
        var targets = new LiveTargets(
            listener.Endpoints.First(e => e.Role == ListenerRole.Submission).EndPoint,
            listener.Endpoints.First(e => e.Role == ListenerRole.Mx).EndPoint);

        // A few sessions of each class, in play order (lockouts depend on it).
        var day = FastSimulation.PlanDay(world, 0);
        var sample = day.GroupBy(s => s.Class).SelectMany(g => g.Take(g.Key == Behaviour.BruteForce ? 5 : 4)).ToList();
        sample.Sort((a, b) => a.Start.CompareTo(b.Start));

        // Live plays them back to back in a few seconds; the emulator gets the same compressed
        // schedule, or lockout windows (minutes) would separate what live mode runs together.
        var t0 = sample[0].Start;
        sample = [.. sample.Select((s, i) => s with { Start = t0.AddMilliseconds(100 * i) })];

        foreach (var script in sample)
        {
            await LiveClient.RunAsync(script, targets.For(script.Role), speed: 50, TimeProvider.System, Ct);
        }

        var emulator = new ListenerEmulator(world, limits);
        var fast = new List<SmtpEvent>();
        foreach (var script in sample)
        {
            emulator.Play(script, fast.Add);
        }

        var live = await LiveEventsAsync(options.NodeName, sample.Count);
        // The listener here delivers nothing onward (no queue): the emulator's delivery events have no live counterpart.
        var fastSessions = fast.Where(e => e.Kind != EventKind.Delivery).GroupBy(e => e.SessionId).Select(g => g.ToList()).ToList();
        Assert.Equal(sample.Count, fastSessions.Count);
        Assert.Equal(sample.Count, live.Count);

        var mismatches = new List<string>();
        for (var i = 0; i < sample.Count; i++)
        {
            var expected = Features(fastSessions[i]);
            var actual = Features(live[i]);
            if (expected != actual)
            {
                mismatches.Add($"{sample[i].Class} {sample[i].ClientIp}:\n  fast {expected}\n  live {actual}");
            }
        }

        Assert.True(mismatches.Count == 0, string.Join("\n", mismatches));
    }

    /// <summary>Per-session features detection uses, as a comparable string.</summary>
    private static string Features(List<SmtpEvent> events)
    {
        // A session without its close (still open, or its close lost) shows as one in the mismatch message.
        var close = events.SingleOrDefault(e => e.Kind == EventKind.Close) ?? events[0] with { Kind = EventKind.Close, Size = 0, Detail = "<no close>" };
        var rcpt = events.Where(e => e.Kind == EventKind.Rcpt).ToList();
        // Events stamped in the same millisecond have no stored order: compare them as multisets.
        var sequence = string.Join(" ", events.Where(e => e.Kind != EventKind.Close).OrderBy(e => e.Kind).ThenBy(e => e.ReplyCode).Select(e => $"{e.Kind.ToString().ToLowerInvariant()}:{e.ReplyCode}{(e.Status.Length > 0 ? "/" + e.Status : "")}"));
        return $"rcpt={rcpt.Count} rejected={rcpt.Count(e => e.ReplyCode >= 400)} authfail={events.Count(e => e.Kind == EventKind.Auth && e.ReplyCode >= 400)} " +
               $"data={events.Count(e => e.Kind == EventKind.Data)} commands={close.Size} close='{close.Detail}' details=[{string.Join("|", events.Where(e => e.Kind is EventKind.Auth or EventKind.Rcpt or EventKind.Throttle).Select(e => e.Detail).Order(StringComparer.Ordinal))}] seq=[{sequence}]";
    }

    private async Task<List<List<SmtpEvent>>> LiveEventsAsync(string node, int sessions)
    {
        var until = Environment.TickCount64 + 10_000;
        while (true)
        {
            await fixture.Sink.FlushAsync(Ct);
            var result = await fixture.Store.QueryAsync(
                """
                SELECT session_id, toUInt8(kind) AS kind, reply_code, status, detail, size, min(ts) OVER (PARTITION BY session_id) AS first, ts
                FROM events WHERE node = {node:String} ORDER BY first, session_id, ts, kind
                """, QueryParameters.Of(("node", node)), Ct);
            var rows = Enumerable.Range(0, result.Rows.Count).Select(i => new SmtpEvent
            {
                Timestamp = default,
                Node = node,
                Role = ListenerRole.Submission,
                SessionId = result.Get<ulong>(i, "session_id"),
                Kind = (EventKind)result.Get<byte>(i, "kind"),
                ClientIp = IPAddress.Loopback,
                ReplyCode = (ushort)result.Get<ulong>(i, "reply_code"),
                Status = result.Get<string>(i, "status"),
                Detail = result.Get<string>(i, "detail"),
                Size = result.Get<ulong>(i, "size"),
            }).ToList();
            var grouped = rows.GroupBy(r => r.SessionId).Select(g => g.ToList()).ToList();
            if ((grouped.Count >= sessions && grouped.All(g => g.Any(e => e.Kind == EventKind.Close))) || Environment.TickCount64 > until)
            {
                return grouped;
            }

            await Task.Delay(50, Ct);
        }
    }
}
