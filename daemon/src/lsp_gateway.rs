//! `tollgate lsp`: the language server, talking to the daemon over its local socket. Every call
//! opens a fresh connection, so a restarted daemon is picked up at the next keystroke; a daemon
//! that is not running is started (at most once every few seconds).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_lsp::{CompletionAnswer, CompletionRequest, Gateway, GatewayError, GatewayStatus, ReviewFinding};

use crate::ipc::{self, ClientError};
use crate::paths::Paths;

/// The least time between two attempts to start the daemon.
const RESTART_EVERY_MS: i64 = 2_000;

pub struct SocketGateway {
    paths: Paths,
    last_start: AtomicI64,
}

impl SocketGateway {
    pub fn new(paths: Paths) -> Self {
        Self { paths, last_start: AtomicI64::new(0) }
    }

    /// Starts `tollgate daemon` in its own process group, its log in the data dir, and waits for
    /// its socket.
    async fn start_daemon(&self) -> bool {
        let now = crate::utc::now_ms();
        let last = self.last_start.load(Ordering::Relaxed);
        if now - last < RESTART_EVERY_MS
            || self.last_start.compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst).is_err()
        {
            // Another call started it a moment ago: wait for that one rather than fail.
            return self.wait_for_socket().await;
        }
        let Ok(exe) = std::env::current_exe() else { return false };
        let log = crate::paths::create_private_dir(&self.paths.data_dir).and_then(|()| {
            std::fs::OpenOptions::new().create(true).append(true).open(self.paths.data_dir.join("daemon.log"))
        });
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("daemon").stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
        if let Ok(log) = log {
            cmd.stderr(log);
        }
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        if cmd.spawn().is_err() {
            return false;
        }
        self.wait_for_socket().await
    }

    /// Whether the daemon answers within five seconds.
    async fn wait_for_socket(&self) -> bool {
        for _ in 0..50 {
            if ipc::request(&self.paths.socket, http::Method::GET, "/healthz", None).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// One call to the daemon; starts it when it is not running, then tries once more.
    async fn call(&self, method: http::Method, path: &str, body: Option<Value>) -> Result<Value, GatewayError> {
        let mut reply = ipc::request(&self.paths.socket, method.clone(), path, body.clone()).await;
        if matches!(reply, Err(ClientError::NotRunning(_))) && self.start_daemon().await {
            reply = ipc::request(&self.paths.socket, method, path, body).await;
        }
        let reply = reply.map_err(|e| GatewayError::Unreachable(e.to_string()))?;
        reply.decode().map_err(|e| match e {
            ClientError::Refused { status, message } => match status.as_u16() {
                402 => GatewayError::Budget(message),
                401 => GatewayError::Credentials(format!("{message} (store a key with `tollgate login PROVIDER`)")),
                403 => GatewayError::Policy(message),
                _ => GatewayError::Other(message),
            },
            e => GatewayError::Other(e.to_string()),
        })
    }
}

/// A reply of the daemon's, as the type it is written from.
fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, GatewayError> {
    serde_json::from_value(v).map_err(|e| GatewayError::Other(format!("the daemon's answer: {e}")))
}

impl Gateway for SocketGateway {
    async fn complete(&self, req: CompletionRequest) -> Result<CompletionAnswer, GatewayError> {
        let body = serde_json::to_value(&req).map_err(|e| GatewayError::Other(e.to_string()))?;
        let v = self.call(http::Method::POST, "/v1/complete", Some(body)).await?;
        serde_json::from_value(v).map_err(|e| GatewayError::Other(format!("the daemon's answer: {e}")))
    }

    async fn prompt(
        &self,
        name: &str,
        variables: BTreeMap<String, String>,
        path: Option<String>,
        repo: Option<String>,
    ) -> Result<String, GatewayError> {
        let body = json!({ "variables": variables, "path": path, "repo": repo });
        let answer: crate::tasks::PromptAnswer =
            decode(self.call(http::Method::POST, &format!("/v1/prompts/{name}"), Some(body)).await?)?;
        Ok(answer.text)
    }

    async fn review(
        &self,
        path: &str,
        _language: &str,
        text: &str,
        first: usize,
        last: usize,
        repo: Option<String>,
    ) -> Result<Vec<ReviewFinding>, GatewayError> {
        let body = json!({ "path": path, "text": text, "first": first, "last": last, "repo": repo });
        let v = self.call(http::Method::POST, "/v1/review", Some(body)).await?;
        let reply: crate::review::FindingsReply = decode(v)?;
        Ok(reply
            .findings
            .into_iter()
            .map(|f| ReviewFinding {
                line: f.line,
                severity: crate::review::severity_word(f.severity).to_string(),
                category: f.category,
                message: f.message,
                suggestion: f.suggestion,
            })
            .collect())
    }

    async fn status(&self) -> Result<GatewayStatus, GatewayError> {
        let config = self.call(http::Method::GET, "/v1/admin/config", None).await?;
        let budgets: crate::ledger::budgets::BudgetsReply =
            decode(self.call(http::Method::GET, "/v1/budget", None).await?)?;
        // The budget with the smallest share left.
        let tightest = budgets
            .budgets
            .iter()
            .filter_map(crate::ledger::budgets::BudgetReport::money_left)
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, text)| text);
        Ok(GatewayStatus {
            reachable: true,
            route: config["completion.model"]["value"].as_str().map(str::to_string),
            budget_left: tightest,
            ..Default::default()
        })
    }
}
