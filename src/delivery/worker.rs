//! The outbox worker: takes the events this process publishes, claims whatever else is due,
//! makes the attempts and records the outcomes.
//!
//! Events published here arrive already leased, through the [`queue`](super::queue) hand-off.
//! The worker also claims due rows from the outbox: on a wake-up (an event that found the queue
//! full, a redelivery) and on every poll, for retries, for work published by another process
//! and for leases that expired. A semaphore bounds the attempts in flight and each attempt runs
//! in its own task, so a receiver that never answers holds one slot until the timeout and
//! deliveries to other URLs carry on.
//!
//! Outcomes are written by one recorder task, a batch of them per write: an attempt's slot is
//! free as soon as the receiver has answered, and a thousand deliveries a second cost tens of
//! writes, not a thousand. Until its outcome is committed a delivery stays leased, so an
//! outcome lost to a crash means the event is sent again after the lease (at least once, same
//! `webhook-id`), never that it is dropped.
//!
//! On shutdown the worker stops taking work and gives in-flight attempts the attempt timeout
//! to finish; the recorder then writes what they found.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::DeliveryOptions;
use super::queue::{Handoff, Inbox};
use super::sender::{Attempted, Outgoing, Sender};
use crate::domain::settings::{EventKind, Settings};
use crate::error::Error;
use crate::storage::deliveries::{self, AttemptRow, DeliveryRow, Next, Outcome};
use crate::storage::settings::SigningSecrets;
use crate::storage::{Backend, Db, DbConnection, now_ms, settings};

/// The most deliveries claimed in one go.
const MAX_CLAIM: usize = 256;

/// The most outcomes written in one go.
const MAX_RECORD: usize = 512;

/// Outcomes waiting for the recorder before attempts wait to hand theirs over.
const RECORD_QUEUE: usize = 4096;

/// How often old finished deliveries are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60 * 60);

/// How long shutdown waits for the last outcomes to be written.
const RECORD_GRACE: Duration = Duration::from_secs(5);

/// Everything an attempt needs.
struct Ctx {
    db: Db,
    sender: Arc<Sender>,
    options: DeliveryOptions,
    outcomes: mpsc::Sender<Recorded>,
    next_retry: Arc<NextRetry>,
}

/// The soonest retry this process recorded and has not claimed yet, so that the worker claims
/// it on time instead of at the next poll (which may be up to a poll interval later).
struct NextRetry {
    /// Unix ms; `i64::MAX` when there is none.
    at_ms: AtomicI64,
    /// Told when `at_ms` moved sooner, so that a waiting worker waits for the new time.
    changed: Notify,
}

impl Default for NextRetry {
    fn default() -> Self {
        Self {
            at_ms: AtomicI64::new(i64::MAX),
            changed: Notify::new(),
        }
    }
}

impl NextRetry {
    fn at(&self) -> i64 {
        self.at_ms.load(Ordering::Acquire)
    }

    /// Notes a retry due at `at_ms`.
    fn note(&self, at_ms: i64) {
        if self.at_ms.fetch_min(at_ms, Ordering::AcqRel) > at_ms {
            self.changed.notify_one();
        }
    }

    /// Forgets `at_ms` once it is being claimed, unless a sooner one arrived meanwhile.
    fn done(&self, at_ms: i64) {
        let _ = (self.at_ms).compare_exchange(at_ms, i64::MAX, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Resolves at `at_ms` (Unix ms); never when it is `i64::MAX`.
async fn sleep_until_ms(at_ms: i64) {
    if at_ms == i64::MAX {
        return std::future::pending().await;
    }
    let wait = Duration::from_millis((at_ms - now_ms()).max(0) as u64);
    tokio::time::sleep(wait).await;
}

/// An outcome on its way to the recorder.
struct Recorded {
    outcome: Outcome,
    /// Set when the receiver answered 410 Gone: the webhook to disable.
    gone: Option<Gone>,
}

/// A webhook whose receiver answered 410 Gone.
struct Gone {
    account_id: i64,
    ai_interview_id: i64,
    kind: EventKind,
    /// The URL that answered; the webhook is disabled only if it still points there.
    url: String,
}

/// Makes the deliveries a dead predecessor left leased claimable again. Only for SQLite, which
/// one process serves, and only before anything is published: a publish leases its event to
/// this process, and releasing that lease would let the event be claimed and sent twice.
pub async fn release_leftover_leases(db: &Db) {
    if db.backend() != Backend::Sqlite {
        return;
    }
    match db.write(deliveries::release_all_leases).await {
        Ok(0) => {}
        Ok(n) => info!(
            deliveries = n,
            "resuming deliveries left in flight by the last run"
        ),
        Err(_) => warn!("could not release old delivery leases; they will expire"),
    }
}

/// Runs until `stop` is cancelled, then waits for in-flight attempts (bounded) and writes
/// their outcomes.
pub async fn run(
    db: Db,
    sender: Arc<Sender>,
    options: DeliveryOptions,
    handoff: Arc<Handoff>,
    mut inbox: Inbox,
    stop: CancellationToken,
) {
    let owner = handoff.owner().to_owned();
    let (outcomes, recorded) = mpsc::channel(RECORD_QUEUE);
    let next_retry = Arc::new(NextRetry::default());
    let recorder = tokio::spawn(record_loop(db.clone(), recorded, next_retry.clone()));
    let ctx = Arc::new(Ctx {
        db,
        sender,
        options,
        outcomes,
        next_retry,
    });
    let permits = Arc::new(Semaphore::new(ctx.options.concurrency.max(1)));
    let tracker = TaskTracker::new();
    tracker.spawn(purge_loop(ctx.clone(), stop.clone()));

    // The first poll one interval from now: the start-up claim below covers the present.
    let every = ctx.options.poll_interval;
    let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Claim at once on start: there may be work left from before.
    let mut claim_now = true;
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("never closed"),
            () = stop.cancelled() => break,
        };

        if !claim_now {
            // Not biased: while publishes keep the queue full, a poll tick or a wake-up must
            // still get its turn, or retries and other processes' events would wait for a lull.
            let due = ctx.next_retry.at();
            let handed = tokio::select! {
                () = stop.cancelled() => break,
                Some(fresh) = inbox.fresh.recv() => Some(fresh),
                () = handoff.woken() => None,
                _ = poll.tick() => None,
                // A sooner retry was recorded: wait again, now until that one.
                () = ctx.next_retry.changed.notified() => continue,
                () = sleep_until_ms(due) => {
                    ctx.next_retry.done(due);
                    None
                }
            };
            if let Some(fresh) = handed {
                let ctx = ctx.clone();
                tracker.spawn(async move {
                    deliver_fresh(&ctx, fresh).await;
                    drop(permit);
                });
                continue;
            }
        }

        let limit = (permits.available_permits() + 1).min(MAX_CLAIM);
        // The same lease the publishes write: one source, the hand-off.
        let lease = handoff.lease().as_millis() as i64;
        let owner_for_claim = owner.clone();
        let claimed = ctx
            .db
            .write(move |conn| {
                deliveries::claim_due(conn, &owner_for_claim, now_ms(), lease, limit as i64)
            })
            .await;
        let claimed = match claimed {
            Ok(rows) => rows,
            Err(_) => {
                warn!("could not claim deliveries; retrying shortly");
                Vec::new()
            }
        };
        // A full claim means more may be due: claim again rather than wait for the poll.
        claim_now = claimed.len() == limit;

        let mut first = Some(permit);
        for row in claimed {
            let permit = match first.take() {
                Some(p) => p,
                None => permits.clone().acquire_owned().await.expect("never closed"),
            };
            let ctx = ctx.clone();
            tracker.spawn(async move {
                deliver_leased(&ctx, row).await;
                drop(permit);
            });
        }
    }

    tracker.close();
    let grace = ctx.options.timeout + Duration::from_secs(1);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!("stopped with attempts still in flight; they will be retried after their lease");
    }
    // The recorder ends once every attempt has handed over its outcome and let go of `ctx`.
    drop(ctx);
    if tokio::time::timeout(RECORD_GRACE, recorder).await.is_err() {
        warn!(
            "stopped before every outcome was written; those deliveries are retried after their lease"
        );
    }
}

/// Delivers an event handed over by a publish in this process.
async fn deliver_fresh(ctx: &Ctx, row: DeliveryRow) {
    // The lease must outlast the attempt, or another process may claim the event meanwhile
    // and send it twice. An event that waited that long in the queue is left to expire and be
    // claimed again.
    let lease_left = row.lease_expires_at.unwrap_or(0) - now_ms();
    let needed = (ctx.options.timeout + Duration::from_secs(1)).as_millis() as i64;
    if lease_left < needed {
        debug!(delivery.id = %row.id, "handed-over event waited past its lease; it will be claimed again");
        return;
    }
    deliver_leased(ctx, row).await;
}

/// Delivers a leased delivery with the settings as they are now: a corrected password or URL
/// applies to the next attempt, and a disabled webhook cancels what is still queued for it.
async fn deliver_leased(ctx: &Ctx, row: DeliveryRow) {
    let (account, interview) = (row.account_id, row.ai_interview_id);
    let found = ctx
        .db
        .read(move |c| settings::get_for_delivery(c, account, interview))
        .await;
    match found {
        Ok(Some((current, secrets))) => attempt(ctx, row, current, secrets).await,
        Ok(None) => cancel(ctx, row, "the webhook settings were removed").await,
        // The lease expires and the attempt is made again later.
        Err(_) => {}
    }
}

/// Makes one attempt of a leased delivery and hands what came of it to the recorder.
async fn attempt(ctx: &Ctx, row: DeliveryRow, current: Settings, secrets: SigningSecrets) {
    let Some(kind) = EventKind::parse(&row.event) else {
        warn!(delivery.id = %row.id, "delivery with an unknown event; cancelling it");
        return cancel(ctx, row, "the event is not one this version delivers").await;
    };
    let Some(url) = current.enabled_url(kind) else {
        let why = format!("the {} webhook was disabled before delivery", kind.as_str());
        return cancel(ctx, row, &why).await;
    };

    let in_force = secrets.in_force(now_ms());
    let attempted = ctx
        .sender
        .send(Outgoing {
            url,
            webhook_id: &row.id,
            body: &row.payload,
            secrets: &in_force,
            auth: current.auth.as_ref(),
        })
        .await;

    let next = decide(ctx, &row, &attempted);
    log_attempt(&row, kind, &attempted, &next);
    let gone = (attempted.status == Some(410)).then(|| Gone {
        account_id: row.account_id,
        ai_interview_id: row.ai_interview_id,
        kind,
        url: url.to_owned(),
    });
    let outcome = Outcome {
        delivery_id: row.id.clone(),
        last_error: attempted.error.clone(),
        attempt: Some(AttemptRow {
            delivery_id: row.id,
            attempted_at: attempted.at_ms,
            duration_ms: attempted.duration.as_millis() as i64,
            http_status: attempted.status.map(i32::from),
            error: attempted.error,
            response_body: attempted.response_body,
        }),
        next,
    };
    hand_to_recorder(ctx, Recorded { outcome, gone }).await;
}

async fn hand_to_recorder(ctx: &Ctx, recorded: Recorded) {
    if ctx.outcomes.send(recorded).await.is_err() {
        // Only while shutting down; the lease expires and the event is sent again.
        warn!(
            "an outcome arrived after the recorder stopped; that delivery is retried after its lease"
        );
    }
}

/// Writes outcomes in batches until every attempt has let go of its sender.
async fn record_loop(db: Db, mut recorded: mpsc::Receiver<Recorded>, next_retry: Arc<NextRetry>) {
    let mut batch = Vec::with_capacity(MAX_RECORD);
    while recorded.recv_many(&mut batch, MAX_RECORD).await > 0 {
        let taken = Arc::new(std::mem::take(&mut batch));
        let all = taken.clone();
        if db.write(move |c| record(c, &all)).await.is_ok() {
            note_retries(&taken, &next_retry);
            continue;
        }
        // One outcome the database refuses must not cost the others theirs (each would be sent
        // again after its lease): write each as a job of its own. They are submitted together,
        // so the writer still commits them as one group, each in its own savepoint.
        let mut writes = tokio::task::JoinSet::new();
        for one in 0..taken.len() {
            let (db, shared) = (db.clone(), taken.clone());
            writes.spawn(async move {
                let result = db.write(move |c| record(c, &shared[one..=one])).await;
                (one, result)
            });
        }
        while let Some(Ok((one, result))) = writes.join_next().await {
            match result {
                Ok(()) => note_retries(&taken[one..=one], &next_retry),
                // Not recorded: the lease expires and the event is sent again (same webhook-id).
                Err(err) => warn!(
                    delivery.id = %taken[one].outcome.delivery_id, error = %err,
                    "could not record a delivery attempt"
                ),
            }
        }
    }
}

/// Tells the worker when the soonest of these recorded retries is due.
fn note_retries(recorded: &[Recorded], next_retry: &NextRetry) {
    let soonest = recorded
        .iter()
        .filter_map(|r| match r.outcome.next {
            Next::RetryAt(at) => Some(at),
            _ => None,
        })
        .min();
    if let Some(at) = soonest {
        next_retry.note(at);
    }
}

/// Writes outcomes (inside a writer job): disables the webhooks that answered 410, then logs
/// the attempts and moves the deliveries on.
fn record(conn: &mut DbConnection, outcomes: &[Recorded]) -> Result<(), Error> {
    let now = now_ms();
    for gone in outcomes.iter().filter_map(|r| r.gone.as_ref()) {
        let reason = "the receiver answered 410 Gone; update the webhook to enable it again";
        settings::disable_webhook(
            conn,
            gone.account_id,
            gone.ai_interview_id,
            gone.kind,
            &gone.url,
            reason,
            now,
        )?;
    }
    let outcomes: Vec<&Outcome> = outcomes.iter().map(|r| &r.outcome).collect();
    deliveries::record(conn, &outcomes, now)
}

fn decide(ctx: &Ctx, row: &DeliveryRow, attempted: &Attempted) -> Next {
    if attempted.succeeded() {
        return Next::Succeeded;
    }
    if attempted.status == Some(410) {
        return Next::Failed;
    }
    let step = usize::try_from(row.schedule_step).unwrap_or(usize::MAX);
    match ctx.options.schedule.next_wait(step, attempted.retry_after) {
        Some(wait) => Next::RetryAt(now_ms() + wait.as_millis() as i64),
        None => Next::Failed,
    }
}

async fn cancel(ctx: &Ctx, row: DeliveryRow, why: &str) {
    info!(delivery.id = %row.id, ai_interview_id = row.ai_interview_id, reason = why, "delivery cancelled");
    let outcome = Outcome {
        delivery_id: row.id,
        attempt: None,
        next: Next::Cancelled,
        last_error: Some(why.to_owned()),
    };
    hand_to_recorder(
        ctx,
        Recorded {
            outcome,
            gone: None,
        },
    )
    .await;
}

fn log_attempt(row: &DeliveryRow, kind: EventKind, attempted: &Attempted, next: &Next) {
    let duration_ms = attempted.duration.as_millis() as u64;
    let status = attempted.status.unwrap_or(0);
    let attempt = row.attempt_count + 1;
    match next {
        Next::Succeeded => info!(
            delivery.id = %row.id, ai_interview_id = row.ai_interview_id, event = kind.as_str(),
            http.status = status, duration_ms, attempt, "webhook delivered"
        ),
        Next::RetryAt(at) => warn!(
            delivery.id = %row.id, ai_interview_id = row.ai_interview_id, event = kind.as_str(),
            http.status = status, duration_ms, attempt,
            retry_in_ms = at - now_ms(), error = attempted.error.as_deref().unwrap_or(""),
            "webhook attempt failed; will retry"
        ),
        Next::Failed | Next::Cancelled => warn!(
            delivery.id = %row.id, ai_interview_id = row.ai_interview_id, event = kind.as_str(),
            http.status = status, duration_ms, attempt,
            error = attempted.error.as_deref().unwrap_or(""),
            "webhook delivery failed for good; it can be redelivered"
        ),
    }
}

/// Deletes finished deliveries older than the retention, in small batches.
async fn purge_loop(ctx: Arc<Ctx>, stop: CancellationToken) {
    let retention = ctx.options.retention.as_millis() as i64;
    loop {
        loop {
            let before = now_ms() - retention;
            match ctx
                .db
                .write(move |c| deliveries::purge_finished(c, before, 500))
                .await
            {
                Ok(n) if n > 0 => info!(deliveries = n, "purged old finished deliveries"),
                _ => break,
            }
        }
        tokio::select! {
            () = tokio::time::sleep(PURGE_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}
