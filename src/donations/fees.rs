//! Fee cover: a donor may add enough to pay the card fee, so the charity keeps the whole gift.

/// A card fee of `percent_bps` basis points of the charged amount plus `fixed_amount` minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeModel {
    pub percent_bps: u32,
    pub fixed_amount: i64,
}

impl FeeModel {
    /// The fee model as configured (`FEE_PERCENT_BPS`, `FEE_FIXED_AMOUNT`).
    pub fn new(config: crate::config::Fees) -> Self {
        Self {
            percent_bps: config.percent_bps,
            fixed_amount: config.fixed_amount,
        }
    }

    /// The most the fee on a charge of `total` can be. Stripe rounds its fee to the minor unit;
    /// rounding our estimate up means that, whichever way Stripe rounds, the real fee is never
    /// more than this.
    pub fn fee_on(&self, total: i64) -> i64 {
        debug_assert!(total >= 0);
        let bps = i128::from(self.percent_bps);
        let percent = (i128::from(total) * bps + 9_999) / 10_000;
        i64::try_from(percent).expect("a fee on an i64 amount fits an i64") + self.fixed_amount
    }

    /// What to add to `amount` so that the charity keeps at least `amount` once the fee on the
    /// whole charge is taken: the least `extra` with `amount + extra - fee(amount + extra) >= amount`.
    pub fn cover_for(&self, amount: i64) -> i64 {
        assert!(amount > 0, "fee cover is for positive amounts");
        assert!(
            self.percent_bps < 10_000,
            "a fee of 100% or more cannot be covered"
        );
        // Solving t - t*p - f >= a gives t >= (a + f) / (1 - p); start just below that estimate
        // and step up. What the charity keeps, t - fee(t), never falls as t grows (one more
        // penny of charge adds at most one penny of fee), so the first t that works is the least.
        let bps = i128::from(self.percent_bps);
        let estimate =
            (i128::from(amount) + i128::from(self.fixed_amount)) * 10_000 / (10_000 - bps);
        let mut total = i64::try_from(estimate - 2)
            .expect("a covered amount fits an i64")
            .max(amount);
        while total - self.fee_on(total) < amount {
            total += 1;
        }
        total - amount
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRIPE_UK: FeeModel = FeeModel {
        percent_bps: 150,
        fixed_amount: 20,
    };

    /// The least cover found by trying every extra penny from zero up.
    fn brute_force(model: FeeModel, amount: i64) -> i64 {
        (0..)
            .find(|extra| amount + extra - model.fee_on(amount + extra) >= amount)
            .unwrap()
    }

    #[test]
    fn the_fee_rounds_up_to_the_next_penny() {
        assert_eq!(STRIPE_UK.fee_on(1000), 15 + 20);
        // 1.5% of 1001 is 15.015p: the estimate takes 16p.
        assert_eq!(STRIPE_UK.fee_on(1001), 16 + 20);
        assert_eq!(STRIPE_UK.fee_on(0), 20);
    }

    #[test]
    fn covering_ten_pounds_costs_thirty_six_pence() {
        // 1036 - (ceil(15.54) + 20) = 1036 - 36 = 1000; 1035 keeps only 999.
        assert_eq!(STRIPE_UK.cover_for(1000), 36);
        assert_eq!(1035 - STRIPE_UK.fee_on(1035), 999);
    }

    #[test]
    fn the_charity_keeps_at_least_the_gift_and_the_donor_pays_no_penny_more_than_needed() {
        for amount in (1..=20_000).chain([99_999, 100_000, 1_000_000, 99_999_999]) {
            let cover = STRIPE_UK.cover_for(amount);
            let total = amount + cover;
            assert!(
                total - STRIPE_UK.fee_on(total) >= amount,
                "{amount}: the charity is short"
            );
            assert!(
                total - 1 - STRIPE_UK.fee_on(total - 1) < amount,
                "{amount}: one penny less would have done"
            );
            assert_eq!(cover, brute_force(STRIPE_UK, amount), "{amount}");
        }
    }

    #[test]
    fn other_fee_models_are_covered_exactly_too() {
        for model in [
            FeeModel {
                percent_bps: 0,
                fixed_amount: 0,
            },
            FeeModel {
                percent_bps: 0,
                fixed_amount: 30,
            },
            FeeModel {
                percent_bps: 290,
                fixed_amount: 30,
            },
            FeeModel {
                percent_bps: 5_000,
                fixed_amount: 1,
            },
            FeeModel {
                percent_bps: 1,
                fixed_amount: 0,
            },
        ] {
            for amount in [1, 2, 199, 200, 201, 999, 1000, 1001, 12_345, 1_000_000] {
                assert_eq!(
                    model.cover_for(amount),
                    brute_force(model, amount),
                    "{model:?} {amount}"
                );
            }
        }
    }

    #[test]
    fn no_fee_means_no_cover() {
        let free = FeeModel {
            percent_bps: 0,
            fixed_amount: 0,
        };
        assert_eq!(free.cover_for(1000), 0);
    }
}
