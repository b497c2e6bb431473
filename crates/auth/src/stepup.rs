//! Step-up for fund operations: a one-time challenge from the server, bound to everything the
//! operation will do, signed by the device key, together with the payment password.
//!
//! The server issues a challenge naming merchant, user, device, action, amount, currency and
//! destination. The app shows them, the user enters the payment password, and the device signs
//! the challenge (a compact JWS, `typ` `dzero-stepup+jwt`, ES256, so it cannot be confused with
//! a DPoP proof). When the operation arrives, the challenge is consumed — whatever the result,
//! so it is never tried twice — and each bound field is compared with the operation actually
//! requested: a changed amount or destination fails even with a valid signature.
//!
//! Verification levels follow the PBOC measures for online payments: with a digital signature
//! from the device and a second factor, no level cap applies (merchant caps still do); two
//! factors without a signature allow at most 5,000.00 a day; one factor at most 1,000.00.

use std::collections::{HashMap, VecDeque};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::dpop::verify_signed;

/// How long a challenge may be answered (seconds).
pub const CHALLENGE_SECONDS: i64 = 300;
/// Outstanding challenges at most; beyond it the oldest are dropped.
pub const CHALLENGES_MAX: usize = 100_000;
/// The JWS type of a signed challenge.
pub const STEP_UP_TYP: &str = "dzero-stepup+jwt";

/// What a fund operation is, exactly: the challenge binds all of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub merchant_id: String,
    pub user_id: String,
    pub device_id: String,
    /// For example `refund`, `payout`, `bank_account`, `permissions`.
    pub action: String,
    /// Minor units (zero for operations without an amount).
    pub amount: i64,
    pub currency: String,
    /// The payment refunded, the bank account paid, the user changed.
    pub destination: String,
}

/// An issued challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub id: String,
    pub operation: Operation,
    pub expires_at: i64,
}

impl Challenge {
    /// The claims the device signs.
    pub fn claims(&self) -> serde_json::Value {
        let o = &self.operation;
        serde_json::json!({
            "challenge": self.id,
            "merchant_id": o.merchant_id,
            "user_id": o.user_id,
            "device_id": o.device_id,
            "action": o.action,
            "amount": o.amount,
            "currency": o.currency,
            "destination": o.destination,
        })
    }
}

/// How strongly an operation was verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// One factor.
    Single,
    /// Two factors, no digital signature.
    TwoFactor,
    /// A signature by the bound device key and a second factor.
    SignedTwoFactor,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Single => "single_factor",
            Level::TwoFactor => "two_factor",
            Level::SignedTwoFactor => "signed_two_factor",
        }
    }

    /// The level named by [`Level::as_str`]; anything else is not a level.
    pub fn parse(text: &str) -> Option<Level> {
        [Level::Single, Level::TwoFactor, Level::SignedTwoFactor]
            .into_iter()
            .find(|l| l.as_str() == text)
    }

    /// The factors an operation verified at this level presented (as the audit names them).
    pub fn factors(self) -> &'static [&'static str] {
        match self {
            Level::Single => &["payment_password"],
            Level::TwoFactor => &["one_time_code", "payment_password"],
            Level::SignedTwoFactor => &["device_signature", "payment_password"],
        }
    }

    /// The most this level allows per user and day, in fen; `None`: no level cap.
    pub fn daily_cap(self) -> Option<i64> {
        match self {
            Level::Single => Some(100_000),
            Level::TwoFactor => Some(500_000),
            Level::SignedTwoFactor => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepUpError {
    #[error("the challenge is unknown, used or expired")]
    UnknownChallenge,
    #[error("the operation differs from the one the challenge was issued for")]
    Mismatch,
    #[error("the challenge signature is malformed, not ES256, or does not verify")]
    BadSignature,
    #[error("the challenge is signed by another key than the device's")]
    WrongKey,
}

/// Outstanding challenges.
#[derive(Default)]
pub struct Challenges {
    pending: HashMap<String, Challenge>,
    order: VecDeque<(String, i64)>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Challenges({} outstanding)", self.pending.len())
    }
}

impl Challenges {
    /// Issues a challenge for `operation` from 16 random bytes.
    pub fn issue(&mut self, random: [u8; 16], operation: Operation, now_seconds: i64) -> Challenge {
        while let Some((id, expires_at)) = self.order.front() {
            if *expires_at >= now_seconds && self.pending.len() < CHALLENGES_MAX {
                break;
            }
            self.pending.remove(id);
            self.order.pop_front();
        }
        let challenge = Challenge {
            id: format!("chl_{}", URL_SAFE_NO_PAD.encode(random)),
            operation,
            expires_at: now_seconds + CHALLENGE_SECONDS,
        };
        self.pending.insert(challenge.id.clone(), challenge.clone());
        self.order
            .push_back((challenge.id.clone(), challenge.expires_at));
        challenge
    }

    /// Consumes challenge `id` for `requested`, checking the device's signature over it. The
    /// challenge is gone after this call whatever the result.
    pub fn redeem(
        &mut self,
        id: &str,
        requested: &Operation,
        signature: &str,
        device_thumbprint: &str,
        now_seconds: i64,
    ) -> Result<Challenge, StepUpError> {
        let challenge = self
            .pending
            .remove(id)
            .filter(|c| now_seconds <= c.expires_at)
            .ok_or(StepUpError::UnknownChallenge)?;
        if challenge.operation != *requested {
            return Err(StepUpError::Mismatch);
        }
        let (claims, thumbprint) =
            verify_signed(signature, STEP_UP_TYP).map_err(|_| StepUpError::BadSignature)?;
        if thumbprint != device_thumbprint {
            return Err(StepUpError::WrongKey);
        }
        if claims != challenge.claims() {
            return Err(StepUpError::Mismatch);
        }
        Ok(challenge)
    }

    /// Consumes challenge `id` for `requested` without a device signature (the one-time-code
    /// fallback: the challenge still binds the operation and is single use).
    pub fn redeem_unsigned(
        &mut self,
        id: &str,
        requested: &Operation,
        now_seconds: i64,
    ) -> Result<Challenge, StepUpError> {
        let challenge = self
            .pending
            .remove(id)
            .filter(|c| now_seconds <= c.expires_at)
            .ok_or(StepUpError::UnknownChallenge)?;
        if challenge.operation != *requested {
            return Err(StepUpError::Mismatch);
        }
        Ok(challenge)
    }

    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{Signature, SigningKey};
    use serde_json::{Value, json};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32].into()).expect("a valid scalar")
    }

    fn jwk(key: &SigningKey) -> Value {
        let point = key.verifying_key().to_encoded_point(false);
        json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(point.x().expect("x")),
            "y": URL_SAFE_NO_PAD.encode(point.y().expect("y")),
        })
    }

    fn thumb(key: &SigningKey) -> String {
        let jwk = jwk(key);
        crate::dpop::thumbprint(jwk["x"].as_str().expect("x"), jwk["y"].as_str().expect("y"))
    }

    fn sign(key: &SigningKey, typ: &str, claims: &Value) -> String {
        let header = json!({ "typ": typ, "alg": "ES256", "jwk": jwk(key) });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature: Signature = key.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    fn refund(amount: i64) -> Operation {
        Operation {
            merchant_id: "M1".into(),
            user_id: "clerk".into(),
            device_id: "d1".into(),
            action: "refund".into(),
            amount,
            currency: "CNY".into(),
            destination: "pay_1".into(),
        }
    }

    #[test]
    fn a_signed_challenge_authorizes_exactly_its_operation_once() {
        let mut challenges = Challenges::default();
        let device = key(1);
        let challenge = challenges.issue([1; 16], refund(5_000), 0);
        let signature = sign(&device, STEP_UP_TYP, &challenge.claims());
        assert_eq!(
            challenges.redeem(
                &challenge.id,
                &refund(5_000),
                &signature,
                &thumb(&device),
                10
            ),
            Ok(challenge.clone())
        );
        assert_eq!(
            challenges.redeem(
                &challenge.id,
                &refund(5_000),
                &signature,
                &thumb(&device),
                10
            ),
            Err(StepUpError::UnknownChallenge),
            "a reused challenge is refused"
        );
    }

    #[test]
    fn a_changed_amount_under_a_signed_challenge_is_refused_and_burns_it() {
        let mut challenges = Challenges::default();
        let device = key(1);
        let challenge = challenges.issue([1; 16], refund(5_000), 0);
        let signature = sign(&device, STEP_UP_TYP, &challenge.claims());
        assert_eq!(
            challenges.redeem(
                &challenge.id,
                &refund(500_000),
                &signature,
                &thumb(&device),
                10
            ),
            Err(StepUpError::Mismatch)
        );
        assert_eq!(
            challenges.redeem(
                &challenge.id,
                &refund(5_000),
                &signature,
                &thumb(&device),
                10
            ),
            Err(StepUpError::UnknownChallenge)
        );
        // Signed claims altered after issue (a different amount signed) do not pass either.
        let challenge = challenges.issue([2; 16], refund(5_000), 0);
        let mut claims = challenge.claims();
        claims["amount"] = json!(500_000);
        let forged = sign(&device, STEP_UP_TYP, &claims);
        assert_eq!(
            challenges.redeem(&challenge.id, &refund(5_000), &forged, &thumb(&device), 10),
            Err(StepUpError::Mismatch)
        );
    }

    #[test]
    fn another_key_a_dpop_proof_or_an_expired_challenge_is_refused() {
        let mut challenges = Challenges::default();
        let (device, thief) = (key(1), key(2));
        let challenge = challenges.issue([1; 16], refund(5_000), 0);
        let by_thief = sign(&thief, STEP_UP_TYP, &challenge.claims());
        assert_eq!(
            challenges.redeem(
                &challenge.id,
                &refund(5_000),
                &by_thief,
                &thumb(&device),
                10
            ),
            Err(StepUpError::WrongKey)
        );
        let challenge = challenges.issue([2; 16], refund(5_000), 0);
        let as_proof = sign(&device, "dpop+jwt", &challenge.claims());
        assert_eq!(
            challenges.redeem(
                &challenge.id,
                &refund(5_000),
                &as_proof,
                &thumb(&device),
                10
            ),
            Err(StepUpError::BadSignature)
        );
        let challenge = challenges.issue([3; 16], refund(5_000), 0);
        let signature = sign(&device, STEP_UP_TYP, &challenge.claims());
        assert_eq!(
            challenges.redeem(
                &challenge.id,
                &refund(5_000),
                &signature,
                &thumb(&device),
                CHALLENGE_SECONDS + 1
            ),
            Err(StepUpError::UnknownChallenge)
        );
    }

    #[test]
    fn levels_cap_amounts_as_the_pboc_measures_do() {
        assert_eq!(Level::Single.daily_cap(), Some(100_000));
        assert_eq!(Level::TwoFactor.daily_cap(), Some(500_000));
        assert_eq!(Level::SignedTwoFactor.daily_cap(), None);
        assert!(Level::SignedTwoFactor > Level::TwoFactor);
        for level in [Level::Single, Level::TwoFactor, Level::SignedTwoFactor] {
            assert_eq!(Level::parse(level.as_str()), Some(level));
        }
        assert_eq!(Level::parse("strong"), None);
    }
}
