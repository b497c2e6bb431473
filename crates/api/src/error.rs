//! The one error catalog of the API: every refusal has a stable machine code, an HTTP status and
//! a human message. Internals (database messages, panics) never reach a response.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use domain::{DomainError, FeeScheduleError};
use engine::EngineError;

/// Every error code the API can answer with. The `code()` strings are a public contract: never
/// rename one, only add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    MalformedJson,
    InvalidRequest,
    PayloadTooLarge,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    InvalidIdempotencyKey,
    IdempotencyKeyReused,
    InvalidAmount,
    AmountMustBePositive,
    AmountTooLarge,
    InvalidCurrency,
    InvalidId,
    InvalidName,
    InvalidFeeSchedule,
    InvalidTimestamp,
    InvalidCursor,
    UnknownChannel,
    UnknownMerchant,
    CurrencyMismatch,
    FeeNotBelowAmount,
    TradeNoConflict,
    ChannelConflict,
    MerchantConflict,
    BatchTooLarge,
    LedgerRefused,
    Overloaded,
    Unavailable,
    Internal,
    InvalidTerms,
    FunderConflict,
    UnknownCalendar,
    CalendarYearMissing,
    InvalidCalendar,
    FeeBelowFloor,
    PayoutRequestConflict,
    SettlementConflict,
    NoBankAccount,
    InsufficientFunds,
    AdvanceNotEnabled,
    AdvanceLimitExceeded,
    NoFunderRoom,
    AdvanceFeeBelowCostOfFunds,
    NothingToFund,
    PayoutStateConflict,
    ClockBackwards,
    RefundExceedsPayment,
    UnknownPayment,
    MerchantFrozen,
    UserConflict,
    UnknownUser,
    PermissionNotHeld,
    InvalidPassword,
    DeviceConflict,
    DeviceNotActive,
    DeviceLimit,
    InvalidLoginPolicy,
    SessionLimit,
    SessionEnded,
    InvalidRefreshToken,
    InvalidCredentials,
    TooManyAttempts,
    InvalidGrant,
    InvalidDpopProof,
    InvalidAccessToken,
    StepUpFailed,
    WrongPaymentPassword,
    PaymentPasswordLocked,
    InvalidPaymentPassword,
    RefundCapExceeded,
    ApprovalConflict,
    SelfApproval,
    LevelCapExceeded,
    UseDpopNonce,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 75] = [
        ErrorCode::MalformedJson,
        ErrorCode::InvalidRequest,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::InvalidIdempotencyKey,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::InvalidAmount,
        ErrorCode::AmountMustBePositive,
        ErrorCode::AmountTooLarge,
        ErrorCode::InvalidCurrency,
        ErrorCode::InvalidId,
        ErrorCode::InvalidName,
        ErrorCode::InvalidFeeSchedule,
        ErrorCode::InvalidTimestamp,
        ErrorCode::InvalidCursor,
        ErrorCode::UnknownChannel,
        ErrorCode::UnknownMerchant,
        ErrorCode::CurrencyMismatch,
        ErrorCode::FeeNotBelowAmount,
        ErrorCode::TradeNoConflict,
        ErrorCode::ChannelConflict,
        ErrorCode::MerchantConflict,
        ErrorCode::BatchTooLarge,
        ErrorCode::LedgerRefused,
        ErrorCode::Overloaded,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::InvalidTerms,
        ErrorCode::FunderConflict,
        ErrorCode::UnknownCalendar,
        ErrorCode::CalendarYearMissing,
        ErrorCode::InvalidCalendar,
        ErrorCode::FeeBelowFloor,
        ErrorCode::PayoutRequestConflict,
        ErrorCode::SettlementConflict,
        ErrorCode::NoBankAccount,
        ErrorCode::InsufficientFunds,
        ErrorCode::AdvanceNotEnabled,
        ErrorCode::AdvanceLimitExceeded,
        ErrorCode::NoFunderRoom,
        ErrorCode::AdvanceFeeBelowCostOfFunds,
        ErrorCode::NothingToFund,
        ErrorCode::PayoutStateConflict,
        ErrorCode::ClockBackwards,
        ErrorCode::RefundExceedsPayment,
        ErrorCode::UnknownPayment,
        ErrorCode::MerchantFrozen,
        ErrorCode::UserConflict,
        ErrorCode::UnknownUser,
        ErrorCode::PermissionNotHeld,
        ErrorCode::InvalidPassword,
        ErrorCode::DeviceConflict,
        ErrorCode::DeviceNotActive,
        ErrorCode::DeviceLimit,
        ErrorCode::InvalidLoginPolicy,
        ErrorCode::SessionLimit,
        ErrorCode::SessionEnded,
        ErrorCode::InvalidRefreshToken,
        ErrorCode::InvalidCredentials,
        ErrorCode::TooManyAttempts,
        ErrorCode::InvalidGrant,
        ErrorCode::InvalidDpopProof,
        ErrorCode::InvalidAccessToken,
        ErrorCode::StepUpFailed,
        ErrorCode::WrongPaymentPassword,
        ErrorCode::PaymentPasswordLocked,
        ErrorCode::InvalidPaymentPassword,
        ErrorCode::RefundCapExceeded,
        ErrorCode::ApprovalConflict,
        ErrorCode::SelfApproval,
        ErrorCode::LevelCapExceeded,
        ErrorCode::UseDpopNonce,
    ];

    /// (machine code, HTTP status, default message)
    pub fn describe(self) -> (&'static str, StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            ErrorCode::UserConflict => (
                "user_conflict",
                S::CONFLICT,
                "A user with this id or username exists, or the merchant already has a master account.",
            ),
            ErrorCode::UnknownUser => (
                "unknown_user",
                S::UNPROCESSABLE_ENTITY,
                "No such merchant user.",
            ),
            ErrorCode::PermissionNotHeld => (
                "permission_not_held",
                S::FORBIDDEN,
                "A user may grant or remove only permissions it holds itself.",
            ),
            ErrorCode::DeviceConflict => (
                "device_conflict",
                S::CONFLICT,
                "A device with this id, a live device with this key, or a session with this id exists.",
            ),
            ErrorCode::DeviceNotActive => (
                "device_not_active",
                S::CONFLICT,
                "The device is pending confirmation, lost, revoked or not the user's.",
            ),
            ErrorCode::DeviceLimit => (
                "device_limit",
                S::UNPROCESSABLE_ENTITY,
                "A user has at most five devices that are not revoked.",
            ),
            ErrorCode::InvalidLoginPolicy => (
                "invalid_login_policy",
                S::UNPROCESSABLE_ENTITY,
                "A login policy allows from one to five signed-in devices.",
            ),
            ErrorCode::SessionLimit => (
                "session_limit",
                S::CONFLICT,
                "The merchant's login policy refuses another signed-in device now.",
            ),
            ErrorCode::SessionEnded => (
                "session_ended",
                S::UNAUTHORIZED,
                "The session has ended; sign in again.",
            ),
            ErrorCode::InvalidRefreshToken => (
                "invalid_refresh_token",
                S::UNAUTHORIZED,
                "The refresh token is not this session's current one.",
            ),
            ErrorCode::InvalidCredentials => (
                "invalid_credentials",
                S::UNAUTHORIZED,
                "The merchant, username or password is wrong.",
            ),
            ErrorCode::TooManyAttempts => (
                "too_many_attempts",
                S::TOO_MANY_REQUESTS,
                "Too many failed sign-ins for this account or from this client; try again later.",
            ),
            ErrorCode::InvalidGrant => (
                "invalid_grant",
                S::BAD_REQUEST,
                "The authorization code is unknown, used, expired, for another client or redirect URI, or its verifier does not match; or the PKCE challenge is not S256.",
            ),
            ErrorCode::InvalidDpopProof => (
                "invalid_dpop_proof",
                S::UNAUTHORIZED,
                "The DPoP proof is missing, malformed, not ES256, for another method or URL, stale, replayed, or signed by another key.",
            ),
            ErrorCode::InvalidAccessToken => (
                "invalid_access_token",
                S::UNAUTHORIZED,
                "The access token is missing, malformed, expired, or bound to another device key.",
            ),
            ErrorCode::StepUpFailed => (
                "step_up_failed",
                S::FORBIDDEN,
                "The step-up challenge is unknown, used or expired, was issued for another operation, or its signature is not the device's.",
            ),
            ErrorCode::WrongPaymentPassword => (
                "wrong_payment_password",
                S::FORBIDDEN,
                "The payment password is wrong or not set.",
            ),
            ErrorCode::PaymentPasswordLocked => (
                "payment_password_locked",
                S::FORBIDDEN,
                "The payment password is locked after five failures.",
            ),
            ErrorCode::InvalidPaymentPassword => (
                "invalid_payment_password",
                S::UNPROCESSABLE_ENTITY,
                "A payment password has at least six digits and is not a common one.",
            ),
            ErrorCode::RefundCapExceeded => (
                "refund_cap_exceeded",
                S::FORBIDDEN,
                "The refund is above this user's single or daily refund cap.",
            ),
            ErrorCode::ApprovalConflict => (
                "approval_conflict",
                S::CONFLICT,
                "The approval exists already or was already decided.",
            ),
            ErrorCode::SelfApproval => (
                "self_approval",
                S::FORBIDDEN,
                "An operation must be approved by another user than the one who asked for it.",
            ),
            ErrorCode::LevelCapExceeded => (
                "level_cap_exceeded",
                S::FORBIDDEN,
                "Without the device's signature, refunds are capped at 5,000.00 a day (two factors) or 1,000.00 (one); sign with the device.",
            ),
            ErrorCode::UseDpopNonce => (
                "use_dpop_nonce",
                S::UNAUTHORIZED,
                "The DPoP proof must carry the server's current nonce, given in the DPoP-Nonce header of every response; sign a new proof with it.",
            ),
            ErrorCode::InvalidPassword => (
                "invalid_password",
                S::UNPROCESSABLE_ENTITY,
                "Passwords have 10 to 128 characters.",
            ),
            ErrorCode::RefundExceedsPayment => (
                "refund_exceeds_payment",
                S::UNPROCESSABLE_ENTITY,
                "Refunds and reversals of a payment may not exceed its amount.",
            ),
            ErrorCode::UnknownPayment => (
                "unknown_payment",
                S::UNPROCESSABLE_ENTITY,
                "No payment has this id.",
            ),
            ErrorCode::MerchantFrozen => (
                "merchant_frozen",
                S::UNPROCESSABLE_ENTITY,
                "Payouts of this merchant are stopped by an operator.",
            ),
            ErrorCode::InvalidTerms => (
                "invalid_terms",
                S::UNPROCESSABLE_ENTITY,
                "The merchant terms are not valid.",
            ),
            ErrorCode::FunderConflict => (
                "funder_conflict",
                S::CONFLICT,
                "A funder with this id exists with different content.",
            ),
            ErrorCode::UnknownCalendar => (
                "unknown_calendar",
                S::UNPROCESSABLE_ENTITY,
                "No calendar has this id.",
            ),
            ErrorCode::CalendarYearMissing => (
                "calendar_year_missing",
                S::UNPROCESSABLE_ENTITY,
                "The business calendar has no data for the year needed.",
            ),
            ErrorCode::InvalidCalendar => (
                "invalid_calendar",
                S::UNPROCESSABLE_ENTITY,
                "The calendar data is not valid.",
            ),
            ErrorCode::FeeBelowFloor => (
                "fee_below_floor",
                S::UNPROCESSABLE_ENTITY,
                "The merchant fee is below the channel's cost and the merchant's terms do not allow it.",
            ),
            ErrorCode::PayoutRequestConflict => (
                "payout_request_conflict",
                S::CONFLICT,
                "This payout request id was used with different content.",
            ),
            ErrorCode::SettlementConflict => (
                "settlement_conflict",
                S::CONFLICT,
                "This bank reference was reported with different content.",
            ),
            ErrorCode::NoBankAccount => (
                "no_bank_account",
                S::UNPROCESSABLE_ENTITY,
                "The merchant has no bank account for payouts.",
            ),
            ErrorCode::InsufficientFunds => (
                "insufficient_funds",
                S::UNPROCESSABLE_ENTITY,
                "The merchant's claims do not cover the amount plus every fee.",
            ),
            ErrorCode::AdvanceNotEnabled => (
                "advance_not_enabled",
                S::UNPROCESSABLE_ENTITY,
                "The merchant's terms do not allow advances.",
            ),
            ErrorCode::AdvanceLimitExceeded => (
                "advance_limit_exceeded",
                S::UNPROCESSABLE_ENTITY,
                "An advance limit would be exceeded.",
            ),
            ErrorCode::NoFunderRoom => (
                "no_funder_room",
                S::UNPROCESSABLE_ENTITY,
                "No funder has room for this advance.",
            ),
            ErrorCode::AdvanceFeeBelowCostOfFunds => (
                "advance_fee_below_cost_of_funds",
                S::UNPROCESSABLE_ENTITY,
                "The advance fee is below the cost of the funder's money.",
            ),
            ErrorCode::NothingToFund => (
                "nothing_to_fund",
                S::UNPROCESSABLE_ENTITY,
                "No sealed, unfunded lots of this channel and business date.",
            ),
            ErrorCode::PayoutStateConflict => (
                "payout_state_conflict",
                S::CONFLICT,
                "The payout's status does not allow this.",
            ),
            ErrorCode::ClockBackwards => (
                "clock_backwards",
                S::CONFLICT,
                "The test clock only moves forward.",
            ),
            ErrorCode::MalformedJson => (
                "malformed_json",
                S::BAD_REQUEST,
                "The body is not valid JSON.",
            ),
            ErrorCode::InvalidRequest => (
                "invalid_request",
                S::BAD_REQUEST,
                "The request does not match the expected shape.",
            ),
            ErrorCode::PayloadTooLarge => (
                "payload_too_large",
                S::PAYLOAD_TOO_LARGE,
                "The body is larger than allowed.",
            ),
            ErrorCode::Unauthorized => (
                "unauthorized",
                S::UNAUTHORIZED,
                "A valid API key is required: Authorization: Bearer <key>.",
            ),
            ErrorCode::Forbidden => (
                "forbidden",
                S::FORBIDDEN,
                "The API key lacks the scope this operation needs.",
            ),
            ErrorCode::NotFound => ("not_found", S::NOT_FOUND, "No such resource."),
            ErrorCode::MethodNotAllowed => (
                "method_not_allowed",
                S::METHOD_NOT_ALLOWED,
                "This method is not allowed on this path.",
            ),
            ErrorCode::InvalidIdempotencyKey => (
                "invalid_idempotency_key",
                S::BAD_REQUEST,
                "Idempotency-Key must be 1 to 255 visible ASCII characters.",
            ),
            ErrorCode::IdempotencyKeyReused => (
                "idempotency_key_reused",
                S::CONFLICT,
                "This Idempotency-Key was used with a different request.",
            ),
            ErrorCode::InvalidAmount => (
                "invalid_amount",
                S::UNPROCESSABLE_ENTITY,
                "Amounts are integers in minor units that fit in 64 bits.",
            ),
            ErrorCode::AmountMustBePositive => (
                "amount_must_be_positive",
                S::UNPROCESSABLE_ENTITY,
                "The amount must be greater than zero.",
            ),
            ErrorCode::AmountTooLarge => (
                "amount_too_large",
                S::UNPROCESSABLE_ENTITY,
                "The amount is above the largest allowed.",
            ),
            ErrorCode::InvalidCurrency => (
                "invalid_currency",
                S::UNPROCESSABLE_ENTITY,
                "Currencies are three upper-case letters (ISO 4217).",
            ),
            ErrorCode::InvalidId => (
                "invalid_id",
                S::UNPROCESSABLE_ENTITY,
                "Identifiers are 1 to 64 characters of letters, digits, '_', '-', '.', ':'.",
            ),
            ErrorCode::InvalidName => (
                "invalid_name",
                S::UNPROCESSABLE_ENTITY,
                "Names are 1 to 128 characters without control characters.",
            ),
            ErrorCode::InvalidFeeSchedule => (
                "invalid_fee_schedule",
                S::UNPROCESSABLE_ENTITY,
                "The fee schedule is not valid.",
            ),
            ErrorCode::InvalidTimestamp => (
                "invalid_timestamp",
                S::UNPROCESSABLE_ENTITY,
                "Timestamps are RFC 3339, for example 2026-01-31T08:00:00+08:00.",
            ),
            ErrorCode::InvalidCursor => (
                "invalid_cursor",
                S::BAD_REQUEST,
                "The cursor is not one this API returned.",
            ),
            ErrorCode::UnknownChannel => (
                "unknown_channel",
                S::UNPROCESSABLE_ENTITY,
                "No channel has this id.",
            ),
            ErrorCode::UnknownMerchant => (
                "unknown_merchant",
                S::UNPROCESSABLE_ENTITY,
                "No merchant has this id.",
            ),
            ErrorCode::CurrencyMismatch => (
                "currency_mismatch",
                S::UNPROCESSABLE_ENTITY,
                "The currency differs from the channel's or the merchant's.",
            ),
            ErrorCode::FeeNotBelowAmount => (
                "fee_not_below_amount",
                S::UNPROCESSABLE_ENTITY,
                "The merchant fee would take the whole amount.",
            ),
            ErrorCode::TradeNoConflict => (
                "trade_no_conflict",
                S::CONFLICT,
                "This channel trade number was reported before with different content.",
            ),
            ErrorCode::ChannelConflict => (
                "channel_conflict",
                S::CONFLICT,
                "A channel with this id exists with different content.",
            ),
            ErrorCode::MerchantConflict => (
                "merchant_conflict",
                S::CONFLICT,
                "A merchant with this id exists with different content.",
            ),
            ErrorCode::BatchTooLarge => (
                "batch_too_large",
                S::UNPROCESSABLE_ENTITY,
                "Too many items in one request.",
            ),
            ErrorCode::LedgerRefused => (
                "ledger_refused",
                S::UNPROCESSABLE_ENTITY,
                "The ledger refused the postings.",
            ),
            ErrorCode::Overloaded => (
                "overloaded",
                S::SERVICE_UNAVAILABLE,
                "The server is at capacity; retry with the same Idempotency-Key.",
            ),
            ErrorCode::Unavailable => (
                "unavailable",
                S::SERVICE_UNAVAILABLE,
                "The server has stopped accepting work.",
            ),
            ErrorCode::Internal => (
                "internal",
                S::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side.",
            ),
        }
    }

    pub fn code(self) -> &'static str {
        self.describe().0
    }

    pub fn status(self) -> StatusCode {
        self.describe().1
    }
}

/// An error answer: a catalog code and a message specific to this occurrence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode) -> ApiError {
        ApiError {
            code,
            message: code.describe().2.to_owned(),
        }
    }

    pub fn with_message(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// For failures that must not leak: logs the detail, answers `internal`.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(%detail, "internal error");
        ApiError::new(ErrorCode::Internal)
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code.code(), "message": self.message } })
    }

    /// Status and serialized body, as stored for idempotent replays.
    pub fn to_parts(&self) -> (u16, Vec<u8>) {
        (
            self.code.status().as_u16(),
            self.body().to_string().into_bytes(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.to_parts();
        crate::json_response(status, body)
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> ApiError {
        let code = match error {
            DomainError::InvalidId => ErrorCode::InvalidId,
            DomainError::InvalidName => ErrorCode::InvalidName,
            DomainError::InvalidFeeSchedule(detail) => {
                let message = match detail {
                    FeeScheduleError::RateAboveOneHundredPercent => {
                        "rate_ppm must be at most 1000000 (100%)."
                    }
                    FeeScheduleError::NegativeCap => "min and max must not be negative.",
                    FeeScheduleError::MinAboveMax => "min must not exceed max.",
                };
                return ApiError::with_message(ErrorCode::InvalidFeeSchedule, message);
            }
            DomainError::InvalidTerms(detail) => {
                return ApiError::with_message(
                    ErrorCode::InvalidTerms,
                    format!("Invalid terms: {detail:?}."),
                );
            }
            DomainError::ChannelExistsWithDifferentContent => ErrorCode::ChannelConflict,
            DomainError::MerchantExistsWithDifferentContent => ErrorCode::MerchantConflict,
            DomainError::FunderExistsWithDifferentContent => ErrorCode::FunderConflict,
            DomainError::UnknownChannel => ErrorCode::UnknownChannel,
            DomainError::UnknownMerchant => ErrorCode::UnknownMerchant,
            DomainError::UnknownFunder => ErrorCode::NotFound,
            DomainError::UnknownPayout => ErrorCode::NotFound,
            DomainError::UnknownCalendar(id) => {
                return ApiError::with_message(
                    ErrorCode::UnknownCalendar,
                    format!("No calendar {id:?} is loaded."),
                );
            }
            DomainError::CalendarYearMissing { calendar, year } => {
                return ApiError::with_message(
                    ErrorCode::CalendarYearMissing,
                    format!("Calendar {calendar:?} has no data for {year}; load it first."),
                );
            }
            DomainError::InvalidCalendar(message) => {
                return ApiError::with_message(ErrorCode::InvalidCalendar, message);
            }
            DomainError::CurrencyMismatch => ErrorCode::CurrencyMismatch,
            DomainError::AmountMustBePositive => ErrorCode::AmountMustBePositive,
            DomainError::AmountTooLarge => ErrorCode::AmountTooLarge,
            DomainError::FeeNotBelowAmount => ErrorCode::FeeNotBelowAmount,
            DomainError::FeeBelowFloor => ErrorCode::FeeBelowFloor,
            DomainError::DuplicateTradeWithDifferentContent => ErrorCode::TradeNoConflict,
            DomainError::PayoutRequestConflict => ErrorCode::PayoutRequestConflict,
            DomainError::SettlementConflict => ErrorCode::SettlementConflict,
            DomainError::NoBankAccount => ErrorCode::NoBankAccount,
            DomainError::InsufficientFunds => ErrorCode::InsufficientFunds,
            DomainError::AdvanceNotEnabled => ErrorCode::AdvanceNotEnabled,
            DomainError::AdvanceLimitExceeded(which) => {
                return ApiError::with_message(
                    ErrorCode::AdvanceLimitExceeded,
                    format!("The advance would exceed {which}."),
                );
            }
            DomainError::NoFunderRoom => ErrorCode::NoFunderRoom,
            DomainError::AdvanceFeeBelowCostOfFunds => ErrorCode::AdvanceFeeBelowCostOfFunds,
            DomainError::NothingToFund => ErrorCode::NothingToFund,
            DomainError::RefundExceedsPayment => ErrorCode::RefundExceedsPayment,
            DomainError::UnknownPayment => ErrorCode::UnknownPayment,
            DomainError::UnknownHold => ErrorCode::NotFound,
            DomainError::MerchantFrozen => ErrorCode::MerchantFrozen,
            DomainError::Directory(refusal) => {
                use ::auth::DirectoryError as D;
                match refusal {
                    D::InvalidId => ErrorCode::InvalidId,
                    D::UnknownUser | D::UnknownActor => ErrorCode::UnknownUser,
                    D::UserExists | D::MasterExists => ErrorCode::UserConflict,
                    D::TooManyUsers => ErrorCode::BatchTooLarge,
                    D::NegativeCap => ErrorCode::InvalidAmount,
                    D::Grant(::auth::GrantError::OtherMerchant) => ErrorCode::NotFound,
                    D::Grant(_) => ErrorCode::PermissionNotHeld,
                    D::StoreScope => {
                        return ApiError::with_message(
                            ErrorCode::PermissionNotHeld,
                            "An operator may be limited only to stores its creator may act on (at most 100, valid ids); a creator limited to stores must name some.",
                        );
                    }
                }
            }
            DomainError::RefundCap { daily } => {
                return ApiError::with_message(
                    ErrorCode::RefundCapExceeded,
                    if daily {
                        "The refund is above this user's daily refund cap."
                    } else {
                        "The refund is above this user's single-refund cap."
                    }
                    .to_owned(),
                );
            }
            DomainError::LevelCap => ErrorCode::LevelCapExceeded,
            DomainError::Approval(refusal) => {
                use ::domain::ApprovalError as A;
                match refusal {
                    A::UnknownApproval => ErrorCode::NotFound,
                    A::ApprovalExists | A::NotPending => ErrorCode::ApprovalConflict,
                    A::SelfApproval => ErrorCode::SelfApproval,
                    A::NotAllowed => ErrorCode::Forbidden,
                    A::TooManyPending => ErrorCode::BatchTooLarge,
                    A::BadThreshold => ErrorCode::InvalidRequest,
                }
            }
            DomainError::Device(refusal) => {
                use ::auth::DeviceError as D;
                match refusal {
                    D::UnknownUser | D::UnknownActor => ErrorCode::UnknownUser,
                    D::BadId => ErrorCode::InvalidId,
                    D::UnknownDevice | D::UnknownSession => ErrorCode::NotFound,
                    D::DeviceExists | D::KeyInUse | D::SessionExists => ErrorCode::DeviceConflict,
                    D::TooManyDevices => ErrorCode::DeviceLimit,
                    D::DeviceNotActive => ErrorCode::DeviceNotActive,
                    D::NotAllowed => ErrorCode::Forbidden,
                    D::BadPolicy => ErrorCode::InvalidLoginPolicy,
                    D::SessionLimit => ErrorCode::SessionLimit,
                    D::InvalidRefresh => ErrorCode::InvalidRefreshToken,
                    D::SessionEnded(reason) => {
                        return ApiError::with_message(
                            ErrorCode::SessionEnded,
                            format!("The session has ended: {}.", reason.as_str()),
                        );
                    }
                }
            }
            DomainError::PayoutStateConflict { status } => {
                return ApiError::with_message(
                    ErrorCode::PayoutStateConflict,
                    format!("The payout is {status}."),
                );
            }
            DomainError::Ledger(refusal) => {
                return ApiError::with_message(
                    ErrorCode::LedgerRefused,
                    format!("The ledger refused the postings: {}.", refusal.code()),
                );
            }
        };
        ApiError::new(code)
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        match error {
            EngineError::Overloaded => ApiError::new(ErrorCode::Overloaded),
            EngineError::Stopped => ApiError::new(ErrorCode::Unavailable),
        }
    }
}

impl From<store::StoreError> for ApiError {
    fn from(error: store::StoreError) -> ApiError {
        ApiError::internal(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_statuses_are_errors() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let (name, status, message) = code.describe();
            assert!(seen.insert(name), "duplicate code {name}");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{name}"
            );
            assert!(!message.is_empty());
        }
    }
}
