-- Plumbing every service has in its own database: the ordered event stream,
-- the transactional outbox and the idempotency record.
-- Portable SQL (SQLite and PostgreSQL): BIGINT / TEXT / DOUBLE PRECISION only,
-- times as microseconds since the Unix epoch, ids assigned by the application.

-- The stream's head. Appending takes this row's lock (UPDATE ... RETURNING), so
-- sequence numbers are committed in order even with concurrent writers on
-- PostgreSQL: a consumer that reads past seq N never later finds a smaller one.
CREATE TABLE stream_head (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL
);
INSERT INTO stream_head (id, seq) VALUES (1, 0);

CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    recorded_at BIGINT NOT NULL,
    definition_version BIGINT NOT NULL,
    payload TEXT NOT NULL
);

CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    destination TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT,
    delivered_at BIGINT,
    last_error TEXT
);
CREATE INDEX outbox_pending ON outbox (next_attempt_at) WHERE delivered_at IS NULL;

CREATE TABLE idempotency (
    request_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
