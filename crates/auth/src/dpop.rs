//! DPoP proofs (RFC 9449): every request of the merchant app carries a JWT signed by the
//! device's P-256 key, naming the method and URL, a fresh `jti`, the time, and (with an access
//! token) the token's hash. A stolen token is useless without the device key.
//!
//! Only ES256 is accepted: `alg: none`, HMAC and every other algorithm are refused before any
//! signature check. What the verifier cannot know alone — whether the `jti` was seen before,
//! which nonce is current — the caller supplies.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::EncodedPoint;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Largest proof accepted, in bytes.
pub const PROOF_BYTES_MAX: usize = 4_096;
/// How far a proof's `iat` may be from the server's clock, in seconds.
pub const IAT_SKEW_SECONDS_MAX: i64 = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("the DPoP proof is malformed")]
    Malformed,
    #[error("the DPoP proof must be typ dpop+jwt")]
    WrongType,
    #[error("only ES256 DPoP proofs are accepted")]
    WrongAlgorithm,
    #[error("the DPoP proof's key is not a P-256 public key")]
    BadKey,
    #[error("the DPoP proof's signature does not verify")]
    BadSignature,
    #[error("the DPoP proof is for another method")]
    WrongMethod,
    #[error("the DPoP proof is for another URL")]
    WrongUrl,
    #[error("the DPoP proof is too old or from the future")]
    Stale,
    #[error("the DPoP proof was used before")]
    Replayed,
    #[error("the DPoP proof does not carry the access token's hash")]
    WrongTokenHash,
    #[error("the DPoP proof does not carry the current server nonce")]
    WrongNonce,
    #[error("the DPoP proof is signed by another key than the token's")]
    WrongKey,
}

/// What a request expects of its proof.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    pub method: &'a str,
    /// The request URL without query and fragment.
    pub url: &'a str,
    pub now_seconds: i64,
    /// The access token presented with the proof, if any.
    pub access_token: Option<&'a str>,
    /// The nonce the server requires now, if any.
    pub nonce: Option<&'a str>,
    /// The key thumbprint the access token is bound to, if any.
    pub bound_thumbprint: Option<&'a str>,
}

/// A verified proof: its `jti` (for the replay cache) and the key's thumbprint (RFC 7638).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub jti: String,
    pub thumbprint: String,
    /// The server nonce the proof carries, for callers that accept more than one (rotation).
    pub nonce: Option<String>,
}

fn decode_json(part: &str) -> Result<Value, DpopError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| DpopError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| DpopError::Malformed)
}

fn coordinate(jwk: &Value, name: &str) -> Result<[u8; 32], DpopError> {
    let text = jwk[name].as_str().ok_or(DpopError::BadKey)?;
    URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or(DpopError::BadKey)
}

/// The RFC 7638 thumbprint of a P-256 JWK: base64url(SHA-256 of its required members, in
/// lexicographic order, without spaces).
pub fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The `ath` of an access token: base64url(SHA-256(token)).
pub fn token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// Checks a compact JWS of type `typ` signed with ES256 by the P-256 key in its `jwk` header,
/// and returns its claims and the key's thumbprint. Every other algorithm, `none` included, is
/// refused before any signature check. The `typ` keeps proofs and step-up signatures apart: one
/// can never stand in for the other.
pub(crate) fn verify_signed(proof: &str, typ: &str) -> Result<(Value, String), DpopError> {
    if proof.len() > PROOF_BYTES_MAX {
        return Err(DpopError::Malformed);
    }
    let mut parts = proof.split('.');
    let (Some(header_part), Some(payload_part), Some(signature_part), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DpopError::Malformed);
    };
    let header = decode_json(header_part)?;
    if header["typ"] != typ {
        return Err(DpopError::WrongType);
    }
    if header["alg"] != "ES256" {
        return Err(DpopError::WrongAlgorithm);
    }
    let jwk = &header["jwk"];
    if jwk["kty"] != "EC" || jwk["crv"] != "P-256" || jwk.get("d").is_some() {
        return Err(DpopError::BadKey);
    }
    let (x, y) = (coordinate(jwk, "x")?, coordinate(jwk, "y")?);
    let point = EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
    let key = VerifyingKey::from_encoded_point(&point).map_err(|_| DpopError::BadKey)?;
    let signature_bytes = URL_SAFE_NO_PAD
        .decode(signature_part)
        .map_err(|_| DpopError::Malformed)?;
    let signature = Signature::from_slice(&signature_bytes).map_err(|_| DpopError::BadSignature)?;
    let signed = &proof[..header_part.len() + 1 + payload_part.len()];
    key.verify(signed.as_bytes(), &signature)
        .map_err(|_| DpopError::BadSignature)?;

    let thumbprint = thumbprint(
        jwk["x"].as_str().unwrap_or_default(),
        jwk["y"].as_str().unwrap_or_default(),
    );
    let claims = decode_json(payload_part)?;
    Ok((claims, thumbprint))
}

/// Verifies a proof against what the request expects. `seen_jti` says whether a `jti` was
/// already used (the caller's bounded replay cache); the caller records the returned `jti`.
pub fn verify(
    proof: &str,
    expected: &Expected<'_>,
    seen_jti: impl Fn(&str) -> bool,
) -> Result<Verified, DpopError> {
    let (claims, thumbprint) = verify_signed(proof, "dpop+jwt")?;
    if claims["htm"] != expected.method {
        return Err(DpopError::WrongMethod);
    }
    if claims["htu"] != expected.url {
        return Err(DpopError::WrongUrl);
    }
    let iat = claims["iat"].as_i64().ok_or(DpopError::Malformed)?;
    if (iat - expected.now_seconds).abs() > IAT_SKEW_SECONDS_MAX {
        return Err(DpopError::Stale);
    }
    let jti = claims["jti"]
        .as_str()
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or(DpopError::Malformed)?;
    if let Some(token) = expected.access_token
        && claims["ath"] != token_hash(token).as_str()
    {
        return Err(DpopError::WrongTokenHash);
    }
    if let Some(nonce) = expected.nonce
        && claims["nonce"] != nonce
    {
        return Err(DpopError::WrongNonce);
    }
    if let Some(bound) = expected.bound_thumbprint
        && bound != thumbprint
    {
        return Err(DpopError::WrongKey);
    }
    if seen_jti(jti) {
        return Err(DpopError::Replayed);
    }
    Ok(Verified {
        jti: jti.to_owned(),
        thumbprint,
        nonce: claims["nonce"].as_str().map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer;
    use serde_json::json;

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

    fn proof_with(key: &SigningKey, header: Value, claims: Value) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature: Signature = key.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    fn proof(key: &SigningKey, claims: Value) -> String {
        proof_with(
            key,
            json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": jwk(key) }),
            claims,
        )
    }

    const NOW: i64 = 1_790_000_000;

    fn expected<'a>(token: Option<&'a str>) -> Expected<'a> {
        Expected {
            method: "POST",
            url: "https://dzero.example/v1/refunds",
            now_seconds: NOW,
            access_token: token,
            nonce: None,
            bound_thumbprint: None,
        }
    }

    fn claims(token: Option<&str>) -> Value {
        let mut c = json!({ "jti": "j-1", "htm": "POST", "htu": "https://dzero.example/v1/refunds", "iat": NOW });
        if let Some(t) = token {
            c["ath"] = token_hash(t).into();
        }
        c
    }

    #[test]
    fn a_good_proof_verifies_and_names_its_key() {
        let k = key(7);
        let verified = verify(
            &proof(&k, claims(Some("tok"))),
            &expected(Some("tok")),
            |_| false,
        )
        .expect("valid proof");
        let j = jwk(&k);
        assert_eq!(
            verified.thumbprint,
            thumbprint(
                j["x"].as_str().unwrap_or_default(),
                j["y"].as_str().unwrap_or_default()
            )
        );
        assert_eq!(verified.jti, "j-1");
    }

    #[test]
    fn attacks_on_the_proof_are_refused() {
        let k = key(7);
        let good = proof(&k, claims(Some("tok")));
        let check = |p: &str, e: Expected<'_>| verify(p, &e, |_| false).map(|_| ());
        // Replayed jti.
        assert_eq!(
            verify(&good, &expected(Some("tok")), |_| true).map(|_| ()),
            Err(DpopError::Replayed)
        );
        // Wrong method and wrong URL.
        assert_eq!(
            check(
                &good,
                Expected {
                    method: "GET",
                    ..expected(Some("tok"))
                }
            ),
            Err(DpopError::WrongMethod)
        );
        assert_eq!(
            check(
                &good,
                Expected {
                    url: "https://dzero.example/v1/payouts",
                    ..expected(Some("tok"))
                }
            ),
            Err(DpopError::WrongUrl)
        );
        // Another access token (the proof's ath is for "tok").
        assert_eq!(
            check(&good, expected(Some("other"))),
            Err(DpopError::WrongTokenHash)
        );
        // A token bound to another key.
        assert_eq!(
            check(
                &good,
                Expected {
                    bound_thumbprint: Some("someone-else"),
                    ..expected(Some("tok"))
                }
            ),
            Err(DpopError::WrongKey)
        );
        // Too old.
        assert_eq!(
            check(
                &good,
                Expected {
                    now_seconds: NOW + 3_600,
                    ..expected(Some("tok"))
                }
            ),
            Err(DpopError::Stale)
        );
        // Missing nonce.
        assert_eq!(
            check(
                &good,
                Expected {
                    nonce: Some("n-1"),
                    ..expected(Some("tok"))
                }
            ),
            Err(DpopError::WrongNonce)
        );
        // alg=none with no signature, and HS256.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD
                .encode(json!({ "typ": "dpop+jwt", "alg": "none", "jwk": jwk(&k) }).to_string()),
            URL_SAFE_NO_PAD.encode(claims(None).to_string())
        );
        assert_eq!(check(&none, expected(None)), Err(DpopError::WrongAlgorithm));
        let hs = proof_with(
            &k,
            json!({ "typ": "dpop+jwt", "alg": "HS256", "jwk": jwk(&k) }),
            claims(None),
        );
        assert_eq!(check(&hs, expected(None)), Err(DpopError::WrongAlgorithm));
        // Signed by one key while naming another.
        let impostor = proof_with(
            &key(9),
            json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": jwk(&k) }),
            claims(None),
        );
        assert_eq!(
            check(&impostor, expected(None)),
            Err(DpopError::BadSignature)
        );
        // A changed claim breaks the signature.
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut changed = claims(Some("tok"));
        changed["htu"] = "https://dzero.example/v1/payouts".into();
        parts[1] = URL_SAFE_NO_PAD.encode(changed.to_string());
        assert_eq!(
            check(&parts.join("."), expected(Some("tok"))),
            Err(DpopError::BadSignature)
        );
        // Wrong typ, garbage.
        let typ = proof_with(
            &k,
            json!({ "typ": "JWT", "alg": "ES256", "jwk": jwk(&k) }),
            claims(None),
        );
        assert_eq!(check(&typ, expected(None)), Err(DpopError::WrongType));
        assert_eq!(check("a.b", expected(None)), Err(DpopError::Malformed));
    }
}
