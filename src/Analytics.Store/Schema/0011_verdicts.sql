-- What the scorer concluded about an entity at a time (issue 5): the class, its calibrated
-- probability, the anomaly score, and the reasons in words. The limit policy and the review
-- console read it; the model version says which model spoke.
CREATE TABLE IF NOT EXISTS verdicts
(
    scored_at     DateTime64(3, 'UTC'),
    entity_kind   Enum8('user' = 1, 'ip' = 2, 'net' = 3),
    entity        String,
    class         LowCardinality(String),
    score         Float32,
    probabilities Map(String, Float32),
    anomaly       Float32,
    anomalous     Bool,
    flagged       Bool,
    explanation   String,
    reasons       Array(String),
    model_version LowCardinality(String),
    node          LowCardinality(String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(scored_at)
ORDER BY (entity_kind, entity, scored_at)
TTL toDateTime(scored_at) + INTERVAL 400 DAY;
