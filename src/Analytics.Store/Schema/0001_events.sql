-- Per-session SMTP events, one row per thing that happened in a session. Detection reads it by
-- user or by client IP, then time: the sort key leads with user (empty for unauthenticated MX
-- traffic, which then sorts by IP), and a bloom-filter index serves lookups by IP.
-- {{retention_days}} is the configured retention (Store:RetentionDays).
CREATE TABLE IF NOT EXISTS events
(
    ts               DateTime64(3, 'UTC'),
    node             LowCardinality(String),
    role             Enum8('submission' = 1, 'mx' = 2),
    session_id       UInt64,
    kind             Enum8('connect' = 1, 'ehlo' = 2, 'starttls' = 3, 'auth' = 4, 'mail' = 5, 'rcpt' = 6,
                           'data' = 7, 'rset' = 8, 'invalid' = 9, 'close' = 10, 'throttle' = 11),
    client_ip        IPv6,
    client_port      UInt16,
    user             String,
    mechanism        LowCardinality(String),
    outcome          Enum8('none' = 0, 'ok' = 1, 'reject' = 2, 'tempfail' = 3, 'error' = 4),
    reply_code       UInt16,
    status           LowCardinality(String),
    sender           String,
    recipient        String,
    recipient_domain LowCardinality(String),
    size             UInt64,
    duration_ms      UInt32,
    detail           String,
    INDEX ix_client_ip client_ip TYPE bloom_filter GRANULARITY 4,
    INDEX ix_session session_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (user, client_ip, ts)
TTL toDateTime(ts) + INTERVAL {{retention_days}} DAY
SETTINGS non_replicated_deduplication_window = 10000;
