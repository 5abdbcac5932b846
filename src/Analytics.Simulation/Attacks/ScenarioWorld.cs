using System.Globalization;
using System.Net;

namespace Analytics.Simulation.Attacks;

/// <summary>
/// The mail system every scenario attacks: one local domain whose 1,000 dictionary names hide 100
/// real mailboxes, a few hundred accounts with known passwords, and the legitimate population's own
/// accounts and addresses. Built from a seed, so a run can be repeated exactly.
/// </summary>
public sealed class ScenarioWorld
{
    public const string Domain = "example.test";
    public const string LegitPassword = "correct horse battery staple";

    /// <summary>PBKDF2 iterations of every seeded hash (and of the server's dummy hash). Lowered from
    /// the production 210,000 so hundreds of AUTH attempts take seconds, not minutes; the defenses
    /// under test count attempts, they do not depend on hash cost.</summary>
    public const int Pbkdf2Iterations = 1_000;

    public ScenarioWorld(int seed)
    {
        Seed = seed;
        var random = new Random(seed);
        ProbeNames = BuildDictionary();
        ValidMailboxes = ProbeNames.OrderBy(_ => random.Next()).Take(100).ToHashSet(StringComparer.Ordinal);

        // Accounts: the first 300 dictionary names that are mailboxes or not; the valid mailboxes are accounts too.
        Accounts = [];
        foreach (var name in ProbeNames.Where((_, i) => i % 3 == 0).Concat(ValidMailboxes).Distinct().Take(400))
        {
            Accounts[name + "@" + Domain] = "pw-" + random.Next(100_000, 999_999).ToString(CultureInfo.InvariantCulture) + "-" + name;
        }

        LegitUsers = [.. Enumerable.Range(1, 5).Select(i => string.Create(CultureInfo.InvariantCulture, $"staff.member{i}@{Domain}"))];
        LegitUserIps = [.. Enumerable.Range(1, 5).Select(i => IPAddress.Parse(string.Create(CultureInfo.InvariantCulture, $"127.10.0.{i}")))];
        LegitRelayIps = [IPAddress.Parse("127.11.0.1"), IPAddress.Parse("127.11.0.2")];
    }

    public int Seed { get; }

    /// <summary>1,000 local parts in dictionary order: role accounts, first names, first.last.</summary>
    public IReadOnlyList<string> ProbeNames { get; }

    /// <summary>The 100 probe names that are real mailboxes.</summary>
    public IReadOnlySet<string> ValidMailboxes { get; }

    /// <summary>Seeded accounts (address → password), the targets of the AUTH attacks.</summary>
    public Dictionary<string, string> Accounts { get; }

    public IReadOnlyList<string> LegitUsers { get; }

    public IReadOnlyList<IPAddress> LegitUserIps { get; }

    /// <summary>Inbound relays delivering to local mailboxes on MX.</summary>
    public IReadOnlyList<IPAddress> LegitRelayIps { get; }

    public IEnumerable<IPAddress> LegitIps => LegitUserIps.Concat(LegitRelayIps);

    /// <summary>Mailbox lines for the recipient directory: the domain, the valid names, the legitimate users.</summary>
    public IEnumerable<string> DirectoryLines =>
        new[] { "@" + Domain }.Concat(ValidMailboxes.Select(n => n + "@" + Domain)).Concat(LegitUsers);

    /// <summary>Addresses a.b.c.1.. in one /24 per network, spread evenly (a botnet's handful of networks).</summary>
    public static List<IPAddress> Spread(int count, IReadOnlyList<string> networks)
    {
        var list = new List<IPAddress>(count);
        for (var i = 0; i < count; i++)
        {
            var net = networks[i % networks.Count];
            list.Add(IPAddress.Parse(string.Create(CultureInfo.InvariantCulture, $"{net}.{1 + (i / networks.Count)}")));
        }

        return list;
    }

    private static List<string> BuildDictionary()
    {
        string[] roles = ["abuse", "accounts", "admin", "billing", "contact", "hello", "help", "hr", "info", "jobs", "marketing", "office", "sales", "support"];
        string[] first =
        [
            "aaron", "adam", "alan", "alex", "alice", "amanda", "amy", "andrea", "andrew", "angela", "anna", "anne", "anthony", "arthur", "ashley",
            "barbara", "ben", "betty", "bob", "brenda", "brian", "bruce", "carl", "carol", "charles", "chris", "cindy", "claire", "daniel", "david",
            "deborah", "dennis", "diana", "donald", "donna", "edward", "elena", "emily", "emma", "eric", "frank", "gary", "george", "grace", "helen",
            "henry", "jack", "james", "jane", "jason", "jeff", "jennifer", "jessica", "john", "joseph", "julia", "karen", "kate", "kevin", "laura",
            "linda", "lisa", "lucy", "maria", "mark", "mary", "matthew", "michael", "nancy", "nicole", "olivia", "paul", "peter", "rachel", "robert",
            "rose", "ryan", "sarah", "scott", "sophia", "steven", "susan", "thomas", "victoria", "william", "zoe",
        ];
        string[] last = ["adams", "baker", "brown", "clark", "davis", "evans", "green", "hall", "jones", "king", "lee", "miller", "smith", "taylor", "white", "young"];
        var names = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var r in roles)
        {
            names.Add(r);
        }

        foreach (var f in first)
        {
            names.Add(f);
        }

        for (var i = 0; names.Count < 1000; i++)
        {
            var f = first[i % first.Length];
            var l = last[(i / first.Length) % last.Length];
            names.Add((i / (first.Length * last.Length)) % 2 == 0 ? f + "." + l : f[0] + l);
        }

        return [.. names];
    }
}
