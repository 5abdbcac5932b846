-- Issue 13: API tokens are listed and revoked one by one, by an id: a new token's first 12 characters
-- (arv_ and 8 random ones), written when it is issued. Tokens issued before have no id in their rows;
-- they read as 'old_' and the first 8 hex digits of their hash. Every token expires now: one issued
-- without an expiry (expires_at NULL) lasts Review:TokenLifetime from its created_at.
ALTER TABLE reviewer_tokens ADD COLUMN IF NOT EXISTS id String DEFAULT concat('old_', substring(token_hash, 1, 8));

-- When each token was last used, to within ReviewerStore.LastUsedResolution (10 minutes): a table of its
-- own, so that recording a use never rewrites a token's row (and so can never undo a revocation).
CREATE TABLE IF NOT EXISTS reviewer_token_uses
(
    id           String,
    last_used_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(last_used_at)
ORDER BY id;
