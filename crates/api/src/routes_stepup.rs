//! Fund operations from the merchant app, behind step-up: the payment password, a one-time
//! challenge bound to the whole operation and signed by the device key (see `auth::stepup`).
//! Refunds are the first such operation.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::{post, put};
use domain::{Command, Outcome};
use serde::Deserialize;
use serde_json::json;

use ::auth::stepup::{Level, Operation};
use ::auth::{DirectoryCommand, Permissions, Secret};

use crate::dto;
use crate::error::{ApiError, ErrorCode};
use crate::routes::{ApiResult, apply_one, json, parse, read_body, read_store, unexpected};
use crate::routes_signin::{Merchant, lock, merchant, now_seconds};
use crate::{AppState, BODY_BYTES_MAX};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/me/payment-password", put(set_payment_password))
        .route("/v1/me/challenges", post(challenge))
        .route("/v1/me/totp", post(start_totp))
        .route("/v1/me/totp/confirm", post(confirm_totp))
        .route("/v1/me/refunds", post(refund))
        .route("/v1/me/payouts", post(payout))
        .route("/v1/me/bank-account", put(change_bank_account))
        .route("/v1/me/approval-policy", put(set_approval_policy))
        .route("/v1/me/approvals", axum::routing::get(list_approvals))
        .route("/v1/me/approvals/{id}/approve", post(approve))
        .route("/v1/me/approvals/{id}/reject", post(reject))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPaymentPassword {
    login_password: String,
    payment_password: String,
}

/// Sets the caller's payment password, proven by the login password.
async fn set_payment_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: SetPaymentPassword = parse(&body)?;
    let pin = Secret::new(request.payment_password);
    ::auth::secrets::check_payment_password(&pin)
        .map_err(|_| ApiError::new(ErrorCode::InvalidPaymentPassword))?;
    let login = Secret::new(request.login_password);
    let stored = caller.user.password_hash.clone();
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(ApiError::internal)?;
    let hasher = Arc::clone(&state.hasher);
    let hashed = tokio::task::spawn_blocking(move || {
        hasher
            .verify(&login, &stored)
            .then(|| hasher.hash(&pin, salt))
    })
    .await
    .map_err(ApiError::internal)?;
    let hash = hashed
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidCredentials))?
        .map_err(ApiError::internal)?;
    let command = DirectoryCommand::SetPaymentPassword {
        user_id: caller.user.id.clone(),
        hash,
    };
    apply_one(&state, Command::Directory(command)).await?;
    Ok(json(
        StatusCode::OK,
        &json!({ "payment_password_set": true }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChallengeRequest {
    action: String,
    amount: serde_json::Number,
    currency: String,
    destination: String,
}

/// The permission an action needs.
fn action_permission(action: &str) -> Result<(Permissions, &'static str), ApiError> {
    match action {
        "refund" => Ok((Permissions::REFUND, "refund")),
        "approve" => Ok((Permissions::APPROVE, "approve")),
        "payout" => Ok((Permissions::PAYOUT, "payout")),
        "bank_account" => Ok((Permissions::MANAGE_BANK_ACCOUNT, "manage_bank_account")),
        "permissions" | "stores" => Ok((Permissions::MANAGE_USERS, "manage_users")),
        _ => Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            "action is refund, payout, bank_account, approve, permissions or stores.".to_owned(),
        )),
    }
}

/// Issues a one-time challenge for exactly this operation, for the device to sign.
async fn challenge(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: ChallengeRequest = parse(&body)?;
    let (permission, name) = action_permission(&request.action)?;
    caller.require(permission, name)?;
    let amount = dto::amount(&request.amount, "amount")?;
    let operation = operation(
        &caller,
        &request.action,
        amount.minor(),
        &request.currency,
        &request.destination,
    );
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(ApiError::internal)?;
    let issued = lock(&state.signin.challenges).issue(random, operation, now_seconds(&state));
    Ok(json(
        StatusCode::CREATED,
        &json!({
            "challenge_id": issued.id,
            "sign": issued.claims(),
            "typ": ::auth::stepup::STEP_UP_TYP,
            "expires_in": ::auth::stepup::CHALLENGE_SECONDS,
        }),
    ))
}

pub(crate) fn operation(
    caller: &Merchant,
    action: &str,
    amount: i64,
    currency: &str,
    destination: &str,
) -> Operation {
    Operation {
        merchant_id: caller.user.merchant_id.clone(),
        user_id: caller.user.id.clone(),
        device_id: caller.device_id.clone(),
        action: action.to_owned(),
        amount,
        currency: currency.to_owned(),
        destination: destination.to_owned(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundRequest {
    payment_id: String,
    amount: serde_json::Number,
    challenge_id: String,
    /// The challenge's claims signed by the device key (compact JWS).
    signature: Option<String>,
    /// The fallback instead of a signature: a code from the enrolled authenticator (caps the
    /// day's refunds at 5,000.00).
    otp: Option<String>,
    payment_password: String,
}

/// Checks the step-up of `requested`: the challenge (consumed whatever happens), the device's
/// signature, then the payment password with its lockout.
pub(crate) async fn step_up(
    state: &AppState,
    caller: &Merchant,
    requested: &Operation,
    challenge_id: &str,
    proof: Proof<'_>,
    pin: Secret,
) -> Result<Level, ApiError> {
    let failed = |e: ::auth::stepup::StepUpError| {
        ApiError::with_message(ErrorCode::StepUpFailed, format!("{e}."))
    };
    let level = match proof {
        Proof::Signature(signature) => {
            let device_id = caller.device_id.clone();
            let thumbprint = state
                .engine
                .query(move |p| p.devices().device(&device_id).map(|d| d.thumbprint.clone()))
                .await?
                .ok_or_else(|| ApiError::new(ErrorCode::DeviceNotActive))?;
            lock(&state.signin.challenges)
                .redeem(
                    challenge_id,
                    requested,
                    signature,
                    &thumbprint,
                    now_seconds(state),
                )
                .map_err(failed)?;
            Level::SignedTwoFactor
        }
        Proof::Otp(code) => {
            lock(&state.signin.challenges)
                .redeem_unsigned(challenge_id, requested, now_seconds(state))
                .map_err(failed)?;
            check_otp(state, caller, code).await?;
            Level::TwoFactor
        }
    };
    if caller.user.payment_password_attempts.locked {
        return Err(ApiError::new(ErrorCode::PaymentPasswordLocked));
    }
    let stored = caller
        .user
        .payment_password_hash
        .clone()
        .ok_or_else(|| ApiError::new(ErrorCode::WrongPaymentPassword))?;
    let hasher = Arc::clone(&state.hasher);
    let correct = tokio::task::spawn_blocking(move || hasher.verify(&pin, &stored))
        .await
        .map_err(ApiError::internal)?;
    // The attempt goes through the sequencer, so the count survives a restart and two
    // parallel guesses are both counted.
    let attempt = DirectoryCommand::RecordPaymentPasswordAttempt {
        user_id: caller.user.id.clone(),
        device_id: Some(caller.device_id.clone()),
        correct,
    };
    let user = match apply_one(state, Command::Directory(attempt)).await? {
        Outcome::User(user) => user,
        other => return Err(unexpected(&other)),
    };
    if !correct {
        return Err(ApiError::new(ErrorCode::WrongPaymentPassword));
    }
    if user.payment_password_attempts.locked {
        return Err(ApiError::new(ErrorCode::PaymentPasswordLocked));
    }
    Ok(level)
}

/// The second factor of a step-up: the device's signature, or (fallback) a one-time code.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Proof<'a> {
    Signature(&'a str),
    Otp(&'a str),
}

/// Checks a TOTP code against the caller's enrollment; the attempt is recorded in the
/// sequencer (single use per step, five failures lock the factor).
async fn check_otp(state: &AppState, caller: &Merchant, code: &str) -> Result<(), ApiError> {
    let refused = |why: &str| ApiError::with_message(ErrorCode::StepUpFailed, why.to_owned());
    let nonce = caller
        .user
        .totp_nonce
        .clone()
        .ok_or_else(|| refused("No authenticator is enrolled for this user."))?;
    if caller.user.otp_attempts.locked {
        return Err(refused("One-time codes are locked after five failures."));
    }
    let seed = state.hasher.totp_seed(&caller.user.id, &nonce);
    let step = ::auth::totp::check(&seed, code, now_seconds(state), caller.user.totp_last_step);
    let attempt = DirectoryCommand::RecordOtpAttempt {
        user_id: caller.user.id.clone(),
        device_id: Some(caller.device_id.clone()),
        step,
    };
    let user = match apply_one(state, Command::Directory(attempt)).await? {
        Outcome::User(user) => user,
        other => return Err(unexpected(&other)),
    };
    // Two requests with the same code race through the sequencer: only the one that moved
    // the last used step to this step wins.
    match step {
        Some(step) if user.totp_last_step == Some(step) && !user.otp_attempts.locked => Ok(()),
        _ => Err(refused("The one-time code is wrong, used, or expired.")),
    }
}

/// Starts a TOTP enrollment: a nonce and the secret for the authenticator. Nothing is stored
/// until a first code confirms it.
async fn start_totp(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    let nonce = crate::auth::random_hex(16)?;
    let seed = state.hasher.totp_seed(&caller.user.id, &nonce);
    Ok(json(
        StatusCode::OK,
        &json!({
            "nonce": nonce,
            "secret": ::auth::totp::base32(&seed),
            "otpauth_uri": ::auth::totp::otpauth_uri("dzero", &caller.user.username, &seed),
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmTotp {
    nonce: String,
    code: String,
}

/// Confirms an enrollment with a first code from the authenticator.
async fn confirm_totp(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: ConfirmTotp = parse(&body)?;
    if request.nonce.len() != 32 || !request.nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::new(ErrorCode::InvalidRequest));
    }
    let seed = state.hasher.totp_seed(&caller.user.id, &request.nonce);
    if ::auth::totp::check(&seed, &request.code, now_seconds(&state), None).is_none() {
        return Err(ApiError::with_message(
            ErrorCode::StepUpFailed,
            "The code does not match the new authenticator.".to_owned(),
        ));
    }
    let command = DirectoryCommand::EnrollTotp {
        user_id: caller.user.id.clone(),
        nonce: request.nonce,
    };
    apply_one(&state, Command::Directory(command)).await?;
    Ok(json(StatusCode::OK, &json!({ "totp_enrolled": true })))
}

/// A refund from the app: needs `refund`, keeps to the operator's cap, and passes step-up.
async fn refund(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    caller.require(Permissions::REFUND, "refund")?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: RefundRequest = parse(&body)?;
    let amount = dto::amount(&request.amount, "amount")?;
    let id = dto::parse_payment_id(&request.payment_id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    let payment = read_store(&state, move |r| r.payment(id))
        .await?
        .filter(|p| p.merchant_id == caller.user.merchant_id)
        .filter(|p| caller.store_allowed(p.store_id.as_deref()))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    // Caps are checked here before the challenge is spent, and again in the sequencer (the
    // daily cap counts there), so a refused refund never burns a challenge needlessly.
    let cap = caller.user.refund_cap_single;
    if cap > 0 && amount.minor() > cap {
        return Err(ApiError::new(ErrorCode::RefundCapExceeded));
    }
    let requested = operation(
        &caller,
        "refund",
        amount.minor(),
        payment.currency.as_str(),
        &request.payment_id,
    );
    let proof = match (&request.signature, &request.otp) {
        (Some(signature), None) => Proof::Signature(signature),
        (None, Some(code)) => Proof::Otp(code),
        _ => {
            return Err(ApiError::with_message(
                ErrorCode::InvalidRequest,
                "Give either signature or otp.".to_owned(),
            ));
        }
    };
    let level = step_up(
        &state,
        &caller,
        &requested,
        &request.challenge_id,
        proof,
        Secret::new(request.payment_password),
    )
    .await?;
    // The challenge id is the request id: the challenge is single-use, so one challenge makes
    // at most one refund.
    let refund_request = domain::RefundRequest {
        request_id: request.challenge_id.clone(),
        payment_id: id,
        channel_id: payment.channel_id.clone(),
        channel_trade_no: payment.channel_trade_no.clone(),
        amount,
    };
    let merchant_id = caller.user.merchant_id.clone();
    let threshold = state
        .engine
        .query(move |p| p.approvals().threshold(&merchant_id))
        .await?;
    if threshold.is_some_and(|t| amount > t) {
        let approval = domain::NewApproval {
            id: request.challenge_id.replacen("chl_", "apr_", 1),
            maker: caller.user.id.clone(),
            maker_device: caller.device_id.clone(),
            maker_level: level.as_str().to_owned(),
            operation: domain::ApprovalOperation::Refund(refund_request),
        };
        return request_approval(&state, approval).await;
    }
    let command = Command::UserRefund {
        user_id: caller.user.id.clone(),
        device_id: caller.device_id.clone(),
        request: refund_request,
        level,
    };
    let refund = match apply_one(&state, command).await? {
        Outcome::Refund { refund, .. } => refund,
        other => return Err(unexpected(&other)),
    };
    let mut out = crate::dto_settlement::refund_out(&refund);
    out["verification_level"] = json!(level.as_str());
    Ok(json(StatusCode::CREATED, &out))
}

async fn merchant_currency(state: &AppState, caller: &Merchant) -> Result<String, ApiError> {
    let id = caller.user.merchant_id.clone();
    state
        .engine
        .query(move |p| p.merchant(&id).map(|m| m.currency.as_str().to_owned()))
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))
}

fn approval_out(a: &domain::Approval) -> serde_json::Value {
    let (payment_id, kind, bank_account) = match &a.operation {
        domain::ApprovalOperation::Refund(r) => {
            (Some(dto::payment_id_text(r.payment_id)), None, None)
        }
        domain::ApprovalOperation::Payout(p) => (None, Some(p.kind.as_str()), None),
        domain::ApprovalOperation::BankAccount { account, .. } => (
            None,
            None,
            Some(
                json!({ "holder": account.holder, "number": account.number, "bank": account.bank }),
            ),
        ),
    };
    json!({
        "id": a.id,
        "merchant_id": a.merchant_id,
        "action": a.operation.action(),
        "payment_id": payment_id,
        "kind": kind,
        "bank_account": bank_account,
        "amount": a.operation.amount().minor(),
        "maker": a.maker,
        "maker_level": a.maker_level,
        "status": a.status.as_str(),
        "checker": a.checker,
        "created_at": dto::format_timestamp(a.created_at),
        "decided_at": a.decided_at.map(dto::format_timestamp),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalPolicy {
    /// App refunds above this many fen need a second user's approval; `null`: none do.
    refund_above: Option<serde_json::Number>,
}

/// The master sets the approval threshold for refunds from the app.
async fn set_approval_policy(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: ApprovalPolicy = parse(&body)?;
    let threshold = request
        .refund_above
        .as_ref()
        .map(|n| dto::amount(n, "refund_above"))
        .transpose()?;
    let command = Command::SetApprovalThreshold {
        actor: caller.user.id.clone(),
        threshold,
    };
    match apply_one(&state, command).await? {
        Outcome::ApprovalThreshold(t) => Ok(json(
            StatusCode::OK,
            &json!({ "refund_above": t.map(|t| t.minor()) }),
        )),
        other => Err(unexpected(&other)),
    }
}

async fn list_approvals(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    caller.require(Permissions::VIEW, "view")?;
    let merchant_id = caller.user.merchant_id.clone();
    let approvals = state
        .engine
        .query(move |p| {
            p.approvals()
                .of_merchant(&merchant_id)
                .map(approval_out)
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(json(StatusCode::OK, &json!({ "data": approvals })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveRequest {
    challenge_id: String,
    signature: String,
    payment_password: String,
}

async fn decide(state: &AppState, caller: &Merchant, id: String, approve: bool) -> ApiResult {
    let command = Command::DecideApproval {
        id,
        checker: caller.user.id.clone(),
        checker_device: caller.device_id.clone(),
        approve,
    };
    match apply_one(state, command).await? {
        Outcome::Approval { approval, result } => {
            let mut out = approval_out(&approval);
            match result.as_deref() {
                Some(Outcome::Refund { refund, .. }) => {
                    out["refund"] = crate::dto_settlement::refund_out(refund);
                }
                Some(Outcome::Payout { payout, .. }) => {
                    out["payout"] = crate::dto_settlement::payout_out(payout);
                }
                _ => {}
            }
            Ok(json(StatusCode::OK, &out))
        }
        other => Err(unexpected(&other)),
    }
}

/// A second user approves with its own step-up (action `approve`, the approval's amount, the
/// approval id as destination); the refund runs then.
async fn approve(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: Body,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    caller.require(Permissions::APPROVE, "approve")?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: ApproveRequest = parse(&body)?;
    let (lookup, merchant_id) = (id.clone(), caller.user.merchant_id.clone());
    let approval = state
        .engine
        .query(move |p| {
            p.approvals()
                .get(&lookup)
                .filter(|a| a.merchant_id == merchant_id)
                .cloned()
        })
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    if approval.maker == caller.user.id {
        return Err(ApiError::new(ErrorCode::SelfApproval));
    }
    let currency = match approval.operation {
        domain::ApprovalOperation::BankAccount { .. } => String::new(),
        _ => merchant_currency(&state, &caller).await?,
    };
    let requested = operation(
        &caller,
        "approve",
        approval.operation.amount().minor(),
        &currency,
        &id,
    );
    step_up(
        &state,
        &caller,
        &requested,
        &request.challenge_id,
        Proof::Signature(&request.signature),
        Secret::new(request.payment_password),
    )
    .await?;
    decide(&state, &caller, id, true).await
}

async fn reject(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    caller.require(Permissions::APPROVE, "approve")?;
    decide(&state, &caller, id, false).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayoutBody {
    amount: serde_json::Number,
    /// `withdrawal` or `advance`.
    kind: String,
    challenge_id: String,
    signature: String,
    payment_password: String,
}

/// A payout from the app: needs `payout`, a step-up whose challenge names the merchant's bank
/// account as destination, and always a second user's approval, which runs it.
async fn payout(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    caller.require(Permissions::PAYOUT, "payout")?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: PayoutBody = parse(&body)?;
    let amount = dto::amount(&request.amount, "amount")?;
    let kind = crate::dto_settlement::payout_kind(&request.kind)?;
    let (id, now) = (caller.user.merchant_id.clone(), state.clock.now());
    let (currency, account) = state
        .engine
        .query(move |p| {
            p.merchant(&id).map(|m| {
                (
                    m.currency.as_str().to_owned(),
                    m.terms_at(now)
                        .bank_account
                        .as_ref()
                        .map(|a| a.number.clone()),
                )
            })
        })
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    let account = account.ok_or_else(|| ApiError::new(ErrorCode::NoBankAccount))?;
    let requested = operation(&caller, "payout", amount.minor(), &currency, &account);
    let level = step_up(
        &state,
        &caller,
        &requested,
        &request.challenge_id,
        Proof::Signature(&request.signature),
        Secret::new(request.payment_password),
    )
    .await?;
    let approval_id = request.challenge_id.replacen("chl_", "apr_", 1);
    let approval = domain::NewApproval {
        id: approval_id.clone(),
        maker: caller.user.id.clone(),
        maker_device: caller.device_id.clone(),
        maker_level: level.as_str().to_owned(),
        operation: domain::ApprovalOperation::Payout(domain::PayoutRequest {
            request_id: approval_id,
            merchant_id: caller.user.merchant_id.clone(),
            amount,
            kind,
        }),
    };
    request_approval(&state, approval).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BankAccountBody {
    holder: String,
    number: String,
    bank: String,
    challenge_id: String,
    signature: String,
    payment_password: String,
}

/// A change of the merchant's bank account: needs `manage_bank_account`, a step-up whose
/// challenge (action `bank_account`, amount 0) names the new account number, and another
/// user's approval, which puts it in force.
async fn change_bank_account(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    caller.require(Permissions::MANAGE_BANK_ACCOUNT, "manage_bank_account")?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: BankAccountBody = parse(&body)?;
    let account = domain::BankAccount {
        holder: request.holder,
        number: request.number,
        bank: request.bank,
    };
    let valid = |text: &str| !text.trim().is_empty() && text.chars().count() <= 128;
    if !valid(&account.holder)
        || !valid(&account.bank)
        || !domain::is_valid_external_id(&account.number)
    {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            "holder, number and bank are required (number: letters, digits, - _ .).".to_owned(),
        ));
    }
    let requested = operation(&caller, "bank_account", 0, "", &account.number);
    let level = step_up(
        &state,
        &caller,
        &requested,
        &request.challenge_id,
        Proof::Signature(&request.signature),
        Secret::new(request.payment_password),
    )
    .await?;
    let approval = domain::NewApproval {
        id: request.challenge_id.replacen("chl_", "apr_", 1),
        maker: caller.user.id.clone(),
        maker_device: caller.device_id.clone(),
        maker_level: level.as_str().to_owned(),
        operation: domain::ApprovalOperation::BankAccount {
            merchant_id: caller.user.merchant_id.clone(),
            account,
        },
    };
    request_approval(&state, approval).await
}

/// Files an approval request; answers 202 with the pending approval.
async fn request_approval(state: &AppState, approval: domain::NewApproval) -> ApiResult {
    match apply_one(state, Command::RequestApproval(approval)).await? {
        Outcome::Approval { approval, .. } => {
            Ok(json(StatusCode::ACCEPTED, &approval_out(&approval)))
        }
        other => Err(unexpected(&other)),
    }
}
