namespace Analytics;

/// <summary>What the scorer concluded about one entity at one time.</summary>
/// <param name="Probabilities">Per class, by its text form (<see cref="ThreatClasses.ToText"/>), as the model card names them.</param>
public sealed record Verdict(
    DateTime ScoredAt,
    [property: System.Text.Json.Serialization.JsonIgnore] EntityRef Entity,
    ThreatClass Class,
    float Score,
    IReadOnlyDictionary<string, float> Probabilities,
    float Anomaly,
    bool Anomalous,
    bool Flagged,
    IReadOnlyList<string> Reasons,
    string ModelVersion)
{
    /// <summary>JSON (<c>score --json</c>, notebooks): the entity as two plain fields.</summary>
    [System.Text.Json.Serialization.JsonPropertyName("entity_kind")]
    public EntityKind EntityKind => Entity.Kind;

    [System.Text.Json.Serialization.JsonPropertyName("entity")]
    public string EntityName => Entity.Name;

    public string Explanation => Reasons.Count == 0 ? (Flagged ? Class.ToText() : "normal") : string.Join("; ", Reasons);
}

/// <summary>Receives each scoring pass's verdicts in-process (the limit policy listens here).</summary>
public interface IVerdictListener
{
    void OnVerdicts(IReadOnlyList<Verdict> verdicts);
}
