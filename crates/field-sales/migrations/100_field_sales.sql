-- Field sales' own tables. Portable SQL; see themodel-runtime's db module.
CREATE TABLE opportunities (
    opportunity_id TEXT PRIMARY KEY,
    lead_id TEXT NOT NULL,
    company TEXT NOT NULL,
    contact_name TEXT NOT NULL,
    contact_email TEXT NOT NULL,
    source TEXT NOT NULL,
    phase TEXT NOT NULL,
    -- BantRecord as JSON.
    bant TEXT NOT NULL,
    -- Money as JSON, NULL when not given.
    estimated_value TEXT,
    contract_value TEXT,
    term_months BIGINT NOT NULL,
    account_id TEXT NOT NULL,
    lost_reason TEXT NOT NULL,
    quality BIGINT NOT NULL,
    opened_at BIGINT NOT NULL,
    closed_at BIGINT,
    definition_version BIGINT NOT NULL,
    -- Stage history: [{from, to, at}] as JSON.
    history TEXT NOT NULL
);
CREATE INDEX opportunities_by_open ON opportunities (opened_at, opportunity_id);
CREATE INDEX opportunities_by_phase ON opportunities (phase, opened_at);
