-- The kpi service's own tables. Portable SQL; see themodel-runtime's db module.

-- How far each source stream has been applied. Updated in the transaction
-- that applies the events, so a restart neither skips nor repeats any.
CREATE TABLE cursors (
    source TEXT PRIMARY KEY,
    applied_seq BIGINT NOT NULL
);

-- Flow counts per business day (days since 1970-01-01 in the business time
-- zone): a funnel over any period is a range sum, never a scan of facts.
CREATE TABLE daily_counts (
    day BIGINT NOT NULL,
    metric TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (day, metric)
);

-- Visitors are counted distinct over the period, so presence is kept per day.
CREATE TABLE visitor_days (
    day BIGINT NOT NULL,
    visitor_id TEXT NOT NULL,
    PRIMARY KEY (day, visitor_id)
);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Every published version of the shared quality definition.
CREATE TABLE definitions (
    version BIGINT PRIMARY KEY,
    body TEXT NOT NULL,
    published_at BIGINT NOT NULL
);
