//! `tollgate daemon`: one per user. Takes the single-instance lock, opens the keychain, binds the
//! local socket and TCP on loopback, serves both with one router, and shuts down in one place.

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, Write};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use interprocess::local_socket::traits::tokio::Listener as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tower::ServiceExt;

use crate::api::{self, AppState, Listener};
use crate::config::Loaded;
use crate::keychain::{Credentials, Keychain};
use crate::paths::{self, Paths};
use crate::pipeline::Gateway;
use crate::reload::{Initial, Reloader};
use crate::store::Store;
use crate::{cache, ledger, utc};

/// How long in-flight requests get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Holds the single-instance lock for as long as it lives.
pub struct InstanceLock(#[allow(dead_code)] File);

/// Takes the per-user daemon lock, or says which daemon holds it.
pub fn lock(paths: &Paths) -> anyhow::Result<InstanceLock> {
    paths.ensure_dirs().with_context(|| format!("cannot create {}", paths.data_dir.display()))?;
    let path = paths.lock_file();
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0)?;
            file.rewind()?;
            write!(file, "{}", std::process::id())?;
            file.flush()?;
            Ok(InstanceLock(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            anyhow::bail!(
                "another tollgate daemon is already running for this user (pid {}, socket {}). \
                 Stop it first, or set TOLLGATE_HOME to run an isolated one.",
                pid.trim(),
                paths.socket.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// Where the daemon's config came from, so that it can be read again on a change.
pub struct ConfigOrigin {
    /// The config file (watched even when it does not exist yet).
    pub file: std::path::PathBuf,
    /// It was named explicitly: it must exist.
    pub required: bool,
    pub overrides: crate::config::Overrides,
}

/// The gateway on `runtime` over this user's keychain and database, with the calls a killed
/// process left pending marked interrupted. The caller holds the instance lock.
pub async fn open_gateway(runtime: crate::runtime::Runtime, paths: &Paths) -> anyhow::Result<Gateway> {
    Ok(Storage::open(runtime.config.keychain.backend, paths).await?.gateway(runtime).await)
}

/// What a gateway keeps and reads from this user's machine: credentials, the sealing key, the
/// ledger over the database. Opened apart from the runtime, so that a start does both at once.
pub struct Storage {
    credentials: Arc<Credentials>,
    ledger: ledger::Ledger,
    sealer: Arc<crate::seal::Sealer>,
}

impl Storage {
    pub async fn open(backend: crate::keychain::KeychainBackend, paths: &Paths) -> anyhow::Result<Self> {
        let keychain = tokio::task::spawn_blocking(move || Keychain::open(backend)).await?;
        if let Err(e) = &keychain {
            tracing::warn!(error = %e, "keychain unavailable; provider keys come from environment variables only");
        }
        let (keychain, key) = tokio::task::spawn_blocking({
            let data_dir = paths.data_dir.clone();
            move || {
                let key = crate::seal::load_or_create(keychain.as_ref().ok(), &data_dir);
                (keychain, key)
            }
        })
        .await?;
        let key = key.context("cannot load the key that seals cached answers and the audit log")?;
        let credentials = Arc::new(Credentials::new(keychain));
        let store = Store::open(&paths.database()).context("cannot open the database")?;
        let (ledger, interrupted) = ledger::Ledger::open(store).await?;
        if interrupted > 0 {
            tracing::warn!(
                rows = interrupted,
                "the last daemon stopped before settling some calls; marked interrupted"
            );
        }
        let sealer = Arc::new(key.sealer);
        let (database, check, created) = (paths.database(), Arc::clone(&sealer), key.created);
        let done = tokio::task::spawn_blocking(move || crate::seal::seal_database(&database, &check, created))
            .await?
            .context("cannot seal what an earlier version kept in plain text")?;
        if done.sealed > 0 {
            tracing::info!(
                values = done.sealed,
                "sealed cached answers, audit entries and stored responses kept in plain text"
            );
        }
        if done.dropped > 0 {
            tracing::warn!(
                rows = done.dropped,
                "a new storage key was made: cached answers, audit text and stored responses sealed with the old one were removed (the ledger is kept)"
            );
        }
        tracing::debug!(home = ?key.home, "storage key");
        Ok(Self { credentials, ledger, sealer })
    }

    pub async fn gateway(self, runtime: crate::runtime::Runtime) -> Gateway {
        Gateway::new(runtime, self.credentials, self.ledger, self.sealer).await
    }
}

pub async fn run(loaded: Loaded, paths: Paths, origin: ConfigOrigin) -> anyhow::Result<()> {
    let started = Instant::now();
    // The system's root certificates are read on a thread of their own while the rest starts:
    // the HTTP clients built below take them from there.
    std::thread::spawn(crate::providers::tls_config);
    let _lock = lock(&paths)?;
    let token = paths::load_or_create_token(&paths).context("cannot create the API token file")?;
    // The runtime (config, policy, compiled rules) is built on one core while the keychain and the
    // database open on the other.
    let backend = loaded.config.keychain.backend;
    let initial = tokio::task::spawn_blocking({
        let paths = paths.clone();
        move || Initial::load(loaded, &paths)
    });
    let storage = Storage::open(backend, &paths).await;
    let Initial { runtime, seed } = initial.await??;
    let config = Arc::clone(&runtime.config);
    let gateway = Arc::new(storage?.gateway(runtime).await);
    let store = gateway.store.clone();
    let reloader =
        Reloader::new(Arc::clone(&gateway), seed, paths.clone(), Some(origin.file), origin.required, origin.overrides)?;
    reloader.start();
    tokio::spawn(housekeeping(store.clone(), Arc::clone(&gateway)));
    // Leases on shared budgets and usage for the team server, while the config or policy names one.
    tokio::spawn(crate::team::run(Arc::clone(&gateway)));
    let callers = Arc::new(crate::callers::Callers::default());
    callers.refresh(&store).await;

    let addr = std::net::SocketAddr::new(config.server.host, config.server.port);
    let tcp = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr}: is another program using port {}? Choose another with --port or server.port",
            config.server.port
        )
    })?;
    let local_addr = tcp.local_addr()?;
    let dashboard = api::dashboard::Sessions::new(local_addr);
    let projects = Default::default();
    let state = Arc::new(AppState { gateway, reloader, token, callers, started, projects, dashboard });
    let app = api::router(state);
    let local = crate::ipc::bind(&paths.socket)
        .with_context(|| format!("cannot create the socket {}", paths.socket.display()))?;
    paths::write_private_file(&paths.port_file(), local_addr.port().to_string().as_bytes())?;
    tracing::info!(tcp = %local_addr, socket = %paths.socket.display(), "tollgate daemon listening");
    eprintln!("tollgate {} listening on http://{local_addr} and {}", env!("CARGO_PKG_VERSION"), paths.socket.display());

    let graceful = Arc::new(GracefulShutdown::new());
    let stall = Duration::from_millis(config.limits.client_stall_timeout_ms);
    // Each listener accepts on its own, with a cap on its connections: a flood of TCP connections
    // waits in the kernel's backlog instead of taking every descriptor, and the socket (the CLI,
    // hooks) keeps working beside it.
    let tcp_loop = {
        let (app, graceful) = (app.clone(), Arc::clone(&graceful));
        let slots = Arc::new(tokio::sync::Semaphore::new(tcp_connection_cap()));
        tokio::spawn(async move {
            let mut errors = AcceptErrors::new("TCP");
            loop {
                let permit = Arc::clone(&slots).acquire_owned().await.expect("the semaphore is never closed");
                match tcp.accept().await {
                    Ok((stream, _)) => {
                        errors.succeeded();
                        let _ = stream.set_nodelay(true);
                        serve(stream, app.clone(), Listener::Tcp, &graceful, permit, stall);
                    }
                    Err(e) => errors.failed(&e).await,
                }
            }
        })
    };
    let local_loop = {
        let (app, graceful) = (app.clone(), Arc::clone(&graceful));
        let slots = Arc::new(tokio::sync::Semaphore::new(LOCAL_CONNECTIONS));
        tokio::spawn(async move {
            let mut errors = AcceptErrors::new("socket");
            loop {
                let permit = Arc::clone(&slots).acquire_owned().await.expect("the semaphore is never closed");
                match local.accept().await {
                    Ok(stream) => {
                        errors.succeeded();
                        serve(stream, app.clone(), Listener::Local, &graceful, permit, stall);
                    }
                    Err(e) => errors.failed(&e).await,
                }
            }
        })
    };
    shutdown_signal().await;

    tracing::info!("shutting down");
    // The accept loops own the listeners: ending them stops new connections.
    for task in [tcp_loop, local_loop] {
        task.abort();
        let _ = task.await;
    }
    let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| unreachable!("the accept loops have ended"));
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping anyway");
    }
    // Settled ledger rows, cache entries and audit entries still queued are committed first.
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "the database did not keep everything at shutdown");
    }
    let _ = std::fs::remove_file(paths.port_file());
    let _ = std::fs::remove_file(&paths.socket);
    Ok(())
}

/// Connections served at once on the local socket (the CLI, hooks, editors' bridges).
const LOCAL_CONNECTIONS: usize = 64;

/// TCP connections served at once: half the descriptors the process may open, so that a flood
/// leaves room for the socket, the database, provider calls and the log.
fn tcp_connection_cap() -> usize {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            return usize::try_from(limit.rlim_cur / 2).unwrap_or(4096).clamp(16, 4096);
        }
    }
    1024
}

/// Accept failures (out of descriptors, mostly): backed off, and logged at most once every ten
/// seconds with how many there were, rather than tens of megabytes of the same line a second.
struct AcceptErrors {
    listener: &'static str,
    last_logged: Option<Instant>,
    unlogged: u64,
    backoff: Duration,
}

impl AcceptErrors {
    const FIRST_BACKOFF: Duration = Duration::from_millis(10);

    fn new(listener: &'static str) -> Self {
        Self { listener, last_logged: None, unlogged: 0, backoff: Self::FIRST_BACKOFF }
    }

    async fn failed(&mut self, e: &std::io::Error) {
        self.unlogged += 1;
        if self.last_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(error = %e, times = self.unlogged, "{} accept failed; backing off", self.listener);
            self.last_logged = Some(Instant::now());
            self.unlogged = 0;
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
    }

    fn succeeded(&mut self) {
        self.backoff = Self::FIRST_BACKOFF;
    }
}

/// A connection whose writes fail once they have waited `limit` for the peer to take bytes: a
/// caller that stops reading an answer would otherwise hold its connection, its request slot and
/// the provider's stream for ever (hyper has no write time-out). Reads are left alone: the header
/// and body time-outs bound them.
struct StalledWrites<IO> {
    io: IO,
    limit: Option<Duration>,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> StalledWrites<IO> {
    fn new(io: IO, limit: Duration) -> Self {
        Self { io, limit: (!limit.is_zero()).then_some(limit), stalled: None }
    }

    /// `Pending` from a write: fails it once the wait has lasted the limit. Anything else ends
    /// the wait.
    fn watch<T>(&mut self, cx: &mut std::task::Context<'_>, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let Some(limit) = self.limit else { return r };
        let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the caller took no bytes of the answer for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for StalledWrites<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for StalledWrites<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

/// Serves one connection; every request on it is marked with the listener it came in on. The
/// listener's slot is held until the connection ends; a caller that leaves the answer unread for
/// `stall` loses the connection.
fn serve<IO>(
    io: IO,
    app: axum::Router,
    listener: Listener,
    graceful: &GracefulShutdown,
    slot: tokio::sync::OwnedSemaphorePermit,
    stall: Duration,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = StalledWrites::new(io, stall);
    let service = app.map_request(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(listener);
        req
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
        drop(slot);
    });
}

/// Hourly: expired cache entries and audit entries past their retention go.
async fn housekeeping(store: Store, gateway: Arc<Gateway>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let retention = i64::from(gateway.runtime().config.audit.retention_days) * utc::DAY_MS;
        let keep_days = gateway.runtime().config.responses.keep_days;
        store.write(move |c| {
            let now = utc::now_ms();
            let _ = cache::prune(c, now);
            let _ = ledger::prune_audit(c, now - retention);
            let _ = crate::stored::prune(c, now, keep_days);
        });
        // After the prune (the database thread runs jobs in order): the index drops what went.
        gateway.cache_index.resync(&store).await;
    }
}

pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
