//! Route handlers. Each authenticates, parses its input into domain commands or queries, and
//! renders the outcome; POSTs go through [`execute`], which applies `Idempotency-Key`.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use domain::{Command, CommandResult, NewChannel, NewMerchant, Outcome, Payment, PaymentId};
use engine::{Idempotency, SubmissionReply};
use ledger::AccountId;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use store::{PAYMENT_SCAN_ROWS_MAX, PaymentQuery};

use crate::auth::{Caller, Scope, mint_key};
use crate::dto::{self, Page};
use crate::error::{ApiError, ErrorCode};
use crate::{
    AppState, BODY_BYTES_MAX, BULK_BODY_BYTES_MAX, BULK_PAYMENTS_MAX, IDEMPOTENCY_KEY_LEN_MAX,
    PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, json_response,
};

pub(crate) type ApiResult = Result<Response, ApiError>;

/// The caller of a request, if its API key is valid and holds `scope`.
pub(crate) async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<Caller, ApiError> {
    let caller = state.auth.authenticate(headers).await?;
    caller.require(scope)?;
    Ok(caller)
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/api-keys", axum::routing::post(create_api_key))
        .route("/v1/channels", get(list_channels).post(create_channel))
        .route("/v1/channels/{id}", get(get_channel))
        .route("/v1/merchants", get(list_merchants).post(create_merchant))
        .route("/v1/merchants/{id}", get(get_merchant))
        .route("/v1/merchants/{id}/balances", get(merchant_balances))
        .route("/v1/payments", get(list_payments).post(create_payment))
        .route(
            "/v1/payments/bulk",
            axum::routing::post(create_payments_bulk),
        )
        .route("/v1/payments/{id}", get(get_payment))
        .route("/v1/ledger/accounts/{id}", get(get_account))
        .route("/v1/ledger/transfers", get(list_transfers))
        .route("/v1/ledger/trial-balance", get(trial_balance))
        .merge(crate::routes_settlement::routes())
        .merge(crate::reports::routes())
        .merge(crate::routes_users::routes())
        .merge(crate::routes_signin::routes())
        .merge(crate::routes_merchant::routes())
        .merge(crate::routes_stepup::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            crate::routes_signin::add_dpop_nonce,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed)
}

pub(crate) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_response(status.as_u16(), body),
        Err(error) => ApiError::internal(error).into_response(),
    }
}

/// Reads the body, refusing more than `limit` bytes.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::with_message(
            ErrorCode::PayloadTooLarge,
            format!("The body must be at most {limit} bytes."),
        )
    })
}

/// Parses JSON, telling malformed JSON apart from JSON of the wrong shape.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| {
        if error.is_syntax() || error.is_eof() {
            ApiError::with_message(
                ErrorCode::MalformedJson,
                format!("Malformed JSON: {error}."),
            )
        } else {
            ApiError::with_message(
                ErrorCode::InvalidRequest,
                format!("Invalid request: {error}."),
            )
        }
    })
}

pub(crate) fn query<T>(extracted: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    extracted.map(|Query(q)| q).map_err(|rejection| {
        ApiError::with_message(ErrorCode::InvalidRequest, rejection.body_text())
    })
}

/// Runs `read` on the storage reader off the async workers.
pub(crate) async fn read_store<T: Send + 'static>(
    state: &AppState,
    read: impl FnOnce(&dyn store::StoreRead) -> store::StoreResult<T> + Send + 'static,
) -> Result<T, ApiError> {
    let reader = Arc::clone(&state.reader);
    tokio::task::spawn_blocking(move || read(reader.as_ref()))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

/// Turns command results into the stored and returned response. It must be a pure function of
/// the results: it runs once on the sequencer (to store the response with an idempotency key)
/// and once in the handler.
pub(crate) type Render = fn(&[CommandResult]) -> (u16, Vec<u8>);

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .ok()
        .filter(|t| {
            !t.is_empty()
                && t.len() <= IDEMPOTENCY_KEY_LEN_MAX
                && t.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidIdempotencyKey))?;
    Ok(Some(text.to_owned()))
}

fn replayed(status: u16, body: Vec<u8>) -> Response {
    let mut response = json_response(status, body);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// Submits commands and renders their results, honouring `Idempotency-Key`: the same key with
/// the same request answers the first response again; with another request, 409.
pub(crate) async fn execute(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    request_line: &str,
    body: &[u8],
    commands: Vec<Command>,
    render: Render,
) -> ApiResult {
    let Some(key) = idempotency_key(headers)? else {
        return match state.engine.submit(commands, None).await? {
            SubmissionReply::Applied(results) => {
                let (status, body) = render(&results);
                Ok(json_response(status, body))
            }
            SubmissionReply::Replay | SubmissionReply::KeyConflict => {
                Err(ApiError::internal("keyless submission answered as keyed"))
            }
        };
    };
    let scoped = format!("{}:{key}", caller.key_id);
    let mut hasher = Sha256::new();
    hasher.update(request_line.as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    let request_hash: [u8; 32] = hasher.finalize().into();
    let stored = stored_response(state, &scoped, request_hash).await?;
    if let Some(response) = stored {
        return Ok(response);
    }
    let idempotency = Idempotency {
        key: scoped.clone(),
        request_hash,
        render: Box::new(render),
    };
    match state.engine.submit(commands, Some(idempotency)).await? {
        SubmissionReply::Applied(results) => {
            let (status, body) = render(&results);
            Ok(json_response(status, body))
        }
        SubmissionReply::Replay => stored_response(state, &scoped, request_hash)
            .await?
            .ok_or_else(|| ApiError::internal("replayed key has no stored response")),
        SubmissionReply::KeyConflict => Err(ApiError::new(ErrorCode::IdempotencyKeyReused)),
    }
}

async fn stored_response(
    state: &AppState,
    scoped: &str,
    request_hash: [u8; 32],
) -> Result<Option<Response>, ApiError> {
    let key = scoped.to_owned();
    let Some(record) = read_store(state, move |r| r.idempotency(&key)).await? else {
        return Ok(None);
    };
    if record.request_hash != request_hash {
        return Err(ApiError::new(ErrorCode::IdempotencyKeyReused));
    }
    Ok(Some(replayed(record.status, record.body)))
}

/// Applies one command without an idempotency key: its outcome, or its refusal as the
/// catalog's error.
pub(crate) async fn apply_one(state: &AppState, command: Command) -> Result<Outcome, ApiError> {
    match state.engine.submit(vec![command], None).await? {
        SubmissionReply::Applied(results) => match results.into_iter().next() {
            Some(Ok(outcome)) => Ok(outcome),
            Some(Err(error)) => Err(ApiError::from(error)),
            None => Err(ApiError::internal("a submission answered nothing")),
        },
        SubmissionReply::Replay | SubmissionReply::KeyConflict => {
            Err(ApiError::internal("keyless submission answered as keyed"))
        }
    }
}

/// The error for an outcome of another kind than the command's.
pub(crate) fn unexpected(outcome: &Outcome) -> ApiError {
    ApiError::internal(format!("a command answered {outcome:?}"))
}

pub(crate) fn single(results: &[CommandResult]) -> Result<&Outcome, ApiError> {
    match results {
        [Ok(outcome)] => Ok(outcome),
        [Err(error)] => Err(ApiError::from(error.clone())),
        _ => Err(ApiError::internal("one command, not one result")),
    }
}

/// Renders the outcome of a single command with `pick`, or its error; an outcome `pick` does
/// not expect is an internal error.
pub(crate) fn render_with(
    results: &[CommandResult],
    pick: impl FnOnce(&Outcome) -> Option<(u16, Vec<u8>)>,
) -> (u16, Vec<u8>) {
    match single(results) {
        Ok(outcome) => {
            pick(outcome).unwrap_or_else(|| ApiError::internal("unexpected outcome").to_parts())
        }
        Err(error) => error.to_parts(),
    }
}

pub(crate) fn to_parts<T: serde::Serialize>(status: StatusCode, value: &T) -> (u16, Vec<u8>) {
    match serde_json::to_vec(value) {
        Ok(body) => (status.as_u16(), body),
        Err(error) => ApiError::internal(error).to_parts(),
    }
}

pub(crate) fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

fn render_channel(results: &[CommandResult]) -> (u16, Vec<u8>) {
    render_with(results, |outcome| match outcome {
        Outcome::Channel { channel, created } => Some(to_parts(
            created_or_ok(*created),
            &dto::ChannelOut::from(channel),
        )),
        _ => None,
    })
}

fn render_merchant(results: &[CommandResult]) -> (u16, Vec<u8>) {
    render_with(results, |outcome| match outcome {
        Outcome::Merchant { merchant, created } => Some(to_parts(
            created_or_ok(*created),
            &dto::MerchantOut::from(merchant),
        )),
        _ => None,
    })
}

fn payment_outcome(result: &CommandResult) -> Result<(StatusCode, &Payment), ApiError> {
    match result {
        Ok(Outcome::PaymentRecorded(payment)) => Ok((StatusCode::CREATED, payment)),
        Ok(Outcome::PaymentExists(payment)) => Ok((StatusCode::OK, payment)),
        Ok(_) => Err(ApiError::internal("unexpected outcome")),
        Err(error) => Err(ApiError::from(error.clone())),
    }
}

fn render_payment(results: &[CommandResult]) -> (u16, Vec<u8>) {
    match results {
        [result] => match payment_outcome(result) {
            Ok((status, payment)) => to_parts(status, &dto::PaymentOut::from(payment)),
            Err(error) => error.to_parts(),
        },
        _ => ApiError::internal("one command, not one result").to_parts(),
    }
}

/// A bulk answer: one entry per submitted pay-in, in order, each with its own status.
fn render_payments(results: &[CommandResult]) -> (u16, Vec<u8>) {
    let items: Vec<serde_json::Value> = results
        .iter()
        .map(|result| match payment_outcome(result) {
            Ok((status, payment)) => serde_json::json!({
                "status": status.as_u16(),
                "payment": dto::PaymentOut::from(payment),
            }),
            Err(error) => {
                let mut value = error.body();
                value["status"] = error.code.status().as_u16().into();
                value
            }
        })
        .collect();
    to_parts(StatusCode::OK, &serde_json::json!({ "results": items }))
}

// ----- Operational endpoints. -----

async fn healthz(State(state): State<AppState>) -> Response {
    if state.engine.is_stopped() {
        ApiError::new(ErrorCode::Unavailable).into_response()
    } else {
        json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = crate::openapi::prometheus(&state.engine.metrics(), state.engine.is_stopped());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response()
}

async fn openapi() -> Response {
    json(StatusCode::OK, &crate::openapi::document())
}

async fn create_api_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    authorize(&state, &headers, Scope::Admin).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: dto::CreateApiKey = parse(&body)?;
    let scopes = request
        .scopes
        .iter()
        .map(|s| {
            Scope::parse(s).ok_or_else(|| {
                ApiError::with_message(ErrorCode::InvalidRequest, format!("Unknown scope {s:?}."))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if scopes.is_empty() {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            "At least one scope is required.",
        ));
    }
    let now = engine::Clock::now(&engine::SystemClock);
    let minted = mint_key(&scopes, now)?;
    let record = minted.record.clone();
    if !read_store(&state, move |r| r.insert_api_key(&record)).await? {
        return Err(ApiError::internal("api key id collided"));
    }
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({
            "id": minted.record.id,
            "key": minted.secret,
            "scopes": minted.record.scopes,
            "created_at": dto::format_timestamp(minted.record.created_at),
        }),
    ))
}

// ----- Channels and merchants. -----

async fn create_channel(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = authorize(&state, &headers, Scope::ChannelsWrite).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: dto::CreateChannel = parse(&body)?;
    let command = Command::CreateChannel(NewChannel {
        id: request.id,
        name: request.name,
        currency: dto::currency(&request.currency)?,
        cost: request.cost.to_domain("cost")?,
        settlement_cycle: request
            .settlement_cycle
            .as_deref()
            .map_or(Ok(domain::Cycle::T1), crate::dto_settlement::cycle)?,
        payout_cost: request
            .payout_cost
            .as_ref()
            .map_or(Ok(ledger::Amount::ZERO), |c| dto::amount(c, "payout_cost"))?,
    });
    let line = format!("{} {}", Method::POST, uri.path());
    execute(
        &state,
        &caller,
        &headers,
        &line,
        &body,
        vec![command],
        render_channel,
    )
    .await
}

async fn create_merchant(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = authorize(&state, &headers, Scope::MerchantsWrite).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: dto::CreateMerchant = parse(&body)?;
    let (id, name, currency) = (
        request.id.clone(),
        request.name.clone(),
        request.currency.clone(),
    );
    let command = Command::CreateMerchant(NewMerchant {
        id,
        name,
        currency: dto::currency(&currency)?,
        terms: request.terms().to_domain()?,
    });
    let line = format!("{} {}", Method::POST, uri.path());
    execute(
        &state,
        &caller,
        &headers,
        &line,
        &body,
        vec![command],
        render_merchant,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

pub(crate) fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(PAGE_LIMIT_DEFAULT),
        Some(n) if (1..=PAGE_LIMIT_MAX).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            format!("limit must be between 1 and {PAGE_LIMIT_MAX}."),
        )),
    }
}

/// Pages over an in-memory list ordered by creation: the cursor is the index to start at.
fn page_of<T, U>(
    items: &[T],
    cursor: Option<&str>,
    limit: u32,
    map: impl Fn(&T) -> U,
) -> Result<Page<U>, ApiError> {
    let start = match cursor {
        None => 0,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= items.len())
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidCursor))?,
    };
    let end = (start + limit as usize).min(items.len());
    Ok(Page {
        data: items[start..end].iter().map(map).collect(),
        next_cursor: (end < items.len()).then(|| end.to_string()),
    })
}

async fn list_channels(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let page = state
        .engine
        .query(move |p| {
            page_of(p.channels(), q.cursor.as_deref(), limit, |c| {
                dto::ChannelOut::from(c)
            })
        })
        .await??;
    Ok(json(StatusCode::OK, &page))
}

async fn get_channel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let channel = state
        .engine
        .query(move |p| p.channel(&id).map(dto::ChannelOut::from))
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    Ok(json(StatusCode::OK, &channel))
}

async fn list_merchants(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let page = state
        .engine
        .query(move |p| {
            page_of(p.merchants(), q.cursor.as_deref(), limit, |m| {
                dto::MerchantOut::from(m)
            })
        })
        .await??;
    Ok(json(StatusCode::OK, &page))
}

async fn get_merchant(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let merchant = state
        .engine
        .query(move |p| p.merchant(&id).map(dto::MerchantOut::from))
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    Ok(json(StatusCode::OK, &merchant))
}

async fn merchant_balances(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let now = state.clock.now();
    let balances = state
        .engine
        .query(move |p| {
            let merchant = p.merchant(&id)?;
            let balances = p.merchant_balances(&id, now)?;
            Some(dto::BalancesOut::new(merchant, &balances))
        })
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    Ok(json(StatusCode::OK, &balances))
}

// ----- Payments. -----

async fn create_payment(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = authorize(&state, &headers, Scope::PaymentsWrite).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: dto::CreatePayment = parse(&body)?;
    let command = Command::RecordPayment(request.to_domain()?);
    let line = format!("{} {}", Method::POST, uri.path());
    execute(
        &state,
        &caller,
        &headers,
        &line,
        &body,
        vec![command],
        render_payment,
    )
    .await
}

/// Many pay-ins in one request, applied in order in one batch. Each item is answered on its
/// own; an item that cannot be parsed is refused before anything is applied.
async fn create_payments_bulk(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = authorize(&state, &headers, Scope::PaymentsWrite).await?;
    let body = read_body(body, BULK_BODY_BYTES_MAX).await?;
    let request: dto::CreatePayments = parse(&body)?;
    if request.payments.is_empty() || request.payments.len() > BULK_PAYMENTS_MAX {
        return Err(ApiError::with_message(
            ErrorCode::BatchTooLarge,
            format!("payments must hold 1 to {BULK_PAYMENTS_MAX} items."),
        ));
    }
    let mut commands = Vec::with_capacity(request.payments.len());
    for (index, item) in request.payments.into_iter().enumerate() {
        let item: dto::CreatePayment = serde_json::from_value(item).map_err(|error| {
            ApiError::with_message(
                ErrorCode::InvalidRequest,
                format!("payments[{index}]: {error}."),
            )
        })?;
        let new = item.to_domain().map_err(|e| ApiError {
            message: format!("payments[{index}]: {}", e.message),
            ..e
        })?;
        commands.push(Command::RecordPayment(new));
    }
    let line = format!("{} {}", Method::POST, uri.path());
    execute(
        &state,
        &caller,
        &headers,
        &line,
        &body,
        commands,
        render_payments,
    )
    .await
}

async fn get_payment(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let id = dto::parse_payment_id(&id).ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    let payment = read_store(&state, move |r| r.payment(id))
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    let refunded = state.engine.query(move |p| p.refunded(id)).await?;
    let mut out =
        serde_json::to_value(dto::PaymentOut::from(&payment)).map_err(ApiError::internal)?;
    out["refunded"] = refunded.minor().into();
    Ok(json(StatusCode::OK, &out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PaymentsQuery {
    pub(crate) merchant_id: Option<String>,
    /// Set by the merchant app's route for users limited to some stores; never from the URL.
    #[serde(skip)]
    pub(crate) stores: Option<Vec<String>>,
    merchant_order_no: Option<String>,
    channel_id: Option<String>,
    channel_trade_no: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// The order query, newest first. A merchant's payments are walked along its payment chain; a
/// channel trade number is looked up in the sequencer's trade index. `next_cursor` names where
/// the next page starts; a page may be short (even empty) with a cursor when the walk reached
/// its scan limit.
async fn list_payments(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<PaymentsQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    payments_page(&state, query(q)?).await
}

/// A page of the order query (shared by the platform's and the merchant app's routes).
pub(crate) async fn payments_page(state: &AppState, q: PaymentsQuery) -> ApiResult {
    let limit = page_limit(q.limit)?;
    let from = q
        .from
        .as_deref()
        .map(|t| dto::timestamp(t, "from"))
        .transpose()?;
    let to =
        q.to.as_deref()
            .map(|t| dto::timestamp(t, "to"))
            .transpose()?;
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| dto::parse_payment_id(c).ok_or_else(|| ApiError::new(ErrorCode::InvalidCursor)))
        .transpose()?;
    if q.merchant_order_no.is_some() && q.merchant_id.is_none() {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            "merchant_order_no needs merchant_id.",
        ));
    }
    let empty = || Page::<dto::PaymentOut> {
        data: Vec::new(),
        next_cursor: None,
    };

    if let Some(trade) = q.channel_trade_no {
        let channel = q.channel_id.clone().ok_or_else(|| {
            ApiError::with_message(
                ErrorCode::InvalidRequest,
                "channel_trade_no needs channel_id.",
            )
        })?;
        let Some(id) = state
            .engine
            .query(move |p| p.payment_by_trade(&channel, &trade))
            .await?
        else {
            return Ok(json(StatusCode::OK, &empty()));
        };
        let payment = read_store(state, move |r| r.payment(id)).await?;
        let matches = |p: &Payment| {
            q.merchant_id.as_ref().is_none_or(|m| *m == p.merchant_id)
                && q.merchant_order_no
                    .as_ref()
                    .is_none_or(|o| *o == p.merchant_order_no)
                && from.is_none_or(|f| p.created_at >= f)
                && to.is_none_or(|t| p.created_at < t)
        };
        let data = payment
            .iter()
            .filter(|p| matches(p))
            .map(dto::PaymentOut::from)
            .collect();
        return Ok(json(
            StatusCode::OK,
            &Page {
                data,
                next_cursor: None,
            },
        ));
    }

    let (head, latest) = match q.merchant_id.clone() {
        Some(merchant) => {
            let head = state
                .engine
                .query(move |p| p.merchant_last_payment(&merchant))
                .await?;
            (head, None)
        }
        None => {
            let count = state.engine.query(|p| p.payment_count()).await?;
            ((count > 0).then_some(PaymentId(count)), Some(count))
        }
    };
    let Some(head) = head else {
        return Ok(json(StatusCode::OK, &empty()));
    };
    let start = match cursor {
        None => head,
        Some(id) if latest.is_some_and(|latest| id.0 > latest) => {
            return Err(ApiError::new(ErrorCode::InvalidCursor));
        }
        Some(id) => id,
    };
    if let (Some(merchant), Some(_)) = (&q.merchant_id, cursor) {
        // A cursor must name one of this merchant's payments (ids are not secret, but a
        // foreign id would walk another merchant's chain).
        let owner = read_store(state, move |r| r.payment(start)).await?;
        if owner.is_none_or(|p| p.merchant_id != *merchant) {
            return Err(ApiError::new(ErrorCode::InvalidCursor));
        }
    }
    let filter = PaymentQuery {
        stores: q.stores,
        start,
        merchant_id: q.merchant_id,
        merchant_order_no: q.merchant_order_no,
        channel_id: q.channel_id,
        from,
        to,
        limit,
        scan_rows_max: PAYMENT_SCAN_ROWS_MAX,
    };
    let page = read_store(state, move |r| r.payments(&filter)).await?;
    Ok(json(
        StatusCode::OK,
        &Page {
            data: page.payments.iter().map(dto::PaymentOut::from).collect(),
            next_cursor: page.next_start.map(dto::payment_id_text),
        },
    ))
}

// ----- Ledger. -----

async fn get_account(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let id: u64 = id.parse().map_err(|_| ApiError::new(ErrorCode::NotFound))?;
    let account = state
        .engine
        .query(move |p| p.ledger().account(AccountId(id)).map(dto::AccountOut::from))
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    Ok(json(StatusCode::OK, &account))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransfersQuery {
    pub(crate) account_id: Option<u64>,
    pub(crate) cursor: Option<String>,
    pub(crate) limit: Option<u32>,
}

/// An account's transaction detail, newest first. The cursor is the sequence number where the
/// next page starts.
async fn list_transfers(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<TransfersQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    transfers_page(&state, query(q)?).await
}

/// A page of an account's transaction detail (shared with the merchant app's route).
pub(crate) async fn transfers_page(state: &AppState, q: TransfersQuery) -> ApiResult {
    let limit = page_limit(q.limit)?;
    let account = AccountId(q.account_id.ok_or_else(|| {
        ApiError::with_message(ErrorCode::InvalidRequest, "account_id is required.")
    })?);
    let last_seq = state
        .engine
        .query(move |p| p.ledger().account(account).map(|a| a.last_seq))
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    let start = match q.cursor.as_deref() {
        None => last_seq,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|seq| *seq <= last_seq)
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidCursor))?,
    };
    let history = read_store(state, move |r| {
        // A cursor must name an entry of this account's history.
        if start != 0
            && r.transfer(start)?
                .and_then(|t| t.prev_seq_for(account))
                .is_none()
        {
            return Ok(None);
        }
        r.account_history(account, start, limit).map(Some)
    })
    .await?
    .ok_or_else(|| ApiError::new(ErrorCode::InvalidCursor))?;
    let next_cursor = history
        .last()
        .and_then(|t| t.prev_seq_for(account))
        .filter(|prev| *prev != 0 && history.len() == limit as usize)
        .map(|prev| prev.to_string());
    Ok(json(
        StatusCode::OK,
        &Page {
            data: history.iter().map(dto::TransferOut::from).collect(),
            next_cursor,
        },
    ))
}

async fn trial_balance(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let lines = state.engine.query(|p| p.ledger().trial_balance()).await?;
    let currencies: Vec<dto::TrialBalanceLineOut> = lines
        .iter()
        .map(|l| dto::TrialBalanceLineOut {
            currency: l.currency.to_string(),
            debits_posted: l.debits_posted,
            credits_posted: l.credits_posted,
            debits_pending: l.debits_pending,
            credits_pending: l.credits_pending,
            balanced: l.balanced(),
        })
        .collect();
    let balanced = currencies.iter().all(|l| l.balanced);
    Ok(json(
        StatusCode::OK,
        &dto::TrialBalanceOut {
            currencies,
            balanced,
        },
    ))
}
