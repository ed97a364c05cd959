-- Customer success' tables for typed values and group commit. Portable SQL;
-- see themodel-runtime's db module. Money is three columns, not JSON. The
-- first version's rows do not carry over (its event stream starts again too).
DROP TABLE accounts;
DROP TABLE renewals;

CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY,
    opportunity_id TEXT NOT NULL,
    lead_id TEXT NOT NULL,
    company TEXT NOT NULL,
    contact_name TEXT NOT NULL,
    contact_email TEXT NOT NULL,
    status TEXT NOT NULL,
    contract_currency TEXT NOT NULL,
    contract_units BIGINT NOT NULL,
    contract_nanos BIGINT NOT NULL,
    term_months BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    term_ends_at BIGINT NOT NULL,
    renewals BIGINT NOT NULL,
    expansions BIGINT NOT NULL,
    churned_at BIGINT,
    churn_reason TEXT NOT NULL
);
CREATE INDEX accounts_by_start ON accounts (started_at, account_id);
CREATE INDEX accounts_by_status ON accounts (status, started_at, account_id);

CREATE TABLE renewals (
    renewal_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    term_months BIGINT NOT NULL,
    contract_currency TEXT NOT NULL,
    contract_units BIGINT NOT NULL,
    contract_nanos BIGINT NOT NULL,
    occurred_at BIGINT NOT NULL
);
CREATE INDEX renewals_by_account ON renewals (account_id, occurred_at);
