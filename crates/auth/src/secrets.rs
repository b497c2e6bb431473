//! Login passwords and payment passwords: argon2id with a server-side pepper, a policy for
//! payment passwords (six or more digits, common ones refused) and a lockout after repeated
//! failures. Secrets travel in [`Secret`], whose `Debug` never shows them.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// A secret typed by a person (password, payment password, one-time code). `Debug` prints
/// `***`, so it cannot leak into logs by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret itself, for hashing and comparing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Failures after which a payment password is locked.
pub const PAYMENT_PASSWORD_FAILURES_MAX: u32 = 5;
/// Payment password length bounds, in digits.
pub const PAYMENT_PASSWORD_DIGITS_MIN: usize = 6;
pub const PAYMENT_PASSWORD_DIGITS_MAX: usize = 12;
/// Login password length bounds, in characters.
pub const PASSWORD_CHARS_MIN: usize = 10;
pub const PASSWORD_CHARS_MAX: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the password must have {PASSWORD_CHARS_MIN} to {PASSWORD_CHARS_MAX} characters")]
    PasswordLength,
    #[error(
        "the payment password must be {PAYMENT_PASSWORD_DIGITS_MIN} to {PAYMENT_PASSWORD_DIGITS_MAX} digits"
    )]
    PaymentPasswordFormat,
    #[error("the payment password is too easy to guess")]
    PaymentPasswordCommon,
    #[error("hashing failed")]
    Hashing,
}

/// Hashes and checks secrets with argon2id, keyed by a pepper kept outside the database, so a
/// stolen database alone does not allow guessing even six-digit payment passwords offline.
#[derive(Clone)]
pub struct SecretHasher {
    pepper: Vec<u8>,
    params: Params,
}

impl fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretHasher").finish_non_exhaustive()
    }
}

impl SecretHasher {
    /// The recommended cost: 19 MiB of memory, 2 passes, 1 lane.
    pub fn new(pepper: &[u8]) -> SecretHasher {
        SecretHasher::with_cost(pepper, 19 * 1024, 2)
    }

    /// A custom cost (tests use a cheap one).
    pub fn with_cost(pepper: &[u8], memory_kib: u32, passes: u32) -> SecretHasher {
        SecretHasher {
            pepper: pepper.to_vec(),
            params: Params::new(memory_kib, passes, 1, None).unwrap_or_default(),
        }
    }

    /// The key access tokens are MACed with, derived from the same pepper.
    pub fn token_key(&self) -> crate::tokens::TokenKey {
        crate::tokens::TokenKey::from_pepper(&self.pepper)
    }

    /// The key DPoP server nonces are derived with: the pepper and `boot`, bytes drawn when the
    /// server starts, so a restart changes every nonce and proofs made before it stop working
    /// (the `jti` cache that would have caught their replay does not survive a restart).
    pub fn nonce_key(&self, boot: &[u8]) -> crate::tokens::TokenKey {
        let mut material = self.pepper.clone();
        material.extend_from_slice(boot);
        crate::tokens::TokenKey::from_pepper(&material)
    }

    /// The TOTP seed of a user's enrollment, derived from the pepper (never stored).
    pub fn totp_seed(&self, user_id: &str, nonce: &str) -> [u8; 32] {
        crate::totp::seed(&self.pepper, user_id, nonce)
    }

    fn argon2(&self) -> Result<Argon2<'_>, SecretError> {
        Argon2::new_with_secret(
            &self.pepper,
            Algorithm::Argon2id,
            Version::V0x13,
            self.params.clone(),
        )
        .map_err(|_| SecretError::Hashing)
    }

    /// The PHC string of `secret` with the given 16-byte salt (drawn by the caller).
    pub fn hash(&self, secret: &Secret, salt: [u8; 16]) -> Result<String, SecretError> {
        let salt = SaltString::encode_b64(&salt).map_err(|_| SecretError::Hashing)?;
        Ok(self
            .argon2()?
            .hash_password(secret.expose().as_bytes(), &salt)
            .map_err(|_| SecretError::Hashing)?
            .to_string())
    }

    /// Whether `secret` matches the stored hash. A malformed hash matches nothing.
    pub fn verify(&self, secret: &Secret, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return false;
        };
        self.argon2()
            .map(|a| {
                a.verify_password(secret.expose().as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    }
}

/// Checks a new login password's length.
pub fn check_password(password: &Secret) -> Result<(), SecretError> {
    let chars = password.expose().chars().count();
    if (PASSWORD_CHARS_MIN..=PASSWORD_CHARS_MAX).contains(&chars) {
        Ok(())
    } else {
        Err(SecretError::PasswordLength)
    }
}

/// Checks a new payment password: digits only, six to twelve of them, and not one of the
/// patterns people pick first (one digit repeated, a run up or down, a repeated pair or
/// triple, or a well-known choice).
pub fn check_payment_password(pin: &Secret) -> Result<(), SecretError> {
    let digits = pin.expose().as_bytes();
    if !(PAYMENT_PASSWORD_DIGITS_MIN..=PAYMENT_PASSWORD_DIGITS_MAX).contains(&digits.len())
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return Err(SecretError::PaymentPasswordFormat);
    }
    let steps: Vec<i16> = digits
        .windows(2)
        .map(|w| i16::from(w[1]) - i16::from(w[0]))
        .collect();
    let run = steps.iter().all(|s| *s == 1) || steps.iter().all(|s| *s == -1);
    let repeats = |period: usize| {
        digits
            .iter()
            .enumerate()
            .all(|(i, d)| *d == digits[i % period])
    };
    let well_known = [
        "520520", "521521", "131420", "147258", "159357", "112233", "123123",
    ];
    if run || repeats(1) || repeats(2) || repeats(3) || well_known.contains(&pin.expose()) {
        return Err(SecretError::PaymentPasswordCommon);
    }
    Ok(())
}

/// Failed attempts at a payment password (or a one-time code) and whether it is locked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attempts {
    pub failures: u32,
    pub locked: bool,
}

impl Attempts {
    /// Records one attempt against `max` failures; a success resets the count. A locked
    /// secret fails whatever is typed.
    pub fn record(&mut self, correct: bool, max: u32) -> bool {
        if self.locked {
            return false;
        }
        if correct {
            self.failures = 0;
            return true;
        }
        self.failures += 1;
        if self.failures >= max {
            self.locked = true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> SecretHasher {
        SecretHasher::with_cost(b"test pepper", 64, 1)
    }

    #[test]
    fn hashes_verify_only_the_right_secret_and_the_right_pepper() {
        let h = hasher();
        let stored = h
            .hash(&Secret::new("correct horse"), [7; 16])
            .expect("hash");
        assert!(stored.starts_with("$argon2id$"));
        assert!(!stored.contains("correct horse"));
        assert!(h.verify(&Secret::new("correct horse"), &stored));
        assert!(!h.verify(&Secret::new("correct horsf"), &stored));
        let other_pepper = SecretHasher::with_cost(b"other pepper", 64, 1);
        assert!(!other_pepper.verify(&Secret::new("correct horse"), &stored));
        assert!(!h.verify(&Secret::new("x"), "not a hash"));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        assert_eq!(format!("{:?}", Secret::new("135792")), "***");
    }

    #[test]
    fn payment_password_policy() {
        for good in ["135792", "274916", "90817263"] {
            assert_eq!(check_payment_password(&Secret::new(good)), Ok(()), "{good}");
        }
        for common in [
            "123456", "654321", "000000", "121212", "123123", "520520", "456789",
        ] {
            assert_eq!(
                check_payment_password(&Secret::new(common)),
                Err(SecretError::PaymentPasswordCommon),
                "{common}"
            );
        }
        for malformed in ["12345", "12a456", "1234567890123", ""] {
            assert_eq!(
                check_payment_password(&Secret::new(malformed)),
                Err(SecretError::PaymentPasswordFormat),
                "{malformed}"
            );
        }
    }

    #[test]
    fn five_failures_lock_and_a_locked_secret_never_passes() {
        let mut attempts = Attempts::default();
        for _ in 0..4 {
            assert!(!attempts.record(false, PAYMENT_PASSWORD_FAILURES_MAX));
        }
        assert!(
            attempts.record(true, PAYMENT_PASSWORD_FAILURES_MAX),
            "success resets"
        );
        for _ in 0..5 {
            attempts.record(false, PAYMENT_PASSWORD_FAILURES_MAX);
        }
        assert!(attempts.locked);
        assert!(!attempts.record(true, PAYMENT_PASSWORD_FAILURES_MAX));
    }
}
