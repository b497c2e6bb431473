//! PKCE (RFC 7636) with S256 only: the app proves that the party redeeming an authorization
//! code is the one that asked for it. `plain` and missing challenges are refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Why a challenge or verifier is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    #[error("only the S256 code challenge method is accepted")]
    MethodNotS256,
    #[error("the code challenge is missing or malformed")]
    BadChallenge,
    #[error("the code verifier is malformed")]
    BadVerifier,
    #[error("the code verifier does not match the challenge")]
    Mismatch,
}

/// Checks an authorization request's challenge: method `S256` and 43 base64url characters.
pub fn check_challenge(method: Option<&str>, challenge: Option<&str>) -> Result<(), PkceError> {
    if method != Some("S256") {
        return Err(PkceError::MethodNotS256);
    }
    let challenge = challenge.ok_or(PkceError::BadChallenge)?;
    let decoded = URL_SAFE_NO_PAD
        .decode(challenge)
        .map_err(|_| PkceError::BadChallenge)?;
    if decoded.len() != 32 {
        return Err(PkceError::BadChallenge);
    }
    Ok(())
}

/// The S256 challenge of a verifier.
pub fn challenge_of(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Checks a token request's verifier against the stored challenge: 43–128 unreserved
/// characters whose SHA-256, base64url-encoded, is the challenge.
pub fn verify(verifier: &str, challenge: &str) -> Result<(), PkceError> {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return Err(PkceError::BadVerifier);
    }
    // Both sides are public-length base64 strings; compare without an early exit anyway.
    let expected = challenge_of(verifier);
    let same = expected.len() == challenge.len()
        && expected
            .bytes()
            .zip(challenge.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(PkceError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of RFC 7636, appendix B.
    #[test]
    fn rfc_7636_example() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(challenge_of(verifier), challenge);
        assert_eq!(verify(verifier, challenge), Ok(()));
        assert_eq!(check_challenge(Some("S256"), Some(challenge)), Ok(()));
    }

    #[test]
    fn plain_missing_and_wrong_verifiers_are_refused() {
        let challenge = challenge_of(&"a".repeat(43));
        assert_eq!(
            check_challenge(Some("plain"), Some(&challenge)),
            Err(PkceError::MethodNotS256)
        );
        assert_eq!(
            check_challenge(None, Some(&challenge)),
            Err(PkceError::MethodNotS256)
        );
        assert_eq!(
            check_challenge(Some("S256"), None),
            Err(PkceError::BadChallenge)
        );
        assert_eq!(
            verify(&"b".repeat(43), &challenge),
            Err(PkceError::Mismatch)
        );
        assert_eq!(verify("short", &challenge), Err(PkceError::BadVerifier));
    }
}
