-- Erasing a person finds the stored responses about them through the audit
-- log's index on the record (every applied request has an entry there), and
-- `subject` only confirms each one. An index of its own on `subject` cost
-- every write one more page in a part of the index picked at random.
DROP INDEX idempotency_by_subject;
