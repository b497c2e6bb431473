//! Fee schedules: a rate in parts per million with minimum and maximum caps, computed in
//! integer minor units with one stated rounding rule.

use ledger::Amount;

/// One million: a rate of `RATE_PPM_ONE` is 100%.
pub const RATE_PPM_ONE: u32 = 1_000_000;

/// How a fee or cost is computed from a transaction amount.
///
/// `fee = clamp(round_half_up(amount × rate_ppm / 1,000,000), min, max)` where rounding is to
/// the nearest minor unit with halves rounded up (away from zero; amounts are positive). A zero
/// `max` means no maximum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FeeSchedule {
    pub rate_ppm: u32,
    pub min: Amount,
    pub max: Amount,
}

/// Why a fee schedule is not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeeScheduleError {
    RateAboveOneHundredPercent,
    NegativeCap,
    MinAboveMax,
}

impl FeeSchedule {
    pub fn validate(&self) -> Result<(), FeeScheduleError> {
        if self.rate_ppm > RATE_PPM_ONE {
            return Err(FeeScheduleError::RateAboveOneHundredPercent);
        }
        if self.min.minor() < 0 || self.max.minor() < 0 {
            return Err(FeeScheduleError::NegativeCap);
        }
        if self.max != Amount::ZERO && self.min > self.max {
            return Err(FeeScheduleError::MinAboveMax);
        }
        Ok(())
    }

    /// The fee on a positive `amount`. Computed in `i128` so no amount can overflow it; the
    /// result never exceeds `amount × rate` rounded, or the caps.
    pub fn fee_on(&self, amount: Amount) -> Amount {
        let product = i128::from(amount.minor()) * i128::from(self.rate_ppm);
        let one = i128::from(RATE_PPM_ONE);
        let rounded = (product + one / 2) / one;
        let mut fee = i64::try_from(rounded).unwrap_or(i64::MAX);
        fee = fee.max(self.min.minor());
        if self.max != Amount::ZERO {
            fee = fee.min(self.max.minor());
        }
        Amount::from_minor(fee)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(rate_ppm: u32, min: i64, max: i64) -> FeeSchedule {
        FeeSchedule {
            rate_ppm,
            min: Amount::from_minor(min),
            max: Amount::from_minor(max),
        }
    }

    #[test]
    fn worked_example_rates() {
        let amount = Amount::from_minor(1_000_000);
        assert_eq!(schedule(3_800, 0, 0).fee_on(amount).minor(), 3_800);
        assert_eq!(schedule(2_500, 0, 0).fee_on(amount).minor(), 2_500);
    }

    #[test]
    fn halves_round_up_and_caps_apply() {
        // 0.38% of 1.50 is 0.57 fen: rounds to 1 fen.
        assert_eq!(
            schedule(3_800, 0, 0)
                .fee_on(Amount::from_minor(150))
                .minor(),
            1
        );
        // 0.38% of 1.31 is 0.4978 fen: rounds to 0.
        assert_eq!(
            schedule(3_800, 0, 0)
                .fee_on(Amount::from_minor(131))
                .minor(),
            0
        );
        // Exactly half a fen rounds up: 0.5% of 1.00 = 0.5 fen.
        assert_eq!(
            schedule(5_000, 0, 0)
                .fee_on(Amount::from_minor(100))
                .minor(),
            1
        );
        assert_eq!(
            schedule(3_800, 200, 0)
                .fee_on(Amount::from_minor(100))
                .minor(),
            200
        );
        assert_eq!(
            schedule(3_800, 0, 5_000)
                .fee_on(Amount::from_minor(100_000_000))
                .minor(),
            5_000
        );
    }

    #[test]
    fn huge_amounts_do_not_overflow() {
        let fee = schedule(RATE_PPM_ONE, 0, 0).fee_on(Amount::MAX);
        assert_eq!(fee, Amount::MAX);
    }

    #[test]
    fn invalid_schedules_are_refused() {
        assert_eq!(
            schedule(RATE_PPM_ONE + 1, 0, 0).validate(),
            Err(FeeScheduleError::RateAboveOneHundredPercent)
        );
        assert_eq!(
            schedule(1, -1, 0).validate(),
            Err(FeeScheduleError::NegativeCap)
        );
        assert_eq!(
            schedule(1, 10, 5).validate(),
            Err(FeeScheduleError::MinAboveMax)
        );
        assert_eq!(schedule(1, 10, 0).validate(), Ok(()));
    }
}
