//! Merchant and channel terms: fees, settlement cycle, cutoff and run times, advance rights,
//! reserve and bank account. Merchant terms are versioned: each version takes effect at an
//! instant, and the version in force when a pay-in is recorded governs it.

use ledger::{Amount, Timestamp};

use crate::fees::{FeeSchedule, RATE_PPM_ONE};

/// Minutes in a day; times of day are minutes after local midnight (Asia/Shanghai).
pub const MINUTES_PER_DAY: u16 = 1_440;
/// Most settlement run times per day.
pub const RUN_TIMES_MAX: usize = 24;

/// When a merchant is paid for a business day's claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cycle {
    /// The next business day.
    T1,
    /// The next natural day.
    D1,
    /// The same day, on business days only: always an advance.
    T0,
    /// The same day, every day: always an advance.
    D0,
}

impl Cycle {
    pub const ALL: [Cycle; 4] = [Cycle::T1, Cycle::D1, Cycle::T0, Cycle::D0];

    pub fn as_str(self) -> &'static str {
        match self {
            Cycle::T1 => "T1",
            Cycle::D1 => "D1",
            Cycle::T0 => "T0",
            Cycle::D0 => "D0",
        }
    }

    pub fn parse(text: &str) -> Option<Cycle> {
        Cycle::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// Same-day cycles pay before the channel does, so every payment they make is an advance.
    pub fn is_same_day(self) -> bool {
        matches!(self, Cycle::T0 | Cycle::D0)
    }

    /// Whether the cycle counts business days (T) or natural days (D).
    pub fn counts_business_days(self) -> bool {
        matches!(self, Cycle::T1 | Cycle::T0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementTerms {
    pub cycle: Cycle,
    /// Minute of the day the business day ends (default 01:00).
    pub cutoff_minute: u16,
    /// Minutes of the day settlement runs (default 05:00), ascending, at least one.
    pub run_minutes: Vec<u16>,
    /// Whether a run may pay claims the channel has not funded yet (as an advance).
    pub settle_before_funds: bool,
    /// Fixed fee on each settlement or withdrawal payout.
    pub payout_fee: Amount,
}

impl Default for SettlementTerms {
    fn default() -> SettlementTerms {
        SettlementTerms {
            cycle: Cycle::T1,
            cutoff_minute: 60,
            run_minutes: vec![300],
            settle_before_funds: false,
            payout_fee: Amount::ZERO,
        }
    }
}

/// Advance rights (垫资). Zero limits mean "no limit of this kind".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdvanceTerms {
    pub enabled: bool,
    /// Fee rate on the advanced amount.
    pub rate_ppm: u32,
    /// Additional rate per natural day until the channel's funds are expected.
    pub rate_ppm_per_day: u32,
    /// Fixed fee per advance payout.
    pub fixed_fee: Amount,
    /// Largest share of the merchant's unfunded claims that may be drawn (ppm; 0 = all).
    pub max_ratio_ppm: u32,
    pub limit_per_payout: Amount,
    pub limit_daily: Amount,
    pub limit_outstanding: Amount,
    /// An operator's explicit permission to charge less than the cost of funds.
    pub allow_below_cost_of_funds: bool,
}

impl AdvanceTerms {
    /// The fee on an advance of `amount` when funds are `days` natural days away; rounding
    /// half up to the fen, like every fee.
    pub fn fee_on(&self, amount: Amount, days: u32) -> Amount {
        let rate = u64::from(self.rate_ppm) + u64::from(self.rate_ppm_per_day) * u64::from(days);
        let rate = u32::try_from(rate.min(u64::from(RATE_PPM_ONE))).unwrap_or(RATE_PPM_ONE);
        let proportional = FeeSchedule {
            rate_ppm: rate,
            ..FeeSchedule::default()
        }
        .fee_on(amount);
        Amount::from_minor(proportional.minor().saturating_add(self.fixed_fee.minor()))
    }

    /// The largest advance whose amount plus fee fits in `room`, or zero.
    pub fn largest_advance(&self, room: Amount, days: u32) -> Amount {
        if room.minor() <= self.fixed_fee.minor() {
            return Amount::ZERO;
        }
        let rate = i128::from(self.rate_ppm) + i128::from(self.rate_ppm_per_day) * i128::from(days);
        let one = i128::from(RATE_PPM_ONE);
        // amount × (1 + rate) ≤ room − fixed, then correct for rounding of the fee.
        let base = i128::from(room.minor() - self.fixed_fee.minor());
        let fits = |amount: i64| {
            amount.saturating_add(self.fee_on(Amount::from_minor(amount), days).minor())
                <= room.minor()
        };
        let mut amount = i64::try_from(base * one / (one + rate)).unwrap_or(0);
        // The estimate is within a fen or two of the answer; rounding decides the rest.
        while amount > 0 && !fits(amount) {
            amount -= 1;
        }
        while fits(amount + 1) {
            amount += 1;
        }
        Amount::from_minor(amount.max(0))
    }
}

/// Where a merchant's payouts go. Labels only; the payout channel interprets them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BankAccount {
    pub holder: String,
    pub number: String,
    pub bank: String,
}

/// One version of a merchant's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerchantTerms {
    pub effective_from: Timestamp,
    pub fee: FeeSchedule,
    /// Allows a fee below a channel's cost (floor price); every such pay-in is listed.
    pub allow_below_cost: bool,
    pub settlement: SettlementTerms,
    pub advance: AdvanceTerms,
    /// Share of each claim held back as reserve (ppm).
    pub reserve_ratio_ppm: u32,
    pub bank_account: Option<BankAccount>,
    /// The business calendar for T cycles.
    pub calendar: String,
    /// Whether a refund gives back the matching share of the merchant fee (otherwise the
    /// merchant bears the whole refund and the platform keeps its fee).
    pub refund_fee_returned: bool,
    /// Whether a refund the claims cannot cover yet waits for later claims (otherwise it is
    /// refused with insufficient funds).
    pub refund_queue: bool,
}

impl MerchantTerms {
    pub fn with_fee(fee: FeeSchedule) -> MerchantTerms {
        MerchantTerms {
            effective_from: Timestamp(0),
            fee,
            allow_below_cost: false,
            settlement: SettlementTerms::default(),
            advance: AdvanceTerms::default(),
            reserve_ratio_ppm: 0,
            bank_account: None,
            calendar: "cn".into(),
            refund_fee_returned: false,
            refund_queue: false,
        }
    }
}

/// Why terms are not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TermsError {
    TimeOfDayOutOfRange,
    NoRunTimes,
    TooManyRunTimes,
    RateAboveOneHundredPercent,
    NegativeAmount,
}

impl MerchantTerms {
    pub fn validate(&self) -> Result<(), TermsError> {
        let s = &self.settlement;
        if s.cutoff_minute >= MINUTES_PER_DAY || s.run_minutes.iter().any(|m| *m >= MINUTES_PER_DAY)
        {
            return Err(TermsError::TimeOfDayOutOfRange);
        }
        if s.run_minutes.is_empty() {
            return Err(TermsError::NoRunTimes);
        }
        if s.run_minutes.len() > RUN_TIMES_MAX {
            return Err(TermsError::TooManyRunTimes);
        }
        let a = &self.advance;
        if [
            a.rate_ppm,
            a.rate_ppm_per_day,
            a.max_ratio_ppm,
            self.reserve_ratio_ppm,
        ]
        .iter()
        .any(|r| *r > RATE_PPM_ONE)
        {
            return Err(TermsError::RateAboveOneHundredPercent);
        }
        if [
            s.payout_fee,
            a.fixed_fee,
            a.limit_per_payout,
            a.limit_daily,
            a.limit_outstanding,
        ]
        .iter()
        .any(|x| x.minor() < 0)
        {
            return Err(TermsError::NegativeAmount);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advance(rate_ppm: u32, fixed: i64) -> AdvanceTerms {
        AdvanceTerms {
            enabled: true,
            rate_ppm,
            fixed_fee: Amount::from_minor(fixed),
            ..AdvanceTerms::default()
        }
    }

    #[test]
    fn worked_example_advance_fee() {
        // 0.05% + 2.00 on 60,000.00 is 32.00.
        let terms = advance(500, 200);
        assert_eq!(
            terms.fee_on(Amount::from_minor(6_000_000), 0).minor(),
            3_200
        );
    }

    #[test]
    fn largest_advance_fits_its_fee_exactly() {
        let terms = advance(500, 200);
        for room in [0, 150, 200, 201, 1_000, 9_996_800, 10_000_000, 12_345_677] {
            let amount = terms.largest_advance(Amount::from_minor(room), 3);
            let total = amount.minor() + terms.fee_on(amount, 3).minor();
            if amount.minor() > 0 {
                assert!(total <= room, "room {room}: {amount:?} + fee > room");
                let next = Amount::from_minor(amount.minor() + 1);
                assert!(
                    next.minor() + terms.fee_on(next, 3).minor() > room,
                    "room {room}: not the largest"
                );
            }
        }
    }
}
