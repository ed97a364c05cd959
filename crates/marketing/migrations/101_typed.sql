-- Marketing's tables for typed values and group commit. Portable SQL; see
-- themodel-runtime's db module. The first version's rows do not carry over
-- (its event stream starts again too).
DROP TABLE touches;
DROP TABLE visits;
DROP TABLE leads;

CREATE TABLE leads (
    lead_id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    -- Email::key: the whole address lower-cased. One lead per address.
    email_key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    company TEXT NOT NULL,
    company_size BIGINT NOT NULL,
    industry TEXT NOT NULL,
    job_title TEXT NOT NULL,
    source TEXT NOT NULL,
    campaign TEXT NOT NULL,
    channel TEXT NOT NULL,
    visitor_id TEXT NOT NULL,
    relationship TEXT NOT NULL,
    status TEXT NOT NULL,
    exclusion_reason TEXT NOT NULL,
    attribute_score BIGINT NOT NULL,
    behaviour_score BIGINT NOT NULL,
    -- Touches counted in the behaviour score (since the last recycle), by kind:
    -- "KIND=n,KIND=n".
    scored_touches TEXT NOT NULL,
    touch_count BIGINT NOT NULL,
    definition_version BIGINT NOT NULL,
    recycle_reason TEXT NOT NULL,
    recycled_by TEXT NOT NULL,
    captured_at BIGINT NOT NULL,
    handed_over_at BIGINT,
    recycled_at BIGINT
);
CREATE INDEX leads_by_capture ON leads (captured_at, lead_id);
CREATE INDEX leads_by_status ON leads (status, captured_at, lead_id);

-- One row per visitor: the lead it identified as, and the visits it made
-- while anonymous (they join the lead at capture).
CREATE TABLE visitors (
    visitor_id TEXT PRIMARY KEY,
    lead_id TEXT NOT NULL,
    lead_captured_at BIGINT NOT NULL,
    page_views BIGINT NOT NULL,
    product_views BIGINT NOT NULL
);

CREATE TABLE visits (
    visit_id TEXT PRIMARY KEY,
    visitor_id TEXT NOT NULL,
    page TEXT NOT NULL,
    product_page BIGINT NOT NULL,
    channel TEXT NOT NULL,
    campaign TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    lead_id TEXT NOT NULL,
    -- A pipeline's id for the visit; a repeated one is a duplicate.
    event_id TEXT
);
CREATE UNIQUE INDEX visits_by_event ON visits (event_id) WHERE event_id IS NOT NULL;

CREATE TABLE touches (
    lead_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    -- A pipeline's id for the touch; a repeated one is a duplicate.
    event_id TEXT
);
CREATE UNIQUE INDEX touches_by_event ON touches (event_id) WHERE event_id IS NOT NULL;
