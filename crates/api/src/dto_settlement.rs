//! Wire types for terms, calendars, funders, payouts, lots and channel settlements, with their
//! explicit conversions. Times of day are `"HH:MM"` in Asia/Shanghai; dates `"YYYY-MM-DD"`.

use domain::{
    AdvanceTerms, BankAccount, CalendarYear, ChannelSettlement, Cycle, Date, Funder, FunderKind,
    FunderLine, Lot, MerchantTerms, Payout, SettlementTerms,
};
use ledger::Amount;
use serde::{Deserialize, Serialize};
use serde_json::Number;

use crate::dto::{FeeScheduleIn, FeeScheduleOut, amount, format_timestamp, timestamp};
use crate::error::{ApiError, ErrorCode};

fn invalid(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::with_message(code, message)
}

/// `"HH:MM"` → minutes after midnight.
pub fn time_of_day(text: &str, field: &str) -> Result<u16, ApiError> {
    let parse = || {
        let (h, m) = text.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    parse().ok_or_else(|| {
        invalid(
            ErrorCode::InvalidTerms,
            format!("{field} must be a time of day HH:MM."),
        )
    })
}

pub fn format_time_of_day(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

pub fn date(text: &str, field: &str) -> Result<Date, ApiError> {
    Date::parse(text).ok_or_else(|| {
        invalid(
            ErrorCode::InvalidRequest,
            format!("{field} must be a date YYYY-MM-DD."),
        )
    })
}

fn optional_amount(value: Option<&Number>, field: &str) -> Result<Amount, ApiError> {
    value.map_or(Ok(Amount::ZERO), |v| amount(v, field))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementIn {
    pub cycle: Option<String>,
    pub cutoff: Option<String>,
    pub run_at: Option<Vec<String>>,
    pub settle_before_funds: Option<bool>,
    pub payout_fee: Option<Number>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvanceIn {
    pub enabled: Option<bool>,
    pub rate_ppm: Option<u32>,
    pub rate_ppm_per_day: Option<u32>,
    pub fixed_fee: Option<Number>,
    pub max_ratio_ppm: Option<u32>,
    pub limit_per_payout: Option<Number>,
    pub limit_daily: Option<Number>,
    pub limit_outstanding: Option<Number>,
    pub allow_below_cost_of_funds: Option<bool>,
}

#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct BankAccountDto {
    pub holder: String,
    pub number: String,
    pub bank: String,
}

/// Merchant terms as sent, in `POST /v1/merchants` and `POST /v1/merchants/{id}/terms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TermsIn {
    pub fee: FeeScheduleIn,
    pub allow_below_cost: Option<bool>,
    pub settlement: Option<SettlementIn>,
    pub advance: Option<AdvanceIn>,
    pub reserve_ratio_ppm: Option<u32>,
    pub bank_account: Option<BankAccountDto>,
    pub calendar: Option<String>,
    /// Whether refunds give back the matching share of the merchant fee (default false).
    pub refund_fee_returned: Option<bool>,
    /// Whether a refund the claims cannot cover waits for later claims (default false:
    /// refused with insufficient_funds).
    pub refund_queue: Option<bool>,
    /// RFC 3339; defaults to now. Only for a new version of existing terms.
    pub effective_from: Option<String>,
}

pub fn cycle(text: &str) -> Result<Cycle, ApiError> {
    Cycle::parse(text).ok_or_else(|| {
        invalid(
            ErrorCode::InvalidTerms,
            "cycle must be one of T1, D1, T0, D0.",
        )
    })
}

impl TermsIn {
    pub fn to_domain(&self) -> Result<MerchantTerms, ApiError> {
        let defaults = SettlementTerms::default();
        let s = self.settlement.as_ref();
        let settlement = SettlementTerms {
            cycle: s
                .and_then(|s| s.cycle.as_deref())
                .map_or(Ok(defaults.cycle), cycle)?,
            cutoff_minute: s
                .and_then(|s| s.cutoff.as_deref())
                .map_or(Ok(defaults.cutoff_minute), |t| {
                    time_of_day(t, "settlement.cutoff")
                })?,
            run_minutes: match s.and_then(|s| s.run_at.as_ref()) {
                None => defaults.run_minutes,
                Some(times) => times
                    .iter()
                    .map(|t| time_of_day(t, "settlement.run_at"))
                    .collect::<Result<_, _>>()?,
            },
            settle_before_funds: s.and_then(|s| s.settle_before_funds).unwrap_or(false),
            payout_fee: optional_amount(
                s.and_then(|s| s.payout_fee.as_ref()),
                "settlement.payout_fee",
            )?,
        };
        let a = self.advance.as_ref();
        let number = |pick: fn(&AdvanceIn) -> Option<&Number>, field: &str| {
            optional_amount(a.and_then(pick), field)
        };
        let advance = AdvanceTerms {
            enabled: a.and_then(|a| a.enabled).unwrap_or(false),
            rate_ppm: a.and_then(|a| a.rate_ppm).unwrap_or(0),
            rate_ppm_per_day: a.and_then(|a| a.rate_ppm_per_day).unwrap_or(0),
            fixed_fee: number(|a| a.fixed_fee.as_ref(), "advance.fixed_fee")?,
            max_ratio_ppm: a.and_then(|a| a.max_ratio_ppm).unwrap_or(0),
            limit_per_payout: number(|a| a.limit_per_payout.as_ref(), "advance.limit_per_payout")?,
            limit_daily: number(|a| a.limit_daily.as_ref(), "advance.limit_daily")?,
            limit_outstanding: number(
                |a| a.limit_outstanding.as_ref(),
                "advance.limit_outstanding",
            )?,
            allow_below_cost_of_funds: a.and_then(|a| a.allow_below_cost_of_funds).unwrap_or(false),
        };
        Ok(MerchantTerms {
            effective_from: self
                .effective_from
                .as_deref()
                .map_or(Ok(ledger::Timestamp(0)), |t| timestamp(t, "effective_from"))?,
            fee: self.fee.to_domain("fee")?,
            allow_below_cost: self.allow_below_cost.unwrap_or(false),
            settlement,
            advance,
            reserve_ratio_ppm: self.reserve_ratio_ppm.unwrap_or(0),
            bank_account: self.bank_account.as_ref().map(|b| BankAccount {
                holder: b.holder.clone(),
                number: b.number.clone(),
                bank: b.bank.clone(),
            }),
            calendar: self.calendar.clone().unwrap_or_else(|| "cn".into()),
            refund_fee_returned: self.refund_fee_returned.unwrap_or(false),
            refund_queue: self.refund_queue.unwrap_or(false),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct TermsOut {
    pub effective_from: String,
    pub fee: FeeScheduleOut,
    pub allow_below_cost: bool,
    pub settlement: serde_json::Value,
    pub advance: serde_json::Value,
    pub reserve_ratio_ppm: u32,
    pub bank_account: Option<BankAccountDto>,
    pub calendar: String,
    pub refund_fee_returned: bool,
    pub refund_queue: bool,
}

impl From<&MerchantTerms> for TermsOut {
    fn from(t: &MerchantTerms) -> TermsOut {
        let s = &t.settlement;
        let a = &t.advance;
        TermsOut {
            effective_from: format_timestamp(t.effective_from),
            fee: (&t.fee).into(),
            allow_below_cost: t.allow_below_cost,
            settlement: serde_json::json!({
                "cycle": s.cycle.as_str(),
                "cutoff": format_time_of_day(s.cutoff_minute),
                "run_at": s.run_minutes.iter().map(|m| format_time_of_day(*m)).collect::<Vec<_>>(),
                "settle_before_funds": s.settle_before_funds,
                "payout_fee": s.payout_fee.minor(),
            }),
            advance: serde_json::json!({
                "enabled": a.enabled,
                "rate_ppm": a.rate_ppm,
                "rate_ppm_per_day": a.rate_ppm_per_day,
                "fixed_fee": a.fixed_fee.minor(),
                "max_ratio_ppm": a.max_ratio_ppm,
                "limit_per_payout": a.limit_per_payout.minor(),
                "limit_daily": a.limit_daily.minor(),
                "limit_outstanding": a.limit_outstanding.minor(),
                "allow_below_cost_of_funds": a.allow_below_cost_of_funds,
            }),
            reserve_ratio_ppm: t.reserve_ratio_ppm,
            bank_account: t.bank_account.as_ref().map(|b| BankAccountDto {
                holder: b.holder.clone(),
                number: b.number.clone(),
                bank: b.bank.clone(),
            }),
            calendar: t.calendar.clone(),
            refund_fee_returned: t.refund_fee_returned,
            refund_queue: t.refund_queue,
        }
    }
}

/// One year of a calendar, as sent (`POST /v1/calendars/{id}/years/{year}`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarYearIn {
    pub holidays: Vec<String>,
    pub workdays: Vec<String>,
    pub source: String,
}

impl CalendarYearIn {
    pub fn to_domain(&self, year: i32) -> Result<CalendarYear, ApiError> {
        let dates = |list: &[String], field: &str| {
            list.iter()
                .map(|d| date(d, field))
                .collect::<Result<_, _>>()
        };
        Ok(CalendarYear {
            year,
            holidays: dates(&self.holidays, "holidays")?,
            workdays: dates(&self.workdays, "workdays")?,
            source: self.source.clone(),
        })
    }
}

pub fn calendar_year_out(year: &CalendarYear) -> serde_json::Value {
    serde_json::json!({
        "year": year.year,
        "holidays": year.holidays.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "workdays": year.workdays.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "source": year.source,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateFunder {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub line: String,
    pub limit: Number,
    pub reset_at: Option<String>,
    pub cost_rate_ppm_per_day: Option<u32>,
    pub priority: Option<u32>,
}

impl CreateFunder {
    pub fn to_domain(&self) -> Result<domain::NewFunder, ApiError> {
        Ok(domain::NewFunder {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: match self.kind.as_str() {
                "position" => FunderKind::Position,
                "credit_line" => FunderKind::CreditLine,
                _ => {
                    return Err(invalid(
                        ErrorCode::InvalidRequest,
                        "kind must be position or credit_line.",
                    ));
                }
            },
            line: match self.line.as_str() {
                "intraday" => FunderLine::Intraday,
                "overnight" => FunderLine::Overnight,
                _ => {
                    return Err(invalid(
                        ErrorCode::InvalidRequest,
                        "line must be intraday or overnight.",
                    ));
                }
            },
            limit: amount(&self.limit, "limit")?,
            reset_minute: self
                .reset_at
                .as_deref()
                .map_or(Ok(0), |t| time_of_day(t, "reset_at"))?,
            cost_rate_ppm_per_day: self.cost_rate_ppm_per_day.unwrap_or(0),
            priority: self.priority.unwrap_or(100),
        })
    }
}

pub fn funder_out(f: &Funder) -> serde_json::Value {
    serde_json::json!({
        "id": f.id,
        "name": f.name,
        "kind": match f.kind { FunderKind::Position => "position", FunderKind::CreditLine => "credit_line" },
        "line": match f.line { FunderLine::Intraday => "intraday", FunderLine::Overnight => "overnight" },
        "limit": f.limit.minor(),
        "used": f.used.minor(),
        "available": f.room().minor(),
        "reset_at": format_time_of_day(f.reset_minute),
        "cost_rate_ppm_per_day": f.cost_rate_ppm_per_day,
        "priority": f.priority,
        "created_at": format_timestamp(f.created_at),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePayout {
    pub merchant_id: String,
    pub amount: Number,
    pub kind: String,
    pub request_id: Option<String>,
}

pub fn payout_kind(text: &str) -> Result<domain::PayoutKind, ApiError> {
    match text {
        "withdrawal" => Ok(domain::PayoutKind::Withdrawal),
        "advance" => Ok(domain::PayoutKind::Advance),
        _ => Err(invalid(
            ErrorCode::InvalidRequest,
            "kind must be withdrawal or advance.",
        )),
    }
}

pub fn payout_out(p: &Payout) -> serde_json::Value {
    serde_json::json!({
        "id": format!("po_{}", p.id.0),
        "request_id": p.request_id,
        "merchant_id": p.merchant_id,
        "kind": p.kind.as_str(),
        "amount": p.amount.minor(),
        "fee": p.fee.minor(),
        "status": p.status.as_str(),
        "funded": p.funded,
        "funder_id": p.funder,
        "days_to_funds": p.days_to_funds,
        "channel_cost": p.channel_cost.minor(),
        "bank_account": { "holder": p.bank_account.holder, "number": p.bank_account.number, "bank": p.bank_account.bank },
        "draws": p.draws.iter().map(|(lot, a)| serde_json::json!({ "lot_id": lot.0, "amount": a.minor() })).collect::<Vec<_>>(),
        "created_at": format_timestamp(p.created_at),
        "updated_at": format_timestamp(p.updated_at),
    })
}

pub fn parse_payout_id(text: &str) -> Option<domain::PayoutId> {
    text.strip_prefix("po_")?
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(domain::PayoutId)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolvePayout {
    pub result: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateChannelSettlement {
    pub channel_id: String,
    pub business_date: String,
    pub amount: Number,
    pub bank_reference: String,
    /// Payments the channel did not pay for (reversals, chargebacks) in this statement: each is
    /// applied as a reversal first, so its shortfall is the merchant's (debt if its claims
    /// cannot cover it) and only an unexplained difference remains a discrepancy.
    pub reversals: Option<Vec<CreateReversal>>,
}

pub fn channel_settlement_out(s: &ChannelSettlement) -> serde_json::Value {
    serde_json::json!({
        "id": s.id,
        "channel_id": s.channel_id,
        "business_date": s.business_date.to_string(),
        "amount": s.amount.minor(),
        "expected": s.expected.minor(),
        "discrepancy": s.discrepancy.minor(),
        "bank_reference": s.bank_reference,
        "lots": s.lots,
        "created_at": format_timestamp(s.created_at),
    })
}

pub fn lot_out(lot: &Lot, channel_id: &str) -> serde_json::Value {
    serde_json::json!({
        "id": lot.id.0,
        "channel_id": channel_id,
        "business_date": lot.business_date.to_string(),
        "cycle": lot.cycle.as_str(),
        "state": lot.state.as_str(),
        "claims": lot.claims.minor(),
        "expected_from_channel": lot.expected_from_channel.minor(),
        "drawn": lot.drawn.minor(),
        "paid": lot.paid.minor(),
        "remaining": lot.remaining().minor(),
        "below_floor_payins": lot.below_floor_payins,
        "funded_at": lot.funded_at.map(format_timestamp),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    pub payment_id: String,
    pub amount: Number,
    /// Makes retries return the first refund (default: the Idempotency-Key).
    pub request_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateReversal {
    pub payment_id: String,
    pub amount: Number,
    /// The channel's reference of the reversal or chargeback.
    pub reference: String,
}

pub fn refund_out(r: &domain::Refund) -> serde_json::Value {
    serde_json::json!({
        "id": format!("rf_{}", r.id),
        "kind": r.kind.as_str(),
        "request_id": r.request_id,
        "payment_id": crate::dto::payment_id_text(r.payment_id),
        "merchant_id": r.merchant_id,
        "amount": r.amount.minor(),
        "fee_returned": r.fee_returned.minor(),
        "from_claims": r.from_claims.minor(),
        "from_reserve": r.from_reserve.minor(),
        "debt": r.debt.minor(),
        "status": r.status.as_str(),
        "created_at": format_timestamp(r.created_at),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateHold {
    pub hold_id: Option<String>,
    pub amount: Number,
    pub reason: String,
}

pub fn hold_out(h: &domain::Hold) -> serde_json::Value {
    serde_json::json!({
        "id": h.id,
        "merchant_id": h.merchant_id,
        "amount": h.amount.minor(),
        "reason": h.reason,
        "active": h.active,
        "created_at": format_timestamp(h.created_at),
        "released_at": h.released_at.map(format_timestamp),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetFrozen {
    pub frozen: bool,
}
