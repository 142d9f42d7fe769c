-- /metrics counts the events set aside as failed at every scrape: a small partial index keeps
-- that count from reading the whole event log.
CREATE INDEX stripe_events_failed_idx ON stripe_events (id) WHERE state = 'failed';
