//! Reports under `/v1/reports/`, each as JSON or, with `?format=csv`, as CSV: a merchant's
//! daily settlement statement, funder usage, the daily margin and the floor-price exceptions.
//! (The exposure report lives with the settlement routes.)

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use domain::calendar::local_date;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Scope;
use crate::dto::format_timestamp;
use crate::dto_settlement as wire;
use crate::error::{ApiError, ErrorCode};
use crate::routes::{ApiResult, authorize, json, query};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/reports/settlement-statement",
            get(settlement_statement),
        )
        .route("/v1/reports/funders", get(funder_usage))
        .route("/v1/reports/margin", get(daily_margin))
        .route("/v1/reports/floor-exceptions", get(floor_exceptions))
        .route("/v1/reports/exposure", get(exposure))
}

/// Renders `rows` (objects with the same keys, in `columns` order) as CSV.
fn csv(columns: &[&str], rows: &[Value]) -> String {
    let cell = |v: &Value| {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        if text.contains([',', '"', '\n']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text
        }
    };
    let mut out = columns.join(",");
    out.push('\n');
    for row in rows {
        let line: Vec<String> = columns.iter().map(|c| cell(&row[*c])).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// JSON `{ "rows": […] , …extra }` or CSV of the rows.
fn respond(format: Option<&str>, columns: &[&str], rows: Vec<Value>, extra: Value) -> ApiResult {
    match format {
        None | Some("json") => {
            let mut body = extra;
            body["columns"] = json!(columns);
            body["rows"] = Value::Array(rows);
            Ok(json(StatusCode::OK, &body))
        }
        Some("csv") => Ok((
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            )],
            csv(columns, &rows),
        )
            .into_response()),
        Some(_) => Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            "format must be json or csv.",
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatementQuery {
    merchant_id: String,
    date: String,
    format: Option<String>,
}

/// A merchant's day: its lots of that business date, and the payouts made on that date.
async fn settlement_statement(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<StatementQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let q = query(q)?;
    statement(&state, q.merchant_id, &q.date, q.format.as_deref()).await
}

/// A merchant's statement of `date` (shared with the merchant app's route).
pub(crate) async fn statement(
    state: &AppState,
    merchant_id: String,
    date_text: &str,
    format: Option<&str>,
) -> ApiResult {
    let date = wire::date(date_text, "date")?;
    let merchant = merchant_id.clone();
    let rows = state
        .engine
        .query(move |p| {
            p.merchant(&merchant)?;
            let mut rows: Vec<Value> = p
                .merchant_lots(&merchant)
                .iter()
                .filter(|lot| lot.business_date == date)
                .map(|lot| {
                    json!({
                        "line": "lot",
                        "reference": format!("lot_{}", lot.id.0),
                        "channel_id": p.channels()[lot.channel as usize].id,
                        "state": lot.state.as_str(),
                        "claims": lot.claims.minor(),
                        "drawn": lot.drawn.minor(),
                        "paid": lot.paid.minor(),
                        "refunded": lot.refunded.minor(),
                        "remaining": lot.remaining().minor(),
                        "amount": Value::Null,
                        "fee": Value::Null,
                        "status": Value::Null,
                    })
                })
                .collect();
            rows.extend(
                p.merchant_payouts(&merchant)
                    .iter()
                    .rev()
                    .filter(|po| local_date(po.created_at) == date)
                    .map(|po| {
                        json!({
                            "line": po.kind.as_str(),
                            "reference": format!("po_{}", po.id.0),
                            "channel_id": Value::Null,
                            "state": Value::Null,
                            "claims": Value::Null,
                            "drawn": Value::Null,
                            "paid": Value::Null,
                            "refunded": Value::Null,
                            "remaining": Value::Null,
                            "amount": po.amount.minor(),
                            "fee": po.fee.minor(),
                            "status": po.status.as_str(),
                        })
                    }),
            );
            Some(rows)
        })
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    respond(
        format,
        &[
            "line",
            "reference",
            "channel_id",
            "state",
            "claims",
            "drawn",
            "paid",
            "refunded",
            "remaining",
            "amount",
            "fee",
            "status",
        ],
        rows,
        json!({ "merchant_id": merchant_id, "date": date_text }),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FormatQuery {
    format: Option<String>,
}

async fn funder_usage(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<FormatQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let q = query(q)?;
    let now = state.clock.now();
    let rows = state
        .engine
        .query(|p| p.funders().iter().map(wire::funder_out).collect::<Vec<_>>())
        .await?;
    respond(
        q.format.as_deref(),
        &[
            "id",
            "kind",
            "line",
            "limit",
            "used",
            "available",
            "cost_rate_ppm_per_day",
            "priority",
        ],
        rows,
        json!({ "as_of": format_timestamp(now) }),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MarginQuery {
    date: String,
    format: Option<String>,
}

/// The platform's margin for one business date, per merchant: pay-in fees less channel costs,
/// plus the fees of payouts made that day, less fees refunded that day and less what the
/// channels charged for the payouts that succeeded.
async fn daily_margin(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<MarginQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let q = query(q)?;
    let date = wire::date(&q.date, "date")?;
    let rows = state
        .engine
        .query(move |p| {
            p.merchants()
                .iter()
                .map(|m| {
                    let lots = p.merchant_lots(&m.id);
                    let day = lots.iter().filter(|l| l.business_date == date);
                    let fees: i64 = day.clone().map(|l| l.fees.minor()).sum();
                    let costs: i64 = day.map(|l| l.costs.minor()).sum();
                    let payouts: Vec<_> = p
                        .merchant_payouts(&m.id)
                        .into_iter()
                        .filter(|po| {
                            local_date(po.created_at) == date
                                && po.status != domain::PayoutStatus::Failed
                        })
                        .collect();
                    let payout_fees: i64 = payouts.iter().map(|po| po.fee.minor()).sum();
                    let payout_costs: i64 = payouts
                        .iter()
                        .filter(|po| po.status == domain::PayoutStatus::Succeeded)
                        .map(|po| po.channel_cost.minor())
                        .sum();
                    let refunded_fees: i64 = p
                        .refunds()
                        .iter()
                        .filter(|r| r.merchant_id == m.id && local_date(r.created_at) == date)
                        .map(|r| r.fee_returned.minor())
                        .sum();
                    json!({
                        "merchant_id": m.id,
                        "payin_fees": fees,
                        "channel_costs": costs,
                        "payout_fees": payout_fees,
                        "refunded_fees": refunded_fees,
                        "payout_costs": payout_costs,
                        "margin": fees - costs + payout_fees - refunded_fees - payout_costs,
                    })
                })
                .collect::<Vec<_>>()
        })
        .await?;
    let total: i64 = rows.iter().map(|r| r["margin"].as_i64().unwrap_or(0)).sum();
    respond(
        q.format.as_deref(),
        &[
            "merchant_id",
            "payin_fees",
            "channel_costs",
            "payout_fees",
            "refunded_fees",
            "payout_costs",
            "margin",
        ],
        rows,
        json!({ "date": q.date, "total": total }),
    )
}

/// Every exception to the floor price (fee ≥ cost): the merchants whose terms allow a fee
/// below a channel's cost, and the lots holding pay-ins that used the exception.
async fn floor_exceptions(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<FormatQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let q = query(q)?;
    let rows = state
        .engine
        .query(|p| {
            let mut rows = Vec::new();
            for m in p.merchants() {
                for t in m.terms.iter().filter(|t| t.allow_below_cost) {
                    rows.push(json!({
                        "kind": "terms",
                        "merchant_id": m.id,
                        "channel_id": Value::Null,
                        "date": format_timestamp(t.effective_from),
                        "payins": Value::Null,
                        "fees": t.fee.rate_ppm,
                        "costs": Value::Null,
                    }));
                }
                for lot in p
                    .merchant_lots(&m.id)
                    .iter()
                    .filter(|l| l.below_floor_payins > 0)
                {
                    rows.push(json!({
                        "kind": "lot",
                        "merchant_id": m.id,
                        "channel_id": p.channels()[lot.channel as usize].id,
                        "date": lot.business_date.to_string(),
                        "payins": lot.below_floor_payins,
                        "fees": lot.fees.minor(),
                        "costs": lot.costs.minor(),
                    }));
                }
            }
            rows
        })
        .await?;
    respond(
        q.format.as_deref(),
        &[
            "kind",
            "merchant_id",
            "channel_id",
            "date",
            "payins",
            "fees",
            "costs",
        ],
        rows,
        json!({}),
    )
}

/// Platform exposure now: advances paid out whose channel money has not arrived, one row per
/// merchant with exposure and one per funder, with the total and the overall limit.
async fn exposure(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<FormatQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let q = query(q)?;
    let now = state.clock.now();
    let (rows, total, limit) = state
        .engine
        .query(move |p| {
            let mut rows: Vec<Value> = p
                .merchants()
                .iter()
                .filter_map(|m| {
                    let b = p.merchant_balances(&m.id, now)?;
                    b.advanced.is_positive().then(|| {
                        json!({
                            "kind": "merchant",
                            "id": m.id,
                            "exposure": b.advanced.minor(),
                            "limit": m.terms_at(now).advance.limit_outstanding.minor(),
                            "unfunded_claims": b.pending.minor(),
                        })
                    })
                })
                .collect();
            rows.extend(p.funders().iter().map(|f| {
                json!({
                    "kind": "funder",
                    "id": f.id,
                    "exposure": f.used.minor(),
                    "limit": f.limit.minor(),
                    "unfunded_claims": Value::Null,
                })
            }));
            (rows, p.total_exposure().minor(), p.exposure_limit().minor())
        })
        .await?;
    respond(
        q.format.as_deref(),
        &["kind", "id", "exposure", "limit", "unfunded_claims"],
        rows,
        json!({ "as_of": format_timestamp(now), "total": total, "limit": limit }),
    )
}
