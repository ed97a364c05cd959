-- The latest note given with a hand-over, recycle or exclusion (notes are
-- free text about a person: kept here, where erasure reaches them, and in
-- no event), and when the lead's person was erased.
ALTER TABLE leads ADD COLUMN note TEXT NOT NULL DEFAULT '';
ALTER TABLE leads ADD COLUMN erased_at BIGINT;
