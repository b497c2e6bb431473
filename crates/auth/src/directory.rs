//! The directory of merchant users: each merchant's master account and the operators it (or a
//! user allowed to manage users) creates, with permissions, refund caps and the audit chain of
//! every change. A pure state machine like the platform's: commands with a timestamp in,
//! typed outcomes and audit entries out. Password hashes are computed before a command is
//! submitted (hashing is slow and must not hold up the sequencer).

use std::collections::HashMap;

use crate::audit::{AuditEntry, AuditRecord, append};
use crate::permissions::{GrantError, Grantee, Permissions, Role, check_grant};
use crate::secrets::Attempts;

/// Stores one user may be limited to at most.
pub const STORES_PER_USER_MAX: usize = 100;

/// Payment-password failures in a row that lock it.
pub const PAYMENT_PASSWORD_FAILURES_MAX: u32 = 5;

/// Longest accepted username and user id.
pub const USERNAME_LEN_MAX: usize = 64;
/// Users per merchant at most.
pub const USERS_PER_MERCHANT_MAX: usize = 1_000;

/// A merchant user as stored. The password is only a peppered argon2id hash.
#[derive(Clone, PartialEq, Eq)]
pub struct MerchantUser {
    pub id: String,
    pub merchant_id: String,
    pub username: String,
    pub role: Role,
    pub permissions: Permissions,
    pub password_hash: String,
    /// Largest single refund this user may make (minor units; zero: no cap).
    pub refund_cap_single: i64,
    /// Largest total of refunds per day (zero: no cap).
    pub refund_cap_daily: i64,
    pub disabled: bool,
    pub created_by: Option<String>,
    pub created_at_micros: i64,
    /// The payment password for fund operations: only a peppered argon2id hash; `None` until
    /// the user sets one.
    pub payment_password_hash: Option<String>,
    /// Payment-password failures in a row, and whether they locked it (reset when the
    /// password is set again).
    pub payment_password_attempts: Attempts,
    /// The TOTP enrollment nonce (the seed is derived from it and the pepper, never stored).
    pub totp_nonce: Option<String>,
    /// The last TOTP step used: no code of it or before is accepted again.
    pub totp_last_step: Option<i64>,
    /// One-time-code failures in a row; five lock the fallback factor.
    pub otp_attempts: Attempts,
    /// The stores this user may see and act on; empty: all of the merchant's.
    pub stores: Vec<String>,
}

impl std::fmt::Debug for MerchantUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantUser")
            .field("id", &self.id)
            .field("merchant_id", &self.merchant_id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("permissions", &self.permissions)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

impl MerchantUser {
    fn grantee(&self) -> Grantee {
        Grantee {
            merchant_id: self.merchant_id.clone(),
            role: self.role,
            permissions: self.permissions,
        }
    }

    /// What the user may do now: nothing once disabled.
    pub fn effective(&self) -> Permissions {
        if self.disabled {
            Permissions::NONE
        } else {
            self.grantee().effective()
        }
    }
}

/// A directory command. `actor` is the user acting; the platform (an API key) acts as `None`.
#[derive(Clone, PartialEq, Eq)]
pub enum DirectoryCommand {
    /// The platform opens a merchant's master account.
    CreateMaster {
        merchant_id: String,
        user_id: String,
        username: String,
        password_hash: String,
    },
    /// A user with `manage_users` creates an operator holding at most its own permissions.
    CreateOperator {
        actor: String,
        user_id: String,
        username: String,
        password_hash: String,
        permissions: Permissions,
        refund_cap_single: i64,
        refund_cap_daily: i64,
        /// The stores the operator is limited to; empty: all (only for a creator that has all).
        stores: Vec<String>,
    },
    SetPermissions {
        actor: String,
        user_id: String,
        permissions: Permissions,
    },
    /// Limits an operator to some stores (empty: all), within the actor's own stores.
    SetStores {
        actor: String,
        user_id: String,
        stores: Vec<String>,
    },
    /// Disables (or enables again) an operator; a disabled user can do nothing.
    SetDisabled {
        actor: String,
        user_id: String,
        disabled: bool,
    },
    /// A user sets its own payment password (the caller checked the login password).
    SetPaymentPassword { user_id: String, hash: String },
    /// Records a payment-password attempt; the fifth failure in a row locks it.
    RecordPaymentPasswordAttempt {
        user_id: String,
        device_id: Option<String>,
        correct: bool,
    },
    /// A user enrolls a TOTP authenticator (the caller checked a first code).
    EnrollTotp { user_id: String, nonce: String },
    /// Records a one-time-code attempt: the step it matched, or `None` for a wrong code.
    RecordOtpAttempt {
        user_id: String,
        device_id: Option<String>,
        step: Option<i64>,
    },
    /// Audits a sign-in attempt, successful or not.
    RecordLogin {
        user_id: String,
        device_id: Option<String>,
        succeeded: bool,
    },
}

impl std::fmt::Debug for DirectoryCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Password hashes are not secrets in clear, but they stay out of logs all the same.
        match self {
            DirectoryCommand::CreateMaster { user_id, .. } => {
                write!(f, "CreateMaster({user_id})")
            }
            DirectoryCommand::CreateOperator { user_id, .. } => {
                write!(f, "CreateOperator({user_id})")
            }
            DirectoryCommand::SetPermissions {
                user_id,
                permissions,
                ..
            } => write!(f, "SetPermissions({user_id}, {permissions:?})"),
            DirectoryCommand::SetDisabled {
                user_id, disabled, ..
            } => write!(f, "SetDisabled({user_id}, {disabled})"),
            DirectoryCommand::SetStores {
                user_id, stores, ..
            } => write!(f, "SetStores({user_id}, {stores:?})"),
            DirectoryCommand::RecordLogin {
                user_id, succeeded, ..
            } => write!(f, "RecordLogin({user_id}, {succeeded})"),
            DirectoryCommand::SetPaymentPassword { user_id, .. } => {
                write!(f, "SetPaymentPassword({user_id})")
            }
            DirectoryCommand::RecordPaymentPasswordAttempt {
                user_id, correct, ..
            } => write!(f, "RecordPaymentPasswordAttempt({user_id}, {correct})"),
            DirectoryCommand::EnrollTotp { user_id, .. } => write!(f, "EnrollTotp({user_id})"),
            DirectoryCommand::RecordOtpAttempt { user_id, step, .. } => {
                write!(f, "RecordOtpAttempt({user_id}, {})", step.is_some())
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectoryError {
    InvalidId,
    UnknownUser,
    UnknownActor,
    UserExists,
    MasterExists,
    TooManyUsers,
    NegativeCap,
    Grant(GrantError),
    /// Stores beyond the creator's own, too many, or malformed.
    StoreScope,
}

/// The directory and its audit chain.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    users: Vec<MerchantUser>,
    by_id: HashMap<String, usize>,
    by_username: HashMap<(String, String), usize>,
    audit: Vec<AuditEntry>,
    /// Entries appended since the last `take_audit`, for the engine to persist.
    new_audit: Vec<AuditEntry>,
}

/// A user limited to some stores hands out at most those stores (and never "all").
fn check_stores(grantor: &MerchantUser, stores: &[String]) -> Result<(), DirectoryError> {
    let within = grantor.stores.is_empty()
        || (!stores.is_empty() && stores.iter().all(|s| grantor.stores.contains(s)));
    if !within || stores.len() > STORES_PER_USER_MAX || !stores.iter().all(|s| valid_id(s)) {
        return Err(DirectoryError::StoreScope);
    }
    Ok(())
}

fn valid_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= USERNAME_LEN_MAX
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'))
}

impl Directory {
    pub fn user(&self, id: &str) -> Option<&MerchantUser> {
        self.by_id.get(id).map(|i| &self.users[*i])
    }

    /// A user by merchant and username, for sign-in.
    pub fn user_by_name(&self, merchant_id: &str, username: &str) -> Option<&MerchantUser> {
        self.by_username
            .get(&(merchant_id.to_owned(), username.to_owned()))
            .map(|i| &self.users[*i])
    }

    pub fn merchant_users(&self, merchant_id: &str) -> Vec<&MerchantUser> {
        self.users
            .iter()
            .filter(|u| u.merchant_id == merchant_id)
            .collect()
    }

    pub fn audit(&self) -> &[AuditEntry] {
        &self.audit
    }

    /// Audit entries appended since the last call.
    pub fn take_audit(&mut self) -> Vec<AuditEntry> {
        std::mem::take(&mut self.new_audit)
    }

    /// Appends a record made elsewhere (devices and sessions) to the chain.
    pub fn append_audit(&mut self, record: AuditRecord) {
        let entry = append(self.audit.last(), record);
        self.audit.push(entry.clone());
        self.new_audit.push(entry);
    }

    fn record(
        &mut self,
        at_micros: i64,
        merchant_id: &str,
        user_id: &str,
        action: &str,
        detail: String,
    ) {
        let entry = append(
            self.audit.last(),
            AuditRecord {
                at_micros,
                merchant_id: merchant_id.to_owned(),
                user_id: user_id.to_owned(),
                device_id: None,
                action: action.to_owned(),
                factors: Vec::new(),
                approver: None,
                detail,
            },
        );
        self.audit.push(entry.clone());
        self.new_audit.push(entry);
    }

    fn insert(&mut self, user: MerchantUser) {
        let index = self.users.len();
        self.by_id.insert(user.id.clone(), index);
        self.by_username
            .insert((user.merchant_id.clone(), user.username.clone()), index);
        self.users.push(user);
    }

    fn check_new(
        &self,
        merchant_id: &str,
        user_id: &str,
        username: &str,
    ) -> Result<(), DirectoryError> {
        if !valid_id(user_id) || !valid_id(username) {
            return Err(DirectoryError::InvalidId);
        }
        if self.by_id.contains_key(user_id)
            || self
                .by_username
                .contains_key(&(merchant_id.to_owned(), username.to_owned()))
        {
            return Err(DirectoryError::UserExists);
        }
        if self.merchant_users(merchant_id).len() >= USERS_PER_MERCHANT_MAX {
            return Err(DirectoryError::TooManyUsers);
        }
        Ok(())
    }

    fn actor(&self, actor: &str) -> Result<&MerchantUser, DirectoryError> {
        self.user(actor)
            .filter(|u| !u.disabled)
            .ok_or(DirectoryError::UnknownActor)
    }

    /// Applies a command. Every change is audited; a refusal changes nothing.
    pub fn apply(
        &mut self,
        at_micros: i64,
        command: &DirectoryCommand,
    ) -> Result<MerchantUser, DirectoryError> {
        match command {
            DirectoryCommand::CreateMaster {
                merchant_id,
                user_id,
                username,
                password_hash,
            } => {
                self.check_new(merchant_id, user_id, username)?;
                if self
                    .merchant_users(merchant_id)
                    .iter()
                    .any(|u| u.role == Role::Master)
                {
                    return Err(DirectoryError::MasterExists);
                }
                let user = MerchantUser {
                    id: user_id.clone(),
                    merchant_id: merchant_id.clone(),
                    username: username.clone(),
                    role: Role::Master,
                    permissions: Permissions::ALL,
                    password_hash: password_hash.clone(),
                    refund_cap_single: 0,
                    refund_cap_daily: 0,
                    disabled: false,
                    created_by: None,
                    created_at_micros: at_micros,
                    payment_password_hash: None,
                    payment_password_attempts: Attempts::default(),
                    totp_nonce: None,
                    totp_last_step: None,
                    otp_attempts: Attempts::default(),
                    stores: Vec::new(),
                };
                self.insert(user.clone());
                self.record(
                    at_micros,
                    merchant_id,
                    user_id,
                    "user_created",
                    "role=master".into(),
                );
                Ok(user)
            }
            DirectoryCommand::CreateOperator {
                actor,
                user_id,
                username,
                password_hash,
                permissions,
                refund_cap_single,
                refund_cap_daily,
                stores,
            } => {
                let grantor = self.actor(actor)?.clone();
                check_stores(&grantor, stores)?;
                self.check_new(&grantor.merchant_id, user_id, username)?;
                if *refund_cap_single < 0 || *refund_cap_daily < 0 {
                    return Err(DirectoryError::NegativeCap);
                }
                let target = Grantee {
                    merchant_id: grantor.merchant_id.clone(),
                    role: Role::Operator,
                    permissions: Permissions::NONE,
                };
                check_grant(&grantor.grantee(), &target, *permissions)
                    .map_err(DirectoryError::Grant)?;
                let user = MerchantUser {
                    id: user_id.clone(),
                    merchant_id: grantor.merchant_id.clone(),
                    username: username.clone(),
                    role: Role::Operator,
                    permissions: *permissions,
                    password_hash: password_hash.clone(),
                    refund_cap_single: *refund_cap_single,
                    refund_cap_daily: *refund_cap_daily,
                    disabled: false,
                    created_by: Some(actor.clone()),
                    created_at_micros: at_micros,
                    payment_password_hash: None,
                    payment_password_attempts: Attempts::default(),
                    totp_nonce: None,
                    totp_last_step: None,
                    otp_attempts: Attempts::default(),
                    stores: stores.clone(),
                };
                self.insert(user.clone());
                self.record(
                    at_micros,
                    &grantor.merchant_id,
                    actor,
                    "user_created",
                    format!("user={user_id} permissions={:?}", permissions.names()),
                );
                Ok(user)
            }
            DirectoryCommand::SetPermissions {
                actor,
                user_id,
                permissions,
            } => {
                let grantor = self.actor(actor)?.clone();
                let index = *self.by_id.get(user_id).ok_or(DirectoryError::UnknownUser)?;
                check_grant(
                    &grantor.grantee(),
                    &self.users[index].grantee(),
                    *permissions,
                )
                .map_err(DirectoryError::Grant)?;
                self.users[index].permissions = *permissions;
                let user = self.users[index].clone();
                self.record(
                    at_micros,
                    &user.merchant_id,
                    actor,
                    "permission_change",
                    format!("user={user_id} permissions={:?}", permissions.names()),
                );
                Ok(user)
            }
            DirectoryCommand::SetStores {
                actor,
                user_id,
                stores,
            } => {
                let grantor = self.actor(actor)?.clone();
                let index = *self.by_id.get(user_id).ok_or(DirectoryError::UnknownUser)?;
                let target = self.users[index].grantee();
                // Narrowing or widening a user's reach is a permission change: the same rule.
                check_grant(&grantor.grantee(), &target, target.permissions)
                    .map_err(DirectoryError::Grant)?;
                check_stores(&grantor, stores)?;
                self.users[index].stores = stores.clone();
                let user = self.users[index].clone();
                self.record(
                    at_micros,
                    &user.merchant_id,
                    actor,
                    "store_scope_change",
                    format!("user={user_id} stores={stores:?}"),
                );
                Ok(user)
            }
            DirectoryCommand::SetDisabled {
                actor,
                user_id,
                disabled,
            } => {
                let grantor = self.actor(actor)?.clone();
                let index = *self.by_id.get(user_id).ok_or(DirectoryError::UnknownUser)?;
                // Disabling is a change of every permission: the same rule applies.
                let target = self.users[index].grantee();
                check_grant(&grantor.grantee(), &target, target.permissions)
                    .map_err(DirectoryError::Grant)?;
                if !grantor.effective().contains(target.permissions) {
                    return Err(DirectoryError::Grant(GrantError::BeyondOwnPermissions));
                }
                self.users[index].disabled = *disabled;
                let user = self.users[index].clone();
                self.record(
                    at_micros,
                    &user.merchant_id,
                    actor,
                    if *disabled {
                        "user_disabled"
                    } else {
                        "user_enabled"
                    },
                    format!("user={user_id}"),
                );
                Ok(user)
            }
            DirectoryCommand::SetPaymentPassword { user_id, hash } => {
                let index = *self.by_id.get(user_id).ok_or(DirectoryError::UnknownUser)?;
                if self.users[index].disabled {
                    return Err(DirectoryError::UnknownUser);
                }
                self.users[index].payment_password_hash = Some(hash.clone());
                self.users[index].payment_password_attempts = Attempts::default();
                let user = self.users[index].clone();
                self.record(
                    at_micros,
                    &user.merchant_id,
                    user_id,
                    "payment_password_set",
                    String::new(),
                );
                Ok(user)
            }
            DirectoryCommand::RecordPaymentPasswordAttempt {
                user_id,
                device_id,
                correct,
            } => {
                let index = *self.by_id.get(user_id).ok_or(DirectoryError::UnknownUser)?;
                let attempts = &mut self.users[index].payment_password_attempts;
                let was_locked = attempts.locked;
                attempts.record(*correct, PAYMENT_PASSWORD_FAILURES_MAX);
                let user = self.users[index].clone();
                if !*correct {
                    self.append_audit(AuditRecord {
                        at_micros,
                        merchant_id: user.merchant_id.clone(),
                        user_id: user_id.clone(),
                        device_id: device_id.clone(),
                        action: if user.payment_password_attempts.locked && !was_locked {
                            "payment_password_locked"
                        } else {
                            "payment_password_failed"
                        }
                        .to_owned(),
                        factors: Vec::new(),
                        approver: None,
                        detail: format!("failures={}", user.payment_password_attempts.failures),
                    });
                }
                Ok(user)
            }
            DirectoryCommand::EnrollTotp { user_id, nonce } => {
                let index = *self.by_id.get(user_id).ok_or(DirectoryError::UnknownUser)?;
                let user = &mut self.users[index];
                user.totp_nonce = Some(nonce.clone());
                user.totp_last_step = None;
                user.otp_attempts = Attempts::default();
                let user = user.clone();
                self.record(
                    at_micros,
                    &user.merchant_id,
                    user_id,
                    "totp_enrolled",
                    String::new(),
                );
                Ok(user)
            }
            DirectoryCommand::RecordOtpAttempt {
                user_id,
                device_id,
                step,
            } => {
                let index = *self.by_id.get(user_id).ok_or(DirectoryError::UnknownUser)?;
                let user = &mut self.users[index];
                let accepted = user
                    .otp_attempts
                    .record(step.is_some(), PAYMENT_PASSWORD_FAILURES_MAX);
                if accepted {
                    user.totp_last_step = *step;
                }
                let user = user.clone();
                if step.is_none() {
                    self.append_audit(AuditRecord {
                        at_micros,
                        merchant_id: user.merchant_id.clone(),
                        user_id: user_id.clone(),
                        device_id: device_id.clone(),
                        action: "otp_failed".to_owned(),
                        factors: Vec::new(),
                        approver: None,
                        detail: format!(
                            "failures={} locked={}",
                            user.otp_attempts.failures, user.otp_attempts.locked
                        ),
                    });
                }
                Ok(user)
            }
            DirectoryCommand::RecordLogin {
                user_id,
                device_id,
                succeeded,
            } => {
                let user = self
                    .user(user_id)
                    .ok_or(DirectoryError::UnknownUser)?
                    .clone();
                let entry = append(
                    self.audit.last(),
                    AuditRecord {
                        at_micros,
                        merchant_id: user.merchant_id.clone(),
                        user_id: user_id.clone(),
                        device_id: device_id.clone(),
                        action: if *succeeded { "login" } else { "login_failed" }.to_owned(),
                        factors: vec!["password".to_owned()],
                        approver: None,
                        detail: String::new(),
                    },
                );
                self.audit.push(entry.clone());
                self.new_audit.push(entry);
                Ok(user)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::verify_chain;

    fn directory() -> Directory {
        let mut d = Directory::default();
        d.apply(
            1,
            &DirectoryCommand::CreateMaster {
                merchant_id: "M1".into(),
                user_id: "u-master".into(),
                username: "boss".into(),
                password_hash: "$argon2id$hash".into(),
            },
        )
        .expect("master");
        d
    }

    fn operator(
        d: &mut Directory,
        actor: &str,
        id: &str,
        permissions: Permissions,
    ) -> Result<MerchantUser, DirectoryError> {
        d.apply(
            2,
            &DirectoryCommand::CreateOperator {
                actor: actor.into(),
                user_id: id.into(),
                username: id.into(),
                password_hash: "$argon2id$hash".into(),
                permissions,
                refund_cap_single: 10_000,
                refund_cap_daily: 50_000,
                stores: Vec::new(),
            },
        )
    }

    #[test]
    fn an_operator_limited_to_stores_hands_out_only_those_stores() {
        let mut d = directory();
        let create = |actor: &str, id: &str, stores: &[&str]| DirectoryCommand::CreateOperator {
            actor: actor.into(),
            user_id: id.into(),
            username: id.into(),
            password_hash: "$argon2id$hash".into(),
            permissions: Permissions::VIEW.union(Permissions::MANAGE_USERS),
            refund_cap_single: 0,
            refund_cap_daily: 0,
            stores: stores.iter().map(|s| s.to_string()).collect(),
        };
        let shop = d
            .apply(2, &create("u-master", "shop-manager", &["S1", "S2"]))
            .expect("the master may limit to any stores");
        assert_eq!(shop.stores, ["S1", "S2"]);
        assert_eq!(
            d.apply(3, &create("shop-manager", "x", &["S3"])),
            Err(DirectoryError::StoreScope)
        );
        assert_eq!(
            d.apply(3, &create("shop-manager", "y", &[])),
            Err(DirectoryError::StoreScope),
            "no widening to all stores"
        );
        let clerk = d
            .apply(3, &create("shop-manager", "clerk", &["S2"]))
            .expect("within its own stores");
        assert_eq!(clerk.stores, ["S2"]);
        let set = |actor: &str, stores: &[&str]| DirectoryCommand::SetStores {
            actor: actor.into(),
            user_id: "clerk".into(),
            stores: stores.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            d.apply(4, &set("shop-manager", &["S3"])),
            Err(DirectoryError::StoreScope)
        );
        assert_eq!(
            d.apply(4, &set("shop-manager", &["S1"])).map(|u| u.stores),
            Ok(vec!["S1".to_owned()])
        );
        assert_eq!(
            d.apply(4, &set("u-master", &[])).map(|u| u.stores),
            Ok(Vec::new())
        );
    }

    #[test]
    fn five_wrong_payment_passwords_lock_it_until_it_is_set_again() {
        let mut d = directory();
        let attempt = |correct| DirectoryCommand::RecordPaymentPasswordAttempt {
            user_id: "u-master".into(),
            device_id: None,
            correct,
        };
        d.apply(3, &attempt(false)).expect("recorded");
        d.apply(3, &attempt(true))
            .expect("a success resets the count");
        for _ in 0..PAYMENT_PASSWORD_FAILURES_MAX {
            d.apply(4, &attempt(false)).expect("recorded");
        }
        let user = d.apply(5, &attempt(true)).expect("recorded");
        assert!(
            user.payment_password_attempts.locked,
            "locked: the right one fails too"
        );
        let user = d
            .apply(
                6,
                &DirectoryCommand::SetPaymentPassword {
                    user_id: "u-master".into(),
                    hash: "$argon2id$new".into(),
                },
            )
            .expect("set");
        assert_eq!(user.payment_password_attempts, Attempts::default());
        let locked = d
            .audit()
            .iter()
            .filter(|e| e.record.action == "payment_password_locked")
            .count();
        assert_eq!(locked, 1);
    }

    #[test]
    fn masters_create_operators_who_grant_only_what_they_hold() {
        let mut d = directory();
        let manager = Permissions::MANAGE_USERS.union(Permissions::VIEW);
        operator(&mut d, "u-master", "u-manager", manager).expect("manager");
        operator(&mut d, "u-manager", "u-clerk", Permissions::VIEW).expect("clerk");
        assert_eq!(
            operator(&mut d, "u-manager", "u-refunder", Permissions::REFUND),
            Err(DirectoryError::Grant(GrantError::BeyondOwnPermissions))
        );
        assert_eq!(
            operator(&mut d, "u-clerk", "u-other", Permissions::NONE),
            Err(DirectoryError::Grant(GrantError::NotAllowed))
        );
        assert_eq!(
            operator(&mut d, "u-master", "u-clerk", Permissions::VIEW),
            Err(DirectoryError::UserExists)
        );
        assert_eq!(d.merchant_users("M1").len(), 3);
    }

    #[test]
    fn a_disabled_user_can_do_nothing_from_its_next_request() {
        let mut d = directory();
        operator(&mut d, "u-master", "u-manager", Permissions::ALL).expect("manager");
        d.apply(
            3,
            &DirectoryCommand::SetDisabled {
                actor: "u-master".into(),
                user_id: "u-manager".into(),
                disabled: true,
            },
        )
        .expect("disable");
        assert_eq!(
            d.user("u-manager").map(MerchantUser::effective),
            Some(Permissions::NONE)
        );
        assert_eq!(
            operator(&mut d, "u-manager", "u-x", Permissions::NONE),
            Err(DirectoryError::UnknownActor)
        );
    }

    #[test]
    fn every_change_is_in_the_audit_chain_without_secrets() {
        let mut d = directory();
        operator(&mut d, "u-master", "u-clerk", Permissions::VIEW).expect("clerk");
        d.apply(
            3,
            &DirectoryCommand::SetPermissions {
                actor: "u-master".into(),
                user_id: "u-clerk".into(),
                permissions: Permissions::VIEW.union(Permissions::REFUND),
            },
        )
        .expect("grant");
        d.apply(
            4,
            &DirectoryCommand::RecordLogin {
                user_id: "u-clerk".into(),
                device_id: Some("d1".into()),
                succeeded: false,
            },
        )
        .expect("audited");
        let actions: Vec<&str> = d.audit().iter().map(|e| e.record.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "user_created",
                "user_created",
                "permission_change",
                "login_failed"
            ]
        );
        assert_eq!(verify_chain(d.audit()), Ok(4));
        assert!(
            d.audit()
                .iter()
                .all(|e| !e.record.detail.contains("argon2"))
        );
        assert_eq!(d.take_audit().len(), 4);
        assert!(d.take_audit().is_empty());
        assert!(!format!("{:?}", d.user("u-clerk")).contains("argon2"));
    }
}
