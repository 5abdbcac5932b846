-- Features of every entity (user, client IP, network) active in [{since}, {t}), as of {t}.
-- Reads the per-minute aggregates only (activity, first_seen), never raw events. Windows: 5 min,
-- 1 h, 24 h, and a 7-day baseline that ends where the last hour begins (the entity's own normal).
WITH
    {t:DateTime('UTC')} AS t,
    t - INTERVAL 5 MINUTE AS t5m,
    t - INTERVAL 10 MINUTE AS t10m,
    t - INTERVAL 1 HOUR AS t1h,
    t - INTERVAL 1 DAY AS t24h,
    t - INTERVAL 7 DAY AS t7d
SELECT
    toString(entity_kind) AS entity_kind,
    entity,
    sumIf(auth_attempts, minute >= t5m) AS auth_attempts_5m,
    sumIf(auth_failures, minute >= t5m) AS auth_failures_5m,
    sumIf(rcpt, minute >= t5m) AS rcpt_5m,
    sumIf(rcpt_unknown, minute >= t5m) AS rcpt_unknown_5m,
    sumIf(messages, minute >= t5m) AS messages_5m,
    sumIf(message_rcpts, minute >= t5m) AS message_rcpts_5m,
    sumIf(auth_failures, minute >= t10m) AS auth_failures_10m,
    sumIf(rcpt_unknown, minute >= t10m) AS rcpt_unknown_10m,
    sumIf(auth_attempts, minute >= t1h) AS auth_attempts_1h,
    sumIf(auth_failures, minute >= t1h) AS auth_failures_1h,
    uniqMergeIf(users_tried, minute >= t1h) AS users_tried_1h,
    uniqMergeIf(ips, minute >= t1h) AS ips_1h,
    uniqMergeIf(nets, minute >= t1h) AS nets_1h,
    sumIf(rcpt, minute >= t1h) AS rcpt_1h,
    sumIf(rcpt_rejected, minute >= t1h) AS rcpt_rejected_1h,
    sumIf(rcpt_unknown, minute >= t1h) AS rcpt_unknown_1h,
    uniqMergeIf(recipients, minute >= t1h) AS recipients_1h,
    uniqMergeIf(recipient_domains, minute >= t1h) AS recipient_domains_1h,
    sumIf(messages, minute >= t1h) AS messages_1h,
    sumIf(message_rcpts, minute >= t1h) AS message_rcpts_1h,
    maxIf(max_message_rcpts, minute >= t1h) AS max_message_rcpts_1h,
    uniqMergeIf(sessions, minute >= t1h) AS sessions_1h,
    uniqMergeIf(data_sessions, minute >= t1h) AS data_sessions_1h,
    countIf(minute >= t1h) AS active_minutes_1h,
    ifNotFinite(stddevPopIf(events, minute >= t1h) / avgIf(events, minute >= t1h), 0) AS burstiness_1h,
    sumIf(invalid_commands, minute >= t1h) AS invalid_commands_1h,
    sumIf(throttled, minute >= t1h) AS throttled_1h,
    sumIf(auth_failures, minute >= t24h) AS auth_failures_24h,
    uniqMergeIf(users_tried, minute >= t24h) AS users_tried_24h,
    uniqMergeIf(ips, minute >= t24h) AS ips_24h,
    sumIf(rcpt_unknown, minute >= t24h) AS rcpt_unknown_24h,
    uniqMergeIf(recipients, minute >= t24h) AS recipients_24h,
    sumIf(messages, minute >= t24h) AS messages_24h,
    sumIf(messages, minute < t1h) AS baseline_messages,
    sumIf(rcpt, minute < t1h) AS baseline_rcpt,
    sumIf(auth_failures, minute < t1h) AS baseline_auth_failures,
    uniqMergeIf(ips, minute < t1h) AS baseline_ips,
    countIf(minute < t1h) AS baseline_active_minutes,
    countIf(minute < t1h AND toHour(minute) = toHour(t - INTERVAL 1 MINUTE)) AS baseline_minutes_this_hour,
    dateDiff('minute', min(minute), t) AS age_minutes,
    any(n.new_ips) AS new_ips_1h,
    any(n.new_nets) AS new_nets_1h,
    any(n.new_recipients) AS new_recipients_1h,
    any(n.new_domains) AS new_domains_1h,
    any(n.known_ips) AS known_ips
FROM
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
        uniqMergeState(data_sessions) AS data_sessions
    FROM activity
    WHERE minute >= t7d AND minute < t
      AND (entity_kind, entity) IN
      (
          SELECT entity_kind, entity FROM activity
          WHERE minute >= {since:DateTime('UTC')} AND minute < t
      )
    GROUP BY entity_kind, entity, minute
) AS a
LEFT JOIN
(
    SELECT
        user,
        countIf(seen_kind = 'ip' AND first >= t1h) AS new_ips,
        countIf(seen_kind = 'net' AND first >= t1h) AS new_nets,
        countIf(seen_kind = 'recipient' AND first >= t1h) AS new_recipients,
        countIf(seen_kind = 'domain' AND first >= t1h) AS new_domains,
        countIf(seen_kind = 'ip' AND first < t1h) AS known_ips
    FROM
    (
        SELECT user, seen_kind, value, min(first_seen) AS first
        FROM first_seen
        WHERE first_seen < t
          AND user IN
          (
              SELECT entity FROM activity
              WHERE entity_kind = 'user' AND minute >= {since:DateTime('UTC')} AND minute < t
          )
        GROUP BY user, seen_kind, value
    )
    GROUP BY user
) AS n ON a.entity = n.user
GROUP BY entity_kind, entity
