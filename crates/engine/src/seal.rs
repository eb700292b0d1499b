//! Encryption at rest of what tollgate keeps of prompts and answers: cached answers, audit
//! entries and stored responses are sealed with AES-256-GCM (ring) under one key per user, held in
//! the OS keychain (a file readable by the user alone where no keychain keeps keys: the `env`
//! backend, or a keychain that refuses). A copied database file reveals no prompt and no answer.
//!
//! Each value is bound to its table and row (the associated data), so a sealed value moved to
//! another row, or another scope's cache entry, does not open. What the ledger counts (tokens,
//! cost, model, outcome) is not sealed: losing the key loses the cache, the audit log's text and
//! stored responses, never the accounting.
//!
//! Layout of a sealed value: a version byte (1), a 96-bit random nonce, the ciphertext and the
//! 128-bit tag. Random nonces are safe for far more values than a cache ever holds (2^32).

use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::keychain::{Keychain, Secret};

const VERSION: u8 = 1;
const KEY_LEN: usize = 32;
/// The keychain entry of the key: service and account.
const SERVICE: &str = "tollgate-storage";
const ACCOUNT: &str = "database-key";

/// Every sealed column: a value is sealed for one of these, and opens only for the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    CacheEvents,
    ResponseTurns,
    ResponseAnswer,
    AuditRequest,
    AuditResponse,
}

impl Column {
    pub const ALL: [Column; 5] =
        [Self::CacheEvents, Self::ResponseTurns, Self::ResponseAnswer, Self::AuditRequest, Self::AuditResponse];

    /// The table, the column, and the column that names the row.
    fn place(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::CacheEvents => ("cache", "events", "key"),
            Self::ResponseTurns => ("responses", "turns", "id"),
            Self::ResponseAnswer => ("responses", "answer", "id"),
            Self::AuditRequest => ("audit", "request", "request_id"),
            Self::AuditResponse => ("audit", "response", "request_id"),
        }
    }
}

/// Seals and opens values with the user's storage key.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

/// Where the storage key lives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "in")]
pub enum KeyHome {
    Keychain { backend: &'static str },
    File { path: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot keep the storage key in {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error(
        "the storage key in {0} is damaged (not {KEY_LEN} bytes in hex); move it aside to start a new one (cached answers and the audit log's text are lost, the ledger is kept)"
    )]
    Damaged(String),
    #[error("no random numbers from the operating system: {0}")]
    Random(String),
}

/// The associated data of a value: its table, column and row.
fn aad(column: Column, row: &[u8]) -> Vec<u8> {
    let (table, column, _) = column.place();
    let mut a = Vec::with_capacity(table.len() + column.len() + row.len() + 2);
    a.extend_from_slice(table.as_bytes());
    a.push(0x1f);
    a.extend_from_slice(column.as_bytes());
    a.push(0x1f);
    a.extend_from_slice(row);
    a
}

impl Sealer {
    fn from_key(bytes: &[u8; KEY_LEN]) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte AES-256 key");
        Self { key: LessSafeKey::new(unbound) }
    }

    /// A sealer with a fresh random key (tests, benchmarks).
    pub fn random() -> Self {
        Self::from_key(&random_key().expect("random numbers"))
    }

    /// Seals `plain` as the value of `column` in the row named `row`.
    pub fn seal(&self, column: Column, row: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("random numbers from the operating system");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plain.len() + AES_256_GCM.tag_len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad(column, row)), &mut body)
            .expect("sealing fits in memory");
        out.extend_from_slice(&body);
        out
    }

    /// Opens a value sealed by [`Sealer::seal`] for the same place; `None` when it was sealed
    /// with another key, for another place, or has been changed.
    pub fn open(&self, column: Column, row: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let (&version, rest) = sealed.split_first()?;
        if version != VERSION || rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(aad(column, row)), &mut body).ok()?;
        let n = plain.len();
        body.truncate(n);
        Some(body)
    }

    /// [`Sealer::open`], then the JSON it holds.
    pub fn open_json<T: serde::de::DeserializeOwned>(&self, column: Column, row: &[u8], sealed: &[u8]) -> Option<T> {
        serde_json::from_slice(&self.open(column, row, sealed)?).ok()
    }
}

fn random_key() -> Result<[u8; KEY_LEN], SealError> {
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| SealError::Random(e.to_string()))?;
    Ok(key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; KEY_LEN]> {
    let text = text.trim();
    if text.len() != KEY_LEN * 2 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; KEY_LEN];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// The key file's text: a regular file of a few bytes, nothing else.
fn read_key_file(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() || meta.len() > 1024 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a key file (a regular file of 64 hex digits)",
        ));
    }
    std::fs::read_to_string(path)
}

/// The file that holds the key where no keychain does.
pub fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("storage.key")
}

/// The user's storage key if there is one: from the keychain, else from the key file. With the
/// keychain's refusal, when it refused to be read. Blocking: the keychain may talk to D-Bus.
pub fn load(keychain: Option<&Keychain>, data_dir: &Path) -> Result<(Option<StorageKey>, Option<String>), SealError> {
    let file = key_file(data_dir);
    let mut refused = None;
    if let Some(k) = keychain.filter(|k| k.holds_keys()) {
        match k.get_entry(SERVICE, ACCOUNT) {
            Ok(Some(secret)) => {
                let key = unhex(secret.expose())
                    .ok_or_else(|| SealError::Damaged(format!("the {} keychain", k.backend_name())))?;
                return Ok((Some(StorageKey::new(&key, KeyHome::Keychain { backend: k.backend_name() }, false)), None));
            }
            Ok(None) => {}
            Err(e) => refused = Some(e.to_string()),
        }
    }
    match read_key_file(&file) {
        Ok(text) => {
            let key = unhex(&text).ok_or_else(|| SealError::Damaged(file.display().to_string()))?;
            Ok((Some(StorageKey::new(&key, KeyHome::File { path: file }, false)), refused))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((None, refused)),
        Err(source) => Err(SealError::File { path: file, source }),
    }
}

/// The user's storage key ([`load`]), made when there is none: in the keychain when it keeps it,
/// else in the key file. `created` tells that values sealed before cannot be opened.
pub fn load_or_create(keychain: Option<&Keychain>, data_dir: &Path) -> Result<StorageKey, SealError> {
    let (found, mut refused) = load(keychain, data_dir)?;
    if let Some(found) = found {
        return Ok(found);
    }
    // A keychain that could not be read (locked, its service not up yet) may hold the key that
    // sealed what is in the database: a new key is made (in the file) to carry on, but nothing is
    // removed, so that the old key opens it again once the keychain answers (it is looked up
    // before the file).
    let old_key_may_exist = refused.is_some();
    let key = random_key()?;
    if let Some(k) = keychain.filter(|k| k.holds_keys() && refused.is_none()) {
        match k.set_entry(SERVICE, ACCOUNT, &Secret::new(hex(&key))) {
            Ok(()) => return Ok(StorageKey::new(&key, KeyHome::Keychain { backend: k.backend_name() }, true)),
            Err(e) => refused = Some(e.to_string()),
        }
    }
    let file = key_file(data_dir);
    if let Some(why) = &refused {
        tracing::warn!(error = %why, path = %file.display(), "the keychain does not keep the storage key; it is kept in a file readable by you alone");
    }
    crate::paths::create_private_dir(data_dir).map_err(|source| SealError::File { path: file.clone(), source })?;
    crate::paths::write_private_file(&file, hex(&key).as_bytes())
        .map_err(|source| SealError::File { path: file.clone(), source })?;
    Ok(StorageKey::new(&key, KeyHome::File { path: file }, !old_key_may_exist))
}

/// The storage key as loaded.
#[derive(Debug)]
pub struct StorageKey {
    pub sealer: Sealer,
    pub home: KeyHome,
    /// Made just now where no key was: anything sealed before was sealed with a key no longer
    /// held, and may be removed.
    pub created: bool,
}

impl StorageKey {
    fn new(key: &[u8; KEY_LEN], home: KeyHome, created: bool) -> Self {
        Self { sealer: Sealer::from_key(key), home, created }
    }
}

/// What [`seal_database`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sealed {
    /// Plain-text values of an earlier version, sealed now.
    pub sealed: usize,
    /// Rows sealed with a key no longer held (a new key was made), removed.
    pub dropped: usize,
}

/// Brings the database in line with the key, from a connection of its own before the store's
/// thread takes writes: plain-text values an earlier version kept are sealed; with a new key, rows
/// sealed under the old one are removed (they cannot be opened; the ledger is untouched). When
/// anything changed the file is rewritten (VACUUM) and the WAL emptied, so that no old page keeps
/// the plain text.
pub fn seal_database(path: &Path, sealer: &Sealer, created: bool) -> rusqlite::Result<Sealed> {
    let c = rusqlite::Connection::open(path)?;
    c.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA secure_delete = ON;")?;
    let mut done = Sealed::default();
    let tx = c.unchecked_transaction()?;
    if created {
        for column in Column::ALL {
            let (table, name, _) = column.place();
            done.dropped += tx.execute(&format!("DELETE FROM {table} WHERE typeof({name}) = 'blob'"), [])?;
        }
    }
    for column in Column::ALL {
        let (table, name, id) = column.place();
        let plain: Vec<(i64, Vec<u8>, Vec<u8>)> = {
            let mut s = tx.prepare(&format!(
                "SELECT rowid, CAST({id} AS BLOB), CAST({name} AS BLOB) FROM {table} WHERE typeof({name}) = 'text'"
            ))?;
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<_>>()?
        };
        let mut update = tx.prepare(&format!("UPDATE {table} SET {name} = ?1 WHERE rowid = ?2"))?;
        for (rowid, row, value) in plain {
            update.execute(rusqlite::params![sealer.seal(column, &row, &value), rowid])?;
            done.sealed += 1;
        }
    }
    tx.commit()?;
    if done != Sealed::default() {
        c.execute_batch("VACUUM")?;
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_only_with_its_key_in_its_place_and_unchanged() {
        use Column::*;
        let s = Sealer::random();
        let sealed = s.seal(CacheEvents, b"k1", b"the answer");
        assert_eq!(s.open(CacheEvents, b"k1", &sealed).as_deref(), Some(&b"the answer"[..]));
        assert!(!sealed.windows(10).any(|w| w == b"the answer"));
        // Another row, column, table, key; a flipped bit; a truncated value.
        assert_eq!(s.open(CacheEvents, b"k2", &sealed), None);
        assert_eq!(s.open(AuditRequest, b"k1", &sealed), None);
        assert_eq!(s.open(ResponseAnswer, b"k1", &sealed), None);
        let answer = s.seal(ResponseAnswer, b"k1", b"x");
        assert_eq!(s.open(ResponseTurns, b"k1", &answer), None, "another column of the same table");
        assert_eq!(Sealer::random().open(CacheEvents, b"k1", &sealed), None);
        let mut bent = sealed.clone();
        *bent.last_mut().unwrap() ^= 1;
        assert_eq!(s.open(CacheEvents, b"k1", &bent), None);
        assert_eq!(s.open(CacheEvents, b"k1", &sealed[..sealed.len() - 1]), None);
        assert_eq!(s.open(CacheEvents, b"k1", &[]), None);
        // The same value sealed twice does not give the same bytes.
        assert_ne!(sealed, s.seal(CacheEvents, b"k1", b"the answer"));
    }

    #[test]
    fn the_key_file_is_made_once_readable_by_the_user_alone_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(None, dir.path()).unwrap();
        assert!(first.created);
        let sealed = first.sealer.seal(Column::AuditRequest, b"r", b"x");
        let again = load_or_create(None, dir.path()).unwrap();
        assert!(!again.created);
        assert_eq!(again.home, KeyHome::File { path: key_file(dir.path()) });
        assert_eq!(again.sealer.open(Column::AuditRequest, b"r", &sealed).as_deref(), Some(&b"x"[..]));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(key_file(dir.path())).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0);
        }
        std::fs::write(key_file(dir.path()), "not a key").unwrap();
        let e = load_or_create(None, dir.path()).unwrap_err().to_string();
        assert!(e.contains("damaged") && e.contains("ledger is kept"), "{e}");
    }
}
