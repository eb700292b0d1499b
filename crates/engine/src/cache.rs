//! The response cache: exact match on a hash of the canonical request (after redaction), the
//! route's targets and the caller's scope (user and project), so that no answer crosses scopes.
//! An answer is stored as its event sequence and replayed as a stream or folded into a whole
//! answer, whichever the caller asked for. Rows hold only what the pipeline gave the provider
//! and what came back, sealed ([`crate::seal`]): a copied database shows no answer. TTL and a
//! size cap (least recently used first out) come from config.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use std::sync::Arc;

use crate::ledger::{self, Outcome, Row};
use crate::model::{ChatRequest, Event, Usage};
use crate::seal::{Column, Sealer};

use crate::store::Store;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Seconds an answer stays fresh.
    pub ttl_s: u64,
    /// Largest total size of stored answers; least recently used go first.
    pub max_bytes: u64,
    /// Tasks whose answers are cached whatever their temperature (others: temperature 0 only).
    pub tasks: Vec<String>,
}

pub struct Hit {
    pub provider: String,
    pub model: String,
    pub events: Vec<Event>,
    /// The ledger row recorded for the hit.
    pub row: Row,
}

/// The cache key: everything that determines the answer, and the scope it may be served in.
pub fn key(req: &ChatRequest, targets: &[String], scope: &str) -> [u8; 32] {
    let mut canonical = req.clone();
    canonical.stream = false;
    // Streamed or not, the answer is the same: a stream is replayed from a whole answer and back.
    if let Some(body) = canonical.native.as_mut().and_then(|n| n.body.as_object_mut()) {
        body.shift_remove("stream");
        body.shift_remove("stream_options");
    }
    let mut h = Sha256::new();
    h.update(scope.as_bytes());
    h.update([0x1f]);
    h.update(targets.join(",").as_bytes());
    h.update([0x1f]);
    // serde_json writes struct fields in order, and a caller's body in its own key order: the
    // same request text gives the same key.
    h.update(serde_json::to_vec(&canonical).expect("a request serializes"));
    h.finalize().into()
}

fn usage_of(events: &[Event]) -> Usage {
    let mut u = Usage::default();
    for e in events {
        if let Event::Usage { usage } = e {
            u.merge(*usage);
        }
    }
    u
}

/// Looks the key up; on a hit, records the call in the ledger in the same transaction, and
/// returns once that is committed. `row` is the call's row, completed here. An answer that does
/// not open (sealed with a key no longer held, or damaged) is a miss, and is removed.
pub async fn lookup(store: &Store, sealer: &Arc<Sealer>, key: [u8; 32], now: i64, row: Row) -> Option<Hit> {
    let sealer = Arc::clone(sealer);
    store
        .call_durable(move |c| {
            let found: Option<(String, String, Vec<u8>)> = c
                .prepare_cached("SELECT provider, model, events FROM cache WHERE key = ?1 AND expires_ms > ?2")
                .and_then(|mut s| {
                    s.query_row(params![&key[..], now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()
                })
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cache lookup failed");
                    None
                });
            let (provider, model, sealed) = found?;
            let Some(events) = sealer.open_json::<Vec<Event>>(Column::CacheEvents, &key, &sealed) else {
                let _ = c.execute("DELETE FROM cache WHERE key = ?1", [&key[..]]);
                return None;
            };
            let _ = c.execute("UPDATE cache SET last_used_ms = ?2 WHERE key = ?1", params![&key[..], now]);
            let usage = usage_of(&events);
            let row = Row {
                provider: Some(provider.clone()),
                model: Some(model.clone()),
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                cached_tokens: usage.cached_tokens,
                cost_micros: Some(0),
                cache_hit: true,
                outcome: Outcome::Ok,
                ..row
            };
            if let Err(e) = ledger::insert(c, &row) {
                tracing::error!(error = %e, "ledger write failed");
            }
            Some(Hit { provider, model, events, row })
        })
        .await
        .ok()
        .flatten()
}

/// Where an answer is stored: its key, the scope it may be served in, and who answered.
pub struct Entry {
    pub key: [u8; 32],
    pub scope: String,
    pub provider: String,
    pub model: String,
}

/// Stores a complete answer, sealed, then evicts the least recently used answers over the size
/// cap. Sealing runs on the database thread, off the async workers.
pub fn store(store: &Store, sealer: &Arc<Sealer>, entry: Entry, events: &[Event], now: i64, config: &CacheConfig) {
    let Ok(json) = serde_json::to_vec(events) else { return };
    let (ttl_ms, max_bytes) = (config.ttl_s as i64 * 1000, config.max_bytes as i64);
    let sealer = Arc::clone(sealer);
    store.write(move |c| {
        let Entry { key, scope, provider, model } = entry;
        let sealed = sealer.seal(Column::CacheEvents, &key, &json);
        let size = sealed.len() as i64;
        let r = c.execute(
            "INSERT OR REPLACE INTO cache (key, scope, provider, model, events, size, created_ms, last_used_ms, expires_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
            params![&key[..], scope, provider, model, sealed, size, now, now + ttl_ms],
        );
        if let Err(e) = r {
            tracing::error!(error = %e, "cache write failed");
            return;
        }
        let total: i64 = c.query_row("SELECT COALESCE(SUM(size), 0) FROM cache", [], |r| r.get(0)).unwrap_or(0);
        if total > max_bytes {
            // Oldest use first, until the rest fits.
            let _ = c.execute(
                "DELETE FROM cache WHERE key IN (SELECT key FROM (SELECT key, SUM(size) OVER (ORDER BY last_used_ms DESC) AS kept \
                 FROM cache) WHERE kept > ?1)",
                [max_bytes],
            );
        }
    });
}

/// Deletes expired answers.
pub fn prune(c: &rusqlite::Connection, now: i64) -> rusqlite::Result<usize> {
    c.execute("DELETE FROM cache WHERE expires_ms <= ?1", [now])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Message, Role};

    #[test]
    fn the_key_ignores_streaming_and_separates_scopes_and_routes() {
        let req = ChatRequest {
            model: "fast".into(),
            messages: vec![Message::text(Role::User, "hi")],
            temperature: Some(0.0),
            ..Default::default()
        };
        let streamed = ChatRequest { stream: true, ..req.clone() };
        let t = vec!["openai/gpt-4.1".to_string()];
        assert_eq!(key(&req, &t, "me\u{1f}acme/web"), key(&streamed, &t, "me\u{1f}acme/web"));
        assert_ne!(key(&req, &t, "me\u{1f}acme/web"), key(&req, &t, "me\u{1f}acme/api"));
        assert_ne!(key(&req, &t, "s"), key(&req, &["anthropic/claude".to_string()], "s"));
        let other = ChatRequest { temperature: Some(0.5), ..req.clone() };
        assert_ne!(key(&req, &t, "s"), key(&other, &t, "s"));
    }
}
