//! `tollgate usage`, `budget` and `log`: asked of the daemon over its socket, or read from the
//! database directly when no daemon runs (the same queries either way).

use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use crate::config::Loaded;
use crate::ipc::{ClientError, DaemonClient};
use crate::ledger::{GroupBy, UsageLine, UsageReport};
use crate::paths::Paths;
use crate::store::Store;
use crate::{ledger, utc};
use tollgate_protocol::CallsReply;

/// Asks the daemon; `None` when no daemon runs.
fn from_daemon<T, Fut>(paths: &Paths, ask: impl FnOnce(DaemonClient) -> Fut) -> anyhow::Result<Option<T>>
where
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    match crate::ipc::block_on(ask(crate::ipc::daemon(paths))) {
        Ok(answer) => Ok(Some(answer)),
        Err(ClientError::NotRunning(_)) => Ok(None),
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
    let by: GroupBy = serde_json::from_value(Value::String(by.into()))
        .map_err(|_| anyhow::anyhow!("cannot group by {by:?}: use model, project, task, provider, caller or arm"))?;
    if let Some(report) = from_daemon(paths, |d| async move { d.usage(since, by).await })? {
        return Ok(report);
    }
    let from = utc::since(Some(since), utc::now_ms()).map_err(anyhow::Error::msg)?;
    query(paths, move |c| ledger::usage(c, from, i64::MAX, by))
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
    println!("since {}, by {}", report.since, crate::protocol::word(report.group_by));
    // Arms are compared on how they did, too.
    let arms = report.group_by == GroupBy::Arm;
    let head = if arms {
        format!(
            " {:>7} {:>11} {:>10} {:>10} {:>15} {:>10}",
            "errors", "cache hits", "p50 ms", "p95 ms", "findings/chunk", "dismissed"
        )
    } else {
        String::new()
    };
    println!(
        "{:<40} {:>8} {:>10} {:>10} {:>8} {:>14}{head}",
        "", "requests", "input", "output", "cached", "cost (USD)"
    );
    for l in report.lines.iter().chain(std::iter::once(&report.total)) {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let tail = if arms {
            // Reviews: findings per chunk reviewed, and findings dismissed.
            let (per_chunk, dismissed) = match &l.review {
                Some(r) if r.chunks > 0 => {
                    (format!("{:.2}", r.findings as f64 / r.chunks as f64), r.dismissed.to_string())
                }
                Some(r) => ("-".into(), r.dismissed.to_string()),
                None => ("-".into(), "-".into()),
            };
            format!(
                " {:>7} {:>11} {:>10} {:>10} {per_chunk:>15} {dismissed:>10}",
                l.errors,
                l.cache_hits,
                ms(l.latency_ms_p50),
                ms(l.latency_ms_p95)
            )
        } else {
            String::new()
        };
        println!(
            "{:<40} {:>8} {:>10} {:>10} {:>8} {:>14}{tail}{}",
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

/// `tollgate usage --team`: the team server's figures, through the daemon (which holds the GitLab
/// token and knows the server from the policy).
pub fn team_usage(
    paths: &Paths,
    since: Option<&str>,
    by: crate::protocol::team::TeamGroupBy,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let since = since.unwrap_or("month").to_string();
    let Some(report) = from_daemon(paths, |d| async move { d.team_usage(&since, by).await })? else {
        anyhow::bail!("the team's usage is asked of the team server through the daemon: start it (`tollgate daemon`)");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("the team since {}, by {}", utc::iso(report.since_ms), crate::protocol::word(report.by));
    println!("{:<40} {:>8} {:>10} {:>10} {:>14}", "", "requests", "input", "output", "cost (USD)");
    for l in &report.lines {
        println!(
            "{:<40} {:>8} {:>10} {:>10} {:>14}",
            l.key,
            l.requests,
            l.input_tokens,
            l.output_tokens,
            crate::ledger::prices::format_usd(l.cost_micros)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn budget(paths: &Paths, loaded: &Loaded, json: bool) -> anyhow::Result<ExitCode> {
    use crate::ledger::budgets::BudgetsReply;
    let report: BudgetsReply = match from_daemon(paths, |d| async move { d.budgets().await })? {
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
            crate::protocol::word(b.period),
            b.action.as_str(),
            limits.join(", "),
            b.resets_at
        );
        if let Some(lease) = &b.lease {
            let granted = [
                lease.granted_usd.as_ref().map(|u| format!("${u}")),
                lease.granted_tokens.map(|t| format!("{t} tokens")),
            ];
            let granted: Vec<String> = granted.into_iter().flatten().collect();
            let left = [
                lease.team_left_usd.as_ref().map(|u| format!("${u}")),
                lease.team_left_tokens.map(|t| format!("{t} tokens")),
            ];
            let left: Vec<String> = left.into_iter().flatten().collect();
            match &lease.until {
                Some(until) => println!(
                    "  shared through the team server: this machine may spend up to {} until {until}; the team has {} left to lease",
                    granted.join(", "),
                    if left.is_empty() { "?".to_string() } else { left.join(", ") }
                ),
                None => println!(
                    "  shared through the team server: no lease held now (one is asked for when a request needs it)"
                ),
            }
            if let Some(e) = &lease.error {
                println!("  team server: {e}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn log(paths: &Paths, loaded: &Loaded, id: Option<&str>, limit: u32, json: bool) -> anyhow::Result<ExitCode> {
    let Some(id) = id else {
        let calls = match from_daemon(paths, |d| async move { d.calls(limit).await })? {
            Some(reply) => reply,
            None => CallsReply { calls: query(paths, move |c| ledger::recent(c, limit))? },
        };
        if json {
            println!("{}", serde_json::to_string_pretty(&calls)?);
        } else {
            print_calls(&calls.calls);
        }
        return Ok(ExitCode::SUCCESS);
    };
    let call = match from_daemon(paths, |d| async move { d.call(id).await })? {
        Some(call) => call,
        None => {
            let id = id.to_string();
            // The key that opens the audit text, if there is one (none is made here).
            let keychain = crate::keychain::Keychain::open(loaded.config.keychain.backend).ok();
            let sealer = match crate::seal::load(keychain.as_ref(), &paths.data_dir)?.0 {
                Some(key) => key.sealer,
                None => crate::seal::Sealer::random(),
            };
            query(paths, move |c| ledger::call(c, &sealer, &id))?.context("no such call in the ledger")?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&call)?);
        return Ok(ExitCode::SUCCESS);
    }
    let value = serde_json::to_value(&call.row)?;
    for (k, v) in value.as_object().into_iter().flatten() {
        println!("{k:<14} {v}");
    }
    match (&call.request, &call.response) {
        (None, _) if call.unreadable => println!(
            "\n(the prompt and answer were kept sealed with a storage key no longer held: they cannot be read)"
        ),
        (None, _) => println!("\n(no prompt or answer kept: the audit log is off)"),
        (q, a) => println!(
            "\nrequest:\n{}\n\nresponse:\n{}",
            serde_json::to_string_pretty(q)?,
            serde_json::to_string_pretty(a)?
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_calls(calls: &[ledger::Row]) {
    for c in calls {
        let cost = match c.cost_micros {
            Some(m) => format!("${}", ledger::prices::format_usd(m)),
            None => "unknown".into(),
        };
        println!(
            "{}  {}  {:<9} {:<28} {:>6}+{:<6} {:>12} {:>8.1}ms {}{}",
            c.request_id,
            utc::iso(c.ts_ms),
            c.task,
            format!("{}/{}", c.provider.as_deref().unwrap_or("-"), c.model.as_deref().unwrap_or("-")),
            c.input_tokens,
            c.output_tokens,
            cost,
            c.latency_ms,
            c.outcome.as_str(),
            if c.cache_hit { " (cache)" } else { "" }
        );
    }
}

/// `tollgate dashboard`: a one-time login link from the daemon, opened in the browser or printed.
pub fn dashboard(paths: &Paths, print_url: bool, valid_for: u64) -> anyhow::Result<ExitCode> {
    let Some(link) = from_daemon(paths, |d| async move { d.dashboard_link(valid_for).await })? else {
        anyhow::bail!("the dashboard is served by the daemon: start it (`tollgate daemon`), then run this again");
    };
    if !print_url {
        match open_browser(&link.url) {
            Ok(()) => {
                eprintln!("opened the dashboard in the browser (the link works once, until {})", link.expires_at);
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => eprintln!("could not open a browser ({e}); open this link (once, until {}):", link.expires_at),
        }
    }
    println!("{}", link.url);
    Ok(ExitCode::SUCCESS)
}

/// Opens `url` with the desktop's handler: no shell in between, the URL one argument.
fn open_browser(url: &str) -> std::io::Result<()> {
    let mut cmd = if cfg!(target_os = "macos") {
        std::process::Command::new("open")
    } else if cfg!(windows) {
        let mut c = std::process::Command::new("rundll32");
        c.arg("url.dll,FileProtocolHandler");
        c
    } else {
        std::process::Command::new("xdg-open")
    };
    let status = cmd.arg(url).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).status()?;
    if status.success() { Ok(()) } else { Err(std::io::Error::other(format!("the opener exited with {status}"))) }
}
