//! Time-based one-time codes (RFC 6238, HMAC-SHA-256, 6 digits, 30-second steps), the fallback
//! second factor for step-up when the device cannot sign.
//!
//! The seed is never stored: it is derived from the server's pepper, the user id and a random
//! enrollment nonce, and only the nonce is kept. A code is accepted in the current step or the
//! one either side, each step at most once (the last used step is recorded), so a code lives
//! at most 90 seconds and is single use.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const DIGITS: u32 = 6;
pub const STEP_SECONDS: i64 = 30;
/// Steps accepted either side of the current one (clock drift).
pub const WINDOW_STEPS: i64 = 1;

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    // Keys here are 32 bytes or shorter, within SHA-256's block: HMAC pads them with zeros.
    let len = key.len().min(64);
    block[..len].copy_from_slice(&key[..len]);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The seed of `user_id`'s enrollment `nonce` under `pepper`.
pub fn seed(pepper: &[u8], user_id: &str, nonce: &str) -> [u8; 32] {
    let key = hmac(pepper, b"dzero totp seed");
    hmac(&key, format!("{user_id}\0{nonce}").as_bytes())
}

/// The code of `step` (RFC 4226 dynamic truncation).
pub fn code(seed: &[u8], step: i64) -> u32 {
    let digest = hmac(seed, &step.to_be_bytes());
    let offset = usize::from(digest[31] & 0x0f);
    let bits = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    bits % 10u32.pow(DIGITS)
}

pub fn step_at(now_seconds: i64) -> i64 {
    now_seconds.div_euclid(STEP_SECONDS)
}

/// The step `typed` matches, if it is a six-digit code of a step near `now` later than
/// `last_used_step`.
pub fn check(
    seed: &[u8],
    typed: &str,
    now_seconds: i64,
    last_used_step: Option<i64>,
) -> Option<i64> {
    if typed.len() != DIGITS as usize || !typed.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let typed: u32 = typed.parse().ok()?;
    let now = step_at(now_seconds);
    (now - WINDOW_STEPS..=now + WINDOW_STEPS)
        .filter(|step| last_used_step.is_none_or(|last| *step > last))
        .find(|step| code(seed, *step) == typed)
}

/// RFC 4648 base32 without padding, as authenticator apps take secrets.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes RFC 4648 base32 (no padding), as an authenticator does with a scanned secret.
pub fn from_base32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | u32::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// The enrollment link an authenticator app scans.
pub fn otpauth_uri(issuer: &str, account: &str, seed: &[u8]) -> String {
    format!(
        "otpauth://totp/{issuer}:{account}?secret={}&issuer={issuer}&algorithm=SHA256&digits={DIGITS}&period={STEP_SECONDS}",
        base32(seed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_sha256_vectors() {
        // RFC 6238 appendix B, SHA-256 seed "12345678901234567890123456789012", 8 digits; the
        // last six digits are the 6-digit code.
        let seed = b"12345678901234567890123456789012";
        for (time, eight) in [
            (59, 46_119_246u32),
            (1_111_111_109, 68_084_774),
            (1_111_111_111, 67_062_674),
            (1_234_567_890, 91_819_424),
            (2_000_000_000, 90_698_825),
        ] {
            assert_eq!(code(seed, step_at(time)), eight % 1_000_000, "time {time}");
        }
    }

    #[test]
    fn codes_are_accepted_near_now_and_only_once() {
        let seed = seed(b"pepper", "boss", "nonce-1");
        let now = 1_790_000_000;
        let current = format!("{:06}", code(&seed, step_at(now)));
        let step = check(&seed, &current, now, None).expect("current code");
        assert_eq!(check(&seed, &current, now, Some(step)), None, "single use");
        let previous = format!("{:06}", code(&seed, step_at(now) - 1));
        assert!(
            check(&seed, &previous, now, None).is_some(),
            "one step of drift"
        );
        let old = format!("{:06}", code(&seed, step_at(now) - 3));
        assert_eq!(check(&seed, &old, now, None), None, "90 seconds at most");
        for junk in ["", "12345", "1234567", "abcdef"] {
            assert_eq!(check(&seed, junk, now, None), None);
        }
    }

    #[test]
    fn seeds_depend_on_pepper_user_and_nonce() {
        let a = seed(b"pepper", "boss", "n1");
        assert_ne!(a, seed(b"other", "boss", "n1"));
        assert_ne!(a, seed(b"pepper", "clerk", "n1"));
        assert_ne!(a, seed(b"pepper", "boss", "n2"));
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(from_base32("MZXW6YTBOI").as_deref(), Some(&b"foobar"[..]));
        assert_eq!(from_base32(&base32(&a)).as_deref(), Some(&a[..]));
    }
}
