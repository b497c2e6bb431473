//! Maker-checker approval of merchant fund operations.
//!
//! A merchant's master sets a threshold; a refund requested from the merchant app above it does
//! not run, but waits as an approval. Another user of the same merchant holding `approve`
//! decides it: approval runs the refund then and there (or is refused, changing nothing, when
//! the refund no longer fits); rejection ends it. Approving one's own request is refused. Every
//! request and decision is audited.

use std::collections::HashMap;

use ledger::{Amount, Timestamp};

use crate::platform::{CommandResult, DomainError, Outcome, Platform};
use crate::refunds::RefundRequest;
use crate::settlement::PayoutRequest;

/// Pending approvals per merchant at most.
pub const PENDING_APPROVALS_MAX: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApprovalOperation {
    Refund(RefundRequest),
    /// Every payout from the merchant app waits for approval.
    Payout(PayoutRequest),
    /// So does every change of the account payouts go to; approval makes it a new version of
    /// the merchant's terms, in force at once.
    BankAccount {
        merchant_id: String,
        account: crate::terms::BankAccount,
    },
}

impl ApprovalOperation {
    pub fn action(&self) -> &'static str {
        match self {
            ApprovalOperation::Refund(_) => "refund",
            ApprovalOperation::Payout(_) => "payout",
            ApprovalOperation::BankAccount { .. } => "bank_account",
        }
    }

    pub fn amount(&self) -> Amount {
        match self {
            ApprovalOperation::Refund(r) => r.amount,
            ApprovalOperation::Payout(p) => p.amount,
            ApprovalOperation::BankAccount { .. } => Amount::ZERO,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    pub id: String,
    pub merchant_id: String,
    pub maker: String,
    pub maker_device: String,
    /// How the maker's request was verified, for example `signed_two_factor`.
    pub maker_level: String,
    pub operation: ApprovalOperation,
    pub status: ApprovalStatus,
    pub checker: Option<String>,
    pub created_at: Timestamp,
    pub decided_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewApproval {
    pub id: String,
    pub maker: String,
    pub maker_device: String,
    pub maker_level: String,
    pub operation: ApprovalOperation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalError {
    UnknownApproval,
    ApprovalExists,
    /// The checker is the maker.
    SelfApproval,
    /// The checker is disabled, of another merchant, or lacks `approve`.
    NotAllowed,
    NotPending,
    TooManyPending,
    /// A threshold is not a non-negative amount, or the actor is not the master.
    BadThreshold,
}

/// Seconds east of UTC of the day merchant users' daily caps count in (Asia/Shanghai).
const CAP_DAY_OFFSET_SECONDS: i64 = 8 * 3600;

fn cap_day(now: Timestamp) -> i64 {
    (now.micros() / 1_000_000 + CAP_DAY_OFFSET_SECONDS).div_euclid(86_400)
}

#[derive(Clone, Debug, Default)]
pub struct Approvals {
    /// Refunded per (user, day) through the merchant app, for the daily caps.
    pub(crate) refunded_by_user_day: HashMap<(String, i64), Amount>,
    pub(crate) list: Vec<Approval>,
    pub(crate) index: HashMap<String, usize>,
    /// Per merchant: refunds above this need approval (absent: none do).
    pub(crate) thresholds: HashMap<String, Amount>,
}

impl Approvals {
    pub fn get(&self, id: &str) -> Option<&Approval> {
        self.index.get(id).map(|&i| &self.list[i])
    }

    pub fn of_merchant<'a>(&'a self, merchant_id: &'a str) -> impl Iterator<Item = &'a Approval> {
        self.list
            .iter()
            .filter(move |a| a.merchant_id == merchant_id)
    }

    pub fn threshold(&self, merchant_id: &str) -> Option<Amount> {
        self.thresholds.get(merchant_id).copied()
    }
}

fn refused(error: ApprovalError) -> DomainError {
    DomainError::Approval(error)
}

impl Platform {
    /// A refund a merchant user makes from `device_id`: within its merchant, with `refund`,
    /// within its single and daily caps (the day runs midnight to midnight, Asia/Shanghai) and
    /// the cap of the `level` it was verified at; audited with that level's factors in the same
    /// command, so a refund is never without its record.
    pub(crate) fn user_refund(
        &mut self,
        now: Timestamp,
        user_id: &str,
        device_id: &str,
        request: &RefundRequest,
        level: auth::stepup::Level,
    ) -> CommandResult {
        let user = self
            .directory()
            .user(user_id)
            .filter(|u| !u.disabled && u.effective().contains(auth::Permissions::REFUND))
            .cloned()
            .ok_or(refused(ApprovalError::NotAllowed))?;
        if self.payment_merchant(request).as_deref() != Some(user.merchant_id.as_str()) {
            return Err(DomainError::UnknownPayment);
        }
        let amount = request.amount.minor();
        if user.refund_cap_single > 0 && amount > user.refund_cap_single {
            return Err(DomainError::RefundCap { daily: false });
        }
        let key = (user.id.clone(), cap_day(now));
        let used = self
            .approvals
            .refunded_by_user_day
            .get(&key)
            .map_or(0, |a| a.minor());
        if user.refund_cap_daily > 0 && used.saturating_add(amount) > user.refund_cap_daily {
            return Err(DomainError::RefundCap { daily: true });
        }
        if level
            .daily_cap()
            .is_some_and(|cap| used.saturating_add(amount) > cap)
        {
            return Err(DomainError::LevelCap);
        }
        let outcome = self.refund(now, request, false)?;
        if let Outcome::Refund { created: true, .. } = outcome {
            self.approvals
                .refunded_by_user_day
                .insert(key, Amount::from_minor(used + amount));
            self.directory_mut().append_audit(auth::AuditRecord {
                at_micros: now.micros(),
                merchant_id: user.merchant_id.clone(),
                user_id: user.id.clone(),
                device_id: Some(device_id.to_owned()),
                action: "refund".to_owned(),
                factors: level.factors().iter().map(|f| (*f).to_owned()).collect(),
                approver: None,
                detail: format!(
                    "payment=pay_{} amount={amount} level={}",
                    request.payment_id.0,
                    level.as_str()
                ),
            });
        }
        Ok(outcome)
    }

    pub(crate) fn set_approval_threshold(
        &mut self,
        now: Timestamp,
        actor: &str,
        threshold: Option<Amount>,
    ) -> CommandResult {
        let user = self
            .directory()
            .user(actor)
            .filter(|u| !u.disabled && u.role == auth::Role::Master)
            .cloned()
            .ok_or(refused(ApprovalError::BadThreshold))?;
        if threshold.is_some_and(|t| t.minor() < 0) {
            return Err(refused(ApprovalError::BadThreshold));
        }
        match threshold {
            Some(t) => self
                .approvals
                .thresholds
                .insert(user.merchant_id.clone(), t),
            None => self.approvals.thresholds.remove(&user.merchant_id),
        };
        self.audit(
            now,
            &user.merchant_id,
            actor,
            None,
            "approval_threshold_set",
            format!("refund_above={}", threshold.map_or(-1, |t| t.minor())),
        );
        Ok(Outcome::ApprovalThreshold(threshold))
    }

    pub(crate) fn request_approval(&mut self, now: Timestamp, new: &NewApproval) -> CommandResult {
        if !crate::is_valid_external_id(&new.id) {
            return Err(DomainError::InvalidId);
        }
        if self.approvals.index.contains_key(&new.id) {
            return Err(refused(ApprovalError::ApprovalExists));
        }
        let maker = self
            .directory()
            .user(&new.maker)
            .filter(|u| !u.disabled)
            .cloned()
            .ok_or(refused(ApprovalError::NotAllowed))?;
        let pending = self
            .approvals
            .of_merchant(&maker.merchant_id)
            .filter(|a| a.status == ApprovalStatus::Pending)
            .count();
        if pending >= PENDING_APPROVALS_MAX {
            return Err(refused(ApprovalError::TooManyPending));
        }
        match &new.operation {
            ApprovalOperation::Refund(request) => {
                // The payment must be the maker's merchant's.
                let merchant = self
                    .payment_merchant(request)
                    .ok_or(DomainError::UnknownPayment)?;
                if merchant != maker.merchant_id {
                    return Err(DomainError::UnknownPayment);
                }
            }
            ApprovalOperation::Payout(request) => {
                if request.merchant_id != maker.merchant_id
                    || !maker.effective().contains(auth::Permissions::PAYOUT)
                {
                    return Err(refused(ApprovalError::NotAllowed));
                }
            }
            ApprovalOperation::BankAccount { merchant_id, .. } => {
                if *merchant_id != maker.merchant_id
                    || !maker
                        .effective()
                        .contains(auth::Permissions::MANAGE_BANK_ACCOUNT)
                {
                    return Err(refused(ApprovalError::NotAllowed));
                }
            }
        }
        let approval = Approval {
            id: new.id.clone(),
            merchant_id: maker.merchant_id.clone(),
            maker: new.maker.clone(),
            maker_device: new.maker_device.clone(),
            maker_level: new.maker_level.clone(),
            operation: new.operation.clone(),
            status: ApprovalStatus::Pending,
            checker: None,
            created_at: now,
            decided_at: None,
        };
        self.approvals
            .index
            .insert(approval.id.clone(), self.approvals.list.len());
        self.approvals.list.push(approval.clone());
        self.audit(
            now,
            &maker.merchant_id,
            &new.maker,
            Some(new.maker_device.clone()),
            "approval_requested",
            format!(
                "approval={} action={} amount={}",
                new.id,
                new.operation.action(),
                new.operation.amount().minor()
            ),
        );
        Ok(Outcome::Approval {
            approval,
            result: None,
        })
    }

    pub(crate) fn decide_approval(
        &mut self,
        now: Timestamp,
        id: &str,
        checker: &str,
        checker_device: &str,
        approve: bool,
    ) -> CommandResult {
        let index = *self
            .approvals
            .index
            .get(id)
            .ok_or(refused(ApprovalError::UnknownApproval))?;
        let approval = self.approvals.list[index].clone();
        let user = self
            .directory()
            .user(checker)
            .filter(|u| !u.disabled && u.merchant_id == approval.merchant_id)
            .cloned()
            .ok_or(refused(ApprovalError::UnknownApproval))?;
        if user.id == approval.maker {
            return Err(refused(ApprovalError::SelfApproval));
        }
        if !user.effective().contains(auth::Permissions::APPROVE) {
            return Err(refused(ApprovalError::NotAllowed));
        }
        if approval.status != ApprovalStatus::Pending {
            return Err(refused(ApprovalError::NotPending));
        }
        // Approval runs the operation now; if it no longer fits, the whole decision is refused.
        let result = if approve {
            let outcome = match &approval.operation {
                ApprovalOperation::Refund(request) => {
                    // The maker's verification level caps what its request may refund.
                    // An unknown level name is treated as the weakest.
                    let level = auth::stepup::Level::parse(&approval.maker_level)
                        .unwrap_or(auth::stepup::Level::Single);
                    self.user_refund(now, &approval.maker, &approval.maker_device, request, level)?
                }
                ApprovalOperation::Payout(request) => self.request_payout(now, request)?,
                ApprovalOperation::BankAccount {
                    merchant_id,
                    account,
                } => {
                    let merchant = self
                        .merchant(merchant_id)
                        .ok_or(DomainError::UnknownMerchant)?;
                    let mut terms = merchant.terms_at(now).clone();
                    // Versions scheduled for later keep their other terms and get the new
                    // account too, instead of being replaced.
                    let later: Vec<crate::terms::MerchantTerms> = merchant
                        .terms
                        .iter()
                        .filter(|t| t.effective_from > now)
                        .cloned()
                        .collect();
                    terms.bank_account = Some(account.clone());
                    let outcome = self.set_merchant_terms(now, merchant_id, &terms)?;
                    let mut last = outcome;
                    for mut version in later {
                        version.bank_account = Some(account.clone());
                        last = self.set_merchant_terms(now, merchant_id, &version)?;
                    }
                    last
                }
            };
            Some(Box::new(outcome))
        } else {
            None
        };
        let decided = &mut self.approvals.list[index];
        decided.status = if approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Rejected
        };
        decided.checker = Some(checker.to_owned());
        decided.decided_at = Some(now);
        let approval = decided.clone();
        // The record is the maker's operation, with the checker as its approver.
        self.directory_mut().append_audit(auth::AuditRecord {
            at_micros: now.micros(),
            merchant_id: approval.merchant_id.clone(),
            user_id: approval.maker.clone(),
            device_id: Some(checker_device.to_owned()),
            action: if approve {
                "approval_approved"
            } else {
                "approval_rejected"
            }
            .to_owned(),
            // Approving passes the checker's own step-up; rejecting needs none.
            factors: if approve {
                vec!["device_signature".to_owned(), "payment_password".to_owned()]
            } else {
                Vec::new()
            },
            approver: Some(checker.to_owned()),
            detail: format!(
                "approval={id} action={} amount={} maker_level={}",
                approval.operation.action(),
                approval.operation.amount().minor(),
                approval.maker_level
            ),
        });
        Ok(Outcome::Approval { approval, result })
    }
}
