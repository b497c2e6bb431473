//! The ledger state machine: a batch of events and one timestamp in, one result per event out.
//!
//! Pure and deterministic: no IO, no clock, no randomness, no iteration over hash order that
//! could leak into results. Every successful event appends to the journal; the engine drains
//! the journal after each batch and makes it durable.

use std::collections::BTreeSet;

use crate::account::{Account, AccountFlags, Balances, NewAccount};
use crate::hash::{IdHasher, IdMap, ShardedMap};
use crate::money::{AccountId, Amount, Currency, Timestamp, TransferId};
use crate::transfer::{NewTransfer, Transfer, TransferFlags};

/// One request to the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    CreateAccount { account: NewAccount, linked: bool },
    CreateTransfer(NewTransfer),
}

impl Event {
    fn linked(&self) -> bool {
        match self {
            Event::CreateAccount { linked, .. } => *linked,
            Event::CreateTransfer(t) => t.flags.contains(TransferFlags::LINKED),
        }
    }
}

/// A successful event's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// The same id with the same content was applied before; nothing changed.
    AlreadyExists,
}

/// Why an event was refused. These are business outcomes, never programmer errors; an event
/// that gets one of them changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LedgerError {
    /// Another event in its linked chain failed, so this one was rolled back.
    LinkedEventFailed,
    /// The batch ended with a chain still open (the last event had the linked flag).
    LinkedEventChainOpen,
    IdMustNotBeZero,
    /// The id was used before with different content.
    ExistsWithDifferentContent,
    UnknownFlags,
    FlagsAreMutuallyExclusive,
    AccountsMustBeDifferent,
    AccountNotFound,
    DebitAccountNotFound,
    CreditAccountNotFound,
    CurrenciesMustBeEqual,
    AmountMustBePositive,
    CreditLimitMustNotBeNegative,
    TimeoutRequiresPending,
    PendingIdMustBeZero,
    PendingIdRequired,
    PendingIdMustDifferFromId,
    PendingTransferNotFound,
    PendingTransferNotPending,
    PendingTransferAlreadyPosted,
    PendingTransferAlreadyVoided,
    PendingTransferExpired,
    AccountsMustMatchPending,
    ExceedsPendingAmount,
    VoidAmountMustMatchPending,
    ExceedsCredits,
    ExceedsDebits,
    OverflowsBalance,
}

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for LedgerError {}

impl LedgerError {
    /// The stable snake_case machine code of this error.
    pub fn code(self) -> &'static str {
        match self {
            LedgerError::LinkedEventFailed => "linked_event_failed",
            LedgerError::LinkedEventChainOpen => "linked_event_chain_open",
            LedgerError::IdMustNotBeZero => "id_must_not_be_zero",
            LedgerError::ExistsWithDifferentContent => "exists_with_different_content",
            LedgerError::UnknownFlags => "unknown_flags",
            LedgerError::FlagsAreMutuallyExclusive => "flags_are_mutually_exclusive",
            LedgerError::AccountsMustBeDifferent => "accounts_must_be_different",
            LedgerError::AccountNotFound => "account_not_found",
            LedgerError::DebitAccountNotFound => "debit_account_not_found",
            LedgerError::CreditAccountNotFound => "credit_account_not_found",
            LedgerError::CurrenciesMustBeEqual => "currencies_must_be_equal",
            LedgerError::AmountMustBePositive => "amount_must_be_positive",
            LedgerError::CreditLimitMustNotBeNegative => "credit_limit_must_not_be_negative",
            LedgerError::TimeoutRequiresPending => "timeout_requires_pending",
            LedgerError::PendingIdMustBeZero => "pending_id_must_be_zero",
            LedgerError::PendingIdRequired => "pending_id_required",
            LedgerError::PendingIdMustDifferFromId => "pending_id_must_differ_from_id",
            LedgerError::PendingTransferNotFound => "pending_transfer_not_found",
            LedgerError::PendingTransferNotPending => "pending_transfer_not_pending",
            LedgerError::PendingTransferAlreadyPosted => "pending_transfer_already_posted",
            LedgerError::PendingTransferAlreadyVoided => "pending_transfer_already_voided",
            LedgerError::PendingTransferExpired => "pending_transfer_expired",
            LedgerError::AccountsMustMatchPending => "accounts_must_match_pending",
            LedgerError::ExceedsPendingAmount => "exceeds_pending_amount",
            LedgerError::VoidAmountMustMatchPending => "void_amount_must_match_pending",
            LedgerError::ExceedsCredits => "exceeds_credits",
            LedgerError::ExceedsDebits => "exceeds_debits",
            LedgerError::OverflowsBalance => "overflows_balance",
        }
    }
}

pub type EventResult = Result<Outcome, LedgerError>;

/// A chain that failed: which event (by position in the chain) and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainFailure {
    pub index: usize,
    pub error: LedgerError,
}

/// Why a stored journal could not be replayed. This means storage and code disagree, which the
/// engine treats as fatal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayError {
    Refused { seq: u64, error: LedgerError },
    SequenceGap { expected: u64, found: u64 },
    NotExpirable { seq: u64 },
}

/// State of a two-phase transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PendingStatus {
    Pending,
    Posted,
    Voided,
    Expired,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PendingTransfer {
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    pub amount: Amount,
    pub expires_at: Option<Timestamp>,
    pub status: PendingStatus,
}

/// What the engine must make durable after a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Journal {
    pub accounts: Vec<Account>,
    /// Transfers in `seq` order, each with the fingerprint of the content its client supplied.
    pub transfers: Vec<(Transfer, u64)>,
}

impl Journal {
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.transfers.is_empty()
    }
}

/// Everything needed to undo one mutation while a linked chain is in flight.
#[derive(Debug)]
enum Undo {
    AccountCreated,
    Balances {
        index: u32,
        balances: Balances,
        last_seq: u64,
    },
    TransferCreated(TransferId),
    PendingCreated(TransferId),
    PendingStatus(TransferId, PendingStatus),
}

/// The in-memory ledger.
#[derive(Debug, Default)]
pub struct Ledger {
    accounts: Vec<Account>,
    account_index: IdMap<AccountId, u32>,
    /// Fingerprint of each transfer's supplied content, by id, to recognise retries.
    transfer_fingerprints: ShardedMap<TransferId, u64>,
    pending: ShardedMap<TransferId, PendingTransfer>,
    expiries: BTreeSet<(Timestamp, TransferId)>,
    last_seq: u64,
    journal: Journal,
    undo: Vec<Undo>,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    pub fn account(&self, id: AccountId) -> Option<&Account> {
        let index = *self.account_index.get(&id)?;
        self.accounts.get(index as usize)
    }

    /// Accounts in creation order.
    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    pub fn pending_transfer(&self, id: TransferId) -> Option<&PendingTransfer> {
        self.pending.get(&id)
    }

    /// The sequence number of the last journal entry (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Takes what was journalled since the last call, for the engine to persist.
    pub fn take_journal(&mut self) -> Journal {
        std::mem::take(&mut self.journal)
    }

    /// Applies a batch: events chained by the linked flag succeed or fail together; every event
    /// gets one result, in order. All events share the batch's timestamp.
    pub fn execute(&mut self, now: Timestamp, events: &[Event]) -> Vec<EventResult> {
        let mut results = Vec::with_capacity(events.len());
        let mut start = 0;
        while start < events.len() {
            let mut end = start;
            while end < events.len() && events[end].linked() {
                end += 1;
            }
            if end == events.len() {
                // The final chain never closes: refuse all of it without applying anything.
                results.extend(std::iter::repeat_n(
                    Err(LedgerError::LinkedEventChainOpen),
                    end - start,
                ));
                break;
            }
            let chain = &events[start..=end];
            match self.apply_chain(now, chain) {
                Ok(outcomes) => results.extend(outcomes.into_iter().map(Ok)),
                Err(failure) => {
                    results.extend((0..chain.len()).map(|i| {
                        Err(if i == failure.index {
                            failure.error
                        } else {
                            LedgerError::LinkedEventFailed
                        })
                    }));
                }
            }
            start = end + 1;
        }
        results
    }

    /// Applies events as one unit: either all succeed, or none leaves a trace. The linked flag
    /// is ignored here; the caller decides what forms a chain.
    pub fn apply_chain(
        &mut self,
        now: Timestamp,
        events: &[Event],
    ) -> Result<Vec<Outcome>, ChainFailure> {
        debug_assert!(self.undo.is_empty());
        let journal_accounts = self.journal.accounts.len();
        let journal_transfers = self.journal.transfers.len();
        let last_seq = self.last_seq;
        let mut outcomes = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let result = match event {
                Event::CreateAccount { account, .. } => self.create_account(now, account),
                Event::CreateTransfer(transfer) => self.create_transfer(now, transfer),
            };
            match result {
                Ok(outcome) => outcomes.push(outcome),
                Err(error) => {
                    self.rollback();
                    self.journal.accounts.truncate(journal_accounts);
                    self.journal.transfers.truncate(journal_transfers);
                    self.last_seq = last_seq;
                    return Err(ChainFailure { index, error });
                }
            }
        }
        self.undo.clear();
        Ok(outcomes)
    }

    /// Expires every pending transfer whose timeout has passed at `now`, journalling each
    /// expiry. The engine calls this at the start of each batch. Returns how many expired.
    pub fn expire_due(&mut self, now: Timestamp) -> usize {
        let mut expired = 0;
        while let Some(&(at, id)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.expiries.pop_first();
            if self.expire_one(now, id).is_ok() {
                expired += 1;
            }
        }
        self.undo.clear();
        expired
    }

    /// Re-creates an account from storage, with its original timestamp.
    pub fn replay_account(&mut self, account: &Account) -> Result<(), ReplayError> {
        self.create_account(account.timestamp, &account.spec)
            .map_err(|error| ReplayError::Refused { seq: 0, error })?;
        self.undo.clear();
        self.journal.accounts.clear();
        Ok(())
    }

    /// Re-applies one stored journal entry. Entries must come in `seq` order without gaps, and
    /// the result is exactly the state that wrote them.
    pub fn replay_transfer(
        &mut self,
        entry: &Transfer,
        fingerprint: u64,
    ) -> Result<(), ReplayError> {
        let expected = self.last_seq + 1;
        if entry.seq != expected {
            return Err(ReplayError::SequenceGap {
                expected,
                found: entry.seq,
            });
        }
        if entry.flags.contains(TransferFlags::EXPIRED) {
            self.expiries.remove(&(
                self.pending
                    .get(&entry.pending_id)
                    .and_then(|p| p.expires_at)
                    .unwrap_or(entry.timestamp),
                entry.pending_id,
            ));
            self.expire_one(entry.timestamp, entry.pending_id)
                .map_err(|_| ReplayError::NotExpirable { seq: entry.seq })?;
        } else {
            let supplied = NewTransfer {
                id: entry.id,
                debit_account_id: entry.debit_account_id,
                credit_account_id: entry.credit_account_id,
                amount: entry.amount,
                pending_id: entry.pending_id,
                timeout_seconds: entry.timeout_seconds,
                flags: entry.flags,
                code: entry.code,
                user_data: entry.user_data,
            };
            self.create_transfer(entry.timestamp, &supplied)
                .map_err(|error| ReplayError::Refused {
                    seq: entry.seq,
                    error,
                })?;
            // Keep the fingerprint of what the client originally supplied, not of the
            // effective entry, so that retries after a restart are still recognised.
            self.transfer_fingerprints.insert(entry.id, fingerprint);
        }
        self.undo.clear();
        self.journal.transfers.clear();
        Ok(())
    }

    fn create_account(&mut self, now: Timestamp, spec: &NewAccount) -> EventResult {
        if spec.id.0 == 0 {
            return Err(LedgerError::IdMustNotBeZero);
        }
        if let Some(existing) = self.account(spec.id) {
            return if existing.spec == *spec {
                Ok(Outcome::AlreadyExists)
            } else {
                Err(LedgerError::ExistsWithDifferentContent)
            };
        }
        if spec.credit_limit.minor() < 0 {
            return Err(LedgerError::CreditLimitMustNotBeNegative);
        }
        if spec
            .flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && spec
                .flags
                .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
        {
            return Err(LedgerError::FlagsAreMutuallyExclusive);
        }
        let account = Account {
            spec: *spec,
            balances: Balances::default(),
            timestamp: now,
            last_seq: 0,
        };
        let index = u32::try_from(self.accounts.len())
            .unwrap_or_else(|_| panic!("more than u32::MAX accounts in one ledger"));
        self.accounts.push(account);
        self.account_index.insert(spec.id, index);
        self.journal.accounts.push(account);
        self.undo.push(Undo::AccountCreated);
        Ok(Outcome::Created)
    }

    fn create_transfer(&mut self, now: Timestamp, t: &NewTransfer) -> EventResult {
        if t.id.0 == 0 {
            return Err(LedgerError::IdMustNotBeZero);
        }
        let fingerprint = fingerprint(t);
        if let Some(&existing) = self.transfer_fingerprints.get(&t.id) {
            return if existing == fingerprint {
                Ok(Outcome::AlreadyExists)
            } else {
                Err(LedgerError::ExistsWithDifferentContent)
            };
        }
        let flags = t.flags.without(TransferFlags::LINKED);
        let phase_flags = [
            TransferFlags::PENDING,
            TransferFlags::POST_PENDING,
            TransferFlags::VOID_PENDING,
        ]
        .into_iter()
        .filter(|f| flags.contains(*f))
        .count();
        if flags.contains(TransferFlags::EXPIRED) {
            return Err(LedgerError::UnknownFlags);
        }
        if phase_flags > 1 {
            return Err(LedgerError::FlagsAreMutuallyExclusive);
        }
        if t.timeout_seconds != 0 && !flags.contains(TransferFlags::PENDING) {
            return Err(LedgerError::TimeoutRequiresPending);
        }
        let resolves = flags.contains(TransferFlags::POST_PENDING)
            || flags.contains(TransferFlags::VOID_PENDING);
        let entry = if resolves {
            self.resolve_pending(now, t, flags)?
        } else {
            self.move_money(now, t, flags)?
        };
        self.transfer_fingerprints.insert(t.id, fingerprint);
        self.undo.push(Undo::TransferCreated(t.id));
        self.journal.transfers.push((entry, fingerprint));
        Ok(Outcome::Created)
    }

    /// A single-phase transfer, or the first phase of a two-phase one.
    fn move_money(
        &mut self,
        now: Timestamp,
        t: &NewTransfer,
        flags: TransferFlags,
    ) -> Result<Transfer, LedgerError> {
        if t.pending_id.0 != 0 {
            return Err(LedgerError::PendingIdMustBeZero);
        }
        if t.debit_account_id == t.credit_account_id {
            return Err(LedgerError::AccountsMustBeDifferent);
        }
        if !t.amount.is_positive() {
            return Err(LedgerError::AmountMustBePositive);
        }
        let (debit, credit) = self.transfer_accounts(t.debit_account_id, t.credit_account_id)?;
        let pending = flags.contains(TransferFlags::PENDING);
        let new_debit = add_side(&debit.balances, t.amount, pending, Side::Debit)?;
        let new_credit = add_side(&credit.balances, t.amount, pending, Side::Credit)?;
        check_limits(&debit.spec, &new_debit, &credit.spec, &new_credit)?;
        let entry = self.post_entry(
            now,
            t,
            t.amount,
            (debit.index, new_debit),
            (credit.index, new_credit),
            flags,
        );
        if pending {
            let expires_at = (t.timeout_seconds != 0).then(|| now.plus_seconds(t.timeout_seconds));
            self.pending.insert(
                t.id,
                PendingTransfer {
                    debit_account_id: t.debit_account_id,
                    credit_account_id: t.credit_account_id,
                    amount: t.amount,
                    expires_at,
                    status: PendingStatus::Pending,
                },
            );
            self.undo.push(Undo::PendingCreated(t.id));
            if let Some(at) = expires_at {
                self.expiries.insert((at, t.id));
            }
        }
        Ok(entry)
    }

    /// Posts (in full or in part) or voids a pending transfer.
    fn resolve_pending(
        &mut self,
        now: Timestamp,
        t: &NewTransfer,
        flags: TransferFlags,
    ) -> Result<Transfer, LedgerError> {
        if t.pending_id.0 == 0 {
            return Err(LedgerError::PendingIdRequired);
        }
        if t.pending_id == t.id {
            return Err(LedgerError::PendingIdMustDifferFromId);
        }
        let Some(pending) = self.pending.get(&t.pending_id).copied() else {
            return Err(LedgerError::PendingTransferNotFound);
        };
        match pending.status {
            PendingStatus::Pending => {}
            PendingStatus::Posted => return Err(LedgerError::PendingTransferAlreadyPosted),
            PendingStatus::Voided => return Err(LedgerError::PendingTransferAlreadyVoided),
            PendingStatus::Expired => return Err(LedgerError::PendingTransferExpired),
        }
        if pending.expires_at.is_some_and(|at| at <= now) {
            return Err(LedgerError::PendingTransferExpired);
        }
        let matches = |given: AccountId, actual: AccountId| given.0 == 0 || given == actual;
        if !matches(t.debit_account_id, pending.debit_account_id)
            || !matches(t.credit_account_id, pending.credit_account_id)
        {
            return Err(LedgerError::AccountsMustMatchPending);
        }
        let post = flags.contains(TransferFlags::POST_PENDING);
        let amount = if post {
            if t.amount.minor() < 0 {
                return Err(LedgerError::AmountMustBePositive);
            }
            if t.amount > pending.amount {
                return Err(LedgerError::ExceedsPendingAmount);
            }
            if t.amount == Amount::ZERO {
                pending.amount
            } else {
                t.amount
            }
        } else {
            if t.amount != Amount::ZERO && t.amount != pending.amount {
                return Err(LedgerError::VoidAmountMustMatchPending);
            }
            pending.amount
        };
        let (debit, credit) =
            self.transfer_accounts(pending.debit_account_id, pending.credit_account_id)?;
        let mut new_debit = debit.balances;
        let mut new_credit = credit.balances;
        release(&mut new_debit.debits_pending, pending.amount);
        release(&mut new_credit.credits_pending, pending.amount);
        if post {
            new_debit.debits_posted = new_debit
                .debits_posted
                .checked_add(amount)
                .ok_or(LedgerError::OverflowsBalance)?;
            new_credit.credits_posted = new_credit
                .credits_posted
                .checked_add(amount)
                .ok_or(LedgerError::OverflowsBalance)?;
        }
        // Posting moves a reservation into posted balances, so limits checked at reservation
        // still hold; they are checked again to make that an invariant rather than a belief.
        check_limits(&debit.spec, &new_debit, &credit.spec, &new_credit)?;
        let effective = NewTransfer {
            debit_account_id: pending.debit_account_id,
            credit_account_id: pending.credit_account_id,
            ..*t
        };
        let entry = self.post_entry(
            now,
            &effective,
            amount,
            (debit.index, new_debit),
            (credit.index, new_credit),
            flags,
        );
        self.set_pending_status(
            t.pending_id,
            if post {
                PendingStatus::Posted
            } else {
                PendingStatus::Voided
            },
        );
        Ok(entry)
    }

    fn expire_one(&mut self, now: Timestamp, id: TransferId) -> Result<(), LedgerError> {
        let Some(pending) = self.pending.get(&id).copied() else {
            return Err(LedgerError::PendingTransferNotFound);
        };
        if pending.status != PendingStatus::Pending || pending.expires_at.is_none_or(|at| at > now)
        {
            return Err(LedgerError::PendingTransferNotPending);
        }
        let (debit, credit) =
            self.transfer_accounts(pending.debit_account_id, pending.credit_account_id)?;
        let mut new_debit = debit.balances;
        let mut new_credit = credit.balances;
        release(&mut new_debit.debits_pending, pending.amount);
        release(&mut new_credit.credits_pending, pending.amount);
        let record = NewTransfer {
            id: TransferId(0),
            debit_account_id: pending.debit_account_id,
            credit_account_id: pending.credit_account_id,
            amount: pending.amount,
            pending_id: id,
            timeout_seconds: 0,
            flags: TransferFlags::EXPIRED,
            code: 0,
            user_data: 0,
        };
        let entry = self.post_entry(
            now,
            &record,
            pending.amount,
            (debit.index, new_debit),
            (credit.index, new_credit),
            TransferFlags::EXPIRED,
        );
        self.set_pending_status(id, PendingStatus::Expired);
        self.journal.transfers.push((entry, 0));
        Ok(())
    }

    /// Looks both accounts up once; the slots carry the index so nothing is looked up again.
    fn transfer_accounts(
        &self,
        debit: AccountId,
        credit: AccountId,
    ) -> Result<(Slot, Slot), LedgerError> {
        let slot = |id: AccountId, missing: LedgerError| {
            let index = *self.account_index.get(&id).ok_or(missing)?;
            let account = &self.accounts[index as usize];
            Ok::<Slot, LedgerError>(Slot {
                index,
                spec: account.spec,
                balances: account.balances,
            })
        };
        let debit = slot(debit, LedgerError::DebitAccountNotFound)?;
        let credit = slot(credit, LedgerError::CreditAccountNotFound)?;
        if debit.spec.currency != credit.spec.currency {
            return Err(LedgerError::CurrenciesMustBeEqual);
        }
        Ok((debit, credit))
    }

    /// Writes new balances to both accounts, links the entry into both histories and returns
    /// the journal entry. Nothing here can fail: all checks are done by the caller.
    fn post_entry(
        &mut self,
        now: Timestamp,
        t: &NewTransfer,
        amount: Amount,
        (debit_index, new_debit): (u32, Balances),
        (credit_index, new_credit): (u32, Balances),
        flags: TransferFlags,
    ) -> Transfer {
        self.last_seq += 1;
        let seq = self.last_seq;
        let debit_prev_seq = self.set_balances(debit_index, new_debit, seq);
        let credit_prev_seq = self.set_balances(credit_index, new_credit, seq);
        Transfer {
            seq,
            id: t.id,
            debit_account_id: t.debit_account_id,
            credit_account_id: t.credit_account_id,
            amount,
            pending_id: t.pending_id,
            timeout_seconds: t.timeout_seconds,
            flags: flags.union(t.flags.intersection_linked()),
            code: t.code,
            user_data: t.user_data,
            timestamp: now,
            debit_prev_seq,
            credit_prev_seq,
        }
    }

    /// Returns the account's previous `last_seq`.
    fn set_balances(&mut self, index: u32, balances: Balances, seq: u64) -> u64 {
        let account = &mut self.accounts[index as usize];
        let previous = account.last_seq;
        self.undo.push(Undo::Balances {
            index,
            balances: account.balances,
            last_seq: previous,
        });
        account.balances = balances;
        account.last_seq = seq;
        previous
    }

    fn set_pending_status(&mut self, id: TransferId, status: PendingStatus) {
        if let Some(pending) = self.pending.get_mut(&id) {
            self.undo.push(Undo::PendingStatus(id, pending.status));
            pending.status = status;
        }
    }

    fn rollback(&mut self) {
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::AccountCreated => {
                    if let Some(account) = self.accounts.pop() {
                        self.account_index.remove(&account.spec.id);
                    }
                }
                Undo::Balances {
                    index,
                    balances,
                    last_seq,
                } => {
                    let account = &mut self.accounts[index as usize];
                    account.balances = balances;
                    account.last_seq = last_seq;
                }
                Undo::TransferCreated(id) => {
                    self.transfer_fingerprints.remove(&id);
                }
                Undo::PendingCreated(id) => {
                    if let Some(p) = self.pending.remove(&id)
                        && let Some(at) = p.expires_at
                    {
                        self.expiries.remove(&(at, id));
                    }
                }
                Undo::PendingStatus(id, status) => {
                    if let Some(p) = self.pending.get_mut(&id) {
                        p.status = status;
                    }
                }
            }
        }
    }

    /// Net posted balance (debits − credits) summed over all accounts, per currency, with the
    /// debit and credit totals. Double entry means the net is always zero.
    pub fn trial_balance(&self) -> Vec<TrialBalanceLine> {
        let mut lines: Vec<TrialBalanceLine> = Vec::new();
        for account in &self.accounts {
            let currency = account.spec.currency;
            let line = match lines.iter_mut().find(|l| l.currency == currency) {
                Some(line) => line,
                None => {
                    lines.push(TrialBalanceLine {
                        currency,
                        debits_posted: 0,
                        credits_posted: 0,
                        debits_pending: 0,
                        credits_pending: 0,
                    });
                    lines
                        .last_mut()
                        .unwrap_or_else(|| unreachable!("just pushed"))
                }
            };
            let b = &account.balances;
            line.debits_posted += i128::from(b.debits_posted.minor());
            line.credits_posted += i128::from(b.credits_posted.minor());
            line.debits_pending += i128::from(b.debits_pending.minor());
            line.credits_pending += i128::from(b.credits_pending.minor());
        }
        lines.sort_by_key(|l| l.currency);
        lines
    }
}

/// An account found for a transfer: its position and a copy of what the checks read.
#[derive(Clone, Copy)]
struct Slot {
    index: u32,
    spec: NewAccount,
    balances: Balances,
}

/// Totals for one currency. Sums are `i128` so that they cannot overflow however many accounts
/// there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrialBalanceLine {
    pub currency: Currency,
    pub debits_posted: i128,
    pub credits_posted: i128,
    pub debits_pending: i128,
    pub credits_pending: i128,
}

impl TrialBalanceLine {
    pub fn balanced(&self) -> bool {
        self.debits_posted == self.credits_posted && self.debits_pending == self.credits_pending
    }
}

impl TransferFlags {
    fn intersection_linked(self) -> TransferFlags {
        if self.contains(TransferFlags::LINKED) {
            TransferFlags::LINKED
        } else {
            TransferFlags::NONE
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    Debit,
    Credit,
}

fn add_side(
    balances: &Balances,
    amount: Amount,
    pending: bool,
    side: Side,
) -> Result<Balances, LedgerError> {
    let mut b = *balances;
    let slot = match (side, pending) {
        (Side::Debit, true) => &mut b.debits_pending,
        (Side::Debit, false) => &mut b.debits_posted,
        (Side::Credit, true) => &mut b.credits_pending,
        (Side::Credit, false) => &mut b.credits_posted,
    };
    *slot = slot
        .checked_add(amount)
        .ok_or(LedgerError::OverflowsBalance)?;
    // Limits compare sums of two sides; keep them representable too.
    b.debits_pending
        .checked_add(b.debits_posted)
        .and(b.credits_pending.checked_add(b.credits_posted))
        .ok_or(LedgerError::OverflowsBalance)?;
    Ok(b)
}

/// A pending reservation is released exactly once; its amount was added when reserved, so the
/// subtraction cannot go below zero.
fn release(slot: &mut Amount, amount: Amount) {
    *slot = slot
        .checked_sub(amount)
        .filter(|a| a.minor() >= 0)
        .unwrap_or_else(|| panic!("pending balance below a pending transfer's amount"));
}

fn check_limits(
    debit: &NewAccount,
    new_debit: &Balances,
    credit: &NewAccount,
    new_credit: &Balances,
) -> Result<(), LedgerError> {
    let probe = |spec: &NewAccount, balances: &Balances| Account {
        spec: *spec,
        balances: *balances,
        timestamp: Timestamp(0),
        last_seq: 0,
    };
    if !probe(debit, new_debit).within_limits() {
        return Err(LedgerError::ExceedsCredits);
    }
    if !probe(credit, new_credit).within_limits() {
        return Err(LedgerError::ExceedsDebits);
    }
    Ok(())
}

/// A digest of a transfer's supplied content, in a fixed word order through the fixed
/// [`IdHasher`], so that it is stable across platforms and versions (it is stored). The linked
/// flag is excluded: whether a retry is sent inside a chain does not change what it asks for.
pub fn fingerprint(t: &NewTransfer) -> u64 {
    use std::hash::Hasher;
    let mut hasher = IdHasher::default();
    hasher.write_u128(t.id.0);
    hasher.write_u64(t.debit_account_id.0);
    hasher.write_u64(t.credit_account_id.0);
    hasher.write_u64(t.amount.minor() as u64);
    hasher.write_u128(t.pending_id.0);
    hasher.write_u64(
        u64::from(t.timeout_seconds)
            | u64::from(t.flags.without(TransferFlags::LINKED).bits()) << 32
            | u64::from(t.code) << 48,
    );
    hasher.write_u64(t.user_data);
    hasher.finish()
}
