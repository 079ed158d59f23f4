//! The delivery outbox and its attempt log.
//!
//! A delivery row is written in the same commit that acknowledges `PublishEvent`. Workers claim
//! due rows by setting a lease (`lease_owner`, `lease_expires_at`); on PostgreSQL the claim
//! skips rows another process is claiming at the same moment (`FOR UPDATE SKIP LOCKED`), and a
//! lease that expires (its process died) makes the row claimable again. SQLite serves one
//! process, whose writer thread already serializes claims.

use diesel::prelude::*;

use super::schema::{deliveries as d, delivery_attempts as a};
use super::{DbConnection, on_backend};
use crate::error::Error;

/// Delivery states as stored.
pub mod state {
    /// Waiting for its next attempt.
    pub const PENDING: &str = "pending";
    /// A receiver answered 2xx.
    pub const SUCCEEDED: &str = "succeeded";
    /// The retry schedule is spent, or the receiver said 410 Gone.
    pub const FAILED: &str = "failed";
    /// The webhook was disabled or removed before delivery.
    pub const CANCELLED: &str = "cancelled";
}

/// One outbox row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = d)]
// None is bound as NULL rather than written as DEFAULT: the insert's SQL is then always the
// same, and its prepared statement is reused instead of built and parsed on every publish.
#[diesel(treat_none_as_null = true)]
pub struct DeliveryRow {
    /// `msg_…`, also the `webhook-id` header.
    pub id: String,
    pub account_id: i64,
    pub ai_interview_id: i64,
    /// `start` or `submission`.
    pub event: String,
    /// The exact body sent on every attempt.
    pub payload: String,
    pub idempotency_key: Option<String>,
    pub state: String,
    pub attempt_count: i64,
    /// Position in the retry schedule; a redelivery starts it again.
    pub schedule_step: i64,
    pub next_attempt_at: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One attempt as logged.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = a)]
// A missing status or error is bound as NULL rather than written as DEFAULT, so that the
// insert's SQL is always the same and its prepared statement is reused.
#[diesel(treat_none_as_null = true)]
pub struct AttemptRow {
    pub delivery_id: String,
    pub attempted_at: i64,
    pub duration_ms: i64,
    pub http_status: Option<i32>,
    pub error: Option<String>,
    pub response_body: Option<String>,
}

/// What an attempt decided for its delivery.
#[derive(Debug, Clone)]
pub enum Next {
    /// Delivered.
    Succeeded,
    /// Try again at this time (Unix ms).
    RetryAt(i64),
    /// Give up: schedule spent or receiver gone.
    Failed,
    /// The webhook is no longer enabled.
    Cancelled,
}

/// Inserts a delivery unless one with the same idempotency key exists for the account; returns
/// the stored row and whether it is new. The caller has looked the key up already; another
/// process may insert the same key between that look-up and here (PostgreSQL): the unique
/// index decides, and the loser returns the winner's row.
pub fn insert(conn: &mut DbConnection, row: &DeliveryRow) -> Result<(DeliveryRow, bool), Error> {
    let inserted = on_backend!(conn, |c| diesel::insert_into(d::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(c)?);
    if inserted == 1 {
        return Ok((row.clone(), true));
    }
    let key = row.idempotency_key.as_deref().ok_or(Error::Internal)?;
    let existing = by_idempotency_key(conn, row.account_id, key)?.ok_or(Error::Internal)?;
    Ok((existing, false))
}

/// The account's delivery created with `key`, if any.
pub fn by_idempotency_key(
    conn: &mut DbConnection,
    account_id: i64,
    key: &str,
) -> Result<Option<DeliveryRow>, Error> {
    // `get_result`, not `first`: the unique index allows one row, and `first`'s bound `LIMIT`
    // makes SQLite prepare the statement again on every call (BENCHMARKS.md, P1).
    Ok(on_backend!(conn, |c| d::table
        .filter(d::account_id.eq(account_id))
        .filter(d::idempotency_key.eq(key))
        .select(DeliveryRow::as_select())
        .get_result(c)
        .optional()?))
}

/// Claims up to `limit` due deliveries for `owner` until `now + lease_ms`.
pub fn claim_due(
    conn: &mut DbConnection,
    owner: &str,
    now: i64,
    lease_ms: i64,
    limit: i64,
) -> Result<Vec<DeliveryRow>, Error> {
    let due = d::table
        .filter(d::state.eq(state::PENDING))
        .filter(d::next_attempt_at.le(now))
        .filter(
            d::lease_expires_at
                .is_null()
                .or(d::lease_expires_at.le(now)),
        )
        .order(d::next_attempt_at.asc())
        .limit(limit)
        .select(d::id);
    let ids: Vec<String> = match conn {
        DbConnection::Postgresql(pg) => due.for_update().skip_locked().load(pg)?,
        DbConnection::Sqlite(_) => due.load(conn)?,
    };
    if ids.is_empty() {
        return Ok(Vec::new());
    }

    diesel::update(d::table.filter(d::id.eq_any(&ids)))
        .set((
            d::lease_owner.eq(owner),
            d::lease_expires_at.eq(now + lease_ms),
        ))
        .execute(conn)?;
    Ok(d::table
        .filter(d::id.eq_any(&ids))
        .select(DeliveryRow::as_select())
        .load(conn)?)
}

impl AttemptRow {
    /// This attempt with every NUL replaced: a receiver's answer may hold one, and PostgreSQL
    /// refuses NUL in text, which would make the outcome impossible to record (and the event
    /// be sent again forever).
    fn storable(&self) -> AttemptRow {
        let clean = |text: &Option<String>| text.as_ref().map(|t| t.replace('\0', "\u{FFFD}"));
        AttemptRow {
            error: clean(&self.error),
            response_body: clean(&self.response_body),
            ..self.clone()
        }
    }
}

/// What became of one leased delivery: the attempt made, if any, and what comes next.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub delivery_id: String,
    /// `None` when the delivery was settled without sending (e.g. cancelled).
    pub attempt: Option<AttemptRow>,
    pub next: Next,
    pub last_error: Option<String>,
}

/// Logs a batch of outcomes and moves their deliveries on, releasing their leases: the
/// attempts in one multi-row `INSERT`, the deliveries that succeeded in one `UPDATE`, the rest
/// one by one (they are the rare ones).
pub fn record(conn: &mut DbConnection, outcomes: &[&Outcome], now: i64) -> Result<(), Error> {
    let attempts: Vec<AttemptRow> = outcomes
        .iter()
        .filter_map(|o| o.attempt.as_ref().map(AttemptRow::storable))
        .collect();
    match conn {
        // One statement and one round trip for the lot.
        DbConnection::Postgresql(pg) if !attempts.is_empty() => {
            diesel::insert_into(a::table)
                .values(&attempts)
                .execute(pg)?;
        }
        // diesel runs a multi-row insert on SQLite as one insert per row inside a transaction
        // of its own, which cannot open inside the writer's; one cached insert per row is what
        // it would do anyway.
        DbConnection::Sqlite(sqlite) => {
            for attempt in &attempts {
                diesel::insert_into(a::table)
                    .values(attempt)
                    .execute(sqlite)?;
            }
        }
        DbConnection::Postgresql(_) => {}
    }

    let (succeeded, others): (Vec<&&Outcome>, Vec<&&Outcome>) = outcomes
        .iter()
        .partition(|o| o.attempt.is_some() && matches!(o.next, Next::Succeeded));
    if !succeeded.is_empty() {
        let ids: Vec<&str> = succeeded.iter().map(|o| o.delivery_id.as_str()).collect();
        settle(conn, &ids, &Next::Succeeded, None, true, now)?;
    }
    for o in others {
        let id = [o.delivery_id.as_str()];
        let attempted = o.attempt.is_some();
        let last_error = o.last_error.as_ref().map(|e| e.replace('\0', "\u{FFFD}"));
        settle(conn, &id, &o.next, last_error, attempted, now)?;
    }
    Ok(())
}

/// Moves deliveries that share an outcome on, and releases their leases.
fn settle(
    conn: &mut DbConnection,
    ids: &[&str],
    next: &Next,
    last_error: Option<String>,
    attempted: bool,
    now: i64,
) -> Result<(), Error> {
    let (new_state, next_at) = match next {
        Next::Succeeded => (state::SUCCEEDED, None),
        Next::RetryAt(at) => (state::PENDING, Some(*at)),
        Next::Failed => (state::FAILED, None),
        Next::Cancelled => (state::CANCELLED, None),
    };
    let step = if matches!(next, Next::RetryAt(_)) {
        1
    } else {
        0
    };
    let count = if attempted { 1 } else { 0 };
    diesel::update(d::table.filter(d::id.eq_any(ids)))
        .set((
            d::state.eq(new_state),
            d::next_attempt_at.eq(next_at.unwrap_or(now)),
            d::attempt_count.eq(d::attempt_count + count),
            d::schedule_step.eq(d::schedule_step + step),
            d::last_error.eq(last_error),
            d::lease_owner.eq(None::<String>),
            d::lease_expires_at.eq(None::<i64>),
            d::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// One delivery of the account, with its attempts, oldest attempt first.
pub fn get(
    conn: &mut DbConnection,
    account_id: i64,
    id: &str,
) -> Result<Option<(DeliveryRow, Vec<AttemptRow>)>, Error> {
    let Some(row) = d::table
        .filter(d::id.eq(id))
        .filter(d::account_id.eq(account_id))
        .select(DeliveryRow::as_select())
        .first(conn)
        .optional()?
    else {
        return Ok(None);
    };
    let attempts = a::table
        .filter(a::delivery_id.eq(id))
        .order((a::attempted_at.asc(), a::id.asc()))
        .select(AttemptRow::as_select())
        .load(conn)?;
    Ok(Some((row, attempts)))
}

/// A page of one interview's deliveries, newest first. `after` is the `(created_at, id)` of
/// the last row of the previous page.
pub fn list(
    conn: &mut DbConnection,
    account_id: i64,
    ai_interview_id: i64,
    state_filter: Option<&str>,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, Error> {
    let mut query = d::table
        .filter(d::account_id.eq(account_id))
        .filter(d::ai_interview_id.eq(ai_interview_id))
        .order((d::created_at.desc(), d::id.desc()))
        .limit(limit)
        .select(DeliveryRow::as_select())
        .into_boxed();
    if let Some(s) = state_filter {
        query = query.filter(d::state.eq(s.to_owned()));
    }
    if let Some((created_at, id)) = after {
        query = query.filter(
            d::created_at
                .lt(created_at)
                .or(d::created_at.eq(created_at).and(d::id.lt(id))),
        );
    }
    Ok(query.load(conn)?)
}

/// Queues a delivery again from the start of the retry schedule, keeping its id. `None` when
/// the account has no such delivery; a conflict while an attempt of it is under way.
pub fn redeliver(
    conn: &mut DbConnection,
    account_id: i64,
    id: &str,
    now: i64,
) -> Result<Option<DeliveryRow>, Error> {
    // Only the lease matters here; the attempt log can be long.
    let lease: Option<Option<i64>> = d::table
        .filter(d::id.eq(id))
        .filter(d::account_id.eq(account_id))
        .select(d::lease_expires_at)
        .get_result(conn)
        .optional()?;
    let Some(lease) = lease else {
        return Ok(None);
    };
    if lease.is_some_and(|until| until > now) {
        return Err(Error::Conflict(
            "an attempt of this delivery is under way; redeliver it once it has finished"
                .to_owned(),
        ));
    }
    let n = diesel::update(
        d::table
            .filter(d::id.eq(id))
            .filter(d::account_id.eq(account_id)),
    )
    .set((
        d::state.eq(state::PENDING),
        d::next_attempt_at.eq(now),
        d::schedule_step.eq(0),
        d::lease_owner.eq(None::<String>),
        d::lease_expires_at.eq(None::<i64>),
        d::updated_at.eq(now),
    ))
    .execute(conn)?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(
        d::table
            .find(id)
            .select(DeliveryRow::as_select())
            .get_result(conn)?,
    ))
}

/// Releases every lease: used at start-up on SQLite, where no other process can hold one.
pub fn release_all_leases(conn: &mut DbConnection) -> Result<usize, Error> {
    Ok(
        diesel::update(d::table.filter(d::lease_owner.is_not_null()))
            .set((
                d::lease_owner.eq(None::<String>),
                d::lease_expires_at.eq(None::<i64>),
            ))
            .execute(conn)?,
    )
}

/// Deletes finished deliveries last changed before `before` (Unix ms), at most `limit` of them;
/// their attempts go with them.
pub fn purge_finished(conn: &mut DbConnection, before: i64, limit: i64) -> Result<usize, Error> {
    let old: Vec<String> = d::table
        .filter(d::state.ne(state::PENDING))
        .filter(d::updated_at.lt(before))
        .limit(limit)
        .select(d::id)
        .load(conn)?;
    if old.is_empty() {
        return Ok(0);
    }
    diesel::delete(a::table.filter(a::delivery_id.eq_any(&old))).execute(conn)?;
    Ok(diesel::delete(d::table.filter(d::id.eq_any(&old))).execute(conn)?)
}
