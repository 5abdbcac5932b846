using System.Globalization;
using System.Net;
using Analytics.Detection.Features;
using Analytics.Events;
using Analytics.Store;
using Analytics.Store.Embedded;
using Xunit;

namespace Analytics.Detection.Tests;

[Collection(EmbeddedCollection.Name)]
public sealed class FeatureTests
{
    private static readonly DateTime T = new(2026, 11, 20, 12, 0, 0, DateTimeKind.Utc);

    private static Task<EmbeddedStore> OpenAsync(TempDirectory dir) => SimulatedStore.OpenAsync(dir);

    // The path every writer takes: the events and the batch's aggregates (the sink's own encoding).
    private static Task InsertAsync(IClickHouseStore store, IEnumerable<SmtpEvent> events) => EventBatch.InsertAsync(store, events);

    /// <summary>One account's features as of <see cref="T"/>, read as the scorer reads them and as training does.</summary>
    private static async Task<EntityFeatures[]> BothWaysAsync(IClickHouseStore store, string user)
    {
        var reader = new FeatureReader(store);
        var one = (await reader.ReadAsync(T, T.AddMinutes(-10))).Single(f => f.Entity == EntityRef.User(user));
        var many = (await reader.ReadManyAsync(T, T, TimeSpan.FromMinutes(10), TimeSpan.FromMinutes(10))).Single(f => f.Entity == EntityRef.User(user));
        return [one, many];
    }

    private static SmtpEvent E(DateTime at, ulong session, EventKind kind, string ip, string user = "", EventOutcome outcome = EventOutcome.Ok,
        string status = "", string recipient = "", string detail = "", ListenerRole role = ListenerRole.Submission) => new()
    {
        Timestamp = new DateTimeOffset(at),
        Node = "t",
        Role = role,
        SessionId = session,
        Kind = kind,
        ClientIp = IPAddress.Parse(ip),
        User = user,
        Outcome = outcome,
        Status = status,
        Recipient = recipient,
        RecipientDomain = recipient.Contains('@', StringComparison.Ordinal) ? recipient[(recipient.IndexOf('@', StringComparison.Ordinal) + 1)..] : "",
        Detail = detail,
    };

    [Fact]
    public async Task HarvestFromOneIp_GivesHandComputedCounts_ForIpAndNetwork()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        var events = new List<SmtpEvent>();

        // 40 probes from 127.9.9.9 on MX in the last 3 minutes: 30 unknown (550 5.1.1), 10 valid; 4 sessions, no DATA.
        for (var i = 0; i < 40; i++)
        {
            var at = T.AddMinutes(-3).AddSeconds(i * 4);
            var session = 100UL + (ulong)(i / 10);
            var unknown = i % 4 != 0;
            events.Add(E(at, session, EventKind.Rcpt, "127.9.9.9", outcome: unknown ? EventOutcome.Reject : EventOutcome.Ok,
                status: unknown ? "5.1.1" : "2.1.5", recipient: $"name{i}@example.org", role: ListenerRole.Mx));
        }

        // The same /24 has one quiet host with one accepted recipient 30 minutes ago.
        events.Add(E(T.AddMinutes(-30), 900, EventKind.Rcpt, "127.9.9.20", recipient: "ceo@example.org", status: "2.1.5", role: ListenerRole.Mx));
        await InsertAsync(store, events);

        var features = await new FeatureReader(store).ReadAsync(T, T.AddMinutes(-60));
        var ip = features.Single(f => f.Entity == new EntityRef(EntityKind.Ip, "127.9.9.9"));
        Assert.Equal(40, ip["rcpt_5m"]);
        Assert.Equal(40, ip["rcpt_1h"]);
        Assert.Equal(30, ip["rcpt_unknown_1h"]);
        Assert.Equal(0.75f, ip["rcpt_unknown_ratio_1h"], 3);
        Assert.Equal(40, ip["recipients_1h"]);
        Assert.Equal(1, ip["recipient_domains_1h"]);
        Assert.Equal(4, ip["sessions_1h"]);
        Assert.Equal(1, ip["sessions_without_data_ratio_1h"]);
        Assert.Equal(8, ip["rcpt_per_minute_5m"]);
        Assert.Equal(0, ip["messages_1h"]);
        Assert.Equal(1, ip["is_ip"]);

        var net = features.Single(f => f.Entity.Kind == EntityKind.Net);
        Assert.Equal("127.9.9.0/24", net.Entity.Name);
        Assert.Equal(41, net["rcpt_1h"]);
        Assert.Equal(2, net["ips_1h"]);
        Assert.Equal(5, net["sessions_1h"]);
    }

    [Fact]
    public async Task CompromisedAccount_BurstAgainstItsOwnBaseline_AndNewIps()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        var events = new List<SmtpEvent>();
        ulong session = 1;

        // History: 3 days, one message a day at 09:00 from 127.5.5.5 to friend@example.com.
        for (var d = 3; d >= 1; d--)
        {
            var at = T.Date.AddDays(-d).AddHours(9);
            events.Add(E(at, session, EventKind.Auth, "127.5.5.5", "alice@example.org", status: "2.7.0"));
            events.Add(E(at.AddSeconds(1), session, EventKind.Rcpt, "127.5.5.5", "alice@example.org", status: "2.1.5", recipient: "friend@example.com"));
            events.Add(E(at.AddSeconds(2), session, EventKind.Data, "127.5.5.5", "alice@example.org", status: "2.0.0", detail: "recipients=1"));
            session++;
        }

        // Takeover in the last 10 minutes: 20 messages of 5 new external recipients each from 2 new IPs.
        for (var m = 0; m < 20; m++)
        {
            var at = T.AddMinutes(-10).AddSeconds(m * 30);
            var ip = m % 2 == 0 ? "127.66.1.1" : "127.77.1.1";
            events.Add(E(at, session, EventKind.Auth, ip, "alice@example.org", status: "2.7.0"));
            for (var r = 0; r < 5; r++)
            {
                events.Add(E(at.AddMilliseconds(100 + r), session, EventKind.Rcpt, ip, "alice@example.org", status: "2.1.5", recipient: $"victim{m * 5 + r}@spam{r}.test"));
            }

            events.Add(E(at.AddSeconds(1), session, EventKind.Data, ip, "alice@example.org", status: "2.0.0", detail: "recipients=5 queued=x"));
            session++;
        }

        await InsertAsync(store, events);
        var features = await new FeatureReader(store).ReadAsync(T, T.AddMinutes(-15));
        var alice = features.Single(f => f.Entity == EntityRef.User("alice@example.org"));
        Assert.Equal(20, alice["messages_1h"]);
        Assert.Equal(100, alice["rcpt_1h"]);
        Assert.Equal(100, alice["recipients_1h"]);
        Assert.Equal(5, alice["recipient_domains_1h"]);
        Assert.Equal(5, alice["max_message_rcpts_1h"]);
        Assert.Equal(2, alice["ips_1h"]);
        Assert.Equal(1, alice["new_ip_share_1h"]);
        Assert.Equal(1, alice["new_recipient_share_1h"]);
        Assert.Equal(5, alice["new_domains_1h"]);
        Assert.Equal(1, alice["has_baseline"]);

        // Baseline: 3 messages over the hours alice has existed before the last hour.
        var hours = ((T - T.Date.AddDays(-3).AddHours(9)).TotalMinutes - 60) / 60.0;
        Assert.Equal(20 / (3 / hours + 1), alice["messages_vs_baseline"], 2);
        Assert.Equal(0, alice["auth_failures_1h"]);
        Assert.Equal(1, alice["is_user"]);
    }

    /// <summary>
    /// The live server writes a busy minute in many one-second batches; the simulator that made the
    /// training data wrote it in one. The baseline's active minutes must not depend on that: a minute of
    /// yesterday's 11:00 hour written in three batches counts once beside one minute at 09:00, so this
    /// hour of day holds half of the baseline's active time (not three quarters), in the scorer's query
    /// and in the batch query that replays it for training.
    /// </summary>
    [Fact]
    public async Task Baseline_MinuteWrittenInSeveralBatches_CountsOnce()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        const string Ip = "127.8.1.1", User = "dora@example.org";
        var minute = T.AddDays(-1).AddHours(-1).AddMinutes(30);

        // Batch i holds i + 1 logins: blocks that differ (identical blocks inserted without a token
        // would be dropped as duplicates, which the sink's per-batch tokens prevent).
        for (var i = 0; i < 3; i++)
        {
            await InsertAsync(store, Enumerable.Range(0, i + 1).Select(k => E(minute.AddSeconds(10 + (20 * i) + k), 1, EventKind.Auth, Ip, User, status: "2.7.0")));
        }

        await InsertAsync(store, [E(T.AddDays(-1).AddHours(-3).AddMinutes(10), 2, EventKind.Auth, Ip, User, status: "2.7.0")]);
        await InsertAsync(store, [E(T.AddMinutes(-5), 3, EventKind.Auth, Ip, User, status: "2.7.0")]);

        foreach (var f in await BothWaysAsync(store, User))
        {
            Assert.Equal(1, f["has_baseline"]);
            Assert.Equal(0.5f, f["hour_of_day_share"], 4);
        }

        // What the batches wrote: three rows of one minute each for 11:00, one bit.
        var hourly = await store.QueryAsync(
            "SELECT sum(active_minutes), bitCount(groupBitOr(minute_mask)) FROM activity_hourly WHERE entity_kind = 'user' AND entity = {u:String} AND hour = {h:DateTime('UTC')}",
            QueryParameters.Of(("u", User), ("h", minute.AddMinutes(-30))));
        Assert.Equal(3UL, Convert.ToUInt64(hourly.Rows[0][0], CultureInfo.InvariantCulture));
        Assert.Equal(1UL, Convert.ToUInt64(hourly.Rows[0][1], CultureInfo.InvariantCulture));
    }

    /// <summary>Hourly rows written before migration 0061 have no minute mask: their active_minutes still count.</summary>
    [Fact]
    public async Task Baseline_RowsWithoutMinuteMask_CountTheirActiveMinutes()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        const string User = "old@example.org";
        await store.ExecuteAsync("""
            INSERT INTO activity_hourly (entity_kind, entity, hour, events, active_minutes)
            SELECT 'user', {u:String}, {h11:DateTime('UTC')}, 9, 3 UNION ALL SELECT 'user', {u:String}, {h09:DateTime('UTC')}, 2, 1
            """, QueryParameters.Of(("u", User), ("h11", T.AddDays(-1).AddHours(-1)), ("h09", T.AddDays(-1).AddHours(-3))));
        await InsertAsync(store, [E(T.AddMinutes(-5), 3, EventKind.Auth, "127.8.1.2", User, status: "2.7.0")]);

        foreach (var f in await BothWaysAsync(store, User))
        {
            Assert.Equal(1, f["has_baseline"]);
            Assert.Equal(0.75f, f["hour_of_day_share"], 4);
        }
    }

    [Fact]
    public async Task Stuffing_ManyUsersFromOneNetwork_CountsDistinctAccountsTried()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        var events = new List<SmtpEvent>();
        for (var i = 0; i < 30; i++)
        {
            var at = T.AddMinutes(-20).AddSeconds(i * 20);
            var ok = i == 7;
            events.Add(E(at, (ulong)(500 + i), EventKind.Auth, $"127.44.0.{i + 1}", $"user{i}@example.org",
                outcome: ok ? EventOutcome.Ok : EventOutcome.Reject, status: ok ? "2.7.0" : "5.7.8"));
        }

        await InsertAsync(store, events);
        var features = await new FeatureReader(store).ReadAsync(T, T.AddMinutes(-60));
        var net = features.Single(f => f.Entity == new EntityRef(EntityKind.Net, "127.44.0.0/24"));
        Assert.Equal(30, net["users_tried_1h"]);
        Assert.Equal(30, net["ips_1h"]);
        Assert.Equal(29, net["auth_failures_1h"]);
        Assert.Equal(29f / 30f, net["auth_fail_ratio_1h"], 3);
        var one = features.Single(f => f.Entity == new EntityRef(EntityKind.Ip, "127.44.0.3"));
        Assert.Equal(1, one["auth_failures_1h"]);
        Assert.Equal(1, one["users_tried_1h"]);
        Assert.Equal(30 + 30 + 1, features.Count);
    }

    /// <summary>
    /// The signals of issue 17, by hand: one password sprayed over accounts from one address (password
    /// spread), a session that fails, then logs in and sends (success after failures, then sending), the
    /// client's fingerprint (EHLO literal, no STARTTLS, AUTH LOGIN, dropped instead of QUIT), timing
    /// regularity, and the account's permanent delivery failures.
    /// </summary>
    [Fact]
    public async Task NewSignals_PasswordSpreadFingerprintTimingAndBounces_GiveHandComputedValues()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        var events = new List<SmtpEvent>();
        const string Sprayer = "127.55.0.9", Victim = "ann@example.org", Bot = "127.66.0.7";

        // Sprayer: 6 sessions exactly 5 minutes apart, each EHLO [literal], AUTH LOGIN as another account
        // with the same password (tag 77), 535, then dropped; 6 accounts, 1 password.
        for (var i = 0; i < 6; i++)
        {
            var at = T.AddMinutes(-40 + (5 * i));
            var id = 700UL + (ulong)i;
            events.Add(E(at, id, EventKind.Ehlo, Sprayer, detail: "[" + Sprayer + "]"));
            events.Add(E(at.AddSeconds(1), id, EventKind.Auth, Sprayer, $"u{i}@example.org", EventOutcome.Reject, "5.7.8") with { Mechanism = "LOGIN", ReplyCode = 535, SecretTag = 77 });
            events.Add(E(at.AddSeconds(2), id, EventKind.Close, Sprayer, detail: "client dropped") with { Size = 2, DurationMs = 2000 });
        }

        // The bot on the victim's account: two wrong passwords, the right one, one message to 3
        // recipients, QUIT; the mail's deliveries a little later: 2 refused (5.1.1), 1 taken.
        var s = T.AddMinutes(-12);
        events.Add(E(s, 800, EventKind.Ehlo, Bot, detail: "mail.bot.example"));
        events.Add(E(s.AddSeconds(1), 800, EventKind.StartTls, Bot));
        events.Add(E(s.AddSeconds(2), 800, EventKind.Auth, Bot, Victim, EventOutcome.Reject, "5.7.8") with { Mechanism = "PLAIN", ReplyCode = 535, SecretTag = 1 });
        events.Add(E(s.AddSeconds(3), 800, EventKind.Auth, Bot, Victim, EventOutcome.Reject, "5.7.8") with { Mechanism = "PLAIN", ReplyCode = 535, SecretTag = 2 });
        events.Add(E(s.AddSeconds(4), 800, EventKind.Auth, Bot, Victim, status: "2.7.0") with { Mechanism = "PLAIN", ReplyCode = 235, SecretTag = 3 });
        events.Add(E(s.AddSeconds(5), 800, EventKind.Data, Bot, Victim, status: "2.0.0", detail: "recipients=3 queued=q1") with { ReplyCode = 250 });
        events.Add(E(s.AddSeconds(6), 800, EventKind.Close, Bot, Victim, detail: "quit") with { Size = 8, DurationMs = 6000 });
        for (var i = 0; i < 3; i++)
        {
            var failed = i < 2;
            events.Add(E(s.AddMinutes(1).AddSeconds(i), 800, EventKind.Delivery, Bot, Victim, failed ? EventOutcome.Reject : EventOutcome.Ok,
                failed ? "5.1.1" : "2.0.0", $"r{i}@far.example") with { ReplyCode = (ushort)(failed ? 550 : 250) });
        }

        await InsertAsync(store, events);
        var features = (await new FeatureReader(store).ReadAsync(T, T.AddMinutes(-60))).ToDictionary(f => f.Entity);

        var sprayer = features[new EntityRef(EntityKind.Ip, Sprayer)];
        Assert.Equal(1, sprayer["passwords_1h"]);
        Assert.Equal(1, sprayer["failed_passwords_1h"]);
        Assert.Equal(6, sprayer["users_tried_1h"]);
        Assert.Equal(6, sprayer["accounts_per_password_1h"]);
        Assert.Equal(1, sprayer["helo_literal_share_1h"]);
        Assert.Equal(0, sprayer["tls_share_1h"]);
        Assert.Equal(1, sprayer["auth_login_share_1h"]);
        Assert.Equal(0, sprayer["quit_share_1h"]);
        Assert.Equal(2, sprayer["session_seconds_1h"], 3);
        Assert.Equal(2, sprayer["commands_per_session_1h"], 3);
        Assert.Equal(0, sprayer["interval_cv_1h"], 3); // every 5 minutes exactly

        var victim = features[new EntityRef(EntityKind.User, Victim)];
        Assert.Equal(3, victim["passwords_1h"]);
        Assert.Equal(2, victim["failed_passwords_1h"]);
        Assert.Equal(1, victim["auth_ok_after_fail_1h"]);
        Assert.Equal(1, victim["sent_after_fail_1h"]);
        Assert.Equal(0, victim["helo_bare_share_1h"]);
        Assert.Equal(1, victim["tls_share_1h"]);
        Assert.Equal(1, victim["quit_share_1h"]);
        Assert.Equal(2, victim["delivery_failures_24h"]);
        Assert.Equal(2f / 3f, victim["delivery_failure_ratio_24h"], 3);
        Assert.Equal(2, victim["delivery_failures_vs_baseline"], 3); // no baseline: its usual is none
        Assert.Equal(0, victim["baseline_delivery_failure_ratio"]);
        Assert.Equal(1, victim["interval_cv_1h"]); // active in one minute only: no gaps, no regularity to measure

        // Deliveries are the server's activity, not the client's: the minute they fall in does not make the account active.
        Assert.Equal(1, victim["active_minutes_1h"]);
    }

    /// <summary>
    /// Bounces against the account's own normal: a person whose address book has a stale entry bounces
    /// one delivery in four every day from home; today's one bounce is half of "usual + 1", and the
    /// 7-day baseline (complete hours before the last) holds its 3 of 12.
    /// </summary>
    [Fact]
    public async Task StaleAddressBook_BouncesWeighedAgainstTheAccountsOwnBaseline()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        const string Home = "127.77.0.5", Owner = "eva@example.org";
        var events = new List<SmtpEvent>();
        for (var day = 0; day <= 3; day++)
        {
            var s = T.AddDays(-day).AddMinutes(-30);
            var id = 900UL + (ulong)day;
            events.Add(E(s, id, EventKind.Ehlo, Home, detail: "[" + Home + "]"));
            events.Add(E(s.AddSeconds(1), id, EventKind.Auth, Home, Owner, status: "2.7.0") with { Mechanism = "PLAIN", ReplyCode = 235, SecretTag = 5 });
            events.Add(E(s.AddSeconds(2), id, EventKind.Data, Home, Owner, status: "2.0.0", detail: "recipients=4 queued=q" + day) with { ReplyCode = 250 });
            events.Add(E(s.AddSeconds(3), id, EventKind.Close, Home, Owner, detail: "quit") with { Size = 4, DurationMs = 3000 });
            for (var i = 0; i < 4; i++)
            {
                var failed = i == 0;
                events.Add(E(s.AddSeconds(10 + i), id, EventKind.Delivery, Home, Owner, failed ? EventOutcome.Reject : EventOutcome.Ok,
                    failed ? "5.1.1" : "2.0.0", $"friend{i}@far.example") with { ReplyCode = (ushort)(failed ? 550 : 250) });
            }
        }

        await InsertAsync(store, events);
        var owner = (await new FeatureReader(store).ReadAsync(T, T.AddMinutes(-60))).Single(f => f.Entity == new EntityRef(EntityKind.User, Owner));

        Assert.Equal(1, owner["has_baseline"]);
        Assert.Equal(1, owner["delivery_failures_24h"]);
        Assert.Equal(0.25f, owner["baseline_delivery_failure_ratio"], 3);
        Assert.Equal(0.5f, owner["delivery_failures_vs_baseline"], 3);
    }

    /// <summary>
    /// A quiet takeover on a proxy: the owner logs in from home every day; a proxy on another network,
    /// first used five hours ago, sends a message every half hour. An hour later the proxy is no longer
    /// new in the hour (new_ip_share_1h 0), but it is still an address and a network the account first
    /// used within the day, and the day's messages stand above the account's own daily normal.
    /// </summary>
    [Fact]
    public async Task QuietProxy_StaysNewForTheDay_NotJustItsFirstHour()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        const string Home = "127.77.0.5", Proxy = "127.78.9.9", Owner = "eva@example.org";
        var events = new List<SmtpEvent>();
        void Send(DateTime s, ulong id, string ip)
        {
            events.Add(E(s, id, EventKind.Ehlo, ip, detail: "[" + ip + "]"));
            events.Add(E(s.AddSeconds(1), id, EventKind.Auth, ip, Owner, status: "2.7.0") with { Mechanism = "PLAIN", ReplyCode = 235, SecretTag = 5 });
            events.Add(E(s.AddSeconds(2), id, EventKind.Rcpt, ip, Owner, recipient: "friend@far.example") with { ReplyCode = 250 });
            events.Add(E(s.AddSeconds(3), id, EventKind.Data, ip, Owner, status: "2.0.0", detail: "recipients=1 queued=q" + id) with { ReplyCode = 250 });
            events.Add(E(s.AddSeconds(4), id, EventKind.Close, ip, Owner, detail: "quit") with { Size = 5, DurationMs = 4000 });
        }

        for (var day = 0; day <= 3; day++)
        {
            Send(T.AddDays(-day).AddMinutes(-30), 900UL + (ulong)day, Home);
        }

        for (var i = 0; i < 10; i++)
        {
            Send(T.AddHours(-5).AddMinutes(30 * i), 950UL + (ulong)i, Proxy);
        }

        await InsertAsync(store, events);
        var owner = (await new FeatureReader(store).ReadAsync(T, T.AddMinutes(-60))).Single(f => f.Entity == new EntityRef(EntityKind.User, Owner));

        Assert.Equal(0, owner["new_ip_share_1h"]);
        Assert.Equal(2, owner["ips_24h"]);
        Assert.Equal(0.5f, owner["new_ip_share_24h"], 3);
        Assert.Equal(1, owner["new_nets_24h"]);

        // 24 h: today's home message and the proxy's ten. Baseline (up to 11:00): days 1-3 and the proxy's
        // eight before 11:00, over the 72 hours from the start of its first hour to the last hour.
        var baselinePerDay = 11 / (72 / 24.0);
        Assert.Equal((float)(11 / (baselinePerDay + 1)), owner["messages_24h_vs_baseline"], 3);
    }

    /// <summary>
    /// The client an account logs in with (EHLO name, an address literal counting as one; TLS protocol and
    /// cipher suite; AUTH mechanism): the owner's computer and phone, used for days from several
    /// addresses, are no new client; a tool first used five hours ago is, for the day, however it names
    /// itself; and the sink records each as one first_seen value. Read as the scorer and as training do.
    /// </summary>
    [Fact]
    public async Task NewClient_CountsForTheDay_TheOwnersComputerAndPhoneDoNot()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        const string Owner = "nora@example.org";
        var events = new List<SmtpEvent>();
        void Login(DateTime s, ulong id, string ip, string helo, string protocol, string cipher)
        {
            events.Add(E(s, id, EventKind.Ehlo, ip, detail: helo));
            events.Add(E(s.AddMilliseconds(100), id, EventKind.StartTls, ip, status: "2.0.0", detail: cipher) with { Mechanism = protocol, ReplyCode = 220 });
            events.Add(E(s.AddMilliseconds(200), id, EventKind.Ehlo, ip, detail: helo));
            events.Add(E(s.AddSeconds(1), id, EventKind.Auth, ip, Owner, status: "2.7.0") with { Mechanism = "PLAIN", ReplyCode = 235, SecretTag = 5 });
            events.Add(E(s.AddSeconds(4), id, EventKind.Close, ip, Owner, detail: "quit") with { Size = 5, DurationMs = 4000 });
        }

        for (var day = 1; day <= 3; day++)
        {
            Login(T.AddDays(-day).AddHours(-2), 1000UL + (ulong)day, "127.77.0.5", "DESKTOP-1A2B3C", "Tls13", "TLS_AES_256_GCM_SHA384");
            Login(T.AddDays(-day).AddHours(-1), 1100UL + (ulong)day, "127.79.0." + day, "[10.0.0." + day + "]", "Tls13", "TLS_AES_128_GCM_SHA256");
        }

        // Today: the phone from yet another address, and an attack tool with the computer's name.
        Login(T.AddMinutes(-5), 1200, "127.79.1.1", "[192.168.7.7]", "Tls13", "TLS_AES_128_GCM_SHA256");
        Login(T.AddHours(-5), 1300, "127.78.9.9", "DESKTOP-1A2B3C", "Tls12", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384");
        Login(T.AddMinutes(-30), 1301, "127.78.9.9", "DESKTOP-1A2B3C", "Tls12", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384");
        await InsertAsync(store, events);

        var clients = await store.QueryFormattedAsync(
            $"SELECT value FROM first_seen WHERE user = '{Owner}' AND seen_kind = 'client' GROUP BY value ORDER BY value", "TSV", null, TestContext.Current.CancellationToken);
        Assert.Equal(
            "[literal] Tls13/TLS_AES_128_GCM_SHA256 PLAIN\n" +
            "desktop-1a2b3c Tls12/TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 PLAIN\n" +
            "desktop-1a2b3c Tls13/TLS_AES_256_GCM_SHA384 PLAIN\n",
            System.Text.Encoding.UTF8.GetString(clients));

        foreach (var owner in await BothWaysAsync(store, Owner))
        {
            Assert.Equal(1, owner["new_clients_24h"]);
        }

        // More than a day after the tool's first login it is no longer new.
        events.Clear();
        Login(T.AddHours(20).AddMinutes(30), 1400, "127.79.2.2", "[192.168.7.8]", "Tls13", "TLS_AES_128_GCM_SHA256");
        await InsertAsync(store, events);
        var later = (await new FeatureReader(store).ReadAsync(T.AddHours(21), T.AddHours(20))).Single(f => f.Entity == EntityRef.User(Owner));
        Assert.Equal(0, later["new_clients_24h"]);
    }

    /// <summary>
    /// No feature reads anything at or after its scoring time: features as of t computed when the store
    /// holds only the events before t are identical to features as of t computed after the rest of the
    /// run (up to a day later) has been recorded. Checked at several times of a simulated day, for
    /// every entity the scorer would see, including times inside an hour and inside a minute.
    /// </summary>
    [Fact]
    public async Task Features_AsOfT_ReadNothingAtOrAfterT()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        var events = SimulatedStore.Day(Analytics.Simulation.Scenario.Load("small") with { Users = 20, MailboxesPerDomain = 30 }, T.AddDays(-1));

        DateTime[] times = [T.AddHours(-18).AddMinutes(17), T.AddHours(-8).AddMinutes(41).AddSeconds(30), T.AddHours(-2).AddMinutes(5)];
        var reader = new FeatureReader(store);
        var before = new List<List<EntityFeatures>>();
        var inserted = 0;
        foreach (var t in times)
        {
            var batch = events.Skip(inserted).TakeWhile(e => e.Timestamp.UtcDateTime < t).ToList();
            await InsertAsync(store, batch);
            inserted += batch.Count;
            before.Add(await reader.ReadAsync(t, t.AddHours(-3)));
        }

        await InsertAsync(store, events.Skip(inserted));
        for (var i = 0; i < times.Length; i++)
        {
            var after = (await reader.ReadAsync(times[i], times[i].AddHours(-3))).ToDictionary(f => f.Entity);
            Assert.True(before[i].Count > 0, $"no entity active before {times[i]:u} ({events.Count} events from {events[0].Timestamp:u} to {events[^1].Timestamp:u}, {inserted} inserted)");
            foreach (var f in before[i])
            {
                Assert.True(after.TryGetValue(f.Entity, out var later), $"{f.Entity} missing once later events exist");
                for (var k = 0; k < FeatureSet.Count; k++)
                {
                    Assert.True(f.Values[k] == later.Values[k],
                        $"{f.Entity} at {times[i]:HH:mm:ss}: {FeatureSet.All[k].Name} was {f.Values[k]} with the past only, {later.Values[k]} once the future was recorded");
                }
            }

            Assert.Equal(before[i].Count, after.Count);
        }
    }

    /// <summary>
    /// The batch query that replays scoring passes over history (evaluation, training) computes, for
    /// every point, exactly the features the scorer's own query computes there: same entities, same
    /// values — at the production cadence (every minute, lookback one minute) and at a training step
    /// (every 5 minutes, lookback 5), across hour boundaries and chunk edges.
    /// </summary>
    [Fact]
    public async Task ReadMany_GivesTheSameFeaturesAsOnePassAtEveryPoint()
    {
        using var dir = new TempDirectory();
        await using var store = await OpenAsync(dir);
        var start = T.AddDays(-1);
        await SimulatedStore.InsertAsync(store, SimulatedStore.Day(Analytics.Simulation.Scenario.Load("small") with { Users = 20, MailboxesPerDomain = 30 }, start));

        var reader = new FeatureReader(store);
        (DateTime From, DateTime To, int Step)[] cases =
        [
            (start.AddHours(9).AddMinutes(41), start.AddHours(11).AddMinutes(3), 1),
            (start.AddHours(13).AddMinutes(50), start.AddHours(15).AddMinutes(10), 5),
        ];
        var compared = 0;
        foreach (var (from, to, step) in cases)
        {
            var many = (await reader.ReadManyAsync(from, to, TimeSpan.FromMinutes(step), TimeSpan.FromMinutes(step)))
                .GroupBy(f => f.AsOf).ToDictionary(g => g.Key, g => g.ToDictionary(f => f.Entity));
            for (var t = from; t <= to; t = t.AddMinutes(step))
            {
                var one = await reader.ReadAsync(t, t.AddMinutes(-step));
                var batch = many.GetValueOrDefault(t) ?? [];
                Assert.True(one.Count == batch.Count, $"{t:HH:mm}: {one.Count} entities one pass at a time, {batch.Count} in the batch");
                foreach (var f in one)
                {
                    Assert.True(batch.TryGetValue(f.Entity, out var b), $"{f.Entity} at {t:HH:mm} missing from the batch");
                    for (var k = 0; k < FeatureSet.Count; k++)
                    {
                        Assert.True(Math.Abs(f.Values[k] - b.Values[k]) <= 1e-4 * Math.Max(1, Math.Abs(f.Values[k])),
                            $"{f.Entity} at {t:HH:mm}: {FeatureSet.All[k].Name} is {f.Values[k]} in one pass, {b.Values[k]} in the batch");
                    }

                    compared++;
                }
            }
        }

        Assert.True(compared > 200, $"only {compared} entity scorings compared");
    }
}
