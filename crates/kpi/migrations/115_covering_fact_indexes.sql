-- The facts' time indexes hold what the reads by time need, so those reads
-- never look a row up in its table (on SQLite that lookup was most of the
-- time of reading a partial day in a zone other than UTC, or a cohort as
-- of a day): each index leads with its moment, then the columns the
-- queries filter, group and sum by, and the lead, for the join that files
-- a fact under its lead's dimension values. Reads that used the old
-- indexes use the new ones the same way.

DROP INDEX flow_facts_by_at;
CREATE INDEX flow_facts_by_at ON flow_facts (at, metric, lead_id);

DROP INDEX cohort_facts_by_entered_at;
CREATE INDEX cohort_facts_by_entered_at ON cohort_facts (entered_at, cohort, reached_at, stage, reason, lead_id);

DROP INDEX cohort_facts_by_reached_at;
CREATE INDEX cohort_facts_by_reached_at ON cohort_facts (reached_at, cohort, entered_at, stage, reason, lead_id);

DROP INDEX money_facts_by_at;
CREATE INDEX money_facts_by_at ON money_facts (at, kind, currency, units, nanos);

DROP INDEX money_facts_by_captured_at;
CREATE INDEX money_facts_by_captured_at ON money_facts (captured_at, at, kind, currency, units, nanos);
