using System.Globalization;
using System.Net;

namespace Analytics.Simulation;

/// <summary>A submission account: its address (also its mailbox) and its one password.</summary>
public sealed record Account(string Name, string Password);

/// <summary>
/// Hands out client addresses in 127.0.0.0/8 (so live mode can bind to them), never the same twice:
/// 127.1-99.x.y for people, offices, mobile carriers and legitimate servers, 127.100-254.x.y for
/// bot-only networks. A bot may also take a free address inside a network people use (a residential
/// proxy), so "the /24 is clean" is not a given.
/// </summary>
internal sealed class AddressSpace
{
    private const int PeopleFirst = 1;
    private const int PeopleLast = 99;
    private const int BotsFirst = 100;
    private const int BotsLast = 254;

    private readonly Dictionary<int, HashSet<int>> _used = [];
    private readonly List<int> _peopleNetworks = [];
    private int _nextPeople = PeopleFirst * 256;
    private int _nextBots = BotsFirst * 256;

    /// <summary>A fresh /24 (as second*256 + third octet) in the people's or the bots' range.</summary>
    public int NewNetwork(bool bots)
    {
        var network = bots ? _nextBots++ : _nextPeople++;
        if (network / 256 > (bots ? BotsLast : PeopleLast))
        {
            throw new InvalidOperationException("The simulation ran out of loopback addresses; make the scenario smaller.");
        }

        _used[network] = [];
        if (!bots)
        {
            _peopleNetworks.Add(network);
        }

        return network;
    }

    /// <summary>An unused address in <paramref name="network"/>, the lowest free one unless a random source is given.</summary>
    public IPAddress In(int network, Random? random = null)
    {
        var used = _used[network];
        if (used.Count >= 254)
        {
            throw new InvalidOperationException("A simulated /24 is full.");
        }

        var host = random is null ? 1 : 1 + random.Next(254);
        while (used.Contains(host))
        {
            host = host % 254 + 1;
        }

        used.Add(host);
        return new IPAddress([127, (byte)(network / 256), (byte)(network % 256), (byte)host]);
    }

    /// <summary>The next address: in the last network handed out, or a fresh one.</summary>
    public IPAddress Next(bool bots, bool newNetwork)
    {
        var last = bots ? _nextBots - 1 : _nextPeople - 1;
        if (newNetwork || !_used.TryGetValue(last, out var used) || used.Count >= 254)
        {
            last = NewNetwork(bots);
        }

        return In(last);
    }

    /// <summary>A free address in a random network people already use (a residential proxy's exit).</summary>
    public IPAddress AmongPeople(Random random)
    {
        for (var attempt = 0; attempt < 20 && _peopleNetworks.Count > 0; attempt++)
        {
            var network = _peopleNetworks[random.Next(_peopleNetworks.Count)];
            if (_used[network].Count < 200)
            {
                return In(network, random);
            }
        }

        return In(NewNetwork(bots: false), random);
    }
}

/// <summary>
/// Everything the simulation acts in and on: the server's local domains and mailboxes, its accounts
/// (with passwords), and the entities of every population with their ground-truth labels. Built from
/// the scenario's seed alone.
/// </summary>
public sealed class World
{
    internal World(Scenario scenario, DateTimeOffset start)
    {
        Scenario = scenario;
        Start = start;
        End = start.AddDays(scenario.Days);
    }

    public Scenario Scenario { get; }

    public DateTimeOffset Start { get; }

    public DateTimeOffset End { get; }

    public List<string> Domains { get; } = [];

    /// <summary>Every valid local mailbox (users' own included), lower-case.</summary>
    public List<string> Mailboxes { get; } = [];

    public HashSet<string> MailboxSet { get; } = new(StringComparer.Ordinal);

    public List<Account> Accounts { get; } = [];

    internal Vocabulary Vocabulary { get; init; } = Vocabulary.A;

    public Dictionary<string, Account> AccountsByName { get; } = new(StringComparer.Ordinal);

    internal List<Models.Entity> Entities { get; } = [];

    public List<EntityLabel> Labels { get; } = [];

    public int EntityCount => Entities.Count;

    /// <summary>Outside addresses known to exist: people's correspondents, list members.</summary>
    internal HashSet<string> KnownExternal { get; } = new(StringComparer.Ordinal);

    /// <summary>Outside addresses in people's address books whose mailboxes are gone (stale address books).</summary>
    internal HashSet<string> GoneExternal { get; } = new(StringComparer.Ordinal);

    /// <summary>
    /// Whether mail to the address is delivered: local mailboxes and known outside correspondents are,
    /// correspondents who have left are not; of the outside addresses nobody corresponds with (what spam goes to), four in ten do not exist.
    /// </summary>
    public bool Deliverable(string address)
    {
        if (MailboxSet.Contains(address) || KnownExternal.Contains(address))
        {
            return true;
        }

        if (GoneExternal.Contains(address))
        {
            return false;
        }

        // FNV-1a: a stable answer per address, whatever the process.
        var hash = 2166136261u;
        foreach (var c in address)
        {
            hash = (hash ^ c) * 16777619u;
        }

        return hash % 100 >= 40;
    }

    internal void AddMailbox(string address)
    {
        if (MailboxSet.Add(address))
        {
            Mailboxes.Add(address);
        }
    }

    internal Account AddAccount(string name, string password)
    {
        var account = new Account(name, password);
        Accounts.Add(account);
        AccountsByName[name] = account;
        AddMailbox(name);
        return account;
    }

    internal static string Campaign(string kind, int index) => kind + "-" + index.ToString("D3", CultureInfo.InvariantCulture);
}
