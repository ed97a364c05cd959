-- Counts writer transactions: each bumps it when it begins. A writer that
-- finds it moved by more than its own commits knows another writer changed
-- the service's rows, and forgets the rows it cached (see the cache module).
ALTER TABLE stream_head ADD COLUMN writes BIGINT NOT NULL DEFAULT 0;
