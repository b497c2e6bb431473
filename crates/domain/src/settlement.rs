//! Clearing and settlement: lots of claims by business date, cutoffs, channel funds arrival,
//! payouts (withdrawals, advances, settlement runs) with their lifecycle, funders and the
//! exposure advances create.
//!
//! The rule that makes the 01:00–05:00 double payment impossible: every payout draws the
//! claims it pays from specific lots at the moment it is created (amount plus every fee), and
//! a settlement run pays only what is left in due lots when it runs. A unit of claim is
//! therefore paid at most once, whatever the order of events. [`Platform::check_invariants`]
//! states this and the other invariants as executable checks.

use std::collections::{BTreeSet, HashMap};

use ledger::{AccountId, Amount, Event, NewTransfer, Timestamp, TransferFlags, TransferId};

use crate::calendar::{Date, business_date, local_date};
use crate::fees::RATE_PPM_ONE;
use crate::model::{Merchant, is_valid_external_id, is_valid_name};
use crate::platform::{
    CommandResult, DomainError, Outcome, Platform, RECORD_KIND_CHANNEL_SETTLEMENT,
    RECORD_KIND_LOT_FUNDED, RECORD_KIND_PAYOUT, RECORD_KIND_PAYOUT_RESULT, internal_transfer_id,
    transfer_code,
};
use crate::terms::{BankAccount, Cycle, MerchantTerms, SettlementTerms};

/// A lot's number, in creation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LotId(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LotState {
    /// The business day is still running.
    Open,
    /// The day was cut off; the channel's money has not arrived.
    Sealed,
    /// The channel's money arrived; the lot waits its turn to be marked funded (funding is
    /// spread over ticks so a large payment does not stall pay-ins). Still unfunded.
    Funding,
    /// The channel's money arrived and the claims are available.
    Funded,
}

impl LotState {
    pub fn as_str(self) -> &'static str {
        match self {
            LotState::Open => "open",
            LotState::Sealed => "sealed",
            LotState::Funding => "funding",
            LotState::Funded => "funded",
        }
    }
}

/// A merchant's claims from one channel for one business date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lot {
    pub id: LotId,
    pub merchant: u32,
    pub channel: u32,
    pub business_date: Date,
    /// The merchant's cycle when the lot opened.
    pub cycle: Cycle,
    /// Sum of the merchant claims (gross − merchant fee).
    pub claims: Amount,
    /// What the channel owes for these pay-ins (gross − channel cost).
    pub expected_from_channel: Amount,
    /// Claims drawn by advances while the lot was unfunded (amount plus fees).
    pub drawn: Amount,
    /// Claims paid after funding (withdrawals and settlement, amount plus fees).
    pub paid: Amount,
    /// Claims taken back by refunds, reversals and debt recovery.
    pub refunded: Amount,
    pub state: LotState,
    pub funded_at: Option<Timestamp>,
    /// Merchant fees and channel costs of the lot's pay-ins, for margin reports.
    pub fees: Amount,
    pub costs: Amount,
    /// Pay-ins in the lot whose fee was below the channel's cost (allowed by the terms).
    pub below_floor_payins: u32,
    /// Advances drawn on this lot while unfunded: payout and claims drawn.
    pub exposures: Vec<(PayoutId, Amount)>,
}

impl Lot {
    /// Claims not yet drawn, paid or taken back.
    pub fn remaining(&self) -> Amount {
        Amount::from_minor(
            self.claims.minor() - self.drawn.minor() - self.paid.minor() - self.refunded.minor(),
        )
    }

    pub fn is_funded(&self) -> bool {
        self.state == LotState::Funded
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FunderKind {
    /// The platform's own money.
    Position,
    /// A partner's credit line.
    CreditLine,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FunderLine {
    /// Must be repaid the same day: funds only advances whose money is expected today.
    Intraday,
    /// May stay drawn across nights.
    Overnight,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewFunder {
    pub id: String,
    pub name: String,
    pub kind: FunderKind,
    pub line: FunderLine,
    /// Most claims it may be funding at once.
    pub limit: Amount,
    /// Minute of the day an intraday line resets.
    pub reset_minute: u16,
    /// What its money costs per natural day.
    pub cost_rate_ppm_per_day: u32,
    /// Lower goes first.
    pub priority: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Funder {
    pub id: String,
    pub name: String,
    pub kind: FunderKind,
    pub line: FunderLine,
    pub limit: Amount,
    pub reset_minute: u16,
    pub cost_rate_ppm_per_day: u32,
    pub priority: u32,
    /// Exposure it funds now: claims drawn by advances whose lots are not funded yet.
    pub used: Amount,
    pub created_at: Timestamp,
}

impl Funder {
    pub fn room(&self) -> Amount {
        Amount::from_minor((self.limit.minor() - self.used.minor()).max(0))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayoutKind {
    /// The merchant takes funded money.
    Withdrawal,
    /// The merchant takes unfunded money early (垫资).
    Advance,
    /// A settlement run pays due lots.
    Settlement,
}

impl PayoutKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PayoutKind::Withdrawal => "withdrawal",
            PayoutKind::Advance => "advance",
            PayoutKind::Settlement => "settlement",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayoutStatus {
    Created,
    Sent,
    Succeeded,
    /// The money returned to the merchant's claims.
    Failed,
    /// The payout channel did not say; never re-sent, resolved by a query, reconciliation or
    /// an operator.
    Unknown,
}

impl PayoutStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PayoutStatus::Created => "created",
            PayoutStatus::Sent => "sent",
            PayoutStatus::Succeeded => "succeeded",
            PayoutStatus::Failed => "failed",
            PayoutStatus::Unknown => "unknown",
        }
    }

    /// Whether the money is still on its way (the in-flight account holds it).
    pub fn in_flight(self) -> bool {
        matches!(
            self,
            PayoutStatus::Created | PayoutStatus::Sent | PayoutStatus::Unknown
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PayoutId(pub u64);

/// A merchant's request for money.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutRequest {
    /// Chosen by the client; the same id with the same content returns the first payout.
    pub request_id: String,
    pub merchant_id: String,
    /// What should reach the bank account; fees come on top, from the claims.
    pub amount: Amount,
    /// `Withdrawal` or `Advance`.
    pub kind: PayoutKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayoutResult {
    Succeeded,
    Failed,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payout {
    pub id: PayoutId,
    pub request_id: Option<String>,
    pub merchant_id: String,
    pub kind: PayoutKind,
    /// What reaches the bank account.
    pub amount: Amount,
    /// Every fee it bore.
    pub fee: Amount,
    pub status: PayoutStatus,
    pub bank_account: BankAccount,
    /// Whether it drew on funded claims (withdrawal, settlement of funded lots) or unfunded
    /// ones (an advance).
    pub funded: bool,
    /// Lots drawn and how much of each (amount plus fee in all).
    pub draws: Vec<(LotId, Amount)>,
    /// The funder carrying the exposure of an advance.
    pub funder: Option<String>,
    /// Natural days until the channel's money was expected, for advances.
    pub days_to_funds: u32,
    /// What the payout channel charges the platform for it (the channel of the first lot it
    /// drew), posted when it succeeds.
    pub channel_cost: Amount,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A channel's notice that money for a business date arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewChannelSettlement {
    pub channel_id: String,
    pub business_date: Date,
    pub amount: Amount,
    pub bank_reference: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelSettlement {
    pub id: u64,
    pub channel_id: String,
    pub business_date: Date,
    pub amount: Amount,
    pub expected: Amount,
    /// amount − expected: negative when the channel paid short.
    pub discrepancy: Amount,
    pub bank_reference: String,
    pub lots: u32,
    pub created_at: Timestamp,
}

/// A cutoff or settlement run due at `at` for a merchant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ScheduledWork {
    pub at: Timestamp,
    pub merchant: u32,
    pub is_cutoff: bool,
}

/// Settlement state kept beside the ledger.
#[derive(Clone, Debug, Default)]
pub struct Settlements {
    lots: Vec<Lot>,
    lot_index: ledger::IdMap<(u32, u32, Date), LotId>,
    /// Per merchant: its lots that still hold claims, oldest first.
    merchant_lots: Vec<Vec<LotId>>,
    channel_day_lots: HashMap<(u32, Date), Vec<LotId>>,
    pub(crate) funders: Vec<Funder>,
    pub(crate) payouts: Vec<Payout>,
    payout_requests: HashMap<(u32, String), PayoutId>,
    pub(crate) channel_settlements: Vec<ChannelSettlement>,
    settlement_refs: HashMap<(u32, String), usize>,
    schedule: BTreeSet<ScheduledWork>,
    /// Per merchant: its scheduled work, to replace it when terms change.
    merchant_schedule: Vec<Vec<ScheduledWork>>,
    /// Per merchant: advance claims drawn on one local date.
    /// (local date, drawn that date, the daily limit in force at the last draw).
    advance_day: Vec<(Date, Amount, Amount)>,
    /// Per merchant: claims drawn by advances on lots not funded yet.
    outstanding: Vec<Amount>,
    /// Per merchant, kept as payouts change: amount plus fee of every payout not failed, and
    /// the amount of those still in flight. `check_records` recounts them from the payouts.
    taken: Vec<i64>,
    in_flight: Vec<i64>,
    /// Per merchant: what the lots dropped from its list (fully paid out) gave and held, so
    /// checks need not scan every lot ever opened. `check_records` recounts them.
    settled_given: Vec<i64>,
    settled_claims: Vec<i64>,
    /// Per merchant: available money held (frozen account), whether payouts are stopped, and
    /// debt (reversals its claims could not cover).
    pub(crate) held: Vec<Amount>,
    pub(crate) frozen: Vec<bool>,
    pub(crate) debt: Vec<Amount>,
    pub(crate) refunds: Vec<crate::refunds::Refund>,
    pub(crate) refund_requests: HashMap<(bool, String), usize>,
    pub(crate) refunded_by_payment: HashMap<crate::model::PaymentId, Amount>,
    pub(crate) holds: Vec<crate::refunds::Hold>,
    /// Per channel: refunds of lots the channel had already paid, to deduct from what it owes
    /// next.
    pub(crate) channel_refunds_due: HashMap<u32, Amount>,
    /// The platform's overall exposure limit (zero: none) and the limit in force at the last
    /// advance, against which the total is checked.
    pub(crate) exposure_limit: Amount,
    pub(crate) exposure_limit_at_last_draw: Amount,
    /// Refunds waiting for claims (indexes into `refunds`), oldest first, and the payments'
    /// channel and trade number.
    pub(crate) queued_refunds: std::collections::VecDeque<usize>,
    pub(crate) queued_trades: HashMap<(crate::model::PaymentId, String), (u32, String)>,
    /// Lots whose channel money arrived, waiting to be marked funded, oldest first.
    pub(crate) funding_queue: std::collections::VecDeque<LotId>,
}

/// The next instant after `after` at one of `minutes` (local time of day).
fn next_at(after: Timestamp, minutes: &[u16]) -> Timestamp {
    let today = local_date(after);
    for day in [today, today.plus_days(1)] {
        let mut sorted = minutes.to_vec();
        sorted.sort_unstable();
        for minute in sorted {
            let at = day.at_minute(minute);
            if at > after {
                return at;
            }
        }
    }
    today.plus_days(2).at_minute(0)
}

impl Settlements {
    pub fn lot(&self, id: LotId) -> &Lot {
        &self.lots[id.0 as usize]
    }

    pub fn lots(&self) -> &[Lot] {
        &self.lots
    }

    pub fn merchant_lots(&self, merchant: u32) -> &[LotId] {
        &self.merchant_lots[merchant as usize]
    }

    pub fn payout(&self, id: PayoutId) -> Option<&Payout> {
        self.payouts
            .get(usize::try_from(id.0.checked_sub(1)?).ok()?)
    }

    pub(crate) fn add_merchant(&mut self, merchant: u32, terms: &MerchantTerms, now: Timestamp) {
        debug_assert_eq!(merchant as usize, self.merchant_lots.len());
        self.merchant_lots.push(Vec::new());
        self.merchant_schedule.push(Vec::new());
        self.advance_day
            .push((Date::from_days(0), Amount::ZERO, Amount::ZERO));
        self.outstanding.push(Amount::ZERO);
        self.taken.push(0);
        self.in_flight.push(0);
        self.settled_given.push(0);
        self.settled_claims.push(0);
        self.held.push(Amount::ZERO);
        self.frozen.push(false);
        self.debt.push(Amount::ZERO);
        self.schedule_merchant(merchant, terms, now);
    }

    fn schedule_merchant(&mut self, merchant: u32, terms: &MerchantTerms, now: Timestamp) {
        let s = &terms.settlement;
        let work = [
            ScheduledWork {
                at: next_at(now, &[s.cutoff_minute]),
                merchant,
                is_cutoff: true,
            },
            ScheduledWork {
                at: next_at(now, &s.run_minutes),
                merchant,
                is_cutoff: false,
            },
        ];
        for w in work {
            self.schedule.insert(w);
        }
        self.merchant_schedule[merchant as usize] = work.to_vec();
    }

    pub(crate) fn reschedule_merchant(&mut self, merchant: u32, m: &Merchant, now: Timestamp) {
        for work in std::mem::take(&mut self.merchant_schedule[merchant as usize]) {
            self.schedule.remove(&work);
        }
        self.schedule_merchant(merchant, m.terms_at(now), now);
    }

    /// Takes the oldest work due at `now`, if any.
    pub(crate) fn next_due(&mut self, now: Timestamp) -> Option<ScheduledWork> {
        let first = *self.schedule.first()?;
        (first.at <= now).then(|| {
            self.schedule.pop_first();
            first
        })
    }

    pub(crate) fn lot_mut(&mut self, id: LotId) -> &mut Lot {
        &mut self.lots[id.0 as usize]
    }

    pub(crate) fn lot_of(&self, merchant: u32, channel: u32, date: Date) -> Option<LotId> {
        self.lot_index.get(&(merchant, channel, date)).copied()
    }

    pub(crate) fn has_due(&self, now: Timestamp) -> bool {
        !self.funding_queue.is_empty() || self.schedule.first().is_some_and(|w| w.at <= now)
    }

    /// Schedules the next occurrence of `work`, by the terms in force when it ran.
    pub(crate) fn reschedule_after(&mut self, work: &ScheduledWork, s: &SettlementTerms) {
        let next = ScheduledWork {
            at: if work.is_cutoff {
                next_at(work.at, &[s.cutoff_minute])
            } else {
                next_at(work.at, &s.run_minutes)
            },
            ..*work
        };
        self.schedule.insert(next);
        let slot = &mut self.merchant_schedule[work.merchant as usize];
        slot.retain(|w| w != work);
        slot.push(next);
    }

    /// Seals the merchant's open lots of business dates before the one starting at `at`.
    pub(crate) fn seal_lots(&mut self, merchant: u32, at: Timestamp, cutoff_minute: u16) {
        let current = business_date(at, cutoff_minute);
        for id in &self.merchant_lots[merchant as usize] {
            let lot = &mut self.lots[id.0 as usize];
            if lot.state == LotState::Open && lot.business_date < current {
                lot.state = LotState::Sealed;
            }
        }
    }

    /// Adds a pay-in's claim to its lot; returns the business date of the lot it landed in.
    pub(crate) fn add_claim(
        &mut self,
        (merchant, channel, business_date): (u32, u32, Date),
        claim: Amount,
        expected: Amount,
        (fee, cost): (Amount, Amount),
        cycle: Cycle,
    ) -> Date {
        // A day already cut off takes no more claims (its lot may be sealed or even funded,
        // for instance after a change of cutoff time): the claim belongs to the next day.
        let mut business_date = business_date;
        while let Some(id) = self.lot_index.get(&(merchant, channel, business_date))
            && self.lots[id.0 as usize].state != LotState::Open
        {
            business_date = business_date.plus_days(1);
        }
        let id = match self.lot_index.get(&(merchant, channel, business_date)) {
            Some(id) => *id,
            None => {
                let id = LotId(self.lots.len() as u32);
                self.lots.push(Lot {
                    id,
                    merchant,
                    channel,
                    business_date,
                    cycle,
                    claims: Amount::ZERO,
                    expected_from_channel: Amount::ZERO,
                    drawn: Amount::ZERO,
                    paid: Amount::ZERO,
                    refunded: Amount::ZERO,
                    state: LotState::Open,
                    funded_at: None,
                    fees: Amount::ZERO,
                    costs: Amount::ZERO,
                    below_floor_payins: 0,
                    exposures: Vec::new(),
                });
                self.lot_index
                    .insert((merchant, channel, business_date), id);
                self.merchant_lots[merchant as usize].push(id);
                self.channel_day_lots
                    .entry((channel, business_date))
                    .or_default()
                    .push(id);
                id
            }
        };
        let lot = &mut self.lots[id.0 as usize];
        lot.claims = Amount::from_minor(lot.claims.minor() + claim.minor());
        lot.expected_from_channel =
            Amount::from_minor(lot.expected_from_channel.minor() + expected.minor());
        lot.fees = add(lot.fees, fee);
        lot.costs = add(lot.costs, cost);
        lot.below_floor_payins += u32::from(fee < cost);
        business_date
    }

    /// Totals over a merchant's unfunded lots: (claims, remaining).
    fn unfunded_totals(&self, merchant: u32) -> (i64, i64) {
        self.merchant_lots[merchant as usize]
            .iter()
            .map(|id| self.lot(*id))
            .filter(|lot| !lot.is_funded())
            .fold((0, 0), |(claims, remaining), lot| {
                (
                    claims + lot.claims.minor(),
                    remaining + lot.remaining().minor(),
                )
            })
    }
}

fn add(a: Amount, b: Amount) -> Amount {
    Amount::from_minor(a.minor().saturating_add(b.minor()))
}

fn sub(a: Amount, b: Amount) -> Amount {
    Amount::from_minor(a.minor() - b.minor())
}

/// The cost of a funder's money for `amount` over `days` (at least one), rounded up.
fn cost_of_funds(funder: &Funder, amount: Amount, days: u32) -> Amount {
    let product = i128::from(amount.minor())
        * i128::from(funder.cost_rate_ppm_per_day)
        * i128::from(days.max(1));
    let one = i128::from(RATE_PPM_ONE);
    Amount::from_minor(i64::try_from((product + one - 1) / one).unwrap_or(i64::MAX))
}

/// A planned payout before it is posted.
struct Plan {
    kind: PayoutKind,
    amount: Amount,
    fee: Amount,
    draws: Vec<(LotId, Amount)>,
    funded: bool,
    funder: Option<usize>,
    days_to_funds: u32,
}

impl Platform {
    pub(crate) fn create_funder(&mut self, now: Timestamp, new: &NewFunder) -> CommandResult {
        if !is_valid_external_id(&new.id) {
            return Err(DomainError::InvalidId);
        }
        if !is_valid_name(&new.name) {
            return Err(DomainError::InvalidName);
        }
        if new.limit.minor() < 0 {
            return Err(DomainError::AmountMustBePositive);
        }
        if new.reset_minute >= crate::terms::MINUTES_PER_DAY
            || new.cost_rate_ppm_per_day > RATE_PPM_ONE
        {
            return Err(DomainError::InvalidTerms(
                crate::terms::TermsError::TimeOfDayOutOfRange,
            ));
        }
        if let Some(existing) = self.funder(&new.id) {
            let same = existing.name == new.name
                && existing.kind == new.kind
                && existing.line == new.line
                && existing.limit == new.limit
                && existing.reset_minute == new.reset_minute
                && existing.cost_rate_ppm_per_day == new.cost_rate_ppm_per_day
                && existing.priority == new.priority;
            return if same {
                Ok(Outcome::Funder {
                    funder: existing.clone(),
                    created: false,
                })
            } else {
                Err(DomainError::FunderExistsWithDifferentContent)
            };
        }
        let funder = Funder {
            id: new.id.clone(),
            name: new.name.clone(),
            kind: new.kind,
            line: new.line,
            limit: new.limit,
            reset_minute: new.reset_minute,
            cost_rate_ppm_per_day: new.cost_rate_ppm_per_day,
            priority: new.priority,
            used: Amount::ZERO,
            created_at: now,
        };
        self.settlements.funders.push(funder.clone());
        Ok(Outcome::Funder {
            funder,
            created: true,
        })
    }

    /// When the channel's money for a lot is expected: its business date plus the channel's
    /// cycle (T counts business days in the merchant's calendar).
    fn expected_funding_date(&self, lot: &Lot, calendar: &str) -> Result<Date, DomainError> {
        let channel = &self.channels[lot.channel as usize];
        let cycle = channel.settlement_cycle;
        let offset = match cycle {
            Cycle::T1 | Cycle::D1 => 1,
            Cycle::T0 | Cycle::D0 => 0,
        };
        if cycle.counts_business_days() {
            let calendar = self
                .calendars
                .get(calendar)
                .ok_or_else(|| DomainError::UnknownCalendar(calendar.to_owned()))?;
            Ok(calendar.add_business_days(lot.business_date, offset)?)
        } else {
            Ok(lot.business_date.plus_days(offset as i32))
        }
    }

    /// When a lot is due to the merchant under the lot's cycle.
    fn due_date(&self, lot: &Lot, calendar: &str) -> Result<Date, DomainError> {
        let calendar_of = || {
            self.calendars
                .get(calendar)
                .ok_or_else(|| DomainError::UnknownCalendar(calendar.to_owned()))
        };
        Ok(match lot.cycle {
            Cycle::T1 => calendar_of()?.add_business_days(lot.business_date, 1)?,
            Cycle::T0 => calendar_of()?.add_business_days(lot.business_date, 0)?,
            Cycle::D1 => lot.business_date.plus_days(1),
            Cycle::D0 => lot.business_date,
        })
    }

    /// Natural days from `today` until the money of the given lots is expected (the latest).
    fn days_to_funds(
        &self,
        lots: &[LotId],
        calendar: &str,
        today: Date,
    ) -> Result<u32, DomainError> {
        let mut days = 0;
        for id in lots {
            let expected = self.expected_funding_date(self.settlements.lot(*id), calendar)?;
            days = days.max(u32::try_from(expected.days() - today.days()).unwrap_or(0));
        }
        Ok(days)
    }

    /// The funder to carry `need` of exposure, by priority: the first with room whose line
    /// fits how long the money is out.
    fn pick_funder(&self, need: Amount, days: u32) -> Option<usize> {
        let mut order: Vec<usize> = (0..self.settlements.funders.len()).collect();
        order.sort_by_key(|i| {
            let f = &self.settlements.funders[*i];
            (f.priority, f.id.clone())
        });
        order.into_iter().find(|i| {
            let f = &self.settlements.funders[*i];
            f.room() >= need && (f.line == FunderLine::Overnight || days == 0)
        })
    }

    /// Largest claims an advance could draw now: the unfunded remaining, within the ratio,
    /// daily and outstanding limits, and within the best funder's room.
    fn advance_room(&self, merchant: u32, terms: &MerchantTerms, now: Timestamp) -> Amount {
        let a = &terms.advance;
        let (claims, remaining) = self.settlements.unfunded_totals(merchant);
        let mut room = remaining;
        if a.max_ratio_ppm > 0 {
            let drawn = claims - remaining;
            let cap = i128::from(claims) * i128::from(a.max_ratio_ppm) / i128::from(RATE_PPM_ONE);
            room = room.min(i64::try_from(cap).unwrap_or(i64::MAX) - drawn);
        }
        if a.limit_outstanding.is_positive() {
            room = room.min(
                a.limit_outstanding.minor()
                    - self.settlements.outstanding[merchant as usize].minor(),
            );
        }
        if a.limit_daily.is_positive() {
            let (day, drawn, _) = self.settlements.advance_day[merchant as usize];
            let today_drawn = if day == local_date(now) {
                drawn.minor()
            } else {
                0
            };
            room = room.min(a.limit_daily.minor() - today_drawn);
        }
        let limit = self.settlements.exposure_limit;
        if limit.is_positive() {
            room = room.min(limit.minor() - self.total_exposure().minor());
        }
        let funder_room = self
            .settlements
            .funders
            .iter()
            .map(|f| f.room().minor())
            .max()
            .unwrap_or(0);
        Amount::from_minor(room.min(funder_room).max(0))
    }

    /// Advances paid out whose channel money has not arrived, over all funders.
    pub fn total_exposure(&self) -> Amount {
        Amount::from_minor(
            self.settlements
                .funders
                .iter()
                .map(|f| f.used.minor())
                .sum(),
        )
    }

    pub fn exposure_limit(&self) -> Amount {
        self.settlements.exposure_limit
    }

    pub(crate) fn set_exposure_limit(&mut self, limit: Amount) -> CommandResult {
        if limit.minor() < 0 {
            return Err(DomainError::AmountMustBePositive);
        }
        let changed = self.settlements.exposure_limit != limit;
        self.settlements.exposure_limit = limit;
        Ok(Outcome::ExposureLimit { limit, changed })
    }

    /// The largest advance the merchant could take now, fees included in the claims it draws.
    pub(crate) fn advance_available(&self, merchant: u32, now: Timestamp) -> Amount {
        let m = &self.merchants[merchant as usize];
        let terms = m.terms_at(now);
        if !terms.advance.enabled || terms.bank_account.is_none() {
            return Amount::ZERO;
        }
        let unfunded: Vec<LotId> = self.settlements.merchant_lots[merchant as usize]
            .iter()
            .copied()
            .filter(|id| {
                let lot = self.settlements.lot(*id);
                !lot.is_funded() && lot.remaining().is_positive()
            })
            .collect();
        let Ok(days) = self.days_to_funds(&unfunded, &terms.calendar, local_date(now)) else {
            return Amount::ZERO;
        };
        let room = self.advance_room(merchant, terms, now);
        let mut amount = terms.advance.largest_advance(room, days);
        if terms.advance.limit_per_payout.is_positive() {
            amount = amount.min(terms.advance.limit_per_payout);
        }
        // Each funder must fit the whole draw; the fee must cover the cost of funds.
        let need = add(amount, terms.advance.fee_on(amount, days));
        match self.pick_funder(need, days) {
            Some(f) => {
                let fee = terms.advance.fee_on(amount, days);
                let cost = cost_of_funds(&self.settlements.funders[f], amount, days);
                if fee < cost && !terms.advance.allow_below_cost_of_funds {
                    Amount::ZERO
                } else {
                    amount
                }
            }
            None => Amount::ZERO,
        }
    }

    /// Draws `need` from the given lots in order; `None` if they hold less.
    fn plan_draws(&self, lots: &[LotId], need: Amount) -> Option<Vec<(LotId, Amount)>> {
        let mut left = need.minor();
        let mut draws = Vec::new();
        for id in lots {
            if left == 0 {
                break;
            }
            let take = self.settlements.lot(*id).remaining().minor().min(left);
            if take > 0 {
                draws.push((*id, Amount::from_minor(take)));
                left -= take;
            }
        }
        (left == 0).then_some(draws)
    }

    fn merchant_lot_ids(&self, merchant: u32, funded: bool) -> Vec<LotId> {
        self.settlements.merchant_lots[merchant as usize]
            .iter()
            .copied()
            .filter(|id| self.settlements.lot(*id).is_funded() == funded)
            .collect()
    }

    /// Plans an advance of `amount` from the given unfunded lots, checking every rule.
    fn plan_advance(
        &self,
        merchant: u32,
        terms: &MerchantTerms,
        lots: &[LotId],
        amount: Amount,
        kind: PayoutKind,
        now: Timestamp,
    ) -> Result<Plan, DomainError> {
        let a = &terms.advance;
        let days = self.days_to_funds(lots, &terms.calendar, local_date(now))?;
        let fee = a.fee_on(amount, days);
        let need = add(amount, fee);
        if a.limit_per_payout.is_positive() && amount > a.limit_per_payout {
            return Err(DomainError::AdvanceLimitExceeded("limit_per_payout"));
        }
        let room = self.advance_room(merchant, terms, now);
        let draws = self
            .plan_draws(lots, need)
            .ok_or(DomainError::InsufficientFunds)?;
        if need > room {
            // Say which rule binds, for a clear answer.
            let (claims, remaining) = self.settlements.unfunded_totals(merchant);
            let _ = claims;
            if need.minor() > remaining {
                return Err(DomainError::InsufficientFunds);
            }
            if self.pick_funder(need, days).is_none() {
                return Err(DomainError::NoFunderRoom);
            }
            return Err(DomainError::AdvanceLimitExceeded(
                "max_ratio_ppm, limit_daily or limit_outstanding",
            ));
        }
        let funder = self
            .pick_funder(need, days)
            .ok_or(DomainError::NoFunderRoom)?;
        let cost = cost_of_funds(&self.settlements.funders[funder], amount, days);
        if fee < cost && !a.allow_below_cost_of_funds {
            return Err(DomainError::AdvanceFeeBelowCostOfFunds);
        }
        Ok(Plan {
            kind,
            amount,
            fee,
            draws,
            funded: false,
            funder: Some(funder),
            days_to_funds: days,
        })
    }

    /// The fee a payout of `amount` would bear now, and the days until the channel's money is
    /// expected (for advances), without changing anything: the quote shown before a payout.
    pub fn quote_payout(
        &self,
        merchant_id: &str,
        amount: Amount,
        kind: PayoutKind,
        now: Timestamp,
    ) -> Result<(Amount, u32), DomainError> {
        let merchant = self.merchant_index_of(merchant_id)?;
        let terms = self.merchants[merchant as usize].terms_at(now).clone();
        match kind {
            PayoutKind::Advance => {
                if !terms.advance.enabled {
                    return Err(DomainError::AdvanceNotEnabled);
                }
                let lots = self.merchant_lot_ids(merchant, false);
                let plan = self.plan_advance(merchant, &terms, &lots, amount, kind, now)?;
                Ok((plan.fee, plan.days_to_funds))
            }
            PayoutKind::Withdrawal | PayoutKind::Settlement => {
                let fee = terms.settlement.payout_fee;
                if self.payable_funded(merchant) < add(amount, fee) {
                    return Err(DomainError::InsufficientFunds);
                }
                Ok((fee, 0))
            }
        }
    }

    pub(crate) fn request_payout(
        &mut self,
        now: Timestamp,
        request: &PayoutRequest,
    ) -> CommandResult {
        if !is_valid_external_id(&request.request_id) {
            return Err(DomainError::InvalidId);
        }
        let merchant = self.merchant_index_of(&request.merchant_id)?;
        let key = (merchant, request.request_id.clone());
        if let Some(id) = self.settlements.payout_requests.get(&key) {
            let existing = self.settlements.payout(*id).cloned();
            return match existing {
                Some(p) if p.amount == request.amount && p.kind == request.kind => {
                    Ok(Outcome::Payout {
                        payout: p,
                        created: false,
                    })
                }
                _ => Err(DomainError::PayoutRequestConflict),
            };
        }
        if !request.amount.is_positive() {
            return Err(DomainError::AmountMustBePositive);
        }
        if request.amount > crate::model::PAYMENT_AMOUNT_MAX {
            return Err(DomainError::AmountTooLarge);
        }
        let terms = self.merchants[merchant as usize].terms_at(now).clone();
        if terms.bank_account.is_none() {
            return Err(DomainError::NoBankAccount);
        }
        if self.settlements.frozen[merchant as usize] {
            return Err(DomainError::MerchantFrozen);
        }
        let plan = match request.kind {
            PayoutKind::Withdrawal | PayoutKind::Settlement => {
                let fee = terms.settlement.payout_fee;
                if self.payable_funded(merchant) < add(request.amount, fee) {
                    return Err(DomainError::InsufficientFunds);
                }
                let lots = self.merchant_lot_ids(merchant, true);
                let draws = self
                    .plan_draws(&lots, add(request.amount, fee))
                    .ok_or(DomainError::InsufficientFunds)?;
                Plan {
                    kind: PayoutKind::Withdrawal,
                    amount: request.amount,
                    fee,
                    draws,
                    funded: true,
                    funder: None,
                    days_to_funds: 0,
                }
            }
            PayoutKind::Advance => {
                if !terms.advance.enabled {
                    return Err(DomainError::AdvanceNotEnabled);
                }
                let lots = self.merchant_lot_ids(merchant, false);
                self.plan_advance(
                    merchant,
                    &terms,
                    &lots,
                    request.amount,
                    PayoutKind::Advance,
                    now,
                )?
            }
        };
        let payout = self.post_payout(
            now,
            merchant,
            &terms,
            plan,
            Some(request.request_id.clone()),
        )?;
        self.settlements.payout_requests.insert(key, payout.id);
        Ok(Outcome::Payout {
            payout,
            created: true,
        })
    }

    /// Posts a planned payout and records it. All postings form one chain.
    fn post_payout(
        &mut self,
        now: Timestamp,
        merchant: u32,
        terms: &MerchantTerms,
        plan: Plan,
        request_id: Option<String>,
    ) -> Result<Payout, DomainError> {
        let m = &self.merchants[merchant as usize];
        let (accounts, currency, merchant_id) = (m.accounts, m.currency, m.id.clone());
        let platform = self.platform_accounts_for(currency);
        let id = PayoutId(self.settlements.payouts.len() as u64 + 1);
        let need = add(plan.amount, plan.fee);
        let source = if plan.funded {
            accounts.available
        } else {
            accounts.pending
        };
        let mut events = Vec::with_capacity(4);
        let mut leg = 0u32;
        let mut post = |debit: AccountId, credit: AccountId, amount: Amount, code: u16| {
            if amount.is_positive() {
                leg += 1;
                events.push(transfer(
                    RECORD_KIND_PAYOUT,
                    id.0,
                    leg,
                    debit,
                    credit,
                    amount,
                    code,
                ));
            }
        };
        post(
            source,
            platform.payouts_in_flight,
            plan.amount,
            transfer_code::PAYOUT_AMOUNT,
        );
        post(
            source,
            platform.fee_income,
            plan.fee,
            transfer_code::PAYOUT_FEE,
        );
        if !plan.funded {
            post(
                accounts.advanced,
                platform.advances_outstanding,
                need,
                transfer_code::ADVANCE_DRAWN,
            );
        }
        self.ledger
            .apply_chain(now, &events)
            .map_err(|failure| DomainError::Ledger(failure.error))?;
        for (lot_id, slice) in &plan.draws {
            let lot = &mut self.settlements.lots[lot_id.0 as usize];
            if plan.funded {
                lot.paid = add(lot.paid, *slice);
            } else {
                lot.drawn = add(lot.drawn, *slice);
                lot.exposures.push((id, *slice));
            }
        }
        if let Some(f) = plan.funder {
            self.settlements.exposure_limit_at_last_draw = self.settlements.exposure_limit;
            let funder = &mut self.settlements.funders[f];
            funder.used = add(funder.used, need);
            let outstanding = &mut self.settlements.outstanding[merchant as usize];
            *outstanding = add(*outstanding, need);
            let today = local_date(now);
            let day = &mut self.settlements.advance_day[merchant as usize];
            let limit = terms.advance.limit_daily;
            *day = if day.0 == today {
                (today, add(day.1, need), limit)
            } else {
                (today, need, limit)
            };
        }
        let channel_cost = plan.draws.first().map_or(Amount::ZERO, |(lot, _)| {
            self.channels[self.settlements.lot(*lot).channel as usize].payout_cost
        });
        let payout = Payout {
            id,
            request_id,
            merchant_id,
            kind: plan.kind,
            amount: plan.amount,
            fee: plan.fee,
            status: PayoutStatus::Created,
            bank_account: terms.bank_account.clone().unwrap_or_default(),
            funded: plan.funded,
            draws: plan.draws,
            funder: plan.funder.map(|f| self.settlements.funders[f].id.clone()),
            days_to_funds: plan.days_to_funds,
            channel_cost,
            created_at: now,
            updated_at: now,
        };
        self.settlements.taken[merchant as usize] += need.minor();
        self.settlements.in_flight[merchant as usize] += payout.amount.minor();
        self.settlements.payouts.push(payout.clone());
        Ok(payout)
    }

    pub(crate) fn mark_payout_sent(&mut self, now: Timestamp, id: PayoutId) -> CommandResult {
        let index = self.payout_index(id)?;
        let payout = &mut self.settlements.payouts[index];
        match payout.status {
            PayoutStatus::Created => {
                payout.status = PayoutStatus::Sent;
                payout.updated_at = now;
                Ok(Outcome::Payout {
                    payout: payout.clone(),
                    created: true,
                })
            }
            PayoutStatus::Sent => Ok(Outcome::Payout {
                payout: payout.clone(),
                created: false,
            }),
            other => Err(DomainError::PayoutStateConflict {
                status: other.as_str(),
            }),
        }
    }

    fn payout_index(&self, id: PayoutId) -> Result<usize, DomainError> {
        self.settlements
            .payout(id)
            .map(|p| (p.id.0 - 1) as usize)
            .ok_or(DomainError::UnknownPayout)
    }

    /// Applies what the payout channel (or a query, reconciliation or an operator) says. A
    /// final status never changes; a repeat of it answers the payout unchanged.
    pub(crate) fn resolve_payout(
        &mut self,
        now: Timestamp,
        id: PayoutId,
        result: PayoutResult,
    ) -> CommandResult {
        let index = self.payout_index(id)?;
        let payout = self.settlements.payouts[index].clone();
        let target = match result {
            PayoutResult::Succeeded => PayoutStatus::Succeeded,
            PayoutResult::Failed => PayoutStatus::Failed,
            PayoutResult::Unknown => PayoutStatus::Unknown,
        };
        if payout.status == target {
            return Ok(Outcome::Payout {
                payout,
                created: false,
            });
        }
        if !payout.status.in_flight()
            || (target == PayoutStatus::Unknown && payout.status == PayoutStatus::Unknown)
        {
            return Err(DomainError::PayoutStateConflict {
                status: payout.status.as_str(),
            });
        }
        let merchant = self.merchant_index_of(&payout.merchant_id)?;
        match target {
            PayoutStatus::Succeeded => {
                self.post_payout_paid(now, merchant, &payout)?;
                self.settlements.in_flight[merchant as usize] -= payout.amount.minor();
            }
            PayoutStatus::Failed => {
                self.post_payout_returned(now, merchant, &payout)?;
                self.settlements.in_flight[merchant as usize] -= payout.amount.minor();
                self.settlements.taken[merchant as usize] -=
                    payout.amount.minor() + payout.fee.minor();
            }
            _ => {}
        }
        let stored = &mut self.settlements.payouts[index];
        stored.status = target;
        stored.updated_at = now;
        Ok(Outcome::Payout {
            payout: stored.clone(),
            created: true,
        })
    }

    fn post_payout_paid(
        &mut self,
        now: Timestamp,
        merchant: u32,
        payout: &Payout,
    ) -> Result<(), DomainError> {
        let currency = self.merchants[merchant as usize].currency;
        let platform = self.platform_accounts_for(currency);
        let mut events = vec![transfer(
            RECORD_KIND_PAYOUT_RESULT,
            payout.id.0,
            1,
            platform.payouts_in_flight,
            platform.cash,
            payout.amount,
            transfer_code::PAYOUT_PAID,
        )];
        if payout.channel_cost.is_positive() {
            events.push(transfer(
                RECORD_KIND_PAYOUT_RESULT,
                payout.id.0,
                2,
                platform.channel_cost,
                platform.cash,
                payout.channel_cost,
                transfer_code::PAYOUT_COST,
            ));
        }
        self.ledger
            .apply_chain(now, &events)
            .map(|_| ())
            .map_err(|f| DomainError::Ledger(f.error))
    }

    /// A failed payout gives the merchant its claims back: to the lots it drew, as funded or
    /// unfunded as those lots are now, releasing any exposure still carried.
    fn post_payout_returned(
        &mut self,
        now: Timestamp,
        merchant: u32,
        payout: &Payout,
    ) -> Result<(), DomainError> {
        let m = &self.merchants[merchant as usize];
        let (accounts, currency) = (m.accounts, m.currency);
        let platform = self.platform_accounts_for(currency);
        let mut events = Vec::new();
        let mut leg = 0u32;
        let mut post = |debit: AccountId, credit: AccountId, amount: Amount, code: u16| {
            if amount.is_positive() {
                leg += 1;
                events.push(transfer(
                    RECORD_KIND_PAYOUT_RESULT,
                    payout.id.0,
                    leg,
                    debit,
                    credit,
                    amount,
                    code,
                ));
            }
        };
        // Split the returned money (amount first, then fee) over the draws in order.
        let mut amount_left = payout.amount.minor();
        let mut released = 0i64;
        for (lot_id, slice) in &payout.draws {
            let lot = self.settlements.lot(*lot_id);
            let target = if lot.is_funded() {
                accounts.available
            } else {
                accounts.pending
            };
            let from_amount = slice.minor().min(amount_left);
            amount_left -= from_amount;
            post(
                platform.payouts_in_flight,
                target,
                Amount::from_minor(from_amount),
                transfer_code::PAYOUT_RETURNED,
            );
            post(
                platform.fee_income,
                target,
                Amount::from_minor(slice.minor() - from_amount),
                transfer_code::PAYOUT_FEE_RETURNED,
            );
            if !payout.funded && !lot.is_funded() {
                released += slice.minor();
            }
        }
        if released > 0 {
            post(
                platform.advances_outstanding,
                accounts.advanced,
                Amount::from_minor(released),
                transfer_code::ADVANCE_RELEASED,
            );
        }
        self.ledger
            .apply_chain(now, &events)
            .map_err(|f| DomainError::Ledger(f.error))?;
        for (lot_id, slice) in &payout.draws {
            // The lot holds claims again: put it back on the merchant's list.
            let list = &mut self.settlements.merchant_lots[merchant as usize];
            if let Err(position) = list.binary_search(lot_id) {
                list.insert(position, *lot_id);
                let lot = &self.settlements.lots[lot_id.0 as usize];
                self.settlements.settled_given[merchant as usize] -=
                    lot.drawn.minor() + lot.paid.minor();
                self.settlements.settled_claims[merchant as usize] -= lot.claims.minor();
            }
            let lot = &mut self.settlements.lots[lot_id.0 as usize];
            if payout.funded {
                lot.paid = sub(lot.paid, *slice);
            } else {
                lot.drawn = sub(lot.drawn, *slice);
                if let Some(position) = lot.exposures.iter().position(|(p, _)| *p == payout.id) {
                    lot.exposures.remove(position);
                }
            }
        }
        if released > 0 {
            self.release_exposure(
                merchant,
                payout.funder.as_deref(),
                Amount::from_minor(released),
            );
        }
        if !self.settlements.queued_refunds.is_empty() {
            self.retry_queued_refunds(now, merchant);
        }
        Ok(())
    }

    fn release_exposure(&mut self, merchant: u32, funder: Option<&str>, amount: Amount) {
        if let Some(f) = self
            .settlements
            .funders
            .iter_mut()
            .find(|f| Some(f.id.as_str()) == funder)
        {
            f.used = sub(f.used, amount);
        }
        let outstanding = &mut self.settlements.outstanding[merchant as usize];
        *outstanding = sub(*outstanding, amount);
    }

    /// The channel's money for a business date arrived: the lots become funded, their
    /// remaining claims become available, the advances drawn on them are repaid (exposure
    /// released). A short or excess amount is posted as a channel discrepancy.
    pub(crate) fn record_channel_settlement(
        &mut self,
        now: Timestamp,
        new: &NewChannelSettlement,
    ) -> CommandResult {
        if !is_valid_external_id(&new.bank_reference) {
            return Err(DomainError::InvalidId);
        }
        let channel = *self
            .channel_index
            .get(&new.channel_id)
            .ok_or(DomainError::UnknownChannel)?;
        if let Some(index) = self
            .settlements
            .settlement_refs
            .get(&(channel, new.bank_reference.clone()))
        {
            let existing = self.settlements.channel_settlements[*index].clone();
            return if existing.business_date == new.business_date && existing.amount == new.amount {
                Ok(Outcome::ChannelSettlement {
                    settlement: existing,
                    created: false,
                })
            } else {
                Err(DomainError::SettlementConflict)
            };
        }
        if !new.amount.is_positive() {
            return Err(DomainError::AmountMustBePositive);
        }
        let lot_ids: Vec<LotId> = self
            .settlements
            .channel_day_lots
            .get(&(channel, new.business_date))
            .map(|ids| {
                ids.iter()
                    .copied()
                    .filter(|id| {
                        matches!(
                            self.settlements.lot(*id).state,
                            LotState::Open | LotState::Sealed
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if lot_ids.is_empty()
            || lot_ids
                .iter()
                .any(|id| self.settlements.lot(*id).state == LotState::Open)
        {
            return Err(DomainError::NothingToFund);
        }
        let currency = self.channels[channel as usize].currency;
        let receivable = self.channels[channel as usize].receivable_account;
        let platform = self.platform_accounts_for(currency);
        let record = self.settlements.channel_settlements.len() as u64 + 1;
        // Refunds of days the channel had already paid are netted from this payment.
        let refunds_due = self
            .settlements
            .channel_refunds_due
            .get(&channel)
            .copied()
            .unwrap_or(Amount::ZERO);
        let gross_expected = lot_ids.iter().fold(Amount::ZERO, |sum, id| {
            add(sum, self.settlements.lot(*id).expected_from_channel)
        });
        let netted = refunds_due.min(gross_expected);
        let expected = sub(gross_expected, netted);
        let mut events = Vec::new();
        let mut leg = 0u32;
        let mut post = |debit: AccountId, credit: AccountId, amount: Amount, code: u16| {
            if amount.is_positive() {
                leg += 1;
                events.push(transfer(
                    RECORD_KIND_CHANNEL_SETTLEMENT,
                    record,
                    leg,
                    debit,
                    credit,
                    amount,
                    code,
                ));
            }
        };
        post(
            platform.cash,
            receivable,
            new.amount.min(expected),
            transfer_code::FUNDS_RECEIVED,
        );
        post(
            platform.channel_discrepancy,
            receivable,
            sub(expected, new.amount),
            transfer_code::FUNDS_SHORT,
        );
        post(
            platform.cash,
            platform.channel_discrepancy,
            sub(new.amount, expected),
            transfer_code::FUNDS_EXCESS,
        );
        self.ledger
            .apply_chain(now, &events)
            .map_err(|f| DomainError::Ledger(f.error))?;
        if netted.is_positive() {
            self.settlements
                .channel_refunds_due
                .insert(channel, sub(refunds_due, netted));
        }
        // The money is in; the lots become funded over the next ticks, in order.
        for id in &lot_ids {
            self.settlements.lot_mut(*id).state = LotState::Funding;
            self.settlements.funding_queue.push_back(*id);
        }
        let settlement = ChannelSettlement {
            id: record,
            channel_id: new.channel_id.clone(),
            business_date: new.business_date,
            amount: new.amount,
            expected,
            discrepancy: sub(new.amount, expected),
            bank_reference: new.bank_reference.clone(),
            lots: lot_ids.len() as u32,
            created_at: now,
        };
        self.settlements.settlement_refs.insert(
            (channel, new.bank_reference.clone()),
            self.settlements.channel_settlements.len(),
        );
        self.settlements
            .channel_settlements
            .push(settlement.clone());
        Ok(Outcome::ChannelSettlement {
            settlement,
            created: true,
        })
    }

    /// Marks one lot whose channel money arrived as funded: its remaining claims become
    /// available and the advances drawn on it are repaid (their exposure released).
    pub(crate) fn fund_lot(&mut self, now: Timestamp, id: LotId) {
        let lot = self.settlements.lot(id).clone();
        let m = &self.merchants[lot.merchant as usize];
        let (accounts, currency) = (m.accounts, m.currency);
        // The reserve (保证金): a share of the funded claims held back, as a hold anyone can
        // list and an operator can release.
        let ratio = m.terms_at(now).reserve_ratio_ppm;
        let reserve = Amount::from_minor(
            i64::try_from(
                i128::from(lot.remaining().minor()) * i128::from(ratio) / i128::from(RATE_PPM_ONE),
            )
            .unwrap_or(0),
        );
        let merchant_id = m.id.clone();
        let platform = self.platform_accounts_for(currency);
        let mut events = Vec::new();
        let mut leg = 0u32;
        let mut post = |debit: AccountId, credit: AccountId, amount: Amount, code: u16| {
            if amount.is_positive() {
                leg += 1;
                events.push(transfer(
                    RECORD_KIND_LOT_FUNDED,
                    u64::from(id.0),
                    leg,
                    debit,
                    credit,
                    amount,
                    code,
                ));
            }
        };
        post(
            accounts.pending,
            accounts.available,
            lot.remaining(),
            transfer_code::CLAIMS_FUNDED,
        );
        post(
            accounts.available,
            accounts.frozen,
            reserve,
            transfer_code::RESERVE_HELD,
        );
        let mut releases = Vec::new();
        for (payout, slice) in &lot.exposures {
            post(
                platform.advances_outstanding,
                accounts.advanced,
                *slice,
                transfer_code::ADVANCE_RELEASED,
            );
            let funder = self
                .settlements
                .payout(*payout)
                .and_then(|p| p.funder.clone());
            releases.push((funder, *slice));
        }
        // These postings move balances the lot accounts for exactly; a refusal would mean the
        // books and the lots disagree, which `check_invariants` reports.
        if self.ledger.apply_chain(now, &events).is_err() {
            return;
        }
        for (funder, amount) in releases {
            self.release_exposure(lot.merchant, funder.as_deref(), amount);
        }
        let stored = self.settlements.lot_mut(id);
        stored.state = LotState::Funded;
        stored.funded_at = Some(now);
        stored.exposures.clear();
        if reserve.is_positive() {
            let held = &mut self.settlements.held[lot.merchant as usize];
            *held = add(*held, reserve);
            self.settlements.holds.push(crate::refunds::Hold {
                id: format!("reserve-lot-{}", id.0),
                merchant_id,
                amount: reserve,
                reason: "reserve".into(),
                active: true,
                created_at: now,
                released_at: None,
            });
        }
    }

    /// A settlement run for one merchant, scheduled at `at`: pays what is left of its due lots
    /// now. Funded lots are paid as a settlement payout less its fee; unfunded due lots are
    /// paid only under same-day cycles or `settle_before_funds`, as an advance within every
    /// advance rule. Lots whose due date needs a calendar year without data wait.
    pub(crate) fn settlement_run(&mut self, now: Timestamp, merchant: u32, at: Timestamp) {
        let terms = self.merchants[merchant as usize].terms_at(at).clone();
        if terms.bank_account.is_none() || self.settlements.frozen[merchant as usize] {
            return;
        }
        // Lots fully paid out have nothing left to settle: drop them from the merchant's list.
        let s = &mut self.settlements;
        let (lots, given, claims) = (&s.lots, &mut s.settled_given, &mut s.settled_claims);
        s.merchant_lots[merchant as usize].retain(|id| {
            let lot = &lots[id.0 as usize];
            let done =
                lot.is_funded() && lot.remaining() == Amount::ZERO && lot.exposures.is_empty();
            if done {
                given[merchant as usize] += lot.drawn.minor() + lot.paid.minor();
                claims[merchant as usize] += lot.claims.minor();
            }
            !done
        });
        let today = local_date(at);
        let current = business_date(at, terms.settlement.cutoff_minute);
        let mut funded_due = Vec::new();
        let mut unfunded_due = Vec::new();
        for id in self.settlements.merchant_lots[merchant as usize].clone() {
            let lot = self.settlements.lot(id);
            if !lot.remaining().is_positive() {
                continue;
            }
            let eligible = if lot.cycle.is_same_day() {
                lot.business_date <= current
            } else {
                lot.business_date < current
            };
            let due = self
                .due_date(lot, &terms.calendar)
                .is_ok_and(|d| d <= today);
            if !eligible || !due {
                continue;
            }
            if lot.is_funded() {
                funded_due.push(id);
            } else if lot.cycle.is_same_day() || terms.settlement.settle_before_funds {
                unfunded_due.push(id);
            }
        }
        // Held money stays: pay due lots only up to what is payable.
        let total: i64 = funded_due
            .iter()
            .map(|id| self.settlements.lot(*id).remaining().minor())
            .sum::<i64>()
            .min(self.payable_funded(merchant).minor());
        let fee = terms.settlement.payout_fee;
        if total > fee.minor() {
            let draws = self
                .plan_draws(&funded_due, Amount::from_minor(total))
                .unwrap_or_default();
            let plan = Plan {
                kind: PayoutKind::Settlement,
                amount: Amount::from_minor(total - fee.minor()),
                fee,
                draws,
                funded: true,
                funder: None,
                days_to_funds: 0,
            };
            // A refusal here would mean a broken invariant; the run then pays nothing.
            let _ = self.post_payout(now, merchant, &terms, plan, None);
        }
        if !unfunded_due.is_empty() && terms.advance.enabled {
            let room: i64 = unfunded_due
                .iter()
                .map(|id| self.settlements.lot(*id).remaining().minor())
                .sum();
            let Ok(days) = self.days_to_funds(&unfunded_due, &terms.calendar, today) else {
                return;
            };
            let room =
                Amount::from_minor(room.min(self.advance_room(merchant, &terms, now).minor()));
            let mut amount = terms.advance.largest_advance(room, days);
            if terms.advance.limit_per_payout.is_positive() {
                amount = amount.min(terms.advance.limit_per_payout);
            }
            if amount.is_positive()
                && let Ok(plan) = self.plan_advance(
                    merchant,
                    &terms,
                    &unfunded_due,
                    amount,
                    PayoutKind::Settlement,
                    now,
                )
            {
                let _ = self.post_payout(now, merchant, &terms, plan, None);
            }
        }
    }

    /// Checks every invariant of the model against the ledger; `Err` names the first broken
    /// one. Used by tests and the simulator after every step.
    pub fn check_invariants(&self) -> Result<(), String> {
        for line in self.ledger.trial_balance() {
            if !line.balanced() {
                return Err(format!("trial balance off: {line:?}"));
            }
        }
        let lots: Vec<&Lot> = self
            .settlements
            .merchant_lots
            .iter()
            .flatten()
            .map(|id| self.settlements.lot(*id))
            .collect();
        for lot in &lots {
            if lot.drawn.minor() < 0
                || lot.paid.minor() < 0
                || lot.refunded.minor() < 0
                || lot.remaining().minor() < 0
            {
                return Err(format!(
                    "lot {:?} paid more than its claims: {lot:?}",
                    lot.id
                ));
            }
            if lot.is_funded() && !lot.exposures.is_empty() {
                return Err(format!("funded lot {:?} still carries exposure", lot.id));
            }
        }
        // One pass over lots and payouts, summed per merchant.
        #[derive(Default, Clone, Copy)]
        struct Sums {
            pending: i64,
            available: i64,
            exposure: i64,
            given: i64,
            claims: i64,
            taken: i64,
        }
        let mut sums = vec![Sums::default(); self.merchants.len()];
        for (index, s) in sums.iter_mut().enumerate() {
            s.given = self.settlements.settled_given[index];
            s.claims = self.settlements.settled_claims[index];
        }
        for lot in &lots {
            let s = &mut sums[lot.merchant as usize];
            if lot.is_funded() {
                s.available += lot.remaining().minor();
            } else {
                s.pending += lot.remaining().minor();
            }
            s.exposure += lot.exposures.iter().map(|(_, a)| a.minor()).sum::<i64>();
            s.given += lot.drawn.minor() + lot.paid.minor();
            s.claims += lot.claims.minor();
        }
        for (index, taken) in self.settlements.taken.iter().enumerate() {
            sums[index].taken = *taken;
        }
        for (index, m) in self.merchants.iter().enumerate() {
            let s = sums[index];
            let held = self.settlements.held[index].minor();
            let debt = self.settlements.debt[index].minor();
            let checks = [
                (
                    "pending",
                    self.balance(m.accounts.pending).minor(),
                    s.pending,
                ),
                (
                    "available",
                    self.balance(m.accounts.available).minor(),
                    s.available - held,
                ),
                ("frozen", self.balance(m.accounts.frozen).minor(), held),
                ("debt", self.balance(m.accounts.debt).minor(), debt),
                (
                    "advanced",
                    self.balance(m.accounts.advanced).minor(),
                    s.exposure,
                ),
                (
                    "outstanding",
                    self.settlements.outstanding[index].minor(),
                    s.exposure,
                ),
            ];
            for (name, ledger_side, lot_side) in checks {
                if ledger_side != lot_side {
                    return Err(format!(
                        "merchant {}: {name} is {ledger_side} in the ledger, {lot_side} by lots",
                        m.id
                    ));
                }
            }
            // No loss by design: what payouts took (amount + fee, unless failed) is exactly
            // what the lots gave, and never more than the claims.
            if s.taken != s.given || s.given > s.claims {
                return Err(format!(
                    "merchant {}: payouts took {}, lots gave {}, claims {}",
                    m.id, s.taken, s.given, s.claims
                ));
            }
            // Each draw checks the limit in force when it is made; terms may change later.
            let (_, drawn, limit) = self.settlements.advance_day[index];
            if limit.is_positive() && drawn > limit {
                return Err(format!("merchant {}: daily advance limit exceeded", m.id));
            }
        }
        let limit = self.settlements.exposure_limit_at_last_draw;
        if limit.is_positive() && self.total_exposure() > limit {
            return Err(format!(
                "total exposure {:?} above the overall limit {limit:?}",
                self.total_exposure()
            ));
        }
        for funder in &self.settlements.funders {
            if funder.used > funder.limit || funder.used.minor() < 0 {
                return Err(format!(
                    "funder {} used {:?} of {:?}",
                    funder.id, funder.used, funder.limit
                ));
            }
            let carried: i64 = lots
                .iter()
                .flat_map(|l| l.exposures.iter())
                .filter(|(p, _)| {
                    self.settlements
                        .payout(*p)
                        .and_then(|p| p.funder.as_deref())
                        == Some(funder.id.as_str())
                })
                .map(|(_, a)| a.minor())
                .sum();
            if carried != funder.used.minor() {
                return Err(format!(
                    "funder {} used {:?} but carries {carried}",
                    funder.id, funder.used
                ));
            }
        }
        for platform in &self.platform_accounts {
            let in_flight: i64 = self
                .merchants
                .iter()
                .zip(&self.settlements.in_flight)
                .filter(|(m, _)| m.currency == platform.currency)
                .map(|(_, amount)| *amount)
                .sum();
            let ledger_side = self.balance(platform.payouts_in_flight).minor();
            if ledger_side != in_flight {
                return Err(format!(
                    "payouts in flight {ledger_side} in the ledger, {in_flight} by payouts"
                ));
            }
        }
        Ok(())
    }

    /// Recounts, from every payout record, the per-merchant sums `check_invariants` relies on
    /// (what payouts took, what is in flight). Slower: tests call it now and then.
    pub fn check_records(&self) -> Result<(), String> {
        let mut taken = vec![0i64; self.merchants.len()];
        let mut in_flight = vec![0i64; self.merchants.len()];
        for payout in &self.settlements.payouts {
            let index = *self
                .merchant_index
                .get(&payout.merchant_id)
                .ok_or_else(|| format!("payout {:?} of an unknown merchant", payout.id))?
                as usize;
            if payout.status != PayoutStatus::Failed {
                taken[index] += payout.amount.minor() + payout.fee.minor();
            }
            if payout.status.in_flight() {
                in_flight[index] += payout.amount.minor();
            }
        }
        if taken != self.settlements.taken || in_flight != self.settlements.in_flight {
            return Err("payout sums differ from the payout records".into());
        }
        let mut given = vec![0i64; self.merchants.len()];
        let mut claims = vec![0i64; self.merchants.len()];
        let listed: std::collections::HashSet<LotId> = self
            .settlements
            .merchant_lots
            .iter()
            .flatten()
            .copied()
            .collect();
        for lot in &self.settlements.lots {
            if !listed.contains(&lot.id) {
                if !(lot.is_funded() && lot.remaining() == Amount::ZERO) {
                    return Err(format!("lot {:?} holds claims but is off the list", lot.id));
                }
                given[lot.merchant as usize] += lot.drawn.minor() + lot.paid.minor();
                claims[lot.merchant as usize] += lot.claims.minor();
            }
        }
        if given != self.settlements.settled_given || claims != self.settlements.settled_claims {
            return Err("settled-lot sums differ from the lots".into());
        }
        Ok(())
    }
}

fn transfer(
    kind: u8,
    record: u64,
    leg: u32,
    debit: AccountId,
    credit: AccountId,
    amount: Amount,
    code: u16,
) -> Event {
    Event::CreateTransfer(NewTransfer {
        id: internal_transfer_id(kind, record, leg),
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        pending_id: TransferId(0),
        timeout_seconds: 0,
        flags: TransferFlags::NONE,
        code,
        user_data: record,
    })
}
