//! What merchant sign-in hands out, and the throttle in front of it.
//!
//! - **Authorization codes** (OAuth 2.0 code flow with PKCE, S256 only): single use — the first
//!   redemption consumes the code whatever its result — valid for [`CODE_SECONDS`], bound to
//!   the client, the redirect URI and the challenge. Only their SHA-256 is kept.
//! - **Access tokens**: short-lived ([`ACCESS_TOKEN_SECONDS`]) and bound to the device key: the
//!   MAC covers the session, the key's thumbprint and the expiry, so a token presented with a
//!   DPoP proof from another key does not verify. They need no storage; the session behind
//!   them is checked on every request, so a revoked device or ended session stops them at once.
//! - **Login throttle**: failures counted per account and per client over a sliding window;
//!   the same refusal whether the account exists or not.
//!
//! Randomness comes from the caller, so everything here is deterministic and testable.

use std::collections::{HashMap, VecDeque};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::pkce;

/// How long an authorization code may be redeemed (seconds).
pub const CODE_SECONDS: i64 = 60;
/// Outstanding codes at most; beyond it the oldest are dropped.
pub const CODES_MAX: usize = 100_000;
/// How long a DPoP server nonce is handed out (seconds); the previous one is still accepted.
pub const NONCE_SECONDS: i64 = 300;
/// How long an access token is valid (seconds).
pub const ACCESS_TOKEN_SECONDS: i64 = 300;
/// Longest accepted client id or redirect URI.
pub const CLIENT_FIELD_LEN_MAX: usize = 512;

/// What a code was issued for: who signed in, from which device, for which client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub user_id: String,
    pub device_id: String,
    pub client_id: String,
    pub redirect_uri: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("the authorization code is unknown, used or expired")]
    InvalidCode,
    #[error("the code was issued to another client or redirect URI")]
    WrongClient,
    #[error("the code verifier does not match the challenge")]
    WrongVerifier,
    #[error("the PKCE challenge is missing or not S256")]
    BadChallenge,
    #[error("a client field is empty or too long")]
    BadClient,
}

struct Pending {
    grant: Grant,
    challenge: String,
    expires_at: i64,
}

/// Outstanding authorization codes, by hash.
#[derive(Default)]
pub struct Codes {
    pending: HashMap<[u8; 32], Pending>,
    order: VecDeque<([u8; 32], i64)>,
}

impl std::fmt::Debug for Codes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Codes({} outstanding)", self.pending.len())
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Codes {
    /// Issues a code from 32 random bytes for `grant`, once the password was checked. The
    /// challenge must be S256 (`method` `None` or `plain` is refused).
    pub fn issue(
        &mut self,
        random: [u8; 32],
        grant: Grant,
        method: Option<&str>,
        challenge: Option<&str>,
        now_seconds: i64,
    ) -> Result<String, CodeError> {
        pkce::check_challenge(method, challenge).map_err(|_| CodeError::BadChallenge)?;
        for field in [&grant.client_id, &grant.redirect_uri] {
            if field.is_empty() || field.len() > CLIENT_FIELD_LEN_MAX {
                return Err(CodeError::BadClient);
            }
        }
        self.expire(now_seconds);
        while self.pending.len() >= CODES_MAX {
            match self.order.pop_front() {
                Some((hash, _)) => {
                    self.pending.remove(&hash);
                }
                None => break,
            }
        }
        let code = URL_SAFE_NO_PAD.encode(random);
        let hash = sha256(code.as_bytes());
        let expires_at = now_seconds + CODE_SECONDS;
        self.pending.insert(
            hash,
            Pending {
                grant,
                challenge: challenge.unwrap_or_default().to_owned(),
                expires_at,
            },
        );
        self.order.push_back((hash, expires_at));
        Ok(code)
    }

    /// Redeems a code. It is consumed by this call whatever the result, so a code can never be
    /// tried twice.
    pub fn redeem(
        &mut self,
        code: &str,
        verifier: &str,
        client_id: &str,
        redirect_uri: &str,
        now_seconds: i64,
    ) -> Result<Grant, CodeError> {
        let pending = self
            .pending
            .remove(&sha256(code.as_bytes()))
            .ok_or(CodeError::InvalidCode)?;
        if now_seconds > pending.expires_at {
            return Err(CodeError::InvalidCode);
        }
        if pending.grant.client_id != client_id || pending.grant.redirect_uri != redirect_uri {
            return Err(CodeError::WrongClient);
        }
        pkce::verify(verifier, &pending.challenge).map_err(|_| CodeError::WrongVerifier)?;
        Ok(pending.grant)
    }

    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    fn expire(&mut self, now_seconds: i64) {
        while let Some(&(hash, expires_at)) = self.order.front() {
            if expires_at >= now_seconds {
                break;
            }
            self.order.pop_front();
            self.pending.remove(&hash);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token is malformed or its MAC does not verify for this key")]
    Invalid,
    #[error("the access token has expired")]
    Expired,
}

/// Mints and checks access tokens `dza.<session>.<expiry>.<mac>`.
pub struct TokenKey {
    /// A 32-byte key, zero-padded to SHA-256's block as HMAC itself would pad it.
    key: [u8; 64],
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

impl TokenKey {
    /// Derives the MAC key from the server's pepper (a separate key, by domain separation).
    pub fn from_pepper(pepper: &[u8]) -> TokenKey {
        let mut hasher = Sha256::new();
        hasher.update(b"dzero access-token key\0");
        hasher.update(pepper);
        let mut key = [0u8; 64];
        key[..32].copy_from_slice(&hasher.finalize());
        TokenKey { key }
    }

    fn mac(&self, session_id: &str, thumbprint: &str, expires_at: i64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&self.key.into());
        mac.update(format!("{session_id}\0{thumbprint}\0{expires_at}").as_bytes());
        mac
    }

    /// The DPoP server nonce of the `NONCE_SECONDS` window containing `now_seconds`: derived,
    /// not stored, so every server holding the pepper agrees on it.
    pub fn dpop_nonce(&self, now_seconds: i64) -> String {
        let window = now_seconds.div_euclid(NONCE_SECONDS);
        let tag = self.mac("dpop-nonce", "", window).finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(&tag[..16])
    }

    /// Whether `nonce` is the current window's or the previous one's.
    pub fn dpop_nonce_fresh(&self, nonce: &str, now_seconds: i64) -> bool {
        nonce == self.dpop_nonce(now_seconds)
            || nonce == self.dpop_nonce(now_seconds - NONCE_SECONDS)
    }

    /// A token for `session_id`, bound to the device key `thumbprint`.
    pub fn mint(&self, session_id: &str, thumbprint: &str, now_seconds: i64) -> String {
        let expires_at = now_seconds + ACCESS_TOKEN_SECONDS;
        let tag = self
            .mac(session_id, thumbprint, expires_at)
            .finalize()
            .into_bytes();
        format!(
            "dza.{session_id}.{expires_at}.{}",
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The session a token names, if it verifies for the key that signed the request's DPoP
    /// proof and has not expired. The comparison is constant-time.
    pub fn check(
        &self,
        token: &str,
        thumbprint: &str,
        now_seconds: i64,
    ) -> Result<String, TokenError> {
        let mut parts = token.split('.');
        let (Some("dza"), Some(session_id), Some(expiry), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Invalid);
        };
        let expires_at: i64 = expiry.parse().map_err(|_| TokenError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Invalid)?;
        self.mac(session_id, thumbprint, expires_at)
            .verify_slice(&tag)
            .map_err(|_| TokenError::Invalid)?;
        if now_seconds >= expires_at {
            return Err(TokenError::Expired);
        }
        Ok(session_id.to_owned())
    }
}

/// Failures allowed per account within [`THROTTLE_WINDOW_SECONDS`].
pub const ACCOUNT_FAILURES_MAX: usize = 5;
/// Failures allowed per client (address) within the window.
pub const CLIENT_FAILURES_MAX: usize = 20;
pub const THROTTLE_WINDOW_SECONDS: i64 = 15 * 60;
/// Keys tracked at most; beyond it the throttle forgets the stalest.
pub const THROTTLE_KEYS_MAX: usize = 100_000;

/// Sign-in failures per account and per client over a sliding window.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: HashMap<String, VecDeque<i64>>,
}

impl LoginThrottle {
    /// Whether a sign-in may be tried now; if not, the seconds until it may. Checked before the
    /// password, and keyed by the account *name* asked for, so unknown accounts are throttled
    /// exactly like known ones.
    pub fn check(&mut self, account: &str, client: &str, now_seconds: i64) -> Result<(), i64> {
        let wait = |entries: Option<&VecDeque<i64>>, max: usize| {
            entries
                .filter(|e| e.len() >= max)
                .and_then(|e| e.front())
                .map(|first| first + THROTTLE_WINDOW_SECONDS - now_seconds)
                .filter(|w| *w > 0)
        };
        self.prune(key("a", account), now_seconds);
        self.prune(key("c", client), now_seconds);
        let account_wait = wait(self.failures.get(&key("a", account)), ACCOUNT_FAILURES_MAX);
        let client_wait = wait(self.failures.get(&key("c", client)), CLIENT_FAILURES_MAX);
        match account_wait.max(client_wait) {
            Some(seconds) => Err(seconds),
            None => Ok(()),
        }
    }

    pub fn record_failure(&mut self, account: &str, client: &str, now_seconds: i64) {
        if self.failures.len() >= THROTTLE_KEYS_MAX {
            self.forget_stalest();
        }
        for k in [key("a", account), key("c", client)] {
            let entries = self.failures.entry(k).or_default();
            entries.push_back(now_seconds);
            while entries.len() > CLIENT_FAILURES_MAX {
                entries.pop_front();
            }
        }
    }

    /// A successful sign-in clears the account's failures (not the client's).
    pub fn record_success(&mut self, account: &str) {
        self.failures.remove(&key("a", account));
    }

    fn prune(&mut self, k: String, now_seconds: i64) {
        if let Some(entries) = self.failures.get_mut(&k) {
            while entries
                .front()
                .is_some_and(|t| t + THROTTLE_WINDOW_SECONDS <= now_seconds)
            {
                entries.pop_front();
            }
            if entries.is_empty() {
                self.failures.remove(&k);
            }
        }
    }

    fn forget_stalest(&mut self) {
        let stalest = self
            .failures
            .iter()
            .min_by_key(|(_, e)| e.back().copied().unwrap_or(i64::MIN))
            .map(|(k, _)| k.clone());
        if let Some(k) = stalest {
            self.failures.remove(&k);
        }
    }
}

fn key(kind: &str, name: &str) -> String {
    format!("{kind}:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            user_id: "boss".into(),
            device_id: "d1".into(),
            client_id: "dzero-app".into(),
            redirect_uri: "dzero://signed-in".into(),
        }
    }

    const VERIFIER: &str = "a-verifier-of-at-least-forty-three-characters-long-0123";

    fn issue(codes: &mut Codes, random: u8, now: i64) -> String {
        let challenge = pkce::challenge_of(VERIFIER);
        codes
            .issue([random; 32], grant(), Some("S256"), Some(&challenge), now)
            .expect("issued")
    }

    #[test]
    fn codes_are_single_use_even_when_the_first_try_fails() {
        let mut codes = Codes::default();
        let code = issue(&mut codes, 1, 0);
        assert_eq!(
            codes.redeem(
                &code,
                "wrong-verifier-wrong-verifier-wrong-verifier-00",
                "dzero-app",
                "dzero://signed-in",
                1
            ),
            Err(CodeError::WrongVerifier)
        );
        assert_eq!(
            codes.redeem(&code, VERIFIER, "dzero-app", "dzero://signed-in", 1),
            Err(CodeError::InvalidCode)
        );
        let code = issue(&mut codes, 2, 0);
        assert_eq!(
            codes.redeem(&code, VERIFIER, "dzero-app", "dzero://signed-in", 1),
            Ok(grant())
        );
        assert_eq!(
            codes.redeem(&code, VERIFIER, "dzero-app", "dzero://signed-in", 1),
            Err(CodeError::InvalidCode)
        );
    }

    #[test]
    fn codes_are_bound_to_client_and_redirect_uri_and_expire() {
        let mut codes = Codes::default();
        let code = issue(&mut codes, 1, 0);
        assert_eq!(
            codes.redeem(&code, VERIFIER, "dzero-app", "https://evil.example/cb", 1),
            Err(CodeError::WrongClient)
        );
        let code = issue(&mut codes, 2, 0);
        assert_eq!(
            codes.redeem(&code, VERIFIER, "other-app", "dzero://signed-in", 1),
            Err(CodeError::WrongClient)
        );
        let code = issue(&mut codes, 3, 0);
        assert_eq!(
            codes.redeem(
                &code,
                VERIFIER,
                "dzero-app",
                "dzero://signed-in",
                CODE_SECONDS + 1
            ),
            Err(CodeError::InvalidCode)
        );
        // Expired codes are swept on the next issue.
        issue(&mut codes, 4, 10 * CODE_SECONDS);
        assert_eq!(codes.outstanding(), 1);
    }

    #[test]
    fn plain_or_missing_challenges_are_refused() {
        let mut codes = Codes::default();
        for (method, challenge) in [
            (Some("plain"), Some(VERIFIER)),
            (None, None),
            (Some("S256"), None),
        ] {
            assert_eq!(
                codes.issue([1; 32], grant(), method, challenge, 0),
                Err(CodeError::BadChallenge)
            );
        }
        assert_eq!(codes.outstanding(), 0);
    }

    #[test]
    fn access_tokens_verify_only_for_their_key_and_until_expiry() {
        let key = TokenKey::from_pepper(b"pepper");
        let token = key.mint("s1", "jkt-1", 1_000);
        assert_eq!(key.check(&token, "jkt-1", 1_000), Ok("s1".into()));
        assert_eq!(key.check(&token, "jkt-2", 1_000), Err(TokenError::Invalid));
        assert_eq!(
            key.check(&token, "jkt-1", 1_000 + ACCESS_TOKEN_SECONDS),
            Err(TokenError::Expired)
        );
        // Another server's pepper, a changed session or a stretched expiry do not verify.
        let other = TokenKey::from_pepper(b"other pepper");
        assert_eq!(
            other.check(&token, "jkt-1", 1_000),
            Err(TokenError::Invalid)
        );
        let forged = token.replacen("dza.s1.", "dza.s2.", 1);
        assert_eq!(key.check(&forged, "jkt-1", 1_000), Err(TokenError::Invalid));
        let stretched = token.replacen(".1300.", ".9999999999.", 1);
        assert_ne!(stretched, token);
        assert_eq!(
            key.check(&stretched, "jkt-1", 1_000),
            Err(TokenError::Invalid)
        );
        for junk in ["", "dza", "dza.s1.1300", "Bearer x", "dza.s1.x.y"] {
            assert_eq!(key.check(junk, "jkt-1", 1_000), Err(TokenError::Invalid));
        }
    }

    #[test]
    fn dpop_nonces_rotate_and_the_previous_one_still_counts() {
        let key = TokenKey::from_pepper(b"pepper");
        let now = 1_790_000_100;
        let current = key.dpop_nonce(now);
        assert!(key.dpop_nonce_fresh(&current, now));
        assert!(
            key.dpop_nonce_fresh(&current, now + NONCE_SECONDS),
            "one window later"
        );
        assert!(
            !key.dpop_nonce_fresh(&current, now + 2 * NONCE_SECONDS),
            "two windows later"
        );
        assert!(!key.dpop_nonce_fresh("made-up", now));
        assert_ne!(TokenKey::from_pepper(b"other").dpop_nonce(now), current);
    }

    #[test]
    fn the_throttle_stops_guessing_per_account_and_per_client() {
        let mut throttle = LoginThrottle::default();
        for i in 0..ACCOUNT_FAILURES_MAX as i64 {
            assert_eq!(throttle.check("boss", "10.0.0.1", i), Ok(()));
            throttle.record_failure("boss", "10.0.0.1", i);
        }
        let wait = throttle.check("boss", "10.0.0.2", 10).unwrap_err();
        assert_eq!(wait, THROTTLE_WINDOW_SECONDS - 10);
        // An unknown account is throttled the same way: the name asked for is the key.
        for i in 0..ACCOUNT_FAILURES_MAX as i64 {
            throttle.record_failure("nobody", "10.0.0.3", i);
        }
        assert!(throttle.check("nobody", "10.0.0.4", 10).is_err());
        // The window slides: after it, the account may try again.
        assert_eq!(
            throttle.check("boss", "10.0.0.1", THROTTLE_WINDOW_SECONDS),
            Ok(())
        );

        // One client spraying many accounts meets the client limit.
        let mut throttle = LoginThrottle::default();
        for i in 0..CLIENT_FAILURES_MAX {
            throttle.record_failure(&format!("user{i}"), "10.9.9.9", 0);
        }
        assert!(throttle.check("fresh-user", "10.9.9.9", 1).is_err());
        assert_eq!(throttle.check("fresh-user", "10.1.1.1", 1), Ok(()));
        // Success clears the account's failures.
        throttle.record_success("user0");
        assert_eq!(throttle.check("user0", "10.1.1.1", 1), Ok(()));
    }
}
