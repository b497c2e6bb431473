//! The platform state machine: business commands in, typed outcomes and durable effects out.
//!
//! Like the ledger beneath it, it is pure: the engine gives it a timestamp and commands, and
//! takes away the effects to persist. Every command either applies completely or changes
//! nothing. Every input that changed the state (a command, or a tick of the clock that fired
//! scheduled work) gets the next operation number; replaying the same inputs with the same
//! timestamps in operation order rebuilds the same state, which is how the engine recovers.

use std::collections::{BTreeMap, HashMap};
use std::hash::RandomState;
use std::sync::Arc;

use ledger::{
    Account, AccountFlags, AccountId, AccountKind, Amount, Currency, Event, IdHasher, Journal,
    Ledger, LedgerError, NewAccount, NewTransfer, ShardedMap, Timestamp, TransferFlags, TransferId,
};

use crate::calendar::{Calendar, CalendarError, CalendarYear, Date, business_date};
use crate::fees::{FeeSchedule, FeeScheduleError};
use crate::model::{
    Channel, Merchant, MerchantAccounts, NewPayment, PAYMENT_AMOUNT_MAX, Payment, PaymentId,
    PlatformAccounts, is_valid_external_id, is_valid_name,
};
use crate::settlement::{
    ChannelSettlement, Funder, Lot, LotId, NewChannelSettlement, NewFunder, Payout, PayoutId,
    PayoutRequest, PayoutResult, ScheduledWork, Settlements,
};
use crate::terms::{Cycle, MerchantTerms, TermsError};

/// Roles of ledger accounts, stored in the account's `code` so that storage alone tells what
/// each account is for.
pub mod account_code {
    pub const CHANNEL_RECEIVABLE: u16 = 1;
    pub const FEE_INCOME: u16 = 2;
    pub const CHANNEL_COST: u16 = 3;
    pub const CASH: u16 = 4;
    pub const PAYOUTS_IN_FLIGHT: u16 = 5;
    pub const ADVANCES_OUTSTANDING: u16 = 6;
    pub const CHANNEL_DISCREPANCY: u16 = 7;
    pub const MERCHANT_PENDING: u16 = 10;
    pub const MERCHANT_AVAILABLE: u16 = 11;
    pub const MERCHANT_FROZEN: u16 = 12;
    pub const MERCHANT_ADVANCED: u16 = 13;
    pub const MERCHANT_DEBT: u16 = 14;
}

/// Kinds of postings, stored in the transfer's `code`.
pub mod transfer_code {
    pub const PAYIN_CLAIM: u16 = 1;
    pub const PAYIN_FEE: u16 = 2;
    pub const PAYIN_COST: u16 = 3;
    pub const PAYOUT_AMOUNT: u16 = 10;
    pub const PAYOUT_FEE: u16 = 11;
    pub const PAYOUT_PAID: u16 = 12;
    pub const PAYOUT_RETURNED: u16 = 13;
    pub const PAYOUT_FEE_RETURNED: u16 = 14;
    pub const PAYOUT_COST: u16 = 17;
    pub const ADVANCE_DRAWN: u16 = 15;
    pub const ADVANCE_RELEASED: u16 = 16;
    pub const FUNDS_RECEIVED: u16 = 20;
    pub const FUNDS_SHORT: u16 = 21;
    pub const FUNDS_EXCESS: u16 = 22;
    pub const CLAIMS_FUNDED: u16 = 23;
    pub const REFUND_CLAIM: u16 = 30;
    pub const REFUND_FEE: u16 = 31;
    pub const REVERSAL_DEBT: u16 = 32;
    pub const DEBT_RECOVERED: u16 = 33;
    pub const HOLD_PLACED: u16 = 40;
    pub const RESERVE_HELD: u16 = 42;
    pub const RESERVE_USED: u16 = 43;
    pub const HOLD_RELEASED: u16 = 41;
}

/// Transfer ids the platform chooses for its own postings: the top byte says what kind of
/// business record they belong to, the middle bits that record's number, the low 24 bits the
/// leg.
pub(crate) fn internal_transfer_id(kind: u8, record: u64, leg: u32) -> TransferId {
    TransferId((u128::from(kind) << 120) | (u128::from(record) << 24) | u128::from(leg & 0xff_ffff))
}
pub(crate) const RECORD_KIND_PAYMENT: u8 = 1;
pub(crate) const RECORD_KIND_PAYOUT: u8 = 2;
pub(crate) const RECORD_KIND_CHANNEL_SETTLEMENT: u8 = 3;
pub(crate) const RECORD_KIND_PAYOUT_RESULT: u8 = 4;
pub(crate) const RECORD_KIND_LOT_FUNDED: u8 = 7;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewChannel {
    pub id: String,
    pub name: String,
    pub currency: Currency,
    pub cost: FeeSchedule,
    pub settlement_cycle: Cycle,
    /// What the channel charges the platform per payout it carries.
    pub payout_cost: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMerchant {
    pub id: String,
    pub name: String,
    pub currency: Currency,
    /// The first terms version; its `effective_from` is ignored (it takes effect at creation).
    pub terms: MerchantTerms,
}

/// A business command. Each is applied atomically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    CreateChannel(NewChannel),
    CreateMerchant(NewMerchant),
    /// A new terms version; it takes effect at `terms.effective_from`, or now if that is past.
    SetMerchantTerms {
        merchant_id: String,
        terms: MerchantTerms,
    },
    LoadCalendarYear {
        calendar_id: String,
        year: CalendarYear,
    },
    CreateFunder(NewFunder),
    RecordPayment(NewPayment),
    RequestPayout(PayoutRequest),
    /// The payout channel accepted the payout.
    MarkPayoutSent(PayoutId),
    /// What the payout channel (or a status query, reconciliation or an operator) says.
    ResolvePayout {
        payout: PayoutId,
        result: PayoutResult,
    },
    RecordChannelSettlement(NewChannelSettlement),
    /// The merchant returns money to a customer (partial or full, possibly several times).
    RefundPayment(crate::refunds::RefundRequest),
    /// The channel takes a payment back (reversal, chargeback); what the merchant's claims
    /// cannot cover becomes its debt.
    ReversePayment(crate::refunds::RefundRequest),
    /// Holds an amount of the merchant's available money (risk hold).
    PlaceHold(crate::refunds::NewHold),
    ReleaseHold {
        hold_id: String,
    },
    /// Stops (or resumes) every payout of a merchant.
    SetMerchantFrozen {
        merchant_id: String,
        frozen: bool,
    },
    /// The most the platform may have advanced and not yet funded, over all merchants and
    /// funders (zero: no limit beyond the funders' own).
    SetExposureLimit {
        limit: Amount,
    },
    /// Merchant users: masters, operators, permissions, sign-in audit.
    Directory(auth::DirectoryCommand),
    /// Devices, sessions and login policies of merchant users.
    Device(auth::DeviceCommand),
    /// A merchant's master sets the amount above which app refunds need approval (`None`:
    /// none do).
    SetApprovalThreshold {
        actor: String,
        threshold: Option<Amount>,
    },
    /// A refund by a merchant user from the app, within its caps.
    UserRefund {
        user_id: String,
        device_id: String,
        request: crate::refunds::RefundRequest,
        /// How the request was verified: it caps the user's day and names the audited factors.
        level: auth::stepup::Level,
    },
    /// A fund operation waits for a second user's approval.
    RequestApproval(crate::approvals::NewApproval),
    /// Another user with `approve` approves (running the operation) or rejects it.
    DecideApproval {
        id: String,
        checker: String,
        checker_device: String,
        approve: bool,
    },
}

/// What a successful command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `created` is false when an identical channel already existed.
    Channel {
        channel: Channel,
        created: bool,
    },
    Merchant {
        merchant: Merchant,
        created: bool,
    },
    TermsSet(Merchant),
    CalendarLoaded {
        calendar_id: String,
        year: i32,
    },
    Funder {
        funder: Funder,
        created: bool,
    },
    /// Shared with the effects to persist, so the record is not copied on the hot path.
    PaymentRecorded(Arc<Payment>),
    /// The same channel trade number was reported before with the same content: the original
    /// payment, unchanged.
    PaymentExists(Payment),
    /// `created` is false when the request id was used before with the same content.
    Payout {
        payout: Payout,
        created: bool,
    },
    ChannelSettlement {
        settlement: ChannelSettlement,
        created: bool,
    },
    Refund {
        refund: crate::refunds::Refund,
        created: bool,
    },
    Hold {
        hold: crate::refunds::Hold,
        created: bool,
    },
    MerchantFrozen {
        merchant_id: String,
        frozen: bool,
        changed: bool,
    },
    ExposureLimit {
        limit: Amount,
        changed: bool,
    },
    User(auth::MerchantUser),
    Device(auth::DeviceOutcome),
    ApprovalThreshold(Option<Amount>),
    /// An approval, and what its approval ran (a refund or a payout).
    Approval {
        approval: crate::approvals::Approval,
        result: Option<Box<Outcome>>,
    },
}

impl Outcome {
    /// Whether the command changed the state (and so must be replayed on recovery).
    pub fn changed_state(&self) -> bool {
        match self {
            Outcome::Channel { created, .. }
            | Outcome::Merchant { created, .. }
            | Outcome::Funder { created, .. }
            | Outcome::Payout { created, .. }
            | Outcome::ChannelSettlement { created, .. }
            | Outcome::Refund { created, .. }
            | Outcome::Hold { created, .. } => *created,
            Outcome::MerchantFrozen { changed, .. } | Outcome::ExposureLimit { changed, .. } => {
                *changed
            }
            Outcome::User(_)
            | Outcome::Device(_)
            | Outcome::ApprovalThreshold(_)
            | Outcome::Approval { .. }
            | Outcome::TermsSet(_)
            | Outcome::CalendarLoaded { .. }
            | Outcome::PaymentRecorded(_) => true,
            Outcome::PaymentExists(_) => false,
        }
    }
}

/// Why a command was refused. Refusal changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainError {
    InvalidId,
    InvalidName,
    InvalidFeeSchedule(FeeScheduleError),
    InvalidTerms(TermsError),
    ChannelExistsWithDifferentContent,
    MerchantExistsWithDifferentContent,
    FunderExistsWithDifferentContent,
    UnknownChannel,
    UnknownMerchant,
    UnknownFunder,
    UnknownPayout,
    UnknownCalendar(String),
    CalendarYearMissing {
        calendar: String,
        year: i32,
    },
    InvalidCalendar(String),
    CurrencyMismatch,
    AmountMustBePositive,
    AmountTooLarge,
    /// The merchant fee would leave the merchant no positive claim.
    FeeNotBelowAmount,
    /// The merchant fee is below the channel's cost and the merchant's terms do not allow it.
    FeeBelowFloor,
    /// The same channel trade number was reported before with different content.
    DuplicateTradeWithDifferentContent,
    /// The same payout request id was used before with different content.
    PayoutRequestConflict,
    /// The same bank reference was reported before with different content.
    SettlementConflict,
    NoBankAccount,
    InsufficientFunds,
    AdvanceNotEnabled,
    AdvanceLimitExceeded(&'static str),
    NoFunderRoom,
    AdvanceFeeBelowCostOfFunds,
    /// No unfunded lots of this channel and business date are waiting for money.
    NothingToFund,
    /// The payout is not in a state that allows this change.
    PayoutStateConflict {
        status: &'static str,
    },
    /// Refunds and reversals of a payment may not exceed its amount.
    RefundExceedsPayment,
    UnknownPayment,
    UnknownHold,
    /// Payouts of this merchant are stopped by an operator.
    MerchantFrozen,
    /// A merchant-user change was refused.
    Directory(auth::DirectoryError),
    /// A device or session change was refused.
    Device(auth::DeviceError),
    /// An approval request or decision was refused.
    Approval(crate::approvals::ApprovalError),
    /// A merchant user's single (or, with `daily`, daily) refund cap would be exceeded.
    RefundCap {
        daily: bool,
    },
    /// The day's refunds would pass what the request's verification level allows.
    LevelCap,
    /// The ledger refused the postings; with validated input this means a balance would
    /// overflow or an invariant was about to break.
    Ledger(LedgerError),
}

impl From<CalendarError> for DomainError {
    fn from(error: CalendarError) -> DomainError {
        match error {
            CalendarError::YearMissing { calendar, year } => {
                DomainError::CalendarYearMissing { calendar, year }
            }
            CalendarError::UnknownCalendar(id) => DomainError::UnknownCalendar(id),
            CalendarError::InvalidYear(message) => DomainError::InvalidCalendar(message),
        }
    }
}

pub type CommandResult = Result<Outcome, DomainError>;

/// What the engine must persist after a batch, in the order it happened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    pub payments: Vec<Arc<Payment>>,
    pub journal: Journal,
    /// New entries of the audit chain.
    pub audit: Vec<auth::AuditEntry>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.payments.is_empty() && self.journal.is_empty() && self.audit.is_empty()
    }
}

/// A merchant's balances as it sees them, each on its account's normal side, and the largest
/// advance it could take now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MerchantBalances {
    pub pending: Amount,
    pub available: Amount,
    pub frozen: Amount,
    pub advanced: Amount,
    pub debt: Amount,
    pub advance_available: Amount,
}

/// What a tick did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickReport {
    pub changed: bool,
    /// Pieces of scheduled work done.
    pub work: u32,
    /// Whether more work is already due (the tick stopped at its limit).
    pub more_due: bool,
}

/// What the index of reported trades remembers of each payment: enough to recognise a retry
/// and, with the retry's own (equal) content, to answer with the original payment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TradeEntry {
    pub(crate) payment: PaymentId,
    content: u64,
    /// Gross amount and merchant, for refunds and reversals.
    pub(crate) amount: Amount,
    pub(crate) merchant: u32,
    pub(crate) merchant_fee: Amount,
    channel_cost: Amount,
    created_at: Timestamp,
    merchant_prev_id: Option<PaymentId>,
    pub(crate) business_date: Date,
    op: u64,
}

impl TradeEntry {
    fn payment(&self, new: &NewPayment) -> Payment {
        Payment {
            id: self.payment,
            channel_id: new.channel_id.clone(),
            merchant_id: new.merchant_id.clone(),
            channel_trade_no: new.channel_trade_no.clone(),
            merchant_order_no: new.merchant_order_no.clone(),
            amount: new.amount,
            currency: new.currency,
            paid_at: new.paid_at,
            merchant_fee: self.merchant_fee,
            channel_cost: self.channel_cost,
            merchant_claim: Amount::from_minor(new.amount.minor() - self.merchant_fee.minor()),
            created_at: self.created_at,
            merchant_prev_id: self.merchant_prev_id,
            business_date: self.business_date,
            op: self.op,
            store_id: new.store_id.clone(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Platform {
    pub(crate) ledger: Ledger,
    pub(crate) channels: Vec<Channel>,
    pub(crate) channel_index: HashMap<String, u32>,
    pub(crate) merchants: Vec<Merchant>,
    pub(crate) merchant_index: HashMap<String, u32>,
    pub(crate) platform_accounts: Vec<PlatformAccounts>,
    pub(crate) calendars: BTreeMap<String, Calendar>,
    /// Per channel (by index): channel trade number → payment. Keys are external strings, so
    /// the map keeps the standard collision-resistant hasher.
    pub(crate) trades: Vec<ShardedMap<Box<str>, TradeEntry, RandomState>>,
    /// Each merchant's newest payment, by merchant index: the head of its payment chain.
    merchant_last_payment: Vec<Option<PaymentId>>,
    /// Lots, funders, payouts, exposures and the schedule of cutoffs and runs.
    pub(crate) settlements: Settlements,
    /// Merchant users and the audit chain.
    directory: auth::Directory,
    devices: auth::Devices,
    pub(crate) approvals: crate::approvals::Approvals,
    next_account_id: u64,
    next_payment_id: u64,
    /// Operations applied so far (inputs that changed the state).
    ops: u64,
    effects: Effects,
}

impl Platform {
    pub fn new() -> Platform {
        Platform {
            next_account_id: 1,
            next_payment_id: 1,
            ..Platform::default()
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Operations applied so far: the number of the last one.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    pub fn channel(&self, id: &str) -> Option<&Channel> {
        let index = *self.channel_index.get(id)?;
        self.channels.get(index as usize)
    }

    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    pub fn merchant(&self, id: &str) -> Option<&Merchant> {
        let index = *self.merchant_index.get(id)?;
        self.merchants.get(index as usize)
    }

    pub fn merchants(&self) -> &[Merchant] {
        &self.merchants
    }

    pub fn platform_accounts(&self) -> &[PlatformAccounts] {
        &self.platform_accounts
    }

    pub fn directory(&self) -> &auth::Directory {
        &self.directory
    }

    pub fn approvals(&self) -> &crate::approvals::Approvals {
        &self.approvals
    }

    pub(crate) fn directory_mut(&mut self) -> &mut auth::Directory {
        &mut self.directory
    }

    /// Appends a record to the audit chain.
    pub(crate) fn audit(
        &mut self,
        now: Timestamp,
        merchant_id: &str,
        user_id: &str,
        device_id: Option<String>,
        action: &str,
        detail: String,
    ) {
        self.directory.append_audit(auth::AuditRecord {
            at_micros: now.micros(),
            merchant_id: merchant_id.to_owned(),
            user_id: user_id.to_owned(),
            device_id,
            action: action.to_owned(),
            factors: Vec::new(),
            approver: None,
            detail,
        });
    }

    pub fn devices(&self) -> &auth::Devices {
        &self.devices
    }

    /// Applies a device command and audits what it changed.
    fn apply_device(&mut self, now: Timestamp, command: &auth::DeviceCommand) -> CommandResult {
        let outcome = self
            .devices
            .apply(&self.directory, now.micros(), command)
            .map_err(DomainError::Device)?;
        if let Some(record) = auth::devices::audit_record(
            &self.devices,
            &self.directory,
            now.micros(),
            command,
            &outcome,
        ) {
            self.directory.append_audit(record);
        }
        Ok(Outcome::Device(outcome))
    }

    fn apply_directory(
        &mut self,
        now: Timestamp,
        command: &auth::DirectoryCommand,
    ) -> CommandResult {
        if let auth::DirectoryCommand::CreateMaster { merchant_id, .. } = command
            && !self.merchant_index.contains_key(merchant_id)
        {
            return Err(DomainError::UnknownMerchant);
        }
        self.directory
            .apply(now.micros(), command)
            .map(Outcome::User)
            .map_err(DomainError::Directory)
    }

    pub fn calendar(&self, id: &str) -> Option<&Calendar> {
        self.calendars.get(id)
    }

    pub fn funders(&self) -> &[Funder] {
        &self.settlements.funders
    }

    pub fn funder(&self, id: &str) -> Option<&Funder> {
        self.settlements.funders.iter().find(|f| f.id == id)
    }

    pub fn payout(&self, id: PayoutId) -> Option<&Payout> {
        self.settlements.payout(id)
    }

    /// A merchant's payouts, newest first.
    pub fn merchant_payouts(&self, merchant_id: &str) -> Vec<&Payout> {
        self.settlements
            .payouts
            .iter()
            .rev()
            .filter(|p| p.merchant_id == merchant_id)
            .collect()
    }

    /// All payouts in creation order.
    pub fn payouts(&self) -> &[Payout] {
        &self.settlements.payouts
    }

    /// A merchant's lots, oldest first.
    /// Every lot of a merchant, oldest first (for reports: it scans all lots).
    pub fn merchant_lots(&self, merchant_id: &str) -> Vec<&Lot> {
        let Some(&index) = self.merchant_index.get(merchant_id) else {
            return Vec::new();
        };
        self.settlements
            .lots()
            .iter()
            .filter(|lot| lot.merchant == index)
            .collect()
    }

    /// A merchant's lots that still hold claims or exposure, oldest first (kept as a list).
    pub fn unsettled_lots(&self, merchant_id: &str) -> Vec<&Lot> {
        let Some(&index) = self.merchant_index.get(merchant_id) else {
            return Vec::new();
        };
        self.settlements
            .merchant_lots(index)
            .iter()
            .map(|id| self.settlements.lot(*id))
            .collect()
    }

    pub fn lot(&self, id: LotId) -> &Lot {
        self.settlements.lot(id)
    }

    pub fn channel_settlements(&self) -> &[ChannelSettlement] {
        &self.settlements.channel_settlements
    }

    /// The newest payment of a merchant: where its order query starts.
    pub fn merchant_last_payment(&self, merchant_id: &str) -> Option<PaymentId> {
        let index = *self.merchant_index.get(merchant_id)?;
        self.merchant_last_payment
            .get(index as usize)
            .copied()
            .flatten()
    }

    /// The payment recorded for a channel's trade number, if any.
    pub fn payment_by_trade(&self, channel_id: &str, channel_trade_no: &str) -> Option<PaymentId> {
        let channel = *self.channel_index.get(channel_id)?;
        self.trades
            .get(channel as usize)?
            .get(channel_trade_no)
            .map(|entry| entry.payment)
    }

    /// Number of payments recorded so far.
    pub fn payment_count(&self) -> u64 {
        self.next_payment_id - 1
    }

    pub(crate) fn balance(&self, account: AccountId) -> Amount {
        self.ledger
            .account(account)
            .map_or(Amount::ZERO, Account::posted_balance)
    }

    pub fn merchant_balances(&self, id: &str, now: Timestamp) -> Option<MerchantBalances> {
        let index = *self.merchant_index.get(id)?;
        let accounts = self.merchants[index as usize].accounts;
        Some(MerchantBalances {
            pending: self.balance(accounts.pending),
            available: self.balance(accounts.available),
            frozen: self.balance(accounts.frozen),
            advanced: self.balance(accounts.advanced),
            debt: self.balance(accounts.debt),
            advance_available: self.advance_available(index, now),
        })
    }

    /// Takes the effects accumulated since the last call, for the engine to persist.
    pub fn take_effects(&mut self) -> Effects {
        let mut effects = std::mem::take(&mut self.effects);
        effects.journal = self.ledger.take_journal();
        effects.audit = self.directory.take_audit();
        effects
    }

    /// Work the clock drives, done at the start of each batch before its commands: pending
    /// transfers that time out, then cutoffs and settlement runs whose time has come, oldest
    /// first, at most `work_max` of them. A tick that changed anything is an operation: it is
    /// replayed on recovery with the same `work_max` it reports as `work`.
    pub fn tick(&mut self, now: Timestamp, work_max: usize) -> TickReport {
        let mut changed = self.ledger.expire_due(now) > 0;
        let mut work = 0;
        while work < work_max {
            // Lots whose money arrived come first, then cutoffs and runs in time order.
            if let Some(lot) = self.settlements.funding_queue.pop_front() {
                self.fund_lot(now, lot);
            } else if let Some(due) = self.settlements.next_due(now) {
                self.run_scheduled(now, due);
            } else {
                break;
            }
            changed = true;
            work += 1;
        }
        if changed {
            self.ops += 1;
        }
        TickReport {
            changed,
            work: work as u32,
            more_due: self.settlements.has_due(now),
        }
    }

    /// Whether scheduled work is due at `now`.
    pub fn has_due_work(&self, now: Timestamp) -> bool {
        self.settlements.has_due(now)
    }

    pub fn apply(&mut self, now: Timestamp, command: &Command) -> CommandResult {
        let result = match command {
            Command::CreateChannel(new) => self.create_channel(now, new),
            Command::CreateMerchant(new) => self.create_merchant(now, new),
            Command::SetMerchantTerms { merchant_id, terms } => {
                self.set_merchant_terms(now, merchant_id, terms)
            }
            Command::LoadCalendarYear { calendar_id, year } => {
                self.load_calendar_year(calendar_id, year)
            }
            Command::CreateFunder(new) => self.create_funder(now, new),
            Command::RecordPayment(new) => self.record_payment(now, new),
            Command::RequestPayout(request) => self.request_payout(now, request),
            Command::MarkPayoutSent(id) => self.mark_payout_sent(now, *id),
            Command::ResolvePayout { payout, result } => self.resolve_payout(now, *payout, *result),
            Command::RecordChannelSettlement(new) => self.record_channel_settlement(now, new),
            Command::RefundPayment(request) => self.refund(now, request, false),
            Command::ReversePayment(request) => self.refund(now, request, true),
            Command::PlaceHold(new) => self.place_hold(now, new),
            Command::ReleaseHold { hold_id } => self.release_hold(now, hold_id),
            Command::SetMerchantFrozen {
                merchant_id,
                frozen,
            } => self.set_merchant_frozen(merchant_id, *frozen),
            Command::SetExposureLimit { limit } => self.set_exposure_limit(*limit),
            Command::Directory(command) => self.apply_directory(now, command),
            Command::Device(command) => self.apply_device(now, command),
            Command::SetApprovalThreshold { actor, threshold } => {
                self.set_approval_threshold(now, actor, *threshold)
            }
            Command::UserRefund {
                user_id,
                request,
                device_id,
                level,
            } => self.user_refund(now, user_id, device_id, request, *level),
            Command::RequestApproval(new) => self.request_approval(now, new),
            Command::DecideApproval {
                id,
                checker,
                checker_device,
                approve,
            } => self.decide_approval(now, id, checker, checker_device, *approve),
        };
        if result.as_ref().is_ok_and(Outcome::changed_state) {
            self.ops += 1;
        }
        result
    }

    fn create_channel(&mut self, now: Timestamp, new: &NewChannel) -> CommandResult {
        validate_party(&new.id, &new.name, &new.cost)?;
        if new.payout_cost.minor() < 0 {
            return Err(DomainError::AmountMustBePositive);
        }
        if let Some(existing) = self.channel(&new.id) {
            let same = existing.name == new.name
                && existing.currency == new.currency
                && existing.cost == new.cost
                && existing.settlement_cycle == new.settlement_cycle
                && existing.payout_cost == new.payout_cost;
            return if same {
                Ok(Outcome::Channel {
                    channel: existing.clone(),
                    created: false,
                })
            } else {
                Err(DomainError::ChannelExistsWithDifferentContent)
            };
        }
        let index = u32::try_from(self.channels.len()).map_err(|_| DomainError::InvalidId)?;
        let mut events = self.platform_account_events(new.currency);
        let receivable = self.allocate_account_id();
        events.push(account_event(
            receivable,
            new.currency,
            AccountKind::Asset,
            AccountFlags::NONE,
            account_code::CHANNEL_RECEIVABLE,
            u64::from(index),
        ));
        self.create_accounts(now, &events)?;
        let channel = Channel {
            id: new.id.clone(),
            name: new.name.clone(),
            currency: new.currency,
            cost: new.cost,
            settlement_cycle: new.settlement_cycle,
            payout_cost: new.payout_cost,
            receivable_account: receivable,
            created_at: now,
        };
        self.channel_index.insert(channel.id.clone(), index);
        self.channels.push(channel.clone());
        self.trades.push(ShardedMap::default());
        Ok(Outcome::Channel {
            channel,
            created: true,
        })
    }

    fn create_merchant(&mut self, now: Timestamp, new: &NewMerchant) -> CommandResult {
        validate_party(&new.id, &new.name, &new.terms.fee)?;
        new.terms.validate().map_err(DomainError::InvalidTerms)?;
        if let Some(existing) = self.merchant(&new.id) {
            let first = &existing.terms[0];
            let same = existing.name == new.name
                && existing.currency == new.currency
                && existing.terms.len() == 1
                && MerchantTerms {
                    effective_from: first.effective_from,
                    ..new.terms.clone()
                } == *first;
            return if same {
                Ok(Outcome::Merchant {
                    merchant: existing.clone(),
                    created: false,
                })
            } else {
                Err(DomainError::MerchantExistsWithDifferentContent)
            };
        }
        let index = u32::try_from(self.merchants.len()).map_err(|_| DomainError::InvalidId)?;
        let mut events = self.platform_account_events(new.currency);
        let accounts = MerchantAccounts {
            pending: self.allocate_account_id(),
            available: self.allocate_account_id(),
            frozen: self.allocate_account_id(),
            advanced: self.allocate_account_id(),
            debt: self.allocate_account_id(),
        };
        let claims = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
        let memo = AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
        for (id, kind, flags, code) in [
            (
                accounts.pending,
                AccountKind::Liability,
                claims,
                account_code::MERCHANT_PENDING,
            ),
            (
                accounts.available,
                AccountKind::Liability,
                claims,
                account_code::MERCHANT_AVAILABLE,
            ),
            (
                accounts.frozen,
                AccountKind::Liability,
                claims,
                account_code::MERCHANT_FROZEN,
            ),
            (
                accounts.advanced,
                AccountKind::Asset,
                memo,
                account_code::MERCHANT_ADVANCED,
            ),
            (
                accounts.debt,
                AccountKind::Asset,
                memo,
                account_code::MERCHANT_DEBT,
            ),
        ] {
            events.push(account_event(
                id,
                new.currency,
                kind,
                flags,
                code,
                u64::from(index),
            ));
        }
        self.create_accounts(now, &events)?;
        let merchant = Merchant {
            id: new.id.clone(),
            name: new.name.clone(),
            currency: new.currency,
            terms: vec![MerchantTerms {
                effective_from: now,
                ..new.terms.clone()
            }],
            accounts,
            created_at: now,
        };
        self.merchant_index.insert(merchant.id.clone(), index);
        self.merchants.push(merchant.clone());
        self.merchant_last_payment.push(None);
        self.settlements
            .add_merchant(index, &merchant.terms[0], now);
        Ok(Outcome::Merchant {
            merchant,
            created: true,
        })
    }

    pub(crate) fn set_merchant_terms(
        &mut self,
        now: Timestamp,
        merchant_id: &str,
        terms: &MerchantTerms,
    ) -> CommandResult {
        let index = *self
            .merchant_index
            .get(merchant_id)
            .ok_or(DomainError::UnknownMerchant)?;
        terms
            .fee
            .validate()
            .map_err(DomainError::InvalidFeeSchedule)?;
        terms.validate().map_err(DomainError::InvalidTerms)?;
        let effective_from = terms.effective_from.max(now);
        let merchant = &mut self.merchants[index as usize];
        // A new version replaces any later version not yet in force.
        merchant.terms.retain(|t| t.effective_from < effective_from);
        merchant.terms.push(MerchantTerms {
            effective_from,
            ..terms.clone()
        });
        let merchant = merchant.clone();
        self.settlements.reschedule_merchant(index, &merchant, now);
        Ok(Outcome::TermsSet(merchant))
    }

    fn load_calendar_year(&mut self, calendar_id: &str, year: &CalendarYear) -> CommandResult {
        if !is_valid_external_id(calendar_id) {
            return Err(DomainError::InvalidId);
        }
        let mut calendar = self
            .calendars
            .get(calendar_id)
            .cloned()
            .unwrap_or_else(|| Calendar::new(calendar_id));
        calendar.load_year(year.clone())?;
        self.calendars.insert(calendar_id.to_owned(), calendar);
        Ok(Outcome::CalendarLoaded {
            calendar_id: calendar_id.to_owned(),
            year: year.year,
        })
    }

    fn record_payment(&mut self, now: Timestamp, new: &NewPayment) -> CommandResult {
        if !is_valid_external_id(&new.channel_trade_no)
            || !is_valid_external_id(&new.merchant_order_no)
            || new
                .store_id
                .as_deref()
                .is_some_and(|s| !is_valid_external_id(s))
        {
            return Err(DomainError::InvalidId);
        }
        if !new.amount.is_positive() {
            return Err(DomainError::AmountMustBePositive);
        }
        if new.amount > PAYMENT_AMOUNT_MAX {
            return Err(DomainError::AmountTooLarge);
        }
        let channel_index = *self
            .channel_index
            .get(new.channel_id.as_str())
            .ok_or(DomainError::UnknownChannel)?;
        let merchant_index = *self
            .merchant_index
            .get(new.merchant_id.as_str())
            .ok_or(DomainError::UnknownMerchant)?;
        let content = payment_content(merchant_index, new);
        if let Some(entry) = self.trades[channel_index as usize].get(new.channel_trade_no.as_str())
        {
            return if entry.content == content {
                Ok(Outcome::PaymentExists(entry.payment(new)))
            } else {
                Err(DomainError::DuplicateTradeWithDifferentContent)
            };
        }
        let channel = &self.channels[channel_index as usize];
        let merchant = &self.merchants[merchant_index as usize];
        let (channel_currency, channel_cost_schedule, receivable) =
            (channel.currency, channel.cost, channel.receivable_account);
        let terms = merchant.terms_at(now);
        let (fee_schedule, allow_below_cost, cutoff, cycle) = (
            terms.fee,
            terms.allow_below_cost,
            terms.settlement.cutoff_minute,
            terms.settlement.cycle,
        );
        let (merchant_currency, claims) = (merchant.currency, merchant.accounts.pending);
        if channel_currency != new.currency || merchant_currency != new.currency {
            return Err(DomainError::CurrencyMismatch);
        }
        let merchant_fee = fee_schedule.fee_on(new.amount);
        if merchant_fee >= new.amount {
            return Err(DomainError::FeeNotBelowAmount);
        }
        let channel_cost = channel_cost_schedule.fee_on(new.amount);
        if merchant_fee < channel_cost && !allow_below_cost {
            return Err(DomainError::FeeBelowFloor);
        }
        let merchant_claim = Amount::from_minor(new.amount.minor() - merchant_fee.minor());
        let platform = self.platform_accounts_for(new.currency);
        let payment_id = PaymentId(self.next_payment_id);
        let leg = |leg: u32, debit: AccountId, credit: AccountId, amount: Amount, code: u16| {
            Event::CreateTransfer(NewTransfer {
                id: internal_transfer_id(RECORD_KIND_PAYMENT, payment_id.0, leg),
                debit_account_id: debit,
                credit_account_id: credit,
                amount,
                pending_id: TransferId(0),
                timeout_seconds: 0,
                flags: TransferFlags::NONE,
                code,
                user_data: payment_id.0,
            })
        };
        // Dr channel receivable amount / Cr merchant claims (amount − fee) / Cr fee income fee,
        // and Dr channel cost / Cr channel receivable cost. Zero legs are left out.
        let mut events = Vec::with_capacity(3);
        events.push(leg(
            1,
            receivable,
            claims,
            merchant_claim,
            transfer_code::PAYIN_CLAIM,
        ));
        if merchant_fee.is_positive() {
            events.push(leg(
                2,
                receivable,
                platform.fee_income,
                merchant_fee,
                transfer_code::PAYIN_FEE,
            ));
        }
        if channel_cost.is_positive() {
            events.push(leg(
                3,
                platform.channel_cost,
                receivable,
                channel_cost,
                transfer_code::PAYIN_COST,
            ));
        }
        let recovery = self.debt_recovery_leg(merchant_index, merchant_claim, payment_id);
        if let Some((event, _)) = &recovery {
            events.push(*event);
        }
        self.ledger
            .apply_chain(now, &events)
            .map_err(|failure| DomainError::Ledger(failure.error))?;
        let business_date = self.settlements.add_claim(
            (merchant_index, channel_index, business_date(now, cutoff)),
            merchant_claim,
            Amount::from_minor(new.amount.minor() - channel_cost.minor()),
            (merchant_fee, channel_cost),
            cycle,
        );
        if let Some((_, recovered)) = recovery
            && let Some(lot) = self
                .settlements
                .lot_of(merchant_index, channel_index, business_date)
        {
            self.note_debt_recovered(merchant_index, lot, recovered);
        }
        let payment = Payment {
            id: payment_id,
            channel_id: new.channel_id.clone(),
            merchant_id: new.merchant_id.clone(),
            channel_trade_no: new.channel_trade_no.clone(),
            merchant_order_no: new.merchant_order_no.clone(),
            amount: new.amount,
            currency: new.currency,
            paid_at: new.paid_at,
            merchant_fee,
            channel_cost,
            merchant_claim,
            created_at: now,
            merchant_prev_id: self.merchant_last_payment[merchant_index as usize],
            business_date,
            op: self.ops + 1,
            store_id: new.store_id.clone(),
        };
        self.next_payment_id += 1;
        self.merchant_last_payment[merchant_index as usize] = Some(payment_id);
        self.trades[channel_index as usize].insert(
            new.channel_trade_no.as_str().into(),
            TradeEntry {
                payment: payment_id,
                content,
                amount: new.amount,
                merchant: merchant_index,
                merchant_fee,
                channel_cost,
                created_at: now,
                merchant_prev_id: payment.merchant_prev_id,
                business_date,
                op: payment.op,
            },
        );
        if !self.settlements.queued_refunds.is_empty() {
            self.retry_queued_refunds(now, merchant_index);
        }
        let payment = Arc::new(payment);
        self.effects.payments.push(Arc::clone(&payment));
        Ok(Outcome::PaymentRecorded(payment))
    }

    pub(crate) fn platform_accounts_for(&self, currency: Currency) -> PlatformAccounts {
        self.platform_accounts
            .iter()
            .find(|p| p.currency == currency)
            .copied()
            .unwrap_or_else(|| panic!("platform accounts exist for every currency in use"))
    }

    /// Account-creation events for the platform's own accounts in `currency`, if they do not
    /// exist yet. They are created in the same chain as the first party that needs them.
    fn platform_account_events(&mut self, currency: Currency) -> Vec<Event> {
        if self
            .platform_accounts
            .iter()
            .any(|p| p.currency == currency)
        {
            return Vec::new();
        }
        [
            (AccountKind::Income, account_code::FEE_INCOME),
            (AccountKind::Expense, account_code::CHANNEL_COST),
            (AccountKind::Asset, account_code::CASH),
            (AccountKind::Liability, account_code::PAYOUTS_IN_FLIGHT),
            (AccountKind::Liability, account_code::ADVANCES_OUTSTANDING),
            (AccountKind::Expense, account_code::CHANNEL_DISCREPANCY),
        ]
        .into_iter()
        .map(|(kind, code)| {
            let id = self.allocate_account_id();
            account_event(id, currency, kind, AccountFlags::NONE, code, 0)
        })
        .collect()
    }

    fn allocate_account_id(&mut self) -> AccountId {
        let id = AccountId(self.next_account_id);
        self.next_account_id += 1;
        id
    }

    /// Creates accounts as one chain; on refusal the allocated ids are given back.
    fn create_accounts(&mut self, now: Timestamp, events: &[Event]) -> Result<(), DomainError> {
        let first_allocated = self.next_account_id - events.len() as u64;
        match self.ledger.apply_chain(now, events) {
            Ok(_) => {
                for event in events {
                    if let Event::CreateAccount { account, .. } = event {
                        self.note_platform_account(account);
                    }
                }
                Ok(())
            }
            Err(failure) => {
                self.next_account_id = first_allocated;
                Err(DomainError::Ledger(failure.error))
            }
        }
    }

    fn note_platform_account(&mut self, account: &NewAccount) {
        use account_code as code;
        if !matches!(
            account.code,
            code::FEE_INCOME
                | code::CHANNEL_COST
                | code::CASH
                | code::PAYOUTS_IN_FLIGHT
                | code::ADVANCES_OUTSTANDING
                | code::CHANNEL_DISCREPANCY
        ) {
            return;
        }
        if !self
            .platform_accounts
            .iter()
            .any(|p| p.currency == account.currency)
        {
            let none = AccountId(0);
            self.platform_accounts.push(PlatformAccounts {
                currency: account.currency,
                fee_income: none,
                channel_cost: none,
                cash: none,
                payouts_in_flight: none,
                advances_outstanding: none,
                channel_discrepancy: none,
            });
        }
        let Some(slot) = self
            .platform_accounts
            .iter_mut()
            .find(|p| p.currency == account.currency)
        else {
            return;
        };
        let field = match account.code {
            code::FEE_INCOME => &mut slot.fee_income,
            code::CHANNEL_COST => &mut slot.channel_cost,
            code::CASH => &mut slot.cash,
            code::PAYOUTS_IN_FLIGHT => &mut slot.payouts_in_flight,
            code::ADVANCES_OUTSTANDING => &mut slot.advances_outstanding,
            _ => &mut slot.channel_discrepancy,
        };
        *field = account.id;
    }

    pub(crate) fn merchant_index_of(&self, id: &str) -> Result<u32, DomainError> {
        self.merchant_index
            .get(id)
            .copied()
            .ok_or(DomainError::UnknownMerchant)
    }

    /// Runs one piece of scheduled work (a cutoff or a settlement run).
    fn run_scheduled(&mut self, now: Timestamp, work: ScheduledWork) {
        let terms = self.merchants[work.merchant as usize]
            .terms_at(work.at)
            .settlement
            .clone();
        self.settlements.reschedule_after(&work, &terms);
        if work.is_cutoff {
            self.settlements
                .seal_lots(work.merchant, work.at, terms.cutoff_minute);
        } else {
            self.settlement_run(now, work.merchant, work.at);
        }
    }
}

fn validate_party(id: &str, name: &str, schedule: &FeeSchedule) -> Result<(), DomainError> {
    if !is_valid_external_id(id) {
        return Err(DomainError::InvalidId);
    }
    if !is_valid_name(name) {
        return Err(DomainError::InvalidName);
    }
    schedule.validate().map_err(DomainError::InvalidFeeSchedule)
}

fn account_event(
    id: AccountId,
    currency: Currency,
    kind: AccountKind,
    flags: AccountFlags,
    code: u16,
    user_data: u64,
) -> Event {
    Event::CreateAccount {
        account: NewAccount {
            id,
            currency,
            kind,
            flags,
            credit_limit: Amount::ZERO,
            code,
            user_data,
        },
        linked: false,
    }
}

/// A digest of what makes two reports of one trade "the same": merchant, order number, amount,
/// currency and payment time, through the fixed [`IdHasher`] so that it is stable across
/// platforms (it is recomputed on restart).
fn payment_content(merchant_index: u32, new: &NewPayment) -> u64 {
    use std::hash::Hasher;
    let mut hasher = IdHasher::default();
    hasher.write_u64(u64::from(merchant_index));
    hasher.write_u64(new.merchant_order_no.len() as u64);
    hasher.write(new.merchant_order_no.as_bytes());
    hasher.write_u64(new.amount.minor() as u64);
    hasher.write(new.currency.as_str().as_bytes());
    hasher.write_u64(new.paid_at.micros() as u64);
    if let Some(store) = &new.store_id {
        hasher.write_u64(store.len() as u64);
        hasher.write(store.as_bytes());
    }
    hasher.finish()
}
