//! The double-entry ledger at the bottom of dzero.
//!
//! Accounts hold posted and pending debits and credits; transfers move money between two
//! accounts of the same currency, in one phase or two (reserve, then post or void), alone or in
//! linked chains that succeed or fail as one. Ids are chosen by clients so retries are
//! recognised. The [`Ledger`] is a pure state machine: a batch of events and one timestamp go
//! in, one typed result per event comes out, and what succeeded is appended to a journal that
//! replays to the identical state.
//!
//! Architecture invariant: this crate does no IO, never reads a clock, never draws randomness
//! and has no dependencies.

mod account;
mod hash;
mod money;
mod state;
mod transfer;

pub use account::{Account, AccountFlags, AccountKind, Balances, NewAccount};
pub use hash::{IdHasher, IdMap, ShardedMap};
pub use money::{AccountId, Amount, Currency, Timestamp, TransferId};
pub use state::{
    ChainFailure, Event, EventResult, Journal, Ledger, LedgerError, Outcome, PendingStatus,
    PendingTransfer, ReplayError, TrialBalanceLine, fingerprint,
};
pub use transfer::{NewTransfer, Transfer, TransferFlags};
