//! The dashboard: pages the daemon serves to the user's browser on its loopback listener.
//!
//! Reached only through a one-time login link (`tollgate dashboard` asks for one with the API
//! token: `POST /v1/dashboard/link`). Opening it sets an HttpOnly, SameSite=Strict session cookie
//! for `/dashboard` and forgets the link. The dashboard's routes have a guard of their own
//! ([`guard`]): the TCP listener only, a loopback Host, no request from another origin (an
//! `Origin` must be the dashboard's own, `Sec-Fetch-Site` same-origin or a typed/opened address),
//! a session cookie on everything but the login. Every other route keeps the API's guard, which
//! refuses anything a browser page sends. The dashboard only reads: nothing it serves changes
//! state, so a page elsewhere can neither read nor change anything.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::{Deserialize, Serialize};

use super::{ApiError, Format, Listener};
use crate::ledger::GroupBy;
use crate::ledger::views::{self, CacheSummary, Grid, TargetLatency};
use crate::route::CircuitState;
use crate::utc::{self, Period};

/// How long a login link may wait to be opened, unless the CLI asks for another span.
pub const LINK_TTL: Duration = Duration::from_secs(60);
/// The longest a link may be asked to last.
const LINK_TTL_MAX: Duration = Duration::from_secs(600);
/// How long a session lasts after its login.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Links or sessions held at once; the oldest goes first beyond this.
const MAX_HELD: usize = 64;
/// Recent calls shown.
const RECENT_CALLS: u32 = 100;

/// Login links not yet opened, and sessions, each with its expiry. In memory only: a restart
/// logs every browser out.
pub struct Sessions {
    /// The listener's origin (`http://127.0.0.1:PORT`), as links name it.
    origin: String,
    /// The session cookie's name: one per port, so two users' daemons on one machine keep apart.
    cookie: String,
    links: Mutex<HashMap<String, Instant>>,
    sessions: Mutex<HashMap<String, Instant>>,
}

/// Keeps `key` until `until`, dropping what expired and, beyond [`MAX_HELD`], the soonest to expire.
fn hold(map: &Mutex<HashMap<String, Instant>>, key: String, until: Instant) {
    let mut m = map.lock().unwrap_or_else(PoisonError::into_inner);
    let now = Instant::now();
    m.retain(|_, t| *t > now);
    while m.len() >= MAX_HELD {
        let Some(first) = m.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) else { break };
        m.remove(&first);
    }
    m.insert(key, until);
}

impl Sessions {
    /// For the TCP listener bound at `addr`.
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self {
            origin: format!("http://{addr}"),
            cookie: format!("tollgate_dashboard_{}", addr.port()),
            links: Mutex::default(),
            sessions: Mutex::default(),
        }
    }

    /// A new login link's code, good once within `ttl`.
    pub fn link(&self, ttl: Duration) -> String {
        let code = crate::model::random_hex(32);
        hold(&self.links, code.clone(), Instant::now() + ttl);
        code
    }

    /// Takes a login code: a new session's id if the code was valid, unused and unexpired.
    fn login(&self, code: &str) -> Option<String> {
        let until = self.links.lock().unwrap_or_else(PoisonError::into_inner).remove(code)?;
        if until <= Instant::now() {
            return None;
        }
        let id = crate::model::random_hex(32);
        hold(&self.sessions, id.clone(), Instant::now() + SESSION_TTL);
        Some(id)
    }

    fn valid(&self, id: &str) -> bool {
        let s = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        s.get(id).is_some_and(|t| *t > Instant::now())
    }
}

#[derive(Debug, Deserialize)]
pub struct LinkQuery {
    /// Seconds the link may wait to be opened (default 60, at most 600).
    valid_for_s: Option<u64>,
}

/// `POST /v1/dashboard/link` (the API token's): a one-time login link.
pub async fn link(State(state): State<super::State>, Query(q): Query<LinkQuery>) -> Response {
    let ttl = q.valid_for_s.map_or(LINK_TTL, Duration::from_secs).min(LINK_TTL_MAX);
    let code = state.dashboard.link(ttl);
    let url = format!("{}/dashboard/login?code={code}", state.dashboard.origin);
    let expires_at = utc::iso(utc::now_ms() + ttl.as_millis() as i64);
    axum::Json(tollgate_protocol::DashboardLink { url, expires_at }).into_response()
}

pub fn router() -> axum::Router<super::State> {
    axum::Router::new()
        .route("/dashboard/login", get(login))
        .route("/dashboard", get(|| async { redirect("/dashboard/") }))
        .route("/dashboard/", get(|h: HeaderMap| async move { asset(&h, &INDEX, "text/html; charset=utf-8") }))
        .route("/dashboard/app.js", get(|h: HeaderMap| async move { asset(&h, &SCRIPT, "text/javascript") }))
        .route("/dashboard/app.css", get(|h: HeaderMap| async move { asset(&h, &STYLE, "text/css") }))
        .route("/dashboard/api/data", get(data))
        .route("/dashboard/api/csv/{table}", get(csv))
        .route("/dashboard/api/call/{id}", get(super::native::log_entry))
}

fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>tollgate: {title}</title>\
         <body><h1>{title}</h1><p>{text}</p>"
    );
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

/// The dashboard's own guard (see the module's comment), and the headers every answer carries
/// (refusals too).
pub async fn guard(State(state): State<super::State>, request: Request, next: Next) -> Response {
    let mut response = admit(&state, request, next).await;
    let h = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The request's answer if the guard lets it through, else the refusal.
async fn admit(state: &super::State, request: Request, next: Next) -> Response {
    let listener = request.extensions().get::<Listener>().copied().unwrap_or(Listener::Tcp);
    let deny = |status: StatusCode, message: &str| ApiError::new(status, Format::Openai, message).into_response();
    if listener != Listener::Tcp {
        return deny(StatusCode::NOT_FOUND, "the dashboard is served on the TCP listener: run `tollgate dashboard`");
    }
    let headers = request.headers();
    if request.method() == Method::OPTIONS || !super::auth::host_is_loopback(headers) {
        return deny(StatusCode::FORBIDDEN, "the dashboard answers its own page on this machine only");
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if let Some(origin) = headers.get(header::ORIGIN)
        && !origin.to_str().is_ok_and(|o| o.eq_ignore_ascii_case(&format!("http://{host}")))
    {
        return deny(StatusCode::FORBIDDEN, "requests from another origin are refused");
    }
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if site.is_some_and(|s| s != "same-origin" && s != "none") {
        return deny(StatusCode::FORBIDDEN, "requests from another site are refused");
    }
    let signed_in = cookie(headers, &state.dashboard.cookie).is_some_and(|id| state.dashboard.valid(id));
    if request.uri().path() != "/dashboard/login" && !signed_in {
        return page(
            StatusCode::UNAUTHORIZED,
            "Sign in from the terminal",
            "This page opens through a one-time link: run <code>tollgate dashboard</code>.",
        );
    }
    next.run(request).await
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    code: Option<String>,
}

/// `GET /dashboard/login?code=...`: trades a one-time code for a session cookie.
async fn login(State(state): State<super::State>, Query(q): Query<LoginQuery>) -> Response {
    let Some(id) = q.code.as_deref().and_then(|c| state.dashboard.login(c)) else {
        return page(
            StatusCode::FORBIDDEN,
            "This login link was used or has expired",
            "A link opens the dashboard once, within a minute: run <code>tollgate dashboard</code> for a new one.",
        );
    };
    let cookie = format!(
        "{}={id}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={}",
        state.dashboard.cookie,
        SESSION_TTL.as_secs()
    );
    let mut r = redirect("/dashboard/");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// A static asset, compiled in, gzipped once.
struct Asset {
    plain: &'static [u8],
    gzip: LazyLock<Vec<u8>>,
}

macro_rules! asset {
    ($file:literal) => {
        Asset {
            plain: include_bytes!(concat!("dashboard/", $file)),
            gzip: LazyLock::new(|| gzip(include_bytes!(concat!("dashboard/", $file)))),
        }
    };
}

static INDEX: Asset = asset!("index.html");
static SCRIPT: Asset = asset!("app.js");
static STYLE: Asset = asset!("app.css");

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).expect("writing to memory");
    e.finish().expect("writing to memory")
}

fn accepts_gzip(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| e.split(';').next().is_some_and(|e| e.trim().eq_ignore_ascii_case("gzip")))
}

/// A body, gzipped when the browser takes it.
fn compressed(h: &HeaderMap, content_type: &'static str, plain: &[u8], gzipped: Option<&[u8]>) -> Response {
    let mut r = if accepts_gzip(h) {
        let body = gzipped.map_or_else(|| gzip(plain), <[u8]>::to_vec);
        ([(header::CONTENT_ENCODING, "gzip")], body).into_response()
    } else {
        plain.to_vec().into_response()
    };
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    r
}

fn asset(h: &HeaderMap, a: &'static Asset, content_type: &'static str) -> Response {
    compressed(h, content_type, a.plain, Some(&a.gzip))
}

#[derive(Debug, Deserialize)]
pub struct DataQuery {
    /// day, week or month (the calendar period, as budgets count it); default week.
    period: Option<Period>,
    /// model (default), provider, project, task, caller or arm.
    by: Option<GroupBy>,
}

/// Everything the dashboard shows for one period.
#[derive(Debug, Serialize)]
struct Dashboard {
    period: Period,
    by: GroupBy,
    since: i64,
    until: i64,
    now: i64,
    usage: crate::ledger::UsageReport,
    spend: Grid<i64>,
    tokens: Grid<u64>,
    budgets: Vec<crate::ledger::budgets::BudgetReport>,
    cache: CacheSummary,
    redactions: Grid<u64>,
    targets: Vec<TargetRow>,
    arms: crate::ledger::UsageReport,
    policy: tollgate_protocol::PolicyStatus,
    calls: Vec<crate::ledger::Row>,
}

/// A target's latency over the period and its circuit now.
#[derive(Debug, Serialize)]
struct TargetRow {
    #[serde(flatten)]
    latency: TargetLatency,
    circuit: String,
    last_error: Option<String>,
}

async fn collect(state: &super::State, q: &DataQuery) -> Result<Dashboard, String> {
    let (period, by) = (q.period.unwrap_or(Period::Week), q.by.unwrap_or(GroupBy::Model));
    let now = utc::now_ms();
    let (since, until) = (period.start(now), period.next(now));
    let bucket = if period == Period::Day { 3_600_000 } else { 86_400_000 };
    let rt = state.gateway.runtime();
    let priced = std::sync::Arc::clone(&rt);
    let read = state
        .gateway
        .store
        .run(move |c| -> rusqlite::Result<_> {
            let usage = crate::ledger::usage(c, since, until, by)?;
            let (spend, tokens) = views::spend_series(c, since, until, bucket, by)?;
            let redactions = views::redaction_series(c, since, until, bucket)?;
            let latency = views::target_latency(c, since, until)?;
            let cache = views::cache_summary(c, &priced.prices, since, until)?;
            let arms = crate::ledger::usage(c, since, until, GroupBy::Arm)?;
            let calls = crate::ledger::recent(c, RECENT_CALLS)?;
            Ok((usage, spend, tokens, redactions, latency, cache, arms, calls))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("database: {e}"))?;
    let (usage, spend, tokens, redactions, latency, cache, arms, calls) = read;
    let health = rt.router.health_report();
    let targets = latency
        .into_iter()
        .map(|latency| {
            let h = health.iter().find(|h| h.target == latency.target);
            TargetRow {
                circuit: h.map_or(CircuitState::Closed, |h| h.state).as_str().to_string(),
                last_error: h.and_then(|h| h.last_error.clone()),
                latency,
            }
        })
        .collect();
    Ok(Dashboard {
        period,
        by,
        since,
        until,
        now,
        usage,
        spend,
        tokens,
        budgets: rt.budgets.report(now),
        cache,
        redactions,
        targets,
        arms: crate::ledger::UsageReport { lines: arms.lines.into_iter().filter(|l| l.key != "-").collect(), ..arms },
        policy: state.reloader.status(),
        calls,
    })
}

/// `GET /dashboard/api/data?period=&by=`: everything a page draws.
async fn data(State(state): State<super::State>, headers: HeaderMap, Query(q): Query<DataQuery>) -> Response {
    match collect(&state, &q).await {
        Ok(d) => match serde_json::to_vec(&d) {
            Ok(body) => compressed(&headers, "application/json", &body, None),
            Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Format::Openai, e.to_string()).into_response(),
        },
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Format::Openai, e).into_response(),
    }
}

/// One CSV field: quoted when it must be, and never read as a formula by a spreadsheet.
fn field(v: &str) -> String {
    let formula =
        v.starts_with(['=', '+', '@', '\t', '\r']) || (v.len() > 1 && v.starts_with('-') && v.parse::<f64>().is_err());
    let v = if formula { format!("'{v}") } else { v.to_string() };
    if v.contains([',', '"', '\n', '\r']) { format!("\"{}\"", v.replace('"', "\"\"")) } else { v }
}

fn csv_of(head: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut out = head.join(",");
    out.push_str("\r\n");
    for r in rows {
        out.push_str(&r.iter().map(|v| field(v)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out
}

fn usage_csv(report: &crate::ledger::UsageReport, first: &str) -> String {
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_default();
    csv_of(
        &[
            first,
            "requests",
            "input_tokens",
            "output_tokens",
            "cached_tokens",
            "cost_usd",
            "unknown_cost_requests",
            "cache_hits",
            "errors",
            "latency_ms_p50",
            "latency_ms_p95",
            "reviewed_chunks",
            "findings",
            "dismissed",
        ],
        report.lines.iter().map(|l| {
            vec![
                l.key.clone(),
                l.requests.to_string(),
                l.input_tokens.to_string(),
                l.output_tokens.to_string(),
                l.cached_tokens.to_string(),
                l.cost_usd.clone(),
                l.unknown_cost_requests.to_string(),
                l.cache_hits.to_string(),
                l.errors.to_string(),
                opt(l.latency_ms_p50),
                opt(l.latency_ms_p95),
                l.review.as_ref().map(|r| r.chunks.to_string()).unwrap_or_default(),
                l.review.as_ref().map(|r| r.findings.to_string()).unwrap_or_default(),
                l.review.as_ref().map(|r| r.dismissed.to_string()).unwrap_or_default(),
            ]
        }),
    )
}

/// `GET /dashboard/api/csv/{table}?period=&by=`: a table of the page as CSV (usage, budgets,
/// targets, redactions, arms, calls).
async fn csv(
    State(state): State<super::State>,
    Path(table): Path<String>,
    headers: HeaderMap,
    Query(q): Query<DataQuery>,
) -> Response {
    let d = match collect(&state, &q).await {
        Ok(d) => d,
        Err(e) => return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Format::Openai, e).into_response(),
    };
    let by = crate::protocol::word(d.by);
    let text = match table.as_str() {
        "usage" => usage_csv(&d.usage, &by),
        "arms" => usage_csv(&d.arms, "arm"),
        "budgets" => csv_of(
            &[
                "name",
                "scope",
                "key",
                "period",
                "spent_usd",
                "limit_usd",
                "spent_tokens",
                "limit_tokens",
                "resets_at",
                "action",
            ],
            d.budgets.iter().map(|b| {
                vec![
                    b.name.clone(),
                    crate::protocol::word(b.scope),
                    b.key.clone(),
                    crate::protocol::word(b.period),
                    b.spent_usd.clone(),
                    b.limit_usd.clone().unwrap_or_default(),
                    b.spent_tokens.to_string(),
                    b.limit_tokens.map(|t| t.to_string()).unwrap_or_default(),
                    b.resets_at.clone(),
                    b.action.as_str().to_string(),
                ]
            }),
        ),
        "targets" => csv_of(
            &["target", "requests", "errors", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "circuit"],
            d.targets.iter().map(|t| {
                vec![
                    t.latency.target.clone(),
                    t.latency.requests.to_string(),
                    t.latency.errors.to_string(),
                    format!("{:.1}", t.latency.latency_ms_p50),
                    format!("{:.1}", t.latency.latency_ms_p95),
                    format!("{:.1}", t.latency.latency_ms_p99),
                    t.circuit.clone(),
                ]
            }),
        ),
        "redactions" => csv_of(
            &["bucket_start", "kind", "count"],
            d.redactions.keys.iter().enumerate().flat_map(|(k, kind)| {
                let r = &d.redactions;
                r.buckets
                    .iter()
                    .zip(&r.values[k])
                    .filter(|(_, n)| **n > 0)
                    .map(|(b, n)| vec![utc::iso(*b), kind.clone(), n.to_string()])
                    .collect::<Vec<_>>()
            }),
        ),
        "calls" => csv_of(
            &[
                "time",
                "request_id",
                "task",
                "caller",
                "target",
                "input_tokens",
                "output_tokens",
                "cost_usd",
                "latency_ms",
                "cache_hit",
                "outcome",
                "experiment",
                "arm",
                "redacted",
            ],
            d.calls.iter().map(|c| {
                vec![
                    utc::iso(c.ts_ms),
                    c.request_id.clone(),
                    c.task.clone(),
                    c.caller.clone(),
                    format!("{}/{}", c.provider.as_deref().unwrap_or("-"), c.model.as_deref().unwrap_or("-")),
                    c.input_tokens.to_string(),
                    c.output_tokens.to_string(),
                    c.cost_micros.map(crate::ledger::prices::format_usd).unwrap_or_default(),
                    format!("{:.1}", c.latency_ms),
                    c.cache_hit.to_string(),
                    c.outcome.as_str().to_string(),
                    c.experiment.clone().unwrap_or_default(),
                    c.arm.clone().unwrap_or_default(),
                    c.redacted.clone().unwrap_or_default(),
                ]
            }),
        ),
        other => {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                Format::Openai,
                format!("no table {other:?}: usage, arms, budgets, targets, redactions or calls"),
            )
            .into_response();
        }
    };
    let mut r = compressed(&headers, "text/csv; charset=utf-8", text.as_bytes(), None);
    let name = format!("attachment; filename=\"tollgate-{table}-{}.csv\"", utc::iso(d.since).get(..10).unwrap_or(""));
    if let Ok(v) = HeaderValue::from_str(&name) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_opens_once_within_its_time() {
        let s = Sessions::new("127.0.0.1:8788".parse().unwrap());
        let code = s.link(Duration::from_secs(60));
        let id = s.login(&code).expect("a fresh link opens");
        assert!(s.valid(&id));
        assert!(s.login(&code).is_none(), "a link opens once");
        let old = s.link(Duration::ZERO);
        assert!(s.login(&old).is_none(), "an expired link does not open");
        assert!(s.login("guess").is_none() && !s.valid("guess"));
    }

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("-1.5"), "-1.5");
        assert_eq!(field("-cmd"), "'-cmd");
        assert_eq!(field("-"), "-", "the ledger's word for none");
        assert_eq!(field("plain"), "plain");
    }
}
