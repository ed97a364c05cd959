-- Velocity: every stay of a lead or deal in a stage (marketing, inside
-- sales, field sales, each open field-sales phase), with the lead's split
-- values, one row each; rewritten with the journey's other rows. Open stays
-- end at 9223372036854775807 (and on that day); a stay without a first
-- contact has it at that moment too. Journeys now keep the stays, and
-- phase changes name their lead, so everything is rebuilt from the
-- department streams.

CREATE TABLE stay_facts (
    lead_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    stage TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT NOT NULL,
    end_day BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    first_contact_at BIGINT NOT NULL,
    contact_day BIGINT NOT NULL,
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

CREATE INDEX stay_facts_by_end_day ON stay_facts (end_day);
CREATE INDEX stay_facts_by_ended_at ON stay_facts (ended_at);
CREATE INDEX stay_facts_by_contact_day ON stay_facts (contact_day);

DELETE FROM flow_counts;
DELETE FROM cohort_counts;
DELETE FROM money_facts;
DELETE FROM journeys;
DELETE FROM account_leads;
DELETE FROM account_values;
DELETE FROM visitor_days;
DELETE FROM visitor_spans;
DELETE FROM cursors;
