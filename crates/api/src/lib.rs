//! The HTTP API of dzero: JSON over HTTP/1.1 under `/v1`, platform API keys with scopes,
//! `Idempotency-Key` on every POST, one error catalog, an OpenAPI document, `/healthz` and
//! `/metrics`.
//!
//! The server has one entry point, [`serve`], which takes a bound listener, so tests start the
//! real thing on `127.0.0.1:0`. Writes go through the engine (the sequencer); reads that do not
//! need it (payment search, account history, stored idempotent responses) go straight to
//! storage.
//!
//! Architecture invariant: this is the only crate that knows HTTP and JSON. Handlers decide
//! *who* may ask (auth) and translate; the domain decides *whether the money allows it*.

// The OpenAPI document is one large `json!` literal.
#![recursion_limit = "512"]

pub mod auth;
mod dto;
mod dto_settlement;
pub mod error;
pub mod openapi;
pub(crate) mod reports;
mod routes;
mod routes_merchant;
mod routes_settlement;
pub mod routes_signin;
mod routes_stepup;
mod routes_users;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use engine::Engine;
use store::StoreRead;

pub use auth::{Authenticator, Scope, ensure_admin_key, mint_key};
pub use error::{ApiError, ErrorCode};

/// Largest request body for single-item requests, in bytes.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Largest request body for bulk requests, in bytes.
pub const BULK_BODY_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most pay-ins accepted in one bulk request.
pub const BULK_PAYMENTS_MAX: usize = 10_000;
/// Most items on one page of a list.
pub const PAGE_LIMIT_MAX: u32 = 500;
/// Items on a page when the client does not say.
pub const PAGE_LIMIT_DEFAULT: u32 = 50;
/// Longest accepted `Idempotency-Key`.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub reader: Arc<dyn StoreRead>,
    pub auth: Authenticator,
    /// The clock the engine uses.
    pub clock: Arc<dyn engine::Clock>,
    /// Set when the server runs with `--sandbox`: the clock moves only when told.
    pub test_clock: Option<Arc<engine::TestClock>>,
    /// Hashes merchant users' passwords with the server's pepper.
    pub hasher: Arc<::auth::SecretHasher>,
    /// Merchant sign-in: codes, throttle, seen DPoP proofs, the access-token key.
    pub signin: Arc<routes_signin::SignIn>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(
        engine: Engine,
        reader: Arc<dyn StoreRead>,
        clock: Arc<dyn engine::Clock>,
        test_clock: Option<Arc<engine::TestClock>>,
        hasher: Arc<::auth::SecretHasher>,
    ) -> AppState {
        AppState {
            auth: Authenticator::new(Arc::clone(&reader)),
            engine,
            reader,
            clock,
            test_clock,
            signin: Arc::new(routes_signin::SignIn::new(&hasher)),
            hasher,
        }
    }
}

/// The full router, with every route of the API.
pub fn router(state: AppState) -> Router {
    routes::router(state)
}

/// Serves the API on `listener` until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Peer addresses feed the sign-in throttle.
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A JSON response from an already serialized body.
pub(crate) fn json_response(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
