using System.Text.Json;
using System.Text.Json.Serialization;
using Analytics.Limits;
using Analytics.Store;
using Microsoft.Extensions.Logging;

namespace Analytics.Review.Actions;

/// <summary>What a reviewer asks for. Rates apply to confirm (mode limit) and limit.</summary>
internal sealed record ActionRequest
{
    /// <summary>confirm, dismiss, limit or release.</summary>
    public string Action { get; init; } = "";

    /// <summary>user, ip or net.</summary>
    public string Kind { get; init; } = "";

    public string Entity { get; init; } = "";

    /// <summary>Required: why, in the reviewer's words; it goes to the audit trail and the limit.</summary>
    public string Reason { get; init; } = "";

    /// <summary>confirm: the class confirmed (default: the latest verdict's).</summary>
    public string? Class { get; init; }

    /// <summary>confirm: block (default) or limit.</summary>
    public string? Mode { get; init; }

    /// <summary>dismiss: allowlist for this many days (0 or absent: no allowlist, any model limit is released).</summary>
    public int? AllowlistDays { get; init; }

    public double? MessagesPerMinute { get; init; }

    public double? RecipientsPerHour { get; init; }

    public int? RecipientsPerMessage { get; init; }

    public double? TarpitSeconds { get; init; }

    /// <summary>limit, confirm with mode limit: the limit lapses after this many days (absent: until released).</summary>
    public int? Days { get; init; }
}

internal sealed record ActionResult(Guid Id, string Action, string Kind, string Entity, string Status, string? LabelClass, Evidence.LimitView Limit);

/// <summary>A request that cannot be carried out as asked; the message is for the reviewer.</summary>
internal sealed class ActionRefusedException : Exception
{
    public ActionRefusedException(string message) : base(message)
    {
    }

    public ActionRefusedException()
    {
    }

    public ActionRefusedException(string message, Exception innerException) : base(message, innerException)
    {
    }
}

/// <summary>
/// Carries out a reviewer's decision: the limit change through <see cref="ILimitControl"/> (so the
/// listener's book has it before the response), then the audit row, then — for confirmations and
/// dismissals of users and IPs — a training label (source <c>review</c>). Network entities get no
/// label: which of their IPs were bad is not known, and the trainer already spreads IP labels to
/// their networks.
/// </summary>
internal sealed partial class ReviewActions
{
    public const string LabelSource = "review";

    private const string InsertAction = """
        INSERT INTO review_actions (id, at, reviewer, action, entity_kind, entity, class, reason, details)
        VALUES ({id:UUID}, {at:DateTime64(3)}, {reviewer:String}, {action:String}, {kind:String}, {entity:String}, {class:String}, {reason:String}, {details:String})
        """;

    // Campaign 'review' for every review label: the latest decision on an entity replaces the previous
    // one (labels is a ReplacingMergeTree by created_at over (entity_kind, entity, campaign)).
    private const string InsertLabel = """
        INSERT INTO labels (entity_kind, entity, ip, class, campaign, variant, malicious_from, malicious_to, source, run_id, created_at)
        SELECT {kind:String}, {entity:String}, toIPv6({ip:String}), {class:String}, 'review', 'review',
               {from:Nullable(DateTime64(3))}, {to:Nullable(DateTime64(3))}, 'review', {run:String}, {at:DateTime64(3)}
        """;

    private const string FlaggedSpanSql = """
        SELECT min(scored_at) AS first, argMax(class, scored_at) AS class, count() AS verdicts
        FROM verdicts
        WHERE entity_kind = {kind:String} AND entity = {entity:String} AND flagged
        """;

    private static readonly string[] Known = ["confirm", "dismiss", "limit", "release"];

    private readonly IClickHouseStore _store;
    private readonly ILimitControl _limits;
    private readonly TimeProvider _time;
    private readonly ILogger<ReviewActions> _logger;

    public ReviewActions(IClickHouseStore store, ILimitControl limits, TimeProvider time, ILogger<ReviewActions> logger)
    {
        _store = store;
        _limits = limits;
        _time = time;
        _logger = logger;
    }

    public async Task<ActionResult> ApplyAsync(string reviewer, ActionRequest request, CancellationToken cancellationToken = default)
    {
        var action = request.Action?.Trim().ToLowerInvariant() ?? "";
        if (!Known.Contains(action))
        {
            throw new ActionRefusedException("The action must be confirm, dismiss, limit or release.");
        }

        if (!EntityKinds.TryParse(request.Kind?.Trim(), out var kind) || !EntityRef.TryCreate(kind, request.Entity ?? "", out var entity))
        {
            throw new ActionRefusedException("The entity must be a kind (user, ip, net) and a name.");
        }

        var reason = request.Reason?.Trim() ?? "";
        if (reason.Length < 3)
        {
            throw new ActionRefusedException("A reason is required (at least 3 characters): it goes to the audit trail.");
        }

        if (reason.Length > 2000)
        {
            throw new ActionRefusedException("The reason is longer than 2000 characters.");
        }

        var now = _time.GetUtcNow().UtcDateTime;
        var span = await FlaggedSpanAsync(entity, cancellationToken);
        string? labelClass = null;
        LimitOverride change;
        switch (action)
        {
            case "confirm":
                labelClass = string.IsNullOrWhiteSpace(request.Class) ? span.Class : request.Class.Trim().ToLowerInvariant();
                if (!ThreatClasses.TryParse(labelClass, out var confirmed) || confirmed == ThreatClass.Benign)
                {
                    throw new ActionRefusedException("Confirm needs the class being confirmed (harvester, brute_force, compromised, …); this entity has no flagged verdict to take it from.");
                }

                change = (request.Mode?.Trim().ToLowerInvariant() ?? "block") switch
                {
                    "block" => new LimitOverride(entity, OverrideKind.Block, reason, reviewer),
                    "limit" => Manual(entity, request, reason, reviewer, now),
                    _ => throw new ActionRefusedException("Confirm's mode must be block or limit."),
                };
                break;
            case "dismiss":
                labelClass = ThreatClass.Benign.ToText();
                change = request.AllowlistDays is > 0 and var days
                    ? new LimitOverride(entity, OverrideKind.Allow, reason, reviewer, now.AddDays(Math.Min(days, 3650)))
                    : new LimitOverride(entity, OverrideKind.Release, reason, reviewer);
                break;
            case "limit":
                change = Manual(entity, request, reason, reviewer, now);
                break;
            default:
                change = new LimitOverride(entity, OverrideKind.Release, reason, reviewer);
                break;
        }

        var limit = await _limits.ApplyAsync(change, cancellationToken);
        var id = Guid.NewGuid();
        var details = JsonSerializer.Serialize(new ActionDetails(change.Kind.ToString().ToLowerInvariant(), change.ExpiresAt, change.MessagesPerMinute,
            change.RecipientsPerHour, change.RecipientsPerMessage, change.Tarpit?.TotalSeconds, labelClass), ReviewJson.Default.ActionDetails);
        await _store.ExecuteAsync(InsertAction, QueryParameters.Of(
            ("id", id.ToString()), ("at", now), ("reviewer", reviewer), ("action", action), ("kind", entity.Kind.ToText()), ("entity", entity.Name),
            ("class", labelClass ?? ""), ("reason", reason), ("details", details)), cancellationToken);

        if (labelClass is not null && entity.Kind != EntityKind.Net)
        {
            // A confirmed label covers the flagged span (from an hour before the first flag: the
            // features look back an hour); a dismissal is benign without an interval.
            var malicious = labelClass != ThreatClass.Benign.ToText();
            await _store.ExecuteAsync(InsertLabel, QueryParameters.Of(
                ("kind", entity.Kind.ToText()), ("entity", entity.Name), ("ip", entity.Kind == EntityKind.Ip ? entity.Name : "::"), ("class", labelClass),
                ("from", malicious ? (span.First ?? now).AddHours(-1) : null), ("to", malicious ? now : null),
                ("run", "review:" + id.ToString("N")), ("at", now)), cancellationToken);
        }

        LogAction(_logger, reviewer, action, entity.ToString(), reason);
        return new ActionResult(id, action, entity.Kind.ToText(), entity.Name, Evidence.ReviewQueries.StatusOf(action), labelClass, Evidence.ReviewQueries.View(limit));
    }

    private static LimitOverride Manual(EntityRef entity, ActionRequest r, string reason, string reviewer, DateTime now)
    {
        if (r.MessagesPerMinute is null && r.RecipientsPerHour is null && r.RecipientsPerMessage is null && r.TarpitSeconds is null)
        {
            throw new ActionRefusedException("A limit needs at least one of messages/min, recipients/h, recipients/message or tarpit.");
        }

        if (r.MessagesPerMinute < 0 || r.RecipientsPerHour < 0 || r.RecipientsPerMessage < 0 || r.TarpitSeconds is < 0 or > 300)
        {
            throw new ActionRefusedException("Rates must not be negative; the tarpit is at most 300 seconds.");
        }

        return new LimitOverride(entity, OverrideKind.Manual, reason, reviewer, r.Days is > 0 and var d ? now.AddDays(d) : null,
            r.MessagesPerMinute, r.RecipientsPerHour, r.RecipientsPerMessage, r.TarpitSeconds is { } t ? TimeSpan.FromSeconds(t) : null);
    }

    private async Task<(DateTime? First, string Class)> FlaggedSpanAsync(EntityRef entity, CancellationToken cancellationToken)
    {
        var span = await _store.QueryFirstOrDefaultAsync<FlaggedSpan>(FlaggedSpanSql, QueryParameters.Of(("kind", entity.Kind.ToText()), ("entity", entity.Name)), cancellationToken);
        return span is null || span.Verdicts == 0 ? (null, "") : (span.First, span.Class);
    }

    private sealed record FlaggedSpan(DateTime First, string Class, ulong Verdicts);

    [LoggerMessage(Level = LogLevel.Information, Message = "Review: {Reviewer} {Action} {Entity}: {Reason}")]
    private static partial void LogAction(ILogger logger, string reviewer, string action, string entity, string reason);
}

internal sealed record ActionDetails(string Override, DateTime? ExpiresAt, double? MessagesPerMinute, double? RecipientsPerHour,
    int? RecipientsPerMessage, double? TarpitSeconds, string? Class);

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(ActionDetails))]
[JsonSerializable(typeof(ActionRequest))]
[JsonSerializable(typeof(ActionResult))]
[JsonSerializable(typeof(Evidence.QueuePage))]
[JsonSerializable(typeof(Evidence.EntityEvidence))]
[JsonSerializable(typeof(Web.MeResponse))]
[JsonSerializable(typeof(Web.ErrorResponse))]
internal sealed partial class ReviewJson : JsonSerializerContext;
