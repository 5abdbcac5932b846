-- The features of entity_features.sql for many scoring points at once: every {step} seconds from
-- {from} to {to} (whole minutes, both included), for the entities active within {lookback} seconds
-- before each point — the scorer's passes replayed over recorded history, in one query per chunk
-- instead of one per point. Each feature is the same expression over the same rows as in the
-- single-point query (a test holds the two equal); nothing at or after a point is read for it.
WITH
    pairs AS
    (
        -- (entity, point) for every point that has the entity active within the lookback before it.
        SELECT DISTINCT entity_kind, entity, t
        FROM
        (
            SELECT
                entity_kind,
                entity,
                toInt64(minute) - toInt64({from:DateTime('UTC')}) AS d,
                arrayJoin(range(toUInt64(greatest(0, toInt64(floor(d / {step:UInt32})) + 1)),
                                toUInt64(greatest(0, toInt64(floor((d + {lookback:UInt32}) / {step:UInt32})) + 1)))) AS k,
                toDateTime(toInt64({from:DateTime('UTC')}) + toInt64(k) * {step:UInt32}, 'UTC') AS t
            FROM active_entities
            WHERE minute >= {from:DateTime('UTC')} - toIntervalSecond({lookback:UInt32}) AND minute < {to:DateTime('UTC')}
        )
        WHERE t <= {to:DateTime('UTC')}
    ),
    a AS
    (
        -- The minute windows (5 min, 10 min, 1 h) and this hour so far, per (entity, point).
        SELECT
            p.entity_kind AS entity_kind,
            p.entity AS entity,
            p.t AS t,
            sumIf(m.auth_attempts, m.minute >= p.t - INTERVAL 5 MINUTE) AS auth_attempts_5m,
            sumIf(m.auth_failures, m.minute >= p.t - INTERVAL 5 MINUTE) AS auth_failures_5m,
            sumIf(m.rcpt, m.minute >= p.t - INTERVAL 5 MINUTE) AS rcpt_5m,
            sumIf(m.rcpt_unknown, m.minute >= p.t - INTERVAL 5 MINUTE) AS rcpt_unknown_5m,
            sumIf(m.messages, m.minute >= p.t - INTERVAL 5 MINUTE) AS messages_5m,
            sumIf(m.message_rcpts, m.minute >= p.t - INTERVAL 5 MINUTE) AS message_rcpts_5m,
            sumIf(m.auth_failures, m.minute >= p.t - INTERVAL 10 MINUTE) AS auth_failures_10m,
            sumIf(m.rcpt_unknown, m.minute >= p.t - INTERVAL 10 MINUTE) AS rcpt_unknown_10m,
            sum(m.auth_attempts) AS auth_attempts_1h,
            sum(m.auth_failures) AS auth_failures_1h,
            uniqMerge(m.users_tried) AS users_tried_1h,
            uniqMerge(m.ips) AS ips_1h,
            uniqMerge(m.nets) AS nets_1h,
            sum(m.rcpt) AS rcpt_1h,
            sum(m.rcpt_rejected) AS rcpt_rejected_1h,
            sum(m.rcpt_unknown) AS rcpt_unknown_1h,
            uniqMerge(m.recipients) AS recipients_1h,
            uniqMerge(m.recipient_domains) AS recipient_domains_1h,
            sum(m.messages) AS messages_1h,
            sum(m.message_rcpts) AS message_rcpts_1h,
            max(m.max_message_rcpts) AS max_message_rcpts_1h,
            uniqMerge(m.sessions) AS sessions_1h,
            uniqMerge(m.data_sessions) AS data_sessions_1h,
            countIf(m.events > 0) AS active_minutes_1h,
            ifNotFinite(stddevPopIf(m.events, m.events > 0) / avgIf(m.events, m.events > 0), 0) AS burstiness_1h,
            sum(m.invalid_commands) AS invalid_commands_1h,
            sum(m.throttled) AS throttled_1h,
            uniqMerge(m.passwords) AS passwords_1h,
            uniqMerge(m.failed_passwords) AS failed_passwords_1h,
            sum(m.null_senders) AS null_senders_1h,
            sum(m.rsets) AS rsets_1h,
            sum(m.closes) AS closes_1h,
            sum(m.quits) AS quits_1h,
            sum(m.session_ms) AS session_ms_1h,
            sum(m.session_commands) AS session_commands_1h,
            sum(m.helo_literal) AS helo_literal_1h,
            sum(m.helo_bare) AS helo_bare_1h,
            sum(m.tls) AS tls_1h,
            sum(m.auth_login) AS auth_login_1h,
            sum(m.auth_ok_after_fail) AS auth_ok_after_fail_1h,
            sum(m.sent_after_fail) AS sent_after_fail_1h,
            arrayPopFront(arrayDifference(arraySort(groupArrayIf(toInt64(m.minute), m.events > 0)))) AS gaps_1h,
            if(length(gaps_1h) >= 2, ifNotFinite(arrayReduce('stddevPop', gaps_1h) / arrayReduce('avg', gaps_1h), 1), 1) AS interval_cv_1h,
            sumIf(m.deliveries, m.minute >= toStartOfHour(p.t)) AS deliveries_this_hour,
            sumIf(m.delivery_failures, m.minute >= toStartOfHour(p.t)) AS delivery_failures_this_hour,
            sumIf(m.auth_failures, m.minute >= toStartOfHour(p.t)) AS auth_failures_this_hour,
            uniqMergeStateIf(m.users_tried, m.minute >= toStartOfHour(p.t)) AS users_tried_this_hour,
            uniqMergeStateIf(m.ips, m.minute >= toStartOfHour(p.t)) AS ips_this_hour,
            sumIf(m.rcpt_unknown, m.minute >= toStartOfHour(p.t)) AS rcpt_unknown_this_hour,
            uniqMergeStateIf(m.recipients, m.minute >= toStartOfHour(p.t)) AS recipients_this_hour,
            sumIf(m.messages, m.minute >= toStartOfHour(p.t)) AS messages_this_hour,
            dateDiff('minute', min(m.minute), p.t) AS age_minutes_recent
        FROM pairs AS p
        INNER JOIN
        (
            SELECT
                entity_kind, entity, minute,
                sum(events) AS events,
                sum(auth_attempts) AS auth_attempts,
                sum(auth_failures) AS auth_failures,
                sum(rcpt) AS rcpt,
                sum(rcpt_rejected) AS rcpt_rejected,
                sum(rcpt_unknown) AS rcpt_unknown,
                sum(messages) AS messages,
                sum(message_rcpts) AS message_rcpts,
                max(max_message_rcpts) AS max_message_rcpts,
                sum(invalid_commands) AS invalid_commands,
                sum(throttled) AS throttled,
                uniqMergeState(users_tried) AS users_tried,
                uniqMergeState(ips) AS ips,
                uniqMergeState(nets) AS nets,
                uniqMergeState(recipients) AS recipients,
                uniqMergeState(recipient_domains) AS recipient_domains,
                uniqMergeState(sessions) AS sessions,
                uniqMergeState(data_sessions) AS data_sessions,
                uniqMergeState(passwords) AS passwords,
                uniqMergeState(failed_passwords) AS failed_passwords,
                sum(null_senders) AS null_senders,
                sum(rsets) AS rsets,
                sum(closes) AS closes,
                sum(quits) AS quits,
                sum(session_ms) AS session_ms,
                sum(session_commands) AS session_commands,
                sum(helo_literal) AS helo_literal,
                sum(helo_bare) AS helo_bare,
                sum(tls) AS tls,
                sum(auth_login) AS auth_login,
                sum(auth_ok_after_fail) AS auth_ok_after_fail,
                sum(sent_after_fail) AS sent_after_fail,
                sum(deliveries) AS deliveries,
                sum(delivery_failures) AS delivery_failures
            FROM activity
            WHERE minute >= {from:DateTime('UTC')} - INTERVAL 1 HOUR AND minute < {to:DateTime('UTC')}
              AND (entity_kind, entity) IN (SELECT entity_kind, entity FROM pairs)
            GROUP BY entity_kind, entity, minute
        ) AS m ON p.entity_kind = m.entity_kind AND p.entity = m.entity
        WHERE m.minute >= p.t - INTERVAL 1 HOUR AND m.minute < p.t
        GROUP BY p.entity_kind, p.entity, p.t
    ),
    h AS
    (
        -- The hourly rollup, complete hours before the point's hour: 23 of them for the 24 h windows,
        -- the 7-day baseline up to where the last hour begins. FINAL: one row per entity and hour, its
        -- minute masks ORed, so a minute split across batches counts once (0061, entity_features.sql).
        -- Unlike there, FINAL on the whole read cost nothing measurable: the join to every point rules.
        SELECT
            p.entity_kind AS entity_kind,
            p.entity AS entity,
            p.t AS t,
            sumIf(r.auth_failures, r.hour >= toStartOfHour(p.t) - INTERVAL 23 HOUR) AS auth_failures_24h,
            uniqMergeStateIf(r.users_tried, r.hour >= toStartOfHour(p.t) - INTERVAL 23 HOUR) AS users_tried_24h,
            uniqMergeStateIf(r.ips, r.hour >= toStartOfHour(p.t) - INTERVAL 23 HOUR) AS ips_24h,
            sumIf(r.rcpt_unknown, r.hour >= toStartOfHour(p.t) - INTERVAL 23 HOUR) AS rcpt_unknown_24h,
            uniqMergeStateIf(r.recipients, r.hour >= toStartOfHour(p.t) - INTERVAL 23 HOUR) AS recipients_24h,
            sumIf(r.messages, r.hour >= toStartOfHour(p.t) - INTERVAL 23 HOUR) AS messages_24h,
            sumIf(r.deliveries, r.hour >= toStartOfHour(p.t) - INTERVAL 23 HOUR) AS deliveries_24h,
            sumIf(r.delivery_failures, r.hour >= toStartOfHour(p.t) - INTERVAL 23 HOUR) AS delivery_failures_24h,
            sumIf(r.messages, r.hour < toStartOfHour(p.t - INTERVAL 1 HOUR)) AS baseline_messages,
            sumIf(r.rcpt, r.hour < toStartOfHour(p.t - INTERVAL 1 HOUR)) AS baseline_rcpt,
            sumIf(r.deliveries, r.hour < toStartOfHour(p.t - INTERVAL 1 HOUR)) AS baseline_deliveries,
            sumIf(r.delivery_failures, r.hour < toStartOfHour(p.t - INTERVAL 1 HOUR)) AS baseline_delivery_failures,
            sumIf(r.auth_failures, r.hour < toStartOfHour(p.t - INTERVAL 1 HOUR)) AS baseline_auth_failures,
            sumIf(r.minutes, r.hour < toStartOfHour(p.t - INTERVAL 1 HOUR)) AS baseline_active_minutes,
            sumIf(r.minutes, r.hour < toStartOfHour(p.t - INTERVAL 1 HOUR) AND toHour(r.hour) = toHour(p.t - INTERVAL 1 MINUTE)) AS baseline_minutes_this_hour,
            dateDiff('minute', min(r.hour), p.t) AS age_minutes
        FROM pairs AS p
        INNER JOIN
        (
            SELECT entity_kind, entity, hour, auth_failures, rcpt, rcpt_unknown, messages,
                   if(minute_mask = 0, toUInt64(active_minutes), toUInt64(bitCount(minute_mask))) AS minutes,
                   users_tried, ips, recipients, deliveries, delivery_failures
            FROM activity_hourly FINAL
            WHERE hour >= toStartOfHour({from:DateTime('UTC')}) - INTERVAL 7 DAY AND hour < toStartOfHour({to:DateTime('UTC')})
              AND (entity_kind, entity) IN (SELECT entity_kind, entity FROM pairs)
        ) AS r ON p.entity_kind = r.entity_kind AND p.entity = r.entity
        WHERE r.hour >= toStartOfHour(p.t) - INTERVAL 7 DAY AND r.hour < toStartOfHour(p.t)
        GROUP BY p.entity_kind, p.entity, p.t
    ),
    n AS
    (
        -- Values each user used or mailed for the first time in the hour before the point; addresses
        -- and networks it first logged in from, and clients it first logged in with, in the 24 hours before it.
        SELECT
            p.entity AS user,
            p.t AS t,
            countIf(f.seen_kind = 'ip' AND f.first >= p.t - INTERVAL 1 HOUR) AS new_ips,
            countIf(f.seen_kind = 'net' AND f.first >= p.t - INTERVAL 1 HOUR) AS new_nets,
            countIf(f.seen_kind = 'recipient' AND f.first >= p.t - INTERVAL 1 HOUR) AS new_recipients,
            countIf(f.seen_kind = 'domain' AND f.first >= p.t - INTERVAL 1 HOUR) AS new_domains,
            countIf(f.seen_kind = 'ip') AS new_ips_24h,
            countIf(f.seen_kind = 'net') AS new_nets_24h,
            countIf(f.seen_kind = 'client') AS new_clients_24h
        FROM pairs AS p
        INNER JOIN
        (
            SELECT user, seen_kind, value, min(first_seen) AS first
            FROM first_seen
            WHERE user IN (SELECT entity FROM pairs WHERE entity_kind = 'user')
            GROUP BY user, seen_kind, value
            HAVING first >= {from:DateTime('UTC')} - toIntervalHour(if(seen_kind IN ('ip', 'net', 'client'), 24, 1)) AND first < {to:DateTime('UTC')}
        ) AS f ON p.entity = f.user
        WHERE p.entity_kind = 'user' AND f.first < p.t
          AND f.first >= p.t - toIntervalHour(if(f.seen_kind IN ('ip', 'net', 'client'), 24, 1))
        GROUP BY p.entity, p.t
    )
SELECT
    toString(a.entity_kind) AS entity_kind,
    a.entity AS entity,
    a.t AS t,
    a.auth_attempts_5m AS auth_attempts_5m,
    a.auth_failures_5m AS auth_failures_5m,
    a.rcpt_5m AS rcpt_5m,
    a.rcpt_unknown_5m AS rcpt_unknown_5m,
    a.messages_5m AS messages_5m,
    a.message_rcpts_5m AS message_rcpts_5m,
    a.auth_failures_10m AS auth_failures_10m,
    a.rcpt_unknown_10m AS rcpt_unknown_10m,
    a.auth_attempts_1h AS auth_attempts_1h,
    a.auth_failures_1h AS auth_failures_1h,
    a.users_tried_1h AS users_tried_1h,
    a.ips_1h AS ips_1h,
    a.nets_1h AS nets_1h,
    a.rcpt_1h AS rcpt_1h,
    a.rcpt_rejected_1h AS rcpt_rejected_1h,
    a.rcpt_unknown_1h AS rcpt_unknown_1h,
    a.recipients_1h AS recipients_1h,
    a.recipient_domains_1h AS recipient_domains_1h,
    a.messages_1h AS messages_1h,
    a.message_rcpts_1h AS message_rcpts_1h,
    a.max_message_rcpts_1h AS max_message_rcpts_1h,
    a.sessions_1h AS sessions_1h,
    a.data_sessions_1h AS data_sessions_1h,
    a.active_minutes_1h AS active_minutes_1h,
    a.burstiness_1h AS burstiness_1h,
    a.invalid_commands_1h AS invalid_commands_1h,
    a.throttled_1h AS throttled_1h,
    a.passwords_1h AS passwords_1h,
    a.failed_passwords_1h AS failed_passwords_1h,
    a.null_senders_1h AS null_senders_1h,
    a.rsets_1h AS rsets_1h,
    a.closes_1h AS closes_1h,
    a.quits_1h AS quits_1h,
    a.session_ms_1h AS session_ms_1h,
    a.session_commands_1h AS session_commands_1h,
    a.helo_literal_1h AS helo_literal_1h,
    a.helo_bare_1h AS helo_bare_1h,
    a.tls_1h AS tls_1h,
    a.auth_login_1h AS auth_login_1h,
    a.auth_ok_after_fail_1h AS auth_ok_after_fail_1h,
    a.sent_after_fail_1h AS sent_after_fail_1h,
    a.interval_cv_1h AS interval_cv_1h,
    a.deliveries_this_hour + h.deliveries_24h AS deliveries_24h,
    a.delivery_failures_this_hour + h.delivery_failures_24h AS delivery_failures_24h,
    a.auth_failures_this_hour + h.auth_failures_24h AS auth_failures_24h,
    arrayReduce('uniqMerge', [a.users_tried_this_hour, h.users_tried_24h]) AS users_tried_24h,
    arrayReduce('uniqMerge', [a.ips_this_hour, h.ips_24h]) AS ips_24h,
    a.rcpt_unknown_this_hour + h.rcpt_unknown_24h AS rcpt_unknown_24h,
    arrayReduce('uniqMerge', [a.recipients_this_hour, h.recipients_24h]) AS recipients_24h,
    a.messages_this_hour + h.messages_24h AS messages_24h,
    h.baseline_messages AS baseline_messages,
    h.baseline_rcpt AS baseline_rcpt,
    h.baseline_deliveries AS baseline_deliveries,
    h.baseline_delivery_failures AS baseline_delivery_failures,
    h.baseline_auth_failures AS baseline_auth_failures,
    h.baseline_active_minutes AS baseline_active_minutes,
    h.baseline_minutes_this_hour AS baseline_minutes_this_hour,
    greatest(a.age_minutes_recent, h.age_minutes) AS age_minutes,
    n.new_ips AS new_ips_1h,
    n.new_nets AS new_nets_1h,
    n.new_recipients AS new_recipients_1h,
    n.new_domains AS new_domains_1h,
    n.new_ips_24h AS new_ips_24h,
    n.new_nets_24h AS new_nets_24h,
    n.new_clients_24h AS new_clients_24h
FROM a
LEFT JOIN h ON a.entity_kind = h.entity_kind AND a.entity = h.entity AND a.t = h.t
LEFT JOIN n ON a.entity = n.user AND a.t = n.t
