//! Which Stripe events we apply, by their type, and what each is about. Ingest stores every
//! verified event and marks the others ignored; the planner reads an event's object by its
//! kind; a replay refuses a type we never apply.

/// What an event of a Stripe type is about, and so how it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `payment_intent.*`: a donation's PaymentIntent.
    PaymentIntent,
    /// `charge.*`, but a dispute's or a refund's: a charge of a payment.
    Charge,
    /// `refund.*`, and `charge.refund.updated`: a refund of a payment.
    Refund,
    /// `charge.dispute.*`: a dispute of a payment.
    Dispute,
    /// `payout.*`: a payout of the account's balance, recorded and reconciled.
    Payout,
    /// Any other type (another product's, a customer's, ...): stored, never applied.
    Other,
}

impl EventKind {
    /// The kind of an event of Stripe type `kind` (`payment_intent.succeeded`).
    pub fn of(kind: &str) -> Self {
        if kind.starts_with("payment_intent.") {
            Self::PaymentIntent
        } else if kind.starts_with("charge.dispute.") {
            Self::Dispute
        } else if kind.starts_with("refund.") || kind == "charge.refund.updated" {
            Self::Refund
        } else if kind.starts_with("charge.") {
            Self::Charge
        } else if kind.starts_with("payout.") {
            Self::Payout
        } else {
            Self::Other
        }
    }

    /// Whether we apply events of this kind.
    pub fn is_applied(self) -> bool {
        self != Self::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_we_apply_has_its_kind_and_every_other_is_ignored() {
        for (kind, of) in [
            ("payment_intent.succeeded", EventKind::PaymentIntent),
            ("payment_intent.payment_failed", EventKind::PaymentIntent),
            ("charge.succeeded", EventKind::Charge),
            ("charge.refunded", EventKind::Charge),
            ("charge.updated", EventKind::Charge),
            ("charge.refund.updated", EventKind::Refund),
            ("refund.created", EventKind::Refund),
            ("refund.failed", EventKind::Refund),
            ("charge.dispute.created", EventKind::Dispute),
            ("charge.dispute.funds_reinstated", EventKind::Dispute),
            ("payout.paid", EventKind::Payout),
            ("payout.reconciliation_completed", EventKind::Payout),
            ("customer.created", EventKind::Other),
            ("invoice.paid", EventKind::Other),
            ("payment_method.attached", EventKind::Other),
            ("charges.succeeded", EventKind::Other),
        ] {
            assert_eq!(EventKind::of(kind), of, "{kind}");
            assert_eq!(
                EventKind::of(kind).is_applied(),
                of != EventKind::Other,
                "{kind}"
            );
        }
    }
}
