//! What reports and the dashboard read from the ledger: usage, spend and tokens over time by a
//! dimension, what was masked by kind over time, latency per target and per arm, what the cache
//! answered. Sums come from a daily roll-up kept by triggers ([`rollup_ddl`]) for whole days, from
//! the rows for the rest; percentiles and masked kinds from partial indexes that hold what they
//! need (`ledger_answered`, `ledger_redacted`), never the rows themselves. A month of a million-row
//! ledger reads in milliseconds (`tollgate-bench --scenario dashboard`).

use std::collections::HashMap;

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

const DAY_MS: i64 = 86_400_000;
/// The measures the roll-up keeps per day and grouping.
const MEASURES: [&str; 7] =
    ["requests", "input_tokens", "output_tokens", "cached_tokens", "cost_micros", "unknown_cost", "errors"];
const ROLLUP_KEY: &str = "day, provider, model, project, task, caller, experiment, arm, cache_hit";

/// The ledger rolled up per UTC day and everything reports group by (`ledger_daily`), kept by
/// triggers on every insert, update and delete of a row: a report over whole days reads a few
/// rows a day instead of every call. Created once, with the rows already in the ledger.
pub fn rollup_ddl() -> String {
    let (ok, pending) = (Outcome::Ok.as_str(), Outcome::Pending.as_str());
    // A row's grouping and measures; `sign` "-" takes the row back out.
    let values = |r: &str, sign: &str| {
        format!(
            "{r}.ts_ms / {DAY_MS}, COALESCE({r}.provider, ''), COALESCE({r}.model, ''), COALESCE({r}.project, ''), \
             {r}.task, COALESCE({r}.caller, ''), COALESCE({r}.experiment, ''), COALESCE({r}.arm, ''), {r}.cache_hit, \
             {sign}1, {sign}{r}.input_tokens, {sign}{r}.output_tokens, {sign}{r}.cached_tokens, \
             {sign}COALESCE({r}.cost_micros, 0), \
             {sign}({r}.cost_micros IS NULL AND {r}.cache_hit = 0 AND {r}.outcome = '{ok}'), \
             {sign}({r}.outcome NOT IN ('{ok}', '{pending}'))"
        )
    };
    let set: Vec<String> = MEASURES.iter().map(|m| format!("{m} = {m} + excluded.{m}")).collect();
    let add = |values: String| {
        format!(
            "INSERT INTO ledger_daily ({ROLLUP_KEY}, {}) VALUES ({values}) ON CONFLICT ({ROLLUP_KEY}) DO UPDATE SET {};",
            MEASURES.join(", "),
            set.join(", ")
        )
    };
    format!(
        "CREATE TABLE ledger_daily (day INTEGER NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL, \
         project TEXT NOT NULL, task TEXT NOT NULL, caller TEXT NOT NULL, experiment TEXT NOT NULL, arm TEXT NOT NULL, \
         cache_hit INTEGER NOT NULL, {measures}, PRIMARY KEY ({ROLLUP_KEY})) WITHOUT ROWID; \
         INSERT INTO ledger_daily ({ROLLUP_KEY}, {names}) SELECT ts_ms / {DAY_MS}, COALESCE(provider, ''), \
         COALESCE(model, ''), COALESCE(project, ''), task, COALESCE(caller, ''), COALESCE(experiment, ''), \
         COALESCE(arm, ''), cache_hit, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cached_tokens), \
         SUM(COALESCE(cost_micros, 0)), SUM(cost_micros IS NULL AND cache_hit = 0 AND outcome = '{ok}'), \
         SUM(outcome NOT IN ('{ok}', '{pending}')) FROM ledger GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9; \
         CREATE TRIGGER ledger_daily_insert AFTER INSERT ON ledger BEGIN {insert} END; \
         CREATE TRIGGER ledger_daily_update AFTER UPDATE ON ledger BEGIN {take_old} {insert} END; \
         CREATE TRIGGER ledger_daily_delete AFTER DELETE ON ledger BEGIN {take_old} END",
        measures = MEASURES.map(|m| format!("{m} INTEGER NOT NULL")).join(", "),
        names = MEASURES.join(", "),
        insert = add(values("NEW", "")),
        take_old = add(values("OLD", "-")),
    )
}

/// The calls of `[since, until)` as rows of (provider, model, project, task, caller, experiment,
/// arm, cache_hit, at, requests, input_tokens, output_tokens, cached_tokens, cost, unknown,
/// errors): whole UTC days from the roll-up and the ragged ends from the ledger, or, with
/// `rollup` false (buckets shorter than a day), the ledger alone.
pub(super) fn source(since: i64, until: i64, rollup: bool) -> String {
    let (ok, pending) = (Outcome::Ok.as_str(), Outcome::Pending.as_str());
    let raw = |lo: i64, hi: i64| {
        format!(
            "SELECT provider, model, project, task, caller, experiment, arm, cache_hit, ts_ms AS at, 1 AS requests, \
             input_tokens, output_tokens, cached_tokens, COALESCE(cost_micros, 0) AS cost, \
             (cost_micros IS NULL AND cache_hit = 0 AND outcome = '{ok}') AS unknown, \
             (outcome NOT IN ('{ok}', '{pending}')) AS errors FROM ledger WHERE ts_ms >= {lo} AND ts_ms < {hi}"
        )
    };
    if !rollup {
        return raw(since, until);
    }
    let head_end = (since.div_euclid(DAY_MS).saturating_add(i64::from(since.rem_euclid(DAY_MS) != 0)))
        .saturating_mul(DAY_MS)
        .min(until);
    let tail_start = until.div_euclid(DAY_MS).saturating_mul(DAY_MS).max(head_end);
    format!(
        "{head} UNION ALL SELECT NULLIF(provider, ''), NULLIF(model, ''), NULLIF(project, ''), task, \
         NULLIF(caller, ''), NULLIF(experiment, ''), NULLIF(arm, ''), cache_hit, day * {DAY_MS}, requests, \
         input_tokens, output_tokens, cached_tokens, cost_micros, unknown_cost, errors FROM ledger_daily \
         WHERE day >= {d0} AND day < {d1} UNION ALL {tail}",
        head = raw(since, head_end),
        d0 = head_end / DAY_MS,
        d1 = tail_start / DAY_MS,
        tail = raw(tail_start, until),
    )
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
    let mut stmt = c.prepare(&format!(
        "SELECT (at / ?1) * ?1, {key}, SUM(cost), SUM(input_tokens + output_tokens) FROM ({source}) \
         GROUP BY 1, 2 HAVING SUM(requests) > 0 ORDER BY 3 DESC",
        key = key_sql(by),
        source = source(since, until, bucket_ms % DAY_MS == 0),
    ))?;
    let rows = stmt.query_map([bucket_ms], |r| {
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
        "SELECT (ts_ms / ?3) * ?3, redacted FROM ledger INDEXED BY ledger_redacted \
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

/// The latencies of the calls providers answered in `[since, until)` (cache hits apart), sorted,
/// by `key` (an expression of provider, model, experiment and arm; rows where it is NULL left
/// out): read from the `ledger_answered` index alone.
pub(super) fn latencies_by(
    c: &Connection,
    since: i64,
    until: i64,
    key: &str,
) -> rusqlite::Result<HashMap<String, Vec<f64>>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {key}, latency_ms FROM ledger INDEXED BY ledger_answered \
         WHERE ts_ms >= ?1 AND ts_ms < ?2 AND outcome = '{ok}' AND cache_hit = 0",
        ok = Outcome::Ok.as_str()
    ))?;
    let mut out: HashMap<String, Vec<f64>> = HashMap::new();
    for r in stmt.query_map([since, until], |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, f64>(1)?)))? {
        if let (Some(k), l) = r? {
            out.entry(k).or_default().push(l);
        }
    }
    out.values_mut().for_each(|l| l.sort_by(f64::total_cmp));
    Ok(out)
}

/// How one target answered over a range.
#[derive(Debug, Serialize)]
pub struct TargetLatency {
    pub target: String,
    /// Calls sent to it (cache hits apart), and those that failed.
    pub requests: u64,
    pub errors: u64,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub latency_ms_p99: f64,
}

/// Calls, failures and latency percentiles of the answered calls, per target (cache hits apart).
pub fn target_latency(c: &Connection, since: i64, until: i64) -> rusqlite::Result<Vec<TargetLatency>> {
    let mut stmt = c.prepare(&format!(
        "SELECT provider || '/' || model, SUM(requests), SUM(errors) FROM ({source}) \
         WHERE provider IS NOT NULL AND cache_hit = 0 GROUP BY 1 HAVING SUM(requests) > 0 ORDER BY 1",
        source = source(since, until, true),
    ))?;
    let mut latencies = latencies_by(c, since, until, "provider || '/' || model")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))?;
    rows.map(|row| {
        let (target, requests, errors) = row?;
        let l = latencies.remove(&target).unwrap_or_default();
        Ok(TargetLatency {
            target,
            requests: requests.max(0) as u64,
            errors: errors.max(0) as u64,
            latency_ms_p50: percentile(&l, 0.50),
            latency_ms_p95: percentile(&l, 0.95),
            latency_ms_p99: percentile(&l, 0.99),
        })
    })
    .collect()
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
    let mut stmt = c.prepare(&format!(
        "SELECT cache_hit, provider, model, SUM(requests), SUM(input_tokens), SUM(output_tokens), SUM(cached_tokens) \
         FROM ({source}) GROUP BY 1, 2, 3",
        source = source(since, until, true),
    ))?;
    let (mut requests, mut hits, mut saved, mut unpriced) = (0u64, 0u64, 0i64, 0u64);
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, bool>(0)?,
            r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            r.get::<_, Option<String>>(2)?.unwrap_or_default(),
            r.get::<_, i64>(3)?.max(0) as u64,
            Usage {
                input_tokens: r.get::<_, i64>(4)?.max(0) as u64,
                output_tokens: r.get::<_, i64>(5)?.max(0) as u64,
                cached_tokens: r.get::<_, i64>(6)?.max(0) as u64,
                cache_write_tokens: 0,
            },
        ))
    })?;
    for row in rows {
        let (hit, provider, model, n, usage) = row?;
        requests += n;
        if !hit {
            continue;
        }
        hits += n;
        match prices.lookup(&provider, &model) {
            Some(price) => saved += price.cost(&usage),
            None => unpriced += n,
        }
    }
    Ok(CacheSummary {
        requests,
        hits,
        hit_rate: if requests == 0 { 0.0 } else { hits as f64 / requests as f64 },
        saved_usd: super::prices::format_usd(saved),
        unpriced_hits: unpriced,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Row, insert};

    /// A group's key and sums.
    type Sums = (String, i64, i64, i64, i64, i64, i64, i64);

    /// Every grouping's sums over `[since, until)`, through the roll-up or from the rows alone.
    fn sums(c: &Connection, since: i64, until: i64, rollup: bool) -> Vec<Sums> {
        let mut out = Vec::new();
        for by in [GroupBy::Model, GroupBy::Project, GroupBy::Task, GroupBy::Provider, GroupBy::Caller, GroupBy::Arm] {
            let sql = format!(
                "SELECT {key}, SUM(requests), SUM(input_tokens + output_tokens), SUM(cached_tokens), SUM(cost), \
                 SUM(unknown), SUM(cache_hit * requests), SUM(errors) FROM ({source}) GROUP BY 1 \
                 HAVING SUM(requests) > 0 ORDER BY 1",
                key = key_sql(by),
                source = source(since, until, rollup)
            );
            let mut stmt = c.prepare(&sql).unwrap();
            let rows = stmt.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
            });
            out.extend(rows.unwrap().map(Result::unwrap));
        }
        out
    }

    #[test]
    fn the_daily_rollup_adds_up_to_the_rows_it_rolls_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(crate::store::Store::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let start = 20_000 * DAY_MS;
        let row = |i: usize, rng: &mut fastrand::Rng| Row {
            request_id: format!("r{i}"),
            ts_ms: start + rng.i64(0..5 * DAY_MS),
            identity: "me".into(),
            project: rng.bool().then(|| format!("g/p{}", rng.u8(0..3))),
            task: ["chat", "review", "completion"][rng.usize(0..3)].into(),
            entry: "openai".into(),
            caller: ["", "default", "codex"][rng.usize(0..3)].into(),
            provider: rng.bool().then(|| ["oa", "an"][rng.usize(0..2)].into()),
            model: Some(["m1", "m2"][rng.usize(0..2)].into()),
            input_tokens: rng.u64(0..5000),
            output_tokens: rng.u64(0..900),
            cached_tokens: rng.u64(0..100),
            cost_micros: rng.bool().then(|| rng.i64(0..50_000)),
            cache_hit: rng.u8(0..5) == 0,
            experiment: (rng.u8(0..3) == 0).then(|| "e".to_string()),
            arm: Some(["a", "b"][rng.usize(0..2)].into()),
            outcome: [Outcome::Ok, Outcome::Pending, Outcome::Failed][rng.usize(0..3)],
            ..Default::default()
        };
        let mut rows: Vec<Row> = (0..600).map(|i| row(i, &mut rng)).collect();
        for r in &rows {
            insert(&c, r).unwrap();
        }
        // Settled later, some by another provider (a fallback): the roll-up moves the call.
        for r in rows.iter_mut().filter(|r| r.outcome == Outcome::Pending) {
            r.outcome = if rng.bool() { Outcome::Ok } else { Outcome::Cut };
            r.provider = Some("ob".into());
            r.input_tokens += 7;
            insert(&c, r).unwrap();
        }
        c.execute("DELETE FROM ledger WHERE request_id IN ('r1', 'r2', 'r3')", []).unwrap();
        let ranges = [
            (start, start + 5 * DAY_MS),
            (start + 3_600_000, start + 3 * DAY_MS + 7),
            (start + DAY_MS / 2, i64::MAX),
            (start + DAY_MS + 1, start + DAY_MS + 2 * 3_600_000),
            (0, start + 2 * DAY_MS),
        ];
        for (since, until) in ranges {
            let raw = sums(&c, since, until, false);
            assert!(!raw.is_empty());
            assert_eq!(sums(&c, since, until, true), raw, "{since}..{until}");
        }

        // A database from before the roll-up gets one, with the rows it already has.
        c.execute_batch(
            "DROP TRIGGER ledger_daily_insert; DROP TRIGGER ledger_daily_update; DROP TRIGGER ledger_daily_delete; \
             DROP TABLE ledger_daily;",
        )
        .unwrap();
        drop(c);
        drop(crate::store::Store::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        for (since, until) in ranges {
            assert_eq!(sums(&c, since, until, true), sums(&c, since, until, false));
        }
    }
}
