using Analytics.Limits;
using Analytics.Store;

namespace Analytics.Review.Evidence;

/// <summary>
/// The reads behind the queue and the entity page. Every query is bounded (time range, LIMIT) and
/// reads either the small tables (verdicts, review_actions) or the per-minute aggregates; raw events
/// are read only for the few recent sessions of one entity.
/// </summary>
public sealed class ReviewQueries
{
    // Latest flagged verdict per entity in the range, joined with its latest review action.
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
        """;

    private const string VerdictsSql = """
        SELECT scored_at, class, toFloat64(score), toFloat64(anomaly), flagged, reasons, model_version
        FROM verdicts
        WHERE entity_kind = {kind:String} AND entity = {entity:String}
        ORDER BY scored_at DESC
        LIMIT 50
        """;

    private const string LastActivitySql = """
        SELECT max(minute), count() FROM activity WHERE entity_kind = {kind:String} AND entity = {entity:String}
        """;

    // The hour before the anchor against the usual hour of the 7 days before it (the entity's own
    // baseline, averaged over the hours since its activity began in that span).
    private const string BaselineSql = """
        SELECT
            sumIf(messages, minute >= {hour:DateTime}), sumIf(messages, minute < {hour:DateTime}),
            sumIf(rcpt, minute >= {hour:DateTime}), sumIf(rcpt, minute < {hour:DateTime}),
            uniqMergeIf(recipients, minute >= {hour:DateTime}), uniqMergeIf(recipients, minute < {hour:DateTime}),
            sumIf(rcpt_rejected, minute >= {hour:DateTime}), sumIf(rcpt_rejected, minute < {hour:DateTime}),
            sumIf(rcpt_unknown, minute >= {hour:DateTime}), sumIf(rcpt_unknown, minute < {hour:DateTime}),
            sumIf(auth_attempts, minute >= {hour:DateTime}), sumIf(auth_attempts, minute < {hour:DateTime}),
            sumIf(auth_failures, minute >= {hour:DateTime}), sumIf(auth_failures, minute < {hour:DateTime}),
            uniqMergeIf(sessions, minute >= {hour:DateTime}), uniqMergeIf(sessions, minute < {hour:DateTime}),
            uniqMergeIf(ips, minute >= {hour:DateTime}), uniqMergeIf(ips, minute < {hour:DateTime}),
            greatest(1, dateDiff('hour', minIf(minute, minute < {hour:DateTime}), {hour:DateTime})) AS hours
        FROM activity
        WHERE entity_kind = {kind:String} AND entity = {entity:String}
          AND minute >= {since:DateTime} AND minute < {anchor:DateTime}
        """;

    private const string TimelineSql = """
        SELECT minute, sum(messages), sum(rcpt), sum(auth_failures), sum(rcpt_rejected)
        FROM activity
        WHERE entity_kind = {kind:String} AND entity = {entity:String}
          AND minute >= {from:DateTime} AND minute < {to:DateTime}
        GROUP BY minute
        ORDER BY minute
        """;

    // Sessions by the entity: one fixed predicate per kind (never built from input).
    private const string UserPredicate = "user = {entity:String}";
    private const string IpPredicate = "client_ip = toIPv6({entity:String})";
    private const string NetPredicate = """
        concat(replaceOne(cutIPv6(client_ip, 8, 1), '::ffff:', ''),
               if(isIPv4String(replaceOne(IPv6NumToString(client_ip), '::ffff:', '')), '/24', '/64')) = {entity:String}
        """;

    private const string SessionsSql = """
        SELECT session_id, toString(any(role)), replaceOne(IPv6NumToString(any(client_ip)), '::ffff:', ''),
               anyIf(user, user != ''), min(ts), max(ts)
        FROM events
        WHERE {predicate} AND ts >= {from:DateTime64(3)}
        GROUP BY session_id
        ORDER BY max(ts) DESC
        LIMIT {sessions:UInt32}
        """;

    private const string SessionEventsSql = """
        SELECT session_id, ts, toString(kind), toString(outcome), reply_code, status, user, sender, recipient, detail
        FROM events
        WHERE session_id IN {ids:Array(UInt64)} AND ts >= {from:DateTime64(3)}
        ORDER BY session_id, ts
        LIMIT 60 BY session_id
        """;

    private const string ActionsSql = """
        SELECT id, at, reviewer, toString(action), class, reason, details
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
        var result = await _store.QueryAsync(QueueSql, QueryParameters.Of(
            ("from", filter.From), ("to", filter.To), ("status", filter.Status ?? "")), cancellationToken);
        var all = result.Rows.Select(r => new QueueItem(
            (string)r[0]!, (string)r[1]!, (string)r[2]!, (double)r[3]!, (double)r[4]!, (DateTime)r[5]!, (DateTime)r[6]!,
            (long)(ulong)r[7]!, (string)r[8]!, (string)r[9]!, r[10] as DateTime?)).ToList();
        var counts = all.GroupBy(i => i.Class).OrderBy(g => g.Key, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => (long)g.Count(), StringComparer.Ordinal);
        var items = all.Where(i => string.IsNullOrEmpty(filter.Class) || i.Class == filter.Class).Take(filter.Limit).ToList();
        return new QueuePage(filter.From, filter.To, counts, items);
    }

    public async Task<EntityEvidence> EntityAsync(EntityRef entity, CancellationToken cancellationToken = default)
    {
        var key = QueryParameters.Of(("kind", entity.Kind), ("entity", entity.Name));
        var verdicts = (await _store.QueryAsync(VerdictsSql, key, cancellationToken)).Rows.Select(r => new VerdictRow(
            (DateTime)r[0]!, (string)r[1]!, (double)r[2]!, (double)r[3]!, (bool)r[4]!,
            ((object?[])r[5]!).Select(x => (string)x!).ToList(), (string)r[6]!)).ToList();

        // Everything is shown around the latest flagged verdict (or the latest activity): that is what the reviewer judges.
        var anchor = verdicts.FirstOrDefault(v => v.Flagged)?.ScoredAt ?? (verdicts.Count > 0 ? verdicts[0].ScoredAt : (DateTime?)null)
            ?? await LastActivityAsync(key, cancellationToken) ?? Now;
        anchor = Minute(anchor).AddMinutes(1);
        var timelineTo = anchor.AddMinutes(15);
        var timelineFrom = timelineTo.AddHours(-3);

        var baseline = await BaselineAsync(entity, anchor, cancellationToken);
        var timeline = (await _store.QueryAsync(TimelineSql, QueryParameters.Of(
                ("kind", entity.Kind), ("entity", entity.Name), ("from", timelineFrom), ("to", timelineTo)), cancellationToken))
            .Rows.Select(r => new MinutePoint((DateTime)r[0]!, (long)(ulong)r[1]!, (long)(ulong)r[2]!, (long)(ulong)r[3]!, (long)(ulong)r[4]!)).ToList();
        var sessions = await SessionsAsync(entity, anchor.AddHours(-24), cancellationToken);
        var actions = await ActionsAsync(entity, cancellationToken);
        var history = await _limits.HistoryAsync(entity, 20, cancellationToken);
        var status = actions.Count == 0 ? ReviewStatus.Open : StatusOf(actions[0].Action);
        return new EntityEvidence(entity.Kind, entity.Name, status, verdicts, baseline, timelineFrom, timelineTo, timeline, sessions,
            View(_limits.Current(entity)), history.Select(View).ToList(), actions);
    }

    public async Task<IReadOnlyList<ActionRow>> ActionsAsync(EntityRef entity, CancellationToken cancellationToken = default) =>
        (await _store.QueryAsync(ActionsSql, QueryParameters.Of(("kind", entity.Kind), ("entity", entity.Name)), cancellationToken))
            .Rows.Select(r => new ActionRow(Guid.Parse((string)r[0]!), (DateTime)r[1]!, (string)r[2]!, (string)r[3]!, (string)r[4]!, (string)r[5]!, (string)r[6]!))
            .ToList();

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
        var r = await _store.QueryAsync(LastActivitySql, key, cancellationToken);
        return (ulong)r.Rows[0][1]! == 0 ? null : (DateTime)r.Rows[0][0]!;
    }

    private async Task<IReadOnlyList<BaselineRow>> BaselineAsync(EntityRef entity, DateTime anchor, CancellationToken cancellationToken)
    {
        var hour = anchor.AddHours(-1);
        var r = (await _store.QueryAsync(BaselineSql, QueryParameters.Of(
            ("kind", entity.Kind), ("entity", entity.Name), ("hour", hour), ("since", hour.AddDays(-7)), ("anchor", anchor)), cancellationToken)).Rows[0];
        var hours = Convert.ToDouble(r[18], System.Globalization.CultureInfo.InvariantCulture);
        string[] names = ["messages", "recipients (RCPT)", "distinct recipients", "rejected RCPTs", "unknown recipients (5.1.1)", "AUTH attempts", "AUTH failures", "sessions", "client IPs"];
        return names.Select((name, i) => new BaselineRow(name,
            Convert.ToDouble(r[2 * i], System.Globalization.CultureInfo.InvariantCulture),
            Math.Round(Convert.ToDouble(r[(2 * i) + 1], System.Globalization.CultureInfo.InvariantCulture) / hours, 2))).ToList();
    }

    private async Task<IReadOnlyList<SessionSummary>> SessionsAsync(EntityRef entity, DateTime from, CancellationToken cancellationToken)
    {
        var predicate = entity.Kind switch
        {
            EntityKinds.User => UserPredicate,
            EntityKinds.Ip => IpPredicate,
            _ => NetPredicate,
        };
        if (entity.Kind == EntityKinds.Ip && !System.Net.IPAddress.TryParse(entity.Name, out _))
        {
            return [];
        }

        var sessions = (await _store.QueryAsync(SessionsSql.Replace("{predicate}", predicate, StringComparison.Ordinal), QueryParameters.Of(
                ("entity", entity.Name), ("from", from), ("sessions", 20)), cancellationToken))
            .Rows.Select(r => (Id: (ulong)r[0]!, Role: (string)r[1]!, Ip: (string)r[2]!, User: (string)r[3]!, Start: (DateTime)r[4]!, End: (DateTime)r[5]!))
            .ToList();
        if (sessions.Count == 0)
        {
            return [];
        }

        var events = (await _store.QueryAsync(SessionEventsSql, QueryParameters.Of(("ids", sessions.Select(s => s.Id).ToArray()), ("from", from)), cancellationToken))
            .Rows.GroupBy(r => (ulong)r[0]!)
            .ToDictionary(g => g.Key, g => (IReadOnlyList<SessionEvent>)g.Select(r => new SessionEvent(
                (DateTime)r[1]!, (string)r[2]!, (string)r[3]!, (int)(ulong)r[4]!, (string)r[5]!, (string)r[6]!, (string)r[7]!, (string)r[8]!, (string)r[9]!)).ToList());
        return sessions.Select(s => new SessionSummary(s.Id, s.Role, s.Ip, s.User, s.Start, s.End, events.GetValueOrDefault(s.Id) ?? [])).ToList();
    }

    private static DateTime Minute(DateTime t) => new(t.Ticks - (t.Ticks % TimeSpan.TicksPerMinute), DateTimeKind.Utc);
}
