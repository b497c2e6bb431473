//! The payment domain: channels, merchants, fee schedules and pay-ins, on top of the ledger.
//!
//! [`Platform`] is the deterministic state machine the engine drives: it validates business
//! commands, turns them into balanced ledger postings and records the business facts to
//! persist. A pay-in of 10,000.00 at a 0.38% merchant fee through a channel costing 0.25%
//! gives the merchant a claim of 9,962.00, the platform fee income of 38.00 and a channel cost
//! of 25.00, and leaves the channel owing 9,975.00.
//!
//! Architecture invariant: like `ledger`, this crate does no IO, never reads a clock and never
//! draws randomness; time and ids come in from the engine.

pub mod approvals;
pub mod calendar;
mod fees;
mod model;
mod platform;
pub mod refunds;
pub mod settlement;
pub mod terms;

pub use approvals::{
    Approval, ApprovalError, ApprovalOperation, ApprovalStatus, Approvals, NewApproval,
};
pub use calendar::{Calendar, CalendarError, CalendarYear, Date};
pub use fees::{FeeSchedule, FeeScheduleError, RATE_PPM_ONE};
pub use model::{
    Channel, EXTERNAL_ID_LEN_MAX, Merchant, MerchantAccounts, NAME_CHARS_MAX, NewPayment,
    PAYMENT_AMOUNT_MAX, Payment, PaymentId, PlatformAccounts, is_valid_external_id, is_valid_name,
};
pub use platform::{
    Command, CommandResult, DomainError, Effects, MerchantBalances, NewChannel, NewMerchant,
    Outcome, Platform, TickReport, account_code, transfer_code,
};
pub use refunds::{Hold, NewHold, Refund, RefundKind, RefundRequest, RefundStatus};
pub use settlement::{
    ChannelSettlement, Funder, FunderKind, FunderLine, Lot, LotId, LotState, NewChannelSettlement,
    NewFunder, Payout, PayoutId, PayoutKind, PayoutRequest, PayoutResult, PayoutStatus,
};
pub use terms::{AdvanceTerms, BankAccount, Cycle, MerchantTerms, SettlementTerms, TermsError};
