//! The business entities: channels, merchants and payments, with their identifiers.

use ledger::{AccountId, Amount, Currency, Timestamp};

use crate::fees::FeeSchedule;
use crate::terms::{Cycle, MerchantTerms};

/// Longest accepted external identifier (channel, merchant, trade and order numbers).
pub const EXTERNAL_ID_LEN_MAX: usize = 64;
/// Longest accepted display name, in characters.
pub const NAME_CHARS_MAX: usize = 128;
/// Largest single payment: 10 billion yuan in fen. Far above any real payment, far below any
/// overflow in fee arithmetic or balances.
pub const PAYMENT_AMOUNT_MAX: Amount = Amount::from_minor(1_000_000_000_000);

/// True if `text` is a valid external identifier: 1 to 64 characters of ASCII letters,
/// digits, `_`, `-`, `.` or `:`.
pub fn is_valid_external_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= EXTERNAL_ID_LEN_MAX
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// True if `text` is a valid display name: 1 to 128 characters, no control characters.
pub fn is_valid_name(text: &str) -> bool {
    let chars = text.chars().count();
    (1..=NAME_CHARS_MAX).contains(&chars) && !text.chars().any(char::is_control)
}

/// The platform's number for a payment, assigned in order from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PaymentId(pub u64);

/// An upstream bank or acquirer that reports pay-ins and owes the platform their proceeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    pub id: String,
    pub name: String,
    pub currency: Currency,
    /// What the channel charges the platform per pay-in.
    pub cost: FeeSchedule,
    /// When the channel pays the platform for a business day (T1: next business day).
    pub settlement_cycle: Cycle,
    /// What the channel charges the platform for each payout it carries.
    pub payout_cost: Amount,
    /// What the channel owes the platform (an asset).
    pub receivable_account: AccountId,
    pub created_at: Timestamp,
}

/// The ledger accounts that make up one merchant's position with the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MerchantAccounts {
    /// Claims not yet funded by the channel.
    pub pending: AccountId,
    /// Funded claims not yet paid out.
    pub available: AccountId,
    /// Claims held back by risk holds or the reserve.
    pub frozen: AccountId,
    /// Paid out ahead of funding.
    pub advanced: AccountId,
    /// What the merchant owes the platform after reversals.
    pub debt: AccountId,
}

impl MerchantAccounts {
    pub fn all(&self) -> [AccountId; 5] {
        [
            self.pending,
            self.available,
            self.frozen,
            self.advanced,
            self.debt,
        ]
    }
}

/// A merchant the platform collects for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merchant {
    pub id: String,
    pub name: String,
    pub currency: Currency,
    /// Terms versions, oldest first; the first takes effect at creation.
    pub terms: Vec<MerchantTerms>,
    pub accounts: MerchantAccounts,
    pub created_at: Timestamp,
}

impl Merchant {
    /// The terms in force at `at`.
    pub fn terms_at(&self, at: Timestamp) -> &MerchantTerms {
        let index = self
            .terms
            .partition_point(|t| t.effective_from <= at)
            .saturating_sub(1);
        &self.terms[index]
    }

    /// The newest terms version (possibly not yet in force).
    pub fn latest_terms(&self) -> &MerchantTerms {
        &self.terms[self.terms.len() - 1]
    }
}

/// The platform's own accounts for one currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformAccounts {
    pub currency: Currency,
    pub fee_income: AccountId,
    pub channel_cost: AccountId,
    /// The custody bank account: money actually held. It goes below zero while the platform
    /// fronts advances, within the funders' lines.
    pub cash: AccountId,
    /// Payouts sent to a payout channel and not yet confirmed.
    pub payouts_in_flight: AccountId,
    /// Counterpart of the merchants' `advanced` memo accounts.
    pub advances_outstanding: AccountId,
    /// Differences between what channels paid and what they owed.
    pub channel_discrepancy: AccountId,
}

/// A channel's notice that a customer's payment to a merchant succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPayment {
    pub channel_id: String,
    pub merchant_id: String,
    pub channel_trade_no: String,
    pub merchant_order_no: String,
    pub amount: Amount,
    pub currency: Currency,
    pub paid_at: Timestamp,
    /// The merchant's store (shop, branch) the payment was taken at, if the merchant has
    /// several; operators may be limited to some stores.
    pub store_id: Option<String>,
}

/// A recorded pay-in with the money it moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub id: PaymentId,
    pub channel_id: String,
    pub merchant_id: String,
    pub channel_trade_no: String,
    pub merchant_order_no: String,
    pub amount: Amount,
    pub currency: Currency,
    pub paid_at: Timestamp,
    /// What the platform charged the merchant.
    pub merchant_fee: Amount,
    /// What the channel charges the platform.
    pub channel_cost: Amount,
    /// What the platform owes the merchant: `amount − merchant_fee`.
    pub merchant_claim: Amount,
    /// When the platform recorded it.
    pub created_at: Timestamp,
    /// The merchant's previous payment, if any: each merchant's payments form a chain, newest
    /// first, so storage can serve a merchant's order query without a secondary index.
    pub merchant_prev_id: Option<PaymentId>,
    /// The business date whose lot holds the claim.
    pub business_date: crate::calendar::Date,
    /// Position of the command that recorded it in the platform's sequence of inputs.
    pub op: u64,
    /// The merchant's store it was taken at, if any.
    pub store_id: Option<String>,
}

impl Payment {
    /// What the channel is expected to remit for this payment: `amount − channel_cost`.
    pub fn expected_from_channel(&self) -> Amount {
        Amount::from_minor(self.amount.minor() - self.channel_cost.minor())
    }

    /// The platform's margin on it: `merchant_fee − channel_cost`.
    pub fn margin(&self) -> Amount {
        Amount::from_minor(self.merchant_fee.minor() - self.channel_cost.minor())
    }
}
