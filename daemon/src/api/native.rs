//! tollgate's own endpoints: health, status, the model list, and administration over the socket.

use crate::callers::Caller;
use axum::extract::Extension;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, Uri};
use serde_json::{Value, json};

use super::{ApiError, Format};

/// `ok`, or 503 with what is wrong when the daemon answers but cannot do its work (its database
/// does not keep writes). While the tokenizer loads (a quarter of a second after a start with
/// budgets or token limits), `tokenizer` says `loading`: estimates are a bound from the text's
/// length until it is `ready`.
pub async fn healthz(State(state): State<super::State>) -> Response {
    match state.gateway.store.failure() {
        None if state.gateway.runtime().estimates => {
            let tokenizer = if crate::providers::tokens::loaded() { "ready" } else { "loading" };
            axum::Json(json!({"status": "ok", "tokenizer": tokenizer})).into_response()
        }
        None => axum::Json(json!({"status": "ok"})).into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "degraded", "problem": format!("the database does not keep writes: {why}")})),
        )
            .into_response(),
    }
}

/// Providers (with credential presence, never a value), target health, version and uptime.
pub async fn status(State(state): State<super::State>) -> Response {
    use tollgate_protocol::status::{DaemonStatus, DatabaseStatus, KeychainStatus};
    let gw = &state.gateway;
    let rt = gw.runtime();
    let mut providers = Vec::new();
    for (name, p) in &rt.config.providers {
        let origin = gw.credentials.get(name).await.map(|(_, origin)| origin);
        providers.push(crate::keychain::provider_status(name, p, origin));
    }
    axum::Json(DaemonStatus {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        uptime_s: state.started.elapsed().as_secs(),
        port: rt.config.server.port,
        config_file: rt.loaded.file.clone(),
        identity: rt.identity.clone(),
        policy: state.reloader.status(),
        keychain: KeychainStatus {
            backend: gw.credentials.backend_name().to_string(),
            error: gw.credentials.backend_error().map(str::to_string),
        },
        database: DatabaseStatus { keeps_writes: gw.store.failure().is_none(), problem: gw.store.failure() },
        providers,
        health: rt.router.health_report(),
    })
    .into_response()
}

/// The aliases and `provider/model` names the routes make available, in OpenAI's list format, or
/// Anthropic's when the caller sends `anthropic-version`.
/// One model in the caller's format (Anthropic's when it sends `anthropic-version`).
fn model_object(id: &str, anthropic: bool) -> Value {
    if anthropic {
        json!({"type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z"})
    } else {
        json!({"id": id, "object": "model", "created": 0, "owned_by": "tollgate"})
    }
}

/// The aliases and `provider/model` names that can be served now: a cloud model whose provider
/// has no credentials is not offered.
pub async fn models(State(state): State<super::State>, headers: HeaderMap) -> Response {
    let mut names = Vec::new();
    for name in state.gateway.runtime().router.model_names() {
        if state.gateway.servable(&name).await {
            names.push(name);
        }
    }
    let anthropic = headers.contains_key("anthropic-version");
    let data: Vec<Value> = names.iter().map(|n| model_object(n, anthropic)).collect();
    if anthropic {
        return axum::Json(
            json!({"data": data, "has_more": false, "first_id": names.first(), "last_id": names.last()}),
        )
        .into_response();
    }
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}`: the model when it can be served now (an alias, `provider/model`, or a
/// name the `model_names` table maps); 404 `model_not_found` otherwise.
pub async fn model(State(state): State<super::State>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let anthropic = headers.contains_key("anthropic-version");
    if state.gateway.servable(&id).await {
        return axum::Json(model_object(&id, anthropic)).into_response();
    }
    let format = if anthropic { Format::Anthropic } else { Format::Openai };
    let why = match state.gateway.runtime().router.resolve(&id) {
        Ok(_) => "none of its providers has credentials (`tollgate login PROVIDER`) or runs locally".to_string(),
        Err(e) => e.to_string(),
    };
    ApiError::new(StatusCode::NOT_FOUND, format, format!("the model {id:?} cannot be served: {why}"))
        .with_code("model_not_found")
        .into_response()
}

/// The policy: source, commit, age, the last error, what was ignored.
pub async fn policy(State(state): State<super::State>) -> Response {
    axum::Json(state.reloader.status()).into_response()
}

/// Checks the policy source now (`tollgate policy sync`); answers once the sync is done.
pub async fn policy_sync(State(state): State<super::State>) -> Response {
    let result = state.reloader.sync().await;
    let status = state.reloader.status();
    let (code, reply) = match result {
        Ok(changed) => (StatusCode::OK, tollgate_protocol::SyncReply { changed, error: None, status }),
        Err(e) => (StatusCode::BAD_GATEWAY, tollgate_protocol::SyncReply { changed: false, error: Some(e), status }),
    };
    (code, axum::Json(reply)).into_response()
}

/// The effective configuration (local config and policy) with each value's source.
pub async fn config(State(state): State<super::State>) -> Response {
    axum::Json(state.gateway.runtime().loaded.show_json()).into_response()
}

/// The prompt templates in force: name, version, description, origin.
pub async fn prompts(State(state): State<super::State>) -> Response {
    let rt = state.gateway.runtime();
    let list: Vec<&crate::prompts::Prompt> = rt.prompts.all().collect();
    axum::Json(json!({"prompts": list})).into_response()
}

/// Runs a prompt template (`POST /v1/prompts/{name}`): `{"variables": {...}}` in, the answer, the
/// prompt's version and who served it out.
pub async fn run_prompt(
    State(state): State<super::State>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let received = std::time::Instant::now();
    let limit = state.gateway.runtime().config.limits.max_body_bytes;
    let call: crate::tasks::PromptCall = match super::read_json(body, &headers, limit, Format::Openai).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let mut ctx =
        super::context(crate::pipeline::EntryPoint::Native, state.gateway.runtime(), &headers, received, &caller);
    if !headers.contains_key("x-tollgate-task") {
        ctx.task = name.clone();
    }
    ctx.path = call.path.clone().or(ctx.path);
    ctx.project = call.project.clone().or(ctx.project);
    if ctx.project.is_none()
        && let Some(repo) = call.repo.clone()
    {
        ctx.project = state.projects.of_dir(repo.into()).await;
    }
    match crate::tasks::run(&state.gateway, &name, call, &ctx).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(crate::tasks::TaskError::Gateway(e)) => ApiError::from_gateway(&e, Format::Openai).into_response(),
        Err(e @ crate::tasks::TaskError::Unknown { .. }) => {
            ApiError::new(StatusCode::NOT_FOUND, Format::Openai, e.to_string()).into_response()
        }
        Err(e @ crate::tasks::TaskError::Variables(_)) => {
            ApiError::new(StatusCode::BAD_REQUEST, Format::Openai, e.to_string()).into_response()
        }
    }
}

/// Request context for the editor endpoints: task, project from the repository directory.
async fn editor_context(
    state: &super::State,
    caller: &Caller,
    headers: &HeaderMap,
    task: &str,
    repo: Option<String>,
) -> crate::pipeline::RequestContext {
    let mut ctx = super::context(
        crate::pipeline::EntryPoint::Native,
        state.gateway.runtime(),
        headers,
        std::time::Instant::now(),
        caller,
    );
    ctx.task = task.into();
    if ctx.project.is_none()
        && let Some(repo) = repo
    {
        ctx.project = state.projects.of_dir(repo.into()).await;
    }
    ctx
}

/// An inline completion for the language server (`POST /v1/complete`).
pub async fn complete(
    State(state): State<super::State>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let limit = state.gateway.runtime().config.limits.max_body_bytes;
    let req: tollgate_lsp::CompletionRequest = match super::read_json(body, &headers, limit, Format::Openai).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let mut ctx = editor_context(&state, &caller, &headers, "completion", req.repo.clone()).await;
    ctx.path = Some(req.path.clone());
    match crate::complete::run(&state.gateway, req, &ctx).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(e) => ApiError::from_gateway(&e, Format::Openai).into_response(),
    }
}

/// Reviews some lines of a file for an editor (`POST /v1/review`): `{"findings": [...]}`.
pub async fn review(
    State(state): State<super::State>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let limit = state.gateway.runtime().config.limits.max_body_bytes;
    let req: tollgate_protocol::ReviewLines = match super::read_json(body, &headers, limit, Format::Openai).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let ctx = editor_context(&state, &caller, &headers, "review", req.repo.clone()).await;
    match crate::review::review_lines(&*state.gateway, &req.path, &req.text, req.first, req.last, ctx.project).await {
        Ok(findings) => axum::Json(crate::review::FindingsReply { findings }).into_response(),
        Err(e) => ApiError::new(StatusCode::BAD_GATEWAY, Format::Openai, e).into_response(),
    }
}

/// `POST /v1/review/outcomes`: how a review's calls went per experiment arm (`tollgate review`
/// sends it once the findings are in, and the merge request's discussions synced).
pub async fn review_outcomes(
    State(state): State<super::State>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    use crate::tasks::PromptRunner;
    let limit = state.gateway.runtime().config.limits.max_body_bytes;
    let outcomes: Vec<crate::tasks::ReviewOutcome> = match super::read_json(body, &headers, limit, Format::Openai).await
    {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let kept = outcomes.len();
    match state.gateway.reviewed(outcomes).await {
        Ok(()) => axum::Json(json!({"kept": kept})).into_response(),
        Err(e) => internal(e),
    }
}

/// Forgets cached credentials, so that a `tollgate login` takes effect at once.
pub async fn reload_credentials(State(state): State<super::State>) -> Response {
    state.gateway.credentials.forget();
    axum::Json(json!({"reloaded": true})).into_response()
}

#[derive(Debug, serde::Deserialize)]
pub struct UsageQuery {
    /// `today` (default), `week`, `month`, a date, a timestamp, or an age (`7d`).
    since: Option<String>,
    by: Option<crate::ledger::GroupBy>,
}

/// Usage since a time, grouped by model, project, task or provider.
pub async fn usage(State(state): State<super::State>, Query(q): Query<UsageQuery>) -> Response {
    let since = match crate::utc::since(q.since.as_deref(), crate::utc::now_ms()) {
        Ok(s) => s,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, Format::Openai, e).into_response(),
    };
    let by = q.by.unwrap_or(crate::ledger::GroupBy::Model);
    match state.gateway.store.run(move |c| crate::ledger::usage(c, since, i64::MAX, by)).await {
        Ok(Ok(report)) => axum::Json(report).into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct TeamUsageQuery {
    since: Option<String>,
    by: Option<crate::protocol::team::TeamGroupBy>,
}

/// The whole team's usage from the team server, asked with this user's GitLab token (the server
/// answers team admins only).
pub async fn team_usage(State(state): State<super::State>, Query(q): Query<TeamUsageQuery>) -> Response {
    let since = match crate::utc::since(Some(q.since.as_deref().unwrap_or("month")), crate::utc::now_ms()) {
        Ok(s) => s,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, Format::Openai, e).into_response(),
    };
    let rt = state.gateway.runtime();
    let Some(url) = rt.config.team.server.as_deref() else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            Format::Openai,
            "no team server is set: the policy's [team] server (or the config's) names one",
        )
        .into_response();
    };
    let client = crate::team::TeamClient::from_credentials(state.gateway.http(), url, &state.gateway.credentials).await;
    let by = q.by.unwrap_or(crate::protocol::team::TeamGroupBy::User);
    match client.team_usage(by, since).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(crate::team::CallError::Refused(status, message)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            ApiError::new(status, Format::Openai, format!("the team server refused: {message}")).into_response()
        }
        Err(e) => ApiError::new(StatusCode::BAD_GATEWAY, Format::Openai, e.to_string()).into_response(),
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Format::Openai, format!("database: {e}")).into_response()
}

/// Each budget: spent, limit, remaining and reset time.
pub async fn budget(State(state): State<super::State>) -> Response {
    let budgets = state.gateway.runtime().budgets.report(crate::utc::now_ms());
    axum::Json(crate::ledger::budgets::BudgetsReply { budgets }).into_response()
}

#[derive(Debug, serde::Deserialize)]
pub struct LogQuery {
    limit: Option<u32>,
}

/// The most recent calls.
pub async fn log(State(state): State<super::State>, Query(q): Query<LogQuery>) -> Response {
    let limit = q.limit.unwrap_or(20).min(1000);
    match state.gateway.store.run(move |c| crate::ledger::recent(c, limit)).await {
        Ok(Ok(calls)) => axum::Json(tollgate_protocol::CallsReply { calls }).into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// One call in full, with its audit entry when the audit log was on.
pub async fn log_entry(State(state): State<super::State>, Path(id): Path<String>) -> Response {
    let (lookup, sealer) = (id.clone(), std::sync::Arc::clone(&state.gateway.sealer));
    match state.gateway.store.run(move |c| crate::ledger::call(c, &sealer, &lookup)).await {
        Ok(Ok(Some(call))) => axum::Json(call).into_response(),
        Ok(Ok(None)) => ApiError::new(StatusCode::NOT_FOUND, Format::Openai, format!("no call {id:?} in the ledger"))
            .into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<super::State>) -> Response {
    let gw = &state.gateway;
    let body = gw.metrics.render(&gw.runtime().budgets.report(crate::utc::now_ms()));
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

#[derive(serde::Deserialize)]
pub struct NewToken {
    name: String,
}

fn token_error(e: crate::callers::CallerError) -> Response {
    use crate::callers::CallerError;
    let status = match e {
        CallerError::BadName(_) | CallerError::Reserved(_) => StatusCode::BAD_REQUEST,
        CallerError::Exists(_) => StatusCode::CONFLICT,
        CallerError::Unknown(_) => StatusCode::NOT_FOUND,
        CallerError::Db(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, Format::Openai, e.to_string()).into_response()
}

/// `POST /v1/admin/tokens {"name"}`: a new named token, shown this once.
pub async fn create_token(State(state): State<super::State>, axum::Json(req): axum::Json<NewToken>) -> Response {
    let name = req.name.clone();
    let made = state.gateway.store.call_durable(move |c| crate::callers::create(c, &name, crate::utc::now_ms())).await;
    match made {
        Ok(Ok(token)) => {
            state.callers.refresh(&state.gateway.store).await;
            axum::Json(json!({"name": req.name, "token": token})).into_response()
        }
        Ok(Err(e)) => token_error(e),
        Err(e) => internal(e),
    }
}

/// `GET /v1/admin/tokens`: the named tokens in force (never the tokens).
pub async fn list_tokens(State(state): State<super::State>) -> Response {
    match state.gateway.store.run(crate::callers::list).await {
        Ok(Ok(tokens)) => axum::Json(json!({"tokens": tokens})).into_response(),
        Ok(Err(e)) => token_error(e),
        Err(e) => internal(e),
    }
}

/// `DELETE /v1/admin/tokens/{name}`: revokes a named token at once.
pub async fn revoke_token(State(state): State<super::State>, Path(name): Path<String>) -> Response {
    let gone = state.gateway.store.call_durable(move |c| crate::callers::revoke(c, &name, crate::utc::now_ms())).await;
    match gone {
        Ok(Ok(())) => {
            state.callers.refresh(&state.gateway.store).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(e)) => token_error(e),
        Err(e) => internal(e),
    }
}

pub async fn not_found(uri: Uri, headers: HeaderMap) -> Response {
    let format = Format::of(uri.path(), &headers);
    ApiError::new(StatusCode::NOT_FOUND, format, format!("no such endpoint: {}", uri.path()))
        .with_code("unknown_url")
        .into_response()
}
