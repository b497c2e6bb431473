//! The platform state machine: business commands in, typed outcomes and durable effects out.
//!
//! Like the ledger beneath it, it is pure: the engine gives it a timestamp and commands, and
//! takes away the effects to persist. Every command either applies completely or changes
//! nothing.

use std::collections::HashMap;
use std::hash::RandomState;
use std::sync::Arc;

use ledger::{
    Account, AccountFlags, AccountId, AccountKind, Amount, Currency, Event, IdHasher, Journal,
    Ledger, LedgerError, NewAccount, NewTransfer, ReplayError, ShardedMap, Timestamp, Transfer,
    TransferFlags, TransferId,
};

use crate::fees::{FeeSchedule, FeeScheduleError};
use crate::model::{
    Channel, Merchant, MerchantAccounts, NewPayment, PAYMENT_AMOUNT_MAX, Payment, PaymentId,
    PlatformAccounts, is_valid_external_id, is_valid_name,
};

/// Roles of ledger accounts, stored in the account's `code` so that storage alone tells what
/// each account is for.
pub mod account_code {
    pub const CHANNEL_RECEIVABLE: u16 = 1;
    pub const FEE_INCOME: u16 = 2;
    pub const CHANNEL_COST: u16 = 3;
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
}

/// Transfer ids the platform chooses for its own postings: the top byte says what kind of
/// business record it belongs to, the middle bits that record's number, the low byte the leg.
fn internal_transfer_id(kind: u8, record: u64, leg: u8) -> TransferId {
    TransferId((u128::from(kind) << 120) | (u128::from(record) << 8) | u128::from(leg))
}
const RECORD_KIND_PAYMENT: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewChannel {
    pub id: String,
    pub name: String,
    pub currency: Currency,
    pub cost: FeeSchedule,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMerchant {
    pub id: String,
    pub name: String,
    pub currency: Currency,
    pub fee: FeeSchedule,
}

/// A business command. Each is applied atomically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    CreateChannel(NewChannel),
    CreateMerchant(NewMerchant),
    RecordPayment(NewPayment),
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
    /// Shared with the effects to persist, so the record is not copied on the hot path.
    PaymentRecorded(Arc<Payment>),
    /// The same channel trade number was reported before with the same content: the original
    /// payment, unchanged.
    PaymentExists(Payment),
}

/// Why a command was refused. Refusal changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainError {
    InvalidId,
    InvalidName,
    InvalidFeeSchedule(FeeScheduleError),
    ChannelExistsWithDifferentContent,
    MerchantExistsWithDifferentContent,
    UnknownChannel,
    UnknownMerchant,
    CurrencyMismatch,
    AmountMustBePositive,
    AmountTooLarge,
    /// The merchant fee would leave the merchant no positive claim.
    FeeNotBelowAmount,
    /// The same channel trade number was reported before with different content.
    DuplicateTradeWithDifferentContent,
    /// The ledger refused the postings; with validated input this means a balance would
    /// overflow.
    Ledger(LedgerError),
}

pub type CommandResult = Result<Outcome, DomainError>;

/// What the engine must persist after a batch, in the order it happened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    pub channels: Vec<Channel>,
    pub merchants: Vec<Merchant>,
    pub payments: Vec<Arc<Payment>>,
    pub journal: Journal,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
            && self.merchants.is_empty()
            && self.payments.is_empty()
            && self.journal.is_empty()
    }
}

/// A merchant's balances as it sees them, each on its account's normal side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MerchantBalances {
    pub pending: Amount,
    pub available: Amount,
    pub frozen: Amount,
    pub advanced: Amount,
    pub debt: Amount,
}

/// What the index of reported trades remembers of each payment: enough to recognise a retry
/// and, with the retry's own (equal) content, to answer with the original payment.
#[derive(Clone, Copy, Debug)]
struct TradeEntry {
    payment: PaymentId,
    content: u64,
    merchant_fee: Amount,
    channel_cost: Amount,
    created_at: Timestamp,
    merchant_prev_id: Option<PaymentId>,
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
        }
    }
}

#[derive(Debug, Default)]
pub struct Platform {
    ledger: Ledger,
    channels: Vec<Channel>,
    channel_index: HashMap<String, u32>,
    merchants: Vec<Merchant>,
    merchant_index: HashMap<String, u32>,
    platform_accounts: Vec<PlatformAccounts>,
    /// Per channel (by index): channel trade number → payment. Keys are external strings, so
    /// the map keeps the standard collision-resistant hasher.
    trades: Vec<ShardedMap<Box<str>, TradeEntry, RandomState>>,
    /// Each merchant's newest payment, by merchant index: the head of its payment chain.
    merchant_last_payment: Vec<Option<PaymentId>>,
    next_account_id: u64,
    next_payment_id: u64,
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

    /// Number of payments recorded so far.
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

    pub fn payment_count(&self) -> u64 {
        self.next_payment_id - 1
    }

    pub fn merchant_balances(&self, id: &str) -> Option<MerchantBalances> {
        let accounts = self.merchant(id)?.accounts;
        let balance = |account: AccountId| {
            self.ledger
                .account(account)
                .map_or(Amount::ZERO, Account::posted_balance)
        };
        Some(MerchantBalances {
            pending: balance(accounts.pending),
            available: balance(accounts.available),
            frozen: balance(accounts.frozen),
            advanced: balance(accounts.advanced),
            debt: balance(accounts.debt),
        })
    }

    /// Takes the effects accumulated since the last call, for the engine to persist.
    pub fn take_effects(&mut self) -> Effects {
        let mut effects = std::mem::take(&mut self.effects);
        effects.journal = self.ledger.take_journal();
        effects
    }

    /// Work the clock drives, done at the start of each batch before its commands.
    pub fn tick(&mut self, now: Timestamp) {
        self.ledger.expire_due(now);
    }

    pub fn apply(&mut self, now: Timestamp, command: &Command) -> CommandResult {
        match command {
            Command::CreateChannel(new) => self.create_channel(now, new),
            Command::CreateMerchant(new) => self.create_merchant(now, new),
            Command::RecordPayment(new) => self.record_payment(now, new),
        }
    }

    fn create_channel(&mut self, now: Timestamp, new: &NewChannel) -> CommandResult {
        validate_party(&new.id, &new.name, &new.cost)?;
        if let Some(existing) = self.channel(&new.id) {
            let same = existing.name == new.name
                && existing.currency == new.currency
                && existing.cost == new.cost;
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
            receivable_account: receivable,
            created_at: now,
        };
        self.insert_channel(channel.clone());
        self.effects.channels.push(channel.clone());
        Ok(Outcome::Channel {
            channel,
            created: true,
        })
    }

    fn create_merchant(&mut self, now: Timestamp, new: &NewMerchant) -> CommandResult {
        validate_party(&new.id, &new.name, &new.fee)?;
        if let Some(existing) = self.merchant(&new.id) {
            let same = existing.name == new.name
                && existing.currency == new.currency
                && existing.fee == new.fee;
            return if same {
                Ok(Outcome::Merchant {
                    merchant: existing.clone(),
                    created: false,
                })
            } else {
                Err(DomainError::MerchantExistsWithDifferentContent)
            };
        }
        let index = u64::try_from(self.merchants.len()).map_err(|_| DomainError::InvalidId)?;
        let mut events = self.platform_account_events(new.currency);
        let accounts = MerchantAccounts {
            pending: self.allocate_account_id(),
            available: self.allocate_account_id(),
            frozen: self.allocate_account_id(),
            advanced: self.allocate_account_id(),
            debt: self.allocate_account_id(),
        };
        let claims = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
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
                AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
                account_code::MERCHANT_ADVANCED,
            ),
            (
                accounts.debt,
                AccountKind::Asset,
                AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
                account_code::MERCHANT_DEBT,
            ),
        ] {
            events.push(account_event(id, new.currency, kind, flags, code, index));
        }
        self.create_accounts(now, &events)?;
        let merchant = Merchant {
            id: new.id.clone(),
            name: new.name.clone(),
            currency: new.currency,
            fee: new.fee,
            accounts,
            created_at: now,
        };
        self.insert_merchant(merchant.clone());
        self.effects.merchants.push(merchant.clone());
        Ok(Outcome::Merchant {
            merchant,
            created: true,
        })
    }

    fn record_payment(&mut self, now: Timestamp, new: &NewPayment) -> CommandResult {
        if !is_valid_external_id(&new.channel_trade_no)
            || !is_valid_external_id(&new.merchant_order_no)
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
        let channel = &self.channels[channel_index as usize];
        let merchant = &self.merchants[merchant_index as usize];
        let (channel_currency, channel_cost_schedule, receivable) =
            (channel.currency, channel.cost, channel.receivable_account);
        let (merchant_currency, merchant_fee_schedule, claims) =
            (merchant.currency, merchant.fee, merchant.accounts.pending);
        let content = payment_content(merchant_index, new);
        if let Some(entry) = self.trades[channel_index as usize].get(new.channel_trade_no.as_str())
        {
            return if entry.content == content {
                Ok(Outcome::PaymentExists(entry.payment(new)))
            } else {
                Err(DomainError::DuplicateTradeWithDifferentContent)
            };
        }
        if channel_currency != new.currency || merchant_currency != new.currency {
            return Err(DomainError::CurrencyMismatch);
        }
        let merchant_fee = merchant_fee_schedule.fee_on(new.amount);
        if merchant_fee >= new.amount {
            return Err(DomainError::FeeNotBelowAmount);
        }
        let channel_cost = channel_cost_schedule.fee_on(new.amount);
        let merchant_claim = Amount::from_minor(new.amount.minor() - merchant_fee.minor());
        let platform = self
            .platform_accounts_for(new.currency)
            .unwrap_or_else(|| panic!("platform accounts exist for every channel currency"));
        let payment_id = PaymentId(self.next_payment_id);
        let leg = |leg: u8, debit: AccountId, credit: AccountId, amount: Amount, code: u16| {
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
        self.ledger
            .apply_chain(now, &events)
            .map_err(|failure| DomainError::Ledger(failure.error))?;
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
        };
        self.next_payment_id += 1;
        self.merchant_last_payment[merchant_index as usize] = Some(payment_id);
        self.trades[channel_index as usize].insert(
            new.channel_trade_no.as_str().into(),
            TradeEntry {
                payment: payment_id,
                content,
                merchant_fee,
                channel_cost,
                created_at: now,
                merchant_prev_id: payment.merchant_prev_id,
            },
        );
        let payment = Arc::new(payment);
        self.effects.payments.push(Arc::clone(&payment));
        Ok(Outcome::PaymentRecorded(payment))
    }

    fn platform_accounts_for(&self, currency: Currency) -> Option<PlatformAccounts> {
        self.platform_accounts
            .iter()
            .find(|p| p.currency == currency)
            .copied()
    }

    /// Account-creation events for the platform's own accounts in `currency`, if they do not
    /// exist yet. They are created in the same chain as the first party that needs them.
    fn platform_account_events(&mut self, currency: Currency) -> Vec<Event> {
        if self.platform_accounts_for(currency).is_some() {
            return Vec::new();
        }
        let fee_income = self.allocate_account_id();
        let channel_cost = self.allocate_account_id();
        vec![
            account_event(
                fee_income,
                currency,
                AccountKind::Income,
                AccountFlags::NONE,
                account_code::FEE_INCOME,
                0,
            ),
            account_event(
                channel_cost,
                currency,
                AccountKind::Expense,
                AccountFlags::NONE,
                account_code::CHANNEL_COST,
                0,
            ),
        ]
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
                self.note_platform_accounts(events);
                Ok(())
            }
            Err(failure) => {
                self.next_account_id = first_allocated;
                Err(DomainError::Ledger(failure.error))
            }
        }
    }

    fn note_platform_accounts(&mut self, events: &[Event]) {
        for event in events {
            if let Event::CreateAccount { account, .. } = event {
                self.note_platform_account(account);
            }
        }
    }

    fn note_platform_account(&mut self, account: &NewAccount) {
        let slot = match self.platform_accounts_for(account.currency) {
            Some(_) => self
                .platform_accounts
                .iter_mut()
                .find(|p| p.currency == account.currency),
            None if matches!(
                account.code,
                account_code::FEE_INCOME | account_code::CHANNEL_COST
            ) =>
            {
                self.platform_accounts.push(PlatformAccounts {
                    currency: account.currency,
                    fee_income: AccountId(0),
                    channel_cost: AccountId(0),
                });
                self.platform_accounts.last_mut()
            }
            None => None,
        };
        if let Some(slot) = slot {
            match account.code {
                account_code::FEE_INCOME => slot.fee_income = account.id,
                account_code::CHANNEL_COST => slot.channel_cost = account.id,
                _ => {}
            }
        }
    }

    fn insert_channel(&mut self, channel: Channel) {
        let index = self.channels.len() as u32;
        self.channel_index.insert(channel.id.clone(), index);
        self.channels.push(channel);
        self.trades.push(ShardedMap::default());
    }

    fn insert_merchant(&mut self, merchant: Merchant) {
        let index = self.merchants.len() as u32;
        self.merchant_last_payment.push(None);
        self.merchant_index.insert(merchant.id.clone(), index);
        self.merchants.push(merchant);
    }

    // ----- Recovery: rebuilding the state from what storage holds. -----

    /// Restores a ledger account; accounts must come in creation order.
    pub fn restore_account(&mut self, account: &Account) -> Result<(), ReplayError> {
        self.ledger.replay_account(account)?;
        self.note_platform_account(&account.spec);
        self.next_account_id = self.next_account_id.max(account.spec.id.0 + 1);
        Ok(())
    }

    /// Re-applies a stored journal entry; entries must come in `seq` order.
    pub fn restore_transfer(
        &mut self,
        entry: &Transfer,
        fingerprint: u64,
    ) -> Result<(), ReplayError> {
        self.ledger.replay_transfer(entry, fingerprint)
    }

    /// Restores a channel; channels must come in creation order.
    pub fn restore_channel(&mut self, channel: Channel) {
        self.insert_channel(channel);
    }

    /// Restores a merchant; merchants must come in creation order.
    pub fn restore_merchant(&mut self, merchant: Merchant) {
        self.insert_merchant(merchant);
    }

    /// Restores a payment's place in the trade index; payments must come in id order, after
    /// their channels and merchants.
    pub fn restore_payment(&mut self, payment: &Payment) -> Result<(), DomainError> {
        let channel_index = *self
            .channel_index
            .get(payment.channel_id.as_str())
            .ok_or(DomainError::UnknownChannel)?;
        let merchant_index = *self
            .merchant_index
            .get(payment.merchant_id.as_str())
            .ok_or(DomainError::UnknownMerchant)?;
        let new = NewPayment {
            channel_id: payment.channel_id.clone(),
            merchant_id: payment.merchant_id.clone(),
            channel_trade_no: payment.channel_trade_no.clone(),
            merchant_order_no: payment.merchant_order_no.clone(),
            amount: payment.amount,
            currency: payment.currency,
            paid_at: payment.paid_at,
        };
        self.trades[channel_index as usize].insert(
            payment.channel_trade_no.as_str().into(),
            TradeEntry {
                payment: payment.id,
                content: payment_content(merchant_index, &new),
                merchant_fee: payment.merchant_fee,
                channel_cost: payment.channel_cost,
                created_at: payment.created_at,
                merchant_prev_id: payment.merchant_prev_id,
            },
        );
        self.merchant_last_payment[merchant_index as usize] = Some(payment.id);
        self.next_payment_id = self.next_payment_id.max(payment.id.0 + 1);
        Ok(())
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
    hasher.finish()
}
