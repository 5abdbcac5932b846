using System.Globalization;
using System.Net;
using Analytics.Events;

namespace Analytics.Simulation.Models;

/// <summary>A campaign: malicious between <see cref="From"/> and <see cref="To"/>, planned only inside that window.</summary>
internal abstract class Campaign : Entity
{
    protected Campaign(int index, string label, string id, string variant, DateTimeOffset from, DateTimeOffset to)
        : base(index, label)
    {
        Id = id;
        Variant = variant;
        Population = variant;
        From = from;
        To = to;
    }

    public string Id { get; }

    public string Variant { get; }

    public DateTimeOffset From { get; }

    public DateTimeOffset To { get; }

    public sealed override void Plan(World world, DateTimeOffset from, DateTimeOffset to, Random random, List<SessionScript> output)
    {
        var a = from > From ? from : From;
        var b = to < To ? to : To;
        if (a < b)
        {
            PlanWindow(world, a, b, random, output);
        }
    }

    protected abstract void PlanWindow(World world, DateTimeOffset from, DateTimeOffset to, Random random, List<SessionScript> output);

    /// <summary>What bots say in EHLO: crude in vocabulary a, hostnames that look like anyone's in b.</summary>
    protected static string BotHelo(Random random, IPAddress ip, Vocabulary vocabulary) => vocabulary.Name == "a"
        ? random.Next(3) switch
        {
            0 => "[" + ip + "]",
            1 => "WIN-" + random.Next(0x10000, 0xFFFFF).ToString("X", CultureInfo.InvariantCulture),
            _ => "localhost",
        }
        : random.Next(3) switch
        {
            0 => "mail." + Pick(random, vocabulary.Words) + ".example.com",
            1 => "DESKTOP-" + random.Next(0x100000, 0xFFFFFF).ToString("X", CultureInfo.InvariantCulture),
            _ => "[" + ip + "]",
        };
}

/// <summary>
/// Directory harvest: walks a dictionary of local parts against the local domains with RCPT, keeps
/// what is not refused with 550, rarely sends DATA. Variants: fast (one IP, long sessions),
/// low_and_slow (one IP, 2 probes a session, far apart), distributed (many IPs in many /24s),
/// submission (an authenticated account probing through 587), sparse (a big botnet, each address
/// one probe a day, over days).
/// </summary>
internal sealed class Harvester : Campaign
{
    private readonly IPAddress[] _addresses;
    private readonly Account? _account;

    private readonly bool _altDictionary;

    public Harvester(int index, string id, string variant, DateTimeOffset from, DateTimeOffset to, IPAddress[] addresses, Account? account, bool altDictionary)
        : base(index, Behaviour.Harvester, id, variant, from, to)
    {
        _addresses = addresses;
        _account = account;
        _altDictionary = altDictionary;
    }

    protected override void PlanWindow(World world, DateTimeOffset from, DateTimeOffset to, Random random, List<SessionScript> output)
    {
        var dictionary = _altDictionary ? world.Vocabulary.AltDictionary : world.Vocabulary.Dictionary;
        var domain = world.Domains[Index % world.Domains.Count];
        var cursor = (int)((from - From).TotalMinutes * 7) % dictionary.Count; // walks on across days
        string Next()
        {
            cursor = (cursor + 1) % dictionary.Count;
            return dictionary[cursor] + "@" + domain;
        }

        switch (Variant)
        {
            case "fast":
                for (var t = from; t < to; t = t.AddSeconds(1 + (random.NextDouble() * 4)))
                {
                    output.Add(MxProbe(world, random, _addresses[0], t, random.Next(12, 30), Next, dataChance: 2));
                }

                break;
            case "low_and_slow":
                for (var t = from.AddMinutes(random.NextDouble() * 30); t < to; t = t.AddMinutes(20 + (random.NextDouble() * 40)))
                {
                    output.Add(MxProbe(world, random, _addresses[0], t, 2, Next, dataChance: 0));
                }

                break;
            case "distributed":
                var span = (to - from).TotalSeconds;
                foreach (var ip in _addresses)
                {
                    var sessions = random.Next(1, 4);
                    for (var i = 0; i < sessions; i++)
                    {
                        output.Add(MxProbe(world, random, ip, from.AddSeconds(random.NextDouble() * span), random.Next(3, 7), Next, dataChance: 0));
                    }
                }

                break;
            case "sparse":
                // Each address once a day, one or two names, at a random moment; the botnet as a whole walks on.
                var length = (to - from).TotalSeconds;
                foreach (var ip in _addresses)
                {
                    if (random.NextDouble() < length / 86_400)
                    {
                        output.Add(MxProbe(world, random, ip, from.AddSeconds(random.NextDouble() * length), random.Next(3) == 0 ? 2 : 1, Next, dataChance: 0));
                    }
                }

                break;
            default: // submission
                for (var t = from.AddMinutes(random.NextDouble() * 5); t < to; t = t.AddMinutes(1 + (random.NextDouble() * 9)))
                {
                    var ip = _addresses[random.Next(_addresses.Length)];
                    var steps = new List<Step>(16);
                    Greet(steps, random, BotHelo(random, ip, world.Vocabulary), tls: true);
                    steps.Add(new Step(StepKind.Auth, Ms(random, 5, 20), _account!.Name, _account.Password, "LOGIN"));
                    steps.Add(new Step(StepKind.Mail, Ms(random, 5, 20), _account.Name));
                    var n = random.Next(5, 9);
                    for (var i = 0; i < n; i++)
                    {
                        steps.Add(new Step(StepKind.Rcpt, Ms(random, 20, 200), Next()));
                    }

                    steps.Add(new Step(StepKind.Rset, Ms(random, 5, 20)));
                    steps.Add(new Step(StepKind.Quit, Ms(random, 1, 10)));
                    output.Add(Script(random, ip, ListenerRole.Submission, t, steps));
                }

                break;
        }
    }

    private SessionScript MxProbe(World world, Random random, IPAddress ip, DateTimeOffset start, int probes, Func<string> next, int dataChance)
    {
        var steps = new List<Step>(probes + 5);
        Greet(steps, random, BotHelo(random, ip, world.Vocabulary), tls: false);
        steps.Add(new Step(StepKind.Mail, Ms(random, 5, 50), ExternalAddress(random, world.Vocabulary)));
        for (var i = 0; i < probes; i++)
        {
            steps.Add(new Step(StepKind.Rcpt, Ms(random, 10, 150), next()));
        }

        if (random.Next(100) < dataChance)
        {
            steps.Add(new Step(StepKind.Data, Ms(random, 10, 50), Size: 600 + random.Next(2000)));
        }

        if (random.Next(3) != 0)
        {
            steps.Add(new Step(StepKind.Quit, Ms(random, 5, 50)));
        }

        return Script(random, ip, ListenerRole.Mx, start, steps);
    }
}

/// <summary>
/// Password guessing against submission AUTH: brute force (one IP, one account, a word list), spraying
/// (one password over many accounts; slow_spray spreads it over days from rotating addresses) or
/// credential stuffing (leaked pairs, a few per address; scattered_pairs: one attempt per address, the
/// addresses in random networks).
/// </summary>
internal sealed class AuthAttacker : Campaign
{
    private readonly IPAddress[] _addresses;
    private readonly IReadOnlyList<(string User, string Password)> _attempts;

    public AuthAttacker(int index, string label, string id, string variant, DateTimeOffset from, DateTimeOffset to,
        IPAddress[] addresses, IReadOnlyList<(string User, string Password)> attempts)
        : base(index, label, id, variant, from, to)
    {
        _addresses = addresses;
        _attempts = attempts;
    }

    protected override void PlanWindow(World world, DateTimeOffset from, DateTimeOffset to, Random random, List<SessionScript> output)
    {
        var span = (to - from).TotalSeconds;
        var fraction = (from - From).TotalSeconds / Math.Max(1, (To - From).TotalSeconds);
        var share = (to - from).TotalSeconds / Math.Max(1, (To - From).TotalSeconds);
        var first = (int)(fraction * _attempts.Count);
        var count = (int)Math.Ceiling(share * _attempts.Count);
        var attempts = _attempts.Skip(first).Take(count).ToList();
        if (Variant == "scattered_pairs")
        {
            // One attempt per address, each address used once, at a random moment.
            for (var i = 0; i < attempts.Count; i++)
            {
                var ip = _addresses[(first + i) % _addresses.Length];
                output.Add(Session(world, random, ip, from.AddSeconds(random.NextDouble() * span), attempts.Skip(i).Take(1)));
            }

            return;
        }

        if (Class == Behaviour.Stuffing)
        {
            // Each IP tries at most three leaked pairs, once, at a random moment.
            for (var i = 0; i < attempts.Count; i += 3)
            {
                var ip = _addresses[(first + i) / 3 % _addresses.Length];
                output.Add(Session(world, random, ip, from.AddSeconds(random.NextDouble() * span), attempts.Skip(i).Take(Math.Min(3, 1 + random.Next(3)))));
            }

            return;
        }

        if (Variant == "slow_spray")
        {
            // One account every few minutes to half an hour, the address changing every few attempts.
            var step = span / Math.Max(1, attempts.Count);
            for (var i = 0; i < attempts.Count; i++)
            {
                var ip = _addresses[(first + i) / 3 % _addresses.Length];
                output.Add(Session(world, random, ip, from.AddSeconds((i + random.NextDouble()) * step), attempts.Skip(i).Take(1)));
            }

            return;
        }

        // Brute force: sessions back to back; spraying: slower, a few users per session.
        var t = from;
        var perSession = 3;
        for (var i = 0; i < attempts.Count && t < to; i += perSession)
        {
            var ip = _addresses[i / perSession % _addresses.Length];
            output.Add(Session(world, random, ip, t, attempts.Skip(i).Take(perSession)));
            t = Class == Behaviour.BruteForce ? t.AddSeconds(2 + (random.NextDouble() * 6)) : t.AddSeconds(30 + (random.NextDouble() * 200));
        }
    }

    private SessionScript Session(World world, Random random, IPAddress ip, DateTimeOffset start, IEnumerable<(string User, string Password)> attempts)
    {
        var steps = new List<Step>(8);
        Greet(steps, random, BotHelo(random, ip, world.Vocabulary), tls: true);
        var mechanism = random.Next(2) == 0 ? "PLAIN" : "LOGIN";
        foreach (var (user, password) in attempts)
        {
            steps.Add(new Step(StepKind.Auth, Ms(random, 50, 400), user, password, mechanism));
        }

        if (random.Next(2) == 0)
        {
            steps.Add(new Step(StepKind.Quit, Ms(random, 5, 50)));
        }

        return Script(random, ip, ListenerRole.Submission, start, steps);
    }
}

/// <summary>
/// An ordinary user whose account is taken over: before <see cref="Takeover"/> only its owner's
/// traffic; afterwards also a bot from new addresses until the account is cleaned up at
/// <see cref="CleanedUp"/>. takeover: a spam run, machine-regular, to many new external recipients;
/// stealthy: a few messages an hour on daytime, mostly to the account's own correspondents.
/// </summary>
internal sealed class CompromisedUser : OrdinaryUser
{
    private readonly IPAddress[] _botAddresses;
    private readonly TimeSpan _interval;

    public CompromisedUser(OrdinaryUser owner, string campaign, string variant, DateTimeOffset takeover, DateTimeOffset cleanedUp, IPAddress[] botAddresses, TimeSpan interval)
        : base(owner.Index, owner.Account, owner.Addresses, owner.Contacts, owner.DailyRate, Behaviour.Compromised)
    {
        Variant = variant;
        Population = variant;
        ActiveFrom = owner.ActiveFrom;
        Group = owner.Group;
        CampaignId = campaign;
        Takeover = takeover;
        CleanedUp = cleanedUp;
        _botAddresses = botAddresses;
        _interval = interval;
    }

    public string CampaignId { get; }

    public string Variant { get; }

    public DateTimeOffset Takeover { get; }

    public DateTimeOffset CleanedUp { get; }

    public override void Plan(World world, DateTimeOffset from, DateTimeOffset to, Random random, List<SessionScript> output)
    {
        base.Plan(world, from, to, random, output);
        var a = from > Takeover ? from : Takeover;
        var b = to < CleanedUp ? to : CleanedUp;
        if (Variant == "stealthy")
        {
            for (var t = a.AddMinutes(random.NextDouble() * 20); t < b; t = t.Add(_interval * (0.5 + random.NextDouble())))
            {
                if (t.Hour is < 7 or >= 22)
                {
                    continue;
                }

                var ip = _botAddresses[random.Next(_botAddresses.Length)];
                var steps = new List<Step>(16);

                // One tool per campaign: half say an address literal, as many people's clients do, half
                // a Windows machine name; its TLS stack is a common library's.
                var helo = Index % 2 == 0 ? "[" + ip + "]" : "DESKTOP-" + ((Index * 104_729) % 0xFFFFFF).ToString("X6", CultureInfo.InvariantCulture);
                Greet(steps, random, helo, TlsClient.Tool(Index / 2));
                steps.Add(new Step(StepKind.Auth, Ms(random, 5, 30), Account.Name, Account.Password, "PLAIN"));
                var n = random.Next(1, 6);
                var recipients = Enumerable.Range(0, n).Select(_ => random.Next(100) < 70 ? Pick(random, Contacts) : ExternalAddress(random, world.Vocabulary)).Distinct();
                Message(steps, random, Account.Name, recipients, MessageSize(random));
                steps.Add(new Step(StepKind.Quit, Ms(random, 1, 10)));
                output.Add(Script(random, ip, ListenerRole.Submission, t, steps, wellBehaved: true));
            }

            return;
        }

        for (var t = a; t < b; t = t.Add(_interval).AddMilliseconds(random.Next(-150, 150)))
        {
            var ip = _botAddresses[random.Next(_botAddresses.Length)];
            var steps = new List<Step>(64);
            Greet(steps, random, BotHelo(ip), TlsClient.Tool(Index));
            steps.Add(new Step(StepKind.Auth, TimeSpan.FromMilliseconds(20), Account.Name, Account.Password, "LOGIN"));
            var n = random.Next(20, 50);
            Message(steps, random, Account.Name, Enumerable.Range(0, n).Select(_ => ExternalAddress(random, world.Vocabulary)).Distinct(), 3000 + random.Next(3000), 1, 3);
            steps.Add(new Step(StepKind.Quit, TimeSpan.FromMilliseconds(10)));
            output.Add(Script(random, ip, ListenerRole.Submission, t, steps, wellBehaved: true));
        }
    }

    private static string BotHelo(IPAddress ip) => "[" + ip + "]";
}
