//! Group commit: one thread owns all writes and commits them in batches.
//!
//! With `synchronous = FULL` (SQLite) or the default `synchronous_commit` (PostgreSQL) every
//! commit waits for an fsync, and one fsync per request caps a 2-core machine at a few
//! thousand updates a second. Here each waiting request runs inside its own savepoint of one
//! shared transaction; one `COMMIT` (one fsync) then makes the whole batch durable. A request
//! whose work fails is rolled back to its savepoint alone and gets its own error; every reply
//! is sent only after the commit succeeded, so nothing is acknowledged that could be lost.
//!
//! A request that loses a lock conflict with another process (PostgreSQL deadlock or
//! serialization failure, SQLite busy) is rolled back to its savepoint, which releases the
//! locks it took, and runs again in the next batch, a few times at most, before its caller
//! is told to retry.
//!
//! A batch is every request waiting when it starts (up to [`MAX_BATCH`]). It deliberately
//! does not take the requests that arrive while it runs: measured with 64 clients, a batch
//! that keeps growing until the queue is empty puts every client in the same commit, so the
//! clients and the writer end up taking turns instead of overlapping, and updates/s dropped by
//! a quarter (BENCHMARKS.md). The writer keeps its pooled connection between batches (taking it
//! again after a failure), so writes never wait behind reads for a connection, and one
//! statement both ends a request's savepoint and opens the next one's (one round trip fewer
//! per request on PostgreSQL).
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
use tracing::Span;

use super::{Backend, DbConnection, Manager, PooledConn};
use crate::error::Error;

/// The most requests one commit carries; bounds the latency of the first in a batch.
const MAX_BATCH: usize = 256;

/// How many requests may wait for the writer before callers wait to enqueue.
const QUEUE_DEPTH: usize = 4096;

/// How often a request that lost a lock conflict runs again before giving up.
const MAX_RETRIES: u8 = 3;

/// What running a job inside its savepoint came to.
enum Ran {
    /// Keep its changes.
    Done,
    /// Roll its changes back; it has its answer.
    Failed,
    /// Roll its changes back and run it again in the next batch.
    Again,
}

/// A unit of work for the writer.
trait Job: Send {
    /// Runs the work on the writer's connection, inside the job's savepoint.
    fn run(&mut self, conn: &mut DbConnection) -> Ran;

    /// Answers the caller once the fate of the batch is known.
    fn finish(self: Box<Self>, commit: Result<(), Error>);
}

struct Typed<F, T> {
    work: F,
    span: Span,
    tries: u8,
    result: Option<Result<T, Error>>,
    reply: oneshot::Sender<Result<T, Error>>,
}

impl<F, T> Job for Typed<F, T>
where
    F: FnMut(&mut DbConnection) -> Result<T, Error> + Send,
    T: Send,
{
    fn run(&mut self, conn: &mut DbConnection) -> Ran {
        let result = self.span.in_scope(|| (self.work)(conn));
        let ran = match &result {
            Ok(_) => Ran::Done,
            Err(Error::Unavailable) if self.tries < MAX_RETRIES => {
                self.tries += 1;
                Ran::Again
            }
            Err(_) => Ran::Failed,
        };
        self.result = Some(result);
        ran
    }

    fn finish(self: Box<Self>, commit: Result<(), Error>) {
        let answer = match self.result {
            Some(Ok(value)) => commit.map(|()| value),
            Some(Err(err)) => Err(err),
            None => Err(Error::Unavailable),
        };
        let _ = self.reply.send(answer);
    }
}

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
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

    /// Queues `work` for the next batch and waits until its batch is committed. `work` may
    /// run more than once (after a lock conflict), each time on a clean savepoint.
    pub async fn submit<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&mut DbConnection) -> Result<T, Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Typed {
            work,
            span: Span::current(),
            tries: 0,
            result: None,
            reply,
        });
        self.jobs.send(job).await.map_err(|_| Error::Unavailable)?;
        answer.await.unwrap_or(Err(Error::Unavailable))
    }
}

type Queue = mpsc::Receiver<Box<dyn Job>>;

fn run(pool: Pool<Manager>, backend: Backend, mut rx: Queue) {
    let begin = match backend {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN",
    };

    let mut conn: Option<PooledConn> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        batch.extend(drain(&mut rx));

        // Jobs that lost a lock conflict go again, first and on their own, until none is left.
        while !batch.is_empty() {
            if conn.is_none() {
                match pool.get() {
                    Ok(c) => conn = Some(c),
                    Err(_) => {
                        // Everything waiting would wait as long again: answer it all now.
                        batch.extend(drain(&mut rx));
                        tracing::warn!(
                            batch.size = batch.len(),
                            "no database connection for writes"
                        );
                        fail_all(batch);
                        break;
                    }
                }
            }
            let c = conn.as_mut().expect("taken above");
            let outcome = commit_batch(c, begin, batch);
            if !outcome.healthy {
                // Back to the pool, whose check on the next checkout replaces a dead one.
                conn = None;
            }
            batch = outcome.again;
        }
    }
}

/// What a batch left behind.
struct Outcome {
    /// Jobs to run again, in a batch of their own.
    again: Vec<Box<dyn Job>>,
    /// Whether the connection came through without an error.
    healthy: bool,
}

/// What ends the previous job's savepoint before the next statement.
#[derive(Clone, Copy)]
enum Close {
    /// No job ran yet.
    Nothing,
    /// Keep the previous job's changes.
    Keep,
    /// Roll the previous job's changes back.
    Undo,
}

impl Close {
    /// Ends the previous savepoint (if any) and opens the next job's, in one statement.
    fn then_open(self) -> &'static str {
        match self {
            Close::Nothing => "SAVEPOINT job",
            Close::Keep => "RELEASE SAVEPOINT job; SAVEPOINT job",
            Close::Undo => "ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job; SAVEPOINT job",
        }
    }

    /// Ends the last savepoint.
    fn alone(self) -> Option<&'static str> {
        match self {
            Close::Nothing => None,
            Close::Keep => Some("RELEASE SAVEPOINT job"),
            Close::Undo => Some("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job"),
        }
    }
}

/// Runs `batch` in one transaction and answers its jobs.
fn commit_batch(conn: &mut DbConnection, begin: &str, batch: Vec<Box<dyn Job>>) -> Outcome {
    if let Err(err) = conn.batch_execute(begin) {
        log_failure("begin", err);
        fail_all(batch);
        return Outcome {
            again: Vec::new(),
            healthy: false,
        };
    }

    let mut ran = Vec::with_capacity(batch.len());
    let mut again = Vec::new();
    let mut close = Close::Nothing;
    let mut broken = false;
    for mut job in batch {
        if broken || conn.batch_execute(close.then_open()).is_err() {
            // The connection failed mid-batch: the remaining jobs cannot run.
            broken = true;
            ran.push(job);
            continue;
        }
        // A panicking job must not take the writer thread (and every later write) with it.
        let outcome =
            panic::catch_unwind(AssertUnwindSafe(|| job.run(conn))).unwrap_or_else(|_| {
                tracing::error!("a database write panicked; rolled back");
                Ran::Failed
            });
        match outcome {
            Ran::Done => {
                close = Close::Keep;
                ran.push(job);
            }
            Ran::Failed => {
                close = Close::Undo;
                ran.push(job);
            }
            Ran::Again => {
                close = Close::Undo;
                again.push(job);
            }
        }
    }
    if let Some(end) = close.alone().filter(|_| !broken) {
        broken = conn.batch_execute(end).is_err();
    }

    let size = ran.len() + again.len();
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
    for job in ran {
        job.finish(outcome.map_err(|()| Error::Unavailable));
    }
    if !again.is_empty() {
        tracing::debug!(
            jobs = again.len(),
            "retrying writes that lost a lock conflict"
        );
    }
    Outcome {
        again,
        healthy: outcome.is_ok(),
    }
}

/// The jobs waiting now, up to a batch (with the one already taken).
fn drain(rx: &mut Queue) -> Vec<Box<dyn Job>> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .take(MAX_BATCH - 1)
        .collect()
}

/// Logs why a batch failed; the conversion to [`Error`] logs the database's side of it.
fn log_failure(step: &str, err: diesel::result::Error) {
    let err = Error::from(err);
    tracing::warn!(step, error = %err, "write batch failed");
}

/// Answers every job of a batch that could not run with `UNAVAILABLE`.
fn fail_all(batch: Vec<Box<dyn Job>>) {
    for job in batch {
        job.finish(Err(Error::Unavailable));
    }
}
