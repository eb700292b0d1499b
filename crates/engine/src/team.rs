//! The daemon's side of a team server: leases on shared budgets and usage rows sent in batches.
//!
//! A budget with `scope = "team"` or `"group"` is shared when a team server is set: the daemon
//! spends it only within a lease the server granted (an absolute allowance for the period, held in
//! memory by [`Leases`] and checked by the budgets on the request path with no network hop). A
//! background task ([`run`]) asks for leases requests need, renews them when they run low or near
//! their end while requests keep coming, and sends the
//! ledger's settled rows after a cursor kept in the database, so a restart or an unreachable
//! server loses nothing and a retried batch is counted once (rows are keyed by request id).
//! Offline, the daemon spends what its lease holds until the lease's end, then applies the
//! budget's action.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use rusqlite::OptionalExtension;

use crate::keychain::Credentials;
use crate::policy::source::GitlabAuth;
use crate::store::Store;
use crate::utc;
use tollgate_protocol::team::{Lease, LeaseRequest, TeamError, TeamGroupBy, TeamUsage, UsageAck, UsageBatch, UsageRow};

/// `[team]` in the config or the policy (the policy's wins).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TeamConfig {
    /// The team server (`https://...`; `http://` only on a loopback address). Unset: budgets are
    /// counted on this machine alone.
    pub server: Option<String>,
    /// GitLab groups (globs) whose members may read the whole team's usage.
    pub admins: Vec<String>,
    /// The share of what a shared budget has left that one lease may take.
    pub lease_share_percent: u8,
    /// The most one grant adds, as a share of the budget's limit: what one daemon can hold unspent,
    /// and so the team's worst case if that daemon vanishes until its lease ends.
    pub lease_max_percent: u8,
    /// How long a grant holds.
    pub lease_ttl_secs: u64,
}

impl Default for TeamConfig {
    fn default() -> Self {
        Self { server: None, admins: Vec::new(), lease_share_percent: 10, lease_max_percent: 5, lease_ttl_secs: 300 }
    }
}

impl TeamConfig {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.server {
            check_server_url(url)?;
        }
        if !(1..=100).contains(&self.lease_share_percent) || !(1..=100).contains(&self.lease_max_percent) {
            return Err("lease_share_percent and lease_max_percent are percentages (1 to 100)".into());
        }
        if !(10..=86_400).contains(&self.lease_ttl_secs) {
            return Err("lease_ttl_secs is between 10 and 86400".into());
        }
        for g in &self.admins {
            globset::Glob::new(g).map_err(|e| format!("admins: bad glob {g:?}: {e}"))?;
        }
        Ok(())
    }
}

/// `https://...`, or `http://` to a loopback address (the token would cross the network in clear).
pub fn check_server_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("team server {url:?}: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http"
            if parsed.host_str().is_some_and(|h| {
                h == "localhost"
                    || h.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }) =>
        {
            Ok(())
        }
        "http" => Err(format!("team server {url:?}: plain http would send the GitLab token in clear; use https")),
        other => Err(format!("team server {url:?}: {other}:// is not http(s)")),
    }
}

/// A lease as the daemon holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub period_start: i64,
    pub granted_micros: Option<i64>,
    pub granted_tokens: Option<u64>,
    /// Local time (ms) after which none of it is spent: the server's time to live, counted from
    /// when the request was sent, less a margin.
    pub until_ms: i64,
    /// What the last grant added, to tell when the lease runs low.
    pub slice_micros: i64,
    pub slice_tokens: u64,
}

/// The leases this daemon holds, by budget name; shared by every runtime a reload builds.
///
/// Leases follow demand: a budget is leased only once a request needs it, renewed while requests
/// keep coming, and left to lapse when the daemon goes idle, so idle machines hold none of the
/// team's money. The first request after idling waits for one lease round trip (at most
/// [`FIRST_LEASE_WAIT`]); every request while a lease is live is decided in memory.
#[derive(Debug, Default)]
pub struct Leases {
    held: Mutex<HashMap<String, Held>>,
    /// When a request last needed each budget (ms).
    demand: Mutex<HashMap<String, i64>>,
    /// Wakes the task: a lease is missing or runs low.
    pub(crate) wake: Notify,
    /// Counts the task's rounds, so a request can wait for the next one.
    rounds: watch::Sender<u64>,
    /// The last failure reaching the server, for messages and `tollgate status`.
    last_error: Mutex<Option<String>>,
}

/// The longest a request waits for a lease it lacks.
pub const FIRST_LEASE_WAIT: Duration = Duration::from_secs(3);

impl Leases {
    pub fn get(&self, budget: &str) -> Option<Held> {
        self.held.lock().expect("leases").get(budget).copied()
    }

    pub fn set(&self, budget: &str, held: Held) {
        self.held.lock().expect("leases").insert(budget.to_string(), held);
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("leases").clone()
    }

    /// A request needs `budget` now.
    pub fn touch(&self, budget: &str, now: i64) {
        self.demand.lock().expect("leases").insert(budget.to_string(), now);
    }

    /// Whether a request needed `budget` since `since`.
    pub fn demanded_since(&self, budget: &str, since: i64) -> bool {
        self.demand.lock().expect("leases").get(budget).is_some_and(|t| *t >= since)
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Wakes the task and waits (at most `wait`) for the lease `covered` says is missing: until a
    /// round after now has brought it or failed. While the server is known to be unreachable it
    /// does not wait: the daemon spends what it holds and applies the budget's action.
    pub async fn next_round(&self, wait: Duration, covered: impl Fn() -> bool) {
        if self.last_error().is_some() {
            self.wake();
            return;
        }
        let mut rx = self.rounds.subscribe();
        let seen = *rx.borrow_and_update();
        self.wake();
        // A round already running may have missed the demand; the one after it does not.
        let done = |r: &u64| *r >= seen + 2 || (*r > seen && (covered() || self.last_error().is_some()));
        let _ = tokio::time::timeout(wait, rx.wait_for(done)).await;
    }

    fn round_done(&self) {
        self.rounds.send_modify(|r| *r += 1);
    }
}

/// A client of the team server.
pub struct TeamClient {
    http: reqwest::Client,
    base: String,
    auth: GitlabAuth,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot reach the team server at {0}: {1}")]
    Unreachable(String, String),
    #[error("the team server refused: {1} ({0})")]
    Refused(u16, String),
}

impl TeamClient {
    pub fn new(http: reqwest::Client, base: &str, auth: GitlabAuth) -> Self {
        Self { http, base: base.trim_end_matches('/').to_string(), auth }
    }

    pub async fn from_credentials(http: reqwest::Client, base: &str, credentials: &Credentials) -> Self {
        Self::new(http, base, GitlabAuth::find(credentials).await)
    }

    async fn call<T: serde::de::DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, CallError> {
        let req = match &self.auth {
            GitlabAuth::Token(t) => req.bearer_auth(t.expose()),
            GitlabAuth::Job(t) => req.header("job-token", t.expose()),
            GitlabAuth::None => req,
        };
        let unreachable = |e: String| CallError::Unreachable(self.base.clone(), e);
        let resp =
            req.timeout(Duration::from_secs(10)).send().await.map_err(|e| unreachable(e.without_url().to_string()))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| unreachable(e.without_url().to_string()))?;
        if bytes.len() > 8 << 20 {
            return Err(unreachable(format!("an answer of {} bytes", bytes.len())));
        }
        if !status.is_success() {
            let message = serde_json::from_slice::<TeamError>(&bytes)
                .map(|e| e.error.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned());
            return Err(CallError::Refused(status.as_u16(), message));
        }
        serde_json::from_slice(&bytes).map_err(|e| unreachable(format!("an answer that is not the expected JSON: {e}")))
    }

    pub async fn lease(&self, req: &LeaseRequest) -> Result<Lease, CallError> {
        self.call(self.http.post(format!("{}/v1/team/lease", self.base)).json(req)).await
    }

    pub async fn usage(&self, batch: &UsageBatch) -> Result<UsageAck, CallError> {
        self.call(self.http.post(format!("{}/v1/team/usage", self.base)).json(batch)).await
    }

    pub async fn team_usage(&self, by: TeamGroupBy, since_ms: i64) -> Result<TeamUsage, CallError> {
        let by = serde_json::to_value(by).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        self.call(self.http.get(format!("{}/v1/team/usage?by={by}&since_ms={since_ms}", self.base))).await
    }
}

/// This daemon's id for the team server: random, made once, kept in the database.
pub async fn daemon_id(store: &Store) -> String {
    store
        .run(|c| {
            let existing: Option<String> =
                c.query_row("SELECT value FROM team_state WHERE key = 'daemon_id'", [], |r| r.get(0)).ok();
            if let Some(id) = existing {
                return id;
            }
            let mut bytes = [0u8; 16];
            let _ = getrandom::fill(&mut bytes);
            let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let _ = c.execute("INSERT OR IGNORE INTO team_state (key, value) VALUES ('daemon_id', ?1)", [&id]);
            c.query_row("SELECT value FROM team_state WHERE key = 'daemon_id'", [], |r| r.get(0)).unwrap_or(id)
        })
        .await
        .unwrap_or_default()
}

/// Most rows in one usage batch.
const BATCH: usize = 500;

/// Settled ledger rows after the cursor (none past a row still pending, which may settle later),
/// with their ids.
async fn rows_to_send(store: &Store) -> Vec<(i64, tollgate_protocol::Row)> {
    // On a reader connection: the requests' pending rows never wait behind this.
    store
        .read(|c| {
            let cursor: i64 = c
                .query_row("SELECT CAST(value AS INTEGER) FROM team_state WHERE key = 'usage_cursor'", [], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            let pending: Option<i64> =
                c.query_row("SELECT MIN(id) FROM ledger WHERE id > ?1 AND outcome = 'pending'", [cursor], |r| {
                    r.get(0)
                })?;
            crate::ledger::rows_between(c, cursor, pending.unwrap_or(i64::MAX), BATCH)
        })
        .await
        .unwrap_or_else(|e| {
            tracing::warn!("team usage: {e}");
            Vec::new()
        })
}

async fn advance_cursor(store: &Store, to: i64) {
    let _ = store
        .write_durable(move |c| {
            c.execute(
                "INSERT INTO team_state (key, value) VALUES ('usage_cursor', ?1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [to.to_string()],
            )
            .map(|_| ())
        })
        .await;
}

/// How often usage rows are sent (in batches of up to [`BATCH`], as many as are waiting).
const USAGE_EVERY: Duration = Duration::from_secs(5);

/// How often the task looks at its leases when nothing wakes it.
const TICK: Duration = Duration::from_secs(2);

/// Keeps the leases of `gateway`'s shared budgets and sends its usage while a team server is set
/// (in the config or the policy, either of which a reload may change), until the process ends.
pub async fn run(gateway: Arc<crate::pipeline::Gateway>) {
    let store = gateway.store.clone();
    let daemon = daemon_id(&store).await;
    let mut client: Option<(String, TeamClient)> = None;
    let mut usage_sent = std::time::Instant::now() - USAGE_EVERY;
    loop {
        let rt = gateway.runtime();
        let (Some(url), Some(leases)) = (rt.config.team.server.clone(), rt.budgets.leases()) else {
            tokio::time::sleep(TICK).await;
            continue;
        };
        if client.as_ref().is_none_or(|(u, _)| *u != url) {
            let c = TeamClient::from_credentials(gateway.http.clone(), &url, &gateway.credentials).await;
            client = Some((url, c));
        }
        let Some((_, client)) = &client else { continue };
        let mut failure = renew(&rt, &leases, client, &daemon).await.err();
        if failure.is_none() && usage_sent.elapsed() >= USAGE_EVERY {
            failure = send_usage(&store, client, &daemon, &rt).await.err();
            if failure.is_none() {
                usage_sent = std::time::Instant::now();
            }
        }
        if let Some(f) = &failure {
            tracing::warn!("team server: {f}");
        }
        *leases.last_error.lock().expect("leases") = failure;
        leases.round_done();
        tokio::select! {
            () = leases.wake.notified() => {}
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Asks for each lease that is missing, of a past period, low, or in the last third of its time.
async fn renew(rt: &crate::runtime::Runtime, leases: &Leases, client: &TeamClient, daemon: &str) -> Result<(), String> {
    const MARGIN_MS: i64 = 2_000;
    let mut failure = None;
    let ttl_ms = rt.config.team.lease_ttl_secs as i64 * 1000;
    for want in rt.budgets.lease_wants(utc::now_ms(), ttl_ms) {
        let sent = utc::now_ms();
        let due = leases
            .get(&want.budget)
            .is_none_or(|h| h.period_start != want.period_start || want.low || h.until_ms - sent < ttl_ms / 3);
        if !due {
            continue;
        }
        let req = LeaseRequest {
            daemon: daemon.to_string(),
            budget: want.budget.clone(),
            period_start: want.period_start,
            used_micros: want.used_micros,
            used_tokens: want.used_tokens,
        };
        match client.lease(&req).await {
            Ok(lease) if lease.period_start == want.period_start => {
                let ttl = i64::try_from(lease.ttl_ms).unwrap_or(i64::MAX).saturating_sub(MARGIN_MS).max(0);
                leases.set(
                    &want.budget,
                    Held {
                        period_start: lease.period_start,
                        granted_micros: lease.granted_micros,
                        granted_tokens: lease.granted_tokens,
                        until_ms: sent.saturating_add(ttl),
                        slice_micros: lease.granted_micros.map_or(0, |g| (g - want.used_micros).max(0)),
                        slice_tokens: lease.granted_tokens.map_or(0, |g| g.saturating_sub(want.used_tokens)),
                    },
                );
            }
            Ok(lease) => {
                failure = Some(format!(
                    "the team server counts budget {:?} in a period starting at {}; this machine's clock says {}",
                    want.budget,
                    utc::iso(lease.period_start),
                    utc::iso(want.period_start)
                ));
            }
            Err(e) => failure = Some(e.to_string()),
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Sends the settled rows after the cursor, batch by batch, moving the cursor past each batch the
/// server acknowledged.
async fn send_usage(
    store: &Store,
    client: &TeamClient,
    daemon: &str,
    rt: &crate::runtime::Runtime,
) -> Result<(), String> {
    loop {
        let rows = rows_to_send(store).await;
        let Some(last) = rows.last().map(|(id, _)| *id) else { return Ok(()) };
        let full = rows.len() == BATCH;
        let batch =
            UsageBatch { daemon: daemon.to_string(), rows: rows.into_iter().map(|(_, r)| usage_row(&r, rt)).collect() };
        client.usage(&batch).await.map_err(|e| e.to_string())?;
        advance_cursor(store, last).await;
        if !full {
            return Ok(());
        }
    }
}

/// A ledger row as the team sees it: figures and labels, and the shared budgets it counted
/// against.
fn usage_row(r: &tollgate_protocol::Row, rt: &crate::runtime::Runtime) -> UsageRow {
    let counted = !r.cache_hit && r.input_tokens + r.output_tokens > 0;
    UsageRow {
        request_id: r.request_id.clone(),
        ts_ms: r.ts_ms,
        user: r.identity.clone(),
        project: r.project.clone(),
        task: r.task.clone(),
        model: match (&r.provider, &r.model) {
            (Some(p), Some(m)) => format!("{p}/{m}"),
            (_, Some(m)) => m.clone(),
            _ => "-".into(),
        },
        caller: Some(r.caller.clone()).filter(|c| !c.is_empty()),
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        cost_micros: r.cost_micros,
        outcome: r.outcome.as_str().to_string(),
        budgets: if counted { rt.budgets.shared_names(r.ts_ms) } else { Vec::new() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_is_https_or_loopback_http() {
        for ok in [
            "https://team.example.com",
            "https://10.0.0.5:8789",
            "http://127.0.0.1:8789",
            "http://[::1]:1",
            "http://localhost:8789",
        ] {
            assert!(check_server_url(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("http://team.example.com", "in clear"),
            ("http://10.0.0.5:8789", "in clear"),
            ("ftp://team.example.com", "not http"),
            ("team.example.com", "relative URL"),
        ] {
            let e = check_server_url(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let mut c = TeamConfig { server: Some("https://t".into()), ..Default::default() };
        assert!(c.validate().is_ok());
        c.lease_max_percent = 0;
        assert!(c.validate().unwrap_err().contains("percentages"));
        c.lease_max_percent = 5;
        c.lease_ttl_secs = 1;
        assert!(c.validate().is_err());
    }
}
