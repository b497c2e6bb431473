//! Transfers: the only way money moves between ledger accounts.

use crate::money::{AccountId, Amount, Timestamp, TransferId};

/// How a transfer behaves, as a small set of flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TransferFlags(u16);

impl TransferFlags {
    pub const NONE: TransferFlags = TransferFlags(0);
    /// This event and the next one succeed or fail together; a chain ends at the first event
    /// without the flag.
    pub const LINKED: TransferFlags = TransferFlags(1 << 0);
    /// Reserve the amount (pending balances) until a later post or void.
    pub const PENDING: TransferFlags = TransferFlags(1 << 1);
    /// Post a pending transfer, in full or in part; the rest is released.
    pub const POST_PENDING: TransferFlags = TransferFlags(1 << 2);
    /// Release a pending transfer without moving money.
    pub const VOID_PENDING: TransferFlags = TransferFlags(1 << 3);
    /// Set only by the ledger on the journal entry that records a pending transfer's timeout.
    pub const EXPIRED: TransferFlags = TransferFlags(1 << 4);
    const KNOWN: u16 = 0b1_1111;

    pub const fn bits(self) -> u16 {
        self.0
    }

    pub fn from_bits(bits: u16) -> Option<TransferFlags> {
        (bits & !Self::KNOWN == 0).then_some(TransferFlags(bits))
    }

    pub const fn contains(self, other: TransferFlags) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    pub const fn union(self, other: TransferFlags) -> TransferFlags {
        TransferFlags(self.0 | other.0)
    }

    pub const fn without(self, other: TransferFlags) -> TransferFlags {
        TransferFlags(self.0 & !other.0)
    }
}

/// What a client supplies to move money.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NewTransfer {
    pub id: TransferId,
    /// For a post or void, may be left zero (taken from the pending transfer) or must match it.
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    /// Strictly positive, except for a post (zero posts the full pending amount) and a void
    /// (zero or the pending amount).
    pub amount: Amount,
    /// For a post or void: the pending transfer it resolves. Otherwise zero.
    pub pending_id: TransferId,
    /// For a pending transfer: seconds after which it expires by itself; zero for never.
    pub timeout_seconds: u32,
    pub flags: TransferFlags,
    /// A free-form classification the domain layer uses (pay-in leg, fee, refund…). Opaque.
    pub code: u16,
    /// A free-form reference the domain layer uses (for example a payment's number). Opaque.
    pub user_data: u64,
}

impl NewTransfer {
    /// A plain single-phase transfer with no flags, code or reference.
    pub fn simple(id: u128, debit: u64, credit: u64, amount: i64) -> NewTransfer {
        NewTransfer {
            id: TransferId(id),
            debit_account_id: AccountId(debit),
            credit_account_id: AccountId(credit),
            amount: Amount::from_minor(amount),
            pending_id: TransferId(0),
            timeout_seconds: 0,
            flags: TransferFlags::NONE,
            code: 0,
            user_data: 0,
        }
    }
}

/// A journal entry: a transfer as it was applied. The journal is append-only and, replayed in
/// order, rebuilds the ledger exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transfer {
    /// Position in the journal, from 1, without gaps.
    pub seq: u64,
    /// As supplied; zero for an expiry entry, which the ledger writes itself.
    pub id: TransferId,
    /// The effective accounts (for a post or void: the pending transfer's).
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    /// The effective amount: what was reserved, posted or released.
    pub amount: Amount,
    pub pending_id: TransferId,
    pub timeout_seconds: u32,
    pub flags: TransferFlags,
    pub code: u16,
    pub user_data: u64,
    pub timestamp: Timestamp,
    /// The previous journal entry touching the debit account (0 if none).
    pub debit_prev_seq: u64,
    /// The previous journal entry touching the credit account (0 if none).
    pub credit_prev_seq: u64,
}

impl Transfer {
    /// The previous entry in `account`'s history, if this entry touches it.
    pub fn prev_seq_for(&self, account: AccountId) -> Option<u64> {
        if self.debit_account_id == account {
            Some(self.debit_prev_seq)
        } else if self.credit_account_id == account {
            Some(self.credit_prev_seq)
        } else {
            None
        }
    }
}
