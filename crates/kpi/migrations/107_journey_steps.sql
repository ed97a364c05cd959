-- Journeys now keep recycles and the visitor id a lead identified as, for
-- GetJourney: rebuilt from the department streams.
DELETE FROM flow_counts;
DELETE FROM cohort_counts;
DELETE FROM money_facts;
DELETE FROM journeys;
DELETE FROM account_leads;
DELETE FROM visitor_days;
DELETE FROM visitor_spans;
DELETE FROM cursors;
