//! The one request pipeline. Every entry point calls [`Gateway::handle`] with a request in the
//! internal model; this function owns the order of the steps:
//!
//! ```text
//! caller authenticated (api::auth) -> identity and project resolved (RequestContext)
//! -> route chosen (task, local-only, health) -> provider call (retry, fallback)
//! -> answer streamed back (the entry point renders it)
//! ```
//!
//! Policy, redaction, the cache, budgets and the ledger slot in at their places in this function
//! and nowhere else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::keychain::Credentials;
use crate::model::{ChatRequest, ChatResponse, Event, EventStream};
use crate::providers::{self, ProviderError, Target};
use crate::route::{RouteError, Router, TargetRef};

/// Which door a request came in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryPoint {
    Openai,
    Anthropic,
    Native,
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
    /// When the request arrived, for the gateway's own added time.
    pub received: Instant,
}

impl RequestContext {
    pub fn new(entry: EntryPoint) -> Self {
        Self { entry, local_only: false, path: None, project: None, received: Instant::now() }
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
    AllFailed { model: String, reasons: String, last: Box<ProviderError> },
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

impl GatewayError {
    /// The HTTP status that best says what happened.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::Route(RouteError::Unknown { .. }) => 404,
            GatewayError::Route(RouteError::Disabled(_)) => 403,
            GatewayError::NoTarget { .. } => 503,
            GatewayError::Rejected { status, .. } => *status,
            GatewayError::AllFailed { last, .. } => match last.as_ref() {
                ProviderError::Status { status: 429, .. } => 429,
                ProviderError::Timeout(_) => 504,
                ProviderError::NoCredentials(_) => 401,
                _ => 502,
            },
            GatewayError::ShuttingDown => 503,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::AllFailed { last, .. } => last.retry_after(),
            _ => None,
        }
    }
}

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

pub struct Served {
    pub target: TargetRef,
    pub answer: Answer,
    /// Time spent waiting on providers (calls, and backoff between them) until the answer began.
    pub provider_time: Duration,
}

impl Served {
    /// The gateway's own time so far: everything since the request arrived that was not spent
    /// waiting on a provider.
    pub fn added(&self, ctx: &RequestContext) -> Duration {
        ctx.received.elapsed().saturating_sub(self.provider_time)
    }
}

pub struct Gateway {
    pub config: Arc<Config>,
    pub router: Arc<Router>,
    pub credentials: Arc<Credentials>,
    http: reqwest::Client,
    slots: Arc<Semaphore>,
}

impl Gateway {
    pub fn new(config: Arc<Config>, credentials: Arc<Credentials>) -> Self {
        Self {
            router: Arc::new(Router::new(&config)),
            http: providers::http_client(&config.limits),
            slots: Arc::new(Semaphore::new(config.limits.max_concurrent_requests.max(1))),
            credentials,
            config,
        }
    }

    /// Serves one request: the whole pipeline.
    pub async fn handle(&self, req: ChatRequest, ctx: &RequestContext) -> Result<Served, GatewayError> {
        let wait_start = Instant::now();
        let permit = Arc::clone(&self.slots).acquire_owned().await.map_err(|_| GatewayError::ShuttingDown)?;
        // Waiting for a slot is queueing behind other requests, not the gateway's own work.
        let mut provider_time = wait_start.elapsed();

        let local_only = ctx.local_only || self.router.local_only_by_rule(ctx.path.as_deref(), ctx.project.as_deref());
        let targets = self.router.resolve(&req.model)?;

        let mut reasons = Reasons::default();
        let mut last_error: Option<ProviderError> = None;
        for target in targets {
            if let Err(skip) = self.router.check(&target, local_only) {
                reasons.push(format!("{target}: {skip}"));
                continue;
            }
            let provider_cfg = &self.config.providers[&target.provider];
            let key = self.credentials.get(&target.provider).await.map(|(k, _)| k);
            if key.is_none() && !provider_cfg.is_local() {
                let err = ProviderError::NoCredentials(target.provider.clone());
                reasons.push(format!("{target}: {err}"));
                last_error = Some(err);
                continue;
            }
            let wire_target =
                Target { provider: &target.provider, config: provider_cfg, model: &target.model, key: key.as_ref() };

            let mut attempt = 0;
            loop {
                attempt += 1;
                let call_start = Instant::now();
                let result = self.call(&wire_target, &req).await;
                provider_time += call_start.elapsed();
                match result {
                    Ok(answer) => {
                        self.router.record_success(&target);
                        let answer = match answer {
                            Answer::Stream(s) => Answer::Stream(self.watch(s, target.clone(), permit)),
                            complete => {
                                drop(permit);
                                complete
                            }
                        };
                        return Ok(Served { target, answer, provider_time });
                    }
                    Err(err) if !err.is_transient() => {
                        self.router.record_success(&target); // it answered; the request was the problem
                        return Err(match err {
                            ProviderError::Status { status, message, .. } => {
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
                        self.router.record_failure(&target, &err.to_string(), err.retry_after());
                        let wait = self.router.wait_before_retry(attempt, err.retry_after());
                        reasons.push(format!("{target}: {err}"));
                        last_error = Some(err);
                        match wait {
                            Some(wait) if self.router.check(&target, local_only).is_ok() => {
                                let t = Instant::now();
                                tokio::time::sleep(wait).await;
                                provider_time += t.elapsed();
                            }
                            _ => break,
                        }
                    }
                }
            }
        }
        let reasons = reasons.text();
        match last_error {
            Some(last) => Err(GatewayError::AllFailed { model: req.model.clone(), reasons, last: Box::new(last) }),
            None => Err(GatewayError::NoTarget { model: req.model.clone(), reasons }),
        }
    }

    /// One provider call. A stream is read up to its first event, so that a failure before any
    /// byte reaches the caller can still be retried or fall back.
    async fn call(&self, target: &Target<'_>, req: &ChatRequest) -> Result<Answer, ProviderError> {
        if !req.stream {
            return providers::complete(&self.http, target, req, &self.config.limits).await.map(Answer::Complete);
        }
        let mut stream = providers::stream(&self.http, target, req, &self.config.limits).await?;
        match stream.next().await {
            Some(Ok(first)) => Ok(Answer::Stream(Box::pin(futures_util::stream::iter([Ok(first)]).chain(stream)))),
            Some(Err(e)) => Err(e),
            None => Err(ProviderError::Cut("the stream ended before any event".into())),
        }
    }

    /// Wraps a committed stream: holds the concurrency slot until it ends, and counts a cut
    /// against the target's health. After the first byte there is no fallback: the entry point
    /// ends the caller's stream with an error event in its own format.
    fn watch(&self, stream: EventStream, target: TargetRef, permit: OwnedSemaphorePermit) -> EventStream {
        let router = Arc::clone(&self.router);
        Box::pin(stream.map(move |item| {
            let _slot = &permit;
            if let Err(e) = &item {
                tracing::warn!(target = %target, error = %e, "stream failed after it began");
                router.record_failure(&target, &e.to_string(), None);
            }
            item
        }))
    }
}

/// Folds an answer into a whole response (for a caller that did not ask for a stream but whose
/// answer came as one, and for tests).
pub async fn collect(answer: Answer, model: String) -> Result<ChatResponse, ProviderError> {
    match answer {
        Answer::Complete(r) => Ok(r),
        Answer::Stream(mut s) => {
            let mut c = crate::model::Collector::default();
            while let Some(e) = s.next().await {
                c.push(e?);
            }
            Ok(c.finish(None, model))
        }
    }
}

/// Turns an answer into events, whichever form it came in.
pub fn events(answer: Answer) -> EventStream {
    match answer {
        Answer::Stream(s) => s,
        Answer::Complete(r) => {
            Box::pin(futures_util::stream::iter(r.into_events().into_iter().map(Ok::<Event, ProviderError>)))
        }
    }
}
