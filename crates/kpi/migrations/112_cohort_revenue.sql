-- Revenue in the cohort view: each amount also carries the business day its
-- lead was captured (-1 until the capture is read), so the money a period's
-- leads brought can be summed whenever it came. The column is filled from
-- the journeys, so everything is rebuilt from the department streams.
ALTER TABLE money_facts ADD COLUMN capture_day BIGINT NOT NULL DEFAULT -1;
CREATE INDEX money_facts_by_capture_day ON money_facts (capture_day);

DELETE FROM flow_counts;
DELETE FROM cohort_counts;
DELETE FROM money_facts;
DELETE FROM stay_facts;
DELETE FROM journeys;
DELETE FROM account_leads;
DELETE FROM account_values;
DELETE FROM visitor_days;
DELETE FROM visitor_spans;
DELETE FROM cursors;
