//! Durable storage for dzero, behind two traits so that backends are interchangeable.
//!
//! [`Store`] is the write side, owned by the engine's single writer thread: it loads everything
//! needed to rebuild the in-memory state at start, and commits each batch's effects in one
//! durable transaction. [`StoreRead`] is the read side, shared by API handlers, for queries that
//! do not need the sequencer (payment search, account history, idempotent replays, API keys).
//!
//! The journal of ledger transfers and the payments table are append-only: rows are inserted,
//! never updated or deleted. Each transfer row carries the previous row of each of its two
//! accounts, so an account's history is walked backwards by primary key without a secondary
//! index on the hot insert path.
//!
//! [`conformance`] holds the behaviour every backend must show; each backend's tests run it.
//!
//! Architecture invariant: only this crate knows SQL and table layouts; it converts between
//! rows and domain types explicitly.

mod codec;
pub mod conformance;
mod sqlite;

use domain::{Command, Effects, NewPayment, Payment, PaymentId};
use ledger::{AccountId, Timestamp, Transfer};

pub use sqlite::{SqliteReader, SqliteStore};

/// Most payments one order query examines before answering with a continuation cursor.
pub const PAYMENT_SCAN_ROWS_MAX: u32 = 10_000;

/// Failures of the storage layer. The engine treats any of them during a commit as fatal.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    /// Stored data that cannot be what this code wrote (bad enum value, broken sequence).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("recovery refused the stored data: {0}")]
    Recovery(String),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A stored answer to an idempotent request, replayed verbatim on retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The client's key, already scoped (for example by API key) by the caller.
    pub key: String,
    /// A digest of the request (method, path, body) the key was first used with.
    pub request_hash: [u8; 32],
    pub status: u16,
    pub body: Vec<u8>,
    pub created_at: Timestamp,
}

/// A platform API key: only a digest of the secret is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Public identifier, also the prefix of the secret.
    pub id: String,
    pub secret_hash: [u8; 32],
    pub scopes: Vec<String>,
    pub created_at: Timestamp,
}

/// An input to the platform that changed its state: replaying every input in operation order
/// with its timestamp rebuilds the state exactly.
// A batch logs few inputs besides its pay-ins (which are logged as payment rows), so the size
// of the command variant does not matter and boxing it would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Command(Command),
    /// A tick of the clock that fired scheduled work (`work` pieces of it).
    Tick {
        work: u32,
    },
}

/// An input with its operation number and the timestamp it was applied at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedInput {
    pub op: u64,
    pub at: Timestamp,
    pub input: Input,
}

/// Everything one batch made durable at once. Pay-ins are logged through their payment rows
/// (`effects.payments`, which carry their operation number); every other input is in `inputs`.
#[derive(Clone, Copy, Debug)]
pub struct BatchWrite<'a> {
    pub effects: &'a Effects,
    pub inputs: &'a [LoggedInput],
    pub idempotency: &'a [IdempotencyRecord],
}

/// Receives the stored state during recovery: every logged input in operation order (pay-ins
/// rebuilt from their payment rows), then the idempotency records newer than the horizon the
/// caller chose.
pub trait Recovery {
    fn input(&mut self, input: LoggedInput) -> StoreResult<()>;
    fn idempotency(
        &mut self,
        key: &str,
        request_hash: [u8; 32],
        created_at: Timestamp,
    ) -> StoreResult<()>;
}

/// The write side: one owner, the engine's writer thread.
pub trait Store: Send + 'static {
    /// Streams the stored state into `recovery`; idempotency records created before
    /// `idempotency_since` are skipped.
    fn load(
        &mut self,
        recovery: &mut dyn Recovery,
        idempotency_since: Timestamp,
    ) -> StoreResult<()>;

    /// Writes a batch in one transaction and makes it durable before returning.
    fn commit(&mut self, batch: BatchWrite<'_>) -> StoreResult<()>;
}

/// The order query: payments newest first, from `start` (inclusive) backwards.
///
/// With `merchant_id`, the walk follows that merchant's payment chain (each payment links to
/// the merchant's previous one), so no secondary index is needed; `start` must then be one of
/// the merchant's payments. Without it, the walk goes down the ids. A walk stops after
/// `scan_rows_max` payments even if fewer than `limit` matched, and says where to continue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentQuery {
    pub start: PaymentId,
    pub merchant_id: Option<String>,
    pub merchant_order_no: Option<String>,
    pub channel_id: Option<String>,
    /// Recorded at or after this instant.
    pub from: Option<Timestamp>,
    /// Recorded before this instant.
    pub to: Option<Timestamp>,
    /// Only payments taken at one of these stores (for users limited to some stores).
    pub stores: Option<Vec<String>>,
    pub limit: u32,
    pub scan_rows_max: u32,
}

/// One page of the order query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentPage {
    pub payments: Vec<Payment>,
    /// Where the next page starts (inclusive); `None` when nothing older can match.
    pub next_start: Option<PaymentId>,
}

/// The read side: shared by request handlers, safe to call from many threads.
pub trait StoreRead: Send + Sync + 'static {
    fn payment(&self, id: PaymentId) -> StoreResult<Option<Payment>>;
    /// Payments matching the query, newest first, at most `query.limit`.
    fn payments(&self, query: &PaymentQuery) -> StoreResult<PaymentPage>;
    /// The journal entry with this sequence number.
    fn transfer(&self, seq: u64) -> StoreResult<Option<Transfer>>;
    /// Up to `limit` entries of `account`'s history, newest first, starting with the entry
    /// `start_seq` (which must touch the account).
    fn account_history(
        &self,
        account: AccountId,
        start_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<Transfer>>;
    fn idempotency(&self, key: &str) -> StoreResult<Option<IdempotencyRecord>>;
    fn api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>>;
    /// Stores a new API key; false if the id is taken.
    fn insert_api_key(&self, key: &ApiKeyRecord) -> StoreResult<bool>;
    /// Number of API keys, to know whether this is a first start.
    fn api_key_count(&self) -> StoreResult<u64>;
    /// Audit entries after `after_seq`, in order, at most `limit`.
    fn audit(&self, after_seq: u64, limit: u32) -> StoreResult<Vec<auth::AuditEntry>>;
}

/// An idempotency key still inside its retention window, with the digest of its request and
/// when it was first used.
pub type RecentKey = (String, [u8; 32], Timestamp);

/// Rebuilds the platform from storage by replaying its logged inputs, returning it with the
/// idempotency keys recorded since `idempotency_since`. Every input must apply as it did the
/// first time (same operation number, a change of state); anything else is corruption.
pub fn load_platform(
    store: &mut dyn Store,
    idempotency_since: Timestamp,
) -> StoreResult<(domain::Platform, Vec<RecentKey>)> {
    struct Loader {
        platform: domain::Platform,
        keys: Vec<RecentKey>,
    }
    impl Recovery for Loader {
        fn input(&mut self, logged: LoggedInput) -> StoreResult<()> {
            let refused =
                |detail: String| StoreError::Recovery(format!("operation {}: {detail}", logged.op));
            if logged.op != self.platform.ops() + 1 {
                return Err(refused(format!(
                    "expected operation {}",
                    self.platform.ops() + 1
                )));
            }
            match &logged.input {
                Input::Tick { work } => {
                    let report = self.platform.tick(logged.at, *work as usize);
                    if !report.changed {
                        return Err(refused("the tick changed nothing on replay".into()));
                    }
                }
                Input::Command(command) => match self.platform.apply(logged.at, command) {
                    Ok(outcome) if outcome.changed_state() => {}
                    other => return Err(refused(format!("replayed as {other:?}"))),
                },
            }
            drop(self.platform.take_effects());
            if self.platform.ops() != logged.op {
                return Err(refused("operation numbers diverged".into()));
            }
            Ok(())
        }
        fn idempotency(
            &mut self,
            key: &str,
            request_hash: [u8; 32],
            created_at: Timestamp,
        ) -> StoreResult<()> {
            self.keys.push((key.to_owned(), request_hash, created_at));
            Ok(())
        }
    }
    let mut loader = Loader {
        platform: domain::Platform::new(),
        keys: Vec::new(),
    };
    store.load(&mut loader, idempotency_since)?;
    Ok((loader.platform, loader.keys))
}

/// What the engine logs for an applied command: the command with its operation number when
/// it changed the state, except pay-ins, whose payment rows are their log.
pub fn log_entry(
    command: &Command,
    result: &domain::CommandResult,
    ops: u64,
    at: Timestamp,
) -> Option<LoggedInput> {
    let changed = result.as_ref().is_ok_and(domain::Outcome::changed_state);
    (changed && !matches!(command, Command::RecordPayment(_))).then(|| LoggedInput {
        op: ops,
        at,
        input: Input::Command(command.clone()),
    })
}

/// The pay-in command a stored payment was recorded by.
pub(crate) fn payment_input(payment: &Payment) -> LoggedInput {
    LoggedInput {
        op: payment.op,
        at: payment.created_at,
        input: Input::Command(Command::RecordPayment(NewPayment {
            channel_id: payment.channel_id.clone(),
            merchant_id: payment.merchant_id.clone(),
            channel_trade_no: payment.channel_trade_no.clone(),
            merchant_order_no: payment.merchant_order_no.clone(),
            amount: payment.amount,
            currency: payment.currency,
            paid_at: payment.paid_at,
            store_id: payment.store_id.clone(),
        })),
    }
}
