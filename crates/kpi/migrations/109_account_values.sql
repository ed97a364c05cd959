-- Each account's contract value after every change (opened, expanded,
-- renewed; churned as currency '' and 0), numbered per account in the order
-- customer success recorded them: retention is measured on these histories.
-- The table is filled from customer success' stream, so everything is
-- rebuilt from the department streams.
CREATE TABLE account_values (
    account_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    at BIGINT NOT NULL,
    day BIGINT NOT NULL,
    currency TEXT NOT NULL,
    units BIGINT NOT NULL,
    nanos BIGINT NOT NULL,
    PRIMARY KEY (account_id, n)
);

DELETE FROM flow_counts;
DELETE FROM cohort_counts;
DELETE FROM money_facts;
DELETE FROM journeys;
DELETE FROM account_leads;
DELETE FROM visitor_days;
DELETE FROM visitor_spans;
DELETE FROM cursors;
