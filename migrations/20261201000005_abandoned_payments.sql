-- Abandoned payments: a donation still waiting for its payment after ABANDONED_AFTER has its
-- PaymentIntent cancelled at Stripe and becomes `canceled`.
--
-- `abandon_checked_at` is when an instance last took the donation to cancel it. It claims the
-- donation across instances (one Stripe call, not one per instance), and a PaymentIntent that
-- Stripe would not cancel (it succeeded or is processing, and its events are on their way) is
-- not asked again for an hour.
ALTER TABLE donations ADD COLUMN abandon_checked_at timestamptz;

-- The sweep's scan: only donations still waiting, oldest first. Small, since most donations
-- leave these states within minutes.
CREATE INDEX donations_awaiting_payment ON donations (created_at)
    WHERE status IN ('pending', 'failed');
