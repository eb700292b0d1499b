//! The one request pipeline. Every entry point calls [`Gateway::handle`] with a request in the
//! internal model; this module owns the order of the steps:
//!
//! ```text
//! caller authenticated (api::auth) -> identity and project resolved (RequestContext)
//! -> rate limits (caller, project) -> route chosen (aliases, local-only, health)
//! -> cache lookup -> per target: rate limit (model), budget reservation, pending ledger row
//! -> provider call (retry, fallback) -> answer streamed back (the entry point renders it)
//! -> ledger settled, budgets settled, cache stored, audit kept
//! ```
//!
//! Policy and redaction slot in at their places in this module and nowhere else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::keychain::Credentials;
use crate::ledger::budgets::{Action, Exceeded, Facts, Reservation};
use crate::ledger::prices::Price;
use crate::ledger::{self, Outcome, Row};
use crate::metrics::Metrics;
use crate::model::UpstreamError;
use crate::model::{ChatRequest, ChatResponse, Collector, Event, EventStream, Usage};
use crate::providers::{self, Target};
use crate::ratelimit::{self, Limited};
use crate::route::{Assignment, RequestFacts, RouteError, Router, TargetRef};
use crate::runtime::Runtime;
use crate::store::Store;
use crate::{cache, tokens, utc};

/// Which door a request came in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryPoint {
    Openai,
    Responses,
    Anthropic,
    Native,
}

impl EntryPoint {
    pub fn name(self) -> &'static str {
        match self {
            EntryPoint::Openai => "openai",
            EntryPoint::Responses => "responses",
            EntryPoint::Anthropic => "anthropic",
            EntryPoint::Native => "native",
        }
    }
}

/// What the entry point knows about the caller, beyond the request itself.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub entry: EntryPoint,
    /// The caller asked that nothing leave the machine (`x-tollgate-local-only`).
    pub local_only: bool,
    /// The file the request is about, relative to its repository (`x-tollgate-path`).
    pub path: Option<String>,
    /// The project, as `group/project` (`x-tollgate-project`).
    pub project: Option<String>,
    /// completion, explain, review, chat, or api (`x-tollgate-task`).
    pub task: String,
    /// Who called: the named token presented ([`crate::callers`]).
    pub caller: String,
    /// A sensitivity label for routing rules (`x-tollgate-sensitivity`).
    pub sensitivity: Option<String>,
    /// Whom the request is for, for experiments' arms (`x-tollgate-user`); the daemon's user
    /// when the caller does not say.
    pub user: Option<String>,
    /// The arm of a prompt's experiment the request was built from ([`crate::tasks`]).
    pub prompt_arm: Option<Assignment>,
    /// `Cache-Control: no-cache`: do not answer from the cache.
    pub no_cache: bool,
    /// `Cache-Control: no-store`: do not keep this answer.
    pub no_store: bool,
    pub request_id: String,
    /// The id the caller will be given for the answer, when the door names it itself.
    pub answer_id: Option<String>,
    /// Keep the answer under `answer_id` (Responses API `store`), when no provider keeps it.
    pub keep: bool,
    /// When the request arrived, for the gateway's own added time, and as wall-clock time.
    pub received: Instant,
    pub ts_ms: i64,
    /// The configuration in force when the request arrived: every step of the request, in the door
    /// and in the pipeline, reads this one, so a reload never splits a request across two.
    pub runtime: Arc<Runtime>,
}

impl RequestContext {
    pub fn new(entry: EntryPoint, runtime: Arc<Runtime>) -> Self {
        Self {
            runtime,
            entry,
            local_only: false,
            path: None,
            project: None,
            task: "api".into(),
            caller: crate::callers::LOCAL.into(),
            sensitivity: None,
            user: None,
            prompt_arm: None,
            no_cache: false,
            no_store: false,
            answer_id: None,
            keep: false,
            request_id: crate::model::new_id("req_"),
            received: Instant::now(),
            ts_ms: utc::now_ms(),
        }
    }
}

/// A pipeline failure, classified so that each entry point can render it in its own format.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Route(#[from] RouteError),
    #[error("no target of {model:?} may serve this request: {reasons}")]
    NoTarget { model: String, reasons: String },
    /// The provider refused the request itself (a 4xx other than 429): no fallback, its message.
    #[error("{target} rejected the request: {message}")]
    Rejected { target: String, status: u16, message: String },
    #[error("every target of {model:?} failed: {reasons}")]
    AllFailed { model: String, reasons: String, last: Box<UpstreamError> },
    #[error("{0}")]
    Budget(Exceeded),
    #[error("{0}")]
    RateLimited(Limited),
    #[error("{0}")]
    Redaction(crate::redact::Blocked),
    /// The request has what no target of its route can take: fields of the caller's format that
    /// the targets' formats cannot express.
    #[error("no target of {model:?} can serve this request: {reason}")]
    Untranslatable { model: String, reason: String },
    /// The policy or the config refuses this request (a task not allowed).
    #[error("{0}")]
    NotAllowed(String),
    /// The model name holds what looks like a credential (pasted into the wrong setting): it is
    /// neither used nor echoed, logged or recorded.
    #[error(
        "the model name holds what looks like a {kind}; it was not used, logged or recorded: check the tool's model setting"
    )]
    SecretInModelName { kind: String },
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// Every slot (`limits.max_concurrent_requests`) stayed taken for this long.
    #[error("tollgate is busy: every request slot stayed taken for {} s (limits.max_concurrent_requests)", .0.as_secs())]
    Busy(Duration),
    /// The database cannot keep ledger rows (a full disk, damaged pages): no call is made that
    /// could not be recorded.
    #[error(
        "tollgate cannot record calls now, so it makes none: the database did not keep a write ({0}); free disk space, or see `tollgate doctor`"
    )]
    Unrecordable(String),
}

impl GatewayError {
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::AllFailed { last, .. } => last.retry_after(),
            GatewayError::RateLimited(l) => Some(l.retry_after),
            GatewayError::Budget(e) => Some(Duration::from_millis((e.resets_at - utc::now_ms()).max(0) as u64)),
            _ => None,
        }
    }

    /// The ledger's word for it.
    fn outcome(&self) -> Outcome {
        match self {
            GatewayError::Route(RouteError::NotAllowed { .. }) | GatewayError::NotAllowed(_) => Outcome::RefusedPolicy,
            GatewayError::Route(_) => Outcome::UnknownModel,
            GatewayError::NoTarget { .. } => Outcome::NoTarget,
            GatewayError::Rejected { .. } => Outcome::Rejected,
            GatewayError::AllFailed { .. } => Outcome::Failed,
            GatewayError::Budget(_) => Outcome::Blocked,
            GatewayError::RateLimited(_) => Outcome::RateLimited,
            GatewayError::Redaction(_) | GatewayError::SecretInModelName { .. } => Outcome::RefusedSecret,
            GatewayError::Untranslatable { .. } => Outcome::Untranslatable,
            GatewayError::ShuttingDown => Outcome::ShuttingDown,
            GatewayError::Unrecordable(_) => Outcome::Unrecordable,
            GatewayError::Busy(_) => Outcome::Busy,
        }
    }
}

/// A request let in: its slot, the time spent waiting for it, and its estimated tokens.
struct Admitted {
    permit: OwnedSemaphorePermit,
    waited: Duration,
    est_in: u64,
    est_out: u64,
}

/// The request as the targets may see it: masked (or not) as the targets it may reach decide, the
/// placeholders to restore, the ledger row every outcome starts from (counts per kind, never a
/// value), and its cache key. All follow the targets: a budget that sends the request elsewhere
/// decides them again ([`Masked::retarget`]).
struct Masked {
    req: ChatRequest,
    vault: Arc<crate::redact::Vault>,
    mode: crate::redact::Mode,
    row: Row,
    cache_key: Option<([u8; 32], String)>,
}

impl Masked {
    async fn new(
        rt: &Runtime,
        ctx: &RequestContext,
        req: ChatRequest,
        row: Row,
        targets: &[TargetRef],
        notes: &mut Vec<(&'static str, String)>,
    ) -> Result<Self, GatewayError> {
        let mode = Gateway::redaction_mode(rt, &req.model, targets);
        let (req, vault) = Gateway::redact(rt, req, mode).await?;
        let mut masked = Self { req, vault: Arc::default(), mode, row, cache_key: None };
        masked.took(vault, notes);
        masked.cache_key = Gateway::cache_key(rt, &masked.req, ctx, targets);
        Ok(masked)
    }

    /// The same request for other targets (`to` resolves to them): text a local route left
    /// unmasked is masked before a cloud target sees it, and the cache key is theirs.
    async fn retarget(
        mut self,
        rt: &Runtime,
        ctx: &RequestContext,
        to: &str,
        targets: &[TargetRef],
        notes: &mut Vec<(&'static str, String)>,
    ) -> Result<Self, GatewayError> {
        let mode = Gateway::redaction_mode(rt, to, targets);
        if mode != self.mode && self.mode == crate::redact::Mode::Off {
            let (req, vault) = Gateway::redact(rt, self.req, mode).await?;
            self.req = req;
            self.took(vault, notes);
            self.mode = mode;
        }
        self.cache_key = Gateway::cache_key(rt, &self.req, ctx, targets);
        Ok(self)
    }

    /// Takes the placeholders of a masking: the caller is told the counts, and so is the ledger.
    fn took(&mut self, vault: Arc<crate::redact::Vault>, notes: &mut Vec<(&'static str, String)>) {
        if !vault.is_empty() {
            notes.push(("x-tollgate-redactions", vault.summary()));
        }
        self.row.redactions = vault.total();
        self.row.redacted = (!vault.is_empty()).then(|| vault.summary());
        self.row.note = (!vault.is_empty()).then(|| format!("redacted: {}", vault.summary()));
        self.vault = vault;
    }
}

/// What the targets loop carries from the steps before it.
struct Attempt {
    masked: Masked,
    targets: Vec<TargetRef>,
    local_only: bool,
    admitted: Admitted,
    notes: Vec<(&'static str, String)>,
}

/// A target that can be asked, with its key and what the call is estimated to cost.
struct Candidate {
    name: String,
    key: Option<crate::keychain::Secret>,
    local: bool,
    price: Option<Price>,
    est_micros: Option<i64>,
}

/// Why a target was not asked.
enum Skip {
    Limited(Limited),
    Untranslatable(String),
    NoKey(UpstreamError),
    Other(String),
}

/// Why each target did not serve, and what that makes the request's error.
#[derive(Default)]
struct Failures {
    reasons: Reasons,
    last_error: Option<UpstreamError>,
    limited: Option<Limited>,
    untranslatable: Option<String>,
}

impl Failures {
    fn skip(&mut self, target: &TargetRef, skip: Skip) {
        match skip {
            Skip::Limited(l) => {
                self.reasons.push(format!("{target}: {l}"));
                self.limited = Some(l);
            }
            Skip::Untranslatable(why) => {
                self.reasons.push(format!("{target}: {why}"));
                self.untranslatable = Some(why);
            }
            Skip::NoKey(err) => self.failed(target, err),
            Skip::Other(why) => self.reasons.push(format!("{target}: {why}")),
        }
    }

    fn failed(&mut self, target: &TargetRef, err: UpstreamError) {
        self.reasons.push(format!("{target}: {err}"));
        self.last_error = Some(err);
    }

    /// The error when no target served: the last call's failure, else a rate limit, else what
    /// could not be translated, else no target at all.
    fn into_error(self, model: &str) -> GatewayError {
        let reasons = self.reasons.text();
        let model = model.to_string();
        match (self.last_error, self.limited, self.untranslatable) {
            (Some(last), _, _) => GatewayError::AllFailed { model, reasons, last: Box::new(last) },
            (None, Some(l), _) => GatewayError::RateLimited(l),
            (None, None, Some(reason)) => GatewayError::Untranslatable { model, reason },
            (None, None, None) => GatewayError::NoTarget { model, reasons },
        }
    }
}

/// How long a request waits for a slot before it is told the gateway is busy.
const SLOT_WAIT: Duration = Duration::from_secs(60);

/// Why each target did not serve, in order, a repeated reason counted once.
#[derive(Default)]
struct Reasons(Vec<(String, u32)>);

impl Reasons {
    fn push(&mut self, reason: String) {
        match self.0.last_mut() {
            Some((last, n)) if *last == reason => *n += 1,
            _ => self.0.push((reason, 1)),
        }
    }

    fn text(&self) -> String {
        if self.0.is_empty() {
            return "the route has no targets".into();
        }
        let parts: Vec<String> =
            self.0.iter().map(|(r, n)| if *n > 1 { format!("{r} ({n} tries)") } else { r.clone() }).collect();
        parts.join("; ")
    }
}

/// The answer to a request.
pub enum Answer {
    Complete(ChatResponse),
    /// Events after the first one have not been read yet; the first was, so that a failure before
    /// any byte reaches the caller could still fall back.
    Stream(EventStream),
}

impl Answer {
    /// The answer whole: as it is, or its stream read to the end and folded (a stream that fails
    /// part-way gives its error). Every answer can be had whole, whatever the caller asked for.
    pub async fn whole(self, model: &str) -> Result<ChatResponse, GatewayError> {
        match self {
            Answer::Complete(r) => Ok(r),
            Answer::Stream(mut events) => {
                let mut c = Collector::default();
                while let Some(event) = events.next().await {
                    c.push(event.map_err(|e| GatewayError::AllFailed {
                        model: model.to_string(),
                        reasons: format!("the stream failed part-way: {e}"),
                        last: Box::new(e),
                    })?);
                }
                Ok(c.finish(None, model.to_string()))
            }
        }
    }
}

pub struct Served {
    pub target: TargetRef,
    pub answer: Answer,
    /// Time spent waiting on providers (calls, and backoff between them) until the answer began.
    pub provider_time: Duration,
    pub cache_hit: bool,
    /// Values masked before the request left the gateway.
    pub redactions: u32,
    /// Extra response headers: budget warnings, a downgrade.
    pub notes: Vec<(&'static str, String)>,
    /// The experiments' arms the request was given (`experiment: arm`, as the ledger groups them).
    pub arm: Option<String>,
}

impl Served {
    /// The gateway's own time so far: everything since the request arrived that was not spent
    /// waiting on a provider.
    pub fn added(&self, ctx: &RequestContext) -> Duration {
        ctx.received.elapsed().saturating_sub(self.provider_time)
    }
}

/// A request's input tokens, counted by its provider or estimated by tollgate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCount {
    pub input_tokens: u64,
    pub estimated: bool,
}

pub struct Gateway {
    /// What the configuration and the policy decide; replaced whole on a reload.
    runtime: ArcSwap<Runtime>,
    pub credentials: Arc<Credentials>,
    pub store: Store,
    /// Where ledger rows go (the journal, then the store).
    ledger: ledger::Ledger,
    /// Seals what the store keeps of prompts and answers.
    pub sealer: Arc<crate::seal::Sealer>,
    pub metrics: Arc<Metrics>,
    /// OpenTelemetry export, when a collector is configured (read at start).
    telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    /// The cache's keys in memory: a miss costs no database round trip.
    pub cache_index: Arc<cache::CacheIndex>,
    http: reqwest::Client,
    slots: Arc<Semaphore>,
    /// Counts the runtimes put in force (see [`Gateway::runtime_changes`]).
    swaps: tokio::sync::watch::Sender<u64>,
    /// The arm each user was given in each experiment.
    experiments: crate::experiments::Experiments,
}

/// What must happen once an answer is complete: the ledger row settled, the budget reservation
/// settled, the answer cached and audited. Carried with the answer to its end.
struct Settle {
    config: Arc<Config>,
    store: Store,
    ledger: ledger::Ledger,
    sealer: Arc<crate::seal::Sealer>,
    metrics: Arc<Metrics>,
    telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    cache_index: Arc<cache::CacheIndex>,
    /// The redacted messages, for a span, when contents are exported.
    content: Option<String>,
    row: Row,
    reservation: Reservation,
    pending: Option<ledger::Pending>,
    price: Option<Price>,
    local: bool,
    cache_key: Option<([u8; 32], String)>,
    audit_request: Option<serde_json::Value>,
    /// Keep the answer for the Responses API: (id, scope, the masked turns).
    keep: Option<(String, String, Vec<crate::model::Message>)>,
    received: Instant,
    provider_time: Duration,
    /// Characters of text in the (masked) request: its input tokens are estimated from them when
    /// the provider reports none.
    input_chars: usize,
}

/// Hands a settled row to the OpenTelemetry exporter, when one runs (never waits).
fn observe(telemetry: Option<&Arc<crate::telemetry::Telemetry>>, config: &Config, row: &Row, content: Option<String>) {
    if let Some(t) = telemetry {
        let provider_kind = row.provider.as_deref().and_then(|p| config.providers.get(p)).map(|c| c.kind.as_str());
        t.observe(crate::telemetry::Observation { row: row.clone(), provider_kind, content });
    }
}

/// Starts loading the tokenizer when the runtime counts tokens (budgets or token limits).
fn warm_tokenizer(runtime: &Runtime) {
    if runtime.estimates {
        tokens::load_in_background();
    }
}

/// Tokens of text, estimated from its length where no provider said (about four characters each).
fn estimated_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

impl Settle {
    /// Whether the events must be kept for the cache or the audit log.
    fn keeps_events(&self) -> bool {
        self.cache_key.is_some() || self.audit_request.is_some() || self.keep.is_some()
    }

    /// Settles the call: `usage` as the provider reported it, `answer_chars` the characters of text
    /// and tool arguments the caller received.
    async fn finish(mut self, usage: Usage, answer_chars: usize, events: Option<Vec<Event>>, outcome: Outcome) {
        // The pending row must be durable before the caller's answer is complete (it is, unless
        // the journal could not take it).
        if let Some(p) = self.pending.as_mut() {
            p.durable().await;
        }
        // A provider's figures are not trusted: bounded before any sum, cost or budget sees them.
        let (mut usage, mut absurd) = usage.bounded();
        if let Some(note) = &absurd {
            tracing::warn!(provider = ?self.row.provider, "{note}");
        }
        // A server that reports no usage, or a stream the caller left before the figures came,
        // is not free: what is missing is estimated from the text, and the row says so.
        let mut estimated = Vec::new();
        let reported_input = usage.input_tokens > 0 || usage.cached_tokens > 0 || usage.cache_write_tokens > 0;
        if !reported_input && self.input_chars > 0 {
            usage.input_tokens = estimated_tokens(self.input_chars);
            estimated.push("input");
        }
        if usage.output_tokens == 0 && answer_chars > 0 {
            usage.output_tokens = estimated_tokens(answer_chars);
            estimated.push("output");
        }
        if !estimated.is_empty() {
            let note =
                format!("{} tokens estimated from the text: the provider reported none", estimated.join(" and "));
            absurd = Some(match absurd {
                Some(a) => format!("{a}; {note}"),
                None => note,
            });
        }
        let cost = if self.local { Some(0) } else { self.price.map(|p| p.cost(&usage)) };
        let elapsed = self.received.elapsed();
        let note = match (self.row.note.take(), absurd) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        let row = Row {
            note,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cached_tokens: usage.cached_tokens,
            cache_write_tokens: usage.cache_write_tokens,
            cost_micros: cost,
            latency_ms: elapsed.as_secs_f64() * 1000.0,
            added_ms: elapsed.saturating_sub(self.provider_time).as_secs_f64() * 1000.0,
            outcome,
            ..self.row
        };
        self.metrics.record(&row);
        observe(self.telemetry.as_ref(), &self.config, &row, self.content.take());
        self.reservation.settle(cost, usage.input_tokens.saturating_add(usage.output_tokens));
        if outcome == Outcome::Ok
            && let (Some((key, scope)), Some(events)) = (self.cache_key, &events)
        {
            let entry = cache::Entry {
                key,
                scope,
                provider: row.provider.clone().unwrap_or_default(),
                model: row.model.clone().unwrap_or_default(),
            };
            cache::store(&self.store, &self.cache_index, &self.sealer, entry, events, row.ts_ms, &self.config.cache);
        }
        if let Some(events) = events
            && (self.audit_request.is_some() || self.keep.is_some())
        {
            let mut c = Collector::default();
            events.into_iter().for_each(|e| c.push(e));
            let answer = c.finish(None, row.model.clone().unwrap_or_default());
            if let (Some((id, scope, turns)), Outcome::Ok) = (self.keep, outcome) {
                crate::stored::keep(&self.store, &self.sealer, id, scope, &turns, &answer);
            }
            if let Some(request) = self.audit_request {
                let response = serde_json::to_value(answer).unwrap_or_default();
                ledger::audit(&self.store, &self.sealer, row.request_id.clone(), request, response);
            }
        }
        let _ = self.ledger.settle(self.pending.take(), row);
    }
}

impl Gateway {
    /// A gateway on `runtime`, its budgets seeded from the ledger.
    pub async fn new(
        runtime: Runtime,
        credentials: Arc<Credentials>,
        ledger: ledger::Ledger,
        sealer: Arc<crate::seal::Sealer>,
    ) -> Self {
        let store = ledger.store().clone();
        warm_tokenizer(&runtime);
        let now = utc::now_ms();
        runtime.budgets.load(ledger::budget_spend(&store, &runtime.budgets, now).await, now);
        let http = providers::http_client(&runtime.config.limits);
        let telemetry =
            crate::telemetry::Telemetry::start(&runtime.config.telemetry, http.clone(), &runtime.identity.username);
        let cache_index = Arc::new(cache::CacheIndex::default());
        cache_index.resync(&store).await;
        let experiments = crate::experiments::Experiments::load(&store).await;
        Self {
            experiments,
            telemetry,
            cache_index,
            http,
            slots: Arc::new(Semaphore::new(runtime.config.limits.max_concurrent_requests.max(1))),
            metrics: Arc::default(),
            runtime: ArcSwap::from_pointee(runtime),
            credentials,
            store,
            ledger,
            sealer,
            swaps: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The HTTP client the gateway calls out with (providers, the team server).
    pub fn http(&self) -> reqwest::Client {
        self.http.clone()
    }

    /// The runtime in force now; a request keeps the one it started with.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Puts a new runtime in force: its budgets seeded from the ledger, the targets' health and the
    /// rate-limit buckets carried over. Requests already running finish on the old one.
    pub async fn swap(&self, runtime: Runtime) {
        warm_tokenizer(&runtime);
        let now = utc::now_ms();
        runtime.budgets.load(ledger::budget_spend(&self.store, &runtime.budgets, now).await, now);
        let old = self.runtime.load();
        runtime.router.adopt_health(&old.router);
        runtime.budgets.adopt_leases(&old.budgets);
        runtime.limits.adopt(&old.limits);
        self.runtime.store(Arc::new(runtime));
        self.swaps.send_modify(|n| *n += 1);
    }

    /// Tells when a new runtime is put in force: for tasks that idle until the configuration asks
    /// something of them, instead of looking now and then.
    pub fn runtime_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.swaps.subscribe()
    }

    /// The ledger row of a request, before anything is known of its answer (but the arm its
    /// route gave it, if any).
    fn row(&self, rt: &Runtime, ctx: &RequestContext, route_arm: Option<&Assignment>) -> Row {
        let arms: Vec<&Assignment> = ctx.prompt_arm.iter().chain(route_arm).collect();
        let joined = |f: fn(&Assignment) -> &str| {
            (!arms.is_empty()).then(|| arms.iter().map(|a| f(a)).collect::<Vec<_>>().join(" + "))
        };
        Row {
            experiment: joined(|a| &a.experiment),
            arm: joined(|a| &a.arm),
            request_id: ctx.request_id.clone(),
            ts_ms: ctx.ts_ms,
            identity: rt.identity.username.clone(),
            project: ctx.project.clone(),
            task: ctx.task.clone(),
            entry: ctx.entry.name().into(),
            caller: ctx.caller.clone(),
            outcome: Outcome::Pending,
            ..Default::default()
        }
    }

    fn cacheable(rt: &Runtime, req: &ChatRequest, ctx: &RequestContext) -> bool {
        let c = &rt.config.cache;
        // Embeddings are deterministic; so is an answer at temperature 0, near enough.
        c.enabled && (req.embed.is_some() || req.temperature == Some(0.0) || c.tasks.contains(&ctx.task))
    }

    /// Serves one request: the whole pipeline. Every request leaves a ledger row.
    pub async fn handle(&self, req: ChatRequest, ctx: &RequestContext) -> Result<Served, GatewayError> {
        let (mut pending, mut arm) = (None, None);
        let rt = Arc::clone(&ctx.runtime);
        let result = self.serve(&rt, req, ctx, &mut pending, &mut arm).await;
        if let Err(e) = &result {
            if let Some(p) = pending.as_mut() {
                p.durable().await;
            }
            let row = Row {
                outcome: e.outcome(),
                note: Some(e.to_string().chars().take(500).collect()),
                latency_ms: ctx.received.elapsed().as_secs_f64() * 1000.0,
                ..self.row(&rt, ctx, arm.as_ref())
            };
            self.metrics.record(&row);
            observe(self.telemetry.as_ref(), &rt.config, &row, None);
            self.ledger.settle(pending, row).durable().await;
        }
        result
    }

    /// The pipeline, step by step: admit the request (task, database, a slot, rate limits), route
    /// it, mask it, answer from the cache, or else try the route's targets in order. The pending
    /// row and the experiment's arm are left in `pending` and `arm` for the failure's row.
    async fn serve(
        &self,
        rt: &Runtime,
        mut req: ChatRequest,
        ctx: &RequestContext,
        pending: &mut Option<ledger::Pending>,
        arm: &mut Option<Assignment>,
    ) -> Result<Served, GatewayError> {
        let admitted = self.admit(rt, ctx, &req).await?;
        let mut notes: Vec<(&'static str, String)> = Vec::new();
        let (targets, local_only, assigned) = self.route(rt, ctx, &mut req, &mut notes)?;
        *arm = assigned;
        let masked = Masked::new(rt, ctx, req, self.row(rt, ctx, arm.as_ref()), &targets, &mut notes).await?;
        if !ctx.no_cache
            && let Some(served) = self.cached_answer(ctx, &masked, admitted.waited, &mut notes).await
        {
            return Ok(served);
        }
        self.try_targets(rt, ctx, Attempt { masked, targets, local_only, admitted, notes }, pending).await
    }

    /// Whether the request may go ahead now, and what it is estimated to cost: the task is
    /// served, the database can record it, a slot is free (waited for, within [`SLOT_WAIT`]), and
    /// the caller's and the project's rate limits admit it.
    async fn admit(&self, rt: &Runtime, ctx: &RequestContext, req: &ChatRequest) -> Result<Admitted, GatewayError> {
        Self::admit_task(rt, ctx)?;
        // Money is not spent where it cannot be recorded.
        if let Some(why) = self.store.failure() {
            return Err(GatewayError::Unrecordable(why));
        }
        let wait_start = Instant::now();
        let permit = tokio::time::timeout(SLOT_WAIT, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| GatewayError::Busy(SLOT_WAIT))?
            .map_err(|_| GatewayError::ShuttingDown)?;
        // Waiting for a slot is queueing behind other requests, not the gateway's own work.
        let waited = wait_start.elapsed();
        let (est_in, est_out) =
            if rt.estimates { tokens::estimate(req, rt.config.limits.default_max_output_tokens) } else { (0, 0) };
        let now = Instant::now();
        let tokens = est_in + est_out;
        rt.limits
            .admit(ratelimit::LimitScope::Caller, ctx.entry.name(), tokens, now)
            .map_err(GatewayError::RateLimited)?;
        if let Some(project) = &ctx.project {
            rt.limits.admit(ratelimit::LimitScope::Project, project, tokens, now).map_err(GatewayError::RateLimited)?;
        }
        Ok(Admitted { permit, waited, est_in, est_out })
    }

    /// The cached answer to the masked request, if there is one (its ledger row is written with
    /// the lookup).
    async fn cached_answer(
        &self,
        ctx: &RequestContext,
        masked: &Masked,
        waited: Duration,
        notes: &mut Vec<(&'static str, String)>,
    ) -> Option<Served> {
        let (key, _) = masked.cache_key.as_ref()?;
        if !self.cache_index.may_hold(key, ctx.ts_ms) {
            self.metrics.cache_miss();
            return None;
        }
        let Some(hit) = cache::lookup(&self.store, &self.sealer, *key, ctx.ts_ms, masked.row.clone()).await else {
            self.metrics.cache_miss();
            return None;
        };
        self.metrics.record(&hit.row);
        observe(self.telemetry.as_ref(), &ctx.runtime.config, &hit.row, None);
        let answer = if masked.req.stream {
            Answer::Stream(Box::pin(futures_util::stream::iter(hit.events.into_iter().map(Ok))))
        } else {
            let mut c = Collector::default();
            hit.events.into_iter().for_each(|e| c.push(e));
            Answer::Complete(c.finish(None, hit.model.clone()))
        };
        Some(Served {
            target: TargetRef { provider: hit.provider, model: hit.model },
            answer: restore(answer, Arc::clone(&masked.vault)),
            provider_time: waited,
            cache_hit: true,
            redactions: masked.row.redactions,
            notes: std::mem::take(notes),
            arm: masked.row.arm_key(),
        })
    }

    /// Tries the targets in order: each is checked (health, rate limit, what it can take, a key),
    /// its cost reserved against the budgets (a budget may send the request to other targets),
    /// then called, with retries for what may pass. The first answer is served; otherwise the
    /// error says why each target did not serve.
    async fn try_targets(
        &self,
        rt: &Runtime,
        ctx: &RequestContext,
        attempt: Attempt,
        pending: &mut Option<ledger::Pending>,
    ) -> Result<Served, GatewayError> {
        let Attempt { mut masked, mut targets, local_only, admitted, mut notes } = attempt;
        let Admitted { permit, waited, est_in, est_out } = admitted;
        let mut provider_time = waited;
        let mut failures = Failures::default();
        let mut downgraded = false;
        'route: loop {
            for target in targets.clone() {
                let candidate = match self.candidate(rt, &target, &masked.req, local_only, est_in, est_out).await {
                    Ok(c) => c,
                    Err(skip) => {
                        failures.skip(&target, skip);
                        continue;
                    }
                };
                let facts = Facts {
                    project: ctx.project.as_deref(),
                    target: &candidate.name,
                    tokens: est_in + est_out,
                    micros: candidate.est_micros,
                };
                if let Some(leases) = rt.budgets.leases()
                    && rt.budgets.lacks_lease(utc::now_ms())
                {
                    // Only the first request after the daemon started or idled past its leases.
                    let covered = || !rt.budgets.lacks_lease(utc::now_ms());
                    leases.next_round(crate::team::lease::FIRST_LEASE_WAIT, covered).await;
                }
                let reservation = match rt.budgets.reserve(&facts, utc::now_ms()) {
                    Ok(r) => r,
                    Err(ex) if ex.action == Action::Downgrade && !downgraded => {
                        let to = ex.downgrade_to.clone().unwrap_or_default();
                        notes.push(("x-tollgate-downgraded", format!("{} -> {to}", ex.budget)));
                        downgraded = true;
                        // The user keeps their arm on a split route; the row keeps the first.
                        targets = rt.router.resolve_for(&to, Some(&self.chooser(rt, ctx)))?.0;
                        masked = masked.retarget(rt, ctx, &to, &targets, &mut notes).await?;
                        continue 'route;
                    }
                    Err(ex) => return Err(GatewayError::Budget(ex)),
                };
                notes.extend(reservation.warnings.iter().map(|w| ("x-tollgate-budget-warning", w.clone())));
                // The row goes in before the provider is asked: durable (in the journal) before a
                // cent is spent, at no wait for the request.
                let row = Row {
                    provider: Some(target.provider.clone()),
                    model: Some(target.model.clone()),
                    ..masked.row.clone()
                };
                if pending.is_none() {
                    let estimate = Row {
                        input_tokens: est_in,
                        output_tokens: est_out,
                        cost_micros: candidate.est_micros,
                        ..row.clone()
                    };
                    *pending = Some(self.ledger.write_pending(estimate));
                }
                let wire = Target {
                    provider: &target.provider,
                    config: &rt.config.providers[&target.provider],
                    model: &target.model,
                    key: candidate.key.as_ref(),
                };
                let answer = match self
                    .call_with_retries(rt, &target, &wire, &masked.req, local_only, &mut failures, &mut provider_time)
                    .await?
                {
                    Some(answer) => answer,
                    None => continue,
                };
                let settle = Settle {
                    pending: pending.take(),
                    provider_time,
                    ..self.settle(rt, ctx, &masked, row, reservation, &candidate)
                };
                let answer = Self::hand_over(answer, &target, rt, permit, settle).await;
                let arm = masked.row.arm_key();
                return Ok(Served {
                    arm,
                    target,
                    answer: restore(answer, masked.vault),
                    provider_time,
                    cache_hit: false,
                    redactions: masked.row.redactions,
                    notes,
                });
            }
            break;
        }
        Err(failures.into_error(&masked.req.model))
    }

    /// What settles a call (to the provider its `row` names) at the answer's end: its ledger row,
    /// the budget reservation, the cache entry, the audit entry and the kept response (the pending
    /// row's write and the time spent on providers are the caller's to fill in).
    fn settle(
        &self,
        rt: &Runtime,
        ctx: &RequestContext,
        masked: &Masked,
        row: Row,
        reservation: Reservation,
        candidate: &Candidate,
    ) -> Settle {
        let provider_cfg = row.provider.as_deref().and_then(|p| rt.config.providers.get(p));
        Settle {
            config: Arc::clone(&rt.config),
            store: self.store.clone(),
            ledger: self.ledger.clone(),
            sealer: Arc::clone(&self.sealer),
            metrics: Arc::clone(&self.metrics),
            telemetry: self.telemetry.clone(),
            cache_index: Arc::clone(&self.cache_index),
            content: self
                .telemetry
                .as_ref()
                .filter(|t| t.content)
                .map(|_| serde_json::to_string(&masked.req.messages).unwrap_or_default()),
            row,
            reservation,
            pending: None,
            price: candidate.price,
            local: candidate.local,
            cache_key: masked.cache_key.clone().filter(|_| !ctx.no_store),
            audit_request: rt.config.audit.enabled.then(|| serde_json::to_value(&masked.req).unwrap_or_default()),
            // A Responses target keeps its own; tollgate keeps the others'.
            keep: ctx
                .answer_id
                .clone()
                .filter(|_| ctx.keep && provider_cfg.is_some_and(|cfg| !providers::passes_through(cfg, &masked.req)))
                .map(|id| (id, rt.identity.username.clone(), masked.req.messages.clone())),
            received: ctx.received,
            provider_time: Duration::ZERO,
            input_chars: crate::redact::Redactor::text_len(&masked.req),
        }
    }

    /// The answer as the caller gets it: a stream watched to its end (which settles it and frees
    /// the slot), or a whole answer settled now.
    async fn hand_over(
        answer: Answer,
        target: &TargetRef,
        rt: &Runtime,
        permit: OwnedSemaphorePermit,
        settle: Settle,
    ) -> Answer {
        match answer {
            Answer::Stream(s) => Answer::Stream(Self::watch(s, target.clone(), Arc::clone(&rt.router), permit, settle)),
            Answer::Complete(r) => {
                drop(permit);
                let events = settle.keeps_events().then(|| r.clone().into_events());
                settle.finish(r.usage, answer_chars(&r), events, Outcome::Ok).await;
                Answer::Complete(r)
            }
        }
    }

    /// Whether `target` can be asked now, and on what terms; why not otherwise.
    async fn candidate(
        &self,
        rt: &Runtime,
        target: &TargetRef,
        req: &ChatRequest,
        local_only: bool,
        est_in: u64,
        est_out: u64,
    ) -> Result<Candidate, Skip> {
        rt.router.check(target, local_only).map_err(|e| Skip::Other(e.to_string()))?;
        let name = target.to_string();
        rt.limits
            .admit(ratelimit::LimitScope::Model, &name, est_in + est_out, Instant::now())
            .map_err(Skip::Limited)?;
        let config = &rt.config.providers[&target.provider];
        providers::supports(config, req).map_err(Skip::Untranslatable)?;
        let key = self.credentials.get(&target.provider).await.map(|(k, _)| k);
        let local = config.is_local();
        if key.is_none() && !local {
            return Err(Skip::NoKey(UpstreamError::NoCredentials {
                provider: target.provider.clone(),
                env: crate::keychain::env_var(&target.provider),
            }));
        }
        let price = rt.prices.lookup(&target.provider, &target.model);
        let estimate = Usage { input_tokens: est_in, output_tokens: est_out, cached_tokens: 0, cache_write_tokens: 0 };
        let est_micros = if local { Some(0) } else { price.map(|p| p.cost(&estimate)) };
        Ok(Candidate { name, key, local, price, est_micros })
    }

    /// Calls `target`, again while the failure may pass and the router allows (with its wait
    /// between tries). `None`: the target failed in a way another target may not (the next one
    /// is tried); an error: the request itself was refused, which no other target would change.
    #[allow(clippy::too_many_arguments)]
    async fn call_with_retries(
        &self,
        rt: &Runtime,
        target: &TargetRef,
        wire: &Target<'_>,
        req: &ChatRequest,
        local_only: bool,
        failures: &mut Failures,
        provider_time: &mut Duration,
    ) -> Result<Option<Answer>, GatewayError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let call_start = Instant::now();
            let result = self.call(wire, req, &rt.config.limits).await;
            *provider_time += call_start.elapsed();
            match result {
                Ok(answer) => {
                    rt.router.record_success(target);
                    return Ok(Some(answer));
                }
                Err(err) if !err.is_transient() => {
                    rt.router.record_success(target); // it answered; the request was the problem
                    return Err(match err {
                        UpstreamError::Status { status, message, .. } => {
                            GatewayError::Rejected { target: target.to_string(), status, message }
                        }
                        other => GatewayError::AllFailed {
                            model: req.model.clone(),
                            reasons: format!("{target}: {other}"),
                            last: Box::new(other),
                        },
                    });
                }
                Err(err) => {
                    tracing::warn!(target = %target, attempt, error = %err, "provider call failed");
                    rt.router.record_failure(target, &err.to_string(), err.retry_after());
                    let wait = rt.router.wait_before_retry(attempt, err.retry_after());
                    let again = err.worth_retrying();
                    failures.failed(target, err);
                    match wait {
                        Some(wait) if again && rt.router.check(target, local_only).is_ok() => {
                            let t = Instant::now();
                            tokio::time::sleep(wait).await;
                            *provider_time += t.elapsed();
                        }
                        _ => return Ok(None),
                    }
                }
            }
        }
    }

    /// Counts a request's input tokens for the route's first target that can be asked: an Anthropic
    /// target counts its own (the request masked, as a call would send it); otherwise the count is
    /// tollgate's o200k estimate, and says so. Nothing is spent, so nothing is booked.
    pub async fn count_tokens(&self, mut req: ChatRequest, ctx: &RequestContext) -> Result<TokenCount, GatewayError> {
        let rt = &ctx.runtime;
        Self::admit_task(rt, ctx)?;
        let (targets, local_only, _) = self.route(rt, ctx, &mut req, &mut Vec::new())?;
        let estimate = || TokenCount { input_tokens: tokens::count_input(&req), estimated: true };
        for target in &targets {
            let config = &rt.config.providers[&target.provider];
            if rt.router.check(target, local_only).is_err()
                || config.kind != crate::providers::ProviderKind::Anthropic
                || req.native.is_none()
            {
                continue;
            }
            let Some((key, _)) = self.credentials.get(&target.provider).await else { continue };
            let mode = Self::redaction_mode(rt, &req.model, std::slice::from_ref(target));
            let (masked, _) = Self::redact(rt, req.clone(), mode).await?;
            let Some(native) = masked.native.as_ref() else { break };
            let wire = Target { provider: &target.provider, config, model: &target.model, key: Some(&key) };
            return match providers::count_tokens(&self.http, &wire, native, &rt.config.limits).await {
                Ok(n) => Ok(TokenCount { input_tokens: n, estimated: false }),
                Err(UpstreamError::Status { status, message, .. }) if (400..500).contains(&status) && status != 429 => {
                    Err(GatewayError::Rejected { target: target.to_string(), status, message })
                }
                Err(e) => {
                    tracing::warn!(target = %target, error = %e, "count_tokens failed; answering an estimate");
                    Ok(estimate())
                }
            };
        }
        Ok(estimate())
    }

    /// Whether `model` (an alias, `provider/model`, or a name `model_names` maps) can be served
    /// now: one of its targets is enabled, allowed, and local or has credentials.
    pub async fn servable(&self, model: &str) -> bool {
        let rt = self.runtime();
        let Ok(targets) = rt.router.resolve(model) else { return false };
        for t in targets {
            let Some(config) = rt.config.providers.get(&t.provider) else { continue };
            if config.is_local() || self.credentials.get(&t.provider).await.is_some() {
                return true;
            }
        }
        false
    }

    /// Whether the policy and the config serve this task at all.
    fn admit_task(rt: &Runtime, ctx: &RequestContext) -> Result<(), GatewayError> {
        if rt.config.tasks.admits(&ctx.task) {
            return Ok(());
        }
        Err(GatewayError::NotAllowed(format!(
            "the task {:?} is not allowed here (allowed: {})",
            ctx.task,
            [&rt.config.tasks.policy, &rt.config.tasks.allowed]
                .into_iter()
                .find(|l| !l.is_empty() && !l.contains(&ctx.task))
                .map(|l| l.join(", "))
                .unwrap_or_default()
        )))
    }

    /// The routing rules' say (another route, local only; a reroute noted for the caller) and the
    /// targets of the model the request ends up naming.
    fn route(
        &self,
        rt: &Runtime,
        ctx: &RequestContext,
        req: &mut ChatRequest,
        notes: &mut Vec<(&'static str, String)>,
    ) -> Result<(Vec<TargetRef>, bool, Option<Assignment>), GatewayError> {
        // A name goes into errors, logs and the ledger: one holding a credential goes no further.
        if let Some(kind) = rt.redactor.first_kind(&req.model) {
            return Err(GatewayError::SecretInModelName { kind });
        }
        let decision = rt.router.decide(&RequestFacts {
            task: &ctx.task,
            path: ctx.path.as_deref(),
            project: ctx.project.as_deref(),
            sensitivity: ctx.sensitivity.as_deref(),
        });
        if let Some(route) = decision.route.filter(|r| *r != req.model) {
            notes.push(("x-tollgate-routed", format!("{} -> {route} (routing rule)", req.model)));
            req.model = route;
        }
        let (targets, arm) = rt.router.resolve_for(&req.model, Some(&self.chooser(rt, ctx)))?;
        if let Some(a) = &arm {
            notes.push(("x-tollgate-experiment", format!("{}={}", a.experiment, a.arm)));
        }
        Ok((targets, ctx.local_only || decision.local_only, arm))
    }

    /// Picks the arm of an experiment for the request's user: whom the caller names, or the
    /// daemon's user.
    pub fn chooser<'a>(
        &'a self,
        rt: &'a Runtime,
        ctx: &'a RequestContext,
    ) -> impl Fn(&str, &[(String, u64)]) -> usize + Sync + 'a {
        let user = ctx.user.as_deref().unwrap_or(&rt.identity.username);
        move |experiment: &str, arms: &[(String, u64)]| self.experiments.pick(experiment, user, arms)
    }

    /// The redaction mode for a request that may reach `targets`: its route's own setting, or the
    /// global one; but text goes unmasked ("off") only to targets that are all local. A cloud
    /// target always gets masked text, whatever the settings say.
    fn redaction_mode(rt: &Runtime, model: &str, targets: &[TargetRef]) -> crate::redact::Mode {
        use crate::redact::Mode;
        let mode = rt.config.routes.get(model).and_then(|r| r.redaction).unwrap_or(rt.config.redaction.mode);
        let all_local = targets.iter().all(|t| rt.config.providers.get(&t.provider).is_some_and(|p| p.is_local()));
        if mode == Mode::Off && !all_local { Mode::Mask } else { mode }
    }

    /// The cache key of a (redacted) request for these targets, in the caller's scope; `None` when
    /// the request is not cached.
    fn cache_key(
        rt: &Runtime,
        req: &ChatRequest,
        ctx: &RequestContext,
        targets: &[TargetRef],
    ) -> Option<([u8; 32], String)> {
        Self::cacheable(rt, req, ctx).then(|| {
            let names: Vec<String> = targets.iter().map(ToString::to_string).collect();
            let scope = format!("{}\u{1f}{}", rt.identity.username, ctx.project.as_deref().unwrap_or(""));
            (cache::key(req, &names, &scope), scope)
        })
    }

    /// Masks (or checks) the request; a large one on a blocking thread, so that no async worker
    /// spends milliseconds scanning.
    async fn redact(
        rt: &Runtime,
        mut req: ChatRequest,
        mode: crate::redact::Mode,
    ) -> Result<(ChatRequest, Arc<crate::redact::Vault>), GatewayError> {
        use crate::redact::{Mode, Redactor};
        if mode == Mode::Off {
            return Ok((req, Arc::default()));
        }
        let inline = Redactor::text_len(&req) <= crate::redact::INLINE_LIMIT;
        let redactor = rt.redactor.clone();
        let work = move || {
            let result = match mode {
                Mode::Block => redactor.check(&mut req).map(|()| Arc::default()),
                _ => Ok(Arc::new(redactor.mask(&mut req))),
            };
            result.map(|vault| (req, vault)).map_err(GatewayError::Redaction)
        };
        if inline { work() } else { tokio::task::spawn_blocking(work).await.map_err(|_| GatewayError::ShuttingDown)? }
    }

    /// One provider call. A stream is read up to its first event, so that a failure before any
    /// byte reaches the caller can still be retried or fall back.
    async fn call(
        &self,
        target: &Target<'_>,
        req: &ChatRequest,
        limits: &crate::providers::Limits,
    ) -> Result<Answer, UpstreamError> {
        if !req.stream {
            return providers::complete(&self.http, target, req, limits).await.map(Answer::Complete);
        }
        let mut stream = providers::stream(&self.http, target, req, limits).await?;
        match stream.next().await {
            Some(Ok(first)) => Ok(Answer::Stream(Box::pin(futures_util::stream::iter([Ok(first)]).chain(stream)))),
            Some(Err(e)) => Err(e),
            None => Err(UpstreamError::Cut("the stream ended before any event".into())),
        }
    }

    /// Wraps a committed stream: holds the concurrency slot until it ends, counts a cut against
    /// the target's health, and settles the call before the stream's end reaches the caller.
    /// After the first byte there is no fallback: the entry point ends the caller's stream with an
    /// error event in its own format.
    fn watch(
        stream: EventStream,
        target: TargetRef,
        router: Arc<Router>,
        permit: OwnedSemaphorePermit,
        settle: Settle,
    ) -> EventStream {
        struct S {
            inner: EventStream,
            settle: Option<Settle>,
            usage: Usage,
            /// Characters of text and tool arguments passed on so far.
            chars: usize,
            events: Option<Vec<Event>>,
            router: Arc<Router>,
            target: TargetRef,
            _permit: OwnedSemaphorePermit,
        }
        impl Drop for S {
            fn drop(&mut self) {
                // The caller went away mid-stream: settle what was used so far.
                if let Some(settle) = self.settle.take() {
                    let usage = self.usage;
                    tokio::spawn(settle.finish(usage, self.chars, None, Outcome::Cancelled));
                }
            }
        }
        let events = settle.keeps_events().then(Vec::new);
        let state = S {
            inner: stream,
            settle: Some(settle),
            usage: Usage::default(),
            chars: 0,
            events,
            router,
            target,
            _permit: permit,
        };
        Box::pin(futures_util::stream::unfold(state, |mut s| async move {
            let waited = Instant::now();
            let next = s.inner.next().await;
            if let Some(settle) = s.settle.as_mut() {
                settle.provider_time += waited.elapsed();
            }
            match next {
                Some(Ok(event)) => {
                    match &event {
                        Event::Usage { usage } => s.usage.merge(*usage),
                        Event::TextDelta { text } => s.chars += text.len(),
                        Event::ToolCallDelta { arguments, .. } => s.chars += arguments.len(),
                        _ => {}
                    }
                    if let Some(events) = s.events.as_mut() {
                        events.push(event.clone());
                    }
                    Some((Ok(event), s))
                }
                Some(Err(e)) => {
                    tracing::warn!(target = %s.target, error = %e, "stream failed after it began");
                    s.router.record_failure(&s.target, &e.to_string(), None);
                    if let Some(settle) = s.settle.take() {
                        settle.finish(s.usage, s.chars, None, Outcome::Cut).await;
                    }
                    Some((Err(e), s))
                }
                None => {
                    if let Some(settle) = s.settle.take() {
                        settle.finish(s.usage, s.chars, s.events.take(), Outcome::Ok).await;
                    }
                    None
                }
            }
        }))
    }
}

/// Characters of text and tool arguments in a whole answer.
fn answer_chars(r: &ChatResponse) -> usize {
    use crate::model::Part;
    r.content
        .iter()
        .map(|p| match p {
            Part::Text { text } => text.len(),
            Part::ToolCall { arguments, .. } => arguments.len(),
            Part::ToolResult { .. } | Part::Media { .. } => 0,
        })
        .sum()
}

/// Puts the values back in place of the placeholders, before the caller sees the answer.
fn restore(answer: Answer, vault: Arc<crate::redact::Vault>) -> Answer {
    match answer {
        Answer::Complete(mut r) => {
            crate::redact::restore_response(&mut r, &vault);
            Answer::Complete(r)
        }
        Answer::Stream(s) => Answer::Stream(crate::redact::restore_stream(s, vault)),
    }
}

/// Turns an answer into events, whichever form it came in.
pub fn events(answer: Answer) -> EventStream {
    match answer {
        Answer::Stream(s) => s,
        Answer::Complete(r) => {
            Box::pin(futures_util::stream::iter(r.into_events().into_iter().map(Ok::<Event, UpstreamError>)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Loaded, Overrides, RouteConfig};
    use crate::model::{Message, Role};

    /// The default runtime, with provider `p` (a closed loopback port) and route `team` -> `p/m`
    /// when `with_team`.
    fn runtime(with_team: bool) -> Runtime {
        let mut loaded = Loaded::load(None, false, &Overrides::default()).unwrap();
        if with_team {
            let p = toml::from_str("kind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"").unwrap();
            loaded.config.providers.insert("p".into(), p);
            loaded.config.routes.insert(
                "team".into(),
                RouteConfig { targets: vec!["p/m".into()], redaction: None, ..Default::default() },
            );
        }
        let identity = crate::identity::Identity { username: "me".into(), groups: Vec::new(), source: "test".into() };
        Runtime::build(loaded, None, identity).unwrap()
    }

    #[tokio::test]
    async fn a_request_is_served_whole_under_the_runtime_it_arrived_with() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = ledger::Ledger::open(Store::open(&dir.path().join("t.db")).unwrap()).await.unwrap();
        let keychain = crate::keychain::Keychain::open(crate::keychain::KeychainBackend::Env);
        let gw = Gateway::new(
            runtime(true),
            Arc::new(Credentials::new(keychain)),
            ledger,
            Arc::new(crate::seal::Sealer::random()),
        )
        .await;
        let arrived = RequestContext::new(EntryPoint::Native, gw.runtime());
        // A reload removes the route while the request is on its way.
        gw.swap(runtime(false)).await;
        let req =
            ChatRequest { model: "team".into(), messages: vec![Message::text(Role::User, "hi")], ..Default::default() };
        // Routed by the route it arrived with (its one target is down: not a routing error).
        let Err(e) = gw.handle(req.clone(), &arrived).await else { panic!("served without its target") };
        assert!(!matches!(e, GatewayError::Route(_)), "{e:?}");
        assert!(e.to_string().contains("p/m"), "{e}");
        // A request arriving after the reload does not know the route.
        let after = RequestContext::new(EntryPoint::Native, gw.runtime());
        let Err(e) = gw.handle(req, &after).await else { panic!("served after its route was removed") };
        assert!(matches!(e, GatewayError::Route(_)), "{e:?}");
    }

    #[tokio::test]
    async fn every_answer_can_be_had_whole() {
        let events = |tail: Result<Event, UpstreamError>| -> EventStream {
            let first = [Ok(Event::TextDelta { text: "Hello ".into() }), Ok(Event::TextDelta { text: "there".into() })];
            Box::pin(futures_util::stream::iter(first.into_iter().chain([tail])))
        };
        let done = events(Ok(Event::Finish { reason: crate::model::FinishReason::Stop }));
        let whole = Answer::Stream(done).whole("p/m").await.unwrap();
        assert_eq!((whole.text().as_str(), whole.model.as_str()), ("Hello there", "p/m"));
        let cut = events(Err(UpstreamError::Cut("reset".into())));
        let Err(e) = Answer::Stream(cut).whole("p/m").await else { panic!("a cut stream read whole") };
        assert!(matches!(e, GatewayError::AllFailed { .. }) && e.to_string().contains("reset"), "{e}");
    }

    /// Serves one request in process under `config` (merged over the defaults, plus provider
    /// `down`: a local server that refuses connections, and `cloud`: a cloud provider without a
    /// key) and returns the error it met and the outcome its ledger row says.
    async fn check(config: &str, model: &str, content: &str, task: &str, path: Option<&str>) -> (String, Outcome) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        let base = "[retry]\nattempts_per_target = 1\n\
                    [providers.down]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
                    [providers.cloud]\nkind = \"openai\"\nbase_url = \"https://api.example.invalid/v1\"\n";
        std::fs::write(&file, format!("{base}{config}")).unwrap();
        let loaded = Loaded::load(Some(&file), true, &Overrides::default()).unwrap();
        let identity = crate::identity::Identity { username: "me".into(), groups: Vec::new(), source: "test".into() };
        let rt = Runtime::build(loaded, None, identity).unwrap();
        let (ledger, _) = ledger::Ledger::open(Store::open(&dir.path().join("t.db")).unwrap()).await.unwrap();
        let keychain = crate::keychain::Keychain::open(crate::keychain::KeychainBackend::Env);
        let gw =
            Gateway::new(rt, Arc::new(Credentials::new(keychain)), ledger, Arc::new(crate::seal::Sealer::random()))
                .await;
        let mut ctx = RequestContext::new(EntryPoint::Native, gw.runtime());
        ctx.task = task.into();
        ctx.path = path.map(str::to_string);
        let req = ChatRequest {
            model: model.into(),
            messages: vec![Message::text(Role::User, content)],
            ..Default::default()
        };
        let Err(e) = gw.handle(req, &ctx).await else { panic!("{model}: served") };
        let id = ctx.request_id.clone();
        let outcome = gw
            .store
            .run(move |c| {
                c.query_row("SELECT outcome FROM ledger WHERE request_id = ?1", [&id], |r| r.get::<_, String>(0))
            })
            .await
            .unwrap()
            .map(|word| Outcome::parse(&word))
            .expect("a ledger row for the refused request");
        (format!("{e:?}"), outcome)
    }

    /// Every way the pipeline refuses or fails a request, and the outcome its ledger row keeps.
    #[tokio::test]
    async fn each_refusal_is_its_own_error_and_its_own_ledger_outcome() {
        let pat = format!("glpat-{}", "x1Y2z3W4v5U6t7S8r9Q0");
        struct Case<'a> {
            what: &'a str,
            config: &'a str,
            model: &'a str,
            task: &'a str,
            path: Option<&'a str>,
            error: &'a str,
            outcome: Outcome,
        }
        let case =
            |what, config, model, task, path, error, outcome| Case { what, config, model, task, path, error, outcome };
        let cases = [
            case("an unknown model", "", "nope", "api", None, "Route(Unknown", Outcome::UnknownModel),
            case("a secret pasted as the model", "", &pat, "api", None, "SecretInModelName", Outcome::RefusedSecret),
            case(
                "a secret under redaction = block",
                "[routes.r]\ntargets = [\"down/m\"]\n[redaction]\nmode = \"block\"\n",
                "r",
                "api",
                None,
                "Redaction",
                Outcome::RefusedSecret,
            ),
            case(
                "a task not served",
                "[tasks]\nallowed = [\"completion\"]\n",
                "down/m",
                "review",
                None,
                "NotAllowed",
                Outcome::RefusedPolicy,
            ),
            case(
                "a spent budget",
                "[[budgets]]\nname = \"t\"\nscope = \"user\"\nperiod = \"day\"\nlimit_tokens = 1\naction = \"block\"\n",
                "down/m",
                "api",
                None,
                "Budget",
                Outcome::Blocked,
            ),
            case(
                "a local-only file with cloud targets only",
                "",
                "cloud/m",
                "api",
                Some("app/secrets/db.env"),
                "NoTarget",
                Outcome::NoTarget,
            ),
            case("every target down", "", "down/m", "api", None, "AllFailed", Outcome::Failed),
        ];
        for Case { what, config, model, task, path, error, outcome } in cases {
            let config = format!("{config}[privacy]\nlocal_only_paths = [\"**/secrets/**\"]\n");
            let content = if what.contains("block") { format!("deploy with {pat}") } else { "hi".to_string() };
            let (got, row) = check(&config, model, &content, task, path).await;
            assert!(got.starts_with(error), "{what}: {got}");
            assert_eq!(row, outcome, "{what}: {got}");
            assert!(!got.contains(&pat), "{what}: the secret is in the error: {got}");
        }
    }
}
