//! A fast, fixed hasher for maps keyed by ledger ids.
//!
//! The standard SipHash is built to resist collision attacks on attacker-chosen keys, at a cost
//! that shows on the hot path (several lookups per transfer). Ledger ids are integers the
//! platform assigns or that trusted platform clients choose, so a strong integer mixer is
//! enough. It is fixed (no random seed), keeping the ledger free of randomness; no result
//! depends on map iteration order.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

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

/// Shards of a [`ShardedMap`].
const SHARDS: usize = 256;

/// A hash map split into 256 shards by hash, for maps that grow without bound on the hot path.
///
/// A `HashMap` doubles all at once: at tens of millions of entries one insert rehashes
/// everything and stalls the sequencer for tens of milliseconds, which every caller of that
/// batch waits for. Shards grow one at a time, so the largest stall is 256 times smaller.
#[derive(Clone, Debug)]
pub struct ShardedMap<K, V, S = BuildHasherDefault<IdHasher>> {
    hasher: S,
    shards: Vec<HashMap<K, V, S>>,
    len: usize,
}

impl<K, V, S: BuildHasher + Clone + Default> Default for ShardedMap<K, V, S> {
    fn default() -> Self {
        let hasher = S::default();
        ShardedMap {
            shards: (0..SHARDS)
                .map(|_| HashMap::with_hasher(hasher.clone()))
                .collect(),
            hasher,
            len: 0,
        }
    }
}

impl<K: Hash + Eq, V, S: BuildHasher + Clone> ShardedMap<K, V, S> {
    /// The shard of a key: bits 40..48 of its hash. The shard's own table uses the low bits
    /// for the slot and the top seven for its control bytes, so those must stay varied.
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        ((self.hasher.hash_one(key) >> 40) as usize) % SHARDS
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard(key)].get(key)
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard(key);
        self.shards[shard].get_mut(key)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let shard = self.shard(&key);
        let previous = self.shards[shard].insert(key, value);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard(key);
        let removed = self.shards[shard].remove(key);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash_of(value: impl Hash) -> u64 {
        BuildHasherDefault::<IdHasher>::default().hash_one(value)
    }

    #[test]
    fn sharded_map_behaves_like_a_map() {
        let mut map: ShardedMap<u64, u64> = ShardedMap::default();
        for i in 0..10_000 {
            assert_eq!(map.insert(i, i * 2), None);
        }
        assert_eq!(map.insert(7, 1), Some(14));
        assert_eq!(map.len(), 10_000);
        assert_eq!(map.get(&7), Some(&1));
        assert_eq!(map.remove(&7), Some(1));
        assert_eq!(map.get(&7), None);
        assert_eq!(map.len(), 9_999);
        let used = map.shards.iter().filter(|s| !s.is_empty()).count();
        assert_eq!(used, SHARDS, "keys spread over every shard");
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
