-- Field sales' tables for typed values and group commit. Portable SQL; see
-- themodel-runtime's db module. Money and BANT are columns and the stage
-- history is a table, not JSON. The first version's rows do not carry over
-- (its event stream starts again too).
DROP TABLE opportunities;

CREATE TABLE opportunities (
    opportunity_id TEXT PRIMARY KEY,
    lead_id TEXT NOT NULL,
    company TEXT NOT NULL,
    contact_name TEXT NOT NULL,
    contact_email TEXT NOT NULL,
    source TEXT NOT NULL,
    phase TEXT NOT NULL,
    bant_budget BIGINT NOT NULL,
    bant_authority BIGINT NOT NULL,
    bant_need BIGINT NOT NULL,
    bant_timeline BIGINT NOT NULL,
    budget_note TEXT NOT NULL,
    authority_note TEXT NOT NULL,
    need_note TEXT NOT NULL,
    timeline_note TEXT NOT NULL,
    -- Money as currency + units + nanos; NULL currency when not set.
    estimated_currency TEXT,
    estimated_units BIGINT,
    estimated_nanos BIGINT,
    contract_currency TEXT,
    contract_units BIGINT,
    contract_nanos BIGINT,
    term_months BIGINT NOT NULL,
    account_id TEXT NOT NULL,
    lost_reason TEXT NOT NULL,
    quality BIGINT NOT NULL,
    opened_at BIGINT NOT NULL,
    closed_at BIGINT,
    definition_version BIGINT NOT NULL
);
CREATE INDEX opportunities_by_open ON opportunities (opened_at, opportunity_id);
CREATE INDEX opportunities_by_phase ON opportunities (phase, opened_at, opportunity_id);

CREATE TABLE phase_changes (
    opportunity_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    from_phase TEXT NOT NULL,
    to_phase TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    PRIMARY KEY (opportunity_id, position)
);
