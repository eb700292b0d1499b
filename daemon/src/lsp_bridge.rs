//! `tollgate lsp`: the language server, talking to the daemon over its local socket. Every call
//! opens a fresh connection, so a restarted daemon is picked up at the next keystroke; a daemon
//! that is not running is started (at most once every few seconds).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tollgate_lsp::{
    Assistant, AssistantError, AssistantStatus, CompletionAnswer, CompletionRequest, ReviewFinding, ReviewLines,
};
use tollgate_protocol::PromptCall;

use crate::ipc::{ClientError, DaemonClient};
use crate::paths::Paths;

/// The least time between two attempts to start the daemon.
const RESTART_EVERY_MS: i64 = 2_000;

pub struct SocketAssistant {
    paths: Paths,
    daemon: DaemonClient,
    last_start: AtomicI64,
}

impl SocketAssistant {
    pub fn new(paths: Paths) -> Self {
        Self { daemon: crate::ipc::daemon(&paths), paths, last_start: AtomicI64::new(0) }
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
            if self.daemon.running().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// One call to the daemon; starts it when it is not running, then tries once more.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, AssistantError>
    where
        F: Fn(DaemonClient) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut reply = f(self.daemon.clone()).await;
        if matches!(reply, Err(ClientError::NotRunning(_))) && self.start_daemon().await {
            reply = f(self.daemon.clone()).await;
        }
        reply.map_err(|e| match e {
            ClientError::NotRunning(_) | ClientError::Io(_) => AssistantError::Unreachable(e.to_string()),
            ClientError::Refused { status, message } => match status.as_u16() {
                402 => AssistantError::Budget(message),
                401 => AssistantError::Credentials(format!("{message} (store a key with `tollgate login PROVIDER`)")),
                403 => AssistantError::Policy(message),
                _ => AssistantError::Other(message),
            },
            ClientError::Decode(_) => AssistantError::Other(e.to_string()),
        })
    }
}

impl Assistant for SocketAssistant {
    async fn complete(&self, req: CompletionRequest) -> Result<CompletionAnswer, AssistantError> {
        self.call(|d| {
            let req = req.clone();
            async move { d.complete(&req).await }
        })
        .await
    }

    async fn prompt(
        &self,
        name: &str,
        variables: BTreeMap<String, String>,
        path: Option<String>,
        repo: Option<String>,
    ) -> Result<String, AssistantError> {
        let call = PromptCall { variables, path, repo, ..Default::default() };
        let answer = self
            .call(|d| {
                let call = call.clone();
                async move { d.prompt(name, &call).await }
            })
            .await?;
        Ok(answer.text)
    }

    async fn review(&self, lines: ReviewLines) -> Result<Vec<ReviewFinding>, AssistantError> {
        let reply = self
            .call(|d| {
                let lines = lines.clone();
                async move { d.review(&lines).await }
            })
            .await?;
        Ok(reply.findings)
    }

    async fn status(&self) -> Result<AssistantStatus, AssistantError> {
        let config: serde_json::Value = self.call(|d| async move { d.get("/v1/admin/config").await }).await?;
        let budgets = self.call(|d| async move { d.budgets().await }).await?;
        // The budget with the smallest share left.
        let tightest = budgets
            .budgets
            .iter()
            .filter_map(crate::ledger::budgets::BudgetReport::money_left)
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, text)| text);
        Ok(AssistantStatus {
            reachable: true,
            route: config["completion.model"]["value"].as_str().map(str::to_string),
            budget_left: tightest,
            ..Default::default()
        })
    }
}
