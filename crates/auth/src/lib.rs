//! Merchant identity and security, the pieces that decide *who* may ask: merchant users and
//! their permissions, login and payment passwords (argon2id with a pepper, lockouts), PKCE for
//! the app's sign-in, DPoP proofs binding tokens to the device key, and the hash-chained audit
//! log.
//!
//! Architecture invariant: no secret (password, payment password, code, token) is kept or
//! logged in clear; they travel in `Secret`, whose `Debug` prints `***`, and are stored only
//! as peppered argon2id hashes.
//!
//! Devices and sessions (device binding, login policies, rotating refresh tokens) are modelled in
//! `devices`; wiring them to the sequencer and the HTTP endpoints, and step-up, build on it.

pub mod audit;
pub mod devices;
pub mod directory;
pub mod dpop;
pub mod permissions;
pub mod pkce;
pub mod secrets;
pub mod stepup;
pub mod tokens;
pub mod totp;

pub use audit::{AuditEntry, AuditRecord, ChainBreak, append, verify_chain};
pub use devices::{
    Device, DeviceCommand, DeviceError, DeviceOutcome, DeviceState, Devices, EndReason,
    LoginPolicy, Session,
};
pub use directory::{Directory, DirectoryCommand, DirectoryError, MerchantUser};
pub use permissions::{GrantError, Grantee, Permissions, Role, check_grant};
pub use secrets::{Attempts, Secret, SecretError, SecretHasher};
