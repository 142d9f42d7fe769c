-- Which instance holds a receipt's claim: its connections' application_name, as for events
-- (20261201000001). A claim whose instance has no session left on the database (it was killed,
-- or lost its machine) is released by the next instance to start, or within half a minute by
-- any running sender, rather than when its two-minute lease runs out.
ALTER TABLE receipts ADD COLUMN claimed_instance text;
