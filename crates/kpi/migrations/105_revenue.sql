-- Revenue per currency: every amount a lead's deals moved, with the lead's
-- split values, one row each. Amounts are summed when read, in 128 bits:
-- two deals of the largest amount a service accepts already pass what a
-- BIGINT sum holds. A journey's rows are rewritten whenever its amounts or
-- its split values change. Journeys now keep amounts, so everything is
-- rebuilt from the department streams.

CREATE TABLE money_facts (
    lead_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    day BIGINT NOT NULL,
    kind TEXT NOT NULL,
    currency TEXT NOT NULL,
    units BIGINT NOT NULL,
    nanos BIGINT NOT NULL,
    source TEXT NOT NULL,
    campaign TEXT NOT NULL,
    channel TEXT NOT NULL,
    industry TEXT NOT NULL,
    company_size_band TEXT NOT NULL,
    job_title_class TEXT NOT NULL,
    definition_version TEXT NOT NULL,
    PRIMARY KEY (lead_id, n)
);

CREATE INDEX money_facts_by_day ON money_facts (day);

DELETE FROM flow_counts;
DELETE FROM cohort_counts;
DELETE FROM journeys;
DELETE FROM account_leads;
DELETE FROM visitor_days;
DELETE FROM visitor_spans;
DELETE FROM cursors;
