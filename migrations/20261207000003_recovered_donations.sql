-- A donation recreated from Stripe by `quickdonate events backfill` after a restore from backup
-- lost its row: when it was recovered. It holds what Stripe knows (campaign, amount, fee cover,
-- payment, refunds, disputes) and no donor details, which Stripe never had: its donor fields are
-- empty, and no receipt is ever owed for it.
ALTER TABLE donations ADD COLUMN recovered_at timestamptz;
