//! The local socket (crate `interprocess`: a Unix socket, a named pipe on Windows): the daemon's
//! listener, and the client that the CLI, the git hooks and `tollgate lsp` use. It carries the same
//! HTTP API as TCP, without the token: only the user can reach it.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use interprocess::local_socket::tokio::{Listener, Stream, prelude::*};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};

fn name(path: &Path) -> std::io::Result<interprocess::local_socket::Name<'_>> {
    path.to_fs_name::<GenericFilePath>()
}

/// Binds the socket, readable and writable by the user alone. A stale socket file left by a
/// daemon that died is replaced (the caller holds the single-instance lock).
pub fn bind(path: &Path) -> std::io::Result<Listener> {
    #[cfg(unix)]
    {
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        let _ = std::fs::remove_file(path);
        ListenerOptions::new().name(name(path)?).mode(0o600).create_tokio()
    }
    #[cfg(not(unix))]
    {
        ListenerOptions::new().name(name(path)?).create_tokio()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the tollgate daemon is not running (no socket at {0}); start it with `tollgate daemon`")]
    NotRunning(String),
    #[error("talking to the daemon failed: {0}")]
    Io(String),
}

/// A response from the daemon.
pub struct Reply {
    pub status: http::StatusCode,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One HTTP request to the daemon over its local socket.
pub async fn request(
    socket: &Path,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Reply, ClientError> {
    let stream = Stream::connect(name(socket).map_err(|e| ClientError::Io(e.to_string()))?)
        .await
        .map_err(|_| ClientError::NotRunning(socket.display().to_string()))?;
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
