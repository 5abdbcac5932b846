-- The feature query as it was before issue 16 (up to commit 03eb9df): the hourly windows and the
-- first-seen values joined to every minute row before grouping. Kept here, not in src, as the
-- reference the scorer's query must agree with (FeatureQueryTests).
-- Features of every entity (user, client IP, network) active in [{since}, {t}), as of {t}.
-- Reads the per-minute aggregates only (activity, first_seen), never raw events. Nothing at or after
-- the scoring time is read: {t} is taken to the start of its minute (the caller truncates too), the
-- minute table is read up to it, and the hourly rollup only for hours that ended before the hour of
-- {t} begins — the current hour comes from the minute table. Windows: 5 min, 10 min, 1 h, 24 h (the
-- 23 complete hours before this one and this one so far), and a 7-day baseline that ends where the
-- last hour begins (the entity's own normal).
WITH
    toStartOfMinute({t:DateTime('UTC')}) AS t,
    t - INTERVAL 5 MINUTE AS t5m,
    t - INTERVAL 10 MINUTE AS t10m,
    t - INTERVAL 1 HOUR AS t1h,
    toStartOfHour(t) AS this_hour,
    this_hour - INTERVAL 23 HOUR AS t24h,
    t - INTERVAL 1 DAY AS t1d,
    toStartOfHour(t1h) AS baseline_end,
    this_hour - INTERVAL 7 DAY AS t7d
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
    countIf(minute >= t1h AND events > 0) AS active_minutes_1h,
    ifNotFinite(stddevPopIf(events, minute >= t1h AND events > 0) / avgIf(events, minute >= t1h AND events > 0), 0) AS burstiness_1h,
    sumIf(invalid_commands, minute >= t1h) AS invalid_commands_1h,
    sumIf(throttled, minute >= t1h) AS throttled_1h,
    uniqMergeIf(passwords, minute >= t1h) AS passwords_1h,
    uniqMergeIf(failed_passwords, minute >= t1h) AS failed_passwords_1h,
    sumIf(null_senders, minute >= t1h) AS null_senders_1h,
    sumIf(rsets, minute >= t1h) AS rsets_1h,
    sumIf(closes, minute >= t1h) AS closes_1h,
    sumIf(quits, minute >= t1h) AS quits_1h,
    sumIf(session_ms, minute >= t1h) AS session_ms_1h,
    sumIf(session_commands, minute >= t1h) AS session_commands_1h,
    sumIf(helo_literal, minute >= t1h) AS helo_literal_1h,
    sumIf(helo_bare, minute >= t1h) AS helo_bare_1h,
    sumIf(tls, minute >= t1h) AS tls_1h,
    sumIf(auth_login, minute >= t1h) AS auth_login_1h,
    sumIf(auth_ok_after_fail, minute >= t1h) AS auth_ok_after_fail_1h,
    sumIf(sent_after_fail, minute >= t1h) AS sent_after_fail_1h,
    -- Timing regularity: the gaps between the minutes it was active in (seconds), as their coefficient
    -- of variation; 1 (what random arrivals give) with fewer than two gaps.
    arrayPopFront(arrayDifference(arraySort(groupArrayIf(toInt64(minute), minute >= t1h AND events > 0)))) AS gaps_1h,
    if(length(gaps_1h) >= 2, ifNotFinite(arrayReduce('stddevPop', gaps_1h) / arrayReduce('avg', gaps_1h), 1), 1) AS interval_cv_1h,
    sumIf(auth_failures, minute >= this_hour) + any(h.auth_failures_24h) AS auth_failures_24h,
    arrayReduce('uniqMerge', [uniqMergeStateIf(users_tried, minute >= this_hour), any(h.users_tried_24h)]) AS users_tried_24h,
    arrayReduce('uniqMerge', [uniqMergeStateIf(ips, minute >= this_hour), any(h.ips_24h)]) AS ips_24h,
    sumIf(rcpt_unknown, minute >= this_hour) + any(h.rcpt_unknown_24h) AS rcpt_unknown_24h,
    arrayReduce('uniqMerge', [uniqMergeStateIf(recipients, minute >= this_hour), any(h.recipients_24h)]) AS recipients_24h,
    sumIf(messages, minute >= this_hour) + any(h.messages_24h) AS messages_24h,
    sumIf(deliveries, minute >= this_hour) + any(h.deliveries_24h) AS deliveries_24h,
    sumIf(delivery_failures, minute >= this_hour) + any(h.delivery_failures_24h) AS delivery_failures_24h,
    any(h.baseline_messages) AS baseline_messages,
    any(h.baseline_rcpt) AS baseline_rcpt,
    any(h.baseline_deliveries) AS baseline_deliveries,
    any(h.baseline_delivery_failures) AS baseline_delivery_failures,
    any(h.baseline_auth_failures) AS baseline_auth_failures,
    any(h.baseline_active_minutes) AS baseline_active_minutes,
    any(h.baseline_minutes_this_hour) AS baseline_minutes_this_hour,
    greatest(dateDiff('minute', min(minute), t), any(h.age_minutes)) AS age_minutes,
    any(n.new_ips) AS new_ips_1h,
    any(n.new_nets) AS new_nets_1h,
    any(n.new_recipients) AS new_recipients_1h,
    any(n.new_domains) AS new_domains_1h,
    any(n24.new_ips_24h) AS new_ips_24h,
    any(n24.new_nets_24h) AS new_nets_24h,
    any(n24.new_clients_24h) AS new_clients_24h
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
    WHERE minute >= t1h AND minute < t
      AND (entity_kind, entity) IN
      (
          SELECT entity_kind, entity FROM active_entities
          WHERE minute >= {since:DateTime('UTC')} AND minute < t
      )
    GROUP BY entity_kind, entity, minute
) AS a
LEFT JOIN
(
    -- The long windows from the hourly rollup, complete hours only: the 23 before this one (the
    -- minute table adds this one so far) and the 7-day baseline, which ends where the last hour begins.
    SELECT
        entity_kind AS h_kind, entity AS h_entity,
        sumIf(auth_failures, hour >= t24h) AS auth_failures_24h,
        uniqMergeStateIf(users_tried, hour >= t24h) AS users_tried_24h,
        uniqMergeStateIf(ips, hour >= t24h) AS ips_24h,
        sumIf(rcpt_unknown, hour >= t24h) AS rcpt_unknown_24h,
        uniqMergeStateIf(recipients, hour >= t24h) AS recipients_24h,
        sumIf(messages, hour >= t24h) AS messages_24h,
        sumIf(deliveries, hour >= t24h) AS deliveries_24h,
        sumIf(delivery_failures, hour >= t24h) AS delivery_failures_24h,
        sumIf(messages, hour < baseline_end) AS baseline_messages,
        sumIf(rcpt, hour < baseline_end) AS baseline_rcpt,
        sumIf(deliveries, hour < baseline_end) AS baseline_deliveries,
        sumIf(delivery_failures, hour < baseline_end) AS baseline_delivery_failures,
        sumIf(auth_failures, hour < baseline_end) AS baseline_auth_failures,
        sumIf(minutes, hour < baseline_end) AS baseline_active_minutes,
        sumIf(minutes, hour < baseline_end AND toHour(hour) = toHour(t - INTERVAL 1 MINUTE)) AS baseline_minutes_this_hour,
        dateDiff('minute', min(hour), t) AS age_minutes
    FROM
    (
        -- Since 0061 an hour's active minutes are the bits of its rows' minute masks ORed (active_minutes
        -- where the mask is 0): grouped per hour here, where the scorer's query reads FINAL.
        SELECT entity_kind, entity, hour,
               sum(auth_failures) AS auth_failures, sum(rcpt_unknown) AS rcpt_unknown, sum(messages) AS messages,
               sum(deliveries) AS deliveries, sum(delivery_failures) AS delivery_failures, sum(rcpt) AS rcpt,
               if(groupBitOr(minute_mask) = 0, sum(active_minutes), bitCount(groupBitOr(minute_mask))) AS minutes,
               uniqMergeState(users_tried) AS users_tried, uniqMergeState(ips) AS ips, uniqMergeState(recipients) AS recipients
        FROM activity_hourly
        WHERE hour >= t7d AND hour < this_hour
          AND (entity_kind, entity) IN
          (
              SELECT entity_kind, entity FROM active_entities
              WHERE minute >= {since:DateTime('UTC')} AND minute < t
          )
        GROUP BY entity_kind, entity, hour
    )
    GROUP BY entity_kind, entity
) AS h ON a.entity_kind = h.h_kind AND a.entity = h.h_entity
LEFT JOIN
(
    -- What each active user used or mailed for the first time within the last hour: values with a
    -- first_seen row in the window and none before it. Only the window's rows are candidates, so
    -- accounts that mailed thousands of recipients over the years cost nothing here.
    SELECT
        user,
        countIf(seen_kind = 'ip') AS new_ips,
        countIf(seen_kind = 'net') AS new_nets,
        countIf(seen_kind = 'recipient') AS new_recipients,
        countIf(seen_kind = 'domain') AS new_domains
    FROM
    (
        SELECT user, seen_kind, value
        FROM first_seen
        WHERE (user, seen_kind, value) IN
        (
            SELECT user, seen_kind, value FROM first_seen
            WHERE first_seen >= t1h AND first_seen < t
              AND user IN
              (
                  SELECT entity FROM active_entities
                  WHERE entity_kind = 'user' AND minute >= {since:DateTime('UTC')} AND minute < t
              )
        )
        GROUP BY user, seen_kind, value
        HAVING min(first_seen) >= t1h
    )
    GROUP BY user
) AS n ON a.entity = n.user
LEFT JOIN
(
    -- Addresses and networks each user first logged in from, and clients it first logged in with, within the last 24 hours (to the minute).
    SELECT user, countIf(seen_kind = 'ip') AS new_ips_24h, countIf(seen_kind = 'net') AS new_nets_24h, countIf(seen_kind = 'client') AS new_clients_24h
    FROM
    (
        SELECT user, seen_kind, value, min(first_seen) AS first
        FROM first_seen
        WHERE seen_kind IN ('ip', 'net', 'client')
        GROUP BY user, seen_kind, value
    )
    WHERE first >= t1d AND first < t
    GROUP BY user
) AS n24 ON a.entity = n24.user
GROUP BY entity_kind, entity
