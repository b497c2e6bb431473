//! The tamper-evident audit log: every entry carries the SHA-256 of its content and of the
//! entry before it, so changing, removing or reordering any entry breaks the chain from there
//! on, and [`verify_chain`] says where.

use sha2::{Digest, Sha256};

/// One audited event: who did what, when, from which device, with which factors, approved by
/// whom. No secret is ever part of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub at_micros: i64,
    pub merchant_id: String,
    pub user_id: String,
    pub device_id: Option<String>,
    /// For example `login`, `login_failed`, `device_revoked`, `refund`, `permission_change`.
    pub action: String,
    /// Verification factors used, for example `["password", "device_signature"]`.
    pub factors: Vec<String>,
    pub approver: Option<String>,
    /// Free detail (amounts, targets), never secrets.
    pub detail: String,
}

/// A record in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: u64,
    pub record: AuditRecord,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// The hash before the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

fn field(hasher: &mut Sha256, bytes: &[u8]) {
    // Length-prefixed, so no two different records hash the same bytes.
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// The hash of an entry: over its sequence number, its record and the previous hash.
pub fn entry_hash(seq: u64, record: &AuditRecord, prev_hash: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(seq.to_le_bytes());
    h.update(record.at_micros.to_le_bytes());
    field(&mut h, record.merchant_id.as_bytes());
    field(&mut h, record.user_id.as_bytes());
    field(&mut h, record.device_id.as_deref().unwrap_or("").as_bytes());
    field(&mut h, record.action.as_bytes());
    h.update((record.factors.len() as u64).to_le_bytes());
    for factor in &record.factors {
        field(&mut h, factor.as_bytes());
    }
    field(&mut h, record.approver.as_deref().unwrap_or("").as_bytes());
    field(&mut h, record.detail.as_bytes());
    h.finalize().into()
}

/// Appends a record after `last` (or first in the chain).
pub fn append(last: Option<&AuditEntry>, record: AuditRecord) -> AuditEntry {
    let (seq, prev_hash) = last.map_or((1, GENESIS), |e| (e.seq + 1, e.hash));
    let hash = entry_hash(seq, &record, &prev_hash);
    AuditEntry {
        seq,
        record,
        prev_hash,
        hash,
    }
}

/// Where a chain is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainBreak {
    /// Sequence numbers skip or repeat here.
    Sequence { seq: u64 },
    /// This entry does not point at the hash of the one before.
    Link { seq: u64 },
    /// This entry's content does not match its hash.
    Content { seq: u64 },
}

/// Checks a whole chain, in order.
pub fn verify_chain<'a>(
    entries: impl IntoIterator<Item = &'a AuditEntry>,
) -> Result<u64, ChainBreak> {
    let mut expected_seq = 1;
    let mut prev = GENESIS;
    for entry in entries {
        if entry.seq != expected_seq {
            return Err(ChainBreak::Sequence { seq: entry.seq });
        }
        if entry.prev_hash != prev {
            return Err(ChainBreak::Link { seq: entry.seq });
        }
        if entry_hash(entry.seq, &entry.record, &entry.prev_hash) != entry.hash {
            return Err(ChainBreak::Content { seq: entry.seq });
        }
        prev = entry.hash;
        expected_seq += 1;
    }
    Ok(expected_seq - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: &str) -> AuditRecord {
        AuditRecord {
            at_micros: 1,
            merchant_id: "M1".into(),
            user_id: "u1".into(),
            device_id: Some("d1".into()),
            action: action.into(),
            factors: vec!["password".into(), "device_signature".into()],
            approver: None,
            detail: "amount=100".into(),
        }
    }

    fn chain() -> Vec<AuditEntry> {
        let mut entries: Vec<AuditEntry> = Vec::new();
        for action in ["login", "refund", "device_revoked"] {
            let entry = append(entries.last(), record(action));
            entries.push(entry);
        }
        entries
    }

    #[test]
    fn an_untouched_chain_verifies() {
        assert_eq!(verify_chain(&chain()), Ok(3));
    }

    #[test]
    fn editing_removing_or_reordering_an_entry_is_detected() {
        let mut edited = chain();
        edited[1].record.detail = "amount=1".into();
        assert_eq!(verify_chain(&edited), Err(ChainBreak::Content { seq: 2 }));

        let mut removed = chain();
        removed.remove(1);
        assert_eq!(verify_chain(&removed), Err(ChainBreak::Sequence { seq: 3 }));

        let mut rehashed = chain();
        rehashed[1].record.detail = "amount=1".into();
        rehashed[1].hash = entry_hash(2, &rehashed[1].record, &rehashed[1].prev_hash);
        assert_eq!(
            verify_chain(&rehashed),
            Err(ChainBreak::Link { seq: 3 }),
            "re-hashing one entry breaks the next link"
        );
    }
}
