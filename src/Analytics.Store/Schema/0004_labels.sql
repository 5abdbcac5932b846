-- Ground truth for training and evaluation (issue 4): what a user or a client IP really is, with the
-- span of its malicious activity. Written by the simulator (source 'simulation') and, later, by the
-- abuse team's review decisions. One row per entity and campaign; the latest created_at wins.
-- Join on events: entity_kind = 'user' AND entity = events.user, or entity_kind = 'ip' AND ip = events.client_ip.
CREATE TABLE IF NOT EXISTS labels
(
    entity_kind    Enum8('user' = 1, 'ip' = 2),
    entity         String,
    ip             IPv6,
    class          LowCardinality(String),
    campaign       String,
    variant        LowCardinality(String),
    malicious_from Nullable(DateTime64(3, 'UTC')),
    malicious_to   Nullable(DateTime64(3, 'UTC')),
    source         LowCardinality(String),
    run_id         String,
    created_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY (entity_kind, entity, campaign);
