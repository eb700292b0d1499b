//! `tollgate team-server`: the one service a team runs so that team and group budgets hold across
//! every member's machine, and so that team admins can see what the team spent.
//!
//! - [`grant`]: the lease arithmetic (pure, unit tested): everything granted is committed, so the
//!   team's spend passes a limit only by what requests cost beyond their reserved estimates.
//! - [`db`]: PostgreSQL (migrations, leases serialized per budget and period, usage rows keyed by
//!   daemon and request id so a retried batch is counted once).
//! - this module: the HTTP API (`/v1/team/lease`, `/v1/team/usage`, `/healthz`), identity from the
//!   caller's GitLab token (checked against GitLab once, then cached), TLS with rustls (plain
//!   HTTP only on a loopback address), and the policy the budgets come from.
//!
//! The server holds no provider credential and hands out none; a daemon's only credential is the
//! GitLab token it already has, and what it may do follows from who GitLab says it is.

pub mod db;
pub mod grant;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::Json;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};

use tollgate_engine::identity::Identity;
use tollgate_engine::ledger::budgets::{BudgetConfig, BudgetScope};
use tollgate_engine::model::Secret;
use tollgate_engine::policy::source::{Gitlab, GitlabAuth};
use tollgate_engine::policy::{Policy, PolicyFile};
use tollgate_engine::team::TeamConfig;
use tollgate_engine::utc;
use tollgate_protocol::team::{
    Lease, LeaseRequest, TeamError, TeamErrorBody, TeamGroupBy, TeamUsage, UsageAck, UsageBatch,
};

pub use db::Db;

/// `tollgate team-server` options.
#[derive(Debug, Clone)]
pub struct Options {
    /// `postgres://user@host:port/database`
    pub database: String,
    pub listen: SocketAddr,
    /// A checkout of the team's policy repository (re-read every minute).
    pub policy: PathBuf,
    /// The GitLab instance whose tokens identify the daemons (`https://gitlab.example.com`).
    pub gitlab: String,
    /// PEM certificate chain and private key; required unless `listen` is a loopback address.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// How long an identity GitLab confirmed is trusted before it is asked again.
const IDENTITY_TTL: Duration = Duration::from_secs(600);
/// Most identities kept (one per token in use).
const IDENTITY_CACHE: usize = 10_000;
/// How long a lapsed lease stays set aside: longer than any request a daemon lets run, so a
/// request reserved just before a lease's end finds its money when it settles after.
const GRACE_MS: i64 = 15 * 60 * 1000;
/// Most rows in one usage batch.
const MAX_ROWS: usize = 5_000;

struct Shared {
    db: Db,
    policy: ArcSwap<Policy>,
    policy_dir: PathBuf,
    gitlab: String,
    http: reqwest::Client,
    identities: Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
}

type AppState = Arc<Shared>;

/// An error as the API reports it: a status and a message that says what to do.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(TeamError { error: TeamErrorBody { message: self.1 } })).into_response()
    }
}

impl From<db::DbError> for ApiError {
    fn from(e: db::DbError) -> Self {
        match e {
            db::DbError::Refused(m) => ApiError(StatusCode::FORBIDDEN, m),
            other => {
                tracing::error!("{other}");
                ApiError(StatusCode::SERVICE_UNAVAILABLE, "the team server's database is unavailable; retry".into())
            }
        }
    }
}

fn forbidden(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::FORBIDDEN, m.into())
}

/// Reads the policy checkout at `dir`.
fn load_policy(dir: &std::path::Path) -> anyhow::Result<Policy> {
    let snap = tollgate_engine::policy::read_dir(dir, &dir.display().to_string())
        .with_context(|| format!("cannot read the policy at {}", dir.display()))?;
    Policy::parse(&snap).map_err(|problems| {
        anyhow::anyhow!(
            "the policy at {} is not valid:\n{}",
            dir.display(),
            problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
        )
    })
}

fn team_of(policy: &PolicyFile) -> TeamConfig {
    policy.team.clone().unwrap_or_default()
}

/// The client that asks GitLab who a token belongs to: no redirects (a token never follows one).
fn gitlab_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("tollgate-team-server/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client builds with a TLS provider installed")
}

/// Runs the server until `shutdown` resolves.
pub async fn serve(
    opts: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if opts.tls.is_none() && !opts.listen.ip().is_loopback() {
        anyhow::bail!(
            "--listen {} is not a loopback address: daemons send GitLab tokens, so the server needs \
             --tls-cert and --tls-key there (plain HTTP is for 127.0.0.1 and ::1 only)",
            opts.listen
        );
    }
    let policy = load_policy(&opts.policy)?;
    let db = Db::connect(&opts.database, 16).await.context("cannot open the team database")?;
    let shared = Arc::new(Shared {
        db,
        policy: ArcSwap::from_pointee(policy),
        policy_dir: opts.policy.clone(),
        gitlab: opts.gitlab.trim_end_matches('/').to_string(),
        http: gitlab_client(),
        identities: Mutex::default(),
    });
    let reloader = Arc::clone(&shared);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let dir = reloader.policy_dir.clone();
            match tokio::task::spawn_blocking(move || load_policy(&dir)).await {
                Ok(Ok(p)) => reloader.policy.store(Arc::new(p)),
                Ok(Err(e)) => tracing::error!("{e:#}; the policy in force stays"),
                Err(e) => tracing::error!("policy reload: {e}"),
            }
        }
    });
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/team/lease", post(lease))
        .route("/v1/team/usage", post(usage).get(team_usage))
        .layer(DefaultBodyLimit::max(8 << 20))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    tracing::info!(addr = %listener.local_addr()?, tls = opts.tls.is_some(), "team server listening");
    match &opts.tls {
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await?,
        Some((cert, key)) => serve_tls(listener, app, cert, key, shutdown).await?,
    }
    Ok(())
}

async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    cert: &std::path::Path,
    key: &std::path::Path,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("--tls-cert {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("--tls-cert {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("--tls-key {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not go together")?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else { return };
            let service = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { tower::ServiceExt::oneshot(app, req).await }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}

/// Who is asking, from the GitLab token the daemon sends (`Authorization: Bearer`, or `Job-Token`
/// from a CI job), as GitLab says: asked once per token, then cached for [`IDENTITY_TTL`].
async fn identify(state: &Shared, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let unauthorized = |m: &str| ApiError(StatusCode::UNAUTHORIZED, m.into());
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|t| !t.is_empty());
    let bearer = header("authorization").and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    let (token, job) = match (bearer, header("job-token")) {
        (Some(t), _) => (t, false),
        (None, Some(t)) => (t, true),
        (None, None) => {
            return Err(unauthorized(
                "send the GitLab token as `Authorization: Bearer` (or a CI job's as `Job-Token`): save one with \
                 `tollgate login gitlab`",
            ));
        }
    };
    let key: [u8; 32] = Sha256::digest([token.as_bytes(), &[u8::from(job)]].concat()).into();
    if let Some((id, at)) = state.identities.lock().expect("identities").get(&key)
        && at.elapsed() < IDENTITY_TTL
    {
        return Ok(id.clone());
    }
    let secret = Secret::new(token.to_string());
    let auth = if job { GitlabAuth::Job(secret) } else { GitlabAuth::Token(secret) };
    let gitlab = Gitlab { http: &state.http, api: &state.gitlab, auth: &auth };
    let identity = if job { gitlab.job_identity().await } else { gitlab.identity().await }
        .map_err(|e| unauthorized(&format!("GitLab did not confirm the token: {e}")))?;
    let mut cache = state.identities.lock().expect("identities");
    if cache.len() >= IDENTITY_CACHE {
        cache.retain(|_, (_, at)| at.elapsed() < IDENTITY_TTL);
        if cache.len() >= IDENTITY_CACHE {
            cache.clear();
        }
    }
    cache.insert(key, (identity.clone(), Instant::now()));
    Ok(identity)
}

/// The shared budget named `name` that `who` falls under, or why not.
fn shared_budget(policy: &PolicyFile, name: &str, who: &Identity) -> Result<BudgetConfig, ApiError> {
    let def = policy
        .budgets
        .iter()
        .find(|b| b.name == name && matches!(b.scope, BudgetScope::Team | BudgetScope::Group))
        .ok_or_else(|| {
            ApiError(StatusCode::NOT_FOUND, format!("the policy has no team or group budget named {name:?}"))
        })?;
    if def.scope == BudgetScope::Group {
        let glob = globset::Glob::new(&def.matches).map_err(|e| forbidden(e.to_string()))?.compile_matcher();
        if !who.groups.iter().any(|g| glob.is_match(g)) {
            return Err(forbidden(format!(
                "{} is in no group matching {:?}: budget {name:?} is not theirs to spend",
                who.username, def.matches
            )));
        }
    }
    Ok(def.clone())
}

fn daemon_id_ok(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(ApiError(StatusCode::BAD_REQUEST, "daemon: 1 to 64 letters, digits or dashes".into()));
    }
    Ok(())
}

/// A JSON body, or a 400 that says which body and what is wrong with it.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("{what}: {e}")))
}

async fn lease(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Lease>, ApiError> {
    let who = identify(&state, &headers).await?;
    let req: LeaseRequest = parse(&body, "the lease request")?;
    daemon_id_ok(&req.daemon)?;
    if req.used_micros < 0 {
        return Err(ApiError(StatusCode::BAD_REQUEST, "used_micros is negative".into()));
    }
    let policy = state.policy.load_full();
    let def = shared_budget(&policy.file, &req.budget, &who)?;
    let now = utc::now_ms();
    state.db.claim_daemon(&req.daemon, &who.username, now).await?;
    let period_start = def.period.start(now);
    // Spend the daemon counted in another period (its clock is off) is not this period's.
    let used = if req.period_start == period_start {
        (req.used_micros, i64::try_from(req.used_tokens).unwrap_or(i64::MAX))
    } else {
        (0, 0)
    };
    let team = team_of(&policy.file);
    let terms = |limit: Option<i64>| {
        let limit = limit.unwrap_or(0).max(0);
        grant::Terms {
            share_percent: team.lease_share_percent,
            max_slice: (i128::from(limit) * i128::from(team.lease_max_percent) / 100).max(1) as i64,
            min_slice: (limit / 1000).max(1),
        }
    };
    let limits = db::Limits {
        micros: def.limit_usd.map(|l| l.0),
        tokens: def.limit_tokens.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
    };
    let ttl_ms = team.lease_ttl_secs as i64 * 1000;
    let granted = state
        .db
        .lease(
            &def.name,
            period_start,
            &req.daemon,
            &who.username,
            limits,
            used,
            (terms(limits.micros), terms(limits.tokens)),
            ttl_ms,
            GRACE_MS,
            now,
        )
        .await?;
    Ok(Json(Lease {
        budget: def.name,
        period_start,
        granted_micros: granted.micros.map(|g| g.granted),
        granted_tokens: granted.tokens.map(|g| g.granted.max(0) as u64),
        ttl_ms: ttl_ms as u64,
        team_left_micros: granted.micros.map(|g| g.left),
        team_left_tokens: granted.tokens.map(|g| g.left.max(0) as u64),
    }))
}

async fn usage(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<UsageAck>, ApiError> {
    let who = identify(&state, &headers).await?;
    let batch: UsageBatch = parse(&body, "the usage batch")?;
    daemon_id_ok(&batch.daemon)?;
    if batch.rows.len() > MAX_ROWS {
        return Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, format!("at most {MAX_ROWS} rows in a batch")));
    }
    if let Some(r) = batch.rows.iter().find(|r| r.user != who.username) {
        return Err(forbidden(format!(
            "row {} is for user {:?}, but the token is {:?}'s: a daemon reports its own user's usage only",
            r.request_id, r.user, who.username
        )));
    }
    if let Some(r) = batch.rows.iter().find(|r| r.request_id.is_empty() || r.request_id.len() > 128) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("row with a request id of {} bytes", r.request_id.len()),
        ));
    }
    state.db.claim_daemon(&batch.daemon, &who.username, utc::now_ms()).await?;
    let policy = state.policy.load_full();
    let mut checked = std::collections::HashSet::new();
    for r in &batch.rows {
        for name in &r.budgets {
            let def = policy.file.budgets.iter().find(|b| &b.name == name);
            let period = def.map(|d| d.period.start(r.ts_ms)).unwrap_or_default();
            if !checked.insert((name.clone(), period)) {
                continue;
            }
            if def.is_none() || !state.db.has_lease(&batch.daemon, name, period).await? {
                return Err(forbidden(format!(
                    "row {} counts against budget {name:?}, on which daemon {} holds no lease for that period",
                    r.request_id, batch.daemon
                )));
            }
        }
    }
    let (stored, duplicates) = state.db.store_usage(&batch.daemon, &who.groups, &batch.rows, utc::now_ms()).await?;
    Ok(Json(UsageAck { stored, duplicates }))
}

#[derive(serde::Deserialize)]
struct UsageQuery {
    by: Option<TeamGroupBy>,
    since_ms: Option<i64>,
}

async fn team_usage(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<UsageQuery>,
) -> Result<Json<TeamUsage>, ApiError> {
    let who = identify(&state, &headers).await?;
    let policy = state.policy.load_full();
    let admins = team_of(&policy.file).admins;
    let is_admin = admins.iter().filter_map(|g| globset::Glob::new(g).ok()).any(|g| {
        let m = g.compile_matcher();
        who.groups.iter().any(|group| m.is_match(group))
    });
    if !is_admin {
        return Err(forbidden(format!(
            "team usage is for the policy's team admins (team.admins: {admins:?}); {} is in none of those groups",
            who.username
        )));
    }
    let by = q.by.unwrap_or(TeamGroupBy::User);
    let since_ms = q.since_ms.unwrap_or_else(|| utc::Period::Month.start(utc::now_ms()));
    let lines = state.db.team_usage(by, since_ms).await?;
    Ok(Json(TeamUsage { by, since_ms, lines }))
}
