using Analytics.Events;
using Analytics.Store;

namespace Analytics.Simulation.Tests;

public sealed class FastSimulationTests(StoreFixture fixture)
{
    // Recent enough that the events table's retention TTL keeps the rows.
    private static readonly DateTimeOffset Start = new(DateTimeOffset.UtcNow.UtcDateTime.Date.AddDays(-3), TimeSpan.Zero);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public void Play_SameSeed_GivesIdenticalEvents()
    {
        var scenario = Scenario.Load("small");
        var first = new List<SmtpEvent>();
        var second = new List<SmtpEvent>();
        FastSimulation.Play(WorldBuilder.Build(scenario, Start), null, first.Add);
        FastSimulation.Play(WorldBuilder.Build(scenario, Start), null, second.Add);

        Assert.True(first.Count > 1000, $"only {first.Count} events");
        Assert.Equal(first.Count, second.Count);
        for (var i = 0; i < first.Count; i++)
        {
            Assert.Equal(first[i], second[i]);
        }

        var other = new List<SmtpEvent>();
        FastSimulation.Play(WorldBuilder.Build(scenario with { Seed = 43 }, Start), null, other.Add);
        Assert.NotEqual(first.Take(200), other.Take(200));
    }

    [Fact]
    public void Play_SmallScenario_HasEveryClassAndItsSignal()
    {
        var world = WorldBuilder.Build(Scenario.Load("small"), Start);
        var events = new List<SmtpEvent>();
        FastSimulation.Play(world, null, events.Add);
        // The class, and the behaviour where the class alone would hide it (the label's variant).
        string[] behaviours = ["newsletter", "ticket_system", "mailing_list", "wordlist", "one_password", "leaked_pairs"];
        var ipClass = world.Labels.Where(l => l.Kind == EntityKind.Ip)
            .ToDictionary(l => l.Entity, l => l.Class.ToText() + (behaviours.Contains(l.Variant) ? "/" + l.Variant : ""));
        string Cls(SmtpEvent e) => ipClass[e.ClientIp.ToString()];
        const string Benign = "benign", BruteForce = "brute_force/wordlist", Stuffing = "brute_force/leaked_pairs", Harvester = "harvester";

        Assert.Equal(
            [Benign, "benign/mailing_list", "benign/newsletter", "benign/ticket_system", "brute_force", Stuffing, "brute_force/one_password", BruteForce, "compromised", Harvester],
            events.Select(Cls).Distinct().Order(StringComparer.Ordinal));
        Assert.Contains(events, e => Cls(e) == Harvester && e.Kind == EventKind.Rcpt && e.ReplyCode == 550 && e.Status == "5.1.1");
        Assert.Contains(events, e => Cls(e) == Harvester && e.Kind == EventKind.Close && e.Detail.StartsWith("server closed: unknown recipients", StringComparison.Ordinal));
        Assert.Contains(events, e => Cls(e) == Harvester && e.Kind == EventKind.Throttle && e.Detail.StartsWith("hold ip", StringComparison.Ordinal));
        Assert.Contains(events, e => Cls(e) == BruteForce && e.Kind == EventKind.Auth && e.ReplyCode == 535 && e.Detail == "bad password");
        Assert.Contains(events, e => Cls(e) == BruteForce && e.Kind == EventKind.Throttle && e.ReplyCode == 454);
        Assert.Contains(events, e => Cls(e) == Stuffing && e.Kind == EventKind.Auth && e.ReplyCode == 235);
        Assert.Contains(events, e => Cls(e) == Benign && e.Kind == EventKind.Data && e.ReplyCode == 250 && e.Detail.StartsWith("recipients=", StringComparison.Ordinal));
        Assert.All(events, e => Assert.Equal(127, e.ClientIp.GetAddressBytes()[0]));
        // Submission only: on the MX, backscatter and callouts for forged senders are mostly unknown mailboxes.
        Assert.True(events.Where(e => Cls(e) == Benign && e.Role == ListenerRole.Submission && e.Kind == EventKind.Rcpt).Average(e => e.ReplyCode == 250 ? 1.0 : 0.0) > 0.95);
    }

    [Fact]
    public void Play_StaleAddressBooks_BounceSomeOfTheirOwnersOrdinaryMail()
    {
        // Share of benign accounts' deliveries that bounce, with no stale address books and with one in every
        // account: the second is what keeps "some failed deliveries" from reading as a takeover by itself.
        double Bounced(int stale)
        {
            var small = Scenario.Load("small");
            var world = WorldBuilder.Build(small with { Users = small.Users * 4, Legitimate = small.Legitimate with { StaleAddressBooks = stale } }, Start);
            var events = new List<SmtpEvent>();
            FastSimulation.Play(world, null, events.Add);
            // People's own mail: a benign person's account from a benign address (not bulk senders, whose lists are
            // their own; not the bots that log into stuffed accounts and send).
            string[] bulk = ["newsletter", "ticket_system", "mailing_list"];
            var benign = world.Labels.Where(l => l.Class == ThreatClass.Benign && !bulk.Contains(l.Variant)).Select(l => l.Entity).ToHashSet(StringComparer.Ordinal);
            var deliveries = events.Where(e => e.Kind == EventKind.Delivery && benign.Contains(e.User) && benign.Contains(e.ClientIp.ToString())).ToList();
            Assert.True(deliveries.Count > 500, $"only {deliveries.Count} deliveries");
            return deliveries.Count(e => e.Outcome == EventOutcome.Reject && e.Status == "5.1.1") / (double)deliveries.Count;
        }

        var none = Bounced(0);
        var all = Bounced(100);
        Assert.InRange(none, 0.005, 0.06);
        Assert.InRange(all, none + 0.04, 0.35);
    }

    [Fact]
    public async Task RunAsync_WritesEventsAndLabels_ThatJoin()
    {
        var node = "sim-" + Guid.NewGuid().ToString("N")[..8];
        var world = WorldBuilder.Build(Scenario.Load("small") with { Node = node, Seed = 4242 }, Start);
        var result = await FastSimulation.RunAsync(fixture.Store, world, null, TimeProvider.System, null, Ct);

        var stored = (await fixture.Store.QueryAsync("SELECT count() FROM events WHERE node = {n:String}", QueryParameters.Of(("n", node)), Ct)).Scalar<ulong>();
        Assert.Equal((ulong)result.Events, stored);

        // Every event's client IP has a label of this run; every authenticated user has one too.
        var unlabelled = (await fixture.Store.QueryAsync(
            """
            SELECT count() FROM events e
            LEFT ANY JOIN (SELECT ip, class FROM labels WHERE entity_kind = 'ip' AND run_id = {r:String}) l ON l.ip = e.client_ip
            WHERE e.node = {n:String} AND l.class = ''
            """, QueryParameters.Of(("n", node), ("r", result.RunId)), Ct)).Scalar<ulong>();
        Assert.Equal(0UL, unlabelled);

        var users = await fixture.Store.QueryAsync(
            """
            SELECT l.class AS class, countDistinct(e.user) AS users, count() AS events FROM events e
            INNER JOIN (SELECT entity, class FROM labels WHERE entity_kind = 'user' AND run_id = {r:String}) l ON l.entity = e.user
            WHERE e.node = {n:String} AND e.kind = 'auth' AND e.reply_code = 235
            GROUP BY class ORDER BY class
            """, QueryParameters.Of(("n", node), ("r", result.RunId)), Ct);
        var classes = Enumerable.Range(0, users.Rows.Count).Select(i => users.Get<string>(i, "class")).ToList();
        Assert.Contains("benign", classes);
        Assert.Contains("compromised", classes);

        // Compromised accounts: bot sessions fall inside the label's malicious window.
        var outside = (await fixture.Store.QueryAsync(
            """
            SELECT count() FROM events e
            INNER JOIN (SELECT ip, malicious_from, malicious_to FROM labels WHERE entity_kind = 'ip' AND class = 'compromised' AND run_id = {r:String}) l ON l.ip = e.client_ip
            WHERE e.node = {n:String} AND e.kind = 'connect' AND (e.ts < l.malicious_from OR e.ts > l.malicious_to)
            """, QueryParameters.Of(("n", node), ("r", result.RunId)), Ct)).Scalar<ulong>();
        Assert.Equal(0UL, outside);
    }
}
