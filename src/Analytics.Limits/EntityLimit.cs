namespace Analytics.Limits;

/// <summary>The three kinds of entity a limit can be set on.</summary>
public static class EntityKinds
{
    public const string User = "user";
    public const string Ip = "ip";
    public const string Net = "net";

    public static bool IsValid(string kind) => kind is User or Ip or Net;
}

/// <summary>An entity a limit applies to: an account, a client IP, or a network (a.b.c.0/24, x:x:x:x::/64).</summary>
public readonly record struct EntityRef(string Kind, string Name)
{
    /// <summary>Parses <c>user:alice@example.org</c>, <c>ip:127.1.2.3</c>, <c>net:127.1.2.0/24</c>, or a bare address/IP/network.</summary>
    public static bool TryParse(string text, out EntityRef entity)
    {
        entity = default;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        text = text.Trim();
        var colon = text.IndexOf(':', StringComparison.Ordinal);
        if (colon > 0 && EntityKinds.IsValid(text[..colon]))
        {
            entity = new EntityRef(text[..colon], text[(colon + 1)..].ToLowerInvariant());
            return entity.Name.Length > 0;
        }

        if (text.Contains('@', StringComparison.Ordinal))
        {
            entity = new EntityRef(EntityKinds.User, text.ToLowerInvariant());
            return true;
        }

        if (text.Contains('/', StringComparison.Ordinal))
        {
            entity = new EntityRef(EntityKinds.Net, text.ToLowerInvariant());
            return true;
        }

        if (System.Net.IPAddress.TryParse(text, out var ip))
        {
            entity = new EntityRef(EntityKinds.Ip, (ip.IsIPv4MappedToIPv6 ? ip.MapToIPv4() : ip).ToString());
            return true;
        }

        return false;
    }

    public override string ToString() => Kind + ":" + Name;
}

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

    /// <summary>Messages a minute (MAIL FROM).</summary>
    public double? MessagesPerMinute { get; init; }

    /// <summary>Recipients an hour (RCPT TO), all recipients.</summary>
    public double? RecipientsPerHour { get; init; }

    /// <summary>Distinct recipients an hour.</summary>
    public double? DistinctRecipientsPerHour { get; init; }

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
        && RecipientsPerHour is null && DistinctRecipientsPerHour is null && RecipientsPerMessage is null && Tarpit == TimeSpan.Zero;
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
