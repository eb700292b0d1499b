//! The ledger's write-ahead journal: how a row becomes durable without the request waiting for the
//! database thread.
//!
//! A row is appended to a journal file beside the database, inline, with one `write(2)` under a
//! lock held for nothing else: once that returns, the row is in the kernel's page cache and
//! survives the process being killed (as a committed SQLite row does under `synchronous =
//! NORMAL`; only power loss could undo either). The row then goes to the database thread like any
//! write, and a call on that thread after its commit marks it ingested. Nobody waits for that.
//!
//! The journal is a series of segment files (`NNNNNNNN.jsonl`, one row as JSON per line, the file
//! readable by the user alone). A segment is emptied once every row appended to it is ingested and
//! it has grown past [`COMPACT_BYTES`]; the writer moves to a new one past [`SEGMENT_BYTES`], and an
//! old segment is removed once its last row is ingested. At start, before budgets are seeded or
//! anything else reads the ledger, [`Ledger::open`] ingests every segment in order (a row is an
//! upsert by request id, and the rows of one request are appended in the order they were made, so
//! ingesting a row twice changes nothing), marks the rows a killed daemon left pending as
//! interrupted, and removes the segments.
//!
//! When the journal cannot take a row (a full disk), the row is written the old way: the caller
//! gets the commit to wait for, so the guarantee holds either way.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Row, insert};
use crate::store::{Kept, Store, StoreError};

/// A segment past this size is left for a new one.
const SEGMENT_BYTES: u64 = 4 << 20;
/// A segment whose rows are all ingested is emptied once it is past this size (below it, emptying
/// would cost a metadata write per idle moment for nothing: ingesting it again at start is cheap).
const COMPACT_BYTES: u64 = 64 << 10;
/// How long a row waits for a database that cannot keep writes (a full disk). New calls are
/// refused meanwhile, so only the calls in flight when it failed wait.
const KEEP_TRYING: std::time::Duration = std::time::Duration::from_secs(3600);

/// Where the ledger's rows go: the journal first, then the database.
#[derive(Clone)]
pub struct Ledger {
    store: Store,
    journal: Arc<Journal>,
}

struct Journal {
    dir: PathBuf,
    segments: Mutex<Segments>,
}

struct Segments {
    /// The segment appended to; `None` once it could not be opened (rows then take the old way
    /// until a new segment opens).
    file: Option<File>,
    current: u64,
    bytes: u64,
    /// Rows appended to each segment and not ingested yet.
    outstanding: BTreeMap<u64, usize>,
}

/// Whether a written row is durable yet.
#[must_use = "a row the journal did not take is durable only once its commit is awaited"]
pub enum Written {
    /// In the journal: durable now.
    Journaled,
    /// The journal could not take it: durable once this resolves (or never, if it fails).
    Committing(tokio::sync::oneshot::Receiver<()>),
}

impl Written {
    /// Resolves once the row is durable (or its write has failed, which was logged).
    pub async fn durable(self) {
        if let Self::Committing(rx) = self {
            let _ = rx.await;
        }
    }
}

/// A call's pending row (its estimate), written before the provider is asked. The row that settles
/// it ([`Ledger::settle`]) makes the pending row's database insert needless when that has not run
/// yet: under load, the database thread then writes one row per call instead of two (the pending
/// row stays in the journal until the settled one is in).
pub struct Pending {
    written: Option<Written>,
    superseded: Arc<std::sync::atomic::AtomicBool>,
}

impl Pending {
    /// Resolves once the pending row is durable.
    pub async fn durable(&mut self) {
        if let Some(w) = self.written.take() {
            w.durable().await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot use the ledger journal {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot ingest the ledger journal: {0}")]
    Store(#[from] StoreError),
}

/// The journal's directory for the database at `db`.
pub fn dir_for(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".rows");
    db.with_file_name(name)
}

impl Ledger {
    /// Opens the journal beside `store`'s database, after ingesting what an earlier daemon left
    /// in it and marking the calls it left unsettled as interrupted (their number is returned).
    pub async fn open(store: Store) -> Result<(Self, usize), OpenError> {
        let dir = dir_for(store.path());
        let io = |source| OpenError::Io { path: dir.clone(), source };
        create_private_dir(&dir).map_err(io)?;
        let left = segments_in(&dir).map_err(io)?;
        let mut rows = Vec::new();
        let mut torn = 0;
        for (_, path) in &left {
            let text = std::fs::read(path).map_err(io)?;
            for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                match serde_json::from_slice::<Row>(line) {
                    Ok(row) => rows.push(row),
                    // Only a write cut short by a crash of the machine leaves half a line.
                    Err(_) => torn += 1,
                }
            }
        }
        if torn > 0 {
            tracing::warn!(lines = torn, "ledger journal lines that do not read as rows were skipped");
        }
        let ingested = rows.len();
        if !rows.is_empty() {
            // A row the database refuses is logged and left: it must not keep the daemon from
            // starting. Only a database that cannot keep writes at all stops the start.
            store
                .write_durable(move |c| {
                    for r in &rows {
                        if let Err(e) = insert(c, r) {
                            tracing::error!(error = %e, request_id = %r.request_id, "a journaled ledger row was refused");
                        }
                    }
                    Ok(())
                })
                .await?;
        }
        for (_, path) in &left {
            std::fs::remove_file(path).map_err(io)?;
        }
        if ingested > 0 {
            tracing::info!(rows = ingested, "ledger rows the last daemon journaled were ingested");
        }
        let interrupted = super::recover(&store).await;
        let current = left.last().map_or(1, |(n, _)| n + 1);
        let file = open_segment(&dir, current).map_err(io)?;
        let journal = Journal {
            dir,
            segments: Mutex::new(Segments { file: Some(file), current, bytes: 0, outstanding: BTreeMap::new() }),
        };
        Ok((Self { store, journal: Arc::new(journal) }, interrupted))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Writes a row (a new one, or the settled figures of one written before): durable against
    /// the process being killed once it returns [`Written::Journaled`], without waiting for the
    /// database. Never fails the request: a row the database cannot keep now (a full disk) is
    /// written again once it can, and stays in the journal meanwhile.
    pub fn write(&self, row: Row) -> Written {
        self.write_unless(row, None)
    }

    /// Writes a call's pending row; see [`Pending`].
    pub fn write_pending(&self, row: Row) -> Pending {
        let superseded = Arc::new(std::sync::atomic::AtomicBool::new(false));
        Pending { written: Some(self.write_unless(row, Some(Arc::clone(&superseded)))), superseded }
    }

    /// Writes the row that settles a call (its figures, or why it failed), superseding its pending
    /// row if it has one.
    pub fn settle(&self, pending: Option<Pending>, row: Row) -> Written {
        if let Some(p) = pending {
            // The settled row is queued after the pending one: when the database thread reaches
            // the pending row with this set, the settled row is on its way behind it.
            p.superseded.store(true, std::sync::atomic::Ordering::Release);
        }
        self.write(row)
    }

    fn write_unless(&self, row: Row, superseded: Option<Arc<std::sync::atomic::AtomicBool>>) -> Written {
        match self.journal.append(&row) {
            Ok(segment) => {
                self.ingest_then(row, Some(segment), None, superseded);
                Written::Journaled
            }
            Err(e) => {
                tracing::warn!(error = %e, "the ledger journal cannot take a row; it is written to the database directly");
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.ingest_then(row, None, Some(tx), None);
                Written::Committing(rx)
            }
        }
    }

    /// Queues the row's insert (skipped if `superseded` is set by the time it runs); once it is
    /// committed, its journal line is marked ingested and `kept` told. A database that cannot keep
    /// writes for now gets the row again every 500 ms.
    fn ingest_then(
        &self,
        row: Row,
        segment: Option<u64>,
        kept: Option<tokio::sync::oneshot::Sender<()>>,
        superseded: Option<Arc<std::sync::atomic::AtomicBool>>,
    ) {
        let receipt = Receipt { journal: Arc::clone(&self.journal), segment, kept };
        let store = self.store.clone();
        let runtime = tokio::runtime::Handle::try_current().ok();
        let row = Arc::new(row);
        let attempt = Arc::clone(&row);
        let queued = self.store.queue_then(
            move |c| match superseded {
                Some(s) if s.load(std::sync::atomic::Ordering::Acquire) => Ok(()),
                _ => insert(c, &attempt),
            },
            move |outcome: Kept| match outcome {
                Ok(()) => receipt.kept(),
                Err(e) => match runtime {
                    Some(rt) if store.failure().is_some() => {
                        rt.spawn(retry(store, row, receipt));
                    }
                    Some(_) => {
                        // The database refused this row itself: another try would fail alike.
                        tracing::error!(error = %e, request_id = %row.request_id, "ledger write failed");
                        receipt.refused();
                    }
                    None => {
                        // No runtime to retry on: the row stays in the journal for the next start.
                        tracing::error!(error = %e, request_id = %row.request_id, "ledger write failed");
                    }
                },
            },
        );
        if queued.is_err() {
            tracing::error!("the database thread has stopped; the ledger row stays in the journal");
        }
    }
}

/// What becomes of a row once the database has it: its journal line ingested, and whoever waits
/// for it (a row the journal could not take) told.
struct Receipt {
    journal: Arc<Journal>,
    segment: Option<u64>,
    kept: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Receipt {
    fn kept(self) {
        if let Some(s) = self.segment {
            self.journal.ingested(s);
        }
        if let Some(tx) = self.kept {
            let _ = tx.send(());
        }
    }

    /// The database will never take the row: its line is let go (the waiter learns by the drop).
    fn refused(self) {
        if let Some(s) = self.segment {
            self.journal.ingested(s);
        }
    }
}

/// Writes a row again every 500 ms while the database cannot keep writes, for [`KEEP_TRYING`].
async fn retry(store: Store, row: Arc<Row>, receipt: Receipt) {
    let deadline = std::time::Instant::now() + KEEP_TRYING;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let attempt = Arc::clone(&row);
        match store.write_durable(move |c| insert(c, &attempt)).await {
            Ok(()) => return receipt.kept(),
            Err(StoreError::Stopped) => return,
            Err(_) if store.failure().is_some() && std::time::Instant::now() < deadline => {}
            Err(e) => {
                tracing::error!(error = %e, request_id = %row.request_id, "ledger write failed");
                return;
            }
        }
    }
}

impl Journal {
    fn segments(&self) -> std::sync::MutexGuard<'_, Segments> {
        self.segments.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends the row as one line; returns its segment.
    fn append(&self, row: &Row) -> std::io::Result<u64> {
        let mut line = serde_json::to_vec(row)?;
        line.push(b'\n');
        let mut s = self.segments();
        if s.bytes >= SEGMENT_BYTES || s.file.is_none() {
            let next = s.current + 1;
            let file = open_segment(&self.dir, next)?;
            let old = std::mem::replace(&mut s.current, next);
            s.file = Some(file);
            s.bytes = 0;
            if !s.outstanding.contains_key(&old) {
                let _ = std::fs::remove_file(segment_path(&self.dir, old));
            }
        }
        let file = s.file.as_mut().expect("opened above");
        // One write(2) for the whole line: `O_APPEND` places it, whole, at the end.
        if let Err(e) = file.write_all(&line) {
            // A line cut short would be skipped at start; the segment is left for a new one.
            s.file = None;
            return Err(e);
        }
        s.bytes += line.len() as u64;
        let current = s.current;
        *s.outstanding.entry(current).or_default() += 1;
        Ok(current)
    }

    /// A row of `segment` is in the database.
    fn ingested(&self, segment: u64) {
        let mut s = self.segments();
        let Some(left) = s.outstanding.get_mut(&segment) else { return };
        *left -= 1;
        if *left > 0 {
            return;
        }
        s.outstanding.remove(&segment);
        if segment != s.current {
            let _ = std::fs::remove_file(segment_path(&self.dir, segment));
        } else if s.bytes >= COMPACT_BYTES
            && let Some(file) = &s.file
        {
            // Every row appended to it is in the database, and no append runs while the lock is
            // held: emptying it loses nothing.
            if file.set_len(0).is_ok() {
                s.bytes = 0;
            }
        }
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}.jsonl"))
}

fn open_segment(dir: &Path, n: u64) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(segment_path(dir, n))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// The segments in `dir`, in the order they were written.
fn segments_in(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_suffix(".jsonl")?.parse::<u64>().ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort_by_key(|(n, _)| *n);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Outcome;

    fn row(id: &str, outcome: Outcome, tokens: u64) -> Row {
        Row {
            request_id: id.into(),
            ts_ms: 1,
            identity: "u".into(),
            task: "api".into(),
            entry: "openai".into(),
            outcome,
            input_tokens: tokens,
            ..Default::default()
        }
    }

    fn outcomes(path: &Path) -> Vec<(String, String, i64)> {
        let c = rusqlite::Connection::open(path).unwrap();
        let mut s = c.prepare("SELECT request_id, outcome, input_tokens FROM ledger ORDER BY request_id").unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap()
    }

    /// The database thread held up by another connection's write lock: nothing it is given can
    /// commit until the lock is let go.
    fn locked(path: &Path) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        c
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_journaled_row_is_in_the_ledger_after_the_next_start_though_never_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (ledger, _) = Ledger::open(Store::open(&path).unwrap()).await.unwrap();
        let lock = locked(&path);
        // Written while nothing can commit: durable through the journal alone.
        assert!(matches!(ledger.write(row("a", Outcome::Pending, 5)), Written::Journaled));
        assert!(matches!(ledger.write(row("b", Outcome::Pending, 7)), Written::Journaled));
        assert!(matches!(ledger.write(row("a", Outcome::Ok, 9)), Written::Journaled));
        assert!(outcomes(&path).is_empty());
        let segments = segments_in(&dir_for(&path)).unwrap();
        assert_eq!(segments.len(), 1);
        let journaled = std::fs::read_to_string(&segments[0].1).unwrap();
        assert_eq!(journaled.lines().count(), 3);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&segments[0].1).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(std::fs::metadata(dir_for(&path)).unwrap().permissions().mode() & 0o777, 0o700);
        }
        // The process "dies": its database thread never commits. A copy of the database as it
        // is on disk, with the journal beside it, is what the next daemon finds.
        let next = dir.path().join("next.db");
        std::fs::copy(&path, &next).unwrap();
        let next_dir = dir_for(&next);
        std::fs::create_dir_all(&next_dir).unwrap();
        std::fs::copy(&segments[0].1, next_dir.join(segments[0].1.file_name().unwrap())).unwrap();
        // A line cut short by a crash of the machine is skipped, not fatal.
        std::fs::OpenOptions::new()
            .append(true)
            .open(next_dir.join(segments[0].1.file_name().unwrap()))
            .unwrap()
            .write_all(b"{\"request_id\":\"c\",\"ts")
            .unwrap();
        drop(lock);
        let (_, interrupted) = Ledger::open(Store::open(&next).unwrap()).await.unwrap();
        assert_eq!(interrupted, 1, "b was never settled");
        assert_eq!(
            outcomes(&next),
            vec![("a".into(), "ok".into(), 9), ("b".into(), "interrupted".into(), 7)],
            "rows ingested in the order they were made"
        );
        assert!(segments_in(&next_dir).unwrap().iter().all(|(n, p)| *n == 2 && std::fs::read(p).unwrap().is_empty()));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_settled_row_queued_behind_its_pending_row_spares_the_pending_insert() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (ledger, _) = Ledger::open(Store::open(&path).unwrap()).await.unwrap();
        // Counts the settling updates: a pending row inserted first would be updated by its
        // settled row.
        ledger
            .store()
            .write_durable(|c| {
                c.execute_batch(
                    "CREATE TABLE updates (id TEXT); \
                     CREATE TRIGGER settled AFTER UPDATE ON ledger BEGIN INSERT INTO updates VALUES (new.request_id); END;",
                )
            })
            .await
            .unwrap();
        // The database thread held up: both rows wait in its queue.
        let lock = locked(&path);
        let mut a = ledger.write_pending(row("a", Outcome::Pending, 5));
        a.durable().await;
        let _ = ledger.settle(Some(a), row("a", Outcome::Ok, 9));
        // Settled after its pending row was committed: an update, as before.
        drop(lock);
        let b = ledger.write_pending(row("b", Outcome::Pending, 5));
        ledger.store().flush().await.unwrap();
        let _ = ledger.settle(Some(b), row("b", Outcome::Ok, 7));
        ledger.store().flush().await.unwrap();
        assert_eq!(outcomes(&path), vec![("a".into(), "ok".into(), 9), ("b".into(), "ok".into(), 7)]);
        let c = rusqlite::Connection::open(&path).unwrap();
        let updated: Vec<String> = c
            .prepare("SELECT id FROM updates")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(updated, vec!["b".to_string()], "a's pending row was never inserted");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ingested_segments_are_emptied_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (ledger, _) = Ledger::open(Store::open(&path).unwrap()).await.unwrap();
        let note = "x".repeat(1000);
        // Past a segment's size, with the database held up: the writer moves on to new segments.
        let lock = locked(&path);
        for i in 0..5000 {
            let _ = ledger.write(Row { note: Some(note.clone()), ..row(&format!("r{i}"), Outcome::Ok, 1) });
        }
        let held = segments_in(&dir_for(&path)).unwrap();
        assert!(held.len() >= 2, "{held:?}");
        drop(lock);
        ledger.store().flush().await.unwrap();
        assert_eq!(outcomes(&path).len(), 5000);
        // Every row ingested: the old segments are gone, the current one emptied.
        let left = segments_in(&dir_for(&path)).unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(std::fs::metadata(&left[0].1).unwrap().len(), 0);
    }
}
