//! The local socket (crate `interprocess`: a Unix socket, a named pipe on Windows): the daemon's
//! listener, and the command line's one async runtime. It carries the same HTTP API as TCP,
//! without the token: only the user can reach it. The client is [`DaemonClient`] (crate
//! `tollgate-protocol`), shared by the CLI, the git hooks and `tollgate lsp`.

use std::path::Path;

use interprocess::local_socket::ListenerOptions;
use interprocess::local_socket::tokio::Listener;
pub use tollgate_protocol::client::{ClientError, DaemonClient, Reply};

use crate::paths::Paths;

/// Binds the socket, readable and writable by the user alone. A stale socket file left by a
/// daemon that died is replaced (the caller holds the single-instance lock).
pub fn bind(path: &Path) -> std::io::Result<Listener> {
    let name = tollgate_protocol::client::socket_name(path)?;
    #[cfg(unix)]
    {
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        let _ = std::fs::remove_file(path);
        ListenerOptions::new().name(name).mode(0o600).create_tokio()
    }
    #[cfg(not(unix))]
    {
        ListenerOptions::new().name(name).create_tokio()
    }
}

/// The daemon of these paths.
pub fn daemon(paths: &Paths) -> DaemonClient {
    DaemonClient::new(&paths.socket)
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
