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

/// The keys the cache may hold, with their expiry, in memory: a miss is decided here, with no
/// round trip to the database thread. Never wrong about a miss: a key goes in before its row is
/// written, and comes out only when a snapshot taken after it went in no longer has it (or it
/// expired). It may be wrong about a hit (a row evicted for size, or that no longer opens): then
/// the lookup finds nothing, as before.
#[derive(Default)]
pub struct CacheIndex {
    keys: std::sync::Mutex<std::collections::HashMap<[u8; 32], Indexed>>,
    /// The stored answers' total size, kept as they are written and evicted (and recounted at
    /// each resync), so that a write does not sum the whole table to know whether to evict.
    bytes: std::sync::atomic::AtomicI64,
}

#[derive(Clone, Copy)]
struct Indexed {
    expires_ms: i64,
    added_ms: i64,
}

impl CacheIndex {
    fn keys(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<[u8; 32], Indexed>> {
        self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the cache may hold a fresh answer for `key` at `now`.
    pub fn may_hold(&self, key: &[u8; 32], now: i64) -> bool {
        self.keys().get(key).is_some_and(|k| k.expires_ms > now)
    }

    fn add(&self, key: [u8; 32], expires_ms: i64, now: i64) {
        self.keys().insert(key, Indexed { expires_ms, added_ms: now });
    }

    pub fn len(&self) -> usize {
        self.keys().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Brings the index in line with the database: keys it no longer holds (pruned, evicted for
    /// size) go, unless they were added after the snapshot began (their rows may be queued).
    pub async fn resync(&self, store: &Store) {
        let began = crate::utc::now_ms();
        let Ok(Ok((rows, bytes))) = store
            .run(|c| {
                let rows = c
                    .prepare("SELECT key, expires_ms FROM cache")?
                    .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let bytes: i64 = c.query_row("SELECT COALESCE(SUM(size), 0) FROM cache", [], |r| r.get(0))?;
                Ok::<_, rusqlite::Error>((rows, bytes))
            })
            .await
        else {
            return;
        };
        // Read on the database thread in order with the writes, so the sum is that snapshot's.
        self.bytes.store(bytes, std::sync::atomic::Ordering::Relaxed);
        let present: std::collections::HashMap<[u8; 32], i64> =
            rows.into_iter().filter_map(|(k, e)| Some((<[u8; 32]>::try_from(k.as_slice()).ok()?, e))).collect();
        let mut keys = self.keys();
        keys.retain(|k, v| v.added_ms >= began || present.contains_key(k));
        for (k, expires_ms) in present {
            keys.entry(k).or_insert(Indexed { expires_ms, added_ms: 0 });
        }
    }
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
pub fn store(
    store: &Store,
    index: &Arc<CacheIndex>,
    sealer: &Arc<Sealer>,
    entry: Entry,
    events: &[Event],
    now: i64,
    config: &CacheConfig,
) {
    let Ok(json) = serde_json::to_vec(events) else { return };
    let (ttl_ms, max_bytes) = (config.ttl_s as i64 * 1000, config.max_bytes as i64);
    // In the index before the row is written: a lookup meanwhile goes to the database and misses.
    index.add(entry.key, now + ttl_ms, crate::utc::now_ms());
    let sealer = Arc::clone(sealer);
    let index = Arc::clone(index);
    store.write(move |c| {
        use std::sync::atomic::Ordering::Relaxed;
        let Entry { key, scope, provider, model } = entry;
        let sealed = sealer.seal(Column::CacheEvents, &key, &json);
        let size = sealed.len() as i64;
        let replaced: i64 = c
            .query_row("SELECT size FROM cache WHERE key = ?1", [&key[..]], |r| r.get(0))
            .optional()
            .ok()
            .flatten()
            .unwrap_or(0);
        let r = c.execute(
            "INSERT OR REPLACE INTO cache (key, scope, provider, model, events, size, created_ms, last_used_ms, expires_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
            params![&key[..], scope, provider, model, sealed, size, now, now + ttl_ms],
        );
        if let Err(e) = r {
            tracing::error!(error = %e, "cache write failed");
            return;
        }
        let mut total = index.bytes.fetch_add(size - replaced, Relaxed) + size - replaced;
        // Least recently used first (the `cache_lru` index), until the rest fits.
        while total > max_bytes {
            let oldest: Vec<(Vec<u8>, i64)> = c
                .prepare_cached("SELECT key, size FROM cache ORDER BY last_used_ms LIMIT 64")
                .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
                .unwrap_or_default();
            if oldest.is_empty() {
                break;
            }
            for (k, sz) in oldest {
                if total <= max_bytes {
                    break;
                }
                if c.execute("DELETE FROM cache WHERE key = ?1", [&k]).is_ok() {
                    total -= sz;
                    // The key stays in the index until the next resync: a write of the same key
                    // may already be queued behind this one.
                    index.bytes.fetch_sub(sz, Relaxed);
                }
            }
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

    #[tokio::test]
    async fn the_index_decides_misses_in_memory_and_never_misses_a_stored_answer() {
        let dir = tempfile::tempdir().unwrap();
        let db = Store::open(&dir.path().join("t.db")).unwrap();
        let sealer = Arc::new(Sealer::random());
        let config = CacheConfig { enabled: true, ttl_s: 60, max_bytes: 1 << 20, tasks: Vec::new() };
        let index = Arc::new(CacheIndex::default());
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        let entry = |key| Entry { key, scope: "alice".into(), provider: "oa".into(), model: "m".into() };
        let events = vec![Event::TextDelta { text: "hi".into() }];
        assert!(!index.may_hold(&k1, 0));
        // In the index at once, before the row is even written.
        store(&db, &index, &sealer, entry(k1), &events, 1_000, &config);
        assert!(index.may_hold(&k1, 1_000));
        assert!(lookup(&db, &sealer, k1, 1_000, Row::default()).await.is_some());
        assert!(!index.may_hold(&k1, 61_000), "expired");
        // A daemon starting on the database finds what it holds.
        store(&db, &index, &sealer, entry(k2), &events, 1_000, &config);
        db.flush().await.unwrap();
        let fresh = CacheIndex::default();
        fresh.resync(&db).await;
        assert!(fresh.may_hold(&k1, 1_000) && fresh.may_hold(&k2, 1_000));
        // A row that went (pruned, evicted) leaves the index at the next resync...
        db.run(move |c| c.execute("DELETE FROM cache WHERE key = ?1", [&k2[..]])).await.unwrap().unwrap();
        assert!(fresh.may_hold(&k2, 1_000), "a false hit until then: the lookup finds nothing");
        assert!(lookup(&db, &sealer, k2, 1_000, Row::default()).await.is_none());
        fresh.resync(&db).await;
        assert!(!fresh.may_hold(&k2, 1_000) && fresh.may_hold(&k1, 1_000));
        // ...but a key added while the snapshot was taken stays (its row may still be queued).
        fresh.add([3u8; 32], i64::MAX, i64::MAX);
        fresh.resync(&db).await;
        assert!(fresh.may_hold(&[3u8; 32], 1_000));
    }

    #[tokio::test]
    async fn the_size_cap_evicts_the_least_recently_used_from_a_running_total() {
        let dir = tempfile::tempdir().unwrap();
        let db = Store::open(&dir.path().join("t.db")).unwrap();
        let sealer = Arc::new(Sealer::random());
        let index = Arc::new(CacheIndex::default());
        let events = vec![Event::TextDelta { text: "x".repeat(200) }];
        let entry = |n: u8| Entry { key: [n; 32], scope: "s".into(), provider: "p".into(), model: "m".into() };
        let roomy = CacheConfig { enabled: true, ttl_s: 60, max_bytes: 1 << 20, tasks: Vec::new() };
        store(&db, &index, &sealer, entry(0), &events, 0, &roomy);
        db.flush().await.unwrap();
        let one = index.bytes.load(std::sync::atomic::Ordering::Relaxed);
        assert!(one > 200, "{one}");
        // Room for three: writing six keeps the three most recently used.
        let tight = CacheConfig { max_bytes: (one * 3 + one / 2) as u64, ..roomy };
        for n in 1..=5u8 {
            store(&db, &index, &sealer, entry(n), &events, i64::from(n), &tight);
        }
        // Writing a key again replaces its row: the total counts it once.
        store(&db, &index, &sealer, entry(5), &events, 6, &tight);
        db.flush().await.unwrap();
        let (count, sum, oldest): (i64, i64, i64) = db
            .run(|c| {
                c.query_row("SELECT count(*), SUM(size), MIN(last_used_ms) FROM cache", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!((count, oldest), (3, 3));
        assert_eq!(index.bytes.load(std::sync::atomic::Ordering::Relaxed), sum, "the running total is the table's");
    }

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
