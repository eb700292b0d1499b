//! The one client of the daemon's local socket (crate `interprocess`: a Unix socket, a named pipe
//! on Windows), used by the CLI, the git hooks and the language server bridge. It speaks the same
//! HTTP API as the TCP listener, without the token: only the user can reach the socket.
//!
//! Each call opens a fresh connection, so a restarted daemon is picked up by the next call.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use interprocess::local_socket::tokio::{Stream, prelude::*};
use interprocess::local_socket::{GenericFilePath, Name};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{
    BudgetsReply, Call, CallsReply, CompletionAnswer, CompletionRequest, DaemonStatus, FindingsReply, GroupBy,
    PolicyStatus, PromptAnswer, PromptCall, ReviewLines, SyncReply, UsageReport,
};

/// The socket's name from its path.
pub fn socket_name(path: &Path) -> std::io::Result<Name<'_>> {
    path.to_fs_name::<GenericFilePath>()
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the tollgate daemon is not running (no socket at {0}); start it with `tollgate daemon`")]
    NotRunning(String),
    #[error("talking to the daemon failed: {0}")]
    Io(String),
    /// The daemon answered with an error: its message (the `error.message` of the body every
    /// door writes), or the HTTP status when the body has none.
    #[error("{message}")]
    Refused { status: http::StatusCode, message: String },
    #[error("the daemon's answer could not be read: {0}")]
    Decode(String),
}

/// A response from the daemon.
#[derive(Debug)]
pub struct Reply {
    pub status: http::StatusCode,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON, `null` when it is not: for endpoints whose answer is shown as it is.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The answer as `T`, or the daemon's refusal: the one reading of the daemon's errors.
    pub fn decode<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        if !self.status.is_success() {
            let message = self.json()["error"]["message"]
                .as_str()
                .map_or_else(|| format!("the daemon answered HTTP {}", self.status), str::to_string);
            return Err(ClientError::Refused { status: self.status, message });
        }
        // An answer with no body (204) reads as `null`.
        let body: &[u8] = if self.body.is_empty() { b"null" } else { &self.body };
        serde_json::from_slice(body).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

/// The daemon behind a socket.
#[derive(Debug, Clone)]
pub struct DaemonClient {
    socket: PathBuf,
}

impl DaemonClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self { socket: socket.into() }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// One HTTP request; the answer as it came, whatever its status.
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Reply, ClientError> {
        let name = socket_name(&self.socket).map_err(|e| ClientError::Io(e.to_string()))?;
        let stream =
            Stream::connect(name).await.map_err(|_| ClientError::NotRunning(self.socket.display().to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        tokio::spawn(conn);
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| ClientError::Io(e.to_string()))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| ClientError::Io(e.to_string()))?.to_bytes();
        Ok(Reply { status, body })
    }

    /// `GET path`, read as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request(http::Method::GET, path, None).await?.decode()
    }

    /// `POST path` with `body` as JSON, read as `T`.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let body = serde_json::to_value(body).map_err(|e| ClientError::Io(e.to_string()))?;
        self.request(http::Method::POST, path, Some(body)).await?.decode()
    }

    /// Whether a daemon answers on the socket at all (a degraded one too).
    pub async fn running(&self) -> bool {
        self.request(http::Method::GET, "/healthz", None).await.is_ok()
    }

    /// Whether a daemon answers on the socket and is healthy (its database keeps writes).
    pub async fn healthy(&self) -> bool {
        self.request(http::Method::GET, "/healthz", None).await.is_ok_and(|r| r.status.is_success())
    }

    pub async fn status(&self) -> Result<DaemonStatus, ClientError> {
        self.get("/v1/status").await
    }

    pub async fn policy(&self) -> Result<PolicyStatus, ClientError> {
        self.get("/v1/policy").await
    }

    /// Checks the policy source now. A failed sync is still an answer: its reply says why.
    pub async fn sync_policy(&self) -> Result<SyncReply, ClientError> {
        let reply = self.request(http::Method::POST, "/v1/admin/policy/sync", None).await?;
        match serde_json::from_slice::<SyncReply>(&reply.body) {
            Ok(sync) => Ok(sync),
            Err(_) => reply.decode(),
        }
    }

    pub async fn budgets(&self) -> Result<BudgetsReply, ClientError> {
        self.get("/v1/budget").await
    }

    /// A one-time login link to the dashboard, good for `valid_for_s` seconds.
    pub async fn dashboard_link(&self, valid_for_s: u64) -> Result<crate::DashboardLink, ClientError> {
        self.post(&format!("/v1/dashboard/link?valid_for_s={valid_for_s}"), &serde_json::json!({})).await
    }

    /// Usage since `since` (`today`, `week`, `month`, a date, or an age such as `7d`).
    pub async fn usage(&self, since: &str, by: GroupBy) -> Result<UsageReport, ClientError> {
        let by = crate::word(by);
        self.get(&format!("/v1/usage?since={}&by={by}", query_escape(since))).await
    }

    /// The whole team's usage, through the daemon from the team server (team admins only).
    pub async fn team_usage(
        &self,
        since: &str,
        by: crate::team::TeamGroupBy,
    ) -> Result<crate::team::TeamUsage, ClientError> {
        let by = crate::word(by);
        self.get(&format!("/v1/team/usage?since={}&by={by}", query_escape(since))).await
    }

    pub async fn calls(&self, limit: u32) -> Result<CallsReply, ClientError> {
        self.get(&format!("/v1/log?limit={limit}")).await
    }

    /// One call in full; `id` may be a prefix.
    pub async fn call(&self, id: &str) -> Result<Call, ClientError> {
        self.get(&format!("/v1/log/{}", query_escape(id))).await
    }

    pub async fn complete(&self, req: &CompletionRequest) -> Result<CompletionAnswer, ClientError> {
        self.post("/v1/complete", req).await
    }

    pub async fn prompt(&self, name: &str, call: &PromptCall) -> Result<PromptAnswer, ClientError> {
        self.post(&format!("/v1/prompts/{}", query_escape(name)), call).await
    }

    pub async fn review(&self, lines: &ReviewLines) -> Result<FindingsReply, ClientError> {
        self.post("/v1/review", lines).await
    }

    /// Keeps how reviews went per experiment arm.
    pub async fn review_outcomes(&self, outcomes: &[crate::ReviewOutcome]) -> Result<serde_json::Value, ClientError> {
        self.post("/v1/review/outcomes", &outcomes).await
    }

    /// Makes the daemon forget the credentials it read, so a `tollgate login` takes effect at once.
    pub async fn reload_credentials(&self) -> Result<(), ClientError> {
        self.request(http::Method::POST, "/v1/admin/credentials/reload", None).await?.decode::<serde_json::Value>()?;
        Ok(())
    }
}

/// Percent-encodes what is not unreserved in a path segment or a query value.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply { status: http::StatusCode::from_u16(status).unwrap(), body: Bytes::from(body.to_string()) }
    }

    #[test]
    fn a_reply_reads_as_its_type_or_as_the_daemons_refusal() {
        let v: serde_json::Value = reply(200, r#"{"a": 1}"#).decode().unwrap();
        assert_eq!(v["a"], 1);
        let v: serde_json::Value = reply(204, "").decode().unwrap();
        assert!(v.is_null());
        let refused = |status, body| match reply(status, body).decode::<serde_json::Value>() {
            Err(ClientError::Refused { status, message }) => (status.as_u16(), message),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            refused(402, r#"{"error": {"message": "budget daily reached"}}"#),
            (402, "budget daily reached".into())
        );
        assert_eq!(refused(502, "<html>bad gateway</html>").1, "the daemon answered HTTP 502 Bad Gateway");
        assert!(matches!(reply(200, "{").decode::<serde_json::Value>(), Err(ClientError::Decode(_))));
    }

    #[test]
    fn names_and_times_in_a_path_are_escaped() {
        assert_eq!(query_escape("2026-11-30T10:00:00Z"), "2026-11-30T10:00:00Z");
        assert_eq!(query_escape("7d"), "7d");
        assert_eq!(query_escape("a b/c?d&e"), "a%20b%2Fc%3Fd%26e");
    }
}
