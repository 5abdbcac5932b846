-- Issue 14: accepted mail is delivered onward, and every attempt is an event (kind 'delivery', one
-- row per recipient: next hop in detail, reply code, RFC 3463 status, duration; user is the
-- authenticated user of the session that submitted the message). Adding an Enum8 value is a
-- metadata-only change, and MODIFY COLUMN with the full value list is idempotent: running it again
-- (a crash before the migration was recorded) changes nothing.
ALTER TABLE events MODIFY COLUMN kind Enum8('connect' = 1, 'ehlo' = 2, 'starttls' = 3, 'auth' = 4, 'mail' = 5, 'rcpt' = 6,
                                            'data' = 7, 'rset' = 8, 'invalid' = 9, 'close' = 10, 'throttle' = 11, 'delivery' = 12);
