-- Which instance holds a claim: its connections' application_name. A claim whose instance has
-- no session left (it was killed, or lost its machine) is released at once by the next
-- instance to look, rather than when its lease runs out minutes later.
ALTER TABLE stripe_events ADD COLUMN claimed_instance text;
