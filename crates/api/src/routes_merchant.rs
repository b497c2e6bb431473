//! What the signed-in merchant app reads and manages: balances, the order query, payment
//! detail, and the merchant's operators. Every route authenticates a merchant session (see
//! `routes_signin`), checks the user's permission on each request, and keeps to the caller's
//! merchant: another merchant's objects answer 404.

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::{get, post, put};
use domain::{Command, Outcome};
use serde::Deserialize;
use serde_json::json;

use ::auth::{DirectoryCommand, Permissions};

use crate::dto;
use crate::error::{ApiError, ErrorCode};
use crate::routes::{
    ApiResult, PaymentsQuery, apply_one, json, parse, payments_page, query, read_body, read_store,
    unexpected,
};
use crate::routes_signin::{Merchant, merchant};
use crate::routes_users::{hash_new_password, user_out};
use crate::{AppState, BODY_BYTES_MAX};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/me/balances", get(balances))
        .route("/v1/me/payments", get(payments))
        .route("/v1/me/payments/{id}", get(payment))
        .route("/v1/me/statement", get(statement))
        .route("/v1/me/transactions", get(transactions))
        .route("/v1/me/users", get(users).post(create_operator))
        .route("/v1/me/users/{id}/permissions", put(set_permissions))
        .route("/v1/me/users/{id}/stores", put(set_stores))
        .route("/v1/me/users/{id}/disabled", post(set_disabled))
}

async fn balances(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    caller.require(Permissions::VIEW, "view")?;
    caller.require_all_stores()?;
    let now = state.clock.now();
    let id = caller.user.merchant_id.clone();
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

/// The order query over the caller's merchant only, whatever `merchant_id` says.
async fn payments(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    q: Result<Query<PaymentsQuery>, QueryRejection>,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    caller.require(Permissions::VIEW, "view")?;
    let mut q = query(q)?;
    q.merchant_id = Some(caller.user.merchant_id.clone());
    q.stores = (!caller.user.stores.is_empty()).then(|| caller.user.stores.clone());
    payments_page(&state, q).await
}

async fn payment(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    caller.require(Permissions::VIEW, "view")?;
    let id = dto::parse_payment_id(&id).ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    let payment = read_store(&state, move |r| r.payment(id))
        .await?
        .filter(|p| p.merchant_id == caller.user.merchant_id)
        .filter(|p| caller.store_allowed(p.store_id.as_deref()))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    let refunded = state.engine.query(move |p| p.refunded(id)).await?;
    let mut out =
        serde_json::to_value(dto::PaymentOut::from(&payment)).map_err(ApiError::internal)?;
    out["refunded"] = refunded.minor().into();
    Ok(json(StatusCode::OK, &out))
}

async fn users(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    caller.require(Permissions::MANAGE_USERS, "manage_users")?;
    let id = caller.user.merchant_id.clone();
    let users = state
        .engine
        .query(move |p| {
            p.directory()
                .merchant_users(&id)
                .into_iter()
                .map(user_out)
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(json(StatusCode::OK, &json!({ "data": users })))
}

fn permissions(names: &[String]) -> Result<Permissions, ApiError> {
    Permissions::parse(names.iter().map(String::as_str)).map_err(|unknown| {
        ApiError::with_message(
            ErrorCode::InvalidRequest,
            format!("Unknown permission {unknown:?}."),
        )
    })
}

async fn apply_directory(
    state: &AppState,
    command: DirectoryCommand,
    status: StatusCode,
) -> ApiResult {
    match apply_one(state, Command::Directory(command)).await? {
        Outcome::User(user) => Ok(json(status, &user_out(&user))),
        other => Err(unexpected(&other)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOperator {
    username: String,
    password: String,
    permissions: Vec<String>,
    #[serde(default)]
    refund_cap_single: i64,
    #[serde(default)]
    refund_cap_daily: i64,
    /// Limit the operator to these stores (empty: all the merchant's).
    #[serde(default)]
    stores: Vec<String>,
}

/// The master (or a holder of `manage_users`) creates an operator holding at most its own
/// permissions.
async fn create_operator(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    caller.require(Permissions::MANAGE_USERS, "manage_users")?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: CreateOperator = parse(&body)?;
    let granted = permissions(&request.permissions)?;
    let password_hash = hash_new_password(&state, request.password).await?;
    let command = DirectoryCommand::CreateOperator {
        actor: caller.user.id.clone(),
        user_id: format!("{}.{}", caller.user.merchant_id, request.username),
        username: request.username,
        password_hash,
        permissions: granted,
        refund_cap_single: request.refund_cap_single,
        refund_cap_daily: request.refund_cap_daily,
        stores: request.stores,
    };
    apply_directory(&state, command, StatusCode::CREATED).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPermissions {
    permissions: Vec<String>,
    /// Step-up: a challenge for action `permissions`, amount 0, currency "", destination the
    /// user id, signed by the device; and the caller's payment password.
    challenge_id: String,
    signature: String,
    payment_password: String,
}

async fn set_permissions(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    caller.require(Permissions::MANAGE_USERS, "manage_users")?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: SetPermissions = parse(&body)?;
    let proof = StepUp {
        challenge_id: request.challenge_id,
        signature: request.signature,
        payment_password: request.payment_password,
    };
    user_change_step_up(&state, &caller, "permissions", &id, proof).await?;
    let command = DirectoryCommand::SetPermissions {
        actor: caller.user.id.clone(),
        user_id: id,
        permissions: permissions(&request.permissions)?,
    };
    apply_directory(&state, command, StatusCode::OK).await
}

/// The step-up fields of a change to another user.
struct StepUp {
    challenge_id: String,
    signature: String,
    payment_password: String,
}

/// Step-up for a change to user `id`: a challenge for `action`, amount 0, currency "",
/// destination the user id, signed by the device, and the caller's payment password.
async fn user_change_step_up(
    state: &AppState,
    caller: &crate::routes_signin::Merchant,
    action: &str,
    id: &str,
    proof: StepUp,
) -> Result<(), ApiError> {
    let requested = crate::routes_stepup::operation(caller, action, 0, "", id);
    crate::routes_stepup::step_up(
        state,
        caller,
        &requested,
        &proof.challenge_id,
        crate::routes_stepup::Proof::Signature(&proof.signature),
        ::auth::Secret::new(proof.payment_password),
    )
    .await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetStores {
    stores: Vec<String>,
    /// Step-up: a challenge for action `stores`, amount 0, currency "", destination the user.
    challenge_id: String,
    signature: String,
    payment_password: String,
}

/// Limits an operator to some stores (empty: all), behind step-up; from its next request.
async fn set_stores(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    caller.require(Permissions::MANAGE_USERS, "manage_users")?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: SetStores = parse(&body)?;
    let proof = StepUp {
        challenge_id: request.challenge_id,
        signature: request.signature,
        payment_password: request.payment_password,
    };
    user_change_step_up(&state, &caller, "stores", &id, proof).await?;
    let command = DirectoryCommand::SetStores {
        actor: caller.user.id.clone(),
        user_id: id,
        stores: request.stores,
    };
    apply_directory(&state, command, StatusCode::OK).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetDisabled {
    disabled: bool,
}

/// Disables (or enables) an operator; a disabled operator's sessions end at once.
async fn set_disabled(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let caller: Merchant = merchant(&state, &headers, &method, &uri).await?;
    caller.require(Permissions::MANAGE_USERS, "manage_users")?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: SetDisabled = parse(&body)?;
    let command = DirectoryCommand::SetDisabled {
        actor: caller.user.id.clone(),
        user_id: id,
        disabled: request.disabled,
    };
    apply_directory(&state, command, StatusCode::OK).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatementQuery {
    date: String,
    format: Option<String>,
}

/// The caller's merchant statement of one date, JSON or CSV (`format=csv`).
async fn statement(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    q: Result<Query<StatementQuery>, QueryRejection>,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    caller.require(Permissions::VIEW, "view")?;
    caller.require_all_stores()?;
    let q = query(q)?;
    crate::reports::statement(
        &state,
        caller.user.merchant_id.clone(),
        &q.date,
        q.format.as_deref(),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransactionsQuery {
    /// `pending`, `available`, `frozen`, `advanced` or `debt`.
    account: String,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// Transaction detail of one of the caller's merchant accounts, newest first.
async fn transactions(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    q: Result<Query<TransactionsQuery>, QueryRejection>,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    caller.require(Permissions::VIEW, "view")?;
    caller.require_all_stores()?;
    let q = query(q)?;
    let id = caller.user.merchant_id.clone();
    let accounts = state
        .engine
        .query(move |p| p.merchant(&id).map(|m| m.accounts))
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    let account = match q.account.as_str() {
        "pending" => accounts.pending,
        "available" => accounts.available,
        "frozen" => accounts.frozen,
        "advanced" => accounts.advanced,
        "debt" => accounts.debt,
        _ => {
            return Err(ApiError::with_message(
                ErrorCode::InvalidRequest,
                "account is pending, available, frozen, advanced or debt.",
            ));
        }
    };
    let page = crate::routes::TransfersQuery {
        account_id: Some(account.0),
        cursor: q.cursor,
        limit: q.limit,
    };
    crate::routes::transfers_page(&state, page).await
}
