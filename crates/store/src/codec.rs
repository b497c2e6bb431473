//! The stored form of logged inputs: one JSON object per command, written and read here
//! explicitly so that domain types carry no storage format. Field names are short and
//! stable; a new field must be optional on read.

use domain::{
    AdvanceTerms, BankAccount, CalendarYear, Command, Cycle, Date, FeeSchedule, FunderKind,
    FunderLine, MerchantTerms, NewChannel, NewChannelSettlement, NewFunder, NewHold, NewMerchant,
    NewPayment, PaymentId, PayoutId, PayoutKind, PayoutRequest, PayoutResult, RefundRequest,
    SettlementTerms,
};
use ledger::{Amount, Currency, Timestamp};
use serde_json::{Map, Value, json};

use crate::{Input, StoreError, StoreResult};

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("stored command: bad or missing {what}"))
}

/// Typed access to one stored object's fields.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn of(value: &'a Value, what: &str) -> StoreResult<Fields<'a>> {
        value.as_object().map(Fields).ok_or_else(|| corrupt(what))
    }
    fn value(&self, key: &str) -> StoreResult<&'a Value> {
        self.0.get(key).ok_or_else(|| corrupt(key))
    }
    /// A string that may be absent or null (fields added after a log was written).
    fn optional_str(&self, key: &str) -> StoreResult<Option<String>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(corrupt(key)),
        }
    }

    fn str(&self, key: &str) -> StoreResult<String> {
        self.value(key)?
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| corrupt(key))
    }
    fn i64(&self, key: &str) -> StoreResult<i64> {
        self.value(key)?.as_i64().ok_or_else(|| corrupt(key))
    }
    fn u64(&self, key: &str) -> StoreResult<u64> {
        self.value(key)?.as_u64().ok_or_else(|| corrupt(key))
    }
    fn u32(&self, key: &str) -> StoreResult<u32> {
        u32::try_from(self.u64(key)?).map_err(|_| corrupt(key))
    }
    fn u16(&self, key: &str) -> StoreResult<u16> {
        u16::try_from(self.u64(key)?).map_err(|_| corrupt(key))
    }
    fn bool(&self, key: &str) -> StoreResult<bool> {
        self.value(key)?.as_bool().ok_or_else(|| corrupt(key))
    }
    fn amount(&self, key: &str) -> StoreResult<Amount> {
        self.i64(key).map(Amount::from_minor)
    }
    fn currency(&self, key: &str) -> StoreResult<Currency> {
        Currency::parse(&self.str(key)?).ok_or_else(|| corrupt(key))
    }
    fn cycle(&self, key: &str) -> StoreResult<Cycle> {
        Cycle::parse(&self.str(key)?).ok_or_else(|| corrupt(key))
    }
    fn dates(&self, key: &str) -> StoreResult<std::collections::BTreeSet<Date>> {
        self.value(key)?
            .as_array()
            .ok_or_else(|| corrupt(key))?
            .iter()
            .map(|d| {
                d.as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .map(Date::from_days)
                    .ok_or_else(|| corrupt(key))
            })
            .collect()
    }
}

fn schedule(s: &FeeSchedule) -> Value {
    json!({ "rate": s.rate_ppm, "min": s.min.minor(), "max": s.max.minor() })
}

fn read_schedule(value: &Value) -> StoreResult<FeeSchedule> {
    let f = Fields::of(value, "fee schedule")?;
    Ok(FeeSchedule {
        rate_ppm: f.u32("rate")?,
        min: f.amount("min")?,
        max: f.amount("max")?,
    })
}

fn terms(t: &MerchantTerms) -> Value {
    let s = &t.settlement;
    let a = &t.advance;
    json!({
        "from": t.effective_from.micros(),
        "fee": schedule(&t.fee),
        "below_cost": t.allow_below_cost,
        "settlement": {
            "cycle": s.cycle.as_str(), "cutoff": s.cutoff_minute, "runs": s.run_minutes,
            "before_funds": s.settle_before_funds, "payout_fee": s.payout_fee.minor(),
        },
        "advance": {
            "enabled": a.enabled, "rate": a.rate_ppm, "rate_day": a.rate_ppm_per_day,
            "fixed": a.fixed_fee.minor(), "ratio": a.max_ratio_ppm,
            "per_payout": a.limit_per_payout.minor(), "daily": a.limit_daily.minor(),
            "outstanding": a.limit_outstanding.minor(), "below_cost": a.allow_below_cost_of_funds,
        },
        "reserve": t.reserve_ratio_ppm,
        "bank": t.bank_account.as_ref().map(|b| json!({ "holder": b.holder, "number": b.number, "bank": b.bank })),
        "calendar": t.calendar,
        "refund_fee": t.refund_fee_returned,
        "refund_queue": t.refund_queue,
    })
}

fn read_terms(value: &Value) -> StoreResult<MerchantTerms> {
    let t = Fields::of(value, "terms")?;
    let s = Fields::of(t.value("settlement")?, "settlement")?;
    let a = Fields::of(t.value("advance")?, "advance")?;
    let bank = match t.value("bank")? {
        Value::Null => None,
        other => {
            let b = Fields::of(other, "bank")?;
            Some(BankAccount {
                holder: b.str("holder")?,
                number: b.str("number")?,
                bank: b.str("bank")?,
            })
        }
    };
    Ok(MerchantTerms {
        effective_from: Timestamp(t.i64("from")?),
        fee: read_schedule(t.value("fee")?)?,
        allow_below_cost: t.bool("below_cost")?,
        settlement: SettlementTerms {
            cycle: s.cycle("cycle")?,
            cutoff_minute: s.u16("cutoff")?,
            run_minutes: s
                .value("runs")?
                .as_array()
                .ok_or_else(|| corrupt("runs"))?
                .iter()
                .map(|m| {
                    m.as_u64()
                        .and_then(|m| u16::try_from(m).ok())
                        .ok_or_else(|| corrupt("runs"))
                })
                .collect::<StoreResult<_>>()?,
            settle_before_funds: s.bool("before_funds")?,
            payout_fee: s.amount("payout_fee")?,
        },
        advance: AdvanceTerms {
            enabled: a.bool("enabled")?,
            rate_ppm: a.u32("rate")?,
            rate_ppm_per_day: a.u32("rate_day")?,
            fixed_fee: a.amount("fixed")?,
            max_ratio_ppm: a.u32("ratio")?,
            limit_per_payout: a.amount("per_payout")?,
            limit_daily: a.amount("daily")?,
            limit_outstanding: a.amount("outstanding")?,
            allow_below_cost_of_funds: a.bool("below_cost")?,
        },
        reserve_ratio_ppm: t.u32("reserve")?,
        bank_account: bank,
        calendar: t.str("calendar")?,
        refund_fee_returned: match t.0.get("refund_fee") {
            Some(value) => value.as_bool().ok_or_else(|| corrupt("refund_fee"))?,
            None => false,
        },
        refund_queue: match t.0.get("refund_queue") {
            Some(value) => value.as_bool().ok_or_else(|| corrupt("refund_queue"))?,
            None => false,
        },
    })
}

fn kind_text(kind: PayoutKind) -> &'static str {
    kind.as_str()
}

fn read_kind(text: &str) -> StoreResult<PayoutKind> {
    Ok(match text {
        "withdrawal" => PayoutKind::Withdrawal,
        "advance" => PayoutKind::Advance,
        "settlement" => PayoutKind::Settlement,
        _ => return Err(corrupt("payout kind")),
    })
}

fn directory(command: &auth::DirectoryCommand) -> Value {
    use auth::DirectoryCommand as D;
    match command {
        D::CreateMaster {
            merchant_id,
            user_id,
            username,
            password_hash,
        } => {
            json!({ "t": "directory", "d": "master", "merchant_id": merchant_id, "user_id": user_id, "username": username, "hash": password_hash })
        }
        D::CreateOperator {
            actor,
            user_id,
            username,
            password_hash,
            permissions,
            refund_cap_single,
            refund_cap_daily,
            stores,
        } => {
            json!({ "t": "directory", "d": "operator", "actor": actor, "user_id": user_id, "username": username, "hash": password_hash, "permissions": permissions.bits(), "cap_single": refund_cap_single, "cap_daily": refund_cap_daily, "stores": stores })
        }
        D::SetPermissions {
            actor,
            user_id,
            permissions,
        } => {
            json!({ "t": "directory", "d": "permissions", "actor": actor, "user_id": user_id, "permissions": permissions.bits() })
        }
        D::SetStores {
            actor,
            user_id,
            stores,
        } => {
            json!({ "t": "directory", "d": "stores", "actor": actor, "user_id": user_id, "stores": stores })
        }
        D::SetDisabled {
            actor,
            user_id,
            disabled,
        } => {
            json!({ "t": "directory", "d": "disabled", "actor": actor, "user_id": user_id, "disabled": disabled })
        }
        D::RecordLogin {
            user_id,
            device_id,
            succeeded,
        } => {
            json!({ "t": "directory", "d": "login", "user_id": user_id, "device_id": device_id, "succeeded": succeeded })
        }
        D::RecordPaymentPasswordAttempt {
            user_id,
            device_id,
            correct,
        } => {
            json!({ "t": "directory", "d": "pin_attempt", "user_id": user_id, "device_id": device_id, "correct": correct })
        }
        D::EnrollTotp { user_id, nonce } => {
            json!({ "t": "directory", "d": "totp", "user_id": user_id, "nonce": nonce })
        }
        D::RecordOtpAttempt {
            user_id,
            device_id,
            step,
        } => {
            json!({ "t": "directory", "d": "otp_attempt", "user_id": user_id, "device_id": device_id, "step": step })
        }
        D::SetPaymentPassword { user_id, hash } => {
            json!({ "t": "directory", "d": "payment_password", "user_id": user_id, "hash": hash })
        }
    }
}

fn read_directory(f: &Fields<'_>) -> StoreResult<auth::DirectoryCommand> {
    use auth::DirectoryCommand as D;
    let permissions = |f: &Fields<'_>| {
        auth::Permissions::from_bits(f.u16("permissions")?).ok_or_else(|| corrupt("permissions"))
    };
    Ok(match f.str("d")?.as_str() {
        "master" => D::CreateMaster {
            merchant_id: f.str("merchant_id")?,
            user_id: f.str("user_id")?,
            username: f.str("username")?,
            password_hash: f.str("hash")?,
        },
        "operator" => D::CreateOperator {
            actor: f.str("actor")?,
            user_id: f.str("user_id")?,
            username: f.str("username")?,
            password_hash: f.str("hash")?,
            permissions: permissions(f)?,
            refund_cap_single: f.i64("cap_single")?,
            refund_cap_daily: f.i64("cap_daily")?,
            // Absent in logs written before stores existed: all stores.
            stores: match f.0.get("stores") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| corrupt("store"))
                    })
                    .collect::<StoreResult<Vec<String>>>()?,
                Some(_) => return Err(corrupt("stores")),
            },
        },
        "permissions" => D::SetPermissions {
            actor: f.str("actor")?,
            user_id: f.str("user_id")?,
            permissions: permissions(f)?,
        },
        "disabled" => D::SetDisabled {
            actor: f.str("actor")?,
            user_id: f.str("user_id")?,
            disabled: f.bool("disabled")?,
        },
        "login" => D::RecordLogin {
            user_id: f.str("user_id")?,
            device_id: f.value("device_id")?.as_str().map(str::to_owned),
            succeeded: f.bool("succeeded")?,
        },
        "totp" => D::EnrollTotp {
            user_id: f.str("user_id")?,
            nonce: f.str("nonce")?,
        },
        "otp_attempt" => D::RecordOtpAttempt {
            user_id: f.str("user_id")?,
            device_id: f.value("device_id")?.as_str().map(str::to_owned),
            step: match f.value("step")? {
                Value::Null => None,
                _ => Some(f.i64("step")?),
            },
        },
        "pin_attempt" => D::RecordPaymentPasswordAttempt {
            user_id: f.str("user_id")?,
            device_id: f.value("device_id")?.as_str().map(str::to_owned),
            correct: f.bool("correct")?,
        },
        "stores" => D::SetStores {
            actor: f.str("actor")?,
            user_id: f.str("user_id")?,
            stores: f
                .value("stores")?
                .as_array()
                .ok_or_else(|| corrupt("stores"))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| corrupt("store"))
                })
                .collect::<StoreResult<Vec<String>>>()?,
        },
        "payment_password" => D::SetPaymentPassword {
            user_id: f.str("user_id")?,
            hash: f.str("hash")?,
        },
        other => return Err(corrupt(&format!("directory command {other}"))),
    })
}

fn device(command: &auth::DeviceCommand) -> Value {
    use auth::DeviceCommand as D;
    match command {
        D::Register {
            user_id,
            device_id,
            thumbprint,
            install_id,
            name,
        } => {
            json!({ "t": "device", "d": "register", "user_id": user_id, "device_id": device_id, "jkt": thumbprint, "install_id": install_id, "name": name })
        }
        D::Confirm {
            actor,
            actor_device,
            device_id,
        } => {
            json!({ "t": "device", "d": "confirm", "actor": actor, "actor_device": actor_device, "device_id": device_id })
        }
        D::Revoke { actor, device_id } => {
            json!({ "t": "device", "d": "revoke", "actor": actor, "device_id": device_id })
        }
        D::SetLost {
            actor,
            device_id,
            lost,
        } => {
            json!({ "t": "device", "d": "lost", "actor": actor, "device_id": device_id, "lost": lost })
        }
        D::SetPolicy { actor, policy } => {
            let (kind, up_to) = match policy {
                auth::LoginPolicy::AllowUpTo(n) => ("up_to", *n),
                auth::LoginPolicy::Single => ("single", 1),
                auth::LoginPolicy::RefuseNew => ("refuse_new", 1),
            };
            json!({ "t": "device", "d": "policy", "actor": actor, "policy": kind, "up_to": up_to })
        }
        D::StartSession {
            user_id,
            device_id,
            session_id,
            refresh_hash,
        } => {
            json!({ "t": "device", "d": "session", "user_id": user_id, "device_id": device_id, "session_id": session_id, "hash": hex(refresh_hash) })
        }
        D::Rotate {
            session_id,
            presented_hash,
            new_hash,
        } => {
            json!({ "t": "device", "d": "rotate", "session_id": session_id, "presented": hex(presented_hash), "hash": hex(new_hash) })
        }
        D::EndSession { actor, session_id } => {
            json!({ "t": "device", "d": "end", "actor": actor, "session_id": session_id })
        }
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_device(f: &Fields<'_>) -> StoreResult<auth::DeviceCommand> {
    use auth::DeviceCommand as D;
    let hash = |key: &str| -> StoreResult<[u8; 32]> {
        let text = f.str(key)?;
        let mut out = [0u8; 32];
        if text.len() != 64 || !text.is_ascii() {
            return Err(corrupt("refresh hash"));
        }
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| corrupt("refresh hash"))?;
        }
        Ok(out)
    };
    Ok(match f.str("d")?.as_str() {
        "register" => D::Register {
            user_id: f.str("user_id")?,
            device_id: f.str("device_id")?,
            thumbprint: f.str("jkt")?,
            install_id: f.str("install_id")?,
            name: f.str("name")?,
        },
        "confirm" => D::Confirm {
            actor: f.str("actor")?,
            actor_device: f.str("actor_device")?,
            device_id: f.str("device_id")?,
        },
        "revoke" => D::Revoke {
            actor: f.str("actor")?,
            device_id: f.str("device_id")?,
        },
        "lost" => D::SetLost {
            actor: f.str("actor")?,
            device_id: f.str("device_id")?,
            lost: f.bool("lost")?,
        },
        "policy" => D::SetPolicy {
            actor: f.str("actor")?,
            policy: match f.str("policy")?.as_str() {
                "up_to" => auth::LoginPolicy::AllowUpTo(
                    u8::try_from(f.u16("up_to")?).map_err(|_| corrupt("login policy"))?,
                ),
                "single" => auth::LoginPolicy::Single,
                "refuse_new" => auth::LoginPolicy::RefuseNew,
                _ => return Err(corrupt("login policy")),
            },
        },
        "session" => D::StartSession {
            user_id: f.str("user_id")?,
            device_id: f.str("device_id")?,
            session_id: f.str("session_id")?,
            refresh_hash: hash("hash")?,
        },
        "rotate" => D::Rotate {
            session_id: f.str("session_id")?,
            presented_hash: hash("presented")?,
            new_hash: hash("hash")?,
        },
        "end" => D::EndSession {
            actor: f.str("actor")?,
            session_id: f.str("session_id")?,
        },
        other => return Err(corrupt(&format!("device command {other}"))),
    })
}

/// The stored JSON of an input.
pub fn encode(input: &Input) -> String {
    let value = match input {
        Input::Tick { work } => json!({ "t": "tick", "work": work }),
        Input::Command(command) => match command {
            Command::CreateChannel(c) => json!({
                "t": "create_channel", "id": c.id, "name": c.name, "currency": c.currency.as_str(),
                "cost": schedule(&c.cost), "cycle": c.settlement_cycle.as_str(),
                "payout_cost": c.payout_cost.minor(),
            }),
            Command::CreateMerchant(m) => json!({
                "t": "create_merchant", "id": m.id, "name": m.name, "currency": m.currency.as_str(),
                "terms": terms(&m.terms),
            }),
            Command::SetMerchantTerms {
                merchant_id,
                terms: t,
            } => json!({
                "t": "set_terms", "merchant_id": merchant_id, "terms": terms(t),
            }),
            Command::LoadCalendarYear { calendar_id, year } => json!({
                "t": "calendar_year", "calendar": calendar_id, "year": year.year,
                "holidays": year.holidays.iter().map(|d| d.days()).collect::<Vec<_>>(),
                "workdays": year.workdays.iter().map(|d| d.days()).collect::<Vec<_>>(),
                "source": year.source,
            }),
            Command::CreateFunder(f) => json!({
                "t": "funder", "id": f.id, "name": f.name,
                "kind": match f.kind { FunderKind::Position => "position", FunderKind::CreditLine => "credit_line" },
                "line": match f.line { FunderLine::Intraday => "intraday", FunderLine::Overnight => "overnight" },
                "limit": f.limit.minor(), "reset": f.reset_minute, "cost": f.cost_rate_ppm_per_day,
                "priority": f.priority,
            }),
            Command::RecordPayment(p) => json!({
                "t": "payment", "channel_id": p.channel_id, "merchant_id": p.merchant_id,
                "trade": p.channel_trade_no, "order": p.merchant_order_no, "amount": p.amount.minor(),
                "currency": p.currency.as_str(), "paid_at": p.paid_at.micros(),
                "store_id": p.store_id,
            }),
            Command::RequestPayout(r) => json!({
                "t": "payout", "request_id": r.request_id, "merchant_id": r.merchant_id,
                "amount": r.amount.minor(), "kind": kind_text(r.kind),
            }),
            Command::MarkPayoutSent(id) => json!({ "t": "payout_sent", "payout": id.0 }),
            Command::ResolvePayout { payout, result } => json!({
                "t": "resolve_payout", "payout": payout.0,
                "result": match result {
                    PayoutResult::Succeeded => "succeeded",
                    PayoutResult::Failed => "failed",
                    PayoutResult::Unknown => "unknown",
                },
            }),
            Command::RefundPayment(r) | Command::ReversePayment(r) => json!({
                "t": if matches!(command, Command::RefundPayment(_)) { "refund" } else { "reversal" },
                "request_id": r.request_id, "payment": r.payment_id.0, "channel_id": r.channel_id,
                "trade": r.channel_trade_no, "amount": r.amount.minor(),
            }),
            Command::PlaceHold(h) => json!({
                "t": "hold", "hold_id": h.hold_id, "merchant_id": h.merchant_id,
                "amount": h.amount.minor(), "reason": h.reason,
            }),
            Command::ReleaseHold { hold_id } => json!({ "t": "release_hold", "hold_id": hold_id }),
            Command::SetExposureLimit { limit } => {
                json!({ "t": "exposure_limit", "limit": limit.minor() })
            }
            Command::Directory(d) => directory(d),
            Command::Device(d) => device(d),
            Command::SetApprovalThreshold { actor, threshold } => json!({
                "t": "approval_threshold", "actor": actor,
                "threshold": threshold.map(|t| t.minor()),
            }),
            Command::UserRefund {
                user_id,
                device_id,
                request: r,
                level,
            } => json!({
                "t": "user_refund", "user_id": user_id, "device_id": device_id,
                "level": level.as_str(),
                "request_id": r.request_id, "payment": r.payment_id.0, "channel_id": r.channel_id,
                "trade": r.channel_trade_no, "amount": r.amount.minor(),
            }),
            Command::RequestApproval(new) => {
                let mut value = json!({
                    "t": "approval_request", "id": new.id, "maker": new.maker,
                    "maker_device": new.maker_device, "maker_level": new.maker_level,
                });
                let operation = match &new.operation {
                    domain::ApprovalOperation::Refund(r) => json!({
                        "action": "refund", "request_id": r.request_id, "payment": r.payment_id.0,
                        "channel_id": r.channel_id, "trade": r.channel_trade_no,
                        "amount": r.amount.minor(),
                    }),
                    domain::ApprovalOperation::Payout(r) => json!({
                        "action": "payout", "request_id": r.request_id,
                        "merchant_id": r.merchant_id, "amount": r.amount.minor(),
                        "kind": kind_text(r.kind),
                    }),
                    domain::ApprovalOperation::BankAccount {
                        merchant_id,
                        account,
                    } => json!({
                        "action": "bank_account", "merchant_id": merchant_id,
                        "holder": account.holder, "number": account.number, "bank": account.bank,
                    }),
                };
                if let (Value::Object(target), Value::Object(fields)) = (&mut value, operation) {
                    target.extend(fields);
                }
                value
            }
            Command::DecideApproval {
                id,
                checker,
                checker_device,
                approve,
            } => json!({
                "t": "approval_decision", "id": id, "checker": checker,
                "checker_device": checker_device, "approve": approve,
            }),
            Command::SetMerchantFrozen {
                merchant_id,
                frozen,
            } => json!({
                "t": "freeze", "merchant_id": merchant_id, "frozen": frozen,
            }),
            Command::RecordChannelSettlement(s) => json!({
                "t": "channel_settlement", "channel_id": s.channel_id,
                "business_date": s.business_date.days(), "amount": s.amount.minor(),
                "bank_reference": s.bank_reference,
            }),
        },
    };
    value.to_string()
}

/// Reads back what [`encode`] wrote.
pub fn decode(text: &str) -> StoreResult<Input> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("stored command: {e}")))?;
    let f = Fields::of(&value, "command")?;
    let command = match f.str("t")?.as_str() {
        "tick" => {
            return Ok(Input::Tick {
                work: f.u32("work")?,
            });
        }
        "create_channel" => Command::CreateChannel(NewChannel {
            id: f.str("id")?,
            name: f.str("name")?,
            currency: f.currency("currency")?,
            cost: read_schedule(f.value("cost")?)?,
            settlement_cycle: f.cycle("cycle")?,
            payout_cost: match f.0.get("payout_cost") {
                Some(_) => f.amount("payout_cost")?,
                None => Amount::ZERO,
            },
        }),
        "create_merchant" => Command::CreateMerchant(NewMerchant {
            id: f.str("id")?,
            name: f.str("name")?,
            currency: f.currency("currency")?,
            terms: read_terms(f.value("terms")?)?,
        }),
        "set_terms" => Command::SetMerchantTerms {
            merchant_id: f.str("merchant_id")?,
            terms: read_terms(f.value("terms")?)?,
        },
        "calendar_year" => Command::LoadCalendarYear {
            calendar_id: f.str("calendar")?,
            year: CalendarYear {
                year: i32::try_from(f.i64("year")?).map_err(|_| corrupt("year"))?,
                holidays: f.dates("holidays")?,
                workdays: f.dates("workdays")?,
                source: f.str("source")?,
            },
        },
        "funder" => Command::CreateFunder(NewFunder {
            id: f.str("id")?,
            name: f.str("name")?,
            kind: match f.str("kind")?.as_str() {
                "position" => FunderKind::Position,
                "credit_line" => FunderKind::CreditLine,
                _ => return Err(corrupt("funder kind")),
            },
            line: match f.str("line")?.as_str() {
                "intraday" => FunderLine::Intraday,
                "overnight" => FunderLine::Overnight,
                _ => return Err(corrupt("funder line")),
            },
            limit: f.amount("limit")?,
            reset_minute: f.u16("reset")?,
            cost_rate_ppm_per_day: f.u32("cost")?,
            priority: f.u32("priority")?,
        }),
        "payment" => Command::RecordPayment(NewPayment {
            channel_id: f.str("channel_id")?,
            merchant_id: f.str("merchant_id")?,
            channel_trade_no: f.str("trade")?,
            merchant_order_no: f.str("order")?,
            amount: f.amount("amount")?,
            currency: f.currency("currency")?,
            paid_at: Timestamp(f.i64("paid_at")?),
            store_id: f.optional_str("store_id")?,
        }),
        "payout" => Command::RequestPayout(PayoutRequest {
            request_id: f.str("request_id")?,
            merchant_id: f.str("merchant_id")?,
            amount: f.amount("amount")?,
            kind: read_kind(&f.str("kind")?)?,
        }),
        "payout_sent" => Command::MarkPayoutSent(PayoutId(f.u64("payout")?)),
        "resolve_payout" => Command::ResolvePayout {
            payout: PayoutId(f.u64("payout")?),
            result: match f.str("result")?.as_str() {
                "succeeded" => PayoutResult::Succeeded,
                "failed" => PayoutResult::Failed,
                "unknown" => PayoutResult::Unknown,
                _ => return Err(corrupt("payout result")),
            },
        },
        "channel_settlement" => Command::RecordChannelSettlement(NewChannelSettlement {
            channel_id: f.str("channel_id")?,
            business_date: Date::from_days(
                i32::try_from(f.i64("business_date")?).map_err(|_| corrupt("business_date"))?,
            ),
            amount: f.amount("amount")?,
            bank_reference: f.str("bank_reference")?,
        }),
        kind @ ("refund" | "reversal") => {
            let request = RefundRequest {
                request_id: f.str("request_id")?,
                payment_id: PaymentId(f.u64("payment")?),
                channel_id: f.str("channel_id")?,
                channel_trade_no: f.str("trade")?,
                amount: f.amount("amount")?,
            };
            if kind == "refund" {
                Command::RefundPayment(request)
            } else {
                Command::ReversePayment(request)
            }
        }
        "hold" => Command::PlaceHold(NewHold {
            hold_id: f.str("hold_id")?,
            merchant_id: f.str("merchant_id")?,
            amount: f.amount("amount")?,
            reason: f.str("reason")?,
        }),
        "directory" => Command::Directory(read_directory(&f)?),
        "device" => Command::Device(read_device(&f)?),
        "approval_threshold" => Command::SetApprovalThreshold {
            actor: f.str("actor")?,
            threshold: match f.value("threshold")? {
                Value::Null => None,
                _ => Some(f.amount("threshold")?),
            },
        },
        "approval_request" => {
            let operation = match f.str("action")?.as_str() {
                "refund" => domain::ApprovalOperation::Refund(RefundRequest {
                    request_id: f.str("request_id")?,
                    payment_id: PaymentId(f.u64("payment")?),
                    channel_id: f.str("channel_id")?,
                    channel_trade_no: f.str("trade")?,
                    amount: f.amount("amount")?,
                }),
                "payout" => domain::ApprovalOperation::Payout(PayoutRequest {
                    request_id: f.str("request_id")?,
                    merchant_id: f.str("merchant_id")?,
                    amount: f.amount("amount")?,
                    kind: read_kind(&f.str("kind")?)?,
                }),
                "bank_account" => domain::ApprovalOperation::BankAccount {
                    merchant_id: f.str("merchant_id")?,
                    account: domain::BankAccount {
                        holder: f.str("holder")?,
                        number: f.str("number")?,
                        bank: f.str("bank")?,
                    },
                },
                _ => return Err(corrupt("approval action")),
            };
            Command::RequestApproval(domain::NewApproval {
                id: f.str("id")?,
                maker: f.str("maker")?,
                maker_device: f.str("maker_device")?,
                maker_level: f.str("maker_level")?,
                operation,
            })
        }
        "user_refund" => Command::UserRefund {
            level: auth::stepup::Level::parse(&f.str("level")?)
                .ok_or_else(|| corrupt("verification level"))?,
            device_id: f.str("device_id")?,
            user_id: f.str("user_id")?,
            request: RefundRequest {
                request_id: f.str("request_id")?,
                payment_id: PaymentId(f.u64("payment")?),
                channel_id: f.str("channel_id")?,
                channel_trade_no: f.str("trade")?,
                amount: f.amount("amount")?,
            },
        },
        "approval_decision" => Command::DecideApproval {
            id: f.str("id")?,
            checker: f.str("checker")?,
            checker_device: f.str("checker_device")?,
            approve: f.bool("approve")?,
        },
        "exposure_limit" => Command::SetExposureLimit {
            limit: f.amount("limit")?,
        },
        "release_hold" => Command::ReleaseHold {
            hold_id: f.str("hold_id")?,
        },
        "freeze" => Command::SetMerchantFrozen {
            merchant_id: f.str("merchant_id")?,
            frozen: f.bool("frozen")?,
        },
        other => {
            return Err(StoreError::Corrupt(format!(
                "unknown stored command {other:?}"
            )));
        }
    };
    Ok(Input::Command(command))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command kind survives a round trip through its stored form.
    #[test]
    fn every_command_round_trips() {
        let mut t = MerchantTerms::with_fee(FeeSchedule {
            rate_ppm: 3_800,
            min: Amount::from_minor(1),
            max: Amount::from_minor(99),
        });
        t.effective_from = Timestamp(123);
        t.bank_account = Some(BankAccount {
            holder: "h".into(),
            number: "n".into(),
            bank: "b".into(),
        });
        t.settlement.run_minutes = vec![300, 900];
        t.advance.enabled = true;
        t.advance.limit_daily = Amount::from_minor(5);
        t.refund_fee_returned = true;
        t.refund_queue = true;
        let inputs = vec![
            Input::Tick { work: 3 },
            Input::Command(Command::CreateChannel(NewChannel {
                id: "C1".into(),
                name: "c".into(),
                currency: Currency::CNY,
                cost: FeeSchedule::default(),
                settlement_cycle: Cycle::D1,
                payout_cost: Amount::from_minor(150),
            })),
            Input::Command(Command::CreateMerchant(NewMerchant {
                id: "M1".into(),
                name: "m".into(),
                currency: Currency::CNY,
                terms: t.clone(),
            })),
            Input::Command(Command::SetMerchantTerms {
                merchant_id: "M1".into(),
                terms: t,
            }),
            Input::Command(Command::LoadCalendarYear {
                calendar_id: "cn".into(),
                year: CalendarYear {
                    year: 2026,
                    holidays: [Date::from_days(20_454)].into_iter().collect(),
                    workdays: [Date::from_days(20_457)].into_iter().collect(),
                    source: "s".into(),
                },
            }),
            Input::Command(Command::CreateFunder(NewFunder {
                id: "f".into(),
                name: "F".into(),
                kind: FunderKind::CreditLine,
                line: FunderLine::Intraday,
                limit: Amount::from_minor(10),
                reset_minute: 1,
                cost_rate_ppm_per_day: 2,
                priority: 3,
            })),
            Input::Command(Command::RequestPayout(PayoutRequest {
                request_id: "r".into(),
                merchant_id: "M1".into(),
                amount: Amount::from_minor(7),
                kind: PayoutKind::Advance,
            })),
            Input::Command(Command::MarkPayoutSent(PayoutId(4))),
            Input::Command(Command::ResolvePayout {
                payout: PayoutId(4),
                result: PayoutResult::Unknown,
            }),
            Input::Command(Command::RecordChannelSettlement(NewChannelSettlement {
                channel_id: "C1".into(),
                business_date: Date::from_days(20_000),
                amount: Amount::from_minor(8),
                bank_reference: "ref".into(),
            })),
            Input::Command(Command::RefundPayment(RefundRequest {
                request_id: "rf".into(),
                payment_id: PaymentId(3),
                channel_id: "C1".into(),
                channel_trade_no: "T".into(),
                amount: Amount::from_minor(9),
            })),
            Input::Command(Command::ReversePayment(RefundRequest {
                request_id: "rv".into(),
                payment_id: PaymentId(3),
                channel_id: "C1".into(),
                channel_trade_no: "T".into(),
                amount: Amount::from_minor(9),
            })),
            Input::Command(Command::PlaceHold(NewHold {
                hold_id: "h".into(),
                merchant_id: "M1".into(),
                amount: Amount::from_minor(5),
                reason: "risk".into(),
            })),
            Input::Command(Command::ReleaseHold {
                hold_id: "h".into(),
            }),
            Input::Command(Command::SetMerchantFrozen {
                merchant_id: "M1".into(),
                frozen: true,
            }),
            Input::Command(Command::SetExposureLimit {
                limit: Amount::from_minor(77),
            }),
            Input::Command(Command::Directory(auth::DirectoryCommand::CreateMaster {
                merchant_id: "M1".into(),
                user_id: "u1".into(),
                username: "boss".into(),
                password_hash: "$argon2id$x".into(),
            })),
            Input::Command(Command::Directory(auth::DirectoryCommand::CreateOperator {
                actor: "u1".into(),
                user_id: "u2".into(),
                username: "clerk".into(),
                password_hash: "$argon2id$y".into(),
                permissions: auth::Permissions::VIEW,
                refund_cap_single: 5,
                refund_cap_daily: 6,
                stores: vec!["S1".into(), "S2".into()],
            })),
            Input::Command(Command::Directory(auth::DirectoryCommand::SetPermissions {
                actor: "u1".into(),
                user_id: "u2".into(),
                permissions: auth::Permissions::ALL,
            })),
            Input::Command(Command::Directory(auth::DirectoryCommand::SetDisabled {
                actor: "u1".into(),
                user_id: "u2".into(),
                disabled: true,
            })),
            Input::Command(Command::Directory(auth::DirectoryCommand::RecordLogin {
                user_id: "u2".into(),
                device_id: None,
                succeeded: false,
            })),
            Input::Command(Command::Directory(auth::DirectoryCommand::SetStores {
                actor: "u1".into(),
                user_id: "u2".into(),
                stores: vec!["S9".into()],
            })),
            Input::Command(Command::Directory(
                auth::DirectoryCommand::SetPaymentPassword {
                    user_id: "u2".into(),
                    hash: "$argon2id$pin".into(),
                },
            )),
            Input::Command(Command::SetApprovalThreshold {
                actor: "u1".into(),
                threshold: Some(Amount::from_minor(50_000)),
            }),
            Input::Command(Command::SetApprovalThreshold {
                actor: "u1".into(),
                threshold: None,
            }),
            Input::Command(Command::RequestApproval(domain::NewApproval {
                id: "apr_1".into(),
                maker: "u2".into(),
                maker_device: "d1".into(),
                maker_level: "signed_two_factor".into(),
                operation: domain::ApprovalOperation::Refund(RefundRequest {
                    request_id: "apr_1".into(),
                    payment_id: PaymentId(7),
                    channel_id: "C1".into(),
                    channel_trade_no: "T7".into(),
                    amount: Amount::from_minor(60_000),
                }),
            })),
            Input::Command(Command::UserRefund {
                level: auth::stepup::Level::TwoFactor,
                device_id: "d1".into(),
                user_id: "u2".into(),
                request: RefundRequest {
                    request_id: "chl_x".into(),
                    payment_id: PaymentId(7),
                    channel_id: "C1".into(),
                    channel_trade_no: "T7".into(),
                    amount: Amount::from_minor(500),
                },
            }),
            Input::Command(Command::RequestApproval(domain::NewApproval {
                id: "apr_2".into(),
                maker: "u2".into(),
                maker_device: "d1".into(),
                maker_level: "signed_two_factor".into(),
                operation: domain::ApprovalOperation::Payout(PayoutRequest {
                    request_id: "apr_2".into(),
                    merchant_id: "M1".into(),
                    amount: Amount::from_minor(70_000),
                    kind: PayoutKind::Withdrawal,
                }),
            })),
            Input::Command(Command::RequestApproval(domain::NewApproval {
                id: "apr_3".into(),
                maker: "u2".into(),
                maker_device: "d1".into(),
                maker_level: "signed_two_factor".into(),
                operation: domain::ApprovalOperation::BankAccount {
                    merchant_id: "M1".into(),
                    account: domain::BankAccount {
                        holder: "Merchant one".into(),
                        number: "6222000000000002".into(),
                        bank: "ICBC".into(),
                    },
                },
            })),
            Input::Command(Command::DecideApproval {
                id: "apr_1".into(),
                checker: "u1".into(),
                checker_device: "d0".into(),
                approve: true,
            }),
            Input::Command(Command::Device(auth::DeviceCommand::Register {
                user_id: "u1".into(),
                device_id: "d1".into(),
                thumbprint: "jkt".into(),
                install_id: "i1".into(),
                name: "Phone 1".into(),
            })),
            Input::Command(Command::Device(auth::DeviceCommand::Confirm {
                actor: "u1".into(),
                actor_device: "d1".into(),
                device_id: "d2".into(),
            })),
            Input::Command(Command::Device(auth::DeviceCommand::Revoke {
                actor: "u1".into(),
                device_id: "d2".into(),
            })),
            Input::Command(Command::Device(auth::DeviceCommand::SetLost {
                actor: "u1".into(),
                device_id: "d2".into(),
                lost: true,
            })),
            Input::Command(Command::Device(auth::DeviceCommand::SetPolicy {
                actor: "u1".into(),
                policy: auth::LoginPolicy::AllowUpTo(4),
            })),
            Input::Command(Command::Device(auth::DeviceCommand::SetPolicy {
                actor: "u1".into(),
                policy: auth::LoginPolicy::Single,
            })),
            Input::Command(Command::Device(auth::DeviceCommand::SetPolicy {
                actor: "u1".into(),
                policy: auth::LoginPolicy::RefuseNew,
            })),
            Input::Command(Command::Device(auth::DeviceCommand::StartSession {
                user_id: "u1".into(),
                device_id: "d1".into(),
                session_id: "s1".into(),
                refresh_hash: [0xab; 32],
            })),
            Input::Command(Command::Device(auth::DeviceCommand::Rotate {
                session_id: "s1".into(),
                presented_hash: [0xab; 32],
                new_hash: std::array::from_fn(|i| i as u8),
            })),
            Input::Command(Command::Device(auth::DeviceCommand::EndSession {
                actor: "u1".into(),
                session_id: "s1".into(),
            })),
        ];
        for input in inputs {
            assert_eq!(decode(&encode(&input)).expect("decodes"), input);
        }
    }
}
