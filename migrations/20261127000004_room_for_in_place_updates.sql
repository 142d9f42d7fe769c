-- The worker updates a donation several times over its life, touching no indexed column;
-- room on each page lets Postgres update in place (HOT) without touching the indexes.
ALTER TABLE donations SET (fillfactor = 80);
