//! A fast, fixed hasher for maps keyed by ledger ids.
//!
//! The standard SipHash is built to resist collision attacks on attacker-chosen keys, at a cost
//! that shows on the hot path (several lookups per transfer). Ledger ids are integers the
//! platform assigns or that trusted platform clients choose, so a strong integer mixer is
//! enough. It is fixed (no random seed), keeping the ledger free of randomness; no result
//! depends on map iteration order.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for integer keys: each word is folded in with the splitmix64 finaliser.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = mix(self.0 ^ n);
    }

    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
}

/// A `HashMap` keyed by ledger ids.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash_of(value: impl Hash) -> u64 {
        BuildHasherDefault::<IdHasher>::default().hash_one(value)
    }

    #[test]
    fn structured_ids_spread_over_the_low_bits() {
        // Internal transfer ids differ only in a few middle bits; buckets use the low bits.
        let mut buckets = std::collections::HashSet::new();
        for record in 0u128..4_096 {
            buckets.insert(hash_of((1u128 << 120) | (record << 8) | 1) & 0xfff);
        }
        assert!(
            buckets.len() > 2_400,
            "only {} of 4096 buckets used",
            buckets.len()
        );
    }
}
