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
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
                builder.worker_threads(workers(std::thread::available_parallelism().map_or(1, usize::from)));
            }
            builder.enable_all().build().expect("the async runtime starts")
        })
        .block_on(f)
}

/// Async workers for `cores` cores: half of them, at least one and at most four
/// (`TOKIO_WORKER_THREADS` overrides). tollgate shares the machine with the editor, the agents,
/// compilers and perhaps a local model, and its requests are mostly waiting: a worker per core only
/// adds wake-ups, each request bouncing between threads that must be woken (on two cores, one
/// worker answered sooner than two at every rate from 50 to 5,000 requests/s). Heavy steps leave
/// the workers anyway: redaction of large prompts and runtime builds run on the blocking pool,
/// SQLite on its thread.
fn workers(cores: usize) -> usize {
    (cores / 2).clamp(1, 4)
}

#[cfg(test)]
mod tests {
    #[test]
    fn half_the_cores_work_at_least_one_at_most_four() {
        assert_eq!([1, 2, 3, 4, 8, 16, 64].map(super::workers), [1, 1, 1, 2, 4, 4, 4]);
    }
}
