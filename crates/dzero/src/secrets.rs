//! Server secrets kept in the data directory, beside (not inside) the database: the pepper
//! that keys merchant users' password hashes. A stolen database without it does not allow
//! guessing passwords offline.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};

/// The pepper file's name inside the data directory.
pub const PEPPER_FILE: &str = "pepper.key";
const PEPPER_BYTES: usize = 32;

/// Reads the pepper, creating it (mode 0600) on first start.
pub fn load_or_create_pepper(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join(PEPPER_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path)?;
        let bytes = decode_hex(text.trim()).context("the pepper file is not hexadecimal")?;
        if bytes.len() != PEPPER_BYTES {
            bail!("the pepper file must hold {PEPPER_BYTES} bytes");
        }
        return Ok(bytes);
    }
    let mut pepper = vec![0u8; PEPPER_BYTES];
    getrandom::fill(&mut pepper).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let hex: String = pepper.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    file.write_all(format!("{hex}\n").as_bytes())?;
    file.sync_all()?;
    Ok(pepper)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pepper_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = load_or_create_pepper(dir.path()).expect("created");
        let again = load_or_create_pepper(dir.path()).expect("read");
        assert_eq!(first, again);
        assert_eq!(first.len(), PEPPER_BYTES);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(PEPPER_FILE))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}

/// Options of `dzero audit verify`.
#[derive(Clone, Debug, clap::Args)]
pub struct VerifyArgs {
    /// The server's data directory.
    #[arg(long, default_value = "./dzero-data")]
    pub data_dir: std::path::PathBuf,
}

/// Entries read per page while verifying.
const AUDIT_PAGE: u32 = 10_000;

/// Checks the stored audit chain from its first entry to its last; fails at the first entry
/// whose content, link or sequence number is wrong.
pub fn verify_audit(args: &VerifyArgs) -> anyhow::Result<()> {
    use store::StoreRead;
    let (_store, reader) = store::SqliteStore::open(&args.data_dir)
        .with_context(|| format!("opening {}", args.data_dir.display()))?;
    let mut entries = Vec::new();
    loop {
        let after = entries.last().map_or(0, |e: &auth::AuditEntry| e.seq);
        let page = reader.audit(after, AUDIT_PAGE)?;
        if page.is_empty() {
            break;
        }
        entries.extend(page);
    }
    match auth::verify_chain(&entries) {
        Ok(count) => {
            println!("audit chain intact: {count} entries");
            Ok(())
        }
        Err(broken) => bail!("audit chain broken: {broken:?}"),
    }
}
