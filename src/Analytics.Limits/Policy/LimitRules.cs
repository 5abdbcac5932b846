using System.Globalization;

namespace Analytics.Limits;

/// <summary>An entity's standing with the policy: the limit in force (null: normal) and how often it was limited before.</summary>
public readonly record struct EntityStanding(EntityLimit? Current, int Strikes);

/// <summary>
/// What a verdict does: <see cref="Limit"/> is the new limit; <see cref="Recorded"/> says whether it is
/// a change to record (false: the same level renewed in memory only); <see cref="Strike"/> counts a
/// new offence (the entity went from below throttle to throttle or block).
/// </summary>
internal sealed record LimitChange(EntityLimit Limit, bool Recorded, bool Strike);

/// <summary>
/// The policy as pure decisions: a verdict, the entity's standing and the time in, a limit change
/// out; no I/O, no lock, no clock of its own. Escalation is immediate; coming back down is not: a
/// limit holds until its expiry and then steps down one level at a time (block → throttle → watch →
/// normal), renewed by every new flag, so a bot pausing between bursts does not flap in and out. An
/// entity limited before steps straight to block. Overrides win until they expire or are released.
/// Limits carry version 0 here; the policy stamps versions when it records them.
/// </summary>
internal sealed class LimitRules
{
    private readonly DynamicLimitOptions _options;

    public LimitRules(DynamicLimitOptions options) => _options = options;

    /// <summary>What a verdict does to the entity, or null when it changes nothing.</summary>
    public LimitChange? OnVerdict(Verdict verdict, EntityStanding standing, DateTime now)
    {
        if (!verdict.Flagged)
        {
            return null;
        }

        var current = standing.Current;
        if (current is { Source: LimitSource.Override } && (current.ExpiresAt is null || current.ExpiresAt > now))
        {
            return null;
        }

        var level = verdict.Score >= _options.BlockScore ? LimitLevel.Block
            : verdict.Score >= _options.ThrottleScore ? LimitLevel.Throttle
            : LimitLevel.Watch;
        if (level == LimitLevel.Throttle && standing.Strikes > 0 && (current is null || current.Level < LimitLevel.Throttle))
        {
            // Limited before, and back at it: no second grace period.
            level = LimitLevel.Block;
        }

        if (current is not null && current.Level > level)
        {
            // Never step down on a weaker verdict: only expiry lowers a limit.
            return null;
        }

        if (current is not null && current.Level == level)
        {
            // Same level: the hold is renewed; the record keeps the reason it was set for.
            return new LimitChange(current with { ExpiresAt = now + Hold(level) }, Recorded: false, Strike: false);
        }

        var reason = $"{verdict.Class.ToText()} {verdict.Score.ToString("0.00", CultureInfo.InvariantCulture)}: {verdict.Explanation}";
        var limit = Build(verdict.Entity, verdict.Class, level, now, reason, verdict.ModelVersion);
        var strike = level >= LimitLevel.Throttle && (current is null || current.Level < LimitLevel.Throttle);
        return new LimitChange(limit, Recorded: true, strike);
    }

    /// <summary>The next step down for an expired limit, or null while it holds (or never expires).</summary>
    public EntityLimit? Decay(EntityLimit limit, DateTime now)
    {
        if (limit.ExpiresAt is not { } expires || expires > now)
        {
            return null;
        }

        var reason = limit.Reason.StartsWith("decay: ", StringComparison.Ordinal) ? limit.Reason : "decay: " + limit.Reason;
        return limit.Source == LimitSource.Override
            ? Normal(limit.Entity, "override expired", limit.SetBy, now)
            : limit.Level switch
            {
                LimitLevel.Block => Build(limit.Entity, limit.Class, LimitLevel.Throttle, now, reason, limit.SetBy),
                LimitLevel.Throttle => Build(limit.Entity, limit.Class, LimitLevel.Watch, now, reason, limit.SetBy),
                _ => Normal(limit.Entity, "decay: back to normal", limit.SetBy, now),
            };
    }

    /// <summary>The limit a reviewer's (or operator's) override sets.</summary>
    public static EntityLimit FromOverride(LimitOverride change, DateTime now)
    {
        var normal = Normal(change.Entity, change.Reason, change.Actor, now);
        return change.Kind switch
        {
            OverrideKind.Release => normal,
            OverrideKind.Allow => normal with { Source = LimitSource.Override, ExpiresAt = change.ExpiresAt },
            OverrideKind.Block => normal with
            {
                Source = LimitSource.Override,
                Level = LimitLevel.Block,
                Blocked = true,
                AuthLocked = true,
                ExpiresAt = change.ExpiresAt,
            },
            _ => normal with
            {
                Source = LimitSource.Override,
                Level = LimitLevel.Throttle,
                MessagesPerMinute = change.MessagesPerMinute,
                RecipientsPerHour = change.RecipientsPerHour,
                RecipientsPerMessage = change.RecipientsPerMessage,
                Tarpit = change.Tarpit ?? TimeSpan.Zero,
                ExpiresAt = change.ExpiresAt,
            },
        };
    }

    /// <summary>The limits for a class at a level, per kind of entity (see the README's policy table).</summary>
    public EntityLimit Build(EntityRef entity, ThreatClass cls, LimitLevel level, DateTime now, string reason, string setBy)
    {
        var limit = Normal(entity, reason, setBy, now) with
        {
            Level = level,
            Class = cls,
            Source = setBy == "rules" ? LimitSource.Rules : LimitSource.Model,
            ExpiresAt = now + Hold(level),
        };
        if (level == LimitLevel.Watch)
        {
            return limit;
        }

        var block = level == LimitLevel.Block;
        var host = entity.Kind.IsHost();
        return cls switch
        {
            ThreatClass.Harvester when host => limit with { Blocked = block, RecipientsPerHour = block ? null : 20, Tarpit = TimeSpan.FromSeconds(block ? 5 : 3) },
            ThreatClass.Harvester => limit with { Blocked = block, RecipientsPerHour = 30, RecipientsPerMessage = 10, Tarpit = TimeSpan.FromSeconds(2) },

            // An account under attack is a victim: slow AUTH against it, never lock its owner out.
            ThreatClass.BruteForce when host => limit with { AuthLocked = true, Blocked = block, Tarpit = TimeSpan.FromSeconds(block ? 5 : 3) },
            ThreatClass.BruteForce => limit with { Tarpit = TimeSpan.FromSeconds(2) },

            ThreatClass.Compromised => limit with { Blocked = block, MessagesPerMinute = 1, RecipientsPerHour = 20, RecipientsPerMessage = 5, Tarpit = TimeSpan.FromSeconds(2) },
            _ => limit with { Tarpit = TimeSpan.FromSeconds(1) },
        };
    }

    public static EntityLimit Normal(EntityRef entity, string reason, string setBy, DateTime now) => new()
    {
        Entity = entity,
        Level = LimitLevel.Normal,
        Source = LimitSource.Default,
        Reason = reason,
        SetBy = setBy,
        SetAt = now,
    };

    private TimeSpan Hold(LimitLevel level) => level switch
    {
        LimitLevel.Block => _options.BlockHold,
        LimitLevel.Throttle => _options.ThrottleHold,
        _ => _options.WatchHold,
    };
}
