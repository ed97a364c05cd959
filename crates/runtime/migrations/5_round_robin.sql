-- Where each round-robin assignment rule stands: the turn of the next
-- record it assigns (see the owners module).
CREATE TABLE round_robin (
    rule TEXT PRIMARY KEY,
    turn BIGINT NOT NULL
);
