-- Submission accounts (issue 3). One row per change; the highest version of a name is the account.
-- Readers use FINAL. password_hash is pbkdf2-sha256$ITER$SALT$HASH; plaintext is never stored.
CREATE TABLE IF NOT EXISTS users
(
    name          String,
    password_hash String,
    enabled       Bool,
    created_at    DateTime64(3, 'UTC'),
    updated_at    DateTime64(3, 'UTC'),
    version       UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY name;
