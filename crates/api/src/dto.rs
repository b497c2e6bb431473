//! Wire types: what goes over HTTP as JSON, and the explicit conversions to and from domain
//! types. Amounts are integers in minor units; times are RFC 3339 strings.

use domain::{Channel, FeeSchedule, Merchant, MerchantBalances, NewPayment, Payment, PaymentId};
use ledger::{Account, AccountFlags, Amount, Currency, Timestamp, Transfer, TransferFlags};
use serde::{Deserialize, Serialize};
use serde_json::Number;

use crate::error::{ApiError, ErrorCode};

// ----- Parsing helpers shared by requests. -----

/// An amount as sent: any JSON number, checked to be an integer that fits in 64 bits.
pub fn amount(value: &Number, field: &str) -> Result<Amount, ApiError> {
    value.as_i64().map(Amount::from_minor).ok_or_else(|| {
        ApiError::with_message(
            ErrorCode::InvalidAmount,
            format!("{field} must be an integer number of minor units that fits in 64 bits."),
        )
    })
}

fn optional_amount(value: Option<&Number>, field: &str) -> Result<Amount, ApiError> {
    value.map_or(Ok(Amount::ZERO), |v| amount(v, field))
}

pub fn currency(text: &str) -> Result<Currency, ApiError> {
    Currency::parse(text).ok_or_else(|| ApiError::new(ErrorCode::InvalidCurrency))
}

pub fn timestamp(text: &str, field: &str) -> Result<Timestamp, ApiError> {
    let parsed: jiff::Timestamp = text.parse().map_err(|_| {
        ApiError::with_message(
            ErrorCode::InvalidTimestamp,
            format!("{field} must be an RFC 3339 timestamp with an offset."),
        )
    })?;
    Ok(Timestamp(parsed.as_microsecond()))
}

pub fn format_timestamp(at: Timestamp) -> String {
    jiff::Timestamp::from_microsecond(at.micros())
        .map_or_else(|_| at.micros().to_string(), |t| t.to_string())
}

pub fn payment_id_text(id: PaymentId) -> String {
    format!("pay_{}", id.0)
}

pub fn parse_payment_id(text: &str) -> Option<PaymentId> {
    text.strip_prefix("pay_")?
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(PaymentId)
}

// ----- Requests. -----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeeScheduleIn {
    pub rate_ppm: u32,
    pub min: Option<Number>,
    pub max: Option<Number>,
}

impl FeeScheduleIn {
    pub fn to_domain(&self, field: &str) -> Result<FeeSchedule, ApiError> {
        Ok(FeeSchedule {
            rate_ppm: self.rate_ppm,
            min: optional_amount(self.min.as_ref(), &format!("{field}.min"))?,
            max: optional_amount(self.max.as_ref(), &format!("{field}.max"))?,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    pub id: String,
    pub name: String,
    pub currency: String,
    pub cost: FeeScheduleIn,
    /// When the channel pays the platform: T1 (default), D1, T0 or D0.
    pub settlement_cycle: Option<String>,
    /// What the channel charges per payout it carries (default 0).
    pub payout_cost: Option<Number>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMerchant {
    pub id: String,
    pub name: String,
    pub currency: String,
    pub fee: FeeScheduleIn,
    pub allow_below_cost: Option<bool>,
    pub settlement: Option<crate::dto_settlement::SettlementIn>,
    pub advance: Option<crate::dto_settlement::AdvanceIn>,
    pub reserve_ratio_ppm: Option<u32>,
    pub bank_account: Option<crate::dto_settlement::BankAccountDto>,
    pub calendar: Option<String>,
    pub refund_fee_returned: Option<bool>,
    pub refund_queue: Option<bool>,
}

impl CreateMerchant {
    /// The merchant's first terms.
    pub fn terms(self) -> crate::dto_settlement::TermsIn {
        crate::dto_settlement::TermsIn {
            fee: self.fee,
            allow_below_cost: self.allow_below_cost,
            settlement: self.settlement,
            advance: self.advance,
            reserve_ratio_ppm: self.reserve_ratio_ppm,
            bank_account: self.bank_account,
            calendar: self.calendar,
            refund_fee_returned: self.refund_fee_returned,
            refund_queue: self.refund_queue,
            effective_from: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    pub channel_id: String,
    pub merchant_id: String,
    pub channel_trade_no: String,
    pub merchant_order_no: String,
    pub amount: Number,
    pub currency: String,
    pub paid_at: String,
    /// The merchant's store (shop, branch) it was taken at, if any.
    #[serde(default)]
    pub store_id: Option<String>,
}

impl CreatePayment {
    pub fn to_domain(&self) -> Result<NewPayment, ApiError> {
        Ok(NewPayment {
            channel_id: self.channel_id.clone(),
            merchant_id: self.merchant_id.clone(),
            channel_trade_no: self.channel_trade_no.clone(),
            merchant_order_no: self.merchant_order_no.clone(),
            amount: amount(&self.amount, "amount")?,
            currency: currency(&self.currency)?,
            paid_at: timestamp(&self.paid_at, "paid_at")?,
            store_id: self.store_id.clone(),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePayments {
    pub payments: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub scopes: Vec<String>,
}

// ----- Responses. -----

#[derive(Debug, Serialize)]
pub struct FeeScheduleOut {
    pub rate_ppm: u32,
    pub min: i64,
    pub max: i64,
}

impl From<&FeeSchedule> for FeeScheduleOut {
    fn from(s: &FeeSchedule) -> FeeScheduleOut {
        FeeScheduleOut {
            rate_ppm: s.rate_ppm,
            min: s.min.minor(),
            max: s.max.minor(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ChannelOut {
    pub id: String,
    pub name: String,
    pub currency: String,
    pub cost: FeeScheduleOut,
    pub settlement_cycle: &'static str,
    pub payout_cost: i64,
    pub receivable_account_id: u64,
    pub created_at: String,
}

impl From<&Channel> for ChannelOut {
    fn from(c: &Channel) -> ChannelOut {
        ChannelOut {
            id: c.id.clone(),
            name: c.name.clone(),
            currency: c.currency.to_string(),
            cost: (&c.cost).into(),
            settlement_cycle: c.settlement_cycle.as_str(),
            payout_cost: c.payout_cost.minor(),
            receivable_account_id: c.receivable_account.0,
            created_at: format_timestamp(c.created_at),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct MerchantAccountsOut {
    pub pending: u64,
    pub available: u64,
    pub frozen: u64,
    pub advanced: u64,
    pub debt: u64,
}

#[derive(Debug, Serialize)]
pub struct MerchantOut {
    pub id: String,
    pub name: String,
    pub currency: String,
    pub fee: FeeScheduleOut,
    /// The terms version newest in force or scheduled.
    pub terms: crate::dto_settlement::TermsOut,
    pub terms_versions: usize,
    pub account_ids: MerchantAccountsOut,
    pub created_at: String,
}

impl From<&Merchant> for MerchantOut {
    fn from(m: &Merchant) -> MerchantOut {
        let a = &m.accounts;
        MerchantOut {
            id: m.id.clone(),
            name: m.name.clone(),
            currency: m.currency.to_string(),
            fee: (&m.latest_terms().fee).into(),
            terms: m.latest_terms().into(),
            terms_versions: m.terms.len(),
            account_ids: MerchantAccountsOut {
                pending: a.pending.0,
                available: a.available.0,
                frozen: a.frozen.0,
                advanced: a.advanced.0,
                debt: a.debt.0,
            },
            created_at: format_timestamp(m.created_at),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PaymentOut {
    pub id: String,
    pub channel_id: String,
    pub merchant_id: String,
    pub channel_trade_no: String,
    pub merchant_order_no: String,
    pub amount: i64,
    pub currency: String,
    pub paid_at: String,
    pub merchant_fee: i64,
    pub channel_cost: i64,
    pub merchant_claim: i64,
    pub created_at: String,
    pub store_id: Option<String>,
}

impl From<&Payment> for PaymentOut {
    fn from(p: &Payment) -> PaymentOut {
        PaymentOut {
            id: payment_id_text(p.id),
            channel_id: p.channel_id.clone(),
            merchant_id: p.merchant_id.clone(),
            channel_trade_no: p.channel_trade_no.clone(),
            merchant_order_no: p.merchant_order_no.clone(),
            amount: p.amount.minor(),
            currency: p.currency.to_string(),
            paid_at: format_timestamp(p.paid_at),
            merchant_fee: p.merchant_fee.minor(),
            channel_cost: p.channel_cost.minor(),
            merchant_claim: p.merchant_claim.minor(),
            created_at: format_timestamp(p.created_at),
            store_id: p.store_id.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct BalancesOut {
    pub merchant_id: String,
    pub currency: String,
    pub pending: i64,
    pub available: i64,
    pub frozen: i64,
    pub advanced: i64,
    pub debt: i64,
    /// The largest advance possible right now; its fees come on top, from the claims.
    pub advance_available: i64,
}

impl BalancesOut {
    pub fn new(merchant: &Merchant, b: &MerchantBalances) -> BalancesOut {
        BalancesOut {
            merchant_id: merchant.id.clone(),
            currency: merchant.currency.to_string(),
            pending: b.pending.minor(),
            available: b.available.minor(),
            frozen: b.frozen.minor(),
            advanced: b.advanced.minor(),
            debt: b.debt.minor(),
            advance_available: b.advance_available.minor(),
        }
    }
}

fn account_flag_names(flags: AccountFlags) -> Vec<&'static str> {
    let mut names = Vec::new();
    if flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS) {
        names.push("debits_must_not_exceed_credits");
    }
    if flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS) {
        names.push("credits_must_not_exceed_debits");
    }
    names
}

fn transfer_flag_names(flags: TransferFlags) -> Vec<&'static str> {
    [
        (TransferFlags::LINKED, "linked"),
        (TransferFlags::PENDING, "pending"),
        (TransferFlags::POST_PENDING, "post_pending"),
        (TransferFlags::VOID_PENDING, "void_pending"),
        (TransferFlags::EXPIRED, "expired"),
    ]
    .into_iter()
    .filter(|(flag, _)| flags.contains(*flag))
    .map(|(_, name)| name)
    .collect()
}

#[derive(Debug, Serialize)]
pub struct AccountOut {
    pub id: u64,
    pub currency: String,
    pub kind: &'static str,
    pub flags: Vec<&'static str>,
    pub credit_limit: i64,
    pub code: u16,
    pub user_data: u64,
    pub debits_pending: i64,
    pub debits_posted: i64,
    pub credits_pending: i64,
    pub credits_posted: i64,
    /// Posted balance on the account's normal side.
    pub balance: i64,
    pub created_at: String,
    /// Where this account's history starts (newest entry), for `/v1/ledger/transfers`.
    pub last_seq: u64,
}

impl From<&Account> for AccountOut {
    fn from(a: &Account) -> AccountOut {
        let b = &a.balances;
        AccountOut {
            id: a.spec.id.0,
            currency: a.spec.currency.to_string(),
            kind: a.spec.kind.as_str(),
            flags: account_flag_names(a.spec.flags),
            credit_limit: a.spec.credit_limit.minor(),
            code: a.spec.code,
            user_data: a.spec.user_data,
            debits_pending: b.debits_pending.minor(),
            debits_posted: b.debits_posted.minor(),
            credits_pending: b.credits_pending.minor(),
            credits_posted: b.credits_posted.minor(),
            balance: a.posted_balance().minor(),
            created_at: format_timestamp(a.timestamp),
            last_seq: a.last_seq,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TransferOut {
    pub seq: u64,
    /// The transfer id, as 32 hexadecimal digits.
    pub id: String,
    pub debit_account_id: u64,
    pub credit_account_id: u64,
    pub amount: i64,
    pub pending_id: String,
    pub flags: Vec<&'static str>,
    pub code: u16,
    pub user_data: u64,
    pub timestamp: String,
}

impl From<&Transfer> for TransferOut {
    fn from(t: &Transfer) -> TransferOut {
        TransferOut {
            seq: t.seq,
            id: format!("{:032x}", t.id.0),
            debit_account_id: t.debit_account_id.0,
            credit_account_id: t.credit_account_id.0,
            amount: t.amount.minor(),
            pending_id: format!("{:032x}", t.pending_id.0),
            flags: transfer_flag_names(t.flags),
            code: t.code,
            user_data: t.user_data,
            timestamp: format_timestamp(t.timestamp),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TrialBalanceLineOut {
    pub currency: String,
    pub debits_posted: i128,
    pub credits_posted: i128,
    pub debits_pending: i128,
    pub credits_pending: i128,
    pub balanced: bool,
}

#[derive(Debug, Serialize)]
pub struct TrialBalanceOut {
    pub currencies: Vec<TrialBalanceLineOut>,
    pub balanced: bool,
}

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}
