using System.Globalization;
using System.Net;

namespace Analytics.Simulation.Attacks;

/// <summary>A bot's AUTH loop: sessions of up to <paramref name="perSession"/> guesses, reconnecting when the server closes, giving up after a run of refusals.</summary>
internal static class AuthBot
{
    public static async Task GuessAsync(AttackContext context, IPAddress ip, IReadOnlyList<(string User, string Password)> guesses, int perSession,
        int giveUpAfterRefusals, CancellationToken cancellationToken)
    {
        var next = 0;
        var refusals = 0;
        while (next < guesses.Count && refusals < giveUpAfterRefusals)
        {
            await using var probe = await SmtpProbe.ConnectAsync(ip, context.Submission, cancellationToken);
            context.Log.Add(Side.Attack, ip.ToString(), "connect", "", probe.Greeting);
            if (probe.Closed)
            {
                refusals++;
                await Task.Delay(TimeSpan.FromMilliseconds(200), context.Time, cancellationToken);
                continue;
            }

            await probe.EhloAsync("bot" + ip.ToString().Replace('.', '-'), cancellationToken);
            for (var i = 0; i < perSession && next < guesses.Count && !probe.Closed; i++)
            {
                var (user, password) = guesses[next++];
                var code = await probe.AuthPlainAsync(user, password, cancellationToken);
                context.Log.Add(Side.Attack, ip.ToString(), "auth", user, code);
                refusals = code is 235 or 535 ? 0 : refusals + 1;
                if (code == 235)
                {
                    break; // in: the bot notes the pair and moves on
                }
            }

            await probe.QuitAsync(cancellationToken);
        }
    }
}

/// <summary>One IP, one account, a wordlist (the real password is in it, past the target).</summary>
public sealed class BruteforceScenario : AttackScenario
{
    private static readonly IPAddress Attacker = IPAddress.Parse("127.40.0.7");

    public override string Name => "bruteforce";

    public override string Description => "one IP guesses one account's password from a 100-word list";

    public override IReadOnlyList<IPAddress> AttackIps => [Attacker];

    public override Task AttackAsync(AttackContext context, CancellationToken cancellationToken)
    {
        var (victim, password) = Victim(context.World);
        var words = Enumerable.Range(0, 100).Select(i => string.Create(CultureInfo.InvariantCulture, $"guess{i:000}")).ToList();
        words[60] = password;
        return AuthBot.GuessAsync(context, Attacker, words.Select(w => (victim, w)).ToList(), perSession: 3, giveUpAfterRefusals: 5, cancellationToken);
    }

    public override void Report(ScenarioReport report, ClientLog log, ScenarioWorld world)
    {
        var (before, total, locked) = AuthChecks(log.Of(Side.Attack));
        report.Add("auth_attempts_before_lock", "AUTH attempts before the lock", locked ? before : double.PositiveInfinity, 10);
        report.Add("auth_attempts_checked", "AUTH attempts the server checked in all", total);
        report.Add("account_taken", "the account's password found (1 = yes)", log.Of(Side.Attack).Count(r => r.Step == "auth" && r.Code == 235), 0);
    }

    private static (string User, string Password) Victim(ScenarioWorld world) =>
        world.Accounts.OrderBy(a => a.Key, StringComparer.Ordinal).Select(a => (a.Key, a.Value)).First();
}

/// <summary>One password against many accounts from three IPs in three networks.</summary>
public sealed class SprayingScenario : AttackScenario
{
    private const string Sprayed = "Summer2024!";

    private static readonly IPAddress[] Attackers = [IPAddress.Parse("127.41.1.5"), IPAddress.Parse("127.42.7.9"), IPAddress.Parse("127.43.3.3")];

    public override string Name => "spraying";

    public override string Description => "one password against 150 accounts from 3 IPs in 3 networks";

    public override IReadOnlyList<IPAddress> AttackIps => Attackers;

    public override Task AttackAsync(AttackContext context, CancellationToken cancellationToken)
    {
        var accounts = context.World.Accounts.Keys.Order(StringComparer.Ordinal).Skip(10).Take(150).ToList();
        return Task.WhenAll(Attackers.Select((ip, k) =>
            AuthBot.GuessAsync(context, ip, accounts.Where((_, i) => i % Attackers.Length == k).Select(a => (a, Sprayed)).ToList(),
                perSession: 3, giveUpAfterRefusals: 5, cancellationToken)));
    }

    public override void Report(ScenarioReport report, ClientLog log, ScenarioWorld world)
    {
        var (before, total, locked) = AuthChecks(log.Of(Side.Attack));
        report.Add("auth_attempts_before_throttle", "AUTH attempts before the first throttle", locked ? before : double.PositiveInfinity, 10);
        report.Add("auth_attempts_checked", "AUTH attempts the server checked in all (target ≤ 10)", total, 10);
    }
}

/// <summary>
/// Credential stuffing: 600 leaked pairs (20 still valid, 380 with an old password, 200 for accounts
/// that do not exist) tried from 240 IPs in six /24s, at most 3 per IP, 24 IPs at a time.
/// </summary>
public sealed class StuffingScenario : AttackScenario
{
    private static readonly string[] Networks = ["127.70.1", "127.70.2", "127.71.9", "127.72.4", "127.73.8", "127.74.6"];
    private static readonly List<IPAddress> Attackers = ScenarioWorld.Spread(240, Networks);

    public override string Name => "stuffing";

    public override string Description => "600 leaked pairs (20 valid) from 240 IPs in 6 /24s, ≤ 3 attempts per IP";

    public override IReadOnlyList<IPAddress> AttackIps => Attackers;

    public override string UnitOf(IPAddress ip) => Net24(ip);

    public override async Task AttackAsync(AttackContext context, CancellationToken cancellationToken)
    {
        var world = context.World;
        var random = new Random(world.Seed + 17);
        var accounts = world.Accounts.OrderBy(a => a.Key, StringComparer.Ordinal).ToList();
        var pairs = new List<(string, string)>();
        pairs.AddRange(accounts.Take(20).Select(a => (a.Key, a.Value)));
        // Every leaked pair has its own password (an old one, or one of a deleted account's).
        pairs.AddRange(accounts.Skip(20).Take(380).Select(a => (a.Key, "old-" + random.Next(1_000_000, 9_999_999).ToString(CultureInfo.InvariantCulture))));
        pairs.AddRange(Enumerable.Range(0, 200).Select(i => (string.Create(CultureInfo.InvariantCulture, $"former{i:000}@{ScenarioWorld.Domain}"),
            "gone-" + random.Next(1_000_000, 9_999_999).ToString(CultureInfo.InvariantCulture))));
        var shuffled = pairs.OrderBy(_ => random.Next()).ToList();
        var order = Attackers.OrderBy(_ => random.Next()).ToList();
        using var gate = new SemaphoreSlim(24);
        var tasks = order.Select(async (ip, k) =>
        {
            await gate.WaitAsync(cancellationToken);
            try
            {
                var mine = shuffled.Skip(k * 3).Take(3).ToList();
                try
                {
                    await AuthBot.GuessAsync(context, ip, mine, perSession: 3, giveUpAfterRefusals: 3, cancellationToken);
                }
                catch (Exception ex) when (ex is IOException or System.Net.Sockets.SocketException)
                {
                    context.Log.Add(Side.Attack, ip.ToString(), "connect", "", 0);
                }
            }
            finally
            {
                gate.Release();
            }
        }).ToList();
        await Task.WhenAll(tasks);
    }

    public override void Report(ScenarioReport report, ClientLog log, ScenarioWorld world)
    {
        var (before, total, locked) = AuthChecks(log.Of(Side.Attack));
        report.Add("auth_attempts_before_first_throttle", "AUTH attempts before the first throttle", locked ? before : double.PositiveInfinity);
        report.Add("auth_attempts_checked", "AUTH attempts checked before the campaign was throttled", total, 100);
        report.Add("valid_pairs_logged_in", "valid leaked pairs that logged in (of 20)", log.Of(Side.Attack).Count(r => r.Step == "auth" && r.Code == 235), 4);
        report.Add("source_ips", "source IPs used", log.Of(Side.Attack).Select(r => r.Ip).Distinct().Count());
    }
}
