//! Merchant users, as the platform manages them: opening a merchant's master account, listing
//! a merchant's users, and reading the audit chain. Passwords are hashed (argon2id, peppered)
//! off the async workers before anything reaches the sequencer; they are never stored or
//! answered in clear. (Merchant sign-in, sessions, devices and step-up come next.)

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::get;
use domain::{Command, CommandResult, Outcome};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Scope;
use crate::dto::format_timestamp;
use crate::error::{ApiError, ErrorCode};
use crate::routes::{
    ApiResult, authorize, execute, json, parse, query, read_body, read_store, render_with, to_parts,
};
use crate::{AppState, BODY_BYTES_MAX};

/// Audit entries per page at most.
const AUDIT_PAGE_MAX: u32 = 1_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/merchants/{id}/users",
            get(list_users).post(create_master),
        )
        .route("/v1/audit", get(audit))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn user_out(u: &::auth::MerchantUser) -> Value {
    json!({
        "id": u.id,
        "merchant_id": u.merchant_id,
        "username": u.username,
        "role": match u.role { ::auth::Role::Master => "master", ::auth::Role::Operator => "operator" },
        "permissions": u.permissions.names(),
        "refund_cap_single": u.refund_cap_single,
        "refund_cap_daily": u.refund_cap_daily,
        "stores": u.stores,
        "disabled": u.disabled,
        "created_by": u.created_by,
        "created_at": format_timestamp(ledger::Timestamp(u.created_at_micros)),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateMaster {
    user_id: Option<String>,
    username: String,
    password: String,
}

fn render_user(results: &[CommandResult]) -> (u16, Vec<u8>) {
    render_with(results, |outcome| match outcome {
        Outcome::User(user) => Some(to_parts(StatusCode::CREATED, &user_out(user))),
        _ => None,
    })
}

/// Checks a new login password's policy and hashes it off the async workers.
pub(crate) async fn hash_new_password(
    state: &AppState,
    password: String,
) -> Result<String, ApiError> {
    let password = ::auth::Secret::new(password);
    ::auth::secrets::check_password(&password)
        .map_err(|_| ApiError::new(ErrorCode::InvalidPassword))?;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(ApiError::internal)?;
    let hasher = Arc::clone(&state.hasher);
    tokio::task::spawn_blocking(move || hasher.hash(&password, salt))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// Opens a merchant's master account (platform admin).
async fn create_master(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Path(merchant_id): Path<String>,
    body: Body,
) -> ApiResult {
    let caller = authorize(&state, &headers, Scope::Admin).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: CreateMaster = parse(&body)?;
    let password_hash = hash_new_password(&state, request.password).await?;
    let user_id = request
        .user_id
        .unwrap_or_else(|| format!("{merchant_id}.{}", request.username));
    let command = Command::Directory(::auth::DirectoryCommand::CreateMaster {
        merchant_id,
        user_id,
        username: request.username,
        password_hash,
    });
    // The idempotency digest covers the body, which holds the password: the stored digest is
    // a hash, and the body itself is never stored.
    let line = format!("POST {}", uri.path());
    execute(
        &state,
        &caller,
        &headers,
        &line,
        &body,
        vec![command],
        render_user,
    )
    .await
}

async fn list_users(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(merchant_id): Path<String>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Read).await?;
    let users = state
        .engine
        .query(move |p| {
            p.merchant(&merchant_id)?;
            Some(
                p.directory()
                    .merchant_users(&merchant_id)
                    .into_iter()
                    .map(user_out)
                    .collect::<Vec<_>>(),
            )
        })
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    Ok(json(StatusCode::OK, &json!({ "data": users })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    after: Option<u64>,
    limit: Option<u32>,
}

/// The audit chain, oldest first, with each entry's hashes so anyone can check the links.
async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Scope::Admin).await?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100).clamp(1, AUDIT_PAGE_MAX);
    let after = q.after.unwrap_or(0);
    let entries = read_store(&state, move |r| r.audit(after, limit)).await?;
    let data: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "seq": e.seq,
                "at": format_timestamp(ledger::Timestamp(e.record.at_micros)),
                "merchant_id": e.record.merchant_id,
                "user_id": e.record.user_id,
                "device_id": e.record.device_id,
                "action": e.record.action,
                "factors": e.record.factors,
                "approver": e.record.approver,
                "detail": e.record.detail,
                "prev_hash": hex(&e.prev_hash),
                "hash": hex(&e.hash),
            })
        })
        .collect();
    Ok(json(StatusCode::OK, &json!({ "data": data })))
}
