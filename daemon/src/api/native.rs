//! tollgate's own endpoints: health, status, the model list, and administration over the socket.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, Uri};
use serde_json::{Value, json};

use super::{ApiError, Format};

pub async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Providers (with credential presence, never a value), target health, version and uptime.
pub async fn status(State(state): State<super::State>) -> Response {
    let gw = &state.gateway;
    let mut providers = Vec::new();
    for (name, p) in &gw.config.providers {
        let credentials = match gw.credentials.get(name).await {
            Some((_, origin)) => serde_json::to_value(origin).unwrap_or(Value::Null),
            None if p.is_local() => json!("not-needed"),
            None => json!("missing"),
        };
        providers.push(json!({
            "name": name, "kind": p.kind, "base_url": p.base_url, "local": p.is_local(),
            "enabled": p.enabled, "credentials": credentials,
        }));
    }
    axum::Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_s": state.started.elapsed().as_secs(),
        "port": gw.config.server.port,
        "config_file": state.config_file,
        "keychain": {"backend": gw.credentials.backend_name(), "error": gw.credentials.backend_error()},
        "providers": providers,
        "health": gw.router.health_report(),
    }))
    .into_response()
}

/// The aliases and `provider/model` names the routes make available, in OpenAI's list format, or
/// Anthropic's when the caller sends `anthropic-version`.
pub async fn models(State(state): State<super::State>, headers: HeaderMap) -> Response {
    let names = state.gateway.router.model_names();
    if headers.contains_key("anthropic-version") {
        let data: Vec<Value> = names
            .iter()
            .map(|n| json!({"type": "model", "id": n, "display_name": n, "created_at": "1970-01-01T00:00:00Z"}))
            .collect();
        return axum::Json(
            json!({"data": data, "has_more": false, "first_id": names.first(), "last_id": names.last()}),
        )
        .into_response();
    }
    let data: Vec<Value> =
        names.iter().map(|n| json!({"id": n, "object": "model", "created": 0, "owned_by": "tollgate"})).collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// Forgets cached credentials, so that a `tollgate login` takes effect at once.
pub async fn reload_credentials(State(state): State<super::State>) -> Response {
    state.gateway.credentials.forget();
    axum::Json(json!({"reloaded": true})).into_response()
}

pub async fn not_found(uri: Uri, headers: HeaderMap) -> Response {
    let format = Format::of(uri.path(), &headers);
    ApiError::new(StatusCode::NOT_FOUND, format, format!("no such endpoint: {}", uri.path())).into_response()
}
