-- Sums per run of UTC days: each day, each 8 days and each 64 days (see
-- crates/kpi/src/span.rs), so a year is read from at most 33 runs instead
-- of 365 days, whatever the number of leads. Revenue is summed the same
-- way, by the day each amount is dated (flow view) and by the day its
-- lead was captured (cohort view), instead of being read amount by amount.
-- cohort_counts keeps the cohorts by day reached, for cohorts "as of" a day.
-- Every table is rebuilt from the department streams.

DROP TABLE flow_counts;

-- Flow view: events per run, per dimension value ('' and '' for the totals).
CREATE TABLE flow_sums (
    dim TEXT NOT NULL,
    width BIGINT NOT NULL,
    start BIGINT NOT NULL,
    value TEXT NOT NULL,
    metric TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (dim, width, start, value, metric)
);

-- Cohort view: the leads that entered a cohort in the run and reached a
-- stage, whenever they reached it.
CREATE TABLE cohort_sums (
    dim TEXT NOT NULL,
    width BIGINT NOT NULL,
    start BIGINT NOT NULL,
    value TEXT NOT NULL,
    stage TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (dim, width, start, value, stage)
);

-- Revenue per run, 'dated' by the amount's day or 'captured' by its lead's
-- capture day. An amount in nanos is kept as three limbs, low + middle *
-- 2^31 + high * 2^62 (low and middle below 2^31), each summed on its own:
-- no sum of fewer than 2^32 amounts overflows a BIGINT, and the exact
-- total is put together when read.
CREATE TABLE money_sums (
    dated_by TEXT NOT NULL,
    dim TEXT NOT NULL,
    width BIGINT NOT NULL,
    start BIGINT NOT NULL,
    value TEXT NOT NULL,
    kind TEXT NOT NULL,
    currency TEXT NOT NULL,
    low BIGINT NOT NULL,
    middle BIGINT NOT NULL,
    high BIGINT NOT NULL,
    PRIMARY KEY (dated_by, dim, width, start, value, kind, currency)
);

DELETE FROM cohort_counts;
DELETE FROM journeys;
DELETE FROM account_leads;
DELETE FROM account_values;
DELETE FROM lead_values;
DELETE FROM flow_facts;
DELETE FROM cohort_facts;
DELETE FROM stay_facts;
DELETE FROM money_facts;
DELETE FROM visitor_quarters;
DELETE FROM visitor_days;
DELETE FROM visitor_spans;
DELETE FROM cursors;
