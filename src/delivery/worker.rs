//! The outbox worker: claims due deliveries, makes the attempts, records the outcomes.
//!
//! Local publishes wake it at once; it also polls, for work published by another process and
//! for claims whose lease expired. A semaphore bounds the attempts in flight and each attempt
//! runs in its own task, so a receiver that never answers holds one slot until the timeout and
//! deliveries to other URLs carry on. On shutdown it stops claiming and gives in-flight
//! attempts the attempt timeout to finish; whatever is cut short keeps its lease until it
//! expires and is then delivered again (at least once, same `webhook-id`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::DeliveryOptions;
use super::sender::{Attempted, Outgoing, Sender};
use crate::domain::settings::EventKind;
use crate::error::Error;
use crate::storage::deliveries::{self, AttemptRow, DeliveryRow, Next};
use crate::storage::{Backend, Db, now_ms, settings};

/// The most deliveries claimed in one go.
const MAX_CLAIM: usize = 256;

/// How often old finished deliveries are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60 * 60);

/// Everything an attempt needs.
struct Ctx {
    db: Db,
    sender: Arc<Sender>,
    options: DeliveryOptions,
}

/// Runs until `stop` is cancelled, then waits for in-flight attempts (bounded).
pub async fn run(
    db: Db,
    sender: Arc<Sender>,
    options: DeliveryOptions,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let owner = super::payload::new_delivery_id().replacen("msg_", "worker_", 1);
    if db.backend() == Backend::Sqlite {
        // One process per SQLite file: any lease left behind belongs to a dead predecessor.
        match db.write(deliveries::release_all_leases).await {
            Ok(0) => {}
            Ok(n) => info!(
                deliveries = n,
                "resuming deliveries left in flight by the last run"
            ),
            Err(_) => warn!("could not release old delivery leases; they will expire"),
        }
    }

    let ctx = Arc::new(Ctx {
        db,
        sender,
        options,
    });
    let permits = Arc::new(Semaphore::new(ctx.options.concurrency.max(1)));
    let tracker = TaskTracker::new();
    tracker.spawn(purge_loop(ctx.clone(), stop.clone()));

    loop {
        let first = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("never closed"),
            () = stop.cancelled() => break,
        };
        let limit = (permits.available_permits() + 1).min(MAX_CLAIM) as i64;
        let lease = ctx.options.lease().as_millis() as i64;
        let owner_for_claim = owner.clone();
        let claimed = ctx
            .db
            .write(move |conn| {
                deliveries::claim_due(conn, &owner_for_claim, now_ms(), lease, limit)
            })
            .await;

        let claimed = match claimed {
            Ok(rows) if !rows.is_empty() => rows,
            result => {
                drop(first);
                if result.is_err() {
                    warn!("could not claim deliveries; retrying shortly");
                }
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(ctx.options.poll_interval) => {}
                    () = stop.cancelled() => break,
                }
                continue;
            }
        };

        let mut first = Some(first);
        for row in claimed {
            let permit = match first.take() {
                Some(p) => p,
                None => permits.clone().acquire_owned().await.expect("never closed"),
            };
            let ctx = ctx.clone();
            tracker.spawn(async move {
                deliver(&ctx, row).await;
                drop(permit);
            });
        }
    }

    tracker.close();
    let grace = ctx.options.timeout + Duration::from_secs(1);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!("stopped with attempts still in flight; they will be retried after their lease");
    }
}

/// Makes one attempt of a claimed delivery and records what came of it.
async fn deliver(ctx: &Ctx, row: DeliveryRow) {
    let Some(kind) = EventKind::parse(&row.event) else {
        warn!(delivery.id = %row.id, "delivery with an unknown event; cancelling it");
        let id = row.id.clone();
        let _ = ctx
            .db
            .write(move |c| deliveries::finish(c, &id, &Next::Cancelled, None, false, now_ms()))
            .await;
        return;
    };

    // Each attempt uses the settings as they are now: a corrected password or URL applies to
    // the next retry, and a disabled webhook cancels what is still queued for it.
    let (account, interview) = (row.account_id, row.ai_interview_id);
    let found = ctx
        .db
        .read(move |c| settings::get_for_delivery(c, account, interview))
        .await;
    let (current, secrets) = match found {
        Ok(Some(found)) => found,
        Ok(None) => return cancel(ctx, &row, "the webhook settings were removed").await,
        // The lease expires and the attempt is made again later.
        Err(_) => return,
    };
    let Some(url) = current.enabled_url(kind) else {
        let why = format!("the {} webhook was disabled before delivery", kind.as_str());
        return cancel(ctx, &row, &why).await;
    };

    let now = now_ms();
    let in_force = secrets.in_force(now);
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

    let gone = attempted.status == Some(410);
    let next = decide(ctx, &row, &attempted);
    log_attempt(&row, kind, &attempted, &next);

    let attempt = AttemptRow {
        delivery_id: row.id.clone(),
        attempted_at: attempted.at_ms,
        duration_ms: attempted.duration.as_millis() as i64,
        http_status: attempted.status.map(i32::from),
        error: attempted.error.clone(),
        response_body: attempted.response_body.clone(),
    };
    let result = ctx
        .db
        .write(move |c| {
            let now = now_ms();
            if gone {
                let reason =
                    "the receiver answered 410 Gone; update the webhook to enable it again";
                settings::disable_webhook(c, account, interview, kind, reason, now)?;
            }
            deliveries::record_attempt(c, &attempt, &next, now)
        })
        .await;
    if let Err(err) = result {
        // Not recorded: the lease expires and the event is sent again (same webhook-id).
        warn!(delivery.id = %row.id, error = %err, "could not record a delivery attempt");
    }
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

async fn cancel(ctx: &Ctx, row: &DeliveryRow, why: &str) {
    info!(delivery.id = %row.id, ai_interview_id = row.ai_interview_id, reason = why, "delivery cancelled");
    let (id, why) = (row.id.clone(), why.to_owned());
    let result: Result<(), Error> = ctx
        .db
        .write(move |c| {
            let why = Some(why.clone());
            deliveries::finish(c, &id, &Next::Cancelled, why, false, now_ms())
        })
        .await;
    if result.is_err() {
        warn!(delivery.id = %row.id, "could not record a cancellation; it will be retried");
    }
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
