-- Features of every entity (user, client IP, network) active in [{since}, {t}), as of {t}.
-- Reads the per-minute aggregates only (activity, first_seen), never raw events. Nothing at or after
-- the scoring time is read: {t} is taken to the start of its minute (the caller truncates too), the
-- minute table is read up to it, and the hourly rollup only for hours that ended before the hour of
-- {t} begins — the current hour comes from the minute table. Windows: 5 min, 10 min, 1 h, 24 h (the
-- 23 complete hours before this one and this one so far), and a 7-day baseline that ends where the
-- last hour begins (the entity's own normal).
--
-- Each part is reduced to one row per entity before the parts meet (issue 16): the minute windows
-- (a), the hourly rollup's 24-hour window and baseline (h) and the first-seen values (n) are joined
-- entity to entity. Joining the parts to the minute rows before grouping, as this query first did, cost ten
-- times the grouping itself (94 of 123 s for a million entities). Every column is a Float64 after
-- entity_kind and entity, read as RowBinary; the values are those of the first form (a test holds the
-- two equal).
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
    toString(a.entity_kind) AS entity_kind,
    a.entity AS entity,
    toFloat64(a.auth_attempts_5m) AS auth_attempts_5m,
    toFloat64(a.auth_failures_5m) AS auth_failures_5m,
    toFloat64(a.rcpt_5m) AS rcpt_5m,
    toFloat64(a.messages_5m) AS messages_5m,
    toFloat64(a.auth_failures_10m) AS auth_failures_10m,
    toFloat64(a.rcpt_unknown_10m) AS rcpt_unknown_10m,
    toFloat64(a.auth_attempts_1h) AS auth_attempts_1h,
    toFloat64(a.auth_failures_1h) AS auth_failures_1h,
    toFloat64(a.users_tried_1h) AS users_tried_1h,
    toFloat64(a.ips_1h) AS ips_1h,
    toFloat64(a.nets_1h) AS nets_1h,
    toFloat64(a.rcpt_1h) AS rcpt_1h,
    toFloat64(a.rcpt_rejected_1h) AS rcpt_rejected_1h,
    toFloat64(a.rcpt_unknown_1h) AS rcpt_unknown_1h,
    toFloat64(a.recipients_1h) AS recipients_1h,
    toFloat64(a.recipient_domains_1h) AS recipient_domains_1h,
    toFloat64(a.messages_1h) AS messages_1h,
    toFloat64(a.max_message_rcpts_1h) AS max_message_rcpts_1h,
    toFloat64(a.sessions_1h) AS sessions_1h,
    toFloat64(a.data_sessions_1h) AS data_sessions_1h,
    a.events_per_minute AS events_per_minute,
    toFloat64(a.invalid_commands_1h) AS invalid_commands_1h,
    toFloat64(a.passwords_1h) AS passwords_1h,
    toFloat64(a.failed_passwords_1h) AS failed_passwords_1h,
    toFloat64(a.null_senders_1h) AS null_senders_1h,
    toFloat64(a.rsets_1h) AS rsets_1h,
    toFloat64(a.closes_1h) AS closes_1h,
    toFloat64(a.quits_1h) AS quits_1h,
    toFloat64(a.session_ms_1h) AS session_ms_1h,
    toFloat64(a.session_commands_1h) AS session_commands_1h,
    toFloat64(a.helo_literal_1h) AS helo_literal_1h,
    toFloat64(a.helo_bare_1h) AS helo_bare_1h,
    toFloat64(a.tls_1h) AS tls_1h,
    toFloat64(a.auth_login_1h) AS auth_login_1h,
    toFloat64(a.auth_ok_after_fail_1h) AS auth_ok_after_fail_1h,
    toFloat64(a.sent_after_fail_1h) AS sent_after_fail_1h,
    toFloat64(a.auth_failures_this_hour + h.auth_failures_24h) AS auth_failures_24h,
    toFloat64(h.users_tried_24h) AS users_tried_24h,
    toFloat64(h.ips_24h) AS ips_24h,
    toFloat64(a.rcpt_unknown_this_hour + h.rcpt_unknown_24h) AS rcpt_unknown_24h,
    toFloat64(h.recipients_24h) AS recipients_24h,
    toFloat64(a.messages_this_hour + h.messages_24h) AS messages_24h,
    toFloat64(a.deliveries_this_hour + h.deliveries_24h) AS deliveries_24h,
    toFloat64(a.delivery_failures_this_hour + h.delivery_failures_24h) AS delivery_failures_24h,
    toFloat64(h.baseline_messages) AS baseline_messages,
    toFloat64(h.baseline_rcpt) AS baseline_rcpt,
    toFloat64(h.baseline_deliveries) AS baseline_deliveries,
    toFloat64(h.baseline_delivery_failures) AS baseline_delivery_failures,
    toFloat64(h.baseline_auth_failures) AS baseline_auth_failures,
    toFloat64(h.baseline_active_minutes) AS baseline_active_minutes,
    toFloat64(h.baseline_minutes_this_hour) AS baseline_minutes_this_hour,
    toFloat64(greatest(dateDiff('minute', a.first_minute, t), h.age_minutes, h.baseline_age_minutes)) AS age_minutes,
    toFloat64(n.new_ips) AS new_ips_1h,
    toFloat64(n.new_nets) AS new_nets_1h,
    toFloat64(n.new_recipients) AS new_recipients_1h,
    toFloat64(n.new_domains) AS new_domains_1h,
    toFloat64(n.new_ips_24h) AS new_ips_24h,
    toFloat64(n.new_nets_24h) AS new_nets_24h,
    toFloat64(n.new_clients_24h) AS new_clients_24h
FROM
(
    -- The minute windows, from the minute rows of the last hour, grouped once per entity (the WHERE
    -- bounds the hour, so the 1-hour figures need no condition of their own). A minute may still sit in
    -- several parts (rows not merged yet): sums, maxima and distinct counts do not care. The per-minute
    -- figures (active minutes, burstiness, the gaps' regularity) need a minute's rows added up first:
    -- the query hands the (minute, events) rows over as they are and the reader adds them up and
    -- derives the three (FeatureReader.PerMinute). sumMap did it here for ~30 % of the query's CPU
    -- (issue 16). Events are never negative, so "events > 0" per row keeps exactly the minutes whose
    -- total is positive.
    --
    -- The active set is a set of 64-bit hashes of (kind, entity), here and in h and n: a set of the
    -- (Enum8, String) pairs themselves cost ~4 s more to build and probe at a million entities on two
    -- cores (issue 16). A collision can only add an entity active in the hour to the pass (about one
    -- chance in 10^7 at a million against a million), never drop one, and its features are right.
    SELECT
        entity_kind,
        entity,
        sumIf(auth_attempts, minute >= t5m) AS auth_attempts_5m,
        sumIf(auth_failures, minute >= t5m) AS auth_failures_5m,
        sumIf(rcpt, minute >= t5m) AS rcpt_5m,
        sumIf(messages, minute >= t5m) AS messages_5m,
        sumIf(auth_failures, minute >= t10m) AS auth_failures_10m,
        sumIf(rcpt_unknown, minute >= t10m) AS rcpt_unknown_10m,
        sum(auth_attempts) AS auth_attempts_1h,
        sum(auth_failures) AS auth_failures_1h,
        uniqMerge(users_tried) AS users_tried_1h,
        uniqMerge(ips) AS ips_1h,
        uniqMerge(nets) AS nets_1h,
        sum(rcpt) AS rcpt_1h,
        sum(rcpt_rejected) AS rcpt_rejected_1h,
        sum(rcpt_unknown) AS rcpt_unknown_1h,
        uniqMerge(recipients) AS recipients_1h,
        uniqMerge(recipient_domains) AS recipient_domains_1h,
        sum(messages) AS messages_1h,
        max(max_message_rcpts) AS max_message_rcpts_1h,
        uniqMerge(sessions) AS sessions_1h,
        uniqMerge(data_sessions) AS data_sessions_1h,
        CAST(groupArrayIf((toUInt32(minute), events), events > 0), 'Array(Tuple(UInt32, UInt64))') AS events_per_minute,
        sum(invalid_commands) AS invalid_commands_1h,
        uniqMerge(passwords) AS passwords_1h,
        uniqMerge(failed_passwords) AS failed_passwords_1h,
        sum(null_senders) AS null_senders_1h,
        sum(rsets) AS rsets_1h,
        sum(closes) AS closes_1h,
        sum(quits) AS quits_1h,
        sum(session_ms) AS session_ms_1h,
        sum(session_commands) AS session_commands_1h,
        sum(helo_literal) AS helo_literal_1h,
        sum(helo_bare) AS helo_bare_1h,
        sum(tls) AS tls_1h,
        sum(auth_login) AS auth_login_1h,
        sum(auth_ok_after_fail) AS auth_ok_after_fail_1h,
        sum(sent_after_fail) AS sent_after_fail_1h,
        -- This hour so far: the 24-hour window adds its sums to the complete hours of h (h takes the
        -- hour's distinct counts from the minute rows itself).
        sumIf(auth_failures, minute >= this_hour) AS auth_failures_this_hour,
        sumIf(rcpt_unknown, minute >= this_hour) AS rcpt_unknown_this_hour,
        sumIf(messages, minute >= this_hour) AS messages_this_hour,
        sumIf(deliveries, minute >= this_hour) AS deliveries_this_hour,
        sumIf(delivery_failures, minute >= this_hour) AS delivery_failures_this_hour,
        min(minute) AS first_minute
    FROM activity
        WHERE minute >= t1h AND minute < t
          AND cityHash64(entity_kind, entity) IN
          (
              SELECT cityHash64(entity_kind, entity) FROM active_entities
              WHERE minute >= {since:DateTime('UTC')} AND minute < t
          )
    GROUP BY entity_kind, entity
) AS a
LEFT JOIN
(
    -- The hourly rollup's windows, both read together, the active set filtering the union once: its
    -- set is built once and shared by the three reads, and one join fewer meets a. A filter per read
    -- built the set once per read, each build a single-threaded pass over the active set (~2.4 s CPU
    -- apiece at a million entities, issue 16). The minute part a keeps its own filter: one union of
    -- everything, with a condition on each of a's aggregates, measured no cheaper than this.
    --
    -- The 24-hour window (src 0 and 1), complete hours only: the 23 before this one (the minute table
    -- adds this one so far). Its distinct counts merge the complete hours' states with those of this
    -- hour's minute rows, read beside them (same state types), into the final count at once: building a
    -- state per entity in the minute part and merging the two after the join cost more (issue 16). The
    -- minute rows (src 0) carry no sums here (a adds this hour's) and never count as complete hours
    -- (age).
    --
    -- The 7-day baseline (src 2), which ends where the last hour begins (the entity's own normal), from
    -- the hourly rollup's sums alone: no uniq state is read for it (its rows carry empty ones). An
    -- hour's active minutes are the bits of its rows' minute masks ORed (0061), not a sum over its
    -- rows: a minute the server flushed in several batches sits in several rows until they merge. FINAL
    -- hands each (entity, hour) over merged, masks ORed, so the bits are counted per row. It merges
    -- these narrow columns only: FINAL on the 24-hour part's read (uniq states and all) or a GROUP BY
    -- per hour here cost more (whole query, 100k active entities, 20k of them with 167 hours in four
    -- parts: 3.9 s before the masks, 4.6 s this way, 6.5 s FINAL on the one read, 7.1 s GROUP BY per
    -- hour). Rows written before the mask (0) count their active_minutes.
    --
    -- age_minutes is the older of the complete hours' first hour, the baseline's first hour and the
    -- minute part's first minute; a part without rows counts 0, as the LEFT JOINs of separate parts did.
    SELECT
        entity_kind AS h_kind, entity AS h_entity,
        sumIf(auth_failures, src < 2) AS auth_failures_24h,
        uniqMergeIf(users_tried, src < 2) AS users_tried_24h,
        uniqMergeIf(ips, src < 2) AS ips_24h,
        sumIf(rcpt_unknown, src < 2) AS rcpt_unknown_24h,
        uniqMergeIf(recipients, src < 2) AS recipients_24h,
        sumIf(messages, src < 2) AS messages_24h,
        sumIf(deliveries, src < 2) AS deliveries_24h,
        sumIf(delivery_failures, src < 2) AS delivery_failures_24h,
        if(countIf(src = 1) = 0, 0, dateDiff('minute', minIf(hour, src = 1), t)) AS age_minutes,
        sumIf(messages, src = 2) AS baseline_messages,
        sumIf(rcpt, src = 2) AS baseline_rcpt,
        sumIf(deliveries, src = 2) AS baseline_deliveries,
        sumIf(delivery_failures, src = 2) AS baseline_delivery_failures,
        sumIf(auth_failures, src = 2) AS baseline_auth_failures,
        sumIf(minutes, src = 2) AS baseline_active_minutes,
        sumIf(minutes, src = 2 AND toHour(hour) = toHour(t - INTERVAL 1 MINUTE)) AS baseline_minutes_this_hour,
        if(countIf(src = 2) = 0, 0, dateDiff('minute', minIf(hour, src = 2), t)) AS baseline_age_minutes
    FROM
    (
        SELECT entity_kind, entity, hour, 1 AS src,
               toUInt64(auth_failures) AS auth_failures, toUInt64(0) AS rcpt, toUInt64(rcpt_unknown) AS rcpt_unknown, toUInt64(messages) AS messages,
               toUInt64(deliveries) AS deliveries, toUInt64(delivery_failures) AS delivery_failures, toUInt64(0) AS minutes, users_tried, ips, recipients
        FROM activity_hourly
        WHERE hour >= t24h AND hour < this_hour
        UNION ALL
        SELECT entity_kind, entity, minute AS hour, 0 AS src,
               toUInt64(0), toUInt64(0), toUInt64(0), toUInt64(0), toUInt64(0), toUInt64(0), toUInt64(0), users_tried, ips, recipients
        FROM activity
        WHERE minute >= this_hour AND minute < t
        UNION ALL
        SELECT entity_kind, entity, hour, 2 AS src,
               toUInt64(auth_failures), toUInt64(rcpt), toUInt64(0), toUInt64(messages), toUInt64(deliveries), toUInt64(delivery_failures),
               if(minute_mask = 0, toUInt64(active_minutes), toUInt64(bitCount(minute_mask))),
               defaultValueOfTypeName('AggregateFunction(uniq, String)'), defaultValueOfTypeName('AggregateFunction(uniq, IPv6)'),
               defaultValueOfTypeName('AggregateFunction(uniq, String)')
        FROM activity_hourly FINAL
        WHERE hour >= t7d AND hour < baseline_end
    )
    WHERE cityHash64(entity_kind, entity) IN
    (
        SELECT cityHash64(entity_kind, entity) FROM active_entities
        WHERE minute >= {since:DateTime('UTC')} AND minute < t
    )
    GROUP BY entity_kind, entity
) AS h ON a.entity_kind = h.h_kind AND a.entity = h.h_entity
LEFT JOIN
(
    -- What each active user used or mailed for the first time within the last hour: values with a
    -- first_seen row in the window and none before it; and the addresses and networks it first logged
    -- in from, and the clients it first logged in with, within the last 24 hours (to the minute), which
    -- last beyond the hour a new address is new in. Only the windows' rows are candidates (recipients and domains for the hour alone), so
    -- accounts that mailed thousands of recipients over the years cost nothing here.
    SELECT
        CAST('user', 'Enum8(\'user\' = 1, \'ip\' = 2, \'net\' = 3)') AS n_kind,
        user,
        countIf(seen_kind = 'ip' AND first >= t1h) AS new_ips,
        countIf(seen_kind = 'net' AND first >= t1h) AS new_nets,
        countIf(seen_kind = 'recipient') AS new_recipients,
        countIf(seen_kind = 'domain') AS new_domains,
        countIf(seen_kind = 'ip') AS new_ips_24h,
        countIf(seen_kind = 'net') AS new_nets_24h,
        countIf(seen_kind = 'client') AS new_clients_24h
    FROM
    (
        SELECT user, seen_kind, value, min(first_seen) AS first
        FROM first_seen
        WHERE (user, seen_kind, value) IN
        (
            SELECT user, seen_kind, value FROM first_seen
            WHERE first_seen >= t1d AND first_seen < t
              AND (first_seen >= t1h OR seen_kind IN ('ip', 'net', 'client'))
              AND cityHash64(user) IN
              (
                  SELECT cityHash64(entity) FROM active_entities
                  WHERE entity_kind = 'user' AND minute >= {since:DateTime('UTC')} AND minute < t
              )
        )
        GROUP BY user, seen_kind, value
        HAVING first >= if(seen_kind IN ('ip', 'net', 'client'), t1d, t1h)
    )
    GROUP BY user
) AS n ON a.entity_kind = n.n_kind AND a.entity = n.user
