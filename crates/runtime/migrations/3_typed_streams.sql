-- Events become typed protobuf messages (google.protobuf.Any: a type URL and
-- the encoded message), a hand-over becomes the receiver's encoded request,
-- and idempotency records keep the encoded response. The JSON shapes of the
-- first version do not carry over: the stream starts again under a new id
-- (consumers see a replaced stream and read it from seq 1).
--
-- BYTEA is PostgreSQL's binary type; SQLite gives the name NUMERIC affinity,
-- which stores binary values unchanged, so the same DDL serves both.

DROP TABLE events;
CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    recorded_at BIGINT NOT NULL,
    type_url TEXT NOT NULL,
    payload BYTEA NOT NULL
);
UPDATE stream_head SET seq = 0, stream_id = '' WHERE id = 1;

DROP TABLE outbox;
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    destination TEXT NOT NULL,
    method TEXT NOT NULL,
    type_url TEXT NOT NULL,
    body BYTEA NOT NULL,
    subject_id TEXT NOT NULL,
    -- W3C traceparent of the request that made the hand-over ('' if none).
    trace TEXT NOT NULL,
    -- pending | delivered | dead | dropped
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT,
    delivered_at BIGINT,
    dead_at BIGINT,
    last_error_code TEXT NOT NULL,
    last_error TEXT NOT NULL
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at, created_at);
CREATE INDEX outbox_by_destination ON outbox (destination, state);

DROP TABLE idempotency;
CREATE TABLE idempotency (
    request_key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    response BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
