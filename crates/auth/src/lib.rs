//! Merchant identity and security, the pieces that decide *who* may ask: merchant users and
//! their permissions, login and payment passwords (argon2id with a pepper, lockouts), PKCE for
//! the app's sign-in, DPoP proofs binding tokens to the device key, and the hash-chained audit
//! log.
//!
//! Architecture invariant: no secret (password, payment password, code, token) is kept or
//! logged in clear; they travel in `Secret`, whose `Debug` prints `***`, and are stored only
//! as peppered argon2id hashes.
//!
//! This crate is the first part of the merchant-security work: the HTTP endpoints, sessions,
//! devices, DPoP and step-up build on it.

pub mod audit;
pub mod directory;
pub mod dpop;
pub mod permissions;
pub mod pkce;
pub mod secrets;

pub use audit::{AuditEntry, AuditRecord, ChainBreak, append, verify_chain};
pub use directory::{Directory, DirectoryCommand, DirectoryError, MerchantUser};
pub use permissions::{GrantError, Grantee, Permissions, Role, check_grant};
pub use secrets::{Attempts, Secret, SecretError, SecretHasher};
