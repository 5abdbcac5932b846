using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using Analytics.Events;
using Analytics.Store;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Simulation.Attacks;

/// <summary>
/// A harvest bot: one transaction per session, RCPT for each name of its share in dictionary order;
/// a 250 is a confirmed address, a 550 an unknown one; a name that got no answer (4xx, closed) goes
/// back in the queue. It reconnects when closed and gives up after a run of refusals.
/// </summary>
internal static class HarvestBot
{
    public const string Sender = "probe@bulk-lists.example";

    public static async Task ProbeAsync(AttackContext context, IPAddress ip, IPEndPoint server, (string User, string Password)? login,
        ConcurrentQueue<string> names, int giveUpAfterRefusals, CancellationToken cancellationToken)
    {
        var refusals = 0;
        var text = ip.ToString();
        while (refusals < giveUpAfterRefusals && !names.IsEmpty)
        {
            await using var probe = await SmtpProbe.ConnectAsync(ip, server, cancellationToken);
            context.Log.Add(Side.Attack, text, "connect", "", probe.Greeting);
            if (probe.Closed)
            {
                refusals++;
                await Task.Delay(TimeSpan.FromMilliseconds(300), context.Time, cancellationToken);
                continue;
            }

            await probe.EhloAsync("mail.bulk-lists.example", cancellationToken);
            if (login is { } l)
            {
                var auth = await probe.AuthPlainAsync(l.User, l.Password, cancellationToken);
                context.Log.Add(Side.Attack, text, "auth", l.User, auth);
                if (auth != 235)
                {
                    refusals++;
                    continue;
                }
            }

            var mail = await probe.CommandAsync($"MAIL FROM:<{login?.User ?? Sender}>", cancellationToken);
            context.Log.Add(Side.Attack, text, "mail", "", mail);
            if (mail != 250)
            {
                refusals++;
                continue;
            }

            while (!probe.Closed && refusals < giveUpAfterRefusals && names.TryDequeue(out var name))
            {
                var code = await probe.CommandAsync($"RCPT TO:<{name}@{ScenarioWorld.Domain}>", cancellationToken);
                context.Log.Add(Side.Attack, text, "rcpt", name, code);
                if (code is 250 or 550)
                {
                    refusals = 0;
                }
                else
                {
                    refusals++;
                    names.Enqueue(name);
                }
            }

            await probe.QuitAsync(cancellationToken);
        }
    }

    public static void Report(ScenarioReport report, ClientLog log, ScenarioWorld world, double target)
    {
        var attack = log.Of(Side.Attack).ToList();
        var confirmed = attack.Where(r => r.Step == "rcpt" && r.Code == 250).Select(r => r.Subject).Distinct(StringComparer.Ordinal).ToList();
        report.Add("harvest_yield", "valid addresses confirmed (250) of 100", confirmed.Count, target);
        report.Add("names_probed", "names answered 250 or 550 (of 1,000)", attack.Where(r => r.Step == "rcpt" && r.Code is 250 or 550).Select(r => r.Subject).Distinct(StringComparer.Ordinal).Count());
        report.Add("false_confirmations", "confirmed names that are not mailboxes", confirmed.Count(n => !world.ValidMailboxes.Contains(n)));
    }
}

/// <summary>Dictionary RCPT probing of the local domain on MX from one IP.</summary>
public sealed class HarvestScenario : AttackScenario
{
    private static readonly IPAddress Attacker = IPAddress.Parse("127.50.0.9");

    public override string Name => "harvest";

    public override string Description => "one IP probes 1,000 dictionary names (100 real mailboxes) with RCPT TO on MX";

    public override IReadOnlyList<IPAddress> AttackIps => [Attacker];

    public override Task AttackAsync(AttackContext context, CancellationToken cancellationToken) =>
        HarvestBot.ProbeAsync(context, Attacker, context.Mx, null, new ConcurrentQueue<string>(context.World.ProbeNames), giveUpAfterRefusals: 5, cancellationToken);

    public override void Report(ScenarioReport report, ClientLog log, ScenarioWorld world) => HarvestBot.Report(report, log, world, 3);
}

/// <summary>
/// The same dictionary over 50 IPs of one /24 on MX (18 names each, 10 IPs at a time), plus an
/// account whose password the attacker holds probing its own share through submission.
/// </summary>
public sealed class DistributedHarvestScenario : AttackScenario
{
    private static readonly List<IPAddress> Bots = ScenarioWorld.Spread(50, ["127.60.1"]);
    private static readonly IPAddress Prober = IPAddress.Parse("127.61.0.5");

    public override string Name => "harvest-distributed";

    public override string Description => "50 IPs in one /24 probe 900 names on MX, one authenticated account probes 100 through submission";

    public override IReadOnlyList<IPAddress> AttackIps => [.. Bots, Prober];

    public override string UnitOf(IPAddress ip) => ip.Equals(Prober) ? ip.ToString() : Net24(ip);

    public override async Task AttackAsync(AttackContext context, CancellationToken cancellationToken)
    {
        var names = context.World.ProbeNames;
        var account = context.World.Accounts.OrderBy(a => a.Key, StringComparer.Ordinal).Last();
        var proberShare = new ConcurrentQueue<string>(names.Where((_, i) => i % 10 == 9));
        var prober = HarvestBot.ProbeAsync(context, Prober, context.Submission, (account.Key, account.Value), proberShare, 5, cancellationToken);

        var botNames = names.Where((_, i) => i % 10 != 9).ToList();
        using var gate = new SemaphoreSlim(10);
        var bots = Bots.Select(async (ip, k) =>
        {
            await gate.WaitAsync(cancellationToken);
            try
            {
                var share = new ConcurrentQueue<string>(botNames.Where((_, i) => i % Bots.Count == k));
                await HarvestBot.ProbeAsync(context, ip, context.Mx, null, share, 3, cancellationToken);
            }
            finally
            {
                gate.Release();
            }
        }).ToList();
        await Task.WhenAll(bots.Append(prober));
    }

    public override void Report(ScenarioReport report, ClientLog log, ScenarioWorld world) => HarvestBot.Report(report, log, world, 5);
}

/// <summary>
/// An account with a week of ordinary history (a handful of messages a day from its usual address)
/// taken over: from a new IP, 200 messages to 5 outside recipients each, as fast as the server takes them.
/// </summary>
public sealed class CompromisedScenario : AttackScenario
{
    private static readonly IPAddress Attacker = IPAddress.Parse("127.66.6.6");
    private static readonly IPAddress Usual = IPAddress.Parse("127.20.0.7");

    public override string Name => "compromised";

    public override string Description => "a week-old normal account taken over from a new IP for a 200-message spam burst";

    public override IReadOnlyList<IPAddress> AttackIps => [Attacker];

    private static KeyValuePair<string, string> Victim(ScenarioWorld world) => world.Accounts.OrderBy(a => a.Key, StringComparer.Ordinal).ElementAt(5);

    public override async Task SeedAsync(IClickHouseStore store, ScenarioWorld world, string dataDirectory, CancellationToken cancellationToken)
    {
        var victim = Victim(world).Key;
        var random = new Random(world.Seed + 5);
        await using var sink = new EventSink(store, new EventSinkOptions(), Path.Combine(dataDirectory, "spool", "seed"), NullLogger.Instance);
        var today = DateTimeOffset.UtcNow.Date;
        for (var day = 7; day >= 1; day--)
        {
            for (var k = 0; k < 6; k++)
            {
                var at = new DateTimeOffset(today.AddDays(-day).AddHours(8 + (k * 1.5)).AddMinutes(random.Next(0, 50)), TimeSpan.Zero);
                var id = (ulong)random.NextInt64();
                SmtpEvent E(EventKind kind, ushort code, string recipient = "", int seconds = 0) => new()
                {
                    Timestamp = at.AddSeconds(seconds), Node = "history", Role = ListenerRole.Submission, SessionId = id, Kind = kind,
                    ClientIp = Usual, User = kind is EventKind.Connect or EventKind.Ehlo ? "" : victim, Outcome = code == 0 ? EventOutcome.None : EventOutcome.Ok,
                    ReplyCode = code, Sender = kind is EventKind.Mail or EventKind.Rcpt or EventKind.Data ? victim : "", Recipient = recipient,
                    RecipientDomain = recipient.Length > 0 ? recipient[(recipient.IndexOf('@', StringComparison.Ordinal) + 1)..] : "",
                    Mechanism = kind == EventKind.Auth ? "PLAIN" : "", Size = kind == EventKind.Data ? 4200UL : 0,
                };
                var to = string.Create(CultureInfo.InvariantCulture, $"contact{random.Next(0, 12)}@friends.example");
                foreach (var e in new[] { E(EventKind.Connect, 220), E(EventKind.Ehlo, 250), E(EventKind.Auth, 235, "", 1), E(EventKind.Mail, 250, "", 2),
                             E(EventKind.Rcpt, 250, to, 2), E(EventKind.Data, 250, "", 3), E(EventKind.Close, 0, "", 3) })
                {
                    sink.Publish(e);
                }
            }
        }

        await sink.FlushAsync(cancellationToken);
    }

    public override async Task AttackAsync(AttackContext context, CancellationToken cancellationToken)
    {
        var (user, password) = Victim(context.World);
        var text = Attacker.ToString();
        var attempts = 0;
        var refusals = 0;
        while (attempts < 200 && refusals < 20)
        {
            await using var probe = await SmtpProbe.ConnectAsync(Attacker, context.Submission, cancellationToken);
            context.Log.Add(Side.Attack, text, "connect", "", probe.Greeting);
            if (probe.Closed)
            {
                refusals++;
                continue;
            }

            await probe.EhloAsync("desktop-7f3a", cancellationToken);
            var auth = await probe.AuthPlainAsync(user, password, cancellationToken);
            context.Log.Add(Side.Attack, text, "auth", user, auth);
            if (auth != 235)
            {
                refusals++;
                continue;
            }

            for (var m = 0; m < 10 && attempts < 200 && refusals < 20 && !probe.Closed; m++)
            {
                attempts++;
                var mail = await probe.CommandAsync($"MAIL FROM:<{user}>", cancellationToken);
                context.Log.Add(Side.Attack, text, "mail", user, mail);
                if (mail != 250)
                {
                    refusals++;
                    await probe.CommandAsync("RSET", cancellationToken);
                    continue;
                }

                var accepted = 0;
                for (var r = 0; r < 5; r++)
                {
                    var code = await probe.CommandAsync(string.Create(CultureInfo.InvariantCulture, $"RCPT TO:<buyer{attempts * 5 + r}@target{r}.example>"), cancellationToken);
                    context.Log.Add(Side.Attack, text, "rcpt", "", code);
                    accepted += code == 250 ? 1 : 0;
                }

                var data = accepted > 0 ? await probe.DataAsync(user, cancellationToken) : await probe.CommandAsync("RSET", cancellationToken);
                if (accepted > 0)
                {
                    context.Log.Add(Side.Attack, text, "data", user, data);
                }

                refusals = accepted > 0 && data == 250 ? 0 : refusals + 1;
            }

            await probe.QuitAsync(cancellationToken);
        }
    }

    public override void Report(ScenarioReport report, ClientLog log, ScenarioWorld world)
    {
        var attack = log.Of(Side.Attack).ToList();
        var before = 0;
        foreach (var r in attack)
        {
            if (r.Code is >= 400 and not 535 || (r.Step == "connect" && r.Code != 220))
            {
                break;
            }

            before += r.Step == "data" && r.Code == 250 ? 1 : 0;
        }

        report.Add("messages_before_throttle", "burst messages accepted before the first throttle", before, 20);
        report.Add("messages_accepted", "burst messages accepted in all (of 200 tried)", attack.Count(r => r.Step == "data" && r.Code == 250));
    }
}
