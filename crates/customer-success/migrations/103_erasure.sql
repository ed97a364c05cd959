-- When the account's contact was erased (contact fields are then empty).
ALTER TABLE accounts ADD COLUMN erased_at BIGINT;
