//! Group commit: one thread owns all writes and commits them in batches.
//!
//! With `synchronous = FULL` (SQLite) or the default `synchronous_commit` (PostgreSQL) every
//! commit waits for an fsync, and one fsync per request caps a 2-core machine at a few
//! thousand updates a second. Here each waiting request runs inside its own savepoint of one
//! shared transaction; one `COMMIT` (one fsync) then makes the whole batch durable. A request
//! whose work fails is rolled back to its savepoint alone and gets its own error; every reply
//! is sent only after the commit succeeded, so nothing is acknowledged that could be lost.
//!
//! The transaction is driven with plain `BEGIN`/`SAVEPOINT`/`COMMIT` statements because SQLite
//! needs `BEGIN IMMEDIATE` (take the write lock first, so a second process makes us wait
//! instead of failing mid-transaction), which diesel's generic transaction API cannot ask for.
//! Jobs therefore must not open diesel transactions of their own.

use std::panic::{self, AssertUnwindSafe};
use std::thread;

use diesel::connection::SimpleConnection as _;
use diesel::r2d2::Pool;
use tokio::sync::{mpsc, oneshot};

use super::{Backend, DbConnection, Manager};
use crate::error::Error;

/// The most requests one commit carries; bounds the latency of the first in a batch.
const MAX_BATCH: usize = 256;

/// How many requests may wait for the writer before callers wait to enqueue.
const QUEUE_DEPTH: usize = 4096;

/// A unit of work: runs on the writer's connection and says whether it succeeded, returning
/// the function that delivers its reply once the commit's outcome is known.
type Job = Box<dyn FnOnce(&mut DbConnection) -> (bool, Reply) + Send>;
type Reply = Box<dyn FnOnce(Result<(), Error>) + Send>;

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread. It stops when every handle is dropped.
    pub fn start(pool: Pool<Manager>, backend: Backend) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE_DEPTH);
        thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || run(pool, backend, rx))
            .expect("spawning the database writer thread");
        Self { jobs }
    }

    /// Queues `f` for the next batch and waits until its batch is committed.
    pub async fn submit<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, Error> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move |conn| {
            let result = span.in_scope(|| f(conn));
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |commit| {
                let _ = tx.send(commit.and(result));
            });
            (ok, reply)
        });

        self.jobs.send(job).await.map_err(|_| Error::Unavailable)?;
        rx.await.unwrap_or(Err(Error::Unavailable))
    }
}

fn run(pool: Pool<Manager>, backend: Backend, mut rx: mpsc::Receiver<Job>) {
    let begin = match backend {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN",
    };

    while let Some(first) = rx.blocking_recv() {
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }

        let mut conn = match pool.get() {
            Ok(conn) => conn,
            Err(_) => {
                tracing::warn!(
                    batch.size = batch.len(),
                    "no database connection for writes"
                );
                fail_all(batch);
                continue;
            }
        };
        commit_batch(&mut conn, begin, batch);
    }
}

fn commit_batch(conn: &mut DbConnection, begin: &str, batch: Vec<Job>) {
    if let Err(err) = conn.batch_execute(begin) {
        log_failure("begin", err);
        fail_all(batch);
        return;
    }

    let size = batch.len();
    let mut replies = Vec::with_capacity(size);
    let mut broken = false;
    for job in batch {
        if broken {
            // The connection failed mid-batch: the remaining jobs cannot run.
            replies.push(Box::new(|_| ()) as Reply);
            continue;
        }
        if conn.batch_execute("SAVEPOINT job").is_err() {
            broken = true;
            continue;
        }
        // A panicking job must not take the writer thread (and every later write) with it:
        // its changes are rolled back and its caller sees the reply channel close.
        let (ok, reply) = match panic::catch_unwind(AssertUnwindSafe(|| job(conn))) {
            Ok(done) => done,
            Err(_) => {
                tracing::error!("a database write panicked; rolled back");
                (false, Box::new(|_| ()) as Reply)
            }
        };
        let end = if ok {
            "RELEASE SAVEPOINT job"
        } else {
            "ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job"
        };
        broken = conn.batch_execute(end).is_err();
        replies.push(reply);
    }

    let outcome = if broken {
        Err(())
    } else {
        conn.batch_execute("COMMIT")
            .map_err(|err| log_failure("commit", err))
    };
    if outcome.is_err() {
        let _ = conn.batch_execute("ROLLBACK");
        tracing::warn!(batch.size = size, "write batch rolled back");
    }
    for reply in replies {
        reply(outcome.map_err(|()| Error::Unavailable));
    }
}

/// Logs why a batch failed; the conversion to [`Error`] logs the database's side of it.
fn log_failure(step: &str, err: diesel::result::Error) {
    let err = Error::from(err);
    tracing::warn!(step, error = %err, "write batch failed");
}

/// Answers every job of a batch that could not run with `UNAVAILABLE`. The jobs are dropped
/// unrun, which closes their reply channels; `submit` maps that to the same error.
fn fail_all(batch: Vec<Job>) {
    drop(batch);
}
