//! Platform API keys: `Authorization: Bearer dzk_<id>_<secret>`. Only a SHA-256 digest of the
//! secret is stored; each key carries scopes that say what it may do.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use store::{ApiKeyRecord, StoreRead};

use crate::error::{ApiError, ErrorCode};

/// What a key may do. `admin` implies every other scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    Admin,
    ChannelsWrite,
    MerchantsWrite,
    PaymentsWrite,
    PayoutsWrite,
    RefundsWrite,
    SettlementsWrite,
    Read,
}

impl Scope {
    pub const ALL: [Scope; 8] = [
        Scope::Admin,
        Scope::ChannelsWrite,
        Scope::MerchantsWrite,
        Scope::PaymentsWrite,
        Scope::PayoutsWrite,
        Scope::RefundsWrite,
        Scope::SettlementsWrite,
        Scope::Read,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::ChannelsWrite => "channels:write",
            Scope::MerchantsWrite => "merchants:write",
            Scope::PaymentsWrite => "payments:write",
            Scope::PayoutsWrite => "payouts:write",
            Scope::RefundsWrite => "refunds:write",
            Scope::SettlementsWrite => "settlements:write",
            Scope::Read => "read",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key_id: String,
    pub scopes: Vec<Scope>,
}

impl Caller {
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(ApiError::with_message(
                ErrorCode::Forbidden,
                format!("This operation needs the scope {}.", scope.as_str()),
            ))
        }
    }
}

/// A newly minted key: the full secret is shown once and never stored.
#[derive(Debug)]
pub struct MintedKey {
    pub record: ApiKeyRecord,
    pub secret: String,
}

const KEY_PREFIX: &str = "dzk_";
const KEY_ID_BYTES: usize = 12;
const KEY_SECRET_BYTES: usize = 32;
/// Longest `Authorization` value looked at; anything longer is refused unread.
const AUTHORIZATION_LEN_MAX: usize = 256;

pub(crate) fn random_hex(bytes: usize) -> Result<String, ApiError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(ApiError::internal)?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares digests without an early exit, so timing says nothing about where they differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Creates a new random key with `scopes`.
pub fn mint_key(scopes: &[Scope], now: ledger::Timestamp) -> Result<MintedKey, ApiError> {
    let id = format!("key_{}", random_hex(KEY_ID_BYTES)?);
    let secret_part = random_hex(KEY_SECRET_BYTES)?;
    let secret = format!("{KEY_PREFIX}{id}_{secret_part}");
    Ok(MintedKey {
        record: ApiKeyRecord {
            id,
            secret_hash: digest(&secret),
            scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            created_at: now,
        },
        secret,
    })
}

/// Checks API keys, caching verified records in memory (keys are never changed once issued).
#[derive(Clone)]
pub struct Authenticator {
    reader: Arc<dyn StoreRead>,
    cache: Arc<RwLock<HashMap<String, ApiKeyRecord>>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(reader: Arc<dyn StoreRead>) -> Authenticator {
        Authenticator {
            reader,
            cache: Arc::new(RwLock::new(HashMap::new())),
        }
    }

    /// The caller named by the request's bearer key, or `unauthorized`.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let unauthorized = || ApiError::new(ErrorCode::Unauthorized);
        let value = headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(unauthorized)?;
        if value.len() > AUTHORIZATION_LEN_MAX {
            return Err(unauthorized());
        }
        let value = value.to_str().map_err(|_| unauthorized())?;
        let secret = value
            .strip_prefix("Bearer ")
            .ok_or_else(unauthorized)?
            .trim();
        // dzk_key_<hex>_<hex>: the id is everything between the prefix and the last '_'.
        let id = secret
            .strip_prefix(KEY_PREFIX)
            .and_then(|rest| rest.rsplit_once('_'))
            .map(|(id, _)| id)
            .ok_or_else(unauthorized)?;
        let cached = self.cache.read().ok().and_then(|c| c.get(id).cloned());
        let record = match cached {
            Some(record) => record,
            None => {
                let reader = Arc::clone(&self.reader);
                let key_id = id.to_owned();
                let record = tokio::task::spawn_blocking(move || reader.api_key(&key_id))
                    .await
                    .map_err(ApiError::internal)??
                    .ok_or_else(unauthorized)?;
                if let Ok(mut cache) = self.cache.write() {
                    cache.insert(record.id.clone(), record.clone());
                }
                record
            }
        };
        if !same_digest(&digest(secret), &record.secret_hash) {
            return Err(unauthorized());
        }
        Ok(Caller {
            key_id: record.id,
            scopes: record
                .scopes
                .iter()
                .filter_map(|s| Scope::parse(s))
                .collect(),
        })
    }
}

/// On first start (no keys at all) creates an admin key and writes it to
/// `<data_dir>/admin.key` with mode 0600. Returns the path when a key was created.
pub fn ensure_admin_key(
    reader: &dyn StoreRead,
    data_dir: &Path,
    now: ledger::Timestamp,
) -> Result<Option<std::path::PathBuf>, ApiError> {
    if reader.api_key_count()? > 0 {
        return Ok(None);
    }
    let minted = mint_key(&[Scope::Admin], now)?;
    let path = data_dir.join("admin.key");
    write_private_file(&path, format!("{}\n", minted.secret).as_bytes())
        .map_err(ApiError::internal)?;
    if !reader.insert_api_key(&minted.record)? {
        return Err(ApiError::internal("admin key id collided"));
    }
    Ok(Some(path))
}

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_parse_back_to_their_id() {
        let minted = mint_key(&[Scope::Read], ledger::Timestamp(0)).unwrap();
        let id = minted
            .secret
            .strip_prefix(KEY_PREFIX)
            .and_then(|rest| rest.rsplit_once('_'))
            .map(|(id, _)| id);
        assert_eq!(id, Some(minted.record.id.as_str()));
        assert!(same_digest(
            &digest(&minted.secret),
            &minted.record.secret_hash
        ));
        assert!(!same_digest(
            &digest("dzk_other"),
            &minted.record.secret_hash
        ));
    }

    #[test]
    fn admin_implies_every_scope_and_others_only_their_own() {
        let admin = Caller {
            key_id: "a".into(),
            scopes: vec![Scope::Admin],
        };
        let reader = Caller {
            key_id: "r".into(),
            scopes: vec![Scope::Read],
        };
        for scope in Scope::ALL {
            assert!(admin.require(scope).is_ok());
        }
        assert!(reader.require(Scope::Read).is_ok());
        assert_eq!(
            reader.require(Scope::PaymentsWrite).unwrap_err().code,
            ErrorCode::Forbidden
        );
    }
}
