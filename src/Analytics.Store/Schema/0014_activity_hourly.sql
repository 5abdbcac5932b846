-- Hourly rollup of activity (issue 5): the 24-hour window and the 7-day baseline read 168 rows per
-- entity instead of 10,080 minutes, so a scoring pass costs the same whatever the history length.
-- Fed by a materialized view on the minute table (chained views fire on the view's own inserts).
CREATE TABLE IF NOT EXISTS activity_hourly
(
    entity_kind       Enum8('user' = 1, 'ip' = 2, 'net' = 3),
    entity            String,
    hour              DateTime('UTC'),
    events            SimpleAggregateFunction(sum, UInt64),
    active_minutes    SimpleAggregateFunction(sum, UInt64),
    auth_attempts     SimpleAggregateFunction(sum, UInt64),
    auth_failures     SimpleAggregateFunction(sum, UInt64),
    rcpt              SimpleAggregateFunction(sum, UInt64),
    rcpt_unknown      SimpleAggregateFunction(sum, UInt64),
    messages          SimpleAggregateFunction(sum, UInt64),
    users_tried       AggregateFunction(uniq, String),
    ips               AggregateFunction(uniq, IPv6),
    recipients        AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (entity_kind, entity, hour)
TTL hour + INTERVAL 120 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS activity_hourly_mv TO activity_hourly AS
SELECT
    entity_kind,
    entity,
    toStartOfHour(minute) AS hour,
    sum(events) AS events,
    -- A block holds each (entity, minute) at most once per insert; merged counts may overcount a
    -- minute split across inserts, which only matters for the baseline's active-time estimate.
    uniqExact(minute) AS active_minutes,
    sum(auth_attempts) AS auth_attempts,
    sum(auth_failures) AS auth_failures,
    sum(rcpt) AS rcpt,
    sum(rcpt_unknown) AS rcpt_unknown,
    sum(messages) AS messages,
    uniqMergeState(users_tried) AS users_tried,
    uniqMergeState(ips) AS ips,
    uniqMergeState(recipients) AS recipients
FROM activity
GROUP BY entity_kind, entity, hour;

-- Who was active in which minute, ordered by time: "the entities active since the last pass" is a
-- range read here instead of a scan of the whole activity table. Narrow rows; kept as long as activity.
CREATE TABLE IF NOT EXISTS active_entities
(
    minute      DateTime('UTC'),
    entity_kind Enum8('user' = 1, 'ip' = 2, 'net' = 3),
    entity      String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, entity_kind, entity)
TTL minute + INTERVAL 120 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS active_entities_mv TO active_entities AS
SELECT DISTINCT minute, entity_kind, entity FROM activity;

INSERT INTO active_entities SELECT DISTINCT minute, entity_kind, entity FROM activity;

-- Backfill from the minutes already recorded (the view only sees new inserts).
INSERT INTO activity_hourly
SELECT
    entity_kind,
    entity,
    toStartOfHour(minute) AS hour,
    sum(events),
    uniqExact(minute),
    sum(auth_attempts),
    sum(auth_failures),
    sum(rcpt),
    sum(rcpt_unknown),
    sum(messages),
    uniqMergeState(users_tried),
    uniqMergeState(ips),
    uniqMergeState(recipients)
FROM activity
GROUP BY entity_kind, entity, hour;
