-- Journeys now keep the customer success manager of the account each lead's
-- deal went into (a split dimension), and the aggregates count recycles and
-- what followed them (in total and per recycle reason): rebuilt from the
-- department streams.
ALTER TABLE money_facts ADD COLUMN customer_success_manager TEXT NOT NULL DEFAULT '';

DELETE FROM flow_counts;
DELETE FROM cohort_counts;
DELETE FROM money_facts;
DELETE FROM journeys;
DELETE FROM account_leads;
DELETE FROM account_values;
DELETE FROM visitor_days;
DELETE FROM visitor_spans;
DELETE FROM cursors;
