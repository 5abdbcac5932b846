using Analytics.Limits;
using Analytics.Store;

namespace Analytics.Review.Evidence;

/// <summary>
/// The reads behind the queue and the entity page. Every query is bounded (time range, LIMIT) and
/// reads either the small tables (verdicts, review_actions) or the per-minute aggregates; raw events
/// are read only for the few recent sessions of one entity.
/// </summary>
internal sealed class ReviewQueries
{
    // Latest flagged verdict per entity in the range, joined with its latest review action.
    // The console's heavier reads stop themselves after 10 s (ClickHouse's own limit: chDB cannot cancel a
    // query from outside, and the embedded engine has one connection that inserts and scoring share).
    private const string Bounded = "\nSETTINGS max_execution_time = 10, timeout_overflow_mode = 'throw'";

    private const string QueueSql = """
        WITH q AS (
            SELECT entity_kind, entity,
                   argMax(class, scored_at) AS class, argMax(score, scored_at) AS score, max(anomaly) AS anomaly,
                   min(scored_at) AS first_seen, max(scored_at) AS last_seen, count() AS verdicts,
                   argMax(explanation, scored_at) AS explanation
            FROM verdicts
            WHERE flagged AND scored_at >= {from:DateTime64(3)} AND scored_at <= {to:DateTime64(3)}
            GROUP BY entity_kind, entity
        ), a AS (
            SELECT entity_kind, entity, toString(argMax(action, at)) AS last_action, max(at) AS reviewed_at
            FROM review_actions
            GROUP BY entity_kind, entity
        )
        SELECT toString(q.entity_kind) AS kind, q.entity AS entity, q.class AS class, toFloat64(q.score) AS score,
               toFloat64(q.anomaly) AS anomaly, q.first_seen AS first_seen, q.last_seen AS last_seen, q.verdicts AS verdicts,
               q.explanation AS explanation,
               multiIf(a.last_action = 'confirm', 'confirmed', a.last_action = 'dismiss', 'dismissed',
                       a.last_action = 'limit', 'limited', a.last_action = 'release', 'released', 'open') AS status,
               if(a.last_action = '', NULL, a.reviewed_at) AS reviewed_at
        FROM q LEFT JOIN a ON q.entity_kind = a.entity_kind AND q.entity = a.entity
        WHERE ({status:String} = '' OR status = {status:String})
        ORDER BY score DESC, last_seen DESC, entity
        LIMIT 5000
        """ + Bounded;

    private const string VerdictsSql = """
        SELECT scored_at, class, toFloat64(score) AS score, toFloat64(anomaly) AS anomaly, flagged, reasons, model_version
        FROM verdicts
        WHERE entity_kind = {kind:String} AND entity = {entity:String}
        ORDER BY scored_at DESC
        LIMIT 50
        """;

    private const string LastActivitySql = """
        SELECT max(minute) AS last, count() AS minutes FROM activity WHERE entity_kind = {kind:String} AND entity = {entity:String}
        """;

    // The hour before the anchor against the usual hour of the 7 days before it (the entity's own
    // baseline, averaged over the hours since its activity began in that span).
    private const string BaselineSql = """
        SELECT
            sumIf(messages, minute >= {hour:DateTime}) AS messages_last, sumIf(messages, minute < {hour:DateTime}) AS messages_before,
            sumIf(rcpt, minute >= {hour:DateTime}) AS rcpt_last, sumIf(rcpt, minute < {hour:DateTime}) AS rcpt_before,
            uniqMergeIf(recipients, minute >= {hour:DateTime}) AS recipients_last, uniqMergeIf(recipients, minute < {hour:DateTime}) AS recipients_before,
            sumIf(rcpt_rejected, minute >= {hour:DateTime}) AS rejected_last, sumIf(rcpt_rejected, minute < {hour:DateTime}) AS rejected_before,
            sumIf(rcpt_unknown, minute >= {hour:DateTime}) AS unknown_last, sumIf(rcpt_unknown, minute < {hour:DateTime}) AS unknown_before,
            sumIf(auth_attempts, minute >= {hour:DateTime}) AS auth_last, sumIf(auth_attempts, minute < {hour:DateTime}) AS auth_before,
            sumIf(auth_failures, minute >= {hour:DateTime}) AS auth_failures_last, sumIf(auth_failures, minute < {hour:DateTime}) AS auth_failures_before,
            uniqMergeIf(sessions, minute >= {hour:DateTime}) AS sessions_last, uniqMergeIf(sessions, minute < {hour:DateTime}) AS sessions_before,
            uniqMergeIf(ips, minute >= {hour:DateTime}) AS ips_last, uniqMergeIf(ips, minute < {hour:DateTime}) AS ips_before,
            greatest(1, dateDiff('hour', minIf(minute, minute < {hour:DateTime}), {hour:DateTime})) AS hours
        FROM activity
        WHERE entity_kind = {kind:String} AND entity = {entity:String}
          AND minute >= {since:DateTime} AND minute < {anchor:DateTime}
        """ + Bounded;

    private const string TimelineSql = """
        SELECT minute, sum(messages) AS messages, sum(rcpt) AS recipients, sum(auth_failures) AS auth_failures, sum(rcpt_rejected) AS rejected_rcpts
        FROM activity
        WHERE entity_kind = {kind:String} AND entity = {entity:String}
          AND minute >= {from:DateTime} AND minute < {to:DateTime}
        GROUP BY minute
        ORDER BY minute
        """ + Bounded;

    // Sessions by the entity: one fixed predicate per kind (never built from input).
    private const string UserPredicate = "user = {entity:String}";
    private const string IpPredicate = "client_ip = toIPv6({entity:String})";
    private const string NetPredicate = """
        concat(replaceOne(cutIPv6(client_ip, 8, 1), '::ffff:', ''),
               if(isIPv4String(replaceOne(IPv6NumToString(client_ip), '::ffff:', '')), '/24', '/64')) = {entity:String}
        """;

    private const string SessionsSql = """
        SELECT session_id, toString(any(role)) AS session_role, replaceOne(IPv6NumToString(any(client_ip)), '::ffff:', '') AS client,
               anyIf(user, user != '') AS account, min(ts) AS first_ts, max(ts) AS last_ts
        FROM events
        WHERE {predicate} AND ts >= {from:DateTime64(3)}
        GROUP BY session_id
        ORDER BY max(ts) DESC
        LIMIT {sessions:UInt32}
        """ + Bounded;

    private const string SessionEventsSql = """
        SELECT session_id, ts, toString(kind) AS kind, toString(outcome) AS outcome, reply_code, status, user, sender, recipient, detail
        FROM events
        WHERE session_id IN {ids:Array(UInt64)} AND ts >= {from:DateTime64(3)}
        ORDER BY session_id, ts
        LIMIT 60 BY session_id
        """ + Bounded;

    private const string ActionsSql = """
        SELECT id, at, reviewer, toString(action) AS action, class, reason, details
        FROM review_actions
        WHERE entity_kind = {kind:String} AND entity = {entity:String}
        ORDER BY at DESC
        LIMIT 100
        """;

    private readonly IClickHouseStore _store;
    private readonly ILimitControl _limits;
    private readonly TimeProvider _time;

    public ReviewQueries(IClickHouseStore store, ILimitControl limits, TimeProvider time)
    {
        _store = store;
        _limits = limits;
        _time = time;
    }

    public DateTime Now => _time.GetUtcNow().UtcDateTime;

    public async Task<QueuePage> QueueAsync(QueueFilter filter, CancellationToken cancellationToken = default)
    {
        var all = await _store.QueryListAsync<QueueItem>(QueueSql, QueryParameters.Of(
            ("from", filter.From), ("to", filter.To), ("status", filter.Status ?? "")), cancellationToken);
        var counts = all.GroupBy(i => i.Class).OrderBy(g => g.Key, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => (long)g.Count(), StringComparer.Ordinal);
        var items = all.Where(i => string.IsNullOrEmpty(filter.Class) || i.Class == filter.Class).Take(filter.Limit).ToList();
        return new QueuePage(filter.From, filter.To, counts, items);
    }

    public async Task<EntityEvidence> EntityAsync(EntityRef entity, CancellationToken cancellationToken = default)
    {
        var key = QueryParameters.Of(("kind", entity.Kind.ToText()), ("entity", entity.Name));
        var verdicts = await _store.QueryListAsync<VerdictRow>(VerdictsSql, key, cancellationToken);

        // Everything is shown around the latest flagged verdict (or the latest activity): that is what the reviewer judges.
        var anchor = verdicts.FirstOrDefault(v => v.Flagged)?.ScoredAt ?? (verdicts.Count > 0 ? verdicts[0].ScoredAt : (DateTime?)null)
            ?? await LastActivityAsync(key, cancellationToken) ?? Now;
        anchor = Minute(anchor).AddMinutes(1);
        var timelineTo = anchor.AddMinutes(15);
        var timelineFrom = timelineTo.AddHours(-3);

        var baseline = await BaselineAsync(entity, anchor, cancellationToken);
        var timeline = await _store.QueryListAsync<MinutePoint>(TimelineSql, QueryParameters.Of(
            ("kind", entity.Kind.ToText()), ("entity", entity.Name), ("from", timelineFrom), ("to", timelineTo)), cancellationToken);
        var sessions = await SessionsAsync(entity, anchor.AddHours(-24), cancellationToken);
        var actions = await ActionsAsync(entity, cancellationToken);
        var history = await _limits.HistoryAsync(entity, 20, cancellationToken);
        var status = actions.Count == 0 ? ReviewStatus.Open : StatusOf(actions[0].Action);
        return new EntityEvidence(entity.Kind.ToText(), entity.Name, status, verdicts, baseline, timelineFrom, timelineTo, timeline, sessions,
            View(_limits.Current(entity)), history.Select(View).ToList(), actions);
    }

    public async Task<IReadOnlyList<ActionRow>> ActionsAsync(EntityRef entity, CancellationToken cancellationToken = default) =>
        await _store.QueryListAsync<ActionRow>(ActionsSql, QueryParameters.Of(("kind", entity.Kind.ToText()), ("entity", entity.Name)), cancellationToken);

    public static string StatusOf(string action) => action switch
    {
        "confirm" => ReviewStatus.Confirmed,
        "dismiss" => ReviewStatus.Dismissed,
        "limit" => ReviewStatus.Limited,
        "release" => ReviewStatus.Released,
        _ => ReviewStatus.Open,
    };

    public static LimitView View(EntityLimit l) => new(
        l.Level.ToString().ToLowerInvariant(), l.Source.ToString().ToLowerInvariant(), l.Blocked, l.AuthLocked, l.MessagesPerMinute,
        l.RecipientsPerHour, l.RecipientsPerMessage, l.Tarpit.TotalSeconds, l.Reason, l.SetBy, l.SetAt, l.ExpiresAt);

    private async Task<DateTime?> LastActivityAsync(QueryParameters key, CancellationToken cancellationToken)
    {
        var activity = await _store.QueryFirstOrDefaultAsync<LastActivity>(LastActivitySql, key, cancellationToken);
        return activity is null || activity.Minutes == 0 ? null : activity.Last;
    }

    private async Task<IReadOnlyList<BaselineRow>> BaselineAsync(EntityRef entity, DateTime anchor, CancellationToken cancellationToken)
    {
        var hour = anchor.AddHours(-1);
        var b = await _store.QueryFirstOrDefaultAsync<BaselineSums>(BaselineSql, QueryParameters.Of(
            ("kind", entity.Kind.ToText()), ("entity", entity.Name), ("hour", hour), ("since", hour.AddDays(-7)), ("anchor", anchor)), cancellationToken)
            ?? throw new InvalidOperationException("The baseline query returned no row.");
        BaselineRow Row(string name, double last, double before) => new(name, last, Math.Round(before / b.Hours, 2));
        return
        [
            Row("messages", b.MessagesLast, b.MessagesBefore),
            Row("recipients (RCPT)", b.RcptLast, b.RcptBefore),
            Row("distinct recipients", b.RecipientsLast, b.RecipientsBefore),
            Row("rejected RCPTs", b.RejectedLast, b.RejectedBefore),
            Row("unknown recipients (5.1.1)", b.UnknownLast, b.UnknownBefore),
            Row("AUTH attempts", b.AuthLast, b.AuthBefore),
            Row("AUTH failures", b.AuthFailuresLast, b.AuthFailuresBefore),
            Row("sessions", b.SessionsLast, b.SessionsBefore),
            Row("client IPs", b.IpsLast, b.IpsBefore),
        ];
    }

    private async Task<IReadOnlyList<SessionSummary>> SessionsAsync(EntityRef entity, DateTime from, CancellationToken cancellationToken)
    {
        var predicate = entity.Kind switch
        {
            EntityKind.User => UserPredicate,
            EntityKind.Ip => IpPredicate,
            _ => NetPredicate,
        };
        if (entity.Kind == EntityKind.Ip && !System.Net.IPAddress.TryParse(entity.Name, out _))
        {
            return [];
        }

        var sessions = await _store.QueryListAsync<SessionRow>(SessionsSql.Replace("{predicate}", predicate, StringComparison.Ordinal), QueryParameters.Of(
            ("entity", entity.Name), ("from", from), ("sessions", 20)), cancellationToken);
        if (sessions.Count == 0)
        {
            return [];
        }

        var events = (await _store.QueryListAsync<SessionEventRow>(SessionEventsSql, QueryParameters.Of(("ids", sessions.Select(s => s.SessionId).ToArray()), ("from", from)), cancellationToken))
            .GroupBy(r => r.SessionId)
            .ToDictionary(g => g.Key, g => (IReadOnlyList<SessionEvent>)g.Select(r => r.Event).ToList());
        return sessions.Select(s => new SessionSummary(s.SessionId, s.SessionRole, s.Client, s.Account, s.FirstTs, s.LastTs, events.GetValueOrDefault(s.SessionId) ?? [])).ToList();
    }

    private sealed record LastActivity(DateTime Last, ulong Minutes);

    private sealed record BaselineSums(
        double MessagesLast, double MessagesBefore, double RcptLast, double RcptBefore, double RecipientsLast, double RecipientsBefore,
        double RejectedLast, double RejectedBefore, double UnknownLast, double UnknownBefore, double AuthLast, double AuthBefore,
        double AuthFailuresLast, double AuthFailuresBefore, double SessionsLast, double SessionsBefore, double IpsLast, double IpsBefore, double Hours);

    // Aliases differ from the column names: ClickHouse lets an alias shadow a column in WHERE.
    private sealed record SessionRow(ulong SessionId, string SessionRole, string Client, string Account, DateTime FirstTs, DateTime LastTs);

    private sealed record SessionEventRow(ulong SessionId, DateTime Ts, string Kind, string Outcome, int ReplyCode, string Status, string User, string Sender, string Recipient, string Detail)
    {
        public SessionEvent Event => new(Ts, Kind, Outcome, ReplyCode, Status, User, Sender, Recipient, Detail);
    }

    private static DateTime Minute(DateTime t) => new(t.Ticks - (t.Ticks % TimeSpan.TicksPerMinute), DateTimeKind.Utc);
}
