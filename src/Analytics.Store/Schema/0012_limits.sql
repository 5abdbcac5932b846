-- Limits in force per entity (issue 6). One row per change; the highest version is the limit in
-- force (read with FINAL). Every listener node pulls rows newer than its last pull, so nodes that
-- share one ClickHouse converge on the same limits; limit_changes keeps every change with its reason.
CREATE TABLE IF NOT EXISTS limits
(
    entity_kind                  Enum8('user' = 1, 'ip' = 2, 'net' = 3),
    entity                       String,
    level                        Enum8('normal' = 0, 'watch' = 1, 'throttle' = 2, 'block' = 3),
    source                       Enum8('default' = 0, 'model' = 1, 'rules' = 2, 'override' = 3),
    messages_per_minute          Nullable(Float64),
    recipients_per_hour          Nullable(Float64),
    distinct_recipients_per_hour Nullable(Float64),
    recipients_per_message       Nullable(Int32),
    auth_locked                  Bool,
    tarpit_ms                    UInt32,
    blocked                      Bool,
    reason                       String,
    set_by                       String,
    set_at                       DateTime64(3, 'UTC'),
    expires_at                   Nullable(DateTime64(3, 'UTC')),
    version                      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (entity_kind, entity);

CREATE TABLE IF NOT EXISTS limit_changes
(
    entity_kind                  Enum8('user' = 1, 'ip' = 2, 'net' = 3),
    entity                       String,
    level                        Enum8('normal' = 0, 'watch' = 1, 'throttle' = 2, 'block' = 3),
    source                       Enum8('default' = 0, 'model' = 1, 'rules' = 2, 'override' = 3),
    messages_per_minute          Nullable(Float64),
    recipients_per_hour          Nullable(Float64),
    distinct_recipients_per_hour Nullable(Float64),
    recipients_per_message       Nullable(Int32),
    auth_locked                  Bool,
    tarpit_ms                    UInt32,
    blocked                      Bool,
    reason                       String,
    set_by                       String,
    set_at                       DateTime64(3, 'UTC'),
    expires_at                   Nullable(DateTime64(3, 'UTC')),
    version                      UInt64,
    node                         LowCardinality(String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(set_at)
ORDER BY (entity_kind, entity, set_at);
