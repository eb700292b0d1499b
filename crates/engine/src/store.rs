//! The one SQLite database (rusqlite, bundled, WAL) and the dedicated thread that owns it.
//!
//! Every read and write is a job sent to that thread, so no SQLite call ever runs on an async
//! worker. The thread takes every job waiting in its queue, runs them in one transaction and
//! commits once (group commit). A durable write's future resolves only after its commit; with WAL
//! and `synchronous = NORMAL` a committed row survives the process being killed (it is in the WAL
//! file; only power loss could undo it).
//!
//! A write nobody waits for (a ledger row already in its journal, a cache entry, an audit entry)
//! lingers in the queue for up to [`LINGER`]: it does not wake a writer that is already due to
//! wake, and the writes of that window share one commit. Any job someone waits for (a read, a
//! durable write, a flush) ends the wait at once and runs after everything queued before it, so a
//! reader through the writer never misses a write queued earlier. Under load that is one commit
//! per window instead of one per row (each small commit appends its pages to the WAL); at low
//! rates the commit runs after the request it belongs to has been answered, not beside it.
//!
//! SQLite's automatic checkpoint would run on the writer and stall every commit behind it for
//! tens of milliseconds; it is off, and a second thread checkpoints from its own connection, which
//! in WAL mode runs beside the writer.
//!
//! When the last handle goes, the writer commits whatever is still queued and ends, and the
//! checkpointer (which holds no handle) ends after it; [`Store::flush`] waits for everything queued
//! so far, for a shutdown that loses nothing.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

/// Jobs taken into one transaction at most.
const MAX_BATCH: usize = 512;
/// How often the checkpointer copies the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// How long a write nobody waits for may wait for others to share its commit.
const LINGER: Duration = Duration::from_millis(20);

type Work = Box<dyn FnOnce(&Connection) + Send>;
type DurableWork = Box<dyn FnOnce(&Connection) -> rusqlite::Result<()> + Send>;
/// Whether a durable write was kept, or why not.
pub type Kept = Result<(), String>;

enum Job {
    Run(Work),
    /// Acknowledged once the transaction that ran it committed, with the failure otherwise (its
    /// own, or the commit's): an acknowledged row is a row on disk.
    Durable(DurableWork, Ack),
}

/// Who learns whether a durable write was kept.
enum Ack {
    /// A future waiting for it.
    Waiting(oneshot::Sender<Kept>),
    /// A call made on the database thread after the commit (it must be quick and never block).
    Then(Box<dyn FnOnce(Kept) + Send>),
}

impl Ack {
    fn send(self, kept: Kept) {
        match self {
            Self::Waiting(tx) => {
                let _ = tx.send(kept);
            }
            Self::Then(f) => f(kept),
        }
    }
}

/// The writer's queue: a channel that lets a write nobody waits for linger (see the module's
/// documentation). One consumer, the writer thread.
struct Queue {
    state: Mutex<Queued>,
    ready: Condvar,
    /// Told after each batch the writer has run (the checkpointer waits on it).
    ran: Condvar,
}

#[derive(Default)]
struct Queued {
    /// Each job, and whether someone waits for it.
    jobs: VecDeque<(Job, bool)>,
    /// How many of `jobs` someone waits for.
    waited: usize,
    /// When the oldest write nobody waits for must be taken.
    due: Option<Instant>,
    /// The writer waits with nothing due: the next job must wake it.
    idle: bool,
    /// Every handle is gone: the writer takes what is left and ends.
    closed: bool,
    /// The writer has ended: nothing queued now would run.
    ended: bool,
    /// Batches the writer has run, and how many of them committed.
    batches: u64,
    commits: u64,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, job: Job, waited: bool) -> Result<(), StoreError> {
        let mut q = self.lock();
        if q.ended {
            return Err(StoreError::Stopped);
        }
        q.jobs.push_back((job, waited));
        let wake = if waited {
            q.waited += 1;
            true
        } else {
            q.due.get_or_insert_with(|| Instant::now() + LINGER);
            q.idle || q.jobs.len() >= MAX_BATCH
        };
        if wake {
            q.idle = false;
            drop(q);
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Waits for the next batch (up to [`MAX_BATCH`] jobs, in order): at once when someone waits
    /// for one of them, else once the oldest is due. `false` once the queue is closed and empty.
    fn next_batch(&self, batch: &mut Vec<Job>) -> bool {
        let mut q = self.lock();
        loop {
            let now = Instant::now();
            if !q.jobs.is_empty()
                && (q.waited > 0 || q.closed || q.jobs.len() >= MAX_BATCH || q.due.is_some_and(|d| d <= now))
            {
                break;
            }
            if q.jobs.is_empty() {
                if q.closed {
                    return false;
                }
                q.idle = true;
                q = self.ready.wait(q).unwrap_or_else(PoisonError::into_inner);
                q.idle = false;
            } else {
                let due = *q.due.get_or_insert(now + LINGER);
                q = self.ready.wait_timeout(q, due - now).unwrap_or_else(PoisonError::into_inner).0;
            }
        }
        let n = q.jobs.len().min(MAX_BATCH);
        let mut waited = 0;
        batch.extend(q.jobs.drain(..n).map(|(job, w)| {
            waited += usize::from(w);
            job
        }));
        q.waited -= waited;
        if q.jobs.is_empty() {
            q.due = None;
        }
        true
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.ran.notify_one();
    }

    /// The writer has run a batch.
    fn ran(&self, committed: bool) {
        let mut q = self.lock();
        q.batches += 1;
        q.commits += u64::from(committed);
        drop(q);
        self.ran.notify_one();
    }
}

/// Marks the queue ended when the writer ends, however it ends.
struct Ended(Arc<Queue>);

impl Drop for Ended {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.ended = true;
        // Whoever waits for a job that will never run learns it now (its sender is dropped).
        let left = std::mem::take(&mut q.jobs);
        drop(q);
        drop(left);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.queue.close();
    }
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Arc<Queue>,
    /// Why the database cannot keep what it is given (a full disk, damaged pages, a read-only
    /// file), while that lasts; cleared by the next durable write that commits.
    failing: Arc<Mutex<Option<String>>>,
    path: PathBuf,
    /// A read-only connection of its own for background readers (see [`Store::read`]).
    reader: Mutex<Option<Connection>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {source}{}", recovery(path, source))]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("the database thread has stopped")]
    Stopped,
    #[error("the database did not keep the write: {0}")]
    NotKept(String),
}

/// What to do about a database that cannot be opened because it is damaged.
fn recovery(path: &Path, e: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode::*;
    if !matches!(e.sqlite_error_code(), Some(DatabaseCorrupt | NotADatabase)) {
        return String::new();
    }
    let p = path.display();
    format!(
        ". The file is damaged. Stop tollgate, keep the file aside (`mv {p} {p}.damaged`) and start \
         again: a new, empty database is made (the cache and spend so far start over; budgets count \
         from zero). To salvage the ledger rows: `sqlite3 {p}.damaged .recover | sqlite3 {p}`"
    )
}

/// Whether an error says the database as a whole cannot keep writes, rather than one statement
/// being wrong.
fn disables_writes(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(
        e.sqlite_error_code(),
        Some(
            DiskFull
                | SystemIoFailure
                | ReadOnly
                | DatabaseCorrupt
                | NotADatabase
                | CannotOpen
                | FileLockingProtocolFailed
        )
    )
}

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ledger (
    id            INTEGER PRIMARY KEY,
    request_id    TEXT NOT NULL UNIQUE,
    ts_ms         INTEGER NOT NULL,
    identity      TEXT NOT NULL,
    project       TEXT,
    task          TEXT NOT NULL,
    entry         TEXT NOT NULL,
    provider      TEXT,
    model         TEXT,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    cost_micros   INTEGER,            -- NULL: the model's price is unknown
    latency_ms    REAL NOT NULL,
    added_ms      REAL NOT NULL,
    cache_hit     INTEGER NOT NULL DEFAULT 0,
    redactions    INTEGER NOT NULL DEFAULT 0,
    outcome       TEXT NOT NULL,
    note          TEXT,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    caller        TEXT,               -- the named token (or default, local) that made the call
    experiment    TEXT,               -- the experiments the request took part in, ' + '-joined
    arm           TEXT,               -- the arm of each, in the same order
    redacted      TEXT                -- what was masked, by kind: 'kind=count,...'
);
CREATE INDEX IF NOT EXISTS ledger_ts ON ledger (ts_ms);

-- How reviews went per experiment arm: chunks reviewed, findings kept, findings dismissed (a merge
-- request discussion resolved by hand, the code unchanged).
CREATE TABLE IF NOT EXISTS review_outcomes (
    id        INTEGER PRIMARY KEY,
    ts_ms     INTEGER NOT NULL,
    arm       TEXT NOT NULL,
    chunks    INTEGER NOT NULL,
    findings  INTEGER NOT NULL,
    dismissed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS review_outcomes_ts ON review_outcomes (ts_ms);

-- The arm each user was given in each experiment (the user by a SHA-256, never the name).
CREATE TABLE IF NOT EXISTS experiment_arms (
    experiment TEXT NOT NULL,
    user_hash  BLOB NOT NULL,
    arm        TEXT NOT NULL,
    ts_ms      INTEGER NOT NULL,
    PRIMARY KEY (experiment, user_hash)
);

-- The team server's side: this daemon's id and the usage cursor (the last ledger id sent).
CREATE TABLE IF NOT EXISTS team_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS tokens (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    hash       BLOB NOT NULL,          -- SHA-256 of the token; the token itself is never kept
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS tokens_name ON tokens (name) WHERE revoked_ms IS NULL;

CREATE TABLE IF NOT EXISTS responses (
    id     TEXT PRIMARY KEY,          -- the id the Responses API caller was given
    ts_ms  INTEGER NOT NULL,
    scope  TEXT NOT NULL,             -- the user it belongs to
    turns  TEXT NOT NULL,             -- the masked turns it was given (JSON)
    answer TEXT NOT NULL              -- the masked answer (JSON)
);
CREATE INDEX IF NOT EXISTS responses_ts ON responses (ts_ms);

CREATE TABLE IF NOT EXISTS cache (
    key          BLOB PRIMARY KEY,
    scope        TEXT NOT NULL,
    provider     TEXT NOT NULL,
    model        TEXT NOT NULL,
    events       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    last_used_ms INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS cache_lru ON cache (last_used_ms);

CREATE TABLE IF NOT EXISTS audit (
    request_id TEXT PRIMARY KEY,
    ts_ms      INTEGER NOT NULL,
    request    TEXT NOT NULL,
    response   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts_ms);
"#;

/// Brings a database made by an earlier version up to [`SCHEMA`]: columns added since.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has = |table: &str, column: &str| -> rusqlite::Result<bool> {
        let mut stmt = conn.prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?;
        stmt.exists([column])
    };
    if !has("ledger", "cache_write_tokens")? {
        conn.execute_batch("ALTER TABLE ledger ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0")?;
    }
    if !has("ledger", "caller")? {
        conn.execute_batch("ALTER TABLE ledger ADD COLUMN caller TEXT")?;
    }
    for column in ["experiment", "arm", "redacted"] {
        if !has("ledger", column)? {
            conn.execute_batch(&format!("ALTER TABLE ledger ADD COLUMN {column} TEXT"))?;
        }
    }
    // The dashboard's percentiles and masked kinds read these alone, never the rows.
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS ledger_answered ON ledger (ts_ms, provider, model, experiment, arm, latency_ms) \
         WHERE outcome = 'ok' AND cache_hit = 0; \
         CREATE INDEX IF NOT EXISTS ledger_redacted ON ledger (ts_ms, redacted) WHERE redacted IS NOT NULL;",
    )?;
    let rolled_up: bool =
        conn.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'ledger_daily')", [], |r| r.get(0))?;
    if !rolled_up {
        // Once, for a database that predates the roll-up: every row so far, then the triggers.
        conn.execute_batch(&format!("BEGIN; {}; COMMIT;", crate::ledger::views::rollup_ddl()))?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating, readable by the user alone) the database and starts its thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |source| StoreError::Open { path: path.to_path_buf(), source };
        #[cfg(unix)]
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; \
             PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0;",
        )
        .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        migrate(&conn).map_err(err)?;
        let checkpointer = Connection::open(path).map_err(err)?;
        checkpointer.execute_batch("PRAGMA busy_timeout = 5000;").map_err(err)?;
        let queue = Arc::new(Queue { state: Mutex::default(), ready: Condvar::new(), ran: Condvar::new() });
        let failing = Arc::new(Mutex::new(None));
        let (state, writer) = (Arc::clone(&failing), Arc::clone(&queue));
        let watched = (Arc::clone(&queue), Arc::clone(&failing));
        std::thread::Builder::new()
            .name("tollgate-db".into())
            .spawn(move || run(conn, &writer, &state))
            .expect("spawn the database thread");
        let store =
            Self { inner: Arc::new(Inner { queue, failing, path: path.to_path_buf(), reader: Mutex::new(None) }) };
        // A weak handle: the checkpointer does not keep the writer alive.
        let probe = Arc::downgrade(&store.inner);
        std::thread::Builder::new()
            .name("tollgate-db-checkpoint".into())
            .spawn(move || checkpoints(checkpointer, probe, &watched.0, &watched.1))
            .expect("spawn the checkpoint thread");
        Ok(store)
    }

    /// Why the database cannot keep writes now, if it cannot: requests that would go unrecorded
    /// are refused meanwhile, and `/healthz` says so.
    pub fn failure(&self) -> Option<String> {
        self.inner.failing.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Runs `f` on the database thread and returns its result (reads, and writes nobody waits to
    /// see committed).
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner.queue.push(
            Job::Run(Box::new(move |c| {
                let _ = tx.send(f(c));
            })),
            true,
        )?;
        rx.await.map_err(|_| StoreError::Stopped)
    }

    /// Runs a read on a read-only connection of its own, on a blocking thread. In WAL mode it
    /// neither waits for the writer thread nor holds it up: for readers off the request path (the
    /// team's usage cursor) whose queries would otherwise delay the pending rows requests wait for.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut reader = inner.reader.lock().unwrap_or_else(PoisonError::into_inner);
            if reader.is_none() {
                let c = Connection::open_with_flags(&inner.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .and_then(|c| c.execute_batch("PRAGMA busy_timeout = 5000;").map(|()| c))
                    .map_err(|e| StoreError::NotKept(format!("cannot open a reader: {e}")))?;
                *reader = Some(c);
            }
            let c = reader.as_ref().expect("opened above");
            f(c).map_err(|e| StoreError::NotKept(format!("read: {e}")))
        })
        .await
        .map_err(|_| StoreError::Stopped)?
    }

    /// Queues a write; returns at once. It may linger before it runs (see the module's
    /// documentation).
    pub fn write(&self, f: impl FnOnce(&Connection) + Send + 'static) {
        let _ = self.inner.queue.push(Job::Run(Box::new(f)), false);
    }

    /// Resolves once everything queued before it is committed (or has failed).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.write_durable(|_| Ok(())).await
    }

    /// Runs `f` in a transaction and returns its result once that transaction is committed.
    pub async fn call_durable<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let slot = Arc::new(Mutex::new(None));
        let out = Arc::clone(&slot);
        self.write_durable(move |c| {
            *out.lock().expect("result slot") = Some(f(c));
            Ok(())
        })
        .await?;
        let value = slot.lock().expect("result slot").take();
        value.ok_or(StoreError::Stopped)
    }

    /// Queues a write and resolves once it is committed; an error when it was not (its statement
    /// failed, or the commit did).
    pub async fn write_durable(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<()> + Send + 'static,
    ) -> Result<(), StoreError> {
        self.queue_durable(f).await
    }

    /// Queues a write now, in the order of the calls; `then` is called on the database thread once
    /// it is committed, or with why it was not (not at all if the thread has stopped). For writers
    /// that must learn the outcome without a task waiting for each write; it may linger before it
    /// runs (see the module's documentation).
    pub fn queue_then(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<()> + Send + 'static,
        then: impl FnOnce(Kept) + Send + 'static,
    ) -> Result<(), StoreError> {
        self.inner.queue.push(Job::Durable(Box::new(f), Ack::Then(Box::new(then))), false)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Queues a write now, in the order of the calls; the future resolves once it is committed.
    /// For callers that wait elsewhere (a task) but must not let a later write overtake this one
    /// or a flush miss it.
    pub fn queue_durable(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<()> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let sent = self.inner.queue.push(Job::Durable(Box::new(f), Ack::Waiting(tx)), true);
        async move {
            sent?;
            rx.await.map_err(|_| StoreError::Stopped)?.map_err(StoreError::NotKept)
        }
    }
}

/// Copies the WAL into the database now and then (at most every [`CHECKPOINT_EVERY`], and only
/// after a commit: an idle daemon's checkpointer sleeps until there is one), beside the writer;
/// ends with the writer. While the database cannot keep writes it also tries one every
/// [`CHECKPOINT_EVERY`], so that the failure clears once space is back (requests are refused
/// meanwhile, so none of theirs would).
fn checkpoints(conn: Connection, store: std::sync::Weak<Inner>, queue: &Queue, failing: &Mutex<Option<String>>) {
    let failing = || failing.lock().unwrap_or_else(PoisonError::into_inner).is_some();
    let (mut seen, mut copied) = (0, 0);
    loop {
        {
            // The writer sets a failure before it counts the batch that failed: no wake-up is lost.
            let mut q = queue.lock();
            while q.batches == seen && !q.closed && !failing() {
                q = queue.ran.wait(q).unwrap_or_else(PoisonError::into_inner);
            }
            seen = q.batches;
        }
        std::thread::sleep(CHECKPOINT_EVERY);
        // Every handle is gone: the writer is ending, and so does this.
        let Some(store) = store.upgrade().map(|inner| Store { inner }) else { return };
        if store.failure().is_some() {
            let (ack, _) = oneshot::channel();
            let probe = Job::Durable(
                Box::new(|c| {
                    c.execute("INSERT OR REPLACE INTO probe (id, ts_ms) VALUES (1, ?1)", [crate::utc::now_ms()])
                        .map(|_| ())
                }),
                Ack::Waiting(ack),
            );
            if store.inner.queue.push(probe, true).is_err() {
                return;
            }
        }
        drop(store);
        let commits = queue.lock().commits;
        if commits == copied {
            continue;
        }
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            Ok(()) => copied = commits,
            Err(e) => tracing::warn!(error = %e, "database checkpoint failed"),
        }
    }
}

/// Checkpoints and truncates the WAL from a connection of its own (for tools and tests).
pub fn checkpoint_truncate(path: &Path) -> rusqlite::Result<()> {
    let c = Connection::open(path)?;
    c.execute_batch("PRAGMA busy_timeout = 5000;")?;
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}

fn run(conn: Connection, queue: &Arc<Queue>, failing: &Mutex<Option<String>>) {
    let _ended = Ended(Arc::clone(queue));
    let mut acks: Vec<(Ack, Kept)> = Vec::new();
    let mut batch = Vec::new();
    let set_failing = |why: Option<String>| *failing.lock().unwrap_or_else(PoisonError::into_inner) = why;
    while queue.next_batch(&mut batch) {
        let begun = conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| e.to_string());
        if let Err(e) = &begun {
            tracing::error!(error = %e, "database: cannot begin a transaction");
        }
        // The first error that says the database cannot keep writes at all.
        let mut disabled: Option<String> = None;
        for job in batch.drain(..) {
            // A job that panics must not take the database thread down with it.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match job {
                Job::Run(work) => work(&conn),
                Job::Durable(work, ack) => {
                    let done = work(&conn);
                    if let Err(e) = &done {
                        tracing::error!(error = %e, "database: a write failed");
                        if disables_writes(e) && disabled.is_none() {
                            disabled = Some(e.to_string());
                        }
                    }
                    acks.push((ack, done.map_err(|e| e.to_string())));
                }
            }));
            if result.is_err() {
                tracing::error!("database: a job panicked");
            }
        }
        let committed = begun.and_then(|()| conn.execute_batch("COMMIT").map_err(|e| e.to_string()));
        if let Err(e) = &committed {
            tracing::error!(error = %e, "database: commit failed");
            let _ = conn.execute_batch("ROLLBACK");
            disabled.get_or_insert_with(|| e.clone());
        }
        let wrote = acks.iter().any(|(_, done)| done.is_ok());
        match (&disabled, &committed) {
            (Some(why), _) => set_failing(Some(why.clone())),
            // A durable write that committed: the database keeps writes again.
            (None, Ok(())) if wrote => set_failing(None),
            _ => {}
        }
        queue.ran(committed.is_ok());
        for (ack, done) in acks.drain(..) {
            let kept = match (&committed, done) {
                (Err(e), _) => Err(e.clone()),
                (Ok(()), done) => done,
            };
            // A callback that panics must not take the database thread down either.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ack.send(kept))).is_err() {
                tracing::error!("database: a commit callback panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_database_is_refused_with_the_way_to_recover() {
        let dir = std::env::temp_dir().join(crate::model::new_id("tollgate-store-"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
        let Err(e) = Store::open(&path) else { panic!("a damaged file opened") };
        let text = e.to_string();
        assert!(text.contains("damaged") && text.contains(".recover"), "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn durable_writes_are_visible_to_a_new_connection_once_acknowledged() {
        let dir = std::env::temp_dir().join(crate::model::new_id("tollgate-store-"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let store = Store::open(&path).unwrap();
        store
            .write_durable(|c| {
                c.execute(
                    "INSERT INTO ledger (request_id, ts_ms, identity, task, entry, latency_ms, added_ms, outcome) \
                     VALUES ('r1', 1, 'me', 'api', 'openai', 1.0, 0.1, 'ok')",
                    [],
                )
                .map(|_| ())
            })
            .await
            .unwrap();
        let other = Connection::open(&path).unwrap();
        let n: i64 = other.query_row("SELECT count(*) FROM ledger", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
        let count = store
            .run(|c| c.query_row("SELECT count(*) FROM ledger", [], |r| r.get::<_, i64>(0)).unwrap())
            .await
            .unwrap();
        assert_eq!(count, 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o077, 0);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_flush_waits_for_what_was_queued_and_the_last_handle_closes_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open(&path).unwrap();
        for i in 0..100 {
            store.write(move |c| {
                c.execute("INSERT INTO probe (id, ts_ms) VALUES (?1, 0)", [i]).unwrap();
            });
        }
        store.flush().await.unwrap();
        let n: i64 =
            Connection::open(&path).unwrap().query_row("SELECT count(*) FROM probe", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 100);
        // With every handle gone both threads end and close their connections: SQLite then
        // checkpoints and removes the WAL file.
        drop(store);
        let wal = dir.path().join("t.db-wal");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while wal.exists() {
            assert!(std::time::Instant::now() < deadline, "the database threads outlived every handle");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Writes nobody waits for share a commit instead of taking one each; a read through the
    /// writer sees every write queued before it though their commit has not come yet; and they
    /// are committed by themselves (no other job needed), and when the last handle goes.
    #[tokio::test]
    async fn writes_nobody_waits_for_share_a_commit_and_readers_through_the_writer_see_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open(&path).unwrap();
        store.flush().await.unwrap();
        // Queues rows as the ledger does (told once committed), `gap` apart, waits for every
        // commit and returns how many commits they took.
        let commit_rows = |ids: std::ops::Range<i32>, gap: Duration| {
            let before = store.inner.queue.lock().commits;
            let (told, kept) = std::sync::mpsc::channel();
            let n = ids.len();
            for i in ids {
                let told = told.clone();
                store
                    .queue_then(
                        move |c| c.execute("INSERT INTO probe (id, ts_ms) VALUES (?1, 0)", [i]).map(|_| ()),
                        move |k| told.send(k).unwrap(),
                    )
                    .unwrap();
                std::thread::sleep(gap);
            }
            for _ in 0..n {
                let k = kept.recv_timeout(Duration::from_secs(10)).expect("a queued write was never committed");
                assert_eq!(k, Ok(()));
            }
            store.inner.queue.lock().commits - before
        };
        // Each of these used to wake the writer and could take a commit of its own.
        let shared = commit_rows(0..200, Duration::ZERO);
        assert!(shared <= 5, "200 writes took {shared} commits");
        // Writes a millisecond apart (a writer woken by each would commit each) share too.
        let shared = commit_rows(1000..1010, Duration::from_millis(1));
        assert!(shared <= 4, "10 writes a millisecond apart took {shared} commits");
        store.run(|c| c.execute("DELETE FROM probe WHERE id >= 1000", [])).await.unwrap().unwrap();
        // A reader through the writer sees writes queued before it, still lingering.
        for i in 200..300 {
            store.write(move |c| {
                c.execute("INSERT INTO probe (id, ts_ms) VALUES (?1, 0)", [i]).unwrap();
            });
        }
        let seen = store.run(|c| c.query_row("SELECT count(*) FROM probe", [], |r| r.get::<_, i64>(0))).await;
        assert_eq!(seen.unwrap().unwrap(), 300);
        // Lingering writes are committed when the last handle goes.
        for i in 300..400 {
            store.write(move |c| {
                c.execute("INSERT INTO probe (id, ts_ms) VALUES (?1, 0)", [i]).unwrap();
            });
        }
        drop(store);
        let wal = dir.path().join("t.db-wal");
        let deadline = Instant::now() + Duration::from_secs(5);
        while wal.exists() {
            assert!(Instant::now() < deadline, "the database threads outlived every handle");
            std::thread::sleep(Duration::from_millis(20));
        }
        let n: i64 =
            Connection::open(&path).unwrap().query_row("SELECT count(*) FROM probe", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 400);
    }

    /// The checkpointer sleeps until there is a commit, and then copies it into the database file.
    #[tokio::test]
    async fn a_commit_wakes_the_checkpointer_which_copies_it_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open(&path).unwrap();
        // Idle first: nothing to copy, for longer than a checkpoint period.
        tokio::time::sleep(CHECKPOINT_EVERY * 2).await;
        const MARK: &str = "copied-by-the-checkpointer-5521";
        store
            .write_durable(|c| c.execute("INSERT INTO team_state (key, value) VALUES ('k', ?1)", [MARK]).map(|_| ()))
            .await
            .unwrap();
        let in_file = || std::fs::read(&path).unwrap().windows(MARK.len()).any(|w| w == MARK.as_bytes());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !in_file() {
            assert!(Instant::now() < deadline, "the commit never reached the database file");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
