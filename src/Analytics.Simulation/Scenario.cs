using System.Reflection;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Analytics.Simulation;

/// <summary>
/// What to simulate: the world (domains, mailboxes, users) and the populations in it, over how many
/// days, from which seed. Shipped scenarios (<c>small</c>, <c>demo</c>, <c>train</c>) are embedded;
/// any JSON file of the same shape works. Every field has a default, so a file names only what it changes.
/// </summary>
public sealed record Scenario
{
    public string Name { get; init; } = "custom";

    /// <summary>Seeds every random choice: the same seed (and start) gives the same world and the same events.</summary>
    public int Seed { get; init; } = 1;

    /// <summary>Days of traffic. Default 1.</summary>
    public int Days { get; init; } = 1;

    /// <summary>Node name stamped on fast-mode events. Default <c>sim</c>.</summary>
    public string Node { get; init; } = "sim";

    /// <summary>Local domains the server is authoritative for (generated names). Default 2.</summary>
    public int LocalDomains { get; init; } = 2;

    /// <summary>Valid mailboxes per local domain, besides the users' own. Default 200.</summary>
    public int MailboxesPerDomain { get; init; } = 200;

    /// <summary>Ordinary users (also the pool compromised accounts are taken from). Default 50.</summary>
    public int Users { get; init; } = 50;

    /// <summary>Legitimate bulk senders: newsletters, ticket systems, mailing lists in turn (50–500 recipients a message, 1–5 % stale). Default 2.</summary>
    public int HeavySenders { get; init; } = 2;

    /// <summary>
    /// Word lists the world is made of: <c>a</c> or <c>b</c> (people's names, local and outside
    /// domains, mailbox and password styles, the attackers' password list and dictionaries, bots'
    /// EHLO names). The two share nothing. Default a.
    /// </summary>
    public string Vocabulary { get; init; } = "a";

    /// <summary>
    /// How people's addresses are laid out: <c>sparse</c> — each user alone in its own /24 with one to
    /// three fixed addresses; <c>pooled</c> — users share their ISP's /24s and the home address changes
    /// with every lease (a few days). Default sparse.
    /// </summary>
    public string Addresses { get; init; } = "sparse";

    /// <summary>
    /// Where bots' addresses come from: <c>clustered</c> — networks only bots use; <c>scattered</c> —
    /// most are free addresses inside networks people use (residential proxies). Default clustered.
    /// </summary>
    public string Botnets { get; init; } = "clustered";

    /// <summary>The hard legitimate populations besides ordinary users and bulk senders.</summary>
    public LegitimateMix Legitimate { get; init; } = new();

    public HarvesterMix Harvesters { get; init; } = new();

    public int BruteForcers { get; init; } = 1;

    public int Sprayers { get; init; } = 1;

    public int Stuffers { get; init; } = 1;

    /// <summary>Credential stuffing with one attempt per address, the addresses in random networks, over one to three days.</summary>
    public int ScatteredStuffers { get; init; }

    /// <summary>Password spraying spread over days, one account every few minutes from rotating addresses.</summary>
    public int SlowSprayers { get; init; }

    /// <summary>Ordinary users whose account is taken over during the run (a spam run).</summary>
    public int Compromised { get; init; } = 1;

    /// <summary>Ordinary users whose account is taken over quietly: a few messages an hour, mostly to their own correspondents.</summary>
    public int StealthyCompromised { get; init; }


    /// <summary>Time the server spends on an AUTH (the password hash) in fast mode. Default 2 ms.</summary>
    public int AuthMilliseconds { get; init; } = 2;

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        WriteIndented = true,
    };

    public static IReadOnlyList<string> BuiltIn { get; } = ["small", "demo", "train", "eval"];

    /// <summary>A shipped scenario by name, or a JSON file by path.</summary>
    /// <exception cref="ArgumentException">Neither a shipped name nor a readable, valid file.</exception>
    public static Scenario Load(string nameOrPath)
    {
        string text;
        if (BuiltIn.Contains(nameOrPath, StringComparer.OrdinalIgnoreCase))
        {
            using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream($"Analytics.Simulation.Scenarios.{nameOrPath.ToLowerInvariant()}.json")
                ?? throw new InvalidOperationException($"Scenario resource {nameOrPath} is missing from the build.");
            using var reader = new StreamReader(stream);
            text = reader.ReadToEnd();
        }
        else if (File.Exists(nameOrPath))
        {
            text = File.ReadAllText(nameOrPath);
        }
        else
        {
            throw new ArgumentException($"'{nameOrPath}' is neither a shipped scenario ({string.Join(", ", BuiltIn)}) nor a file.");
        }

        return Parse(text, nameOrPath);
    }

    public static Scenario Parse(string json, string origin = "scenario")
    {
        Scenario? scenario;
        try
        {
            scenario = JsonSerializer.Deserialize<Scenario>(json, Json);
        }
        catch (JsonException ex)
        {
            throw new ArgumentException($"{origin}: {ex.Message}", ex);
        }

        scenario ??= new Scenario();
        var errors = scenario.Validate();
        return errors.Count == 0 ? scenario : throw new ArgumentException($"{origin}: " + string.Join("; ", errors));
    }

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        void Range(string name, int value, int min, int max)
        {
            if (value < min || value > max)
            {
                errors.Add($"{name} must be between {min} and {max} (is {value})");
            }
        }

        Range("days", Days, 1, 365);
        Range("localDomains", LocalDomains, 1, 1000);
        Range("mailboxesPerDomain", MailboxesPerDomain, 0, 1_000_000);
        Range("users", Users, 1, 1_000_000);
        Range("heavySenders", HeavySenders, 0, 10_000);
        Range("harvesters.fast", Harvesters.Fast, 0, 10_000);
        Range("harvesters.lowAndSlow", Harvesters.LowAndSlow, 0, 10_000);
        Range("harvesters.distributed", Harvesters.Distributed, 0, 10_000);
        Range("harvesters.submission", Harvesters.Submission, 0, 10_000);
        Range("bruteForcers", BruteForcers, 0, 10_000);
        Range("sprayers", Sprayers, 0, 10_000);
        Range("stuffers", Stuffers, 0, 10_000);
        Range("scatteredStuffers", ScatteredStuffers, 0, 10_000);
        Range("slowSprayers", SlowSprayers, 0, 10_000);
        Range("harvesters.sparse", Harvesters.Sparse, 0, 10_000);
        Range("compromised + stealthyCompromised", Compromised + StealthyCompromised, 0, Users);
        if (Vocabulary is not ("a" or "b"))
        {
            errors.Add($"vocabulary must be a or b (is {Vocabulary})");
        }

        if (Addresses is not ("sparse" or "pooled"))
        {
            errors.Add($"addresses must be sparse or pooled (is {Addresses})");
        }

        if (Botnets is not ("clustered" or "scattered"))
        {
            errors.Add($"botnets must be clustered or scattered (is {Botnets})");
        }

        foreach (var size in Legitimate.Offices)
        {
            Range("legitimate.offices[]", size, 2, 2000);
        }

        Range("legitimate.mobileUsers", Legitimate.MobileUsers, 0, 1_000_000);
        Range("legitimate.mobileAddresses", Legitimate.MobileAddresses, 1, 10_000);
        Range("legitimate.newSenders", Legitimate.NewSenders, 0, 1_000_000);
        Range("legitimate.travellers", Legitimate.Travellers, 0, Users);
        Range("legitimate.calloutServers", Legitimate.CalloutServers, 0, 10_000);
        Range("legitimate.backscatterServers", Legitimate.BackscatterServers, 0, 10_000);
        Range("legitimate.staleAddressBooks", Legitimate.StaleAddressBooks, 0, 100);
        Range("authMilliseconds", AuthMilliseconds, 0, 10_000);
        if (string.IsNullOrWhiteSpace(Node))
        {
            errors.Add("node must not be empty");
        }

        return errors;
    }
}

/// <summary>How many directory-harvest campaigns of each variant.</summary>
public sealed record HarvesterMix
{
    /// <summary>One IP, back-to-back sessions, many RCPTs each (hits the per-session defenses).</summary>
    public int Fast { get; init; } = 1;

    /// <summary>One IP, a few RCPTs per session, sessions far apart (stays under per-session limits).</summary>
    public int LowAndSlow { get; init; } = 1;

    /// <summary>Many IPs over many /24 networks, each a few short sessions.</summary>
    public int Distributed { get; init; } = 1;

    /// <summary>An authenticated account probing local mailboxes through submission.</summary>
    public int Submission { get; init; }

    /// <summary>A big botnet over days, each address one probe a day: nothing per address stands out.</summary>
    public int Sparse { get; init; }
}

/// <summary>The legitimate populations that look most like attacks, each labelled with its own variant.</summary>
public sealed record LegitimateMix
{
    /// <summary>Offices (users in each) whose staff share one NAT address on working hours; one phone in each keeps a stale password.</summary>
    public int[] Offices { get; init; } = [];

    /// <summary>Mobile users behind a carrier's CGNAT: a different shared address almost every session.</summary>
    public int MobileUsers { get; init; }

    /// <summary>Addresses of the carrier's CGNAT pool the mobile users share. Default 16.</summary>
    public int MobileAddresses { get; init; } = 16;

    /// <summary>Accounts that start sending partway through the run: no history at all.</summary>
    public int NewSenders { get; init; }

    /// <summary>Ordinary users who spend two to four days sending from a hotel's network.</summary>
    public int Travellers { get; init; }

    /// <summary>Other providers' MTAs verifying senders on the MX (RCPT without DATA).</summary>
    public int CalloutServers { get; init; }

    /// <summary>
    /// Percent of people (in every legitimate population) whose address book holds correspondents who have
    /// since left: 10–40 % of their outside contacts no longer exist, so some of their ordinary mail
    /// bounces (5.1.1) from their usual address and client, day after day.
    /// </summary>
    public int StaleAddressBooks { get; init; }

    /// <summary>Other providers' MTAs bouncing spam that forged local senders back to the MX (mostly unknown recipients).</summary>
    public int BackscatterServers { get; init; }
}
