//! What the dashboard draws, read from the ledger: spend and tokens over time by a dimension,
//! what was masked by kind over time, latency per target, what the cache answered. Each reads the
//! rows of one time range through the `ts_ms` index, grouped in SQL.

use std::collections::{BTreeMap, HashMap};

use rusqlite::Connection;
use serde::Serialize;

use super::prices::{Micros, Prices};
use super::{GroupBy, Outcome, percentile};
use crate::model::Usage;

/// Values per key per time bucket: `values[k][b]` is key `keys[k]` in bucket `buckets[b]`.
#[derive(Debug, Default, Serialize)]
pub struct Grid<T> {
    /// Each bucket's start (ms since the epoch, UTC).
    pub buckets: Vec<i64>,
    pub keys: Vec<String>,
    pub values: Vec<Vec<T>>,
    #[serde(skip)]
    step: i64,
}

impl<T: Copy + Default + std::ops::AddAssign> Grid<T> {
    fn new(since: i64, until: i64, bucket_ms: i64) -> Self {
        let first = since.div_euclid(bucket_ms) * bucket_ms;
        let buckets = (first..until).step_by(bucket_ms.max(1) as usize).collect();
        Self { buckets, keys: Vec::new(), values: Vec::new(), step: bucket_ms.max(1) }
    }

    fn add(&mut self, key: &str, bucket: i64, value: T) {
        let Some(first) = self.buckets.first() else { return };
        let b = (bucket - first) / self.step;
        let Some(b) = usize::try_from(b).ok().filter(|b| *b < self.buckets.len()) else { return };
        let k = match self.keys.iter().position(|k| k == key) {
            Some(k) => k,
            None => {
                self.keys.push(key.to_string());
                self.values.push(vec![T::default(); self.buckets.len()]);
                self.keys.len() - 1
            }
        };
        self.values[k][b] += value;
    }
}

/// The SQL that names a row's key when grouping by `by`.
pub(super) fn key_sql(by: GroupBy) -> &'static str {
    match by {
        GroupBy::Model => "COALESCE(provider || '/' || model, '-')",
        GroupBy::Project => "COALESCE(project, '-')",
        GroupBy::Task => "task",
        GroupBy::Provider => "COALESCE(provider, '-')",
        GroupBy::Caller => "COALESCE(NULLIF(caller, ''), '-')",
        GroupBy::Arm => "COALESCE(experiment || ': ' || arm, '-')",
    }
}

/// Spend (micro-dollars) and tokens (input + output) per bucket of `bucket_ms`, by `by`.
pub fn spend_series(
    c: &Connection,
    since: i64,
    until: i64,
    bucket_ms: i64,
    by: GroupBy,
) -> rusqlite::Result<(Grid<Micros>, Grid<u64>)> {
    let mut cost = Grid::new(since, until, bucket_ms);
    let mut tokens = Grid::new(since, until, bucket_ms);
    let mut stmt = c.prepare_cached(&format!(
        "SELECT (ts_ms / ?3) * ?3, {key}, COALESCE(SUM(cost_micros), 0), SUM(input_tokens + output_tokens) \
         FROM ledger WHERE ts_ms >= ?1 AND ts_ms < ?2 GROUP BY 1, 2 ORDER BY 3 DESC",
        key = key_sql(by)
    ))?;
    let rows = stmt.query_map([since, until, bucket_ms], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
    })?;
    for row in rows {
        let (bucket, key, micros, toks) = row?;
        cost.add(&key, bucket, micros);
        tokens.add(&key, bucket, toks.max(0) as u64);
    }
    Ok((cost, tokens))
}

/// Values masked per kind per bucket (counts only: the ledger keeps no value).
pub fn redaction_series(c: &Connection, since: i64, until: i64, bucket_ms: i64) -> rusqlite::Result<Grid<u64>> {
    let mut grid = Grid::new(since, until, bucket_ms);
    let mut stmt = c.prepare_cached(
        "SELECT (ts_ms / ?3) * ?3, redacted FROM ledger \
         WHERE ts_ms >= ?1 AND ts_ms < ?2 AND redacted IS NOT NULL",
    )?;
    let rows = stmt.query_map([since, until, bucket_ms], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (bucket, kinds) = row?;
        for (kind, n) in kinds.split(',').filter_map(|p| p.split_once('=')) {
            grid.add(kind, bucket, n.parse().unwrap_or(0));
        }
    }
    Ok(grid)
}

/// How one target answered over a range.
#[derive(Debug, Serialize)]
pub struct TargetLatency {
    pub target: String,
    pub requests: u64,
    pub errors: u64,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub latency_ms_p99: f64,
}

/// Latency percentiles of the answered calls, and the failed ones, per target (cache hits apart).
pub fn target_latency(c: &Connection, since: i64, until: i64) -> rusqlite::Result<Vec<TargetLatency>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT provider || '/' || model, latency_ms, outcome = '{ok}' FROM ledger \
         WHERE ts_ms >= ?1 AND ts_ms < ?2 AND provider IS NOT NULL AND cache_hit = 0 AND outcome != '{pending}'",
        ok = Outcome::Ok.as_str(),
        pending = Outcome::Pending.as_str(),
    ))?;
    let mut by: BTreeMap<String, (Vec<f64>, u64)> = BTreeMap::new();
    for row in
        stmt.query_map([since, until], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?, r.get::<_, bool>(2)?)))?
    {
        let (target, latency, ok) = row?;
        let e = by.entry(target).or_default();
        if ok { e.0.push(latency) } else { e.1 += 1 }
    }
    Ok(by
        .into_iter()
        .map(|(target, (mut l, errors))| {
            l.sort_by(f64::total_cmp);
            TargetLatency {
                target,
                requests: l.len() as u64 + errors,
                errors,
                latency_ms_p50: percentile(&l, 0.50),
                latency_ms_p95: percentile(&l, 0.95),
                latency_ms_p99: percentile(&l, 0.99),
            }
        })
        .collect())
}

/// What the cache answered over a range.
#[derive(Debug, Serialize)]
pub struct CacheSummary {
    pub requests: u64,
    pub hits: u64,
    pub hit_rate: f64,
    /// What the answers the cache gave would have cost at the models' prices.
    pub saved_usd: String,
    /// Hits of models whose price is unknown (not in `saved_usd`).
    pub unpriced_hits: u64,
}

pub fn cache_summary(c: &Connection, prices: &Prices, since: i64, until: i64) -> rusqlite::Result<CacheSummary> {
    let requests: i64 = c
        .prepare_cached("SELECT COUNT(*) FROM ledger WHERE ts_ms >= ?1 AND ts_ms < ?2")?
        .query_row([since, until], |r| r.get(0))?;
    let mut stmt = c.prepare_cached(
        "SELECT provider, model, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cached_tokens) FROM ledger \
         WHERE ts_ms >= ?1 AND ts_ms < ?2 AND cache_hit = 1 GROUP BY 1, 2",
    )?;
    let (mut hits, mut saved, mut unpriced) = (0u64, 0i64, 0u64);
    let mut rows: HashMap<(String, String), (u64, Usage)> = HashMap::new();
    for row in stmt.query_map([since, until], |r| {
        Ok((
            r.get::<_, Option<String>>(0)?.unwrap_or_default(),
            r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            r.get::<_, i64>(2)? as u64,
            Usage {
                input_tokens: r.get::<_, i64>(3)? as u64,
                output_tokens: r.get::<_, i64>(4)? as u64,
                cached_tokens: r.get::<_, i64>(5)? as u64,
                cache_write_tokens: 0,
            },
        ))
    })? {
        let (provider, model, n, usage) = row?;
        rows.insert((provider, model), (n, usage));
    }
    for ((provider, model), (n, usage)) in rows {
        hits += n;
        match prices.lookup(&provider, &model) {
            Some(price) => saved += price.cost(&usage),
            None => unpriced += n,
        }
    }
    let requests = requests.max(0) as u64;
    Ok(CacheSummary {
        requests,
        hits,
        hit_rate: if requests == 0 { 0.0 } else { hits as f64 / requests as f64 },
        saved_usd: super::prices::format_usd(saved),
        unpriced_hits: unpriced,
    })
}
