-- Each lead's rep (owner) and the rep's team; empty while unassigned. The
-- call list can be read per rep.
ALTER TABLE queue ADD COLUMN owner_id TEXT NOT NULL DEFAULT '';
ALTER TABLE queue ADD COLUMN team TEXT NOT NULL DEFAULT '';
CREATE INDEX queue_owner_call_list ON queue (owner_id, status, follow_up_due_at, score, lead_id);
