namespace Analytics.Detection.Model;

/// <summary>What the classifier tells apart. Spraying and stuffing are brute force for enforcement.</summary>
public static class ThreatClass
{
    public const string Benign = "benign";
    public const string Harvester = "harvester";
    public const string BruteForce = "brute_force";
    public const string Compromised = "compromised";

    public static IReadOnlyList<string> All { get; } = [Benign, Harvester, BruteForce, Compromised];

    /// <summary>Maps a ground-truth label (simulation or review) to the class the model learns.</summary>
    public static string FromLabel(string label) => label switch
    {
        "harvester" or "harvest" => Harvester,
        "brute_force" or "spraying" or "stuffing" or "credential_stuffing" or "password_spraying" => BruteForce,
        "compromised" => Compromised,
        _ => Benign,
    };
}
