-- The review console (issue 7). Reviewers log in with a name and password (PBKDF2, the same
-- pbkdf2-sha256$ITER$SALT$HASH form as users); one row per change, the highest version wins (FINAL).
CREATE TABLE IF NOT EXISTS reviewers
(
    name          String,
    password_hash String,
    role          Enum8('viewer' = 1, 'analyst' = 2),
    enabled       Bool,
    created_at    DateTime64(3, 'UTC'),
    updated_at    DateTime64(3, 'UTC'),
    version       UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY name;

-- API tokens for the abuse team's tooling: only the SHA-256 of a token is kept. A token acts with its
-- reviewer's current role, and stops working when the reviewer is disabled or the token revoked.
CREATE TABLE IF NOT EXISTS reviewer_tokens
(
    token_hash String,
    name       String,
    created_at DateTime64(3, 'UTC'),
    expires_at Nullable(DateTime64(3, 'UTC')),
    revoked    Bool,
    version    UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY token_hash;

-- The audit trail: who did what to which entity, when and why. Never updated; the latest action on
-- an entity is its review status (confirm → confirmed, dismiss → dismissed, limit → limited,
-- release → released; none → open). details is JSON: the limit applied, the class confirmed, …
CREATE TABLE IF NOT EXISTS review_actions
(
    id          UUID,
    at          DateTime64(3, 'UTC'),
    reviewer    String,
    action      Enum8('confirm' = 1, 'dismiss' = 2, 'limit' = 3, 'release' = 4),
    entity_kind Enum8('user' = 1, 'ip' = 2, 'net' = 3),
    entity      String,
    class       LowCardinality(String),
    reason      String,
    details     String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (entity_kind, entity, at);
