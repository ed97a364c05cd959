-- Targets per period: every version kept (who set what, when); the highest
-- version of a period is its current set. body is a prost-encoded
-- themodel.kpi.v1.TargetSet.
CREATE TABLE targets (
    start_day BIGINT NOT NULL,
    end_day BIGINT NOT NULL,
    version BIGINT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (start_day, end_day, version)
);
