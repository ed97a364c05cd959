-- Definitions are stored in the shape of the typed contract (recycle reasons
-- with their rules, lost reasons of their own), which the first shape does
-- not carry over to: the built-in definition is published again as
-- version 1 at start. The department streams started again too, so every
-- aggregate is rebuilt from them.
DELETE FROM definitions;
DELETE FROM daily_counts;
DELETE FROM visitor_days;
DELETE FROM visitor_spans;
DELETE FROM cursors;
