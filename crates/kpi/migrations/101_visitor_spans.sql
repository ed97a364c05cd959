-- Distinct visitors over a period come from an index (see the visitors
-- module) instead of a COUNT(DISTINCT) over every visit day in the period.

-- Keyed by visitor first: applying a visit looks up that visitor's nearest
-- earlier and later visit days.
DROP TABLE visitor_days;
CREATE TABLE visitor_days (
    visitor_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    PRIMARY KEY (visitor_id, day)
);

-- Fenwick cells over "previous visit day", per visit day.
CREATE TABLE visitor_spans (
    node BIGINT NOT NULL,
    day BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (node, day)
);

-- Every aggregate is derived from the services' event streams: read them
-- again from the start to fill the new index.
DELETE FROM daily_counts;
DELETE FROM cursors;
