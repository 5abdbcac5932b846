-- Issue 17: signals beyond counts. AUTH events carry the keyed password tag the listener computes
-- (an HMAC with a per-process random key, never the password: equal tags are the same password
-- within one run of the server, nothing more), so distinct passwords per account and accounts per
-- password can be counted. The minute aggregates gain the client's fingerprint (null senders,
-- address-literal and dotless EHLO names, STARTTLS, AUTH LOGIN, RSET, how sessions end and their
-- pace; EHLO style and STARTTLS are counted on the close, which carries the account), success after
-- failures followed by sending, and the fate of delivered mail (delivery
-- attempts and permanent failures per account, from delivery events); the hourly rollup keeps the
-- delivery counts for the 24-hour window. Adding columns with defaults is a metadata change; the
-- views that feed the tables are recreated with the new columns.
ALTER TABLE events ADD COLUMN IF NOT EXISTS secret_tag UInt64 DEFAULT 0;

ALTER TABLE activity
    ADD COLUMN IF NOT EXISTS null_senders SimpleAggregateFunction(sum, UInt64),
    ADD COLUMN IF NOT EXISTS rsets SimpleAggregateFunction(sum, UInt64),
    ADD COLUMN IF NOT EXISTS closes SimpleAggregateFunction(sum, UInt64),
    ADD COLUMN IF NOT EXISTS quits SimpleAggregateFunction(sum, UInt64),
    ADD COLUMN IF NOT EXISTS session_ms SimpleAggregateFunction(sum, UInt64),
    ADD COLUMN IF NOT EXISTS session_commands SimpleAggregateFunction(sum, UInt64),
    ADD COLUMN IF NOT EXISTS helo_literal SimpleAggregateFunction(sum, UInt64),
    ADD COLUMN IF NOT EXISTS helo_bare SimpleAggregateFunction(sum, UInt64),
    ADD COLUMN IF NOT EXISTS tls SimpleAggregateFunction(sum, UInt64),
    ADD COLUMN IF NOT EXISTS auth_login SimpleAggregateFunction(sum, UInt64),
    ADD COLUMN IF NOT EXISTS auth_ok_after_fail SimpleAggregateFunction(sum, UInt64),
    ADD COLUMN IF NOT EXISTS sent_after_fail SimpleAggregateFunction(sum, UInt64),
    ADD COLUMN IF NOT EXISTS deliveries SimpleAggregateFunction(sum, UInt64),
    ADD COLUMN IF NOT EXISTS delivery_failures SimpleAggregateFunction(sum, UInt64),
    ADD COLUMN IF NOT EXISTS passwords AggregateFunction(uniq, UInt64),
    ADD COLUMN IF NOT EXISTS failed_passwords AggregateFunction(uniq, UInt64);

ALTER TABLE activity_in
    ADD COLUMN IF NOT EXISTS null_senders UInt64,
    ADD COLUMN IF NOT EXISTS rsets UInt64,
    ADD COLUMN IF NOT EXISTS closes UInt64,
    ADD COLUMN IF NOT EXISTS quits UInt64,
    ADD COLUMN IF NOT EXISTS session_ms UInt64,
    ADD COLUMN IF NOT EXISTS session_commands UInt64,
    ADD COLUMN IF NOT EXISTS helo_literal UInt64,
    ADD COLUMN IF NOT EXISTS helo_bare UInt64,
    ADD COLUMN IF NOT EXISTS tls UInt64,
    ADD COLUMN IF NOT EXISTS auth_login UInt64,
    ADD COLUMN IF NOT EXISTS auth_ok_after_fail UInt64,
    ADD COLUMN IF NOT EXISTS sent_after_fail UInt64,
    ADD COLUMN IF NOT EXISTS deliveries UInt64,
    ADD COLUMN IF NOT EXISTS delivery_failures UInt64,
    ADD COLUMN IF NOT EXISTS passwords Array(UInt64),
    ADD COLUMN IF NOT EXISTS failed_passwords Array(UInt64);

DROP VIEW IF EXISTS activity_in_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS activity_in_mv TO activity AS
SELECT
    entity_kind,
    entity,
    minute,
    events,
    auth_attempts,
    auth_failures,
    rcpt,
    rcpt_rejected,
    rcpt_unknown,
    messages,
    message_rcpts,
    max_message_rcpts,
    invalid_commands,
    throttled,
    arrayReduce('uniqState', users_tried) AS users_tried,
    arrayReduce('uniqState', ips) AS ips,
    arrayReduce('uniqState', nets) AS nets,
    arrayReduce('uniqState', recipients) AS recipients,
    arrayReduce('uniqState', recipient_domains) AS recipient_domains,
    arrayReduce('uniqState', sessions) AS sessions,
    arrayReduce('uniqState', data_sessions) AS data_sessions,
    null_senders,
    rsets,
    closes,
    quits,
    session_ms,
    session_commands,
    helo_literal,
    helo_bare,
    tls,
    auth_login,
    auth_ok_after_fail,
    sent_after_fail,
    deliveries,
    delivery_failures,
    arrayReduce('uniqState', passwords) AS passwords,
    arrayReduce('uniqState', failed_passwords) AS failed_passwords
FROM activity_in;

ALTER TABLE activity_hourly
    ADD COLUMN IF NOT EXISTS deliveries SimpleAggregateFunction(sum, UInt64),
    ADD COLUMN IF NOT EXISTS delivery_failures SimpleAggregateFunction(sum, UInt64);

ALTER TABLE activity_hourly_in
    ADD COLUMN IF NOT EXISTS deliveries UInt64,
    ADD COLUMN IF NOT EXISTS delivery_failures UInt64;

DROP VIEW IF EXISTS activity_hourly_in_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS activity_hourly_in_mv TO activity_hourly AS
SELECT
    entity_kind,
    entity,
    hour,
    events,
    active_minutes,
    auth_attempts,
    auth_failures,
    rcpt,
    rcpt_unknown,
    messages,
    arrayReduce('uniqState', users_tried) AS users_tried,
    arrayReduce('uniqState', ips) AS ips,
    arrayReduce('uniqState', recipients) AS recipients,
    deliveries,
    delivery_failures
FROM activity_hourly_in;
