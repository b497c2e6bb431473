//! Ledger accounts: what they are, the limits they enforce and the balances they keep.

use crate::money::{AccountId, Amount, Currency, Timestamp};

/// What an account represents, for reports. The ledger itself treats every kind alike; the kind
/// says which side is the account's "normal" balance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccountKind {
    Asset,
    Liability,
    Income,
    Expense,
    Equity,
}

impl AccountKind {
    pub const ALL: [AccountKind; 5] = [
        AccountKind::Asset,
        AccountKind::Liability,
        AccountKind::Income,
        AccountKind::Expense,
        AccountKind::Equity,
    ];

    /// Whether the account's balance is normally on the debit side (assets and expenses).
    pub fn is_debit_normal(self) -> bool {
        matches!(self, AccountKind::Asset | AccountKind::Expense)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Asset => "asset",
            AccountKind::Liability => "liability",
            AccountKind::Income => "income",
            AccountKind::Expense => "expense",
            AccountKind::Equity => "equity",
        }
    }

    pub fn parse(text: &str) -> Option<AccountKind> {
        AccountKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// Balance limits, as a small set of flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AccountFlags(u16);

impl AccountFlags {
    pub const NONE: AccountFlags = AccountFlags(0);
    /// Debits (pending and posted) may never exceed posted credits plus the credit limit.
    /// Typical of a liability such as a merchant's claims: the platform cannot pay out more
    /// than it owes.
    pub const DEBITS_MUST_NOT_EXCEED_CREDITS: AccountFlags = AccountFlags(1 << 0);
    /// Credits (pending and posted) may never exceed posted debits plus the credit limit.
    pub const CREDITS_MUST_NOT_EXCEED_DEBITS: AccountFlags = AccountFlags(1 << 1);
    const KNOWN: u16 = 0b11;

    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Rebuilds flags from stored bits; unknown bits are refused.
    pub fn from_bits(bits: u16) -> Option<AccountFlags> {
        (bits & !Self::KNOWN == 0).then_some(AccountFlags(bits))
    }

    pub const fn contains(self, other: AccountFlags) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    pub const fn union(self, other: AccountFlags) -> AccountFlags {
        AccountFlags(self.0 | other.0)
    }
}

/// What a client supplies to open an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NewAccount {
    pub id: AccountId,
    pub currency: Currency,
    pub kind: AccountKind,
    pub flags: AccountFlags,
    /// How far past its limit flag the account may go: an overdraft for a
    /// `DEBITS_MUST_NOT_EXCEED_CREDITS` account. Zero for none.
    pub credit_limit: Amount,
    /// A free-form classification the domain layer uses (which merchant bucket, which platform
    /// account). Opaque to the ledger.
    pub code: u16,
    /// A free-form reference the domain layer uses (for example a merchant's index). Opaque.
    pub user_data: u64,
}

/// Posted and pending totals on each side. Every figure is a sum of positive transfer amounts,
/// so it is never negative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Balances {
    pub debits_pending: Amount,
    pub debits_posted: Amount,
    pub credits_pending: Amount,
    pub credits_posted: Amount,
}

/// An account as the ledger holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Account {
    pub spec: NewAccount,
    pub balances: Balances,
    /// When the account was created.
    pub timestamp: Timestamp,
    /// Sequence number of the most recent journal entry touching this account, 0 if none. Each
    /// entry carries the previous one for each of its accounts, so an account's history can be
    /// walked backwards without any secondary index on the append-only journal.
    pub last_seq: u64,
}

impl Account {
    pub fn id(&self) -> AccountId {
        self.spec.id
    }

    /// Posted balance on the account's normal side: credits − debits for liabilities, income
    /// and equity; debits − credits for assets and expenses.
    pub fn posted_balance(&self) -> Amount {
        let b = &self.balances;
        let credit_net = b.credits_posted.minor() - b.debits_posted.minor();
        if self.spec.kind.is_debit_normal() {
            Amount::from_minor(-credit_net)
        } else {
            Amount::from_minor(credit_net)
        }
    }

    /// True if the balances respect the account's limit flags. The ledger refuses any transfer
    /// that would make this false; property tests check it after every batch.
    pub fn within_limits(&self) -> bool {
        let b = &self.balances;
        let limit = i128::from(self.spec.credit_limit.minor());
        let debits = i128::from(b.debits_pending.minor()) + i128::from(b.debits_posted.minor());
        let credits = i128::from(b.credits_pending.minor()) + i128::from(b.credits_posted.minor());
        let debits_ok = !self
            .spec
            .flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            || debits <= i128::from(b.credits_posted.minor()) + limit;
        let credits_ok = !self
            .spec
            .flags
            .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
            || credits <= i128::from(b.debits_posted.minor()) + limit;
        debits_ok && credits_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget is 512 resident bytes per account, index included; the record itself must
    /// stay a small fraction of that (`dzero bench accounts` measures the whole).
    #[test]
    fn account_record_stays_small() {
        assert!(std::mem::size_of::<Account>() <= 96);
    }
}
