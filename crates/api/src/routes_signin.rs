//! Merchant sign-in and the merchant's own devices and sessions.
//!
//! The app signs in with the OAuth 2.0 authorization-code flow and PKCE (S256 only):
//! `POST /v1/oauth/authorize` checks the password (off the async workers, throttled, the same
//! answer for an unknown user as for a wrong password) and returns a single-use code;
//! `POST /v1/oauth/token` redeems it with the verifier and a DPoP proof signed by the device
//! key. An unknown key registers the device (pending, unless it is the master's first); an
//! active one gets a session, a DPoP-bound access token and a rotating refresh token. There is
//! no password grant and no implicit flow. Every merchant request then carries
//! `Authorization: DPoP <token>` and a fresh proof for its method and URL.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::{Command, DomainError, Outcome};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use ::auth::tokens::{Codes, Grant, LoginThrottle, TokenKey};
use ::auth::{
    DeviceCommand, DeviceOutcome, DirectoryCommand, LoginPolicy, MerchantUser, Secret, dpop,
};

use crate::dto::format_timestamp;
use crate::error::{ApiError, ErrorCode};
use crate::routes::{ApiResult, apply_one, json, parse, read_body, unexpected};
use crate::{AppState, BODY_BYTES_MAX};

/// Proof `jti`s remembered at most (each for the proof's acceptance window).
const JTI_CACHE_MAX: usize = 200_000;

/// Sign-in state that lives only in memory: outstanding codes, the throttle, seen proofs. A
/// restart forgets them, which costs a user at most one more sign-in.
pub struct SignIn {
    codes: Mutex<Codes>,
    throttle: Mutex<LoginThrottle>,
    seen_jti: Mutex<JtiCache>,
    /// The current DPoP nonce and its window, so responses do not each compute it.
    nonce: Mutex<(i64, String)>,
    /// Step-up challenges awaiting their operation.
    pub(crate) challenges: Mutex<::auth::stepup::Challenges>,
    token_key: TokenKey,
    /// Derives DPoP nonces; new at every start (see `SecretHasher::nonce_key`).
    nonce_key: TokenKey,
    /// A hash checked when the user does not exist, so both answers take as long.
    dummy_hash: String,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn").finish_non_exhaustive()
    }
}

impl SignIn {
    pub fn new(hasher: &::auth::SecretHasher) -> SignIn {
        let dummy_hash = hasher
            .hash(&Secret::new("no such user, no such password"), [7; 16])
            .unwrap_or_default();
        SignIn {
            codes: Mutex::new(Codes::default()),
            throttle: Mutex::new(LoginThrottle::default()),
            seen_jti: Mutex::new(JtiCache::default()),
            nonce: Mutex::new((i64::MIN, String::new())),
            challenges: Mutex::new(::auth::stepup::Challenges::default()),
            token_key: hasher.token_key(),
            nonce_key: {
                let mut boot = [0u8; 32];
                // Without the system's randomness the start time still varies the key.
                if getrandom::fill(&mut boot).is_err() {
                    let started = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos());
                    boot[..16].copy_from_slice(&started.to_le_bytes());
                }
                hasher.nonce_key(&boot)
            },
            dummy_hash,
        }
    }
}

#[derive(Default)]
struct JtiCache {
    seen: HashMap<String, i64>,
    order: VecDeque<(String, i64)>,
}

impl JtiCache {
    /// Records `jti`; false if it was seen within its window.
    fn insert(&mut self, jti: &str, now: i64) -> bool {
        while let Some((old, at)) = self.order.front() {
            if *at + 2 * dpop::IAT_SKEW_SECONDS_MAX >= now && self.order.len() < JTI_CACHE_MAX {
                break;
            }
            self.seen.remove(old);
            self.order.pop_front();
        }
        if self.seen.contains_key(jti) {
            return false;
        }
        self.seen.insert(jti.to_owned(), now);
        self.order.push_back((jti.to_owned(), now));
        true
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/v1/oauth/authorize", post(authorize_code))
        .route("/v1/oauth/token", post(token))
        .route("/v1/me", get(me))
        .route("/v1/me/devices", get(my_devices))
        .route("/v1/me/devices/{id}/confirm", post(confirm_device))
        .route("/v1/me/devices/{id}/revoke", post(revoke_device))
        .route("/v1/me/devices/{id}/lost", post(report_lost))
        .route("/v1/me/sessions", get(my_sessions))
        .route("/v1/me/sessions/{id}", delete(end_session))
        .route("/v1/me/login-policy", put(set_policy))
        .route("/v1/me/notifications", get(notifications))
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The URL clients reach this server at, as DPoP proofs name it: the `Host` header, and
/// `https` when a TLS-terminating proxy says so with `X-Forwarded-Proto`.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

pub(crate) fn now_seconds(state: &AppState) -> i64 {
    state.clock.now().micros() / 1_000_000
}

fn random<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(ApiError::internal)?;
    Ok(bytes)
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// RFC 8414 metadata: where to sign in, and what is accepted.
async fn metadata(headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    json(
        StatusCode::OK,
        &json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/v1/oauth/authorize"),
            "token_endpoint": format!("{base}/v1/oauth/token"),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "dpop_signing_alg_values_supported": ["ES256"],
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeRequest {
    merchant_id: String,
    username: String,
    password: String,
    client_id: String,
    redirect_uri: String,
    device_id: String,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

/// Checks the password and hands out a code.
async fn authorize_code(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> ApiResult {
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: AuthorizeRequest = parse(&body)?;
    let password = Secret::new(request.password);
    // The challenge is checked first: a request that could never redeem a code costs no hash.
    ::auth::pkce::check_challenge(
        request.code_challenge_method.as_deref(),
        request.code_challenge.as_deref(),
    )
    .map_err(|_| ApiError::new(ErrorCode::InvalidGrant))?;
    let account = format!("{}/{}", request.merchant_id, request.username);
    let client = peer.ip().to_string();
    let now = now_seconds(&state);
    if let Err(wait) = lock(&state.signin.throttle).check(&account, &client, now) {
        return Err(ApiError::with_message(
            ErrorCode::TooManyAttempts,
            format!("Too many failed sign-ins; try again in {wait} seconds."),
        ));
    }
    let (merchant_id, username) = (request.merchant_id.clone(), request.username.clone());
    let user: Option<MerchantUser> = state
        .engine
        .query(move |p| p.directory().user_by_name(&merchant_id, &username).cloned())
        .await?;
    let stored = user.as_ref().filter(|u| !u.disabled).map_or_else(
        || state.signin.dummy_hash.clone(),
        |u| u.password_hash.clone(),
    );
    let hasher = Arc::clone(&state.hasher);
    let matches = tokio::task::spawn_blocking(move || hasher.verify(&password, &stored))
        .await
        .map_err(ApiError::internal)?;
    let succeeded = matches && user.as_ref().is_some_and(|u| !u.disabled);
    if let Some(user) = &user {
        let record = Command::Directory(DirectoryCommand::RecordLogin {
            user_id: user.id.clone(),
            device_id: Some(request.device_id.clone()),
            succeeded,
        });
        apply_one(&state, record).await?;
    }
    let Some(user) = user.filter(|_| succeeded) else {
        lock(&state.signin.throttle).record_failure(&account, &client, now);
        return Err(ApiError::new(ErrorCode::InvalidCredentials));
    };
    lock(&state.signin.throttle).record_success(&account);
    let grant = Grant {
        user_id: user.id,
        device_id: request.device_id,
        client_id: request.client_id,
        redirect_uri: request.redirect_uri,
    };
    let code = lock(&state.signin.codes)
        .issue(
            random()?,
            grant,
            request.code_challenge_method.as_deref(),
            request.code_challenge.as_deref(),
            now,
        )
        .map_err(|_| ApiError::new(ErrorCode::InvalidGrant))?;
    Ok(json(
        StatusCode::OK,
        &json!({ "code": code, "expires_in": ::auth::tokens::CODE_SECONDS }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    grant_type: String,
    code: Option<String>,
    code_verifier: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    refresh_token: Option<String>,
    /// For a first sign-in on this device: labels shown in the device list.
    device_name: Option<String>,
    install_id: Option<String>,
}

/// Verifies the request's DPoP proof (with `access_token` when one is presented) and records
/// its `jti`; the key's thumbprint comes back.
fn check_proof(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    access_token: Option<&str>,
) -> Result<String, ApiError> {
    let proof = headers
        .get("dpop")
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidDpopProof))?;
    let url = format!("{}{}", base_url(headers), uri.path());
    let now = now_seconds(state);
    let expected = dpop::Expected {
        method: method.as_str(),
        url: &url,
        now_seconds: now,
        access_token,
        nonce: None,
        bound_thumbprint: None,
    };
    let verified = dpop::verify(proof, &expected, |jti| {
        lock(&state.signin.seen_jti).seen.contains_key(jti)
    })
    .map_err(|e| ApiError::with_message(ErrorCode::InvalidDpopProof, format!("{e}.")))?;
    // Server nonces (RFC 9449 section 8) bound how long a proof made in advance stays usable.
    if !verified
        .nonce
        .as_deref()
        .is_some_and(|n| state.signin.nonce_key.dpop_nonce_fresh(n, now))
    {
        return Err(ApiError::new(ErrorCode::UseDpopNonce));
    }
    if !lock(&state.signin.seen_jti).insert(&verified.jti, now) {
        return Err(ApiError::with_message(
            ErrorCode::InvalidDpopProof,
            "the DPoP proof was used before.".to_owned(),
        ));
    }
    Ok(verified.thumbprint)
}

async fn submit_device(
    state: &AppState,
    command: DeviceCommand,
) -> Result<DeviceOutcome, ApiError> {
    match apply_one(state, Command::Device(command)).await? {
        Outcome::Device(outcome) => Ok(outcome),
        other => Err(unexpected(&other)),
    }
}

/// A new session's tokens.
fn session_tokens(state: &AppState, session_id: &str, thumbprint: &str, refresh: &str) -> Response {
    let access = state
        .signin
        .token_key
        .mint(session_id, thumbprint, now_seconds(state));
    let mut response = json(
        StatusCode::OK,
        &json!({
            "access_token": access,
            "token_type": "DPoP",
            "expires_in": ::auth::tokens::ACCESS_TOKEN_SECONDS,
            "refresh_token": refresh,
            "session_id": session_id,
        }),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

fn new_refresh(session_id: &str) -> Result<String, ApiError> {
    Ok(format!(
        "dzr.{session_id}.{}",
        URL_SAFE_NO_PAD.encode(random::<32>()?)
    ))
}

/// Redeems a code or a refresh token for a session's tokens.
async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: TokenRequest = parse(&body)?;
    let thumbprint = check_proof(&state, &headers, &Method::POST, &uri, None)?;
    match request.grant_type.as_str() {
        "authorization_code" => redeem_code(&state, request, thumbprint).await,
        "refresh_token" => refresh(&state, request, thumbprint).await,
        _ => Err(ApiError::with_message(
            ErrorCode::InvalidGrant,
            "grant_type is authorization_code or refresh_token.".to_owned(),
        )),
    }
}

async fn redeem_code(state: &AppState, request: TokenRequest, thumbprint: String) -> ApiResult {
    let invalid = || ApiError::new(ErrorCode::InvalidGrant);
    let grant = lock(&state.signin.codes)
        .redeem(
            request.code.as_deref().ok_or_else(invalid)?,
            request.code_verifier.as_deref().ok_or_else(invalid)?,
            request.client_id.as_deref().ok_or_else(invalid)?,
            request.redirect_uri.as_deref().ok_or_else(invalid)?,
            now_seconds(state),
        )
        .map_err(|e| ApiError::with_message(ErrorCode::InvalidGrant, format!("{e}.")))?;
    let device_id = grant.device_id.clone();
    let known = state
        .engine
        .query(move |p| p.devices().device(&device_id).cloned())
        .await?;
    let device = match known {
        Some(device) => device,
        None => {
            let outcome = submit_device(
                state,
                DeviceCommand::Register {
                    user_id: grant.user_id.clone(),
                    device_id: grant.device_id.clone(),
                    thumbprint: thumbprint.clone(),
                    install_id: request
                        .install_id
                        .unwrap_or_else(|| grant.device_id.clone()),
                    name: request.device_name.unwrap_or_else(|| "device".to_owned()),
                },
            )
            .await?;
            match outcome {
                DeviceOutcome::Device(device) => device,
                _ => return Err(ApiError::internal("registration answered something else")),
            }
        }
    };
    if device.thumbprint != thumbprint || device.user_id != grant.user_id {
        return Err(ApiError::with_message(
            ErrorCode::DeviceNotActive,
            "This device id is bound to another key or user.".to_owned(),
        ));
    }
    if device.state == ::auth::DeviceState::Pending {
        return Err(ApiError::with_message(
            ErrorCode::DeviceNotActive,
            "The device is registered and waits for confirmation from a bound device or the master; sign in again once it is confirmed.".to_owned(),
        ));
    }
    let session_id = format!("ses_{}", URL_SAFE_NO_PAD.encode(random::<16>()?));
    let refresh = new_refresh(&session_id)?;
    let outcome = submit_device(
        state,
        DeviceCommand::StartSession {
            user_id: grant.user_id,
            device_id: grant.device_id,
            session_id: session_id.clone(),
            refresh_hash: sha256(&refresh),
        },
    )
    .await?;
    let DeviceOutcome::Session { .. } = outcome else {
        return Err(ApiError::internal("a sign-in answered something else"));
    };
    Ok(session_tokens(state, &session_id, &thumbprint, &refresh))
}

async fn refresh(state: &AppState, request: TokenRequest, thumbprint: String) -> ApiResult {
    let presented = request
        .refresh_token
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidRefreshToken))?;
    let session_id = presented
        .strip_prefix("dzr.")
        .and_then(|rest| rest.split_once('.'))
        .map(|(session, _)| session.to_owned())
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidRefreshToken))?;
    // The refresh must come from the session's own device key.
    let (id, key) = (session_id.clone(), thumbprint.clone());
    let bound = state
        .engine
        .query(move |p| {
            let session = p.devices().session(&id)?;
            let device = p.devices().device(&session.device_id)?;
            Some(device.thumbprint == key)
        })
        .await?;
    match bound {
        None => return Err(ApiError::new(ErrorCode::InvalidRefreshToken)),
        Some(false) => {
            return Err(ApiError::with_message(
                ErrorCode::InvalidDpopProof,
                "the DPoP proof is signed by another key than the session's device.".to_owned(),
            ));
        }
        Some(true) => {}
    }
    let next = new_refresh(&session_id)?;
    let outcome = submit_device(
        state,
        DeviceCommand::Rotate {
            session_id: session_id.clone(),
            presented_hash: sha256(&presented),
            new_hash: sha256(&next),
        },
    )
    .await?;
    match outcome {
        DeviceOutcome::Session { .. } => Ok(session_tokens(state, &session_id, &thumbprint, &next)),
        DeviceOutcome::RefreshReused { .. } => Err(ApiError::with_message(
            ErrorCode::SessionEnded,
            "A refresh token was used twice, so it was stolen: the session is ended. Sign in again.".to_owned(),
        )),
        _ => Err(ApiError::internal("a refresh answered something else")),
    }
}

/// The signed-in merchant user behind a request.
pub(crate) struct Merchant {
    pub(crate) user: MerchantUser,
    pub(crate) session_id: String,
    pub(crate) device_id: String,
}

impl Merchant {
    /// Whether the user may see and act on a payment of `store` (users limited to some
    /// stores see only payments taken there).
    pub(crate) fn store_allowed(&self, store: Option<&str>) -> bool {
        self.user.stores.is_empty()
            || store.is_some_and(|s| self.user.stores.iter().any(|own| own == s))
    }

    /// Refuses merchant-wide views to users limited to some stores.
    pub(crate) fn require_all_stores(&self) -> Result<(), ApiError> {
        if self.user.stores.is_empty() {
            Ok(())
        } else {
            Err(ApiError::with_message(
                ErrorCode::Forbidden,
                "This shows the whole merchant; the user is limited to some stores.",
            ))
        }
    }

    /// Refuses unless the user holds `permission` now (a revocation applies from the next
    /// request, since the user is read afresh for each).
    pub(crate) fn require(
        &self,
        permission: ::auth::Permissions,
        name: &str,
    ) -> Result<(), ApiError> {
        if self.user.effective().contains(permission) {
            Ok(())
        } else {
            Err(ApiError::with_message(
                ErrorCode::Forbidden,
                format!("This needs the {name} permission."),
            ))
        }
    }
}

/// Authenticates a merchant request: a DPoP-bound access token, a fresh proof for this method
/// and URL from the same key, and a live session on an active device of an enabled user.
pub(crate) async fn merchant(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
) -> Result<Merchant, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("DPoP "))
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidAccessToken))?
        .to_owned();
    let thumbprint = check_proof(state, headers, method, uri, Some(&token))?;
    let now = now_seconds(state);
    let session_id = state
        .signin
        .token_key
        .check(&token, &thumbprint, now)
        .map_err(|e| ApiError::with_message(ErrorCode::InvalidAccessToken, format!("{e}.")))?;
    let at = state.clock.now().micros();
    let id = session_id.clone();
    let found = state
        .engine
        .query(move |p| {
            p.devices()
                .live_session(p.directory(), &id, &thumbprint, at)
                .map(|s| s.device_id.clone())
                .and_then(|device| {
                    let session = p
                        .devices()
                        .session(&id)
                        .ok_or(::auth::DeviceError::UnknownSession)?;
                    let user = p
                        .directory()
                        .user(&session.user_id)
                        .cloned()
                        .ok_or(::auth::DeviceError::UnknownUser)?;
                    Ok((user, device))
                })
        })
        .await?;
    let (user, device_id) = found.map_err(|e| ApiError::from(DomainError::Device(e)))?;
    Ok(Merchant {
        user,
        session_id,
        device_id,
    })
}

fn device_out(d: &::auth::Device) -> Value {
    json!({
        "id": d.id,
        "user_id": d.user_id,
        "name": d.name,
        "install_id": d.install_id,
        "key_thumbprint": d.thumbprint,
        "state": d.state.as_str(),
        "registered_at": format_timestamp(ledger::Timestamp(d.registered_at_micros)),
    })
}

fn session_out(s: &::auth::Session, now_micros: i64) -> Value {
    json!({
        "id": s.id,
        "user_id": s.user_id,
        "device_id": s.device_id,
        "started_at": format_timestamp(ledger::Timestamp(s.started_at_micros)),
        "last_used_at": format_timestamp(ledger::Timestamp(s.last_used_micros)),
        "ended": s.expiry(now_micros).map(|r| r.as_str()),
    })
}

fn policy_out(policy: LoginPolicy) -> Value {
    match policy {
        LoginPolicy::AllowUpTo(n) => json!({ "mode": "allow_up_to", "devices": n }),
        LoginPolicy::Single => json!({ "mode": "single_session" }),
        LoginPolicy::RefuseNew => json!({ "mode": "refuse_new" }),
    }
}

async fn me(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    let merchant_id = caller.user.merchant_id.clone();
    let policy = state
        .engine
        .query(move |p| p.devices().policy(&merchant_id))
        .await?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "user_id": caller.user.id,
            "merchant_id": caller.user.merchant_id,
            "username": caller.user.username,
            "permissions": caller.user.effective().names(),
            "session_id": caller.session_id,
            "device_id": caller.device_id,
            "login_policy": policy_out(policy),
        }),
    ))
}

/// The caller's devices; a master (or a holder of `manage_devices`) sees the merchant's.
async fn my_devices(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    let all = caller
        .user
        .effective()
        .contains(::auth::Permissions::MANAGE_DEVICES);
    let user = caller.user.clone();
    let devices = state
        .engine
        .query(move |p| {
            let users: Vec<String> = if all {
                p.directory()
                    .merchant_users(&user.merchant_id)
                    .iter()
                    .map(|u| u.id.clone())
                    .collect()
            } else {
                vec![user.id.clone()]
            };
            users
                .iter()
                .flat_map(|u| {
                    p.devices()
                        .user_devices(u)
                        .map(device_out)
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(json(StatusCode::OK, &json!({ "data": devices })))
}

/// Whether an object's owner (a user id) belongs to the caller's merchant. Another merchant's
/// devices and sessions answer 404, so their existence does not leak.
async fn check_same_merchant(
    state: &AppState,
    caller: &Merchant,
    owner: impl FnOnce(&domain::Platform) -> Option<String> + Send + 'static,
) -> Result<(), ApiError> {
    let merchant_id = caller.user.merchant_id.clone();
    let same = state
        .engine
        .query(move |p| {
            owner(p)
                .and_then(|user| {
                    p.directory()
                        .user(&user)
                        .map(|u| u.merchant_id == merchant_id)
                })
                .unwrap_or(false)
        })
        .await?;
    if same {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::NotFound))
    }
}

/// Applies a change to a device of the caller's merchant.
async fn device_change(
    state: &AppState,
    caller: &Merchant,
    device_id: &str,
    command: DeviceCommand,
) -> ApiResult {
    let id = device_id.to_owned();
    check_same_merchant(state, caller, move |p| {
        p.devices().device(&id).map(|d| d.user_id.clone())
    })
    .await?;
    match submit_device(state, command).await? {
        DeviceOutcome::Device(device) => Ok(json(StatusCode::OK, &device_out(&device))),
        _ => Err(ApiError::internal(
            "a device change answered something else",
        )),
    }
}

async fn confirm_device(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    let command = DeviceCommand::Confirm {
        actor: caller.user.id.clone(),
        actor_device: caller.device_id.clone(),
        device_id: id.clone(),
    };
    device_change(&state, &caller, &id, command).await
}

async fn revoke_device(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    let command = DeviceCommand::Revoke {
        actor: caller.user.id.clone(),
        device_id: id.clone(),
    };
    device_change(&state, &caller, &id, command).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LostRequest {
    lost: bool,
}

async fn report_lost(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: LostRequest = parse(&body)?;
    let command = DeviceCommand::SetLost {
        actor: caller.user.id.clone(),
        device_id: id.clone(),
        lost: request.lost,
    };
    device_change(&state, &caller, &id, command).await
}

async fn my_sessions(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    let user_id = caller.user.id.clone();
    let now = state.clock.now().micros();
    let sessions = state
        .engine
        .query(move |p| {
            let devices: Vec<String> = p
                .devices()
                .user_devices(&user_id)
                .map(|d| d.id.clone())
                .collect();
            devices
                .iter()
                .flat_map(|d| {
                    p.devices()
                        .device_sessions(d)
                        .map(|s| session_out(s, now))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(json(StatusCode::OK, &json!({ "data": sessions })))
}

async fn end_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    let owner_of = id.clone();
    check_same_merchant(&state, &caller, move |p| {
        p.devices().session(&owner_of).map(|s| s.user_id.clone())
    })
    .await?;
    let command = DeviceCommand::EndSession {
        actor: caller.user.id.clone(),
        session_id: id,
    };
    match submit_device(&state, command).await? {
        DeviceOutcome::Session { session, .. } => Ok(json(
            StatusCode::OK,
            &session_out(&session, state.clock.now().micros()),
        )),
        _ => Err(ApiError::internal(
            "ending a session answered something else",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyRequest {
    mode: String,
    devices: Option<u8>,
}

async fn set_policy(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    body: Body,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    let body = read_body(body, BODY_BYTES_MAX).await?;
    let request: PolicyRequest = parse(&body)?;
    let policy = match (request.mode.as_str(), request.devices) {
        ("allow_up_to", Some(n)) => LoginPolicy::AllowUpTo(n),
        ("single_session", None) => LoginPolicy::Single,
        ("refuse_new", None) => LoginPolicy::RefuseNew,
        _ => return Err(ApiError::new(ErrorCode::InvalidLoginPolicy)),
    };
    let command = DeviceCommand::SetPolicy {
        actor: caller.user.id.clone(),
        policy,
    };
    match submit_device(&state, command).await? {
        DeviceOutcome::Policy(policy) => Ok(json(StatusCode::OK, &policy_out(policy))),
        _ => Err(ApiError::internal(
            "setting the policy answered something else",
        )),
    }
}

/// Security events that concern a user, told to all of its devices.
const NOTIFIED_ACTIONS: [&str; 9] = [
    "device_registered",
    "device_confirmed",
    "device_revoked",
    "device_lost",
    "device_found",
    "session_started",
    "refresh_token_reused",
    "payment_password_locked",
    "user_disabled",
];
/// Audit entries looked at per request at most.
const NOTIFICATION_SCAN_MAX: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotificationsQuery {
    after: Option<u64>,
}

/// The caller's security notifications, oldest first: a new device registered for it, a
/// device of its confirmed, revoked, lost or found, a sign-in elsewhere, a stolen refresh
/// token, a locked payment password. `next_after` pages on.
async fn notifications(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    q: Result<axum::extract::Query<NotificationsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let caller = merchant(&state, &headers, &method, &uri).await?;
    let after = crate::routes::query(q)?.after.unwrap_or(0);
    let user_id = caller.user.id.clone();
    let (events, next_after) = state
        .engine
        .query(move |p| {
            let mine: Vec<String> = p
                .devices()
                .user_devices(&user_id)
                .map(|d| format!("device={}", d.id))
                .collect();
            let audit = p.directory().audit();
            let start = usize::try_from(after)
                .unwrap_or(usize::MAX)
                .min(audit.len());
            let window = &audit[start..audit.len().min(start + NOTIFICATION_SCAN_MAX)];
            let events: Vec<Value> = window
                .iter()
                .filter(|e| NOTIFIED_ACTIONS.contains(&e.record.action.as_str()))
                .filter(|e| {
                    e.record.user_id == user_id
                        || e.record
                            .detail
                            .split(' ')
                            .any(|t| mine.iter().any(|d| d == t))
                })
                .map(|e| {
                    json!({
                        "seq": e.seq,
                        "at": format_timestamp(ledger::Timestamp(e.record.at_micros)),
                        "event": e.record.action,
                        "by": e.record.user_id,
                        "device_id": e.record.device_id,
                        "detail": e.record.detail,
                    })
                })
                .collect();
            (events, window.last().map(|e| e.seq))
        })
        .await?;
    Ok(json(
        StatusCode::OK,
        &json!({ "data": events, "next_after": next_after }),
    ))
}

/// Hands the current DPoP nonce to every client with every response.
pub(crate) async fn add_dpop_nonce(
    State(state): State<AppState>,
    mut response: Response,
) -> Response {
    let now = now_seconds(&state);
    let window = now.div_euclid(::auth::tokens::NONCE_SECONDS);
    let nonce = {
        let mut cached = lock(&state.signin.nonce);
        if cached.0 != window {
            *cached = (window, state.signin.nonce_key.dpop_nonce(now));
        }
        cached.1.clone()
    };
    if let Ok(value) = header::HeaderValue::from_str(&nonce) {
        response.headers_mut().insert("dpop-nonce", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_changes_every_dpop_nonce_but_keeps_access_tokens_valid() {
        let hasher = ::auth::SecretHasher::with_cost(b"pepper", 64, 1);
        let (before, after) = (SignIn::new(&hasher), SignIn::new(&hasher));
        let now = 1_790_000_000;
        let nonce = before.nonce_key.dpop_nonce(now);
        assert!(before.nonce_key.dpop_nonce_fresh(&nonce, now));
        assert!(
            !after.nonce_key.dpop_nonce_fresh(&nonce, now),
            "proofs made before a restart carry a nonce the new process refuses"
        );
        let token = before.token_key.mint("ses_1", "jkt", now);
        assert_eq!(
            after.token_key.check(&token, "jkt", now),
            Ok("ses_1".to_owned())
        );
    }
}
