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

    /// <summary>Legitimate bulk senders: newsletters, ticket systems. Default 2.</summary>
    public int HeavySenders { get; init; } = 2;

    public HarvesterMix Harvesters { get; init; } = new();

    public int BruteForcers { get; init; } = 1;

    public int Sprayers { get; init; } = 1;

    public int Stuffers { get; init; } = 1;

    /// <summary>Ordinary users whose account is taken over during the run.</summary>
    public int Compromised { get; init; } = 1;

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

    public static IReadOnlyList<string> BuiltIn { get; } = ["small", "demo", "train"];

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
        Range("compromised", Compromised, 0, Users);
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
}
