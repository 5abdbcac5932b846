using System.Globalization;
using System.Net;
using Analytics.Events;

namespace Analytics.Simulation.Models;

/// <summary>
/// A person with a mail client: 1–20 messages a day on office hours (less at weekends), 1–5
/// recipients mostly from their own correspondents, from a home or mobile address; now and then a
/// mistyped password (then the right one) or a mistyped local recipient.
/// </summary>
internal class OrdinaryUser : Entity
{
    public OrdinaryUser(int index, Account account, IPAddress[] addresses, string[] contacts, double dailyRate, string label = Behaviour.Benign)
        : base(index, label)
    {
        Account = account;
        Addresses = addresses;
        Contacts = contacts;
        DailyRate = dailyRate;
    }

    public Account Account { get; }

    public IPAddress[] Addresses { get; }

    public string[] Contacts { get; }

    public double DailyRate { get; }

    public override void Plan(World world, DateTimeOffset from, DateTimeOffset to, Random random, List<SessionScript> output)
    {
        for (var day = from; day < to; day = day.AddDays(1))
        {
            var rate = DailyRate * (Weekend(day) ? 0.3 : 1.0) * (0.6 + (0.8 * random.NextDouble()));
            var count = Math.Min(20, (int)Math.Round(rate));
            for (var i = 0; i < count; i++)
            {
                var start = DiurnalTime(random, day);
                if (start >= from && start < to)
                {
                    output.Add(Session(world, random, start));
                }
            }
        }
    }

    private SessionScript Session(World world, Random random, DateTimeOffset start)
    {
        var ip = Addresses[random.Next(100) < 75 ? 0 : random.Next(Addresses.Length)];
        var steps = new List<Step>(12);
        Greet(steps, random, "[" + ip + "]", tls: true);
        var wellBehaved = true;
        if (random.Next(100) < 4)
        {
            steps.Add(new Step(StepKind.Auth, Ms(random, 5, 30), Account.Name, Typo(random, Account.Password), "PLAIN"));
            steps.Add(new Step(StepKind.Auth, Seconds(2 + (random.NextDouble() * 8)), Account.Name, Account.Password, "PLAIN"));
            wellBehaved = false;
        }
        else
        {
            steps.Add(new Step(StepKind.Auth, Ms(random, 5, 30), Account.Name, Account.Password, "PLAIN"));
        }

        var n = 1 + (int)(Math.Pow(random.NextDouble(), 2.5) * 5);
        var recipients = new List<string>(n);
        for (var i = 0; i < n; i++)
        {
            var to = random.Next(100) < 85 ? Pick(random, Contacts) : random.Next(2) == 0 ? ExternalAddress(random) : Pick(random, world.Mailboxes);
            if (random.Next(100) < 2 && to.Contains('@', StringComparison.Ordinal) && world.Domains.Contains(to[(to.IndexOf('@', StringComparison.Ordinal) + 1)..]))
            {
                to = Typo(random, to[..to.IndexOf('@', StringComparison.Ordinal)]) + to[to.IndexOf('@', StringComparison.Ordinal)..];
                wellBehaved &= world.MailboxSet.Contains(to);
            }

            if (!recipients.Contains(to))
            {
                recipients.Add(to);
            }
        }

        Message(steps, random, Account.Name, recipients, MessageSize(random));
        steps.Add(new Step(StepKind.Quit, Ms(random, 1, 10)));
        return Script(random, ip, ListenerRole.Submission, start, steps, wellBehaved);
    }

    protected static string Typo(Random random, string text)
    {
        if (text.Length < 2)
        {
            return text + "x";
        }

        var i = random.Next(text.Length - 1);
        return random.Next(3) switch
        {
            0 => text[..i] + text[i + 1] + text[i] + text[(i + 2)..], // swapped letters
            1 => text[..i] + text[(i + 1)..], // dropped letter
            _ => text[..i] + (char)('a' + random.Next(26)) + text[(i + 1)..], // wrong key
        };
    }
}

/// <summary>A newsletter or ticket system: one server address, a session every few minutes, many valid recipients each.</summary>
internal sealed class HeavySender : Entity
{
    private readonly Account _account;
    private readonly IPAddress _ip;
    private readonly TimeSpan _interval;

    public HeavySender(int index, Account account, IPAddress ip, TimeSpan interval)
        : base(index, Behaviour.HeavySender)
    {
        _account = account;
        _ip = ip;
        _interval = interval;
    }

    public override void Plan(World world, DateTimeOffset from, DateTimeOffset to, Random random, List<SessionScript> output)
    {
        for (var t = from.Add(_interval * random.NextDouble()); t < to; t = t.Add(_interval * (0.8 + (0.4 * random.NextDouble()))))
        {
            if (t.Hour < 6 && random.Next(4) != 0)
            {
                continue; // mostly quiet at night
            }

            var steps = new List<Step>(64);
            Greet(steps, random, "mailer" + Index.ToString(CultureInfo.InvariantCulture) + ".sender.example", tls: true);
            steps.Add(new Step(StepKind.Auth, Ms(random, 1, 5), _account.Name, _account.Password, "PLAIN"));
            var n = random.Next(20, 90);
            var recipients = new HashSet<string>(StringComparer.Ordinal);
            var stale = false;
            while (recipients.Count < n)
            {
                var r = random.Next(100) < 70 ? Pick(random, world.Mailboxes) : ExternalAddress(random);
                if (random.Next(1000) < 3)
                {
                    r = "left" + random.Next(1000).ToString(CultureInfo.InvariantCulture) + "@" + Pick(random, world.Domains); // a stale list entry
                    stale = true;
                }

                recipients.Add(r);
            }

            Message(steps, random, _account.Name, recipients, 8000 + random.Next(40_000), 1, 4);
            steps.Add(new Step(StepKind.Quit, Ms(random, 1, 5)));
            output.Add(Script(random, _ip, ListenerRole.Submission, t, steps, !stale));
        }
    }
}

/// <summary>A remote mail server delivering ordinary inbound mail to local mailboxes on the MX (benign MX traffic).</summary>
internal sealed class InboundRelay : Entity
{
    private readonly IPAddress _ip;
    private readonly double _perDay;

    public InboundRelay(int index, IPAddress ip, double perDay)
        : base(index, Behaviour.Benign)
    {
        _ip = ip;
        _perDay = perDay;
    }

    public override void Plan(World world, DateTimeOffset from, DateTimeOffset to, Random random, List<SessionScript> output)
    {
        for (var day = from; day < to; day = day.AddDays(1))
        {
            var count = (int)(_perDay * (0.7 + (0.6 * random.NextDouble())));
            for (var i = 0; i < count; i++)
            {
                var start = DiurnalTime(random, day);
                var steps = new List<Step>(10);
                Greet(steps, random, "mx" + Index.ToString(CultureInfo.InvariantCulture) + ".relay.example", tls: false);
                var n = 1 + (int)(Math.Pow(random.NextDouble(), 3) * 4);
                var recipients = new HashSet<string>(StringComparer.Ordinal);
                var wellBehaved = true;
                while (recipients.Count < n)
                {
                    var r = Pick(random, world.Mailboxes);
                    if (random.Next(100) < 2)
                    {
                        r = Typo(random, r[..r.IndexOf('@', StringComparison.Ordinal)]) + r[r.IndexOf('@', StringComparison.Ordinal)..];
                        wellBehaved &= world.MailboxSet.Contains(r);
                    }

                    recipients.Add(r);
                }

                Message(steps, random, ExternalAddress(random), recipients, MessageSize(random));
                steps.Add(new Step(StepKind.Quit, Ms(random, 1, 5)));
                output.Add(Script(random, _ip, ListenerRole.Mx, start, steps, wellBehaved));
            }
        }
    }

    private static string Typo(Random random, string local) => local.Length < 2 ? local + "x" : local[..^1] + (char)('a' + random.Next(26));
}
