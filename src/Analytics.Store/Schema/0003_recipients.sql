-- Local recipient directory (issue 3): the domains this server is authoritative for and their
-- valid mailboxes. RCPT to an unknown mailbox in a local domain gets 550 5.1.1 (the harvest signal).
-- One row per change, highest version wins; active = false removes an entry.
CREATE TABLE IF NOT EXISTS local_domains
(
    domain     String,
    active     Bool,
    updated_at DateTime64(3, 'UTC'),
    version    UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY domain;

CREATE TABLE IF NOT EXISTS local_mailboxes
(
    domain     String,
    address    String,
    active     Bool,
    updated_at DateTime64(3, 'UTC'),
    version    UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (domain, address);
