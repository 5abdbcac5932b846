using System.Globalization;
using System.Net;
using Analytics.Events;

namespace Analytics.Simulation.Models;

/// <summary>
/// Where a person's sessions come from: a home address that may change with each lease (pooled ISP
/// addresses), fixed extra addresses (work, a second device), an office NAT on working hours, a
/// carrier's CGNAT pool (a different address almost every session), and a trip away (a hotel's
/// network, never seen before).
/// </summary>
internal sealed class AddressPlan
{
    public required (DateTimeOffset From, IPAddress Address)[] Home { get; init; }

    public IPAddress[] Others { get; init; } = [];

    /// <summary>A NAT address the person sends from on working days during office hours.</summary>
    public IPAddress? Office { get; init; }

    /// <summary>A carrier's CGNAT pool: each session takes one of these at random.</summary>
    public IPAddress[] Mobile { get; init; } = [];

    /// <summary>A trip: between From and To every session comes from these addresses.</summary>
    public (DateTimeOffset From, DateTimeOffset To, IPAddress[] Addresses)? Trip { get; init; }

    public IEnumerable<IPAddress> All =>
        Home.Select(h => h.Address).Concat(Others).Concat(Office is null ? [] : [Office]).Concat(Mobile).Concat(Trip?.Addresses ?? []).Distinct();

    public IPAddress Pick(Random random, DateTimeOffset t)
    {
        if (Trip is { } trip && t >= trip.From && t < trip.To)
        {
            return trip.Addresses[random.Next(trip.Addresses.Length)];
        }

        if (Office is { } office && t.DayOfWeek is not (DayOfWeek.Saturday or DayOfWeek.Sunday) && t.Hour is >= 7 and < 19 && random.Next(100) < 90)
        {
            return office;
        }

        if (Mobile.Length > 0 && (Home.Length == 0 || random.Next(100) < 70))
        {
            return Mobile[random.Next(Mobile.Length)];
        }

        if (Others.Length > 0 && random.Next(100) < 25)
        {
            return Others[random.Next(Others.Length)];
        }

        var home = Home[0].Address;
        foreach (var (from, address) in Home)
        {
            if (from > t)
            {
                break;
            }

            home = address;
        }

        return home;
    }
}

/// <summary>
/// A person with a mail client: 1–20 messages a day on office hours (less at weekends), mostly 1–5
/// recipients from their own correspondents and now and then a message to dozens (an invitation);
/// from a home, office, mobile or hotel address (<see cref="AddressPlan"/>). Now and then a mistyped
/// password (then the right one), a mistyped user name, or a mistyped local recipient. A new sender
/// starts at <see cref="ActiveFrom"/>, with no history at all.
/// </summary>
internal class OrdinaryUser : Entity
{
    public OrdinaryUser(int index, Account account, AddressPlan addresses, string[] contacts, double dailyRate, string label = Behaviour.Benign)
        : base(index, label)
    {
        Account = account;
        Addresses = addresses;
        Contacts = contacts;
        DailyRate = dailyRate;
    }

    public Account Account { get; }

    public AddressPlan Addresses { get; }

    public string[] Contacts { get; }

    public double DailyRate { get; }

    /// <summary>When the account starts sending (a new sender); null: from the start of the run.</summary>
    public DateTimeOffset? ActiveFrom { get; init; }

    /// <summary>The group its entities are split by (the user, its office, its carrier or ISP pool).</summary>
    public string Group { get; init; } = "";

    /// <summary>The mistyped user name it sometimes tries (a non-existent account tried by a legitimate client).</summary>
    public string MistypedName => Typo(new Random(Index), Account.Name[..Account.Name.IndexOf('@', StringComparison.Ordinal)]) + Account.Name[Account.Name.IndexOf('@', StringComparison.Ordinal)..];

    public override void Plan(World world, DateTimeOffset from, DateTimeOffset to, Random random, List<SessionScript> output)
    {
        for (var day = from; day < to; day = day.AddDays(1))
        {
            var rate = DailyRate * (Weekend(day) ? 0.3 : 1.0) * (0.6 + (0.8 * random.NextDouble()));
            var count = Math.Min(25, (int)Math.Round(rate));
            for (var i = 0; i < count; i++)
            {
                var start = DiurnalTime(random, day);
                if (start >= from && start < to && (ActiveFrom is null || start >= ActiveFrom))
                {
                    output.Add(Session(world, random, start));
                }
            }
        }
    }

    private SessionScript Session(World world, Random random, DateTimeOffset start)
    {
        var ip = Addresses.Pick(random, start);
        var steps = new List<Step>(12);
        var (helo, tls) = Device(world, random, ip, start);
        Greet(steps, random, helo, tls);
        var wellBehaved = true;
        var roll = random.Next(1000);
        if (roll < 40)
        {
            steps.Add(new Step(StepKind.Auth, Ms(random, 5, 30), Account.Name, Typo(random, Account.Password), "PLAIN"));
            steps.Add(new Step(StepKind.Auth, Seconds(2 + (random.NextDouble() * 8)), Account.Name, Account.Password, "PLAIN"));
            wellBehaved = false;
        }
        else if (roll < 48)
        {
            steps.Add(new Step(StepKind.Auth, Ms(random, 5, 30), MistypedName, Account.Password, "PLAIN"));
            steps.Add(new Step(StepKind.Auth, Seconds(3 + (random.NextDouble() * 10)), Account.Name, Account.Password, "PLAIN"));
            wellBehaved = false;
        }
        else
        {
            steps.Add(new Step(StepKind.Auth, Ms(random, 5, 30), Account.Name, Account.Password, "PLAIN"));
        }

        // Mostly a handful; a few messages go to dozens (an invitation, a class, a team outside).
        var n = random.Next(100) < 3 ? random.Next(8, 41) : 1 + (int)(Math.Pow(random.NextDouble(), 2.5) * 5);
        var recipients = new List<string>(n);
        for (var i = 0; i < n; i++)
        {
            var to = random.Next(100) < 85 ? Pick(random, Contacts) : random.Next(2) == 0 ? ExternalAddress(random, world.Vocabulary) : Pick(random, world.Mailboxes);
            if (random.Next(100) < 2 && IsLocal(world, to))
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

    /// <summary>
    /// The device a session comes from, as the server sees it (EHLO name, TLS): the person's computer,
    /// or for half of the people now and then (three sessions in ten) their phone. One person in eight
    /// replaces the computer during the run (a new machine: a new name, maybe another TLS stack).
    /// </summary>
    private (string Helo, TlsClient Tls) Device(World world, Random random, IPAddress ip, DateTimeOffset at)
    {
        if (Index % 2 == 0 && random.Next(10) < 3)
        {
            return ("[" + ip + "]", TlsClient.Phone(Index / 2));
        }

        // The new computer arrives at a point of the run fixed per person (the world's span, not the
        // planning window's, so every day agrees).
        var replaced = Index % 8 == 3 && at >= world.Start + ((world.End - world.Start) * ((Index * 37 % 100) / 100.0)) ? 1 : 0;
        return (ClientName(ip, Index + (replaced * 7)), TlsClient.Desktop((Index * 3) + (replaced * 5)));
    }

    /// <summary>
    /// What a mail client says in EHLO, one style per machine: an address literal (Thunderbird,
    /// phones), a dotless machine name (Outlook on Windows), or a host name.
    /// </summary>
    private static string ClientName(IPAddress ip, int machine) => (machine % 5) switch
    {
        0 or 1 => "[" + ip + "]",
        2 or 3 => "DESKTOP-" + ((machine * 7919) % 0xFFFFFF).ToString("X6", CultureInfo.InvariantCulture),
        _ => "laptop" + machine.ToString(CultureInfo.InvariantCulture) + ".home.example",
    };

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

/// <summary>
/// A phone that kept an old password after its owner changed it: from the office's NAT address (on
/// the office Wi-Fi), every 10–30 minutes from morning to night it tries to send, gets 535 and gives
/// up until the next try — the same wrong password over and over, for days, while its owner sends
/// normally from the desktop behind the same address.
/// </summary>
internal sealed class StalePhone : Entity
{
    private readonly Account _account;
    private readonly string _stalePassword;
    private readonly IPAddress _ip;
    private readonly DateTimeOffset _from;
    private readonly DateTimeOffset _to;

    public StalePhone(int index, Account account, string stalePassword, IPAddress ip, DateTimeOffset from, DateTimeOffset to)
        : base(index, Behaviour.Benign)
    {
        _account = account;
        _stalePassword = stalePassword;
        _ip = ip;
        _from = from;
        _to = to;
    }

    public override void Plan(World world, DateTimeOffset from, DateTimeOffset to, Random random, List<SessionScript> output)
    {
        var a = from > _from ? from : _from;
        var b = to < _to ? to : _to;
        for (var t = a.AddMinutes(random.NextDouble() * 20); t < b; t = t.AddMinutes(10 + (random.NextDouble() * 20)))
        {
            if (t.Hour < 7)
            {
                continue;
            }

            var steps = new List<Step>(8);
            Greet(steps, random, "[192.168.1." + (10 + (Index % 200)).ToString(CultureInfo.InvariantCulture) + "]", tls: true);
            steps.Add(new Step(StepKind.Auth, Ms(random, 5, 30), _account.Name, _stalePassword, "PLAIN"));
            if (random.Next(3) == 0)
            {
                steps.Add(new Step(StepKind.Auth, Seconds(1 + random.NextDouble()), _account.Name, _stalePassword, "LOGIN"));
            }

            steps.Add(new Step(StepKind.Quit, Ms(random, 1, 10)));
            output.Add(Script(random, _ip, ListenerRole.Submission, t, steps));
        }
    }
}

/// <summary>
/// Legitimate bulk mail through submission from one server address: a newsletter (one personalised
/// message per subscriber, about twelve a minute over a kept-open connection, one to three sends a day),
/// a ticket system (one message to a team and customers every 15–60 minutes on working hours), or a
/// mailing list (posts in bursts, each expanded to every member). Each list has 50–500 members, many
/// of them local, and keeps 1–5 % stale local addresses that no longer exist: every send hits them.
/// </summary>
internal sealed class BulkSender : Entity
{
    private readonly Account _account;
    private readonly IPAddress _ip;
    private readonly string[] _members;
    private readonly string _kind;

    public BulkSender(int index, string kind, Account account, IPAddress ip, string[] members)
        : base(index, Behaviour.HeavySender)
    {
        _kind = kind;
        _account = account;
        _ip = ip;
        _members = members;
    }

    public override void Plan(World world, DateTimeOffset from, DateTimeOffset to, Random random, List<SessionScript> output)
    {
        switch (_kind)
        {
            case "newsletter":
                for (var day = from; day < to; day = day.AddDays(1))
                {
                    var sends = Weekend(day) ? random.Next(0, 2) : random.Next(1, 4);
                    for (var i = 0; i < sends; i++)
                    {
                        Personal(day.AddHours(7 + (random.NextDouble() * 12)), random, output, to);
                    }
                }

                break;
            case "ticket_system":
                for (var t = from.AddMinutes(random.NextDouble() * 30); t < to; t = t.AddMinutes(15 + (random.NextDouble() * 45)))
                {
                    if (t.Hour is >= 7 and < 20 && (!Weekend(t) || random.Next(4) == 0))
                    {
                        Batch(world, random, t, output, Sample(random, 0.5, 1.0));
                    }
                }

                break;
            default: // mailing list: threads of posts
                for (var day = from; day < to; day = day.AddDays(1))
                {
                    var threads = random.Next(1, 5);
                    for (var i = 0; i < threads; i++)
                    {
                        var t = DiurnalTime(random, day);
                        var posts = random.Next(2, 9);
                        for (var p = 0; p < posts && t < to; p++, t = t.AddMinutes(3 + (random.NextDouble() * 40)))
                        {
                            Batch(world, random, t, output, _members);
                        }
                    }
                }

                break;
        }
    }

    private string[] Sample(Random random, double min, double max)
    {
        var share = min + ((max - min) * random.NextDouble());
        return [.. _members.Where(_ => random.NextDouble() < share)];
    }

    private void Batch(World world, Random random, DateTimeOffset start, List<SessionScript> output, string[] recipients)
    {
        var steps = new List<Step>(recipients.Length + 16);
        Greet(steps, random, _kind.Replace('_', '-') + Index.ToString(CultureInfo.InvariantCulture) + ".lists.example", tls: true);
        steps.Add(new Step(StepKind.Auth, Ms(random, 1, 5), _account.Name, _account.Password, "PLAIN"));

        // At most 100 recipients a transaction (the server's limit; an MTA splits the rest).
        for (var i = 0; i < recipients.Length; i += 100)
        {
            var size = 6000 + random.Next(30_000);
            Message(steps, random, _account.Name, recipients.Skip(i).Take(100), size, 1, 4);
        }

        steps.Add(new Step(StepKind.Quit, Ms(random, 1, 5)));
        output.Add(Script(random, _ip, ListenerRole.Submission, start, steps, recipients.All(r => !IsLocal(world, r) || world.MailboxSet.Contains(r))));
    }

    // A newsletter: one message per subscriber, about 12 a minute (never past 14), 60 messages per connection.
    private void Personal(DateTimeOffset start, Random random, List<SessionScript> output, DateTimeOffset end)
    {
        var t = start;
        for (var i = 0; i < _members.Length && t < end; i += 60)
        {
            var steps = new List<Step>(300);
            Greet(steps, random, "news" + Index.ToString(CultureInfo.InvariantCulture) + ".lists.example", tls: true);
            steps.Add(new Step(StepKind.Auth, Ms(random, 1, 5), _account.Name, _account.Password, "PLAIN"));
            var chunk = _members.Skip(i).Take(60).ToList();
            foreach (var member in chunk)
            {
                steps.Add(new Step(StepKind.Mail, TimeSpan.FromMilliseconds(4200 + random.Next(1600)), _account.Name, Size: 20_000));
                steps.Add(new Step(StepKind.Rcpt, Ms(random, 1, 5), member));
                steps.Add(new Step(StepKind.Data, Ms(random, 1, 5), Size: 20_000 + random.Next(4000)));
            }

            steps.Add(new Step(StepKind.Quit, Ms(random, 1, 5)));
            output.Add(Script(random, _ip, ListenerRole.Submission, t, steps));
            t = t.AddMinutes((chunk.Count * 5 / 60.0) + 0.2);
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
                Greet(steps, random, "mx" + Index.ToString(CultureInfo.InvariantCulture) + ".relay.example", tls: random.Next(10) < 8);
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

                Message(steps, random, ExternalAddress(random, world.Vocabulary), recipients, MessageSize(random));
                steps.Add(new Step(StepKind.Quit, Ms(random, 1, 5)));
                output.Add(Script(random, _ip, ListenerRole.Mx, start, steps, wellBehaved));
            }
        }
    }

    private static string Typo(Random random, string local) => local.Length < 2 ? local + "x" : local[..^1] + (char)('a' + random.Next(26));
}

/// <summary>
/// Another provider's MTA on the MX without sending mail: sender-verification callouts (MAIL FROM:&lt;&gt;,
/// one RCPT for the local address that claimed to send it mail, QUIT — no DATA), and backscatter
/// (bounces, from the null sender, of spam that forged local senders: mostly addresses that never
/// existed). Both come in bursts when a spammer forges the local domain (a joe job).
/// </summary>
internal sealed class RemoteVerifier : Entity
{
    private readonly IPAddress _ip;
    private readonly string _kind;
    private readonly double _perDay;
    private readonly (DateTimeOffset From, DateTimeOffset To)[] _joeJobs;

    public RemoteVerifier(int index, string kind, IPAddress ip, double perDay, (DateTimeOffset, DateTimeOffset)[] joeJobs)
        : base(index, Behaviour.Benign)
    {
        _kind = kind;
        _ip = ip;
        _perDay = perDay;
        _joeJobs = joeJobs;
    }

    public override void Plan(World world, DateTimeOffset from, DateTimeOffset to, Random random, List<SessionScript> output)
    {
        var helo = "mta" + Index.ToString(CultureInfo.InvariantCulture) + "." + Pick(random, world.Vocabulary.ExternalDomains);
        var perDay = _kind == "callout" ? _perDay : _perDay * 0.1;
        for (var day = from; day < to; day = day.AddDays(1))
        {
            var count = (int)(perDay * (0.6 + (0.8 * random.NextDouble())));
            for (var i = 0; i < count; i++)
            {
                Add(world, random, DiurnalTime(random, day), helo, forged: random.Next(100) < 10, output, from, to);
            }
        }

        foreach (var (jf, jt) in _joeJobs)
        {
            var a = jf > from ? jf : from;
            var b = jt < to ? jt : to;
            if (a >= b)
            {
                continue;
            }

            // During a joe job: the forged senders' bounces and verifications arrive all through it.
            var count = (int)(_perDay * 0.5 * (b - a).TotalHours / 4);
            for (var i = 0; i < count; i++)
            {
                Add(world, random, a + ((b - a) * random.NextDouble()), helo, forged: random.Next(100) < 85, output, from, to);
            }
        }
    }

    private void Add(World world, Random random, DateTimeOffset start, string helo, bool forged, List<SessionScript> output, DateTimeOffset from, DateTimeOffset to)
    {
        if (start < from || start >= to)
        {
            return;
        }

        var domain = Pick(random, world.Domains);
        var recipient = forged
            ? RandomLocal(random) + "@" + domain
            : Pick(random, world.Mailboxes);
        var steps = new List<Step>(8);
        Greet(steps, random, helo, tls: random.Next(2) == 0);
        steps.Add(new Step(StepKind.Mail, Ms(random, 5, 40), "", Size: 0));
        steps.Add(new Step(StepKind.Rcpt, Ms(random, 5, 40), recipient));
        if (_kind == "backscatter")
        {
            steps.Add(new Step(StepKind.Data, Ms(random, 5, 40), Size: 2000 + random.Next(4000)));
        }

        steps.Add(new Step(StepKind.Quit, Ms(random, 1, 10)));
        output.Add(Script(random, _ip, ListenerRole.Mx, start, steps));
    }

    // What a spammer forges: random-looking local parts, not a dictionary walk.
    private static string RandomLocal(Random random) => random.Next(3) switch
    {
        0 => new string([.. Enumerable.Range(0, 6 + random.Next(5)).Select(_ => (char)('a' + random.Next(26)))]),
        1 => new string([.. Enumerable.Range(0, 4 + random.Next(4)).Select(_ => (char)('a' + random.Next(26)))]) + random.Next(10, 9999).ToString(CultureInfo.InvariantCulture),
        _ => "info" + random.Next(100, 999).ToString(CultureInfo.InvariantCulture),
    };
}
