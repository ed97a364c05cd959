-- When the queue item's person was erased (contact fields and notes are
-- then empty), and the conversions of a lead, which erasure hands on.
ALTER TABLE queue ADD COLUMN erased_at BIGINT;
CREATE INDEX conversions_by_lead ON conversions (lead_id);
