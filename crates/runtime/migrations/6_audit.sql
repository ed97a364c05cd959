-- The audit log: one row per change a caller made (an applied unit of
-- work), in commit order. `writes` is the transaction's number (see
-- migration 4), `position` the unit's place in it.
CREATE TABLE audit_log (
    writes BIGINT NOT NULL,
    position BIGINT NOT NULL,
    at BIGINT NOT NULL,
    -- The caller's identity and role ('' for a call without a credential,
    -- on a service that runs without a keyring).
    identity TEXT NOT NULL,
    role TEXT NOT NULL,
    method TEXT NOT NULL,
    request_id TEXT NOT NULL,
    -- The record the call changed, when it was one ('' otherwise), and how
    -- many it changed.
    record TEXT NOT NULL,
    records BIGINT NOT NULL,
    PRIMARY KEY (writes, position)
);
CREATE INDEX audit_by_record ON audit_log (record, writes, position);
CREATE INDEX audit_by_identity ON audit_log (identity, writes, position);

-- The record a stored response is about, so erasing a person can reach
-- the responses that carry their data; erased_at is set when it did.
ALTER TABLE idempotency ADD COLUMN subject TEXT NOT NULL DEFAULT '';
ALTER TABLE idempotency ADD COLUMN erased_at BIGINT;
CREATE INDEX idempotency_by_subject ON idempotency (subject);
