-- Customer success' own tables. Portable SQL; see themodel-runtime's db module.
CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY,
    opportunity_id TEXT NOT NULL,
    lead_id TEXT NOT NULL,
    company TEXT NOT NULL,
    contact_name TEXT NOT NULL,
    contact_email TEXT NOT NULL,
    status TEXT NOT NULL,
    -- Money as JSON.
    contract_value TEXT NOT NULL,
    term_months BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    term_ends_at BIGINT NOT NULL,
    renewals BIGINT NOT NULL,
    churned_at BIGINT,
    churn_reason TEXT NOT NULL
);
CREATE INDEX accounts_by_start ON accounts (started_at, account_id);

CREATE TABLE renewals (
    renewal_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    term_months BIGINT NOT NULL,
    contract_value TEXT NOT NULL,
    occurred_at BIGINT NOT NULL
);
CREATE INDEX renewals_by_account ON renewals (account_id, occurred_at);
