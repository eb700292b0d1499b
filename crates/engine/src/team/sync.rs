//! The background task that keeps a daemon's leases and sends its usage, and the team server's
//! client.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::OptionalExtension;

use super::lease::{Held, Leases};
use crate::keychain::Credentials;
use crate::policy::source::GitlabAuth;
use crate::store::Store;
use crate::utc;
use tollgate_protocol::team::{Lease, LeaseRequest, TeamError, TeamGroupBy, TeamUsage, UsageAck, UsageBatch, UsageRow};

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
        let by = tollgate_protocol::word(by);
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
    let mut changes = gateway.runtime_changes();
    loop {
        let rt = gateway.runtime();
        let (Some(url), Some(leases)) = (rt.config.team.server.clone(), rt.budgets.leases()) else {
            // Nothing to do until a reload names a team server (an idle daemon is not woken).
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        };
        if client.as_ref().is_none_or(|(u, _)| *u != url) {
            let c = TeamClient::from_credentials(gateway.http(), &url, &gateway.credentials).await;
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
        leases.set_last_error(failure);
        leases.round_done();
        leases.wait(TICK).await;
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
                        team_left_micros: lease.team_left_micros,
                        team_left_tokens: lease.team_left_tokens,
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
/// server acknowledged. Rows recorded under another identity (before the user joined with a GitLab
/// token, say) stay local: the server would refuse them, and they are not this user's to report.
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
        let mine: Vec<UsageRow> =
            rows.iter().filter(|(_, r)| r.identity == rt.identity.username).map(|(_, r)| usage_row(r, rt)).collect();
        if !mine.is_empty() {
            let mut batch = UsageBatch { daemon: daemon.to_string(), rows: mine };
            match client.usage(&batch).await {
                // A server older than experiments: the same rows without their arms.
                Err(CallError::Refused(400, m)) if m.contains("unknown field `arm`") => {
                    tracing::info!("the team server does not take experiment arms yet: usage is sent without them");
                    batch.rows.iter_mut().for_each(|r| r.arm = None);
                    client.usage(&batch).await.map_err(|e| e.to_string())?;
                }
                r => {
                    r.map_err(|e| e.to_string())?;
                }
            }
        }
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
        arm: r.arm_key(),
    }
}
