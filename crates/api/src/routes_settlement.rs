//! Routes for clearing and settlement: merchant terms, calendars, funders, payouts (quote,
//! request, list, resolve), channel funds arrival, lots, reports and the sandbox test clock.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::{get, post};
use domain::{Command, CommandResult, NewChannelSettlement, Outcome, PayoutRequest, PayoutResult};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Scope;
use crate::dto::{self, format_timestamp};
use crate::dto_settlement as wire;
use crate::error::{ApiError, ErrorCode};
use crate::routes::{
    ApiResult, authorize, created_or_ok, execute, json, page_limit, parse, query, read_body,
    render_with, to_parts,
};
use crate::{AppState, BODY_BYTES_MAX};

/// Longest a test-clock move waits for the scheduled work it makes due.
const TEST_CLOCK_SETTLE_MS_MAX: u64 = 60_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/merchants/{id}/terms", post(set_terms))
        .route("/v1/merchants/{id}/lots", get(merchant_lots))
        .route("/v1/calendars/{id}", get(get_calendar))
        .route("/v1/calendars/{id}/years/{year}", post(load_calendar_year))
        .route("/v1/funders", get(list_funders).post(create_funder))
        .route("/v1/payouts", get(list_payouts).post(create_payout))
        .route("/v1/payouts/quote", get(quote_payout))
        .route("/v1/payouts/{id}", get(get_payout))
        .route("/v1/payouts/{id}/resolve", post(resolve_payout))
        .route(
            "/v1/channel-settlements",
            get(list_channel_settlements).post(create_channel_settlement),
        )
        .route("/v1/refunds", get(list_refunds).post(create_refund))
        .route("/v1/reversals", post(create_reversal))
        .route(
            "/v1/merchants/{id}/holds",
            get(list_holds).post(create_hold),
        )
        .route("/v1/holds/{id}/release", post(release_hold))
        .route("/v1/merchants/{id}/freeze", post(set_frozen))
        .route("/v1/exposure-limit", post(set_exposure_limit))
        .route("/v1/test-clock", get(get_test_clock))
        .route("/v1/test-clock/advance", post(advance_test_clock))
}

fn line(uri: &Uri) -> String {
    format!("{} {}", Method::POST, uri.path())
}

fn render_merchant_terms(results: &[CommandResult]) -> (u16, Vec<u8>) {
    render_with(results, |outcome| match outcome {
        Outcome::TermsSet(merchant) => {
            Some(to_parts(StatusCode::OK, &dto::MerchantOut::from(merchant)))
        }
        _ => None,
    })
}

async fn set_terms(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let caller = authorize(&state, &headers, Scope::MerchantsWrite).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: wire::TermsIn = parse(&body)?;
    let command = Command::SetMerchantTerms {
        merchant_id: id,
        terms: request.to_domain()?,
    };
    execute(
        &state,
        &caller,
        &headers,
        &line(&uri),
        &body,
        vec![command],
        render_merchant_terms,
    )
    .await
}

async fn merchant_lots(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let lots = state
        .engine
        .query(move |p| {
            p.merchant(&id)?;
            Some(
                p.merchant_lots(&id)
                    .iter()
                    .map(|lot| wire::lot_out(lot, &p.channels()[lot.channel as usize].id))
                    .collect::<Vec<_>>(),
            )
        })
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    Ok(json(StatusCode::OK, &json!({ "data": lots })))
}

async fn get_calendar(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let calendar = state
        .engine
        .query(move |p| {
            p.calendar(&id).map(|c| {
                json!({
                    "id": c.id,
                    "years": c.years.values().map(wire::calendar_year_out).collect::<Vec<_>>(),
                })
            })
        })
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    Ok(json(StatusCode::OK, &calendar))
}

fn render_calendar(results: &[CommandResult]) -> (u16, Vec<u8>) {
    render_with(results, |outcome| match outcome {
        Outcome::CalendarLoaded { calendar_id, year } => Some(to_parts(
            StatusCode::OK,
            &json!({ "calendar_id": calendar_id, "year": year }),
        )),
        _ => None,
    })
}

/// Loads or replaces one year of a calendar.
async fn load_calendar_year(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Path((id, year)): Path<(String, i32)>,
    body: Body,
) -> ApiResult {
    let caller = authorize(&state, &headers, Scope::Admin).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: wire::CalendarYearIn = parse(&body)?;
    let command = Command::LoadCalendarYear {
        calendar_id: id,
        year: request.to_domain(year)?,
    };
    execute(
        &state,
        &caller,
        &headers,
        &line(&uri),
        &body,
        vec![command],
        render_calendar,
    )
    .await
}

fn render_funder(results: &[CommandResult]) -> (u16, Vec<u8>) {
    render_with(results, |outcome| match outcome {
        Outcome::Funder { funder, created } => {
            Some(to_parts(created_or_ok(*created), &wire::funder_out(funder)))
        }
        _ => None,
    })
}

async fn create_funder(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = authorize(&state, &headers, Scope::Admin).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: wire::CreateFunder = parse(&body)?;
    let command = Command::CreateFunder(request.to_domain()?);
    execute(
        &state,
        &caller,
        &headers,
        &line(&uri),
        &body,
        vec![command],
        render_funder,
    )
    .await
}

async fn list_funders(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let funders = state
        .engine
        .query(|p| p.funders().iter().map(wire::funder_out).collect::<Vec<_>>())
        .await?;
    Ok(json(StatusCode::OK, &json!({ "data": funders })))
}

fn render_payout(results: &[CommandResult]) -> (u16, Vec<u8>) {
    render_with(results, |outcome| match outcome {
        Outcome::Payout { payout, created } => {
            Some(to_parts(created_or_ok(*created), &wire::payout_out(payout)))
        }
        _ => None,
    })
}

/// Requests a withdrawal or an advance. The request id (from the body, else the
/// Idempotency-Key) makes retries return the first payout; without either, one is made up and
/// the request is not deduplicated.
async fn create_payout(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = authorize(&state, &headers, Scope::PayoutsWrite).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: wire::CreatePayout = parse(&body)?;
    let request_id = request_id_from(request.request_id.clone(), &headers)?;
    let command = Command::RequestPayout(PayoutRequest {
        request_id,
        merchant_id: request.merchant_id,
        amount: dto::amount(&request.amount, "amount")?,
        kind: wire::payout_kind(&request.kind)?,
    });
    execute(
        &state,
        &caller,
        &headers,
        &line(&uri),
        &body,
        vec![command],
        render_payout,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuoteQuery {
    merchant_id: String,
    amount: i64,
    kind: String,
}

/// The fee a payout would bear if requested now.
async fn quote_payout(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<QuoteQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let q = query(q)?;
    let kind = wire::payout_kind(&q.kind)?;
    let amount = ledger::Amount::from_minor(q.amount);
    if !amount.is_positive() {
        return Err(ApiError::new(ErrorCode::AmountMustBePositive));
    }
    let now = state.clock.now();
    let merchant = q.merchant_id.clone();
    let (fee, days) = state
        .engine
        .query(move |p| p.quote_payout(&merchant, amount, kind, now))
        .await?
        .map_err(ApiError::from)?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "merchant_id": q.merchant_id,
            "kind": q.kind,
            "amount": amount.minor(),
            "fee": fee.minor(),
            "claims_drawn": amount.minor() + fee.minor(),
            "days_to_funds": days,
            "quoted_at": format_timestamp(now),
        }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PayoutsQuery {
    merchant_id: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
}

async fn list_payouts(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<PayoutsQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let q = query(q)?;
    let limit = page_limit(q.limit)? as usize;
    let payouts = state
        .engine
        .query(move |p| {
            p.payouts()
                .iter()
                .rev()
                .filter(|po| q.merchant_id.as_ref().is_none_or(|m| *m == po.merchant_id))
                .filter(|po| q.status.as_ref().is_none_or(|s| s == po.status.as_str()))
                .take(limit)
                .map(wire::payout_out)
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(json(StatusCode::OK, &json!({ "data": payouts })))
}

async fn get_payout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let id = wire::parse_payout_id(&id).ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    let payout = state
        .engine
        .query(move |p| p.payout(id).map(wire::payout_out))
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    Ok(json(StatusCode::OK, &payout))
}

/// An operator (or reconciliation) settles what happened to a payout: `succeeded`, `failed`
/// or `unknown`. Final statuses never change.
async fn resolve_payout(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let caller = authorize(&state, &headers, Scope::Admin).await?;
    let id = wire::parse_payout_id(&id).ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: wire::ResolvePayout = parse(&body)?;
    let result = match request.result.as_str() {
        "succeeded" => PayoutResult::Succeeded,
        "failed" => PayoutResult::Failed,
        "unknown" => PayoutResult::Unknown,
        _ => {
            return Err(ApiError::with_message(
                ErrorCode::InvalidRequest,
                "result must be succeeded, failed or unknown.",
            ));
        }
    };
    let command = Command::ResolvePayout { payout: id, result };
    execute(
        &state,
        &caller,
        &headers,
        &line(&uri),
        &body,
        vec![command],
        render_payout,
    )
    .await
}

/// The channel settlement is the last command; reversals listed in the statement come first.
fn render_channel_settlement(results: &[CommandResult]) -> (u16, Vec<u8>) {
    let Some((last, reversals)) = results.split_last() else {
        return ApiError::internal("no result").to_parts();
    };
    if !reversals.is_empty() {
        let reversals: Vec<Value> = reversals
            .iter()
            .map(|r| match r {
                Ok(Outcome::Refund { refund, .. }) => wire::refund_out(refund),
                Ok(_) => json!({ "error": { "code": "internal" } }),
                Err(error) => ApiError::from(error.clone()).body(),
            })
            .collect();
        return match last {
            Ok(Outcome::ChannelSettlement {
                settlement,
                created,
            }) => {
                let mut body = wire::channel_settlement_out(settlement);
                body["reversals"] = Value::Array(reversals);
                to_parts(
                    if *created {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    },
                    &body,
                )
            }
            Ok(_) => ApiError::internal("unexpected outcome").to_parts(),
            Err(error) => ApiError::from(error.clone()).to_parts(),
        };
    }
    render_with(results, |outcome| match outcome {
        Outcome::ChannelSettlement {
            settlement,
            created,
        } => Some(to_parts(
            if *created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &wire::channel_settlement_out(settlement),
        )),
        _ => None,
    })
}

/// A channel's money for a business date arrived.
async fn create_channel_settlement(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = authorize(&state, &headers, Scope::SettlementsWrite).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: wire::CreateChannelSettlement = parse(&body)?;
    let mut commands = Vec::new();
    for reversal in request.reversals.iter().flatten() {
        commands.push(Command::ReversePayment(
            refund_request(
                &state,
                &reversal.payment_id,
                &reversal.amount,
                reversal.reference.clone(),
            )
            .await?,
        ));
    }
    commands.push(Command::RecordChannelSettlement(NewChannelSettlement {
        channel_id: request.channel_id,
        business_date: wire::date(&request.business_date, "business_date")?,
        amount: dto::amount(&request.amount, "amount")?,
        bank_reference: request.bank_reference,
    }));
    execute(
        &state,
        &caller,
        &headers,
        &line(&uri),
        &body,
        commands,
        render_channel_settlement,
    )
    .await
}

async fn list_channel_settlements(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let settlements = state
        .engine
        .query(|p| {
            p.channel_settlements()
                .iter()
                .rev()
                .map(wire::channel_settlement_out)
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(json(StatusCode::OK, &json!({ "data": settlements })))
}

async fn get_test_clock(State(state): State<AppState>) -> ApiResult {
    let Some(clock) = &state.test_clock else {
        return Err(ApiError::new(ErrorCode::NotFound));
    };
    Ok(json(
        StatusCode::OK,
        &json!({ "now": format_timestamp(engine::Clock::now(clock.as_ref())) }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceClock {
    to: String,
}

/// Moves the sandbox clock forward and answers once every cutoff and run due by then is done.
async fn advance_test_clock(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    authorize(&state, &headers, Scope::Admin).await?;
    let Some(clock) = state.test_clock.clone() else {
        return Err(ApiError::with_message(
            ErrorCode::NotFound,
            "The test clock exists only under dzero serve --sandbox.",
        ));
    };
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: AdvanceClock = parse(&body)?;
    let to = dto::timestamp(&request.to, "to")?;
    if !clock.advance_to(to) {
        return Err(ApiError::new(ErrorCode::ClockBackwards));
    }
    let deadline = std::time::Instant::now() + Duration::from_millis(TEST_CLOCK_SETTLE_MS_MAX);
    while state.engine.query(move |p| p.has_due_work(to)).await? {
        if std::time::Instant::now() > deadline {
            return Err(ApiError::internal("scheduled work did not finish in time"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(json(
        StatusCode::OK,
        &json!({ "now": format_timestamp(to) }),
    ))
}

fn render_refund(results: &[CommandResult]) -> (u16, Vec<u8>) {
    render_with(results, |outcome| match outcome {
        Outcome::Refund { refund, created } => Some(to_parts(
            if *created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &wire::refund_out(refund),
        )),
        _ => None,
    })
}

/// The request a refund or reversal of `payment_id` makes: the payment's channel and trade
/// number come from storage, since they identify it in the sequencer.
async fn refund_request(
    state: &AppState,
    payment_id: &str,
    amount: &serde_json::Number,
    request_id: String,
) -> Result<domain::RefundRequest, ApiError> {
    let id = dto::parse_payment_id(payment_id)
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownPayment))?;
    let payment = crate::routes::read_store(state, move |r| r.payment(id))
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownPayment))?;
    Ok(domain::RefundRequest {
        request_id,
        payment_id: id,
        channel_id: payment.channel_id,
        channel_trade_no: payment.channel_trade_no,
        amount: dto::amount(amount, "amount")?,
    })
}

fn request_id_from(body_id: Option<String>, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(id) = body_id {
        return Ok(id);
    }
    match headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        Some(key) if domain::is_valid_external_id(key) => Ok(key.to_owned()),
        _ => Ok(format!("req_{}", crate::auth::random_hex(12)?)),
    }
}

/// A refund, partial or full, paid from the merchant's claims; together with earlier refunds
/// and reversals never above the payment.
async fn create_refund(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = authorize(&state, &headers, Scope::RefundsWrite).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: wire::CreateRefund = parse(&body)?;
    let request_id = request_id_from(request.request_id.clone(), &headers)?;
    let refund = refund_request(&state, &request.payment_id, &request.amount, request_id).await?;
    let command = Command::RefundPayment(refund);
    execute(
        &state,
        &caller,
        &headers,
        &line(&uri),
        &body,
        vec![command],
        render_refund,
    )
    .await
}

/// A channel takes a payment back (reversal or chargeback): the merchant's claims bear it, and
/// what they cannot cover becomes the merchant's debt.
async fn create_reversal(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = authorize(&state, &headers, Scope::SettlementsWrite).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: wire::CreateReversal = parse(&body)?;
    let reversal = refund_request(
        &state,
        &request.payment_id,
        &request.amount,
        request.reference.clone(),
    )
    .await?;
    let command = Command::ReversePayment(reversal);
    execute(
        &state,
        &caller,
        &headers,
        &line(&uri),
        &body,
        vec![command],
        render_refund,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundsQuery {
    merchant_id: Option<String>,
    payment_id: Option<String>,
    limit: Option<u32>,
}

async fn list_refunds(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<RefundsQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let q = query(q)?;
    let limit = page_limit(q.limit)? as usize;
    let payment = q.payment_id.as_deref().map(dto::parse_payment_id);
    let refunds = state
        .engine
        .query(move |p| {
            p.refunds()
                .iter()
                .rev()
                .filter(|r| q.merchant_id.as_ref().is_none_or(|m| *m == r.merchant_id))
                .filter(|r| payment.is_none_or(|id| id == Some(r.payment_id)))
                .take(limit)
                .map(wire::refund_out)
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(json(StatusCode::OK, &json!({ "data": refunds })))
}

fn render_hold(results: &[CommandResult]) -> (u16, Vec<u8>) {
    render_with(results, |outcome| match outcome {
        Outcome::Hold { hold, created } => {
            Some(to_parts(created_or_ok(*created), &wire::hold_out(hold)))
        }
        _ => None,
    })
}

/// Holds (freezes) an amount of a merchant's available money.
async fn create_hold(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let caller = authorize(&state, &headers, Scope::Admin).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: wire::CreateHold = parse(&body)?;
    let command = Command::PlaceHold(domain::NewHold {
        hold_id: request_id_from(request.hold_id.clone(), &headers)?,
        merchant_id: id,
        amount: dto::amount(&request.amount, "amount")?,
        reason: request.reason,
    });
    execute(
        &state,
        &caller,
        &headers,
        &line(&uri),
        &body,
        vec![command],
        render_hold,
    )
    .await
}

async fn release_hold(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = authorize(&state, &headers, Scope::Admin).await?;
    let command = Command::ReleaseHold { hold_id: id };
    execute(
        &state,
        &caller,
        &headers,
        &line(&uri),
        &[],
        vec![command],
        render_hold,
    )
    .await
}

async fn list_holds(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let holds = state
        .engine
        .query(move |p| {
            p.holds()
                .iter()
                .filter(|h| h.merchant_id == id)
                .map(wire::hold_out)
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(json(StatusCode::OK, &json!({ "data": holds })))
}

fn render_frozen(results: &[CommandResult]) -> (u16, Vec<u8>) {
    render_with(results, |outcome| match outcome {
        Outcome::MerchantFrozen {
            merchant_id,
            frozen,
            ..
        } => Some(to_parts(
            StatusCode::OK,
            &json!({ "merchant_id": merchant_id, "frozen": frozen }),
        )),
        _ => None,
    })
}

/// Stops (or resumes) every payout of a merchant: withdrawals, advances and settlement runs.
async fn set_frozen(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let caller = authorize(&state, &headers, Scope::Admin).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: wire::SetFrozen = parse(&body)?;
    let command = Command::SetMerchantFrozen {
        merchant_id: id,
        frozen: request.frozen,
    };
    execute(
        &state,
        &caller,
        &headers,
        &line(&uri),
        &body,
        vec![command],
        render_frozen,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExposureLimitIn {
    limit: serde_json::Number,
}

fn render_exposure_limit(results: &[CommandResult]) -> (u16, Vec<u8>) {
    render_with(results, |outcome| match outcome {
        Outcome::ExposureLimit { limit, .. } => {
            Some(to_parts(StatusCode::OK, &json!({ "limit": limit.minor() })))
        }
        _ => None,
    })
}

/// Sets the platform's overall exposure limit: the most it may have advanced and not yet
/// funded, over every merchant and funder (0: only the funders' own limits).
async fn set_exposure_limit(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = authorize(&state, &headers, Scope::Admin).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: ExposureLimitIn = parse(&body)?;
    let command = Command::SetExposureLimit {
        limit: dto::amount(&request.limit, "limit")?,
    };
    execute(
        &state,
        &caller,
        &headers,
        &line(&uri),
        &body,
        vec![command],
        render_exposure_limit,
    )
    .await
}
