-- Card testing through one client secret: a bot makes one donation, then tries card after card
-- against its PaymentIntent. Each declined attempt (its charge) is counted once per donation,
-- whatever the events' order or repeats; at DECLINES_PER_PAYMENT the PaymentIntent is
-- cancelled at Stripe and the donation given up. Each decline also counts against the caps of
-- the address and email that made the donation: the address by the SHA-256 the caps use
-- (`client_key`), never the address itself.
CREATE TABLE payment_declines (
    donation_id uuid NOT NULL REFERENCES donations (id),
    charge_id   text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (donation_id, charge_id)
);
ALTER TABLE donations ADD COLUMN declines integer NOT NULL DEFAULT 0;
ALTER TABLE donations ADD COLUMN client_key bytea;
