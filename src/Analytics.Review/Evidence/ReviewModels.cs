namespace Analytics.Review.Evidence;

/// <summary>Review status of an entity: its latest review action, or open when there is none.</summary>
internal static class ReviewStatus
{
    public const string Open = "open";
    public const string Confirmed = "confirmed";
    public const string Dismissed = "dismissed";
    public const string Limited = "limited";
    public const string Released = "released";

    public static IReadOnlyList<string> All { get; } = [Open, Confirmed, Dismissed, Limited, Released];
}

internal sealed record QueueFilter(string? Class, string? Status, DateTime From, DateTime To, int Limit);

/// <summary>One flagged entity in the queue: its latest flagged verdict and its review status.</summary>
internal sealed record QueueItem(
    string Kind, string Entity, string Class, double Score, double Anomaly, DateTime FirstSeen, DateTime LastSeen,
    long Verdicts, string Explanation, string Status, DateTime? ReviewedAt);

internal sealed record QueuePage(DateTime From, DateTime To, IReadOnlyDictionary<string, long> CountsByClass, IReadOnlyList<QueueItem> Items);

internal sealed record VerdictRow(DateTime ScoredAt, string Class, double Score, double Anomaly, bool Flagged, IReadOnlyList<string> Reasons, string ModelVersion);

/// <summary>One measure in the window before the latest verdict against the entity's own usual hour.</summary>
internal sealed record BaselineRow(string Measure, double LastHour, double UsualHour);

internal sealed record MinutePoint(DateTime Minute, long Messages, long Recipients, long AuthFailures, long RejectedRcpts);

internal sealed record SessionEvent(DateTime Ts, string Kind, string Outcome, int ReplyCode, string Status, string User, string Sender, string Recipient, string Detail);

internal sealed record SessionSummary(ulong SessionId, string Role, string ClientIp, string User, DateTime Start, DateTime End, IReadOnlyList<SessionEvent> Events);

internal sealed record LimitView(
    string Level, string Source, bool Blocked, bool AuthLocked, double? MessagesPerMinute, double? RecipientsPerHour,
    int? RecipientsPerMessage, double TarpitSeconds, string Reason, string SetBy, DateTime SetAt, DateTime? ExpiresAt);

internal sealed record ActionRow(Guid Id, DateTime At, string Reviewer, string Action, string Class, string Reason, string Details);

internal sealed record EntityEvidence(
    string Kind, string Entity, string Status, IReadOnlyList<VerdictRow> Verdicts, IReadOnlyList<BaselineRow> Baseline,
    DateTime TimelineFrom, DateTime TimelineTo, IReadOnlyList<MinutePoint> Timeline, IReadOnlyList<SessionSummary> Sessions,
    LimitView Limit, IReadOnlyList<LimitView> LimitHistory, IReadOnlyList<ActionRow> Actions);
