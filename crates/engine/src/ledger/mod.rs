//! The usage ledger: one row per request, what it cost and how it went; usage reports; the audit
//! log. Prices and budgets live beside it.
//!
//! A row is written when the request is sent to a provider (`pending`, with the estimate), and
//! settled with the real figures once the answer is complete. Both go through [`Ledger::write`]:
//! appended to a journal inline (durable against the process being killed once it returns), then
//! ingested by the database thread off the request's path (see `journal.rs`). A daemon killed in
//! between leaves `pending` rows, which the next start marks `interrupted`: no request that got an
//! answer is missing from the ledger.

pub mod budgets;
mod journal;
pub mod prices;
pub mod views;

pub use journal::{Ledger, OpenError, Pending, Written};

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::seal::{Column, Sealer};
use crate::store::Store;
use crate::utc;
use prices::Micros;

pub use tollgate_protocol::{Call, GroupBy, Outcome, Row, UsageLine, UsageReport};

const COLUMNS: &str = "request_id, ts_ms, identity, project, task, entry, provider, model, input_tokens, output_tokens, \
                       cached_tokens, cost_micros, latency_ms, added_ms, cache_hit, redactions, outcome, note, \
                       cache_write_tokens, caller, experiment, arm, redacted";

/// Writes a row, or the settled figures of a row written before. A pending row (an estimate)
/// never replaces a settled one: a pending row retried after a failed commit may land after the
/// row that settled it.
pub fn insert(c: &Connection, r: &Row) -> rusqlite::Result<()> {
    c.prepare_cached(&format!(
        "INSERT INTO ledger ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23) \
         ON CONFLICT (request_id) DO UPDATE SET provider = excluded.provider, model = excluded.model, \
         input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens, cached_tokens = excluded.cached_tokens, \
         cache_write_tokens = excluded.cache_write_tokens, \
         cost_micros = excluded.cost_micros, latency_ms = excluded.latency_ms, added_ms = excluded.added_ms, \
         cache_hit = excluded.cache_hit, redactions = excluded.redactions, outcome = excluded.outcome, note = excluded.note, \
         experiment = excluded.experiment, arm = excluded.arm, redacted = excluded.redacted \
         WHERE excluded.outcome != 'pending' OR ledger.outcome = 'pending'"
    ))?
    .execute(params![
        r.request_id,
        r.ts_ms,
        r.identity,
        r.project,
        r.task,
        r.entry,
        r.provider,
        r.model,
        r.input_tokens as i64,
        r.output_tokens as i64,
        r.cached_tokens as i64,
        r.cost_micros,
        r.latency_ms,
        r.added_ms,
        r.cache_hit,
        r.redactions,
        r.outcome.as_str(),
        r.note,
        r.cache_write_tokens as i64,
        r.caller,
        r.experiment,
        r.arm,
        r.redacted,
    ])?;
    Ok(())
}

/// At start: rows a killed daemon left pending (committed when this returns).
async fn recover(store: &Store) -> usize {
    store
        .call_durable(|c| {
            c.execute(
                "UPDATE ledger SET outcome = ?1, note = 'the daemon stopped before the answer was settled; figures are the estimate' \
                 WHERE outcome = ?2",
                params![Outcome::Interrupted.as_str(), Outcome::Pending.as_str()],
            )
            .unwrap_or(0)
        })
        .await
        .unwrap_or(0)
}

/// Spend in each budget's current period, to seed the in-memory counters.
pub async fn budget_spend(store: &Store, budgets: &budgets::Budgets, now: i64) -> budgets::Spent {
    let queries: Vec<(usize, budgets::BudgetScope, i64)> =
        budgets.configs().map(|(i, b)| (i, b.scope, b.period.start(now))).collect();
    store
        .run(move |c| {
            let mut out = HashMap::new();
            for (i, scope, since) in queries {
                let key = match scope {
                    budgets::BudgetScope::User | budgets::BudgetScope::Group | budgets::BudgetScope::Team => "''",
                    budgets::BudgetScope::Project => "COALESCE(project, '')",
                    budgets::BudgetScope::Model => "COALESCE(provider, '') || '/' || COALESCE(model, '')",
                };
                let sql = format!(
                    "SELECT {key}, COALESCE(SUM(cost_micros), 0), COALESCE(SUM(input_tokens + output_tokens), 0) \
                     FROM ledger WHERE ts_ms >= ?1 AND cache_hit = 0 GROUP BY 1"
                );
                let Ok(mut stmt) = c.prepare(&sql) else { continue };
                let rows =
                    stmt.query_map([since], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)));
                for (k, m, t) in rows.into_iter().flatten().flatten() {
                    out.insert((i, k), (m, t as u64));
                }
            }
            out
        })
        .await
        .unwrap_or_default()
}

/// Usage in `[since, until)`, grouped (`i64::MAX`: to now).
pub fn usage(c: &Connection, since: i64, until: i64, by: GroupBy) -> rusqlite::Result<UsageReport> {
    let sql = format!(
        "SELECT {key}, SUM(requests), SUM(input_tokens), SUM(output_tokens), SUM(cached_tokens), SUM(cost), \
         SUM(unknown), SUM(cache_hit * requests), SUM(errors) FROM ({source}) \
         GROUP BY 1 HAVING SUM(requests) > 0 ORDER BY 6 DESC, 2 DESC",
        key = views::key_sql(by),
        source = views::source(since, until, true),
    );
    let mut stmt = c.prepare(&sql)?;
    let line = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(UsageLine, Micros)> {
        let cost: i64 = r.get(5)?;
        Ok((
            UsageLine {
                key: r.get(0)?,
                requests: r.get::<_, i64>(1)? as u64,
                input_tokens: r.get::<_, i64>(2)? as u64,
                output_tokens: r.get::<_, i64>(3)? as u64,
                cached_tokens: r.get::<_, i64>(4)? as u64,
                cost_usd: prices::format_usd(cost),
                unknown_cost_requests: r.get::<_, i64>(6)? as u64,
                cache_hits: r.get::<_, i64>(7)? as u64,
                errors: r.get::<_, i64>(8)? as u64,
                ..Default::default()
            },
            cost,
        ))
    };
    let mut rows: Vec<(UsageLine, Micros)> = stmt.query_map([], line)?.collect::<Result<_, _>>()?;
    if by == GroupBy::Arm {
        let mut latencies = views::latencies_by(c, since, until, "experiment || ': ' || arm")?;
        for (line, _) in &mut rows {
            if let Some(l) = latencies.remove(&line.key) {
                line.latency_ms_p50 = Some(percentile(&l, 0.50));
                line.latency_ms_p95 = Some(percentile(&l, 0.95));
            }
        }
        for review in reviews_by_arm(c, since, until)? {
            match rows.iter_mut().find(|(l, _)| l.key == review.arm) {
                Some((line, _)) => line.review = Some(review),
                // Only dismissals in the range: the arm's calls were before it.
                None => {
                    rows.push((UsageLine { key: review.arm.clone(), review: Some(review), ..UsageLine::default() }, 0))
                }
            }
        }
    }
    let mut total = UsageLine { key: "total".into(), ..Default::default() };
    let mut cost = 0;
    for (l, c) in &rows {
        total.requests += l.requests;
        total.input_tokens += l.input_tokens;
        total.output_tokens += l.output_tokens;
        total.cached_tokens += l.cached_tokens;
        total.unknown_cost_requests += l.unknown_cost_requests;
        total.cache_hits += l.cache_hits;
        total.errors += l.errors;
        cost += c;
    }
    total.cost_usd = prices::format_usd(cost);
    Ok(UsageReport { since: utc::iso(since), group_by: by, lines: rows.into_iter().map(|(l, _)| l).collect(), total })
}

/// Keeps how reviews went per arm ([`crate::tasks::PromptRunner::reviewed`]).
pub fn record_reviews(
    c: &Connection,
    ts_ms: i64,
    outcomes: &[tollgate_protocol::ReviewOutcome],
) -> rusqlite::Result<()> {
    let mut stmt = c.prepare_cached(
        "INSERT INTO review_outcomes (ts_ms, arm, chunks, findings, dismissed) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for o in outcomes.iter().filter(|o| o.chunks + o.findings + o.dismissed > 0) {
        stmt.execute(params![ts_ms, o.arm, o.chunks as i64, o.findings as i64, o.dismissed as i64])?;
    }
    Ok(())
}

/// How reviews went per arm in `[since, until)`.
fn reviews_by_arm(c: &Connection, since: i64, until: i64) -> rusqlite::Result<Vec<tollgate_protocol::ReviewOutcome>> {
    let mut stmt = c.prepare_cached(
        "SELECT arm, SUM(chunks), SUM(findings), SUM(dismissed) FROM review_outcomes \
         WHERE ts_ms >= ?1 AND ts_ms < ?2 GROUP BY 1 ORDER BY 1",
    )?;
    stmt.query_map([since, until], |r| {
        Ok(tollgate_protocol::ReviewOutcome {
            arm: r.get(0)?,
            chunks: r.get::<_, i64>(1)?.max(0) as u64,
            findings: r.get::<_, i64>(2)?.max(0) as u64,
            dismissed: r.get::<_, i64>(3)?.max(0) as u64,
        })
    })?
    .collect()
}

/// The `q` quantile of sorted values (nearest rank); 0 for none.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        request_id: r.get(0)?,
        ts_ms: r.get(1)?,
        identity: r.get(2)?,
        project: r.get(3)?,
        task: r.get(4)?,
        entry: r.get(5)?,
        provider: r.get(6)?,
        model: r.get(7)?,
        input_tokens: r.get::<_, i64>(8)? as u64,
        output_tokens: r.get::<_, i64>(9)? as u64,
        cached_tokens: r.get::<_, i64>(10)? as u64,
        cost_micros: r.get(11)?,
        latency_ms: r.get(12)?,
        added_ms: r.get(13)?,
        cache_hit: r.get(14)?,
        redactions: r.get(15)?,
        outcome: Outcome::parse(&r.get::<_, String>(16)?),
        note: r.get(17)?,
        cache_write_tokens: r.get::<_, i64>(18)? as u64,
        caller: r.get::<_, Option<String>>(19)?.unwrap_or_default(),
        experiment: r.get(20)?,
        arm: r.get(21)?,
        redacted: r.get(22)?,
    })
}

/// Rows with `after < id < before`, oldest first, at most `limit`, with their ids (the team
/// server's usage cursor).
pub fn rows_between(c: &Connection, after: i64, before: i64, limit: usize) -> rusqlite::Result<Vec<(i64, Row)>> {
    let mut stmt =
        c.prepare_cached(&format!("SELECT {COLUMNS}, id FROM ledger WHERE id > ?1 AND id < ?2 ORDER BY id LIMIT ?3"))?;
    stmt.query_map(params![after, before, limit as i64], |r| Ok((r.get(23)?, row_from(r)?)))?.collect()
}

/// The most recent calls, newest first.
pub fn recent(c: &Connection, limit: u32) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = c.prepare(&format!("SELECT {COLUMNS} FROM ledger ORDER BY ts_ms DESC, id DESC LIMIT ?1"))?;
    stmt.query_map([limit], row_from)?.collect()
}

/// One call in full: its row, and its audit entry if there is one (opened with `sealer`). `id`
/// may be a prefix.
pub fn call(c: &Connection, sealer: &Sealer, id: &str) -> rusqlite::Result<Option<Call>> {
    let escaped = id.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    let pattern = format!("{escaped}%");
    let row = c
        .query_row(
            &format!("SELECT {COLUMNS} FROM ledger WHERE request_id LIKE ?1 ESCAPE '\\' ORDER BY ts_ms DESC LIMIT 1"),
            [&pattern],
            row_from,
        )
        .optional()?;
    let Some(row) = row else { return Ok(None) };
    let audit: Option<(Vec<u8>, Vec<u8>)> = c
        .query_row("SELECT request, response FROM audit WHERE request_id = ?1", [&row.request_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let id = row.request_id.as_bytes();
    let (request, response, unreadable) = match audit {
        Some((q, a)) => {
            let q: Option<serde_json::Value> = sealer.open_json(Column::AuditRequest, id, &q);
            let a: Option<serde_json::Value> = sealer.open_json(Column::AuditResponse, id, &a);
            let unreadable = q.is_none() || a.is_none();
            (q, a, unreadable)
        }
        None => (None, None, false),
    };
    Ok(Some(Call { row, request, response, unreadable }))
}

/// Keeps the audit log's redacted request and answer for a call, sealed (on the database thread).
pub fn audit(
    store: &Store,
    sealer: &std::sync::Arc<Sealer>,
    request_id: String,
    request: serde_json::Value,
    response: serde_json::Value,
) {
    let sealer = std::sync::Arc::clone(sealer);
    store.write(move |c| {
        let id = request_id.as_bytes();
        let request = sealer.seal(Column::AuditRequest, id, request.to_string().as_bytes());
        let response = sealer.seal(Column::AuditResponse, id, response.to_string().as_bytes());
        let r = c.execute(
            "INSERT OR REPLACE INTO audit (request_id, ts_ms, request, response) VALUES (?1, ?2, ?3, ?4)",
            params![request_id, utc::now_ms(), request, response],
        );
        if let Err(e) = r {
            tracing::error!(error = %e, "audit write failed");
        }
    });
}

pub fn prune_audit(c: &Connection, older_than_ms: i64) -> rusqlite::Result<usize> {
    c.execute("DELETE FROM audit WHERE ts_ms < ?1", [older_than_ms])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_found_by_its_id_or_a_prefix_and_wildcards_are_literal() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(crate::store::SCHEMA).unwrap();
        let row = Row {
            request_id: "req_24fb7e".into(),
            ts_ms: 1,
            identity: "me".into(),
            task: "api".into(),
            entry: "openai".into(),
            outcome: Outcome::Ok,
            ..Default::default()
        };
        insert(&c, &row).unwrap();
        let s = Sealer::random();
        assert_eq!(call(&c, &s, "req_24fb7e").unwrap().unwrap().row.request_id, "req_24fb7e");
        assert_eq!(call(&c, &s, "req_24").unwrap().unwrap().row.request_id, "req_24fb7e");
        assert!(call(&c, &s, "req%").unwrap().is_none(), "% is not a wildcard");
        assert!(call(&c, &s, "req_x").unwrap().is_none());
    }

    /// A pending row retried after a failed commit can land after the row that settled its call:
    /// it must not turn the call back into an estimate.
    #[test]
    fn a_pending_row_never_replaces_a_settled_one() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(crate::store::SCHEMA).unwrap();
        let row =
            |outcome, tokens| Row { request_id: "r1".into(), outcome, input_tokens: tokens, ..Default::default() };
        insert(&c, &row(Outcome::Pending, 10)).unwrap();
        insert(&c, &row(Outcome::Ok, 7)).unwrap();
        insert(&c, &row(Outcome::Pending, 10)).unwrap();
        let (outcome, tokens): (String, i64) =
            c.query_row("SELECT outcome, input_tokens FROM ledger", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((outcome.as_str(), tokens), ("ok", 7));
        // A row settled again (the journal ingested twice at start) still takes the new figures.
        insert(&c, &row(Outcome::Cut, 3)).unwrap();
        let outcome: String = c.query_row("SELECT outcome FROM ledger", [], |r| r.get(0)).unwrap();
        assert_eq!(outcome, "cut");
    }

    #[test]
    fn outcomes_keep_their_words_in_the_database_and_an_unknown_word_reads_as_other() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(crate::store::SCHEMA).unwrap();
        for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
            let row = Row { request_id: format!("r{i}"), outcome, ..Default::default() };
            insert(&c, &row).unwrap();
            let word: String = c
                .query_row("SELECT outcome FROM ledger WHERE request_id = ?1", [&row.request_id], |r| r.get(0))
                .unwrap();
            assert_eq!(word, outcome.as_str());
            assert_eq!(serde_json::to_value(outcome).unwrap(), word.as_str(), "the JSON word is the database's");
            assert_eq!(
                recent(&c, 1000).unwrap().iter().find(|r| r.request_id == row.request_id).unwrap().outcome,
                outcome
            );
            let json: Outcome = serde_json::from_value(serde_json::to_value(outcome).unwrap()).unwrap();
            assert_eq!(json, outcome);
        }
        c.execute("UPDATE ledger SET outcome = 'exploded' WHERE request_id = 'r0'", []).unwrap();
        let back = recent(&c, 1000).unwrap().into_iter().find(|r| r.request_id == "r0").unwrap().outcome;
        assert_eq!(back, Outcome::Other);
        let json: Outcome = serde_json::from_value(serde_json::json!("exploded")).unwrap();
        assert_eq!(json, Outcome::Other, "a reply from another version reads too");
    }
}
