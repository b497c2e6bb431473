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

pub mod conformance;
mod sqlite;

use domain::{Channel, Effects, Merchant, Payment, PaymentId};
use ledger::{Account, AccountId, Timestamp, Transfer};

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

/// Everything one batch made durable at once.
#[derive(Clone, Copy, Debug)]
pub struct BatchWrite<'a> {
    pub effects: &'a Effects,
    pub idempotency: &'a [IdempotencyRecord],
}

/// Receives the stored state during recovery, in the order it must be applied: accounts,
/// channels, merchants, then transfers by sequence, then payments by id, then idempotency
/// records newer than the horizon the caller chose.
pub trait Recovery {
    fn account(&mut self, account: &Account) -> StoreResult<()>;
    fn channel(&mut self, channel: Channel) -> StoreResult<()>;
    fn merchant(&mut self, merchant: Merchant) -> StoreResult<()>;
    fn transfer(&mut self, transfer: &Transfer, fingerprint: u64) -> StoreResult<()>;
    fn payment(&mut self, payment: &Payment) -> StoreResult<()>;
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
}

/// An idempotency key still inside its retention window, with the digest of its request and
/// when it was first used.
pub type RecentKey = (String, [u8; 32], Timestamp);

/// Rebuilds the platform from storage, returning it with the idempotency keys (and request
/// digests) recorded since `idempotency_since`.
pub fn load_platform(
    store: &mut dyn Store,
    idempotency_since: Timestamp,
) -> StoreResult<(domain::Platform, Vec<RecentKey>)> {
    struct Loader {
        platform: domain::Platform,
        keys: Vec<RecentKey>,
    }
    impl Recovery for Loader {
        fn account(&mut self, account: &Account) -> StoreResult<()> {
            self.platform
                .restore_account(account)
                .map_err(|e| StoreError::Recovery(format!("account {}: {e:?}", account.spec.id.0)))
        }
        fn channel(&mut self, channel: Channel) -> StoreResult<()> {
            self.platform.restore_channel(channel);
            Ok(())
        }
        fn merchant(&mut self, merchant: Merchant) -> StoreResult<()> {
            self.platform.restore_merchant(merchant);
            Ok(())
        }
        fn transfer(&mut self, transfer: &Transfer, fingerprint: u64) -> StoreResult<()> {
            self.platform
                .restore_transfer(transfer, fingerprint)
                .map_err(|e| StoreError::Recovery(format!("transfer {}: {e:?}", transfer.seq)))
        }
        fn payment(&mut self, payment: &Payment) -> StoreResult<()> {
            self.platform
                .restore_payment(payment)
                .map_err(|e| StoreError::Recovery(format!("payment {}: {e:?}", payment.id.0)))
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
