-- Each opportunity's account executive (owner) and the executive's team,
-- empty while unassigned, and the inside-sales rep who handed it over.
ALTER TABLE opportunities ADD COLUMN owner_id TEXT NOT NULL DEFAULT '';
ALTER TABLE opportunities ADD COLUMN team TEXT NOT NULL DEFAULT '';
ALTER TABLE opportunities ADD COLUMN handed_over_by TEXT NOT NULL DEFAULT '';
CREATE INDEX opportunities_by_owner ON opportunities (owner_id, opened_at, opportunity_id);
