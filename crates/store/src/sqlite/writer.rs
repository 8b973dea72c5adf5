//! The one SQLite connection that writes, and group commit.
//!
//! A write transaction takes the writer (an async mutex), runs as a `SAVEPOINT` inside
//! the open batch (one `BEGIN IMMEDIATE`), releases its savepoint and gives the writer
//! back. Whoever gives the writer back while nobody waits for it commits the batch:
//! one `COMMIT`, one append to the WAL and one round of file locks for every
//! transaction that queued meanwhile. Each of them is answered only after that
//! `COMMIT`, with its outcome: a caller never sees success for a write that is not
//! committed. Alone, a transaction commits at once, as without batching.
//!
//! Under load most of a commit's cost is shared: the WAL frames of pages that several
//! transactions changed (the tables' last leaf, the B-tree roots, the header), the
//! `fcntl` locks and the WAL index. The batch is bounded in turns ([`MAX_BATCH`]) and
//! in age ([`MAX_BATCH_AGE`]) so that its first member never waits long, even while
//! transactions that fail keep the queue busy without joining.
//!
//! The invariant that keeps this safe: the writer is never left idle with a batch
//! open. [`WriterGuard`]'s `Drop` commits the batch when nobody is queued, and a caller
//! whose wait for the writer is cancelled gives it one look on the way out (see
//! [`Ticket`]). If a batch is left open anyway (a cancellation racing a hand-over), a
//! member still waiting takes the writer itself after [`STRANDED_AFTER`], and with no
//! member left the checkpoint thread commits it ([`Writer::commit_if_idle`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::watch;

use crate::{Result, StoreError};

/// Turns with the writer (transactions released, failed or dropped, and lent
/// waits) in one batch at most before it commits, however many still queue.
const MAX_BATCH: usize = 32;
/// How long a batch stays open at most before the next holder commits it. Turns are
/// tens of microseconds, so this bounds only a batch that failed transactions (which
/// keep the queue busy without joining) kept open.
const MAX_BATCH_AGE: Duration = Duration::from_millis(2);
/// How long a member waits for its batch's outcome before it takes the writer to
/// commit the batch itself. Far above any batch's time (tens of microseconds per
/// member); only a lost hand-over ever reaches it.
pub(crate) const STRANDED_AFTER: Duration = Duration::from_millis(50);

/// What a batch's `COMMIT` came to, shared by its members.
type Outcome = std::result::Result<(), Arc<str>>;

pub(crate) struct Writer {
    slot: tokio::sync::Mutex<Slot>,
    /// Callers waiting for the writer. While any wait, the holder leaves the batch
    /// open for them to join.
    pub(crate) queued: AtomicUsize,
    /// Batches committed, for tests to see that transactions share them.
    #[cfg(test)]
    pub(crate) commits: AtomicUsize,
}

pub(crate) struct Slot {
    pub(crate) conn: Connection,
    batch: Option<Batch>,
}

/// The transaction open on the writer and the transactions released into it.
struct Batch {
    /// Transactions released into it.
    members: usize,
    /// Times the writer was given back with it open.
    turns: usize,
    opened: Instant,
    outcome: watch::Sender<Option<Outcome>>,
}

/// A member's claim on its batch's outcome.
pub(crate) struct Pending(watch::Receiver<Option<Outcome>>);

impl Writer {
    pub(crate) fn new(conn: Connection) -> Writer {
        Writer {
            slot: tokio::sync::Mutex::new(Slot { conn, batch: None }),
            queued: AtomicUsize::new(0),
            #[cfg(test)]
            commits: AtomicUsize::new(0),
        }
    }

    /// Takes the writer, queued behind those already waiting (the mutex is fair).
    pub(crate) async fn lock(&self) -> WriterGuard<'_> {
        let ticket = Ticket::new(self);
        let slot = self.slot.lock().await;
        ticket.served();
        WriterGuard { slot, writer: self }
    }

    /// [`Writer::lock`] for a thread outside the runtime (the checkpoint thread).
    pub(crate) fn lock_blocking(&self) -> WriterGuard<'_> {
        let ticket = Ticket::new(self);
        let slot = self.slot.blocking_lock();
        ticket.served();
        WriterGuard { slot, writer: self }
    }

    /// Commits a batch left open with nobody holding the writer. Such a batch has no
    /// member waiting for it (a waiting member takes the writer itself after
    /// [`STRANDED_AFTER`]), but it holds SQLite's write lock against other processes.
    pub(crate) fn commit_if_idle(&self) {
        if let Ok(slot) = self.slot.try_lock() {
            let mut guard = WriterGuard { slot, writer: self };
            guard.commit_batch();
        }
    }

    /// The writer if nobody holds it and no batch is open, for a read: what it reads
    /// is then committed.
    pub(crate) fn try_lend(&self) -> Option<WriterGuard<'_>> {
        let slot = self.slot.try_lock().ok()?;
        let mut guard = WriterGuard { slot, writer: self };
        (guard.slot.batch.is_none() && guard.settle().is_ok()).then_some(guard)
    }
}

/// Counts a caller among those waiting for the writer until it has it.
struct Ticket<'a> {
    writer: &'a Writer,
    waiting: bool,
}

impl<'a> Ticket<'a> {
    fn new(writer: &'a Writer) -> Ticket<'a> {
        writer.queued.fetch_add(1, Ordering::SeqCst);
        Ticket {
            writer,
            waiting: true,
        }
    }

    fn served(mut self) {
        self.writer.queued.fetch_sub(1, Ordering::SeqCst);
        self.waiting = false;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.waiting {
            // Cancelled while queued: the holder may have left its batch open for us.
            // Taking and giving back the writer commits it if nobody else is queued.
            self.writer.queued.fetch_sub(1, Ordering::SeqCst);
            if let Ok(slot) = self.writer.slot.try_lock() {
                drop(WriterGuard {
                    slot,
                    writer: self.writer,
                });
            }
        }
    }
}

/// The writer, held.
pub(crate) struct WriterGuard<'a> {
    slot: tokio::sync::MutexGuard<'a, Slot>,
    writer: &'a Writer,
}

impl<'a> WriterGuard<'a> {
    pub(crate) fn conn(&self) -> &Connection {
        &self.slot.conn
    }

    pub(crate) fn owner(&self) -> &'a Writer {
        self.writer
    }

    /// Makes the connection agree with the batch before use. A transaction open with
    /// no batch (a ROLLBACK that failed) is rolled back: it would swallow the next
    /// writes and show uncommitted rows to a lent read. A batch whose transaction
    /// SQLite ended (it rolls back the whole transaction on SQLITE_FULL or an I/O
    /// error) has lost its members' writes: they are told so.
    pub(crate) fn settle(&mut self) -> Result<()> {
        let in_transaction = !self.slot.conn.is_autocommit();
        match (&self.slot.batch, in_transaction) {
            (None, true) => {
                tracing::warn!("the SQLite writer held an open transaction; rolling it back");
                self.slot.conn.execute_batch("ROLLBACK")?;
            }
            (Some(_), false) => {
                self.finish(Err("SQLite rolled the transaction back".into()));
            }
            _ => {}
        }
        Ok(())
    }

    /// Opens a transaction: a savepoint in the open batch, or in a new one.
    pub(crate) fn begin(&mut self) -> Result<()> {
        self.settle()?;
        if self.slot.batch.is_none() {
            // IMMEDIATE takes the write lock now: a transaction that reads and then
            // writes cannot fail halfway because another process wrote in between.
            self.slot.conn.execute_batch("BEGIN IMMEDIATE")?;
            self.slot.batch = Some(Batch {
                members: 0,
                turns: 0,
                opened: Instant::now(),
                outcome: watch::Sender::new(None),
            });
        }
        if let Err(e) = self.slot.conn.execute_batch("SAVEPOINT latchkey_tx") {
            self.settle()?;
            return Err(e.into());
        }
        Ok(())
    }

    /// Releases the open transaction's savepoint into the batch and gives the writer
    /// back; dropping the guard commits the batch if nobody waits to join it, or it is
    /// full or old (see `Drop`). The caller is answered by [`Pending::outcome`].
    pub(crate) fn release_and_leave(mut self) -> Result<Pending> {
        if let Err(e) = self.slot.conn.execute_batch("RELEASE latchkey_tx") {
            self.rollback();
            return Err(e.into());
        }
        let batch = self.slot.batch.as_mut().ok_or_else(|| {
            StoreError::Database("a transaction was released with no batch open".into())
        })?;
        batch.members += 1;
        Ok(Pending(batch.outcome.subscribe()))
    }

    /// Undoes the open transaction's writes but keeps it open: released, it commits
    /// nothing, and its caller is answered once the batch whose writes it may have
    /// read has committed.
    pub(crate) fn undo(&mut self) -> Result<()> {
        Ok(self.slot.conn.execute_batch("ROLLBACK TO latchkey_tx")?)
    }

    /// Undoes the open transaction's writes, and only them, and ends it.
    pub(crate) fn rollback(&mut self) {
        if let Err(e) = self
            .slot
            .conn
            .execute_batch("ROLLBACK TO latchkey_tx; RELEASE latchkey_tx")
        {
            tracing::warn!(error = %e, "SQLite rollback failed");
        }
        if let Err(e) = self.settle() {
            tracing::warn!(error = %e, "SQLite rollback failed");
        }
    }

    /// Commits the open batch now (the checkpoint thread needs the write lock free).
    pub(crate) fn commit_batch(&mut self) {
        if self.slot.batch.as_ref().is_some_and(|b| b.members == 0) {
            // Only its opener was in it, and it rolled back.
            let result = self.slot.conn.execute_batch("ROLLBACK");
            self.finish(result.map_err(|e| e.to_string().into()));
            return;
        }
        if self.slot.batch.is_some() {
            let result = self.slot.conn.execute_batch("COMMIT");
            #[cfg(test)]
            self.writer.commits.fetch_add(1, Ordering::SeqCst);
            if result.is_err() && !self.slot.conn.is_autocommit() {
                let _ = self.slot.conn.execute_batch("ROLLBACK");
            }
            self.finish(result.map_err(|e| e.to_string().into()));
        }
    }

    /// Ends the batch and tells its members how it ended.
    fn finish(&mut self, outcome: Outcome) {
        if let Some(batch) = self.slot.batch.take() {
            if let Err(e) = &outcome {
                tracing::warn!(error = %e, members = batch.members, "SQLite batch did not commit");
            }
            batch.outcome.send_replace(Some(outcome));
        }
    }
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        let Some(batch) = &mut self.slot.batch else {
            return;
        };
        batch.turns += 1;
        // The writer is never left idle with a batch open (nobody would commit it),
        // and a batch does not stay open past its size or age while others queue: the
        // members' answers wait for it.
        if self.writer.queued.load(Ordering::SeqCst) == 0
            || batch.turns >= MAX_BATCH
            || batch.opened.elapsed() >= MAX_BATCH_AGE
        {
            self.commit_batch();
        }
    }
}

impl Pending {
    /// Waits for the batch's outcome.
    pub(crate) async fn outcome(mut self, writer: &Writer) -> Result<()> {
        loop {
            let waited = tokio::time::timeout(STRANDED_AFTER, self.0.wait_for(Option::is_some))
                .await
                .map(|r| r.map(|outcome| outcome.clone()));
            match waited {
                Ok(Ok(Some(Ok(())))) => return Ok(()),
                Ok(Ok(Some(Err(e)))) => return Err(StoreError::Database(e.to_string().into())),
                Ok(Ok(None) | Err(_)) => {
                    return Err(StoreError::Database(
                        "the batch ended without an outcome".into(),
                    ));
                }
                // Nobody committed the batch in time: taking the writer and giving it
                // back does, if nobody else is queued to.
                Err(_) => drop(writer.lock().await),
            }
        }
    }
}
