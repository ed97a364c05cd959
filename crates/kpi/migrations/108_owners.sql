-- Journeys now keep each lead's inside-sales rep and team and its account
-- executive (split dimensions) and its quality opportunities: rebuilt from
-- the department streams.
ALTER TABLE money_facts ADD COLUMN inside_sales_rep TEXT NOT NULL DEFAULT '';
ALTER TABLE money_facts ADD COLUMN inside_sales_team TEXT NOT NULL DEFAULT '';
ALTER TABLE money_facts ADD COLUMN account_executive TEXT NOT NULL DEFAULT '';

DELETE FROM flow_counts;
DELETE FROM cohort_counts;
DELETE FROM money_facts;
DELETE FROM journeys;
DELETE FROM account_leads;
DELETE FROM visitor_days;
DELETE FROM visitor_spans;
DELETE FROM cursors;
