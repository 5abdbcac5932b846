namespace Analytics.Limits;

/// <summary>How hard an entity is held back; the policy moves between these with hysteresis.</summary>
public enum LimitLevel : byte
{
    Normal = 0,

    /// <summary>Watched: tighter rates, no user-visible change for normal behaviour.</summary>
    Watch = 1,

    /// <summary>Throttled: low rates, tarpit.</summary>
    Throttle = 2,

    /// <summary>Refused outright (AUTH locked, 550 5.7.1 / 554 5.7.1).</summary>
    Block = 3,
}

/// <summary>Where a limit came from. Overrides from the abuse team always win.</summary>
public enum LimitSource : byte
{
    Default = 0,
    Model = 1,
    Rules = 2,
    Override = 3,
}

/// <summary>
/// The limits in force for one entity. Null rates mean "no limit beyond the defaults". A limit is a
/// record: changes create a new one (with a higher version), so the book can swap snapshots.
/// </summary>
public sealed record EntityLimit
{
    public required EntityRef Entity { get; init; }

    public LimitLevel Level { get; init; }

    public LimitSource Source { get; init; }

    /// <summary>What the entity was limited for (benign for overrides and normal limits); picks the rates at each level.</summary>
    public ThreatClass Class { get; init; }

    /// <summary>Messages a minute (MAIL FROM).</summary>
    public double? MessagesPerMinute { get; init; }

    /// <summary>Recipients an hour (RCPT TO), all recipients.</summary>
    public double? RecipientsPerHour { get; init; }

    /// <summary>Recipients in one message.</summary>
    public int? RecipientsPerMessage { get; init; }

    /// <summary>AUTH refused with 454 4.7.0 (for a user: against it; for an IP/net: from it).</summary>
    public bool AuthLocked { get; init; }

    /// <summary>Every reply delayed by this much.</summary>
    public TimeSpan Tarpit { get; init; }

    /// <summary>Refused outright.</summary>
    public bool Blocked { get; init; }

    /// <summary>Why: the verdict's reasons, or the reviewer's words.</summary>
    public string Reason { get; init; } = "";

    /// <summary>Who set it: the model version, "rules", or the reviewer's name.</summary>
    public string SetBy { get; init; } = "";

    public DateTime SetAt { get; init; }

    /// <summary>When it lapses back to normal unless renewed (overrides may have none).</summary>
    public DateTime? ExpiresAt { get; init; }

    /// <summary>Monotonic version (ticks of SetAt, tie-broken): the newest wins on every node.</summary>
    public ulong Version { get; init; }

    public bool IsNormal => Level == LimitLevel.Normal && !Blocked && !AuthLocked && MessagesPerMinute is null
        && RecipientsPerHour is null && RecipientsPerMessage is null && Tarpit == TimeSpan.Zero;
}

/// <summary>What a reviewer can do to an entity's limits.</summary>
public enum OverrideKind
{
    /// <summary>Never limit (allowlist) until it expires: the model's verdicts are ignored.</summary>
    Allow,

    /// <summary>Set the given rates.</summary>
    Manual,

    /// <summary>Block until released.</summary>
    Block,

    /// <summary>Drop any override and any model limit: back to normal now.</summary>
    Release,
}

/// <summary>A change to apply on a reviewer's (or operator's) behalf.</summary>
public sealed record LimitOverride(EntityRef Entity, OverrideKind Kind, string Reason, string Actor, DateTime? ExpiresAt = null,
    double? MessagesPerMinute = null, double? RecipientsPerHour = null, int? RecipientsPerMessage = null, TimeSpan? Tarpit = null);

/// <summary>
/// The abuse team's and the operator's handle on limits. Changes take effect in this process's limit
/// book at once, are recorded with their reason in <c>limit_changes</c>, and reach other nodes through
/// the <c>limits</c> table.
/// </summary>
public interface ILimitControl
{
    Task<EntityLimit> ApplyAsync(LimitOverride change, CancellationToken cancellationToken = default);

    /// <summary>The limit in force now (normal when none).</summary>
    EntityLimit Current(EntityRef entity);

    /// <summary>The history of changes for an entity, newest first.</summary>
    Task<IReadOnlyList<EntityLimit>> HistoryAsync(EntityRef entity, int max = 50, CancellationToken cancellationToken = default);
}
