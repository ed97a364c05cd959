-- The id of the stream each cursor counts in (see ListEventsResponse.stream_id).
-- Empty until the next page is applied, which records it.
ALTER TABLE cursors ADD COLUMN stream_id TEXT NOT NULL DEFAULT '';
