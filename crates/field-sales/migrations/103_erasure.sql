-- When the opportunity's contact was erased (contact fields and notes are
-- then empty).
ALTER TABLE opportunities ADD COLUMN erased_at BIGINT;
