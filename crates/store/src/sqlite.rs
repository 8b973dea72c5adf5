//! The embedded backend: one SQLite file in WAL mode, driven by rusqlite in the calling
//! task.
//!
//! Statements run inline, on the async task that asks for them, not on a thread of
//! their own: a primary-key read from SQLite's page cache takes a few microseconds,
//! while handing it to a worker thread and back (what an async SQLite driver does)
//! costs two context switches each way, ten times the statement. Nothing here waits
//! long while holding a runtime thread: readers never wait in WAL mode, the one writer
//! is behind an async mutex (writers queue without blocking a thread), commits do not
//! fsync (`synchronous = NORMAL`), and checkpoints, the only step that does, run on a
//! thread of their own (the one that starts the WAL over holds the writer meanwhile:
//! see [`checkpoint_loop`]). The exception is another process (an admin command)
//! holding the write lock: the writer then waits for it in SQLite's busy handler.
//!
//! Write transactions that queue for the writer at once share one COMMIT (group
//! commit, [`writer`]); each caller is answered only after the COMMIT of its batch.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};

use crate::db::{Backend, Cols, Exec, Map, Value};
use crate::migrations::{self, Migration};
use crate::{Result, StoreError};

mod writer;
use writer::{Writer, WriterGuard};

/// Readers open at most (more callers wait for one to be free). Statements run inline
/// on the runtime's threads, so more than a few are never busy at once.
const READERS: usize = 8;
/// How long a writer waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the WAL is checkpointed while there are writes.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// Frames the WAL may hold before the checkpoint thread starts it over (about 64 MB).
/// Each restart stops writes for a few milliseconds (two fsyncs), so a larger WAL
/// means fewer stops: under a steady load of code flows, one a second or so.
const WAL_RESTART_FRAMES: i64 = 16384;
/// Rounds of (sync the database file, PASSIVE checkpoint) before a RESTART at most,
/// each copying what was committed during the one before, until at most
/// [`CATCH_UP_ENOUGH`] frames are left for it.
const CATCH_UP_ROUNDS: usize = 4;
const CATCH_UP_ENOUGH: i64 = 128;
/// How long a RESTART checkpoint waits for readers, holding the writer meanwhile.
const RESTART_WAIT: Duration = Duration::from_millis(10);
/// The most checkpoint rounds skipped before a RESTART is tried again after one found
/// another process's reader in the way (32 rounds: about 6 s).
const RESTART_BACKOFF_MAX: u32 = 32;
/// Prepared statements kept per connection: more than the store has.
const STATEMENT_CACHE: usize = 96;

pub struct Sqlite {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    reader_permits: tokio::sync::Semaphore,
    /// The one connection that writes, with group commit ([`writer`]). SQLite has
    /// one writer at a time; with several writing connections the losers sleep in
    /// SQLite's busy handler (1, 2, 5, 10 … ms), while here they queue on a mutex and
    /// go on the moment it is free.
    writer: Arc<Writer>,
    checkpointer: Option<Checkpointer>,
}

/// The checkpoint thread; it ends when `stop` is dropped.
struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        // Once the fields are dropped after this, every connection is closed, so the file
        // is complete (checkpointed by the last close) for whoever opens or copies it.
        if let Some(c) = self.checkpointer.take() {
            drop(c.stop);
            let _ = c.thread.join();
        }
    }
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqlite").field("path", &self.path).finish()
    }
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Plans that never depend on bound values. Without this SQLite marks some
    // parameters as "reprepare when rebound" (an equality the chosen index does not
    // use, say), and rusqlite clears the bindings of every statement it puts back
    // in its cache, so those statements were compiled afresh on every use: the
    // grants lookup of /authorize cost a sixth of a code flow that way.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    // No mmap_size: the file grows a page at a time under load, and every reader
    // then unmaps and maps it again (measured: a tenth of a code flow's CPU in
    // munmap and page faults, more than the pread it saves).
    conn.execute_batch("PRAGMA foreign_keys = ON")?;
    Ok(conn)
}

impl Sqlite {
    /// Opens (creating if needed) the database file and applies migrations.
    pub(crate) async fn open(path: &Path) -> Result<Sqlite> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Sqlite::open_blocking(path))
            .await
            .map_err(|e| StoreError::Database(Box::new(e)))?
    }

    fn open_blocking(path: PathBuf) -> Result<Sqlite> {
        let writer = open_connection(&path)?;
        let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(
                format!(
                    "{} cannot be put in WAL mode (it is in {mode})",
                    path.display()
                )
                .into(),
            ));
        }
        // NORMAL in WAL mode survives a process crash (kill -9); only an OS crash can lose
        // the last commits. Checkpoints are the checkpoint thread's, not the writer's.
        writer.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0")?;
        migrate(&writer, migrations::MIGRATIONS)?;
        let conn = open_connection(&path)?;
        // A RESTART holds this process's writer while it waits for readers. Ours
        // finish in microseconds; one of another process (a shell left in BEGIN, a
        // backup) may never, so wait only briefly and back off (checkpoint_loop).
        conn.busy_timeout(RESTART_WAIT)?;
        // Its own handle on the database file, to sync it outside the writer's hold
        // (checkpoint_round); fsync flushes the file whichever handle wrote it.
        let file = std::fs::File::open(&path).map_err(|e| StoreError::Database(Box::new(e)))?;
        let (stop, stopped) = std::sync::mpsc::channel();
        let writer = Arc::new(Writer::new(writer));
        let held = writer.clone();
        let thread = std::thread::Builder::new()
            .name("latchkey-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&conn, &file, &held, &stopped))
            .map_err(|e| StoreError::Database(Box::new(e)))?;
        Ok(Sqlite {
            path,
            readers: Mutex::new(Vec::new()),
            reader_permits: tokio::sync::Semaphore::new(READERS),
            writer,
            checkpointer: Some(Checkpointer { stop, thread }),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Copies committed pages from the WAL into the database file, so that the fsyncs a
/// checkpoint needs happen here, not in a request. Every round checkpoints, whoever
/// wrote (an admin command is another process); with nothing new in the WAL that is
/// a look at its header.
///
/// PASSIVE never waits for, nor blocks, readers or the writer; but alone it lets the
/// WAL grow without end under steady writes (measured: 300 MB in seconds of code
/// flows), since SQLite starts the WAL over only when a write transaction begins with
/// every frame copied back, and under load there is always a newer frame. So once the
/// WAL holds more than [`WAL_RESTART_FRAMES`], the thread takes the writer (no write
/// of this process can come in between), copies the few frames left and waits for
/// readers to leave the WAL (RESTART): the next commit writes from the WAL's start.
/// Writes stand still meanwhile, so everything that can be done before is: PASSIVE
/// rounds that catch up with the WAL's end, and the database file's fsync.
fn checkpoint_loop(
    conn: &Connection,
    file: &std::fs::File,
    writer: &Writer,
    stopped: &std::sync::mpsc::Receiver<()>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut backoff = RestartBackoff::default();
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(e) = checkpoint_round(conn, file, writer, &mut backoff) {
            tracing::warn!(error = %e, "SQLite checkpoint failed");
        }
    }
}

fn checkpoint_round(
    conn: &Connection,
    file: &std::fs::File,
    writer: &Writer,
    backoff: &mut RestartBackoff,
) -> rusqlite::Result<()> {
    // A batch whose last members were cancelled mid hand-over, with no write since
    // to commit it, is committed here: it holds SQLite's write lock.
    writer.commit_if_idle();
    let (_, frames) = wal_checkpoint(conn, "PASSIVE")?;
    if frames <= WAL_RESTART_FRAMES || backoff.skip_round() {
        return Ok(());
    }
    // With the writer held, a RESTART fsyncs the WAL's newest frames, copies them and
    // fsyncs the database file; and SQLite syncs that file only when a checkpoint
    // reaches the WAL's end, which a PASSIVE one under load never does, so everything
    // copied since the last RESTART would wait for it too (measured: a 14 ms hold every
    // 200 ms on a small store, 50 to 140 ms on one of a million grants). So first the
    // file is synced and the WAL caught up with, in rounds, each copying what came in
    // during the one before, until the RESTART is left little of either (measured:
    // holds of 5 ms on a small store; 15 to 30 ms on the large one, where every frame
    // is a page at a random place in the file and syncing a round takes as long as
    // the round before).
    let caught_up = std::time::Instant::now();
    let mut rounds = 0;
    // Frames committed since the last PASSIVE began: what the next must copy. (The
    // WAL only grows until the RESTART, so that is the growth of its frame count.)
    let (mut seen, mut left) = (frames, frames);
    while rounds < CATCH_UP_ROUNDS && left > CATCH_UP_ENOUGH {
        sync_file(file);
        let (_, in_wal) = wal_checkpoint(conn, "PASSIVE")?;
        (seen, left) = (in_wal, in_wal - seen);
        rounds += 1;
    }
    sync_file(file);
    let caught_up = caught_up.elapsed();
    let asked = std::time::Instant::now();
    let (busy, held_for) = {
        let mut held = writer.lock_blocking();
        let got = std::time::Instant::now();
        // A batch open on the writer holds the write lock a RESTART waits for.
        held.commit_batch();
        let (busy, _) = wal_checkpoint(conn, "RESTART")?;
        (busy, got.elapsed())
    };
    // How long writes stood still for it (LATCHKEY_LOG=latchkey_store::sqlite::checkpoint=debug).
    tracing::debug!(
        target: "latchkey_store::sqlite::checkpoint",
        frames,
        busy,
        rounds,
        left,
        catch_up_us = u64::try_from(caught_up.as_micros()).unwrap_or(u64::MAX),
        held_us = u64::try_from(held_for.as_micros()).unwrap_or(u64::MAX),
        waited_us = u64::try_from((asked.elapsed() - held_for).as_micros()).unwrap_or(u64::MAX),
        "WAL restarted"
    );
    backoff.restarted(busy == 0, frames);
    Ok(())
}

/// fsync of the database file through the checkpoint thread's own handle (it flushes
/// the file whichever handle wrote it). A failure is only logged: the RESTART syncs
/// the file again, and reports its own failure.
fn sync_file(file: &std::fs::File) {
    if let Err(e) = file.sync_data() {
        tracing::warn!(error = %e, "syncing the SQLite file before a WAL restart failed");
    }
}

/// `PRAGMA wal_checkpoint`: (busy, frames in the WAL); busy is 1 when it stopped short.
fn wal_checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
}

/// After a RESTART that another process's reader kept from finishing, the next ones
/// wait for 1, 2, 4 … rounds: each holds this process's writer for up to
/// [`RESTART_WAIT`], and that reader may stay for good.
#[derive(Default)]
struct RestartBackoff {
    rounds: u32,
    skip: u32,
}

impl RestartBackoff {
    fn skip_round(&mut self) -> bool {
        let skip = self.skip > 0;
        self.skip = self.skip.saturating_sub(1);
        skip
    }

    fn restarted(&mut self, finished: bool, frames: i64) {
        if finished {
            self.rounds = 0;
            return;
        }
        if self.rounds == 0 {
            tracing::warn!(
                frames,
                "another connection to the SQLite file keeps a read open; the WAL cannot start over until it ends"
            );
        }
        self.rounds = (self.rounds * 2).clamp(1, RESTART_BACKOFF_MAX);
        self.skip = self.rounds;
    }
}

/// Applies the migrations not yet applied, in one transaction. `BEGIN IMMEDIATE` takes
/// the write lock up front, so two processes starting on one file migrate one after the
/// other.
fn migrate(conn: &Connection, list: &[Migration]) -> Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| -> Result<()> {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")?;
        let current: i64 = conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )?;
        migrations::check_not_newer(current)?;
        for m in list.iter().filter(|m| m.version > current) {
            conn.execute_batch(m.sql)?;
            if !m.sqlite.is_empty() {
                conn.execute_batch(m.sqlite)?;
            }
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?1, strftime('%s','now'))",
                [m.version],
            )?;
        }
        Ok(())
    })();
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    conn.execute_batch(end)?;
    result
}

/// Binds `$n` to `args[n - 1]`. SQLite numbers `$n` parameters in order of first
/// appearance, not by `n`, so each is looked up by its name.
fn bind(stmt: &mut rusqlite::Statement<'_>, sql: &str, args: &[Value<'_>]) -> Result<()> {
    for i in 1..=stmt.parameter_count() {
        let n = stmt
            .parameter_name(i)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=args.len()).contains(n))
            .ok_or_else(|| {
                StoreError::Database(format!("statement parameter {i} is not bound: {sql}").into())
            })?;
        match args[n - 1] {
            Value::Int(v) => stmt.raw_bind_parameter(i, v)?,
            Value::Text(v) => stmt.raw_bind_parameter(i, v)?,
            Value::Bytes(v) => stmt.raw_bind_parameter(i, v)?,
        }
    }
    Ok(())
}

/// Logs a statement at debug level as sqlx did: its text, the rows it touched
/// and its time, never the values bound to it (they hold token hashes and
/// secrets' hashes, and a log is no place for either). The clock is read only
/// when the log would show it.
struct StatementLog(Option<std::time::Instant>);

impl StatementLog {
    fn start() -> StatementLog {
        StatementLog(
            tracing::enabled!(target: "latchkey_store::sqlite", tracing::Level::DEBUG)
                .then(std::time::Instant::now),
        )
    }

    fn done(self, sql: &'static str, rows: usize) {
        if let Some(started) = self.0 {
            tracing::debug!(
                target: "latchkey_store::sqlite",
                statement = sql,
                rows,
                elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                "SQLite statement"
            );
        }
    }
}

fn execute(conn: &Connection, sql: &'static str, args: &[Value<'_>]) -> Result<u64> {
    let log = StatementLog::start();
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, sql, args)?;
    let n = stmt.raw_execute()?;
    log.done(sql, n);
    Ok(u64::try_from(n).unwrap_or(u64::MAX))
}

fn fetch_all<T>(
    conn: &Connection,
    sql: &'static str,
    args: &[Value<'_>],
    map: Map<T>,
    limit: usize,
) -> Result<Vec<T>> {
    let log = StatementLog::start();
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, sql, args)?;
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while out.len() < limit {
        match rows.next()? {
            Some(row) => out.push(map(&NamedRow {
                row,
                next: std::cell::Cell::new(0),
            })?),
            None => break,
        }
    }
    drop(rows);
    log.done(sql, out.len());
    Ok(out)
}

/// A row read by column name. rusqlite's own lookup by name compares the name with
/// every column's, case-insensitively, on every read (a sixth of a code flow's SQLite
/// time went there); the maps read columns in the order the query names them, so the
/// next column is tried first and the full search is only the fallback.
struct NamedRow<'r, 's> {
    row: &'r rusqlite::Row<'s>,
    next: std::cell::Cell<usize>,
}

impl NamedRow<'_, '_> {
    fn index(&self, col: &str) -> Result<usize> {
        let stmt = self.row.as_ref();
        let guess = self.next.get();
        let i = if stmt.column_name(guess).is_ok_and(|n| n == col) {
            guess
        } else {
            stmt.column_index(col)?
        };
        self.next.set(i + 1);
        Ok(i)
    }

    fn get<T: rusqlite::types::FromSql>(&self, col: &str) -> Result<T> {
        Ok(self.row.get(self.index(col)?)?)
    }
}

impl Cols for NamedRow<'_, '_> {
    fn text(&self, col: &str) -> Result<String> {
        self.get(col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        self.get(col)
    }
    fn int(&self, col: &str) -> Result<i64> {
        self.get(col)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        self.get(col)
    }
    fn bytes(&self, col: &str) -> Result<Vec<u8>> {
        self.get(col)
    }
}

/// A reader from the pool, the writer lent for a read, or statements that each commit
/// on their own.
pub(crate) enum SqliteConn<'a> {
    Reader {
        conn: Option<Connection>,
        pool: &'a Sqlite,
        _permit: tokio::sync::SemaphorePermit<'a>,
    },
    /// The writer, lent for a read while it is idle with no batch open.
    Lent(WriterGuard<'a>),
    /// Each statement is a transaction of its own in the writer's batch.
    Autocommit(&'a Sqlite),
}

impl SqliteConn<'_> {
    /// Runs `f` on the connection: for [`SqliteConn::Autocommit`], in a transaction
    /// that commits before this returns.
    async fn run<T: Send>(&mut self, f: impl FnOnce(&Connection) -> Result<T> + Send) -> Result<T> {
        let conn = match self {
            SqliteConn::Reader { conn, .. } => conn
                .as_ref()
                .ok_or_else(|| StoreError::Database("reader connection already returned".into()))?,
            SqliteConn::Lent(w) => w.conn(),
            SqliteConn::Autocommit(db) => {
                let mut tx = db.begin().await?;
                let out = tx.run(f).await;
                if out.is_err()
                    && let Some(w) = &mut tx.writer
                    && w.undo().is_err()
                {
                    // SQLite ended the whole transaction (SQLITE_FULL, an I/O error):
                    // the statement's own error says why; dropping `tx` tells the batch.
                    return out;
                }
                // Even a failed statement is answered after the commit: its error
                // (a conflict, say) may come from a write of the batch.
                Sqlite::commit(tx).await?;
                return out;
            }
        };
        f(conn)
    }
}

impl Drop for SqliteConn<'_> {
    fn drop(&mut self) {
        if let SqliteConn::Reader { conn, pool, .. } = self
            && let Some(c) = conn.take()
        {
            pool.readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(c);
        }
    }
}

/// Statements on a connection or in a transaction.
macro_rules! exec_on_connection {
    ($t:ty) => {
        #[async_trait]
        impl Exec for $t {
            async fn execute(&mut self, sql: &'static str, args: &[Value<'_>]) -> Result<u64> {
                self.run(|c| execute(c, sql, args)).await
            }

            async fn fetch_optional<T: Send + 'static>(
                &mut self,
                sql: &'static str,
                args: &[Value<'_>],
                map: Map<T>,
            ) -> Result<Option<T>> {
                Ok(self.run(|c| fetch_all(c, sql, args, map, 1)).await?.pop())
            }

            async fn fetch_all<T: Send + 'static>(
                &mut self,
                sql: &'static str,
                args: &[Value<'_>],
                map: Map<T>,
            ) -> Result<Vec<T>> {
                self.run(|c| fetch_all(c, sql, args, map, usize::MAX)).await
            }
        }
    };
}

exec_on_connection!(SqliteConn<'_>);
exec_on_connection!(SqliteTx<'_>);

/// A write transaction: a savepoint in the writer's batch, undone if dropped before
/// commit.
pub(crate) struct SqliteTx<'a> {
    /// Taken by commit.
    writer: Option<WriterGuard<'a>>,
}

impl SqliteTx<'_> {
    #[allow(
        clippy::unused_async,
        reason = "the same shape as SqliteConn::run, for exec_on_connection"
    )]
    async fn run<T: Send>(&mut self, f: impl FnOnce(&Connection) -> Result<T> + Send) -> Result<T> {
        let w = self
            .writer
            .as_ref()
            .ok_or_else(|| StoreError::Database("transaction already committed".into()))?;
        f(w.conn())
    }
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if let Some(w) = &mut self.writer {
            // The transaction did not commit: nothing of it may remain. The batch it
            // was in goes on without it.
            w.rollback();
        }
    }
}

#[async_trait]
impl Backend for Sqlite {
    const NAME: &'static str = "sqlite";
    type Conn<'a> = SqliteConn<'a>;
    type Tx<'a> = SqliteTx<'a>;

    async fn reader(&self) -> Result<SqliteConn<'_>> {
        // A read goes to the writer when it is free: its page cache is always warm,
        // since only its own commits change the file, while a reader's cache is
        // dropped whenever anything was committed since its last read, so that under
        // writes nearly every read by a reader copies its pages in again (measured:
        // 19 preads per code flow). It is lent only with no batch open, so what it
        // reads is committed.
        if let Some(writer) = self.writer.try_lend() {
            return Ok(SqliteConn::Lent(writer));
        }
        let permit = self
            .reader_permits
            .acquire()
            .await
            .map_err(|e| StoreError::Database(Box::new(e)))?;
        let pooled = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = open_connection(&self.path)?;
                // A reader never writes, whatever statement it is handed.
                c.execute_batch("PRAGMA query_only = ON")?;
                c
            }
        };
        Ok(SqliteConn::Reader {
            conn: Some(conn),
            pool: self,
            _permit: permit,
        })
    }

    async fn writer(&self) -> Result<SqliteConn<'_>> {
        Ok(SqliteConn::Autocommit(self))
    }

    async fn begin(&self) -> Result<SqliteTx<'_>> {
        let mut writer = self.writer.lock().await;
        writer.begin()?;
        Ok(SqliteTx {
            writer: Some(writer),
        })
    }

    /// SQLite has one writer at a time, so the write transaction is the lock.
    async fn begin_locked(&self, _lock: i64) -> Result<Option<SqliteTx<'_>>> {
        Ok(Some(self.begin().await?))
    }

    /// Answers once the batch the transaction joined has committed.
    async fn commit(mut tx: SqliteTx<'_>) -> Result<()> {
        let writer = tx
            .writer
            .take()
            .ok_or_else(|| StoreError::Database("transaction already committed".into()))?;
        let owner = writer.owner();
        writer.release_and_leave()?.outcome(owner).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// Another connection keeps a read transaction open (a `sqlite3` shell left in
    /// BEGIN, a backup), so the WAL cannot start over and stays past
    /// WAL_RESTART_FRAMES. Writes of this process must not wait on the checkpoint
    /// thread's RESTART attempts for more than a moment: it held the writer for its
    /// whole busy timeout, 200 ms, every round.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_of_another_connection_does_not_stall_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Sqlite::open(&path).await.unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN").unwrap();
        let _: i64 = other
            .query_row("SELECT COUNT(*) FROM server_secrets", [], |r| r.get(0))
            .unwrap();
        let pad = "p".repeat(3000);
        let started = Instant::now();
        let (mut n, mut worst) = (0u64, Duration::ZERO);
        while started.elapsed() < Duration::from_secs(3) {
            let t0 = Instant::now();
            let name = format!("k{n}");
            db.writer()
                .await
                .unwrap()
                .execute(
                    "INSERT INTO server_secrets (name, value) VALUES ($1, $2)",
                    &[Value::Text(Some(&name)), Value::Text(Some(&pad))],
                )
                .await
                .unwrap();
            worst = worst.max(t0.elapsed());
            n += 1;
        }
        other.execute_batch("COMMIT").unwrap();
        assert!(n > 1000, "only {n} commits in 3 s");
        assert!(
            worst < Duration::from_millis(100),
            "a write waited {worst:?} ({n} commits)"
        );
    }

    /// A database made by a version with stored codes (schema 2) opens: its grants are
    /// kept, the grants' session index is gone (the codes table stays for nodes of the
    /// previous version during a rolling upgrade), and a logout's filter still finds a
    /// session's grants.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_of_schema_2_migrates_and_keeps_its_grants() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("PRAGMA journal_mode = WAL").unwrap();
            migrate(&conn, &migrations::MIGRATIONS[..2]).unwrap();
            conn.execute_batch(
                "INSERT INTO grants (grant_id, user_id, client_id, scope, auth_time, session_hash, refresh_generation, created_at, last_used_at, expires_at, grace_used) \
                 VALUES ('g-old', 'u', 'c', 'openid', 1, 's', 1, 1, 1, 9999999999, 0); \
                 INSERT INTO codes (code_hash, client_id, user_id, redirect_uri, scope, code_challenge, auth_time, expires_at) \
                 VALUES ('h', 'c', 'u', 'https://app.example/cb', 'openid', 'x', 1, 61)",
            )
            .unwrap();
        }
        let store = crate::SqliteStore::open(&path).await.unwrap();
        let names: Vec<String> = {
            let conn = Connection::open(&path).unwrap();
            let mut stmt = conn
                .prepare("SELECT name FROM sqlite_master ORDER BY name")
                .unwrap();
            stmt.query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .map(|n| n.unwrap())
                .collect()
        };
        assert!(!names.iter().any(|n| n == "grants_session"), "{names:?}");
        assert!(names.iter().any(|n| n == "codes"), "{names:?}");
        use crate::Store;
        assert!(store.grant("g-old").await.unwrap().is_some());
        let filter = crate::GrantFilter {
            user_id: Some("u".into()),
            session_hash: Some("s".into()),
            ..Default::default()
        };
        assert_eq!(store.revoke_grants(&filter, 5).await.unwrap(), 1);
    }

    /// A database a newer version migrated is refused, and left as it was.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_of_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(crate::SqliteStore::open(&path).await.unwrap());
        let newer = migrations::MIGRATIONS.last().unwrap().version + 1;
        Connection::open(&path)
            .unwrap()
            .execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?1, 0)",
                [newer],
            )
            .unwrap();
        let err = crate::SqliteStore::open(&path)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("newer than this Latchkey knows"), "{err}");
        let versions: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(versions, newer);
    }

    /// A transaction left open on the writer (a ROLLBACK that failed) is rolled back
    /// before the writer's next use, not joined by the next statements.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_transaction_left_on_the_writer_is_rolled_back_before_its_next_use() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("t.db")).await.unwrap();
        {
            let w = db.writer.lock().await;
            w.conn()
                .execute_batch(
                    "BEGIN; INSERT INTO server_secrets (name, value) VALUES ('left', 'x')",
                )
                .unwrap();
        }
        let mut w = db.writer().await.unwrap();
        w.execute(
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2)",
            &[Value::Text(Some("next")), Value::Text(Some("y"))],
        )
        .await
        .unwrap();
        drop(w);
        let names: Vec<String> = db
            .reader()
            .await
            .unwrap()
            .fetch_all("SELECT name FROM server_secrets ORDER BY name", &[], |r| {
                r.text("name")
            })
            .await
            .unwrap();
        assert_eq!(names, vec!["next".to_owned()]);
        assert!(db.writer.lock().await.conn().is_autocommit());
    }

    async fn insert_secret(db: &Sqlite, name: &str, value: &str) -> Result<u64> {
        db.writer()
            .await?
            .execute(
                "INSERT INTO server_secrets (name, value) VALUES ($1, $2)",
                &[Value::Text(Some(name)), Value::Text(Some(value))],
            )
            .await
    }

    fn secret_names(path: &Path) -> std::collections::BTreeSet<String> {
        let other = Connection::open(path).unwrap();
        let mut stmt = other.prepare("SELECT name FROM server_secrets").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    /// Group commit: concurrent writers share COMMITs, and each is answered only once
    /// its write is committed: another connection sees it the moment it returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits_and_each_is_committed_when_answered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Arc::new(Sqlite::open(&path).await.unwrap());
        let mut tasks = Vec::new();
        for t in 0..16 {
            let (db, path) = (db.clone(), path.clone());
            tasks.push(tokio::spawn(async move {
                let other = Connection::open(&path).unwrap();
                for i in 0..100 {
                    let name = format!("t{t}-{i}");
                    insert_secret(&db, &name, "v").await.unwrap();
                    let seen: i64 = other
                        .query_row(
                            "SELECT COUNT(*) FROM server_secrets WHERE name = ?1",
                            [&name],
                            |r| r.get(0),
                        )
                        .unwrap();
                    assert_eq!(seen, 1, "{name} was answered before it was committed");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(secret_names(&path).len(), 1600);
        let commits = db.writer.commits.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            commits < 1600,
            "{commits} commits for 1600 writes: none shared"
        );
    }

    /// A transaction that fails leaves its batch; the others in it commit, and every
    /// caller's answer is the truth: Ok exactly for the rows that are there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_transaction_in_a_batch_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Arc::new(Sqlite::open(&path).await.unwrap());
        insert_secret(&db, "taken", "v").await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..16 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                for i in 0..50 {
                    // Every third write collides with a row that exists.
                    let name = if (t + i) % 3 == 0 {
                        "taken".to_owned()
                    } else {
                        format!("t{t}-{i}")
                    };
                    let mut tx = db.begin().await.unwrap();
                    let inserted = tx
                        .execute(
                            "INSERT INTO server_secrets (name, value) VALUES ($1, 'v')",
                            &[Value::Text(Some(&name))],
                        )
                        .await;
                    let answer = match inserted {
                        Ok(_) => Sqlite::commit(tx).await,
                        Err(e) => Err(e),
                    };
                    answers.push((name, answer.is_ok()));
                }
                answers
            }));
        }
        let mut committed = std::collections::BTreeSet::from(["taken".to_owned()]);
        for t in tasks {
            for (name, ok) in t.await.unwrap() {
                assert_eq!(ok, name != "taken", "{name}");
                if ok {
                    committed.insert(name);
                }
            }
        }
        assert_eq!(secret_names(&path), committed);
    }

    /// The hand-over that could strand a batch: a member releases its transaction
    /// while another writer is queued, so it leaves the batch open for that one, and
    /// that one is cancelled before it runs. The batch must still commit at once (not
    /// after the member's fallback wait) and leave the write lock free.
    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_left_to_a_cancelled_writer_still_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Arc::new(Sqlite::open(&path).await.unwrap());
        let mut member = db.writer.lock().await;
        member.begin().unwrap();
        member
            .conn()
            .execute_batch("INSERT INTO server_secrets (name, value) VALUES ('member', 'v')")
            .unwrap();
        let queued = {
            let db = db.clone();
            tokio::spawn(async move { insert_secret(&db, "queued", "v").await })
        };
        // Let it run until it waits for the writer.
        tokio::task::yield_now().await;
        assert_eq!(
            db.writer.queued.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        let started = std::time::Instant::now();
        let pending = member.release_and_leave().unwrap();
        // On one thread the queued writer has not run since: cancel it now.
        queued.abort();
        pending.outcome(&db.writer).await.unwrap();
        assert!(
            started.elapsed() < writer::STRANDED_AFTER / 2,
            "the batch waited {:?} for the fallback",
            started.elapsed()
        );
        assert!(queued.await.unwrap_err().is_cancelled());
        assert!(secret_names(&path).contains("member"));
        let other = Connection::open(&path).unwrap();
        other
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO server_secrets (name, value) VALUES ('other', 'v'); COMMIT")
            .expect("the write lock is still held");
    }

    /// Transactions that fail and are dropped keep the writer's queue busy without
    /// joining the batch; they must not keep a released member's batch from
    /// committing (found in review: a write waited until the failing load stopped).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_transactions_do_not_starve_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Sqlite::open(&dir.path().join("t.db")).await.unwrap());
        insert_secret(&db, "taken", "v").await.unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut load = Vec::new();
        for _ in 0..16 {
            let (db, stop) = (db.clone(), stop.clone());
            load.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut tx = db.begin().await.unwrap();
                    let r = tx
                        .execute(
                            "INSERT INTO server_secrets (name, value) VALUES ('taken', 'v')",
                            &[],
                        )
                        .await;
                    assert!(r.is_err());
                    drop(tx);
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut worst = Duration::ZERO;
        for i in 0..20 {
            let t0 = Instant::now();
            let r = tokio::time::timeout(
                Duration::from_secs(3),
                insert_secret(&db, &format!("m{i}"), "v"),
            )
            .await;
            worst = worst.max(t0.elapsed());
            assert!(r.is_ok(), "write {i} still unanswered after 3 s");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in load {
            t.await.unwrap();
        }
        assert!(
            worst < Duration::from_millis(500),
            "a write waited {worst:?}"
        );
    }

    /// The race the cancelled-writer test cannot stage on one thread: the holder sees
    /// a queued writer and leaves its batch open, the queued writer is cancelled on
    /// another thread before the holder lets go (so its look finds the writer held),
    /// and the member's caller is gone too. The batch then holds SQLite's write lock
    /// with nobody to commit it; the checkpoint thread's round must (found in review:
    /// the lock stayed held while the server was idle).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_stranded_by_two_cancellations_is_committed_by_the_checkpointer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Arc::new(Sqlite::open(&path).await.unwrap());
        let other = Connection::open(&path).unwrap();
        other.busy_timeout(Duration::ZERO).unwrap();
        let mut stranded = 0;
        for i in 0..2000 {
            let mut member = db.writer.lock().await;
            member.begin().unwrap();
            member
                .conn()
                .execute_batch(&format!(
                    "INSERT INTO server_secrets (name, value) VALUES ('m{i}', 'v')"
                ))
                .unwrap();
            let queued = {
                let db = db.clone();
                tokio::spawn(async move { insert_secret(&db, &format!("q{i}"), "v").await })
            };
            while db.writer.queued.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                std::hint::spin_loop();
            }
            let go = Arc::new(std::sync::Barrier::new(2));
            let aborter = {
                let (go, h) = (go.clone(), queued.abort_handle());
                std::thread::spawn(move || {
                    go.wait();
                    for _ in 0..(i % 50) {
                        std::hint::spin_loop();
                    }
                    h.abort();
                })
            };
            go.wait();
            // The member's caller is cancelled too: nobody waits for the outcome.
            drop(member.release_and_leave().unwrap());
            aborter.join().unwrap();
            let _ = queued.await;
            tokio::time::sleep(Duration::from_millis(1)).await;
            if other.execute_batch("BEGIN IMMEDIATE; ROLLBACK").is_err() {
                stranded += 1;
                // Two checkpoint rounds at most.
                tokio::time::sleep(CHECKPOINT_EVERY * 2 + Duration::from_millis(100)).await;
                assert!(
                    other.execute_batch("BEGIN IMMEDIATE; ROLLBACK").is_ok(),
                    "the write lock was still held by a stranded batch (iteration {i})"
                );
            }
        }
        // Not an assertion: how often the race was hit, for whoever reads the output.
        eprintln!("stranded batches: {stranded} of 2000");
    }
}
