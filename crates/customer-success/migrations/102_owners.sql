-- Each account's customer success manager (owner) and the manager's team,
-- empty while unassigned; where the round-robin rule stands is in
-- round_robin (runtime migration 5).
ALTER TABLE accounts ADD COLUMN owner_id TEXT NOT NULL DEFAULT '';
ALTER TABLE accounts ADD COLUMN team TEXT NOT NULL DEFAULT '';
CREATE INDEX accounts_by_owner ON accounts (owner_id, started_at, account_id);
