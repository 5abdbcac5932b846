-- Incremental aggregates for detection (issue 5). Every event lands, through activity_mv, in one
-- row per entity per minute, for three entities: the user (as authenticated, or as given in AUTH),
-- the client IP, and its network (/24 for IPv4, /64 for IPv6). A scoring pass reads these rows
-- for the entities active since the last pass, never the raw events, so its cost follows active
-- entities rather than stored history. Windows (5 min, 1 h, 24 h, 7-day baseline) are sums and
-- uniq-state merges over minutes.
CREATE TABLE IF NOT EXISTS activity
(
    entity_kind       Enum8('user' = 1, 'ip' = 2, 'net' = 3),
    entity            String,
    minute            DateTime('UTC'),
    events            SimpleAggregateFunction(sum, UInt64),
    auth_attempts     SimpleAggregateFunction(sum, UInt64),
    auth_failures     SimpleAggregateFunction(sum, UInt64),
    rcpt              SimpleAggregateFunction(sum, UInt64),
    rcpt_rejected     SimpleAggregateFunction(sum, UInt64),
    rcpt_unknown      SimpleAggregateFunction(sum, UInt64),
    messages          SimpleAggregateFunction(sum, UInt64),
    message_rcpts     SimpleAggregateFunction(sum, UInt64),
    max_message_rcpts SimpleAggregateFunction(max, UInt64),
    invalid_commands  SimpleAggregateFunction(sum, UInt64),
    throttled         SimpleAggregateFunction(sum, UInt64),
    users_tried       AggregateFunction(uniq, String),
    ips               AggregateFunction(uniq, IPv6),
    nets              AggregateFunction(uniq, String),
    recipients        AggregateFunction(uniq, String),
    recipient_domains AggregateFunction(uniq, String),
    sessions          AggregateFunction(uniq, UInt64),
    data_sessions     AggregateFunction(uniq, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (entity_kind, entity, minute)
TTL minute + INTERVAL 120 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS activity_mv TO activity AS
SELECT
    e.1 AS entity_kind,
    e.2 AS entity,
    toStartOfMinute(ts) AS minute,
    count() AS events,
    countIf(kind = 'auth') AS auth_attempts,
    countIf(kind = 'auth' AND outcome != 'ok') AS auth_failures,
    countIf(kind = 'rcpt') AS rcpt,
    countIf(kind = 'rcpt' AND outcome != 'ok') AS rcpt_rejected,
    countIf(kind = 'rcpt' AND status = '5.1.1') AS rcpt_unknown,
    countIf(kind = 'data' AND outcome = 'ok') AS messages,
    sumIf(toUInt64OrZero(extract(detail, 'recipients=(\\d+)')), kind = 'data' AND outcome = 'ok') AS message_rcpts,
    maxIf(toUInt64OrZero(extract(detail, 'recipients=(\\d+)')), kind = 'data' AND outcome = 'ok') AS max_message_rcpts,
    countIf(kind = 'invalid') AS invalid_commands,
    countIf(kind = 'throttle') AS throttled,
    uniqStateIf(user, kind = 'auth' AND user != '') AS users_tried,
    uniqState(client_ip) AS ips,
    uniqState(cutIPv6(client_ip, 8, 1)) AS nets,
    uniqStateIf(recipient, kind = 'rcpt') AS recipients,
    uniqStateIf(recipient_domain, kind = 'rcpt' AND recipient_domain != '') AS recipient_domains,
    uniqState(session_id) AS sessions,
    uniqStateIf(session_id, kind = 'data' AND outcome = 'ok') AS data_sessions
FROM events
ARRAY JOIN [
    (CAST('user', 'Enum8(\'user\' = 1, \'ip\' = 2, \'net\' = 3)'), user),
    (CAST('ip', 'Enum8(\'user\' = 1, \'ip\' = 2, \'net\' = 3)'), replaceOne(IPv6NumToString(client_ip), '::ffff:', '')),
    (CAST('net', 'Enum8(\'user\' = 1, \'ip\' = 2, \'net\' = 3)'),
        concat(replaceOne(cutIPv6(client_ip, 8, 1), '::ffff:', ''), if(isIPv4String(replaceOne(IPv6NumToString(client_ip), '::ffff:', '')), '/24', '/64')))
] AS e
WHERE e.2 != ''
GROUP BY entity_kind, entity, minute;

-- When a user first (and last) used an IP, a network, a recipient, a recipient domain: "new IP for
-- this account" and "share of never-seen recipients" are rows whose first_seen falls in the window.
CREATE TABLE IF NOT EXISTS first_seen
(
    user       String,
    seen_kind  Enum8('ip' = 1, 'net' = 2, 'recipient' = 3, 'domain' = 4),
    value      String,
    first_seen SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen  SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (user, seen_kind, value);

CREATE MATERIALIZED VIEW IF NOT EXISTS first_seen_mv TO first_seen AS
SELECT
    user,
    p.1 AS seen_kind,
    p.2 AS value,
    min(ts) AS first_seen,
    max(ts) AS last_seen
FROM events
ARRAY JOIN [
    (CAST('ip', 'Enum8(\'ip\' = 1, \'net\' = 2, \'recipient\' = 3, \'domain\' = 4)'), if(kind = 'auth' AND outcome = 'ok', replaceOne(IPv6NumToString(client_ip), '::ffff:', ''), '')),
    (CAST('net', 'Enum8(\'ip\' = 1, \'net\' = 2, \'recipient\' = 3, \'domain\' = 4)'), if(kind = 'auth' AND outcome = 'ok', replaceOne(cutIPv6(client_ip, 8, 1), '::ffff:', ''), '')),
    (CAST('recipient', 'Enum8(\'ip\' = 1, \'net\' = 2, \'recipient\' = 3, \'domain\' = 4)'), if(kind = 'rcpt' AND outcome = 'ok', recipient, '')),
    (CAST('domain', 'Enum8(\'ip\' = 1, \'net\' = 2, \'recipient\' = 3, \'domain\' = 4)'), if(kind = 'rcpt' AND outcome = 'ok', recipient_domain, ''))
] AS p
WHERE user != '' AND p.2 != ''
GROUP BY user, seen_kind, value;
