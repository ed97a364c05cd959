-- The stream's identity, so a consumer can tell a replaced database (a new
-- stream whose seqs start again from 1) from the one it has been reading.
-- Filled with a random id right after migrating (see events::identify).
ALTER TABLE stream_head ADD COLUMN stream_id TEXT NOT NULL DEFAULT '';
