-- Inside sales' tables for typed values and group commit. Portable SQL; see
-- themodel-runtime's db module. BANT is kept as columns, not JSON. The first
-- version's rows do not carry over (its event stream starts again too).
DROP TABLE queue;
DROP TABLE activities;
DROP TABLE conversions;

CREATE TABLE queue (
    lead_id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    name TEXT NOT NULL,
    company TEXT NOT NULL,
    company_size BIGINT NOT NULL,
    industry TEXT NOT NULL,
    job_title TEXT NOT NULL,
    source TEXT NOT NULL,
    campaign TEXT NOT NULL,
    channel TEXT NOT NULL,
    score BIGINT NOT NULL,
    status TEXT NOT NULL,
    handed_over_at BIGINT NOT NULL,
    follow_up_due_at BIGINT NOT NULL,
    first_contact_at BIGINT,
    -- 1 once BANT is recorded; the flags and notes below are then set.
    bant_recorded BIGINT NOT NULL,
    bant_budget BIGINT NOT NULL,
    bant_authority BIGINT NOT NULL,
    bant_need BIGINT NOT NULL,
    bant_timeline BIGINT NOT NULL,
    budget_note TEXT NOT NULL,
    authority_note TEXT NOT NULL,
    need_note TEXT NOT NULL,
    timeline_note TEXT NOT NULL,
    activity_count BIGINT NOT NULL,
    opportunity_id TEXT NOT NULL,
    recycle_reason TEXT NOT NULL,
    disqualify_reason TEXT NOT NULL,
    definition_version BIGINT NOT NULL
);
CREATE INDEX queue_call_list ON queue (status, follow_up_due_at, score, lead_id);

CREATE TABLE activities (
    activity_id TEXT PRIMARY KEY,
    lead_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    outcome TEXT NOT NULL,
    note TEXT NOT NULL,
    occurred_at BIGINT NOT NULL
);
CREATE INDEX activities_by_lead ON activities (lead_id, occurred_at);

-- Every conversion ever made. Inside sales creates all opportunities, so the
-- primary key here is what keeps opportunity ids unique across the suite.
CREATE TABLE conversions (
    opportunity_id TEXT PRIMARY KEY,
    lead_id TEXT NOT NULL,
    quality BIGINT NOT NULL,
    converted_at BIGINT NOT NULL
);
