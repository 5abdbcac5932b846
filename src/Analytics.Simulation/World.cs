using System.Globalization;
using System.Net;

namespace Analytics.Simulation;

/// <summary>A submission account: its address (also its mailbox) and its one password.</summary>
public sealed record Account(string Name, string Password);

/// <summary>
/// Hands out client addresses in 127.0.0.0/8 (so live mode can bind to them), never the same twice:
/// 127.1-99.x.y for consumers and legitimate servers, 127.100-254.x.y for bots. Each call either stays
/// in the current /24 or opens a new one, so "one network" and "many networks" both exist.
/// </summary>
internal sealed class AddressAllocator
{
    private int _next;
    private readonly int _first;
    private readonly int _last;

    public AddressAllocator(int firstSecondOctet, int lastSecondOctet)
    {
        _first = firstSecondOctet;
        _last = lastSecondOctet;
        _next = 0;
    }

    /// <summary>The next address; <paramref name="newNetwork"/> skips to a fresh /24 first.</summary>
    public IPAddress Next(bool newNetwork)
    {
        if (newNetwork && _next % 254 != 0)
        {
            _next += 254 - (_next % 254);
        }

        var n = _next++;
        var host = (n % 254) + 1;
        var network = n / 254;
        var second = _first + (network / 256);
        if (second > _last)
        {
            throw new InvalidOperationException("The simulation ran out of loopback addresses; make the scenario smaller.");
        }

        return new IPAddress([127, (byte)second, (byte)(network % 256), (byte)host]);
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

    public Dictionary<string, Account> AccountsByName { get; } = new(StringComparer.Ordinal);

    internal List<Models.Entity> Entities { get; } = [];

    public List<EntityLabel> Labels { get; } = [];

    public int EntityCount => Entities.Count;

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
