-- Periods in any time zone, per request. The sums are kept per UTC day
-- instead of per day of one business time zone, and each lead's facts are
-- kept with their moments, so a period in another zone reads the partial UTC
-- days at its edges from the facts (see crates/kpi/src/span.rs). Nothing
-- stored depends on the deployment's time zone any more. Every table is
-- rebuilt from the department streams.

DROP TABLE money_facts;
CREATE TABLE money_facts (
    lead_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    currency TEXT NOT NULL,
    units BIGINT NOT NULL,
    nanos BIGINT NOT NULL,
    -- When the lead was captured; -1 until the capture is read.
    captured_at BIGINT NOT NULL,
    source TEXT NOT NULL,
    campaign TEXT NOT NULL,
    channel TEXT NOT NULL,
    industry TEXT NOT NULL,
    company_size_band TEXT NOT NULL,
    job_title_class TEXT NOT NULL,
    definition_version TEXT NOT NULL,
    inside_sales_rep TEXT NOT NULL,
    inside_sales_team TEXT NOT NULL,
    account_executive TEXT NOT NULL,
    customer_success_manager TEXT NOT NULL,
    PRIMARY KEY (lead_id, n)
);
CREATE INDEX money_facts_by_at ON money_facts (at);
CREATE INDEX money_facts_by_captured_at ON money_facts (captured_at);

DROP TABLE stay_facts;
CREATE TABLE stay_facts (
    lead_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    stage TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    -- The moments not come yet are the largest BIGINT.
    ended_at BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    first_contact_at BIGINT NOT NULL,
    source TEXT NOT NULL,
    campaign TEXT NOT NULL,
    channel TEXT NOT NULL,
    industry TEXT NOT NULL,
    company_size_band TEXT NOT NULL,
    job_title_class TEXT NOT NULL,
    definition_version TEXT NOT NULL,
    inside_sales_rep TEXT NOT NULL,
    inside_sales_team TEXT NOT NULL,
    account_executive TEXT NOT NULL,
    customer_success_manager TEXT NOT NULL,
    PRIMARY KEY (lead_id, n)
);
CREATE INDEX stay_facts_by_ended_at ON stay_facts (ended_at);
CREATE INDEX stay_facts_by_first_contact_at ON stay_facts (first_contact_at);

DROP TABLE account_values;
CREATE TABLE account_values (
    account_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    at BIGINT NOT NULL,
    currency TEXT NOT NULL,
    units BIGINT NOT NULL,
    nanos BIGINT NOT NULL,
    PRIMARY KEY (account_id, n)
);
CREATE INDEX account_values_by_at ON account_values (at);

-- Each lead's flow events, one row each.
CREATE TABLE flow_facts (
    lead_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    metric TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (lead_id, n)
);
CREATE INDEX flow_facts_by_at ON flow_facts (at);

-- Each lead's cohort stages, one row per stage first reached: in the
-- lead's own cohort (cohort 'lead', from its capture), or in the cohort of
-- one of its recycles (cohort 'recycle', with its reason, from the recycle).
CREATE TABLE cohort_facts (
    lead_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    cohort TEXT NOT NULL,
    reason TEXT NOT NULL,
    stage TEXT NOT NULL,
    entered_at BIGINT NOT NULL,
    reached_at BIGINT NOT NULL,
    PRIMARY KEY (lead_id, n)
);
CREATE INDEX cohort_facts_by_entered_at ON cohort_facts (entered_at);
CREATE INDEX cohort_facts_by_reached_at ON cohort_facts (reached_at);

-- Each lead's value of every dimension, for the facts to be split by.
CREATE TABLE lead_values (
    lead_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    campaign TEXT NOT NULL,
    channel TEXT NOT NULL,
    industry TEXT NOT NULL,
    company_size_band TEXT NOT NULL,
    job_title_class TEXT NOT NULL,
    definition_version TEXT NOT NULL,
    inside_sales_rep TEXT NOT NULL,
    inside_sales_team TEXT NOT NULL,
    account_executive TEXT NOT NULL,
    customer_success_manager TEXT NOT NULL
);

-- Each visitor's quarter-hours with a visit: the partial days of a period
-- (visitor_days keeps the UTC days).
CREATE TABLE visitor_quarters (
    visitor_id TEXT NOT NULL,
    quarter BIGINT NOT NULL,
    PRIMARY KEY (visitor_id, quarter)
);
CREATE INDEX visitor_quarters_by_quarter ON visitor_quarters (quarter);

DELETE FROM meta WHERE key = 'time_zone';
DELETE FROM flow_counts;
DELETE FROM cohort_counts;
DELETE FROM journeys;
DELETE FROM account_leads;
DELETE FROM visitor_days;
DELETE FROM visitor_spans;
DELETE FROM cursors;
