//! Devices and sessions of merchant users.
//!
//! A device is an app install holding a P-256 key; the server keeps only its public key's
//! thumbprint (install id and name are labels). A new device waits until a bound device of the
//! same user, or the merchant's master, confirms it; only the master's very first device is
//! bound at once, since nobody could confirm it. Devices can be revoked, or reported lost (and
//! found again); either ends their sessions at once.
//!
//! A session is one sign-in on one device, with a rotating refresh token of which only hashes
//! are kept: presenting an old one again means it was stolen, and ends the session. Each
//! merchant chooses how many devices may be signed in at once: up to N, a single session (the
//! older one ends and is told why), or refuse new sign-ins while one is open.

use std::collections::HashMap;

use crate::audit::AuditRecord;
use crate::directory::{Directory, MerchantUser};
use crate::permissions::{Permissions, Role};

/// Devices per user at most.
pub const DEVICES_PER_USER_MAX: usize = 5;
/// A session unused this long ends (seconds).
pub const SESSION_IDLE_SECONDS_MAX: i64 = 30 * 60;
/// A session ends this long after sign-in whatever happens (seconds).
pub const SESSION_ABSOLUTE_SECONDS_MAX: i64 = 12 * 3600;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceState {
    Pending,
    Active,
    Lost,
    Revoked,
}

impl DeviceState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Pending => "pending",
            DeviceState::Active => "active",
            DeviceState::Lost => "lost",
            DeviceState::Revoked => "revoked",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub user_id: String,
    /// RFC 7638 thumbprint of the device's public key: what DPoP proofs are checked against.
    pub thumbprint: String,
    pub install_id: String,
    pub name: String,
    pub state: DeviceState,
    pub registered_at_micros: i64,
}

/// How many devices of one user may be signed in at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoginPolicy {
    /// Up to this many sessions; beyond it the sign-in is refused.
    AllowUpTo(u8),
    /// One session: a new sign-in ends the older one, which is told it was signed in elsewhere.
    Single,
    /// One session: a new sign-in is refused while one is open.
    RefuseNew,
}

impl Default for LoginPolicy {
    fn default() -> LoginPolicy {
        LoginPolicy::AllowUpTo(3)
    }
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    SignedOut,
    SignedInElsewhere,
    DeviceRevoked,
    DeviceLost,
    UserDisabled,
    RefreshReused,
    IdleTimeout,
    AbsoluteTimeout,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::SignedOut => "signed_out",
            EndReason::SignedInElsewhere => "signed_in_elsewhere",
            EndReason::DeviceRevoked => "device_revoked",
            EndReason::DeviceLost => "device_lost",
            EndReason::UserDisabled => "user_disabled",
            EndReason::RefreshReused => "refresh_token_reused",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::AbsoluteTimeout => "absolute_timeout",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub device_id: String,
    pub started_at_micros: i64,
    pub last_used_micros: i64,
    /// SHA-256 of the current refresh token.
    pub refresh_hash: [u8; 32],
    /// Hashes of refresh tokens already rotated away: seeing one again ends the session.
    pub used_refresh_hashes: Vec<[u8; 32]>,
    pub ended: Option<EndReason>,
}

impl Session {
    /// Whether the session may still be used at `now`, and if not, why.
    pub fn expiry(&self, now_micros: i64) -> Option<EndReason> {
        if let Some(reason) = self.ended {
            return Some(reason);
        }
        if now_micros - self.last_used_micros > SESSION_IDLE_SECONDS_MAX * 1_000_000 {
            return Some(EndReason::IdleTimeout);
        }
        if now_micros - self.started_at_micros > SESSION_ABSOLUTE_SECONDS_MAX * 1_000_000 {
            return Some(EndReason::AbsoluteTimeout);
        }
        None
    }
}

/// A device or session command. `actor` is the signed-in user acting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceCommand {
    /// An app install registers its public key (by thumbprint).
    Register {
        user_id: String,
        device_id: String,
        thumbprint: String,
        install_id: String,
        name: String,
    },
    /// Confirms a pending device, from an active device of the actor (`actor_device`): the
    /// device's own user, or the merchant's master (or an operator with `manage_devices`). A
    /// stolen password alone therefore never binds a device.
    Confirm {
        actor: String,
        actor_device: String,
        device_id: String,
    },
    Revoke {
        actor: String,
        device_id: String,
    },
    /// Reports a device lost (or found again): its sessions end at once.
    SetLost {
        actor: String,
        device_id: String,
        lost: bool,
    },
    /// The master chooses the merchant's login policy.
    SetPolicy {
        actor: String,
        policy: LoginPolicy,
    },
    /// A sign-in on an active device: a session holding the hash of its first refresh token.
    StartSession {
        user_id: String,
        device_id: String,
        session_id: String,
        refresh_hash: [u8; 32],
    },
    /// A refresh: the presented token's hash must be the current one.
    Rotate {
        session_id: String,
        presented_hash: [u8; 32],
        new_hash: [u8; 32],
    },
    EndSession {
        actor: String,
        session_id: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceError {
    UnknownUser,
    UnknownActor,
    BadId,
    UnknownDevice,
    DeviceExists,
    /// Another live device already holds this key.
    KeyInUse,
    TooManyDevices,
    /// The device is pending, lost or revoked, or not the user's.
    DeviceNotActive,
    /// The actor may not act on this device, session or policy.
    NotAllowed,
    BadPolicy,
    /// The merchant's login policy refuses another session now.
    SessionLimit,
    UnknownSession,
    SessionExists,
    SessionEnded(EndReason),
    /// The presented refresh token is not this session's.
    InvalidRefresh,
}

/// What a device command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceOutcome {
    Device(Device),
    /// A session, and the sessions its start ended (they are told they were signed in
    /// elsewhere).
    Session {
        session: Session,
        ended: Vec<String>,
    },
    Policy(LoginPolicy),
    /// A refresh token already rotated away was presented again: it was stolen, so the
    /// session is now ended. This is a change of state, hence an outcome, which callers must
    /// answer as a refusal.
    RefreshReused {
        session_id: String,
    },
}

/// Devices, sessions and login policies of all merchants. User facts (who exists, who is
/// master, who is disabled) come from the [`Directory`].
#[derive(Clone, Debug, Default)]
pub struct Devices {
    devices: Vec<Device>,
    device_index: HashMap<String, usize>,
    sessions: Vec<Session>,
    session_index: HashMap<String, usize>,
    policies: HashMap<String, LoginPolicy>,
}

impl Devices {
    pub fn device(&self, id: &str) -> Option<&Device> {
        self.device_index.get(id).map(|&i| &self.devices[i])
    }

    pub fn session(&self, id: &str) -> Option<&Session> {
        self.session_index.get(id).map(|&i| &self.sessions[i])
    }

    pub fn user_devices(&self, user_id: &str) -> impl Iterator<Item = &Device> {
        self.devices.iter().filter(move |d| d.user_id == user_id)
    }

    pub fn device_sessions(&self, device_id: &str) -> impl Iterator<Item = &Session> {
        self.sessions
            .iter()
            .filter(move |s| s.device_id == device_id)
    }

    pub fn policy(&self, merchant_id: &str) -> LoginPolicy {
        self.policies.get(merchant_id).copied().unwrap_or_default()
    }

    /// The session behind a request, if it may be used now: not ended or expired, its device
    /// active and holding `thumbprint` (the key the request's DPoP proof was signed with), its
    /// user enabled.
    pub fn live_session(
        &self,
        users: &Directory,
        session_id: &str,
        thumbprint: &str,
        now_micros: i64,
    ) -> Result<&Session, DeviceError> {
        let session = self
            .session(session_id)
            .ok_or(DeviceError::UnknownSession)?;
        if let Some(reason) = session.expiry(now_micros) {
            return Err(DeviceError::SessionEnded(reason));
        }
        let user = users
            .user(&session.user_id)
            .ok_or(DeviceError::UnknownUser)?;
        if user.disabled {
            return Err(DeviceError::SessionEnded(EndReason::UserDisabled));
        }
        let device = self
            .device(&session.device_id)
            .ok_or(DeviceError::UnknownDevice)?;
        match device.state {
            DeviceState::Active if device.thumbprint == thumbprint => Ok(session),
            DeviceState::Active | DeviceState::Pending => Err(DeviceError::DeviceNotActive),
            DeviceState::Lost => Err(DeviceError::SessionEnded(EndReason::DeviceLost)),
            DeviceState::Revoked => Err(DeviceError::SessionEnded(EndReason::DeviceRevoked)),
        }
    }

    /// Applies a command. A refusal changes nothing.
    pub fn apply(
        &mut self,
        users: &Directory,
        now_micros: i64,
        command: &DeviceCommand,
    ) -> Result<DeviceOutcome, DeviceError> {
        match command {
            DeviceCommand::Register {
                user_id,
                device_id,
                thumbprint,
                install_id,
                name,
            } => {
                let user = enabled(users, user_id).ok_or(DeviceError::UnknownUser)?;
                if !label_ok(device_id) || !label_ok(thumbprint) || !label_ok(install_id) {
                    return Err(DeviceError::BadId);
                }
                if name.len() > LABEL_LEN_MAX {
                    return Err(DeviceError::BadId);
                }
                if self.device_index.contains_key(device_id) {
                    return Err(DeviceError::DeviceExists);
                }
                if self
                    .devices
                    .iter()
                    .any(|d| d.thumbprint == *thumbprint && d.state != DeviceState::Revoked)
                {
                    return Err(DeviceError::KeyInUse);
                }
                let live = self
                    .user_devices(user_id)
                    .filter(|d| d.state != DeviceState::Revoked)
                    .count();
                if live >= DEVICES_PER_USER_MAX {
                    return Err(DeviceError::TooManyDevices);
                }
                // Only the master's first device binds at once: nobody could confirm it.
                let state = if user.role == Role::Master && live == 0 {
                    DeviceState::Active
                } else {
                    DeviceState::Pending
                };
                let device = Device {
                    id: device_id.clone(),
                    user_id: user_id.clone(),
                    thumbprint: thumbprint.clone(),
                    install_id: install_id.clone(),
                    name: name.clone(),
                    state,
                    registered_at_micros: now_micros,
                };
                self.device_index
                    .insert(device_id.clone(), self.devices.len());
                self.devices.push(device.clone());
                Ok(DeviceOutcome::Device(device))
            }
            DeviceCommand::Confirm {
                actor,
                actor_device,
                device_id,
            } => {
                let device = self.device(device_id).ok_or(DeviceError::UnknownDevice)?;
                if device.state != DeviceState::Pending {
                    return Err(DeviceError::DeviceNotActive);
                }
                let actor_user = enabled(users, actor).ok_or(DeviceError::UnknownActor)?;
                let from_active_device = self
                    .device(actor_device)
                    .is_some_and(|d| d.user_id == *actor && d.state == DeviceState::Active);
                let may =
                    *actor == device.user_id || is_master_of(users, actor_user, &device.user_id);
                if !from_active_device || !may {
                    return Err(DeviceError::NotAllowed);
                }
                Ok(DeviceOutcome::Device(self.set_state(
                    device_id,
                    DeviceState::Active,
                    now_micros,
                )))
            }
            DeviceCommand::Revoke { actor, device_id } => {
                self.check_owner_or_master(users, actor, device_id)?;
                Ok(DeviceOutcome::Device(self.set_state(
                    device_id,
                    DeviceState::Revoked,
                    now_micros,
                )))
            }
            DeviceCommand::SetLost {
                actor,
                device_id,
                lost,
            } => {
                let device = self.check_owner_or_master(users, actor, device_id)?;
                let next = match (device.state, lost) {
                    (DeviceState::Active | DeviceState::Pending, true) => DeviceState::Lost,
                    (DeviceState::Lost, false) => DeviceState::Active,
                    _ => return Err(DeviceError::DeviceNotActive),
                };
                Ok(DeviceOutcome::Device(
                    self.set_state(device_id, next, now_micros),
                ))
            }
            DeviceCommand::SetPolicy { actor, policy } => {
                let actor_user = enabled(users, actor).ok_or(DeviceError::UnknownActor)?;
                if actor_user.role != Role::Master {
                    return Err(DeviceError::NotAllowed);
                }
                if let LoginPolicy::AllowUpTo(n) = policy
                    && (*n == 0 || usize::from(*n) > DEVICES_PER_USER_MAX)
                {
                    return Err(DeviceError::BadPolicy);
                }
                self.policies
                    .insert(actor_user.merchant_id.clone(), *policy);
                Ok(DeviceOutcome::Policy(*policy))
            }
            DeviceCommand::StartSession {
                user_id,
                device_id,
                session_id,
                refresh_hash,
            } => self.start_session(
                users,
                now_micros,
                user_id,
                device_id,
                session_id,
                refresh_hash,
            ),
            DeviceCommand::Rotate {
                session_id,
                presented_hash,
                new_hash,
            } => {
                let index = *self
                    .session_index
                    .get(session_id)
                    .ok_or(DeviceError::UnknownSession)?;
                let session = &self.sessions[index];
                if let Some(reason) = session.expiry(now_micros) {
                    return Err(DeviceError::SessionEnded(reason));
                }
                if session.refresh_hash == *presented_hash {
                    let session = &mut self.sessions[index];
                    let old = std::mem::replace(&mut session.refresh_hash, *new_hash);
                    session.used_refresh_hashes.push(old);
                    session.last_used_micros = now_micros;
                    return Ok(DeviceOutcome::Session {
                        session: session.clone(),
                        ended: Vec::new(),
                    });
                }
                if session.used_refresh_hashes.contains(presented_hash) {
                    self.sessions[index].ended = Some(EndReason::RefreshReused);
                    return Ok(DeviceOutcome::RefreshReused {
                        session_id: session_id.clone(),
                    });
                }
                Err(DeviceError::InvalidRefresh)
            }
            DeviceCommand::EndSession { actor, session_id } => {
                let index = *self
                    .session_index
                    .get(session_id)
                    .ok_or(DeviceError::UnknownSession)?;
                let owner = self.sessions[index].user_id.clone();
                let actor_user = enabled(users, actor).ok_or(DeviceError::UnknownActor)?;
                if *actor != owner && !is_master_of(users, actor_user, &owner) {
                    return Err(DeviceError::NotAllowed);
                }
                let session = &mut self.sessions[index];
                if let Some(reason) = session.ended {
                    return Err(DeviceError::SessionEnded(reason));
                }
                session.ended = Some(EndReason::SignedOut);
                Ok(DeviceOutcome::Session {
                    session: session.clone(),
                    ended: Vec::new(),
                })
            }
        }
    }

    fn start_session(
        &mut self,
        users: &Directory,
        now_micros: i64,
        user_id: &str,
        device_id: &str,
        session_id: &str,
        refresh_hash: &[u8; 32],
    ) -> Result<DeviceOutcome, DeviceError> {
        let user = enabled(users, user_id).ok_or(DeviceError::UnknownUser)?;
        if !label_ok(session_id) {
            return Err(DeviceError::BadId);
        }
        if self.session_index.contains_key(session_id) {
            return Err(DeviceError::SessionExists);
        }
        let device = self.device(device_id).ok_or(DeviceError::UnknownDevice)?;
        if device.user_id != user_id || device.state != DeviceState::Active {
            return Err(DeviceError::DeviceNotActive);
        }
        // A new sign-in on the same device replaces that device's session; the policy counts
        // the user's sessions on other devices.
        let others: Vec<usize> = self
            .sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.user_id == user_id && s.expiry(now_micros).is_none())
            .filter(|(_, s)| s.device_id != device_id)
            .map(|(i, _)| i)
            .collect();
        let to_end: Vec<usize> = match self.policy(&user.merchant_id) {
            LoginPolicy::AllowUpTo(n) if others.len() >= usize::from(n) => {
                return Err(DeviceError::SessionLimit);
            }
            LoginPolicy::RefuseNew if !others.is_empty() => return Err(DeviceError::SessionLimit),
            LoginPolicy::Single => others,
            LoginPolicy::AllowUpTo(_) | LoginPolicy::RefuseNew => Vec::new(),
        };
        let mut ended = Vec::new();
        for i in to_end {
            self.sessions[i].ended = Some(EndReason::SignedInElsewhere);
            ended.push(self.sessions[i].id.clone());
        }
        for s in &mut self.sessions {
            if s.device_id == device_id && s.ended.is_none() {
                s.ended = Some(EndReason::SignedOut);
            }
        }
        let session = Session {
            id: session_id.to_string(),
            user_id: user_id.to_string(),
            device_id: device_id.to_string(),
            started_at_micros: now_micros,
            last_used_micros: now_micros,
            refresh_hash: *refresh_hash,
            used_refresh_hashes: Vec::new(),
            ended: None,
        };
        self.session_index
            .insert(session_id.to_string(), self.sessions.len());
        self.sessions.push(session.clone());
        Ok(DeviceOutcome::Session { session, ended })
    }

    /// The device, if `actor` owns it or manages its merchant's devices.
    fn check_owner_or_master(
        &self,
        users: &Directory,
        actor: &str,
        device_id: &str,
    ) -> Result<&Device, DeviceError> {
        let device = self.device(device_id).ok_or(DeviceError::UnknownDevice)?;
        let actor_user = enabled(users, actor).ok_or(DeviceError::UnknownActor)?;
        if device.user_id != actor && !is_master_of(users, actor_user, &device.user_id) {
            return Err(DeviceError::NotAllowed);
        }
        Ok(device)
    }

    /// Moves a device to `state`; leaving `Active` ends its sessions at once.
    fn set_state(&mut self, device_id: &str, state: DeviceState, now_micros: i64) -> Device {
        let index = self.device_index[device_id];
        self.devices[index].state = state;
        let reason = match state {
            DeviceState::Lost => Some(EndReason::DeviceLost),
            DeviceState::Revoked => Some(EndReason::DeviceRevoked),
            DeviceState::Active | DeviceState::Pending => None,
        };
        if let Some(reason) = reason {
            for s in &mut self.sessions {
                if s.device_id == device_id && s.expiry(now_micros).is_none() {
                    s.ended = Some(reason);
                }
            }
        }
        self.devices[index].clone()
    }
}

/// The audit record of an applied device command, if it is one the audit log keeps (every
/// device change, sign-in, sign-out and detected token theft; not routine refreshes).
pub fn audit_record(
    devices: &Devices,
    users: &Directory,
    now_micros: i64,
    command: &DeviceCommand,
    outcome: &DeviceOutcome,
) -> Option<AuditRecord> {
    let (user_id, device_id, action, detail) = match (command, outcome) {
        (DeviceCommand::Register { user_id, .. }, DeviceOutcome::Device(d)) => (
            user_id.clone(),
            Some(d.id.clone()),
            "device_registered",
            format!("state={}", d.state.as_str()),
        ),
        (
            DeviceCommand::Confirm {
                actor,
                actor_device,
                device_id,
            },
            _,
        ) => (
            actor.clone(),
            Some(actor_device.clone()),
            "device_confirmed",
            format!("device={device_id}"),
        ),
        (DeviceCommand::Revoke { actor, device_id }, _) => (
            actor.clone(),
            None,
            "device_revoked",
            format!("device={device_id}"),
        ),
        (
            DeviceCommand::SetLost {
                actor,
                device_id,
                lost,
            },
            _,
        ) => (
            actor.clone(),
            None,
            if *lost { "device_lost" } else { "device_found" },
            format!("device={device_id}"),
        ),
        (DeviceCommand::SetPolicy { actor, policy }, _) => (
            actor.clone(),
            None,
            "login_policy_set",
            format!("{policy:?}"),
        ),
        (
            DeviceCommand::StartSession {
                user_id,
                device_id,
                session_id,
                ..
            },
            DeviceOutcome::Session { ended, .. },
        ) => (
            user_id.clone(),
            Some(device_id.clone()),
            "session_started",
            format!("session={session_id} ended={}", ended.join(",")),
        ),
        (DeviceCommand::Rotate { .. }, DeviceOutcome::RefreshReused { session_id }) => {
            let session = devices.session(session_id)?;
            (
                session.user_id.clone(),
                Some(session.device_id.clone()),
                "refresh_token_reused",
                format!("session={session_id} ended"),
            )
        }
        (DeviceCommand::EndSession { actor, session_id }, _) => (
            actor.clone(),
            None,
            "session_ended",
            format!("session={session_id}"),
        ),
        _ => return None,
    };
    let merchant_id = users.user(&user_id)?.merchant_id.clone();
    Some(AuditRecord {
        at_micros: now_micros,
        merchant_id,
        user_id,
        device_id,
        action: action.to_owned(),
        factors: Vec::new(),
        approver: None,
        detail,
    })
}

/// Longest accepted device id, key thumbprint, install id, session id or device name.
pub const LABEL_LEN_MAX: usize = 128;

fn label_ok(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= LABEL_LEN_MAX
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn enabled<'a>(users: &'a Directory, id: &str) -> Option<&'a MerchantUser> {
    users.user(id).filter(|u| !u.disabled)
}

/// Whether `actor` manages the devices of `user_id`'s merchant: the master, or an operator
/// granted `manage_devices`.
fn is_master_of(users: &Directory, actor: &MerchantUser, user_id: &str) -> bool {
    actor.effective().contains(Permissions::MANAGE_DEVICES)
        && users
            .user(user_id)
            .is_some_and(|u| u.merchant_id == actor.merchant_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::DirectoryCommand;

    const MINUTE: i64 = 60_000_000;

    fn users() -> Directory {
        let mut d = Directory::default();
        d.apply(
            1,
            &DirectoryCommand::CreateMaster {
                merchant_id: "M1".into(),
                user_id: "boss".into(),
                username: "boss".into(),
                password_hash: "$argon2id$hash".into(),
            },
        )
        .expect("master");
        d.apply(
            2,
            &DirectoryCommand::CreateOperator {
                actor: "boss".into(),
                user_id: "clerk".into(),
                username: "clerk".into(),
                password_hash: "$argon2id$hash".into(),
                permissions: Permissions::VIEW,
                refund_cap_single: 0,
                refund_cap_daily: 0,
                stores: Vec::new(),
            },
        )
        .expect("clerk");
        d.apply(
            3,
            &DirectoryCommand::CreateMaster {
                merchant_id: "M2".into(),
                user_id: "other".into(),
                username: "other".into(),
                password_hash: "$argon2id$hash".into(),
            },
        )
        .expect("other master");
        d
    }

    fn register(
        devices: &mut Devices,
        users: &Directory,
        user: &str,
        id: &str,
    ) -> Result<Device, DeviceError> {
        let command = DeviceCommand::Register {
            user_id: user.into(),
            device_id: id.into(),
            thumbprint: format!("jkt-{id}"),
            install_id: format!("install-{id}"),
            name: "phone".into(),
        };
        match devices.apply(users, 10, &command)? {
            DeviceOutcome::Device(device) => Ok(device),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn sign_in(
        devices: &mut Devices,
        users: &Directory,
        at: i64,
        user: &str,
        device: &str,
        session: &str,
    ) -> Result<(Session, Vec<String>), DeviceError> {
        let command = DeviceCommand::StartSession {
            user_id: user.into(),
            device_id: device.into(),
            session_id: session.into(),
            refresh_hash: [session.len() as u8; 32],
        };
        match devices.apply(users, at, &command)? {
            DeviceOutcome::Session { session, ended } => Ok((session, ended)),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn confirm(
        devices: &mut Devices,
        users: &Directory,
        actor: &str,
        actor_device: &str,
        id: &str,
    ) -> Result<DeviceOutcome, DeviceError> {
        devices.apply(
            users,
            20,
            &DeviceCommand::Confirm {
                actor: actor.into(),
                actor_device: actor_device.into(),
                device_id: id.into(),
            },
        )
    }

    #[test]
    fn only_the_masters_first_device_binds_at_once_others_wait_for_confirmation() {
        let users = users();
        let mut devices = Devices::default();
        assert_eq!(
            register(&mut devices, &users, "boss", "d1").unwrap().state,
            DeviceState::Active
        );
        assert_eq!(
            register(&mut devices, &users, "boss", "d2").unwrap().state,
            DeviceState::Pending
        );
        assert_eq!(
            register(&mut devices, &users, "clerk", "c1").unwrap().state,
            DeviceState::Pending
        );

        // A pending device cannot sign in.
        assert_eq!(
            sign_in(&mut devices, &users, 30, "clerk", "c1", "s-c1"),
            Err(DeviceError::DeviceNotActive)
        );
        // The clerk cannot confirm its own first device; another merchant's master cannot either.
        assert_eq!(
            confirm(&mut devices, &users, "clerk", "c1", "c1"),
            Err(DeviceError::NotAllowed)
        );
        assert_eq!(
            confirm(&mut devices, &users, "other", "d1", "c1"),
            Err(DeviceError::NotAllowed)
        );
        // The master confirms it; the master's own second device is confirmed from the first.
        confirm(&mut devices, &users, "boss", "d1", "c1").expect("master confirms");
        assert_eq!(
            confirm(&mut devices, &users, "boss", "d2", "d2"),
            Err(DeviceError::NotAllowed)
        );
        confirm(&mut devices, &users, "boss", "d1", "d2").expect("confirmed from d1");
        assert_eq!(devices.device("d2").unwrap().state, DeviceState::Active);
        sign_in(&mut devices, &users, 30, "clerk", "c1", "s-c1").expect("clerk signs in");
        // A device of someone else cannot be used to sign in.
        assert_eq!(
            sign_in(&mut devices, &users, 30, "clerk", "d1", "s-x"),
            Err(DeviceError::DeviceNotActive)
        );
    }

    #[test]
    fn registration_is_limited_and_keys_are_unique() {
        let users = users();
        let mut devices = Devices::default();
        for i in 0..DEVICES_PER_USER_MAX {
            register(&mut devices, &users, "clerk", &format!("c{i}")).expect("within limit");
        }
        assert_eq!(
            register(&mut devices, &users, "clerk", "c-extra"),
            Err(DeviceError::TooManyDevices)
        );
        assert_eq!(
            register(&mut devices, &users, "boss", "c0"),
            Err(DeviceError::DeviceExists)
        );
        let same_key = DeviceCommand::Register {
            user_id: "boss".into(),
            device_id: "d-copy".into(),
            thumbprint: "jkt-c1".into(),
            install_id: "i".into(),
            name: "copy".into(),
        };
        assert_eq!(
            devices.apply(&users, 10, &same_key),
            Err(DeviceError::KeyInUse)
        );
        assert_eq!(
            register(&mut devices, &users, "boss", "bad id"),
            Err(DeviceError::BadId)
        );
        assert_eq!(
            register(&mut devices, &users, "ghost", "g1"),
            Err(DeviceError::UnknownUser)
        );
        // A revoked device frees its slot.
        devices
            .apply(
                &users,
                11,
                &DeviceCommand::Revoke {
                    actor: "boss".into(),
                    device_id: "c0".into(),
                },
            )
            .expect("master revokes");
        register(&mut devices, &users, "clerk", "c-new").expect("slot freed");
    }

    #[test]
    fn login_policies_limit_concurrent_devices() {
        let users = users();
        let mut devices = Devices::default();
        for id in ["d1", "d2", "d3"] {
            register(&mut devices, &users, "boss", id).unwrap();
        }
        for id in ["d2", "d3"] {
            confirm(&mut devices, &users, "boss", "d1", id).unwrap();
        }
        let set = |devices: &mut Devices, actor: &str, policy| {
            devices.apply(
                &users,
                40,
                &DeviceCommand::SetPolicy {
                    actor: actor.into(),
                    policy,
                },
            )
        };
        assert_eq!(
            set(&mut devices, "clerk", LoginPolicy::Single),
            Err(DeviceError::NotAllowed)
        );
        assert_eq!(
            set(&mut devices, "boss", LoginPolicy::AllowUpTo(0)),
            Err(DeviceError::BadPolicy)
        );

        set(&mut devices, "boss", LoginPolicy::AllowUpTo(2)).unwrap();
        sign_in(&mut devices, &users, 50, "boss", "d1", "s1").unwrap();
        sign_in(&mut devices, &users, 50, "boss", "d2", "s2").unwrap();
        assert_eq!(
            sign_in(&mut devices, &users, 50, "boss", "d3", "s3"),
            Err(DeviceError::SessionLimit)
        );
        // Signing in again on the same device replaces its session and is not refused.
        sign_in(&mut devices, &users, 51, "boss", "d2", "s2b").unwrap();
        assert_eq!(
            devices.session("s2").unwrap().ended,
            Some(EndReason::SignedOut)
        );

        set(&mut devices, "boss", LoginPolicy::Single).unwrap();
        let (_, ended) = sign_in(&mut devices, &users, 52, "boss", "d3", "s3").unwrap();
        assert_eq!(ended, vec!["s1".to_string(), "s2b".to_string()]);
        assert_eq!(
            devices.live_session(&users, "s1", "jkt-d1", 53),
            Err(DeviceError::SessionEnded(EndReason::SignedInElsewhere))
        );

        set(&mut devices, "boss", LoginPolicy::RefuseNew).unwrap();
        assert_eq!(
            sign_in(&mut devices, &users, 54, "boss", "d1", "s4"),
            Err(DeviceError::SessionLimit)
        );
        // Another merchant's policy is untouched.
        assert_eq!(devices.policy("M2"), LoginPolicy::default());
    }

    #[test]
    fn revoked_or_lost_devices_end_their_sessions_at_once() {
        let users = users();
        let mut devices = Devices::default();
        register(&mut devices, &users, "boss", "d1").unwrap();
        register(&mut devices, &users, "clerk", "c1").unwrap();
        confirm(&mut devices, &users, "boss", "d1", "c1").unwrap();
        sign_in(&mut devices, &users, 100, "clerk", "c1", "s-c").unwrap();
        assert!(devices.live_session(&users, "s-c", "jkt-c1", 101).is_ok());
        // The session is bound to the device key: another key is refused.
        assert_eq!(
            devices.live_session(&users, "s-c", "jkt-d1", 101),
            Err(DeviceError::DeviceNotActive)
        );

        let lost = |lost| DeviceCommand::SetLost {
            actor: "clerk".into(),
            device_id: "c1".into(),
            lost,
        };
        devices.apply(&users, 102, &lost(true)).unwrap();
        assert_eq!(
            devices.live_session(&users, "s-c", "jkt-c1", 103),
            Err(DeviceError::SessionEnded(EndReason::DeviceLost))
        );
        // Found again: the device is usable, the old session stays ended.
        devices.apply(&users, 104, &lost(false)).unwrap();
        assert_eq!(
            devices.session("s-c").unwrap().ended,
            Some(EndReason::DeviceLost)
        );
        sign_in(&mut devices, &users, 105, "clerk", "c1", "s-c2").unwrap();

        // The clerk may not revoke the master's device; the master revokes the clerk's.
        let revoke = |actor: &str, id: &str| DeviceCommand::Revoke {
            actor: actor.into(),
            device_id: id.into(),
        };
        assert_eq!(
            devices.apply(&users, 106, &revoke("clerk", "d1")),
            Err(DeviceError::NotAllowed)
        );
        devices.apply(&users, 106, &revoke("boss", "c1")).unwrap();
        assert_eq!(
            devices.live_session(&users, "s-c2", "jkt-c1", 107),
            Err(DeviceError::SessionEnded(EndReason::DeviceRevoked))
        );
        assert_eq!(
            sign_in(&mut devices, &users, 108, "clerk", "c1", "s-c3"),
            Err(DeviceError::DeviceNotActive)
        );
    }

    #[test]
    fn refresh_tokens_rotate_and_a_reused_one_ends_the_session() {
        let users = users();
        let mut devices = Devices::default();
        register(&mut devices, &users, "boss", "d1").unwrap();
        let (session, _) = sign_in(&mut devices, &users, 0, "boss", "d1", "s1").unwrap();
        let first = session.refresh_hash;
        let rotate = |presented, new| DeviceCommand::Rotate {
            session_id: "s1".into(),
            presented_hash: presented,
            new_hash: new,
        };

        devices
            .apply(&users, MINUTE, &rotate(first, [2; 32]))
            .expect("rotated");
        assert_eq!(
            devices.apply(&users, MINUTE, &rotate([9; 32], [3; 32])),
            Err(DeviceError::InvalidRefresh)
        );
        assert!(
            devices.live_session(&users, "s1", "jkt-d1", MINUTE).is_ok(),
            "a wrong token changes nothing"
        );
        devices
            .apply(&users, 2 * MINUTE, &rotate([2; 32], [3; 32]))
            .expect("rotated again");

        // The first token, replayed by whoever stole it, ends the session for everybody.
        assert_eq!(
            devices.apply(&users, 3 * MINUTE, &rotate(first, [4; 32])),
            Ok(DeviceOutcome::RefreshReused {
                session_id: "s1".into()
            })
        );
        assert_eq!(
            devices.apply(&users, 3 * MINUTE, &rotate([3; 32], [5; 32])),
            Err(DeviceError::SessionEnded(EndReason::RefreshReused))
        );
    }

    #[test]
    fn sessions_expire_when_idle_and_at_their_absolute_limit_and_with_their_user() {
        let mut users = users();
        let mut devices = Devices::default();
        register(&mut devices, &users, "boss", "d1").unwrap();
        register(&mut devices, &users, "clerk", "c1").unwrap();
        confirm(&mut devices, &users, "boss", "d1", "c1").unwrap();
        sign_in(&mut devices, &users, 0, "boss", "d1", "s1").unwrap();
        let idle = SESSION_IDLE_SECONDS_MAX * 1_000_000;
        assert!(devices.live_session(&users, "s1", "jkt-d1", idle).is_ok());
        assert_eq!(
            devices.live_session(&users, "s1", "jkt-d1", idle + 1),
            Err(DeviceError::SessionEnded(EndReason::IdleTimeout))
        );

        // Kept busy by refreshes, a session still ends at its absolute limit.
        sign_in(&mut devices, &users, 0, "boss", "d1", "s2").unwrap();
        let mut hash = [2u8; 32];
        let mut at = 0;
        let absolute = SESSION_ABSOLUTE_SECONDS_MAX * 1_000_000;
        while at + 20 * MINUTE <= absolute {
            at += 20 * MINUTE;
            let next = [hash[0].wrapping_add(1); 32];
            devices
                .apply(
                    &users,
                    at,
                    &DeviceCommand::Rotate {
                        session_id: "s2".into(),
                        presented_hash: hash,
                        new_hash: next,
                    },
                )
                .expect("refresh within limits");
            hash = next;
        }
        assert_eq!(
            devices.live_session(&users, "s2", "jkt-d1", absolute + 1),
            Err(DeviceError::SessionEnded(EndReason::AbsoluteTimeout))
        );

        // Disabling a user ends its sessions.
        sign_in(&mut devices, &users, 0, "clerk", "c1", "s-c").unwrap();
        users
            .apply(
                5,
                &DirectoryCommand::SetDisabled {
                    actor: "boss".into(),
                    user_id: "clerk".into(),
                    disabled: true,
                },
            )
            .unwrap();
        assert_eq!(
            devices.live_session(&users, "s-c", "jkt-c1", 6),
            Err(DeviceError::SessionEnded(EndReason::UserDisabled))
        );
        // Signing out is for the owner or a manager of its devices.
        sign_in(&mut devices, &users, 6, "boss", "d1", "s3").unwrap();
        let end = |actor: &str| DeviceCommand::EndSession {
            actor: actor.into(),
            session_id: "s3".into(),
        };
        assert_eq!(
            devices.apply(&users, 7, &end("other")),
            Err(DeviceError::NotAllowed)
        );
        devices.apply(&users, 7, &end("boss")).expect("signed out");
        assert_eq!(
            devices.apply(&users, 8, &end("boss")),
            Err(DeviceError::SessionEnded(EndReason::SignedOut))
        );
    }
}
