//! The statuses of Stripe's objects as we hold them, each with its rank: how far along it is.
//! A status only ever gives way to one of a higher rank (or of the same rank seen later), so a
//! payment, a refund, a dispute and a payout end the same whatever order Stripe's events come
//! in. Every rank is here.

/// A donation's payment status, as the PaymentIntent says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Failed,
    Processing,
    Succeeded,
    Canceled,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Failed => "failed",
            Self::Processing => "processing",
            Self::Succeeded => "succeeded",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "failed" => Self::Failed,
            "processing" => Self::Processing,
            "succeeded" => Self::Succeeded,
            "canceled" => Self::Canceled,
            _ => return None,
        })
    }

    /// Breaks ties between two states seen at the same second: a payment only moves up.
    /// A failed attempt can be followed by processing or success (the donor tries another
    /// card).
    pub fn rank(self) -> i16 {
        match self {
            Self::Pending => 0,
            Self::Failed => 1,
            Self::Processing => 2,
            Self::Succeeded | Self::Canceled => 3,
        }
    }

    /// A PaymentIntent that succeeded or was canceled never moves again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Canceled)
    }
}

/// A refund's status, every one Stripe documents, and room for one it adds later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundStatus {
    Pending,
    RequiresAction,
    Succeeded,
    Failed,
    Canceled,
    /// A status we do not know: treated as pending.
    Unknown(String),
}

impl RefundStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "pending" => Self::Pending,
            "requires_action" => Self::RequiresAction,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "canceled" => Self::Canceled,
            other => Self::Unknown(other.to_owned()),
        }
    }

    /// Stripe's own word for it, as stored.
    pub fn as_stripe(&self) -> &str {
        match self {
            Self::Pending => "pending",
            Self::RequiresAction => "requires_action",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Unknown(other) => other,
        }
    }

    /// Refund statuses only move up: pending (1), succeeded (2), failed or canceled (3). A
    /// succeeded refund can still fail later; a failed one never comes back.
    pub fn rank(&self) -> i16 {
        match self {
            Self::Succeeded => 2,
            Self::Failed | Self::Canceled => 3,
            Self::Pending | Self::RequiresAction | Self::Unknown(_) => 1,
        }
    }

    /// Money that has left, or is leaving, the charity: any refund that has not failed or
    /// been canceled.
    pub fn counts(&self) -> bool {
        self.rank() < 3
    }
}

/// A dispute's status, every one Stripe documents, and room for one it adds later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisputeStatus {
    /// An inquiry (`warning_*`): the bank asks questions; no money has moved.
    WarningNeedsResponse,
    WarningUnderReview,
    WarningClosed,
    /// Stopped before it became a chargeback.
    Prevented,
    /// A chargeback: the money is withdrawn and evidence is due.
    NeedsResponse,
    UnderReview,
    Won,
    Lost,
    /// A status we do not know: treated as open, never as won.
    Unknown(String),
}

impl DisputeStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "warning_needs_response" => Self::WarningNeedsResponse,
            "warning_under_review" => Self::WarningUnderReview,
            "warning_closed" => Self::WarningClosed,
            "prevented" => Self::Prevented,
            "needs_response" => Self::NeedsResponse,
            "under_review" => Self::UnderReview,
            "won" => Self::Won,
            "lost" => Self::Lost,
            other => Self::Unknown(other.to_owned()),
        }
    }

    /// Stripe's own word for it, as stored.
    pub fn as_stripe(&self) -> &str {
        match self {
            Self::WarningNeedsResponse => "warning_needs_response",
            Self::WarningUnderReview => "warning_under_review",
            Self::WarningClosed => "warning_closed",
            Self::Prevented => "prevented",
            Self::NeedsResponse => "needs_response",
            Self::UnderReview => "under_review",
            Self::Won => "won",
            Self::Lost => "lost",
            Self::Unknown(other) => other,
        }
    }

    /// How far along a dispute is. A status only gives way to one of a higher rank, or of the
    /// same rank seen later: an inquiry to a closed inquiry, any inquiry to a chargeback (so a
    /// closed inquiry never masks the chargeback it escalated to), a chargeback to its review
    /// and its outcome. An unknown status ranks as an open chargeback.
    pub fn rank(&self) -> i16 {
        match self {
            Self::WarningNeedsResponse => 1,
            Self::WarningUnderReview => 2,
            Self::WarningClosed | Self::Prevented => 3,
            Self::NeedsResponse | Self::Unknown(_) => 4,
            Self::UnderReview => 5,
            Self::Won | Self::Lost => 6,
        }
    }

    /// Whether the bank holds the disputed money: from the chargeback until it is won (an
    /// inquiry, or a dispute prevented, moves no money). An unknown status is taken as an open
    /// chargeback.
    pub fn withdraws(&self) -> bool {
        matches!(
            self,
            Self::NeedsResponse | Self::UnderReview | Self::Lost | Self::Unknown(_)
        )
    }

    /// The word the API shows.
    pub fn word(&self) -> &'static str {
        match self {
            Self::WarningNeedsResponse | Self::WarningUnderReview => "inquiry",
            Self::WarningClosed => "inquiry_closed",
            Self::Prevented => "prevented",
            Self::NeedsResponse => "needs_response",
            Self::UnderReview => "under_review",
            Self::Won => "won",
            Self::Lost => "lost",
            Self::Unknown(_) => "open",
        }
    }
}

/// A payout's status, every one Stripe documents, and room for one it adds later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayoutStatus {
    Pending,
    InTransit,
    Paid,
    Failed,
    Canceled,
    /// A status we do not know: treated as pending.
    Unknown(String),
}

impl PayoutStatus {
    /// Every status Stripe documents, in Stripe's words, in the order a payout goes through them.
    pub const DOCUMENTED: [&'static str; 5] =
        ["pending", "in_transit", "paid", "failed", "canceled"];

    pub fn parse(s: &str) -> Self {
        match s {
            "pending" => Self::Pending,
            "in_transit" => Self::InTransit,
            "paid" => Self::Paid,
            "failed" => Self::Failed,
            "canceled" => Self::Canceled,
            other => Self::Unknown(other.to_owned()),
        }
    }

    /// Stripe's own word for it, as stored.
    pub fn as_stripe(&self) -> &str {
        match self {
            Self::Pending => "pending",
            Self::InTransit => "in_transit",
            Self::Paid => "paid",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Unknown(other) => other,
        }
    }

    /// Payout statuses only move up: pending (1), in transit (2), paid (3), failed or
    /// canceled (4). A paid payout can still fail; a failed one is over.
    pub fn rank(&self) -> i16 {
        match self {
            Self::InTransit => 2,
            Self::Paid => 3,
            Self::Failed | Self::Canceled => 4,
            Self::Pending | Self::Unknown(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISPUTES: [&str; 8] = [
        "warning_needs_response",
        "warning_under_review",
        "warning_closed",
        "prevented",
        "needs_response",
        "under_review",
        "won",
        "lost",
    ];

    #[test]
    fn every_dispute_status_stripe_documents_is_mapped_explicitly() {
        for status in DISPUTES {
            let parsed = DisputeStatus::parse(status);
            assert!(!matches!(parsed, DisputeStatus::Unknown(_)), "{status}");
            assert_eq!(parsed.as_stripe(), status);
        }
        assert_eq!(
            DisputeStatus::parse("warning_needs_response").word(),
            "inquiry"
        );
        assert_eq!(
            DisputeStatus::parse("warning_closed").word(),
            "inquiry_closed"
        );
        assert_eq!(
            DisputeStatus::parse("needs_response").word(),
            "needs_response"
        );
    }

    #[test]
    fn an_inquiry_that_escalates_outranks_every_inquiry_status() {
        let chargeback = DisputeStatus::NeedsResponse.rank();
        for inquiry in [
            "warning_needs_response",
            "warning_under_review",
            "warning_closed",
        ] {
            assert!(
                DisputeStatus::parse(inquiry).rank() < chargeback,
                "{inquiry}"
            );
        }
        assert!(DisputeStatus::UnderReview.rank() > chargeback);
        assert!(DisputeStatus::Won.rank() > DisputeStatus::UnderReview.rank());
    }

    #[test]
    fn a_dispute_status_we_do_not_know_is_open_never_won() {
        let unknown = DisputeStatus::parse("arbitration");
        assert_eq!(unknown.word(), "open");
        assert_eq!(unknown.as_stripe(), "arbitration");
        assert!(unknown.rank() < DisputeStatus::Won.rank());
        assert!(unknown.rank() > DisputeStatus::WarningClosed.rank());
    }

    #[test]
    fn refunds_and_payouts_move_up_and_keep_stripes_word() {
        let refunds = [
            "pending",
            "requires_action",
            "succeeded",
            "failed",
            "canceled",
        ];
        for status in refunds {
            let parsed = RefundStatus::parse(status);
            assert!(!matches!(parsed, RefundStatus::Unknown(_)), "{status}");
            assert_eq!(parsed.as_stripe(), status);
        }
        let ranks = refunds.map(|s| RefundStatus::parse(s).rank());
        assert_eq!(ranks, [1, 1, 2, 3, 3]);
        // What counts as refunded: a pending or succeeded refund, never a failed one.
        let counted = refunds.map(|s| RefundStatus::parse(s).counts());
        assert_eq!(counted, [true, true, true, false, false]);
        assert_eq!(RefundStatus::parse("later").rank(), 1);
        assert_eq!(RefundStatus::parse("later").as_stripe(), "later");

        let payouts = PayoutStatus::DOCUMENTED;
        for status in payouts {
            assert!(
                !matches!(PayoutStatus::parse(status), PayoutStatus::Unknown(_)),
                "{status}"
            );
            assert_eq!(PayoutStatus::parse(status).as_stripe(), status);
        }
        assert_eq!(
            payouts.map(|s| PayoutStatus::parse(s).rank()),
            [1, 2, 3, 4, 4]
        );
        assert_eq!(PayoutStatus::parse("later").rank(), 1);
    }
}
