-- Marketing's own tables. Portable SQL; see themodel-runtime's db module.
CREATE TABLE leads (
    lead_id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    -- Lower-cased e-mail: one lead per address.
    email_key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    company TEXT NOT NULL,
    company_size BIGINT NOT NULL,
    industry TEXT NOT NULL,
    job_title TEXT NOT NULL,
    source TEXT NOT NULL,
    campaign TEXT NOT NULL,
    visitor_id TEXT NOT NULL,
    relationship TEXT NOT NULL,
    status TEXT NOT NULL,
    exclusion_reason TEXT NOT NULL,
    attribute_score BIGINT NOT NULL,
    behaviour_score BIGINT NOT NULL,
    -- Touches counted in the behaviour score (since the last recycle), by kind, as JSON.
    scored_touches TEXT NOT NULL,
    touch_count BIGINT NOT NULL,
    definition_version BIGINT NOT NULL,
    recycle_reason TEXT NOT NULL,
    captured_at BIGINT NOT NULL,
    handed_over_at BIGINT
);
CREATE INDEX leads_by_capture ON leads (captured_at, lead_id);
CREATE INDEX leads_by_visitor ON leads (visitor_id, captured_at);

CREATE TABLE visits (
    visit_id TEXT PRIMARY KEY,
    visitor_id TEXT NOT NULL,
    page TEXT NOT NULL,
    product_page BIGINT NOT NULL,
    occurred_at BIGINT NOT NULL,
    lead_id TEXT
);
CREATE INDEX visits_by_visitor ON visits (visitor_id);

CREATE TABLE touches (
    touch_id TEXT PRIMARY KEY,
    lead_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    occurred_at BIGINT NOT NULL
);
CREATE INDEX touches_by_lead ON touches (lead_id, occurred_at);
