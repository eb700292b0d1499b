//! Named API tokens, one per tool (`tollgate token new claude-code`), so that the ledger, usage
//! reports and budgets can tell one caller's spend from another's. A token is 128 random bits,
//! shown once when it is made and kept only as its SHA-256 (a random token needs no slow hash).
//! The daemon holds the hashes in memory; the database is their home, so `tollgate token new`
//! works whether or not a daemon runs (a running one is asked, and learns it at once).

use std::collections::HashMap;
use std::sync::RwLock;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The caller of the main token (`tollgate token`).
pub const DEFAULT: &str = "default";
/// A caller on the local socket that presented no named token.
pub const LOCAL: &str = "local";

/// Who called, once the request is authenticated (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    #[error("a token name is 1 to 40 of a-z, 0-9, '.', '_' and '-' (got {0:?})")]
    BadName(String),
    #[error("{0:?} is reserved for tollgate's own callers; choose another name")]
    Reserved(String),
    #[error("a token named {0:?} exists; revoke it first (`tollgate token revoke {0}`) or choose another name")]
    Exists(String),
    #[error("no token named {0:?} (see `tollgate token list`)")]
    Unknown(String),
    #[error("the database: {0}")]
    Db(#[from] rusqlite::Error),
}

/// A token as listed: never the token itself.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TokenInfo {
    pub name: String,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn check_name(name: &str) -> Result<(), CallerError> {
    if name == DEFAULT || name == LOCAL {
        return Err(CallerError::Reserved(name.into()));
    }
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(CallerError::BadName(name.into())) }
}

/// Makes a token named `name`; returns the token (the only time it is seen).
pub fn create(c: &Connection, name: &str, now_ms: i64) -> Result<String, CallerError> {
    check_name(name)?;
    let exists: Option<i64> =
        c.query_row("SELECT 1 FROM tokens WHERE name = ?1 AND revoked_ms IS NULL", [name], |r| r.get(0)).optional()?;
    if exists.is_some() {
        return Err(CallerError::Exists(name.into()));
    }
    let token = format!("tg-{}", crate::model::random_hex(16));
    c.execute(
        "INSERT INTO tokens (name, hash, created_ms) VALUES (?1, ?2, ?3)",
        params![name, hash(&token).as_slice(), now_ms],
    )?;
    Ok(token)
}

/// Revokes the token named `name`.
pub fn revoke(c: &Connection, name: &str, now_ms: i64) -> Result<(), CallerError> {
    let n =
        c.execute("UPDATE tokens SET revoked_ms = ?2 WHERE name = ?1 AND revoked_ms IS NULL", params![name, now_ms])?;
    if n == 0 { Err(CallerError::Unknown(name.into())) } else { Ok(()) }
}

/// The tokens in force, by name.
pub fn list(c: &Connection) -> Result<Vec<TokenInfo>, CallerError> {
    let mut stmt = c.prepare(
        "SELECT t.name, t.created_ms, (SELECT MAX(ts_ms) FROM ledger WHERE caller = t.name) \
         FROM tokens t WHERE revoked_ms IS NULL ORDER BY t.name",
    )?;
    let rows =
        stmt.query_map([], |r| Ok(TokenInfo { name: r.get(0)?, created_ms: r.get(1)?, last_used_ms: r.get(2)? }))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The hashes of the tokens in force, and whose each is.
fn load(c: &Connection) -> rusqlite::Result<HashMap<[u8; 32], String>> {
    let mut stmt = c.prepare("SELECT hash, name FROM tokens WHERE revoked_ms IS NULL")?;
    let rows = stmt.query_map([], |r| {
        let h: Vec<u8> = r.get(0)?;
        Ok((h, r.get::<_, String>(1)?))
    })?;
    let mut out = HashMap::new();
    for row in rows {
        let (h, name) = row?;
        if let Ok(h) = <[u8; 32]>::try_from(h.as_slice()) {
            out.insert(h, name);
        }
    }
    Ok(out)
}

/// The daemon's view of the named tokens.
#[derive(Default)]
pub struct Callers {
    by_hash: RwLock<HashMap<[u8; 32], String>>,
}

impl Callers {
    /// Reads the tokens in force from the database (on its thread).
    pub async fn refresh(&self, store: &crate::store::Store) {
        match store.run(load).await {
            Ok(Ok(map)) => *self.by_hash.write().expect("callers lock") = map,
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the named tokens"),
            Err(e) => tracing::warn!(error = %e, "cannot read the named tokens"),
        }
    }

    /// Whose named token this is, if it is one in force.
    pub fn who(&self, presented: &str) -> Option<String> {
        self.by_hash.read().expect("callers lock").get(&hash(presented)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(crate::store::SCHEMA).unwrap();
        c
    }

    #[test]
    fn a_token_is_kept_hashed_named_once_and_revocable() {
        let c = db();
        let t = create(&c, "claude-code", 1).unwrap();
        assert!(t.starts_with("tg-") && t.len() == 35);
        let stored: Vec<u8> = c.query_row("SELECT hash FROM tokens", [], |r| r.get(0)).unwrap();
        assert_eq!(stored, hash(&t).to_vec());
        assert!(!String::from_utf8_lossy(&stored).contains(&t[3..]));
        assert!(matches!(create(&c, "claude-code", 2), Err(CallerError::Exists(_))));
        let map = load(&c).unwrap();
        assert_eq!(map.get(&hash(&t)).map(String::as_str), Some("claude-code"));
        assert_eq!(
            list(&c).unwrap(),
            vec![TokenInfo { name: "claude-code".into(), created_ms: 1, last_used_ms: None }]
        );
        revoke(&c, "claude-code", 3).unwrap();
        assert!(load(&c).unwrap().is_empty());
        assert!(matches!(revoke(&c, "claude-code", 4), Err(CallerError::Unknown(_))));
        // The name is free again; the new token is another.
        assert_ne!(create(&c, "claude-code", 5).unwrap(), t);
    }

    #[test]
    fn names_are_checked() {
        let c = db();
        for bad in ["", "Claude", "a b", "x/y", &"a".repeat(41)] {
            assert!(matches!(create(&c, bad, 1), Err(CallerError::BadName(_))), "{bad:?}");
        }
        assert!(matches!(create(&c, DEFAULT, 1), Err(CallerError::Reserved(_))));
        assert!(matches!(create(&c, LOCAL, 1), Err(CallerError::Reserved(_))));
    }
}
