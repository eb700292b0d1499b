//! `tollgate usage`, `budget` and `log`: asked of the daemon over its socket, or read from the
//! database directly when no daemon runs (the same queries either way).

use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use crate::config::Loaded;
use crate::ledger::{UsageLine, UsageReport};
use crate::paths::Paths;
use crate::store::Store;
use crate::{ledger, utc};

/// GETs `path` from the daemon; `None` when no daemon runs.
fn from_daemon<T: serde::de::DeserializeOwned>(paths: &Paths, path: &str) -> anyhow::Result<Option<T>> {
    match crate::ipc::block_on(crate::ipc::request(&paths.socket, http::Method::GET, path, None)) {
        Ok(reply) => Ok(Some(reply.decode()?)),
        Err(crate::ipc::ClientError::NotRunning(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Runs a query against the database directly, when no daemon answered.
fn query<T: Send + 'static>(
    paths: &Paths,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    anyhow::ensure!(paths.database().exists(), "no usage recorded yet ({} does not exist)", paths.database().display());
    let store = Store::open(&paths.database()).context("cannot open the database")?;
    Ok(crate::ipc::block_on(store.run(f))??)
}

fn usage_report(paths: &Paths, since: &str, by: &str) -> anyhow::Result<UsageReport> {
    if let Some(report) = from_daemon(paths, &format!("/v1/usage?since={since}&by={by}"))? {
        return Ok(report);
    }
    let from = utc::since(Some(since), utc::now_ms()).map_err(anyhow::Error::msg)?;
    let by: ledger::GroupBy = serde_json::from_value(Value::String(by.into()))?;
    query(paths, move |c| ledger::usage(c, from, by))
}

pub fn usage(paths: &Paths, _loaded: &Loaded, since: Option<&str>, by: &str, json: bool) -> anyhow::Result<ExitCode> {
    if let Some(since) = since {
        let report = usage_report(paths, since, by)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_usage(&report);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let [today, week, month] = ["today", "week", "month"].map(|period| usage_report(paths, period, by));
    let all = [("today", today?), ("week", week?), ("month", month?)];
    if json {
        let mut out = serde_json::Map::new();
        for (period, report) in &all {
            out.insert(period.to_string(), serde_json::to_value(report)?);
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    for ((_, report), label) in all.iter().zip(["today", "this week", "this month"]) {
        let t = &report.total;
        println!(
            "{label:<11} {:>6} requests  {:>10} tokens  ${}{}",
            t.requests,
            t.input_tokens + t.output_tokens,
            t.cost_usd,
            unknown_note(t)
        );
    }
    println!();
    print_usage(&all[2].1);
    Ok(ExitCode::SUCCESS)
}

fn unknown_note(line: &UsageLine) -> String {
    match line.unknown_cost_requests {
        0 => String::new(),
        n => format!("  + {n} of unknown cost"),
    }
}

fn print_usage(report: &UsageReport) {
    let by = serde_json::to_value(report.group_by).ok();
    println!("since {}, by {}", report.since, by.as_ref().and_then(Value::as_str).unwrap_or("?"));
    println!("{:<40} {:>8} {:>10} {:>10} {:>8} {:>14}", "", "requests", "input", "output", "cached", "cost (USD)");
    for l in report.lines.iter().chain(std::iter::once(&report.total)) {
        println!(
            "{:<40} {:>8} {:>10} {:>10} {:>8} {:>14}{}",
            l.key,
            l.requests,
            l.input_tokens,
            l.output_tokens,
            l.cached_tokens,
            l.cost_usd,
            unknown_note(l)
        );
    }
}

pub fn budget(paths: &Paths, loaded: &Loaded, json: bool) -> anyhow::Result<ExitCode> {
    use crate::ledger::budgets::BudgetsReply;
    let report: BudgetsReply = match from_daemon(paths, "/v1/budget")? {
        Some(v) => v,
        None => {
            // What the daemon would enforce: the local config under the last synced policy.
            let budgets = crate::reload::Initial::load(loaded.clone(), paths)?.runtime.budgets;
            let now = utc::now_ms();
            if paths.database().exists() {
                let store = Store::open(&paths.database()).context("cannot open the database")?;
                budgets.load(crate::ipc::block_on(ledger::budget_spend(&store, &budgets, now)), now);
            }
            BudgetsReply { budgets: budgets.report(now) }
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    if report.budgets.is_empty() {
        println!("No budgets are configured ([[budgets]] in the config, or the team policy).");
    }
    // An enum's word as the JSON says it (`day`, `block`).
    let word = |v: Value| v.as_str().unwrap_or_default().to_string();
    for b in report.budgets {
        let key = Some(&b.key).filter(|k| !k.is_empty()).map(|k| format!(" [{k}]")).unwrap_or_default();
        let mut limits = Vec::new();
        if let Some(l) = &b.limit_usd {
            limits.push(format!("${} of ${l}", b.spent_usd));
        }
        if let Some(l) = b.limit_tokens {
            limits.push(format!("{} of {l} tokens", b.spent_tokens));
        }
        println!(
            "{}{key} ({}, {}): {}; resets {}",
            b.name,
            word(serde_json::to_value(b.period)?),
            word(serde_json::to_value(b.action)?),
            limits.join(", "),
            b.resets_at
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn log(paths: &Paths, loaded: &Loaded, id: Option<&str>, limit: u32, json: bool) -> anyhow::Result<ExitCode> {
    let value = match id {
        Some(id) => match from_daemon(paths, &format!("/v1/log/{id}"))? {
            Some(v) => v,
            None => {
                let id = id.to_string();
                // The key that opens the audit text, if there is one (none is made here).
                let keychain = crate::keychain::Keychain::open(loaded.config.keychain.backend).ok();
                let sealer = match crate::seal::load(keychain.as_ref(), &paths.data_dir)?.0 {
                    Some(key) => key.sealer,
                    None => crate::seal::Sealer::random(),
                };
                let call = query(paths, move |c| ledger::call(c, &sealer, &id))?;
                serde_json::to_value(call.context("no such call in the ledger")?)?
            }
        },
        None => match from_daemon(paths, &format!("/v1/log?limit={limit}"))? {
            Some(v) => v,
            None => {
                let rows = query(paths, move |c| ledger::recent(c, limit))?;
                serde_json::json!({"calls": rows})
            }
        },
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    if id.is_some() {
        for (k, v) in value.as_object().into_iter().flatten() {
            if k != "request" && k != "response" {
                println!("{k:<14} {v}");
            }
        }
        match (&value["request"], &value["response"]) {
            (Value::Null, _) if value["unreadable"] == true => println!(
                "\n(the prompt and answer were kept sealed with a storage key no longer held: they cannot be read)"
            ),
            (Value::Null, _) => println!("\n(no prompt or answer kept: the audit log is off)"),
            (q, a) => println!(
                "\nrequest:\n{}\n\nresponse:\n{}",
                serde_json::to_string_pretty(q)?,
                serde_json::to_string_pretty(a)?
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    for c in value["calls"].as_array().into_iter().flatten() {
        let cost = match c["cost_micros"].as_i64() {
            Some(m) => format!("${}", ledger::prices::format_usd(m)),
            None => "unknown".into(),
        };
        println!(
            "{}  {}  {:<9} {:<28} {:>6}+{:<6} {:>12} {:>8.1}ms {}{}",
            c["request_id"].as_str().unwrap_or(""),
            utc::iso(c["ts_ms"].as_i64().unwrap_or(0)),
            c["task"].as_str().unwrap_or(""),
            format!("{}/{}", c["provider"].as_str().unwrap_or("-"), c["model"].as_str().unwrap_or("-")),
            c["input_tokens"].to_string(),
            c["output_tokens"].to_string(),
            cost,
            c["latency_ms"].as_f64().unwrap_or(0.0),
            c["outcome"].as_str().unwrap_or(""),
            if c["cache_hit"] == true { " (cache)" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}
