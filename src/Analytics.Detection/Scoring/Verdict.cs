namespace Analytics.Detection.Scoring;

/// <summary>What the scorer concluded about one entity at one time.</summary>
public sealed record Verdict(
    DateTime ScoredAt,
    string EntityKind,
    string Entity,
    string Class,
    float Score,
    IReadOnlyDictionary<string, float> Probabilities,
    float Anomaly,
    bool Anomalous,
    bool Flagged,
    IReadOnlyList<string> Reasons,
    string ModelVersion)
{
    public string Explanation => Reasons.Count == 0 ? (Flagged ? Class : "normal") : string.Join("; ", Reasons);
}

/// <summary>Receives each scoring pass's verdicts in-process (the limit policy listens here).</summary>
public interface IVerdictListener
{
    void OnVerdicts(IReadOnlyList<Verdict> verdicts);
}
