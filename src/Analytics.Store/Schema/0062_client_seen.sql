-- A fifth kind of first_seen value: the client an account logs in with (EHLO name, TLS protocol and
-- cipher suite, AUTH mechanism; BatchAggregates.ClientFingerprint), so "the account logged in with
-- software it never used before" reads like "from a network it never used before". Adding values to an
-- Enum8 is a metadata-only change, allowed on a sorting-key column, and MODIFY COLUMN with the full
-- value list is idempotent. The starttls events' detail carries the cipher suite from this build on.
ALTER TABLE first_seen MODIFY COLUMN seen_kind Enum8('ip' = 1, 'net' = 2, 'recipient' = 3, 'domain' = 4, 'client' = 5);
