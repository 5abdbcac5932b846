namespace Analytics;

/// <summary>What the classifier tells apart, what a reviewer confirms and what a limit is set for.</summary>
/// <remarks>
/// One list for detection, simulation labels, limits and the console. The text forms (<c>benign</c>,
/// <c>harvester</c>, <c>brute_force</c>, <c>compromised</c>) are what the tables and the model store.
/// Spraying and stuffing are brute force for enforcement; their variant names live in labels.
/// </remarks>
[System.Text.Json.Serialization.JsonConverter(typeof(ThreatClassJsonConverter))]
public enum ThreatClass : byte
{
    Benign = 0,
    Harvester = 1,
    BruteForce = 2,
    Compromised = 3,
}

public static class ThreatClasses
{
    public static IReadOnlyList<ThreatClass> All { get; } = [ThreatClass.Benign, ThreatClass.Harvester, ThreatClass.BruteForce, ThreatClass.Compromised];

    /// <summary>The classes a reviewer can confirm.</summary>
    public static IReadOnlyList<ThreatClass> Malicious { get; } = [ThreatClass.Harvester, ThreatClass.BruteForce, ThreatClass.Compromised];

    public static string ToText(this ThreatClass value) => value switch
    {
        ThreatClass.Benign => "benign",
        ThreatClass.Harvester => "harvester",
        ThreatClass.BruteForce => "brute_force",
        ThreatClass.Compromised => "compromised",
        _ => throw new ArgumentOutOfRangeException(nameof(value), value, "not a threat class"),
    };

    public static bool TryParse(string? text, out ThreatClass value)
    {
        switch (text)
        {
            case "benign":
                value = ThreatClass.Benign;
                return true;
            case "harvester":
                value = ThreatClass.Harvester;
                return true;
            case "brute_force":
                value = ThreatClass.BruteForce;
                return true;
            case "compromised":
                value = ThreatClass.Compromised;
                return true;
            default:
                value = ThreatClass.Benign;
                return false;
        }
    }

    public static ThreatClass Parse(string text) =>
        TryParse(text, out var value) ? value : throw new FormatException($"'{text}' is not a threat class (benign, harvester, brute_force, compromised).");

    /// <summary>Maps a ground-truth label or variant (simulation or review) to the class; anything unknown is benign.</summary>
    public static ThreatClass FromLabel(string? label) => label switch
    {
        "harvester" or "harvest" => ThreatClass.Harvester,
        "brute_force" or "spraying" or "stuffing" or "credential_stuffing" or "password_spraying" => ThreatClass.BruteForce,
        "compromised" => ThreatClass.Compromised,
        _ => ThreatClass.Benign,
    };
}
