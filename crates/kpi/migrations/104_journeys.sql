-- Counts come from each lead's journey (see the journey module) and can be
-- split by the lead's facts. The per-day flow counts gain the dimension and
-- its value ('' and '' for the totals); the cohort view gets its own counts.
-- Everything is rebuilt from the department streams.

DROP TABLE daily_counts;

-- Flow view: events per business day, per dimension value.
CREATE TABLE flow_counts (
    dim TEXT NOT NULL,
    value TEXT NOT NULL,
    day BIGINT NOT NULL,
    metric TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (dim, value, day, metric)
);

-- Cohort view: distinct leads per capture day that first reached a stage on
-- a given day, per dimension value. "As of" a date sums reached_day <= it.
CREATE TABLE cohort_counts (
    dim TEXT NOT NULL,
    value TEXT NOT NULL,
    capture_day BIGINT NOT NULL,
    stage TEXT NOT NULL,
    reached_day BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (dim, value, capture_day, stage, reached_day)
);

-- Every fact kpi has read about a lead (a prost-encoded journey).
CREATE TABLE journeys (
    lead_id TEXT PRIMARY KEY,
    body BYTEA NOT NULL
);

-- The leads whose won deals went into an account; opening = 1 for the one
-- that opened it.
CREATE TABLE account_leads (
    account_id TEXT NOT NULL,
    lead_id TEXT NOT NULL,
    opening BIGINT NOT NULL,
    PRIMARY KEY (account_id, lead_id)
);

DELETE FROM visitor_days;
DELETE FROM visitor_spans;
DELETE FROM cursors;
