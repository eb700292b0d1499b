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
    /// The daemon answered with an error: its message (the `error.message` of the body every
    /// door writes), or the HTTP status when the body has none.
    #[error("{message}")]
    Refused { status: http::StatusCode, message: String },
    #[error("the daemon's answer could not be read: {0}")]
    Decode(String),
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

    /// The answer as `T`, or the daemon's refusal: the one reading of the daemon's errors that the
    /// CLI, the hooks, review and the language server bridge share.
    pub fn decode<T: serde::de::DeserializeOwned>(self) -> Result<T, ClientError> {
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

/// Runs `f` to completion on the command line's one runtime (made on first use, for the life of
/// the process): every command that talks to the daemon or the database shares it.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("the async runtime starts")
        })
        .block_on(f)
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
}
