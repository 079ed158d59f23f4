//! `PublishEvent` and the delivery log: list, get, redeliver, test event.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tracing::info;

use super::auth::AccountId;

use crate::delivery::payload;
use crate::delivery::queue::Handoff;
use crate::delivery::sender::{Attempted, Outgoing, Sender};
use crate::domain::events::{self, NewEvent};
use crate::domain::settings::{EventKind, check_interview_id};
use crate::error::Error;
use crate::pb;
use crate::pb::timestamp;
use crate::storage::deliveries::{self, AttemptRow, DeliveryRow, state};
use crate::storage::{Db, now_ms, settings};

/// Page sizes of `ListDeliveries`.
const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 200;

/// The event operations.
#[derive(Clone)]
pub struct EventsService {
    db: Db,
    sender: Arc<Sender>,
    handoff: Arc<Handoff>,
}

impl EventsService {
    /// Events over `db`, handed to this process's delivery worker through `handoff`.
    pub fn new(db: Db, sender: Arc<Sender>, handoff: Arc<Handoff>) -> Self {
        Self {
            db,
            sender,
            handoff,
        }
    }

    /// Commits the event to the outbox and returns its delivery, or why nothing is sent.
    pub async fn publish(
        &self,
        account: AccountId,
        req: pb::PublishEventRequest,
    ) -> Result<pb::PublishEventResponse, Error> {
        let NewEvent {
            ai_interview_id,
            kind,
            idempotency_key,
            data,
        } = events::parse_publish(req)?;

        // With a place in the worker's queue the event is written leased to this process's
        // worker and handed over after the commit (see `delivery::queue`); without one it is
        // written unleased and the worker claims it.
        let place = self.handoff.reserve();
        let now = now_ms();
        let lease_until = now + self.handoff.lease().as_millis() as i64;
        let row = DeliveryRow {
            id: payload::new_delivery_id(),
            account_id: account.0,
            ai_interview_id,
            event: kind.as_str().to_owned(),
            payload: payload::body(kind, ai_interview_id, data, now),
            idempotency_key,
            state: state::PENDING.to_owned(),
            attempt_count: 0,
            schedule_step: 0,
            next_attempt_at: now,
            lease_owner: place.as_ref().map(|_| self.handoff.owner().to_owned()),
            lease_expires_at: place.as_ref().map(|_| lease_until),
            last_error: None,
            created_at: now,
            updated_at: now,
        };
        let outcome = self
            .db
            .write(move |conn| publish_in_tx(conn, &row, kind))
            .await?;

        let Queued { row, is_new } = match outcome {
            Published::Queued(queued) => *queued,
            Published::Skipped(reason) => {
                return Ok(pb::PublishEventResponse {
                    delivery: None,
                    skipped_reason: reason,
                });
            }
        };
        if is_new {
            info!(
                delivery.id = %row.id, account_id = account.0,
                ai_interview_id = row.ai_interview_id, event = %row.event,
                "event queued for delivery"
            );
        }
        let reply = pb::PublishEventResponse {
            delivery: Some(to_proto(&row, &[])),
            skipped_reason: String::new(),
        };
        match place {
            Some(place) if is_new => place.send(row),
            _ if is_new => self.handoff.wake(),
            // A repeated idempotency key: the first publish already queued it.
            _ => {}
        }
        Ok(reply)
    }

    /// One page of an interview's deliveries, newest first.
    pub async fn list(
        &self,
        account: AccountId,
        req: pb::ListDeliveriesRequest,
    ) -> Result<pb::ListDeliveriesResponse, Error> {
        let id = check_interview_id(req.ai_interview_id)?;
        let state_filter = state_name(req.state)?;
        let after = match req.page_token.as_str() {
            "" => None,
            token => Some(decode_page_token(token)?),
        };
        let limit = match i64::from(req.page_size) {
            n if n <= 0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };

        let first_page = after.is_none();
        let rows = self
            .db
            .read(move |c| {
                let rows = deliveries::list(c, account.0, id, state_filter, after, limit + 1)?;
                // As for settings: another account's interview looks like none at all.
                if rows.is_empty() && first_page && settings::get(c, account.0, id)?.is_none() {
                    return Err(Error::interview_not_found(id));
                }
                Ok(rows)
            })
            .await?;
        let more = rows.len() as i64 > limit;
        let rows = &rows[..rows.len().min(limit as usize)];
        let next_page_token = match rows.last() {
            Some(last) if more => encode_page_token(last),
            _ => String::new(),
        };
        Ok(pb::ListDeliveriesResponse {
            deliveries: rows.iter().map(|r| to_proto(r, &[])).collect(),
            next_page_token,
        })
    }

    /// One delivery with every attempt.
    pub async fn get(&self, account: AccountId, id: String) -> Result<pb::Delivery, Error> {
        let shown = id.clone();
        let (row, attempts) = self
            .db
            .read(move |c| deliveries::get(c, account.0, &id))
            .await?
            .ok_or_else(|| delivery_not_found(&shown))?;
        Ok(to_proto(&row, &attempts))
    }

    /// Queues a delivery again, from the start of the retry schedule, keeping its id.
    pub async fn redeliver(&self, account: AccountId, id: String) -> Result<pb::Delivery, Error> {
        let shown = id.clone();
        let row = self
            .db
            .write(move |c| deliveries::redeliver(c, account.0, &id, now_ms()))
            .await?
            .ok_or_else(|| delivery_not_found(&shown))?;
        self.handoff.wake();
        info!(delivery.id = %row.id, account_id = account.0, "delivery queued again");
        Ok(to_proto(&row, &[]))
    }

    /// Sends a test event to the interview's webhook now (enabled or not) and reports the
    /// receiver's answer. Nothing is queued or retried.
    pub async fn send_test(
        &self,
        account: AccountId,
        req: pb::SendTestEventRequest,
    ) -> Result<pb::SendTestEventResponse, Error> {
        let (id, kind) = events::parse_test(&req)?;

        let (current, secrets) = self
            .db
            .read(move |c| settings::get_for_delivery(c, account.0, id))
            .await?
            .ok_or_else(|| Error::interview_not_found(id))?;
        let url = current
            .webhook(kind)
            .and_then(|w| w.url.clone())
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "the {} webhook has no URL; set webhooks.{}.url first",
                    kind.as_str(),
                    kind.as_str()
                ))
            })?;

        let mut data = serde_json::Map::new();
        data.insert("test".to_owned(), serde_json::Value::Bool(true));
        let now = now_ms();
        let body = payload::body(kind, id, data, now);
        let webhook_id = payload::new_delivery_id().replacen("msg_", "msg_test_", 1);
        let in_force = secrets.in_force(now);
        let attempted = self
            .sender
            .send(Outgoing {
                url: &url,
                webhook_id: &webhook_id,
                body: &body,
                secrets: &in_force,
                auth: current.auth.as_ref(),
            })
            .await;

        info!(
            account_id = account.0,
            ai_interview_id = id,
            event = kind.as_str(),
            http.status = attempted.status.unwrap_or(0),
            success = attempted.succeeded(),
            "test event sent"
        );
        Ok(pb::SendTestEventResponse {
            success: attempted.succeeded(),
            attempt: Some(attempt_to_proto(&attempted_row(&webhook_id, &attempted))),
        })
    }
}

enum Published {
    /// Boxed: it dwarfs the other variant.
    Queued(Box<Queued>),
    Skipped(String),
}

struct Queued {
    /// The stored delivery.
    row: DeliveryRow,
    is_new: bool,
}

fn publish_in_tx(
    conn: &mut crate::storage::DbConnection,
    row: &DeliveryRow,
    kind: EventKind,
) -> Result<Published, Error> {
    // A repeated key answers with the first delivery, even if the webhook changed since.
    if let Some(key) = &row.idempotency_key
        && let Some(first) = deliveries::by_idempotency_key(conn, row.account_id, key)?
    {
        same_event(&first, row)?;
        return Ok(Published::Queued(Box::new(Queued {
            row: first,
            is_new: false,
        })));
    }

    let found = settings::get(conn, row.account_id, row.ai_interview_id)?;
    match found {
        Some(stored) if stored.settings.enabled_url(kind).is_some() => {}
        Some(_) => {
            let why = format!("the {} webhook is disabled or unset", kind.as_str());
            return Ok(Published::Skipped(why));
        }
        None => {
            let why = format!(
                "AI interview {} has no webhook settings",
                row.ai_interview_id
            );
            return Ok(Published::Skipped(why));
        }
    }
    let (stored, is_new) = deliveries::insert(conn, row)?;
    same_event(&stored, row)?;
    Ok(Published::Queued(Box::new(Queued {
        row: stored,
        is_new,
    })))
}

/// An idempotency key names one event: reusing it for another is a mistake worth an error,
/// not a silent answer about the first event.
fn same_event(first: &DeliveryRow, new: &DeliveryRow) -> Result<(), Error> {
    if first.ai_interview_id == new.ai_interview_id && first.event == new.event {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "idempotency_key was already used for the {} event of AI interview {}; use a new key \
         for a different event",
        first.event, first.ai_interview_id
    )))
}

fn state_name(state: i32) -> Result<Option<&'static str>, Error> {
    match pb::DeliveryState::try_from(state) {
        Ok(pb::DeliveryState::Unspecified) => Ok(None),
        Ok(pb::DeliveryState::Pending) => Ok(Some(state::PENDING)),
        Ok(pb::DeliveryState::Succeeded) => Ok(Some(state::SUCCEEDED)),
        Ok(pb::DeliveryState::Failed) => Ok(Some(state::FAILED)),
        Ok(pb::DeliveryState::Cancelled) => Ok(Some(state::CANCELLED)),
        Err(_) => Err(Error::invalid(
            "state",
            "one of PENDING, SUCCEEDED, FAILED, CANCELLED",
        )),
    }
}

fn delivery_not_found(id: &str) -> Error {
    // Echo only ids of our own shape, so the message never repeats arbitrary input.
    let shown = if id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        id
    } else {
        "(that id)"
    };
    Error::NotFound(format!("no delivery {shown} for this account"))
}

fn encode_page_token(last: &DeliveryRow) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", last.created_at, last.id))
}

fn decode_page_token(token: &str) -> Result<(i64, String), Error> {
    let bad = || {
        Error::invalid(
            "page_token",
            "not a token from a previous page; omit it to start over",
        )
    };
    let text =
        String::from_utf8(URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?).map_err(|_| bad())?;
    let (created_at, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((created_at.parse().map_err(|_| bad())?, id.to_owned()))
}

fn attempted_row(delivery_id: &str, a: &Attempted) -> AttemptRow {
    AttemptRow {
        delivery_id: delivery_id.to_owned(),
        attempted_at: a.at_ms,
        duration_ms: a.duration.as_millis() as i64,
        http_status: a.status.map(i32::from),
        error: a.error.clone(),
        response_body: a.response_body.clone(),
    }
}

fn attempt_to_proto(a: &AttemptRow) -> pb::Attempt {
    pb::Attempt {
        time: Some(timestamp(a.attempted_at)),
        duration_ms: a.duration_ms,
        http_status: a.http_status.unwrap_or(0),
        error: a.error.clone().unwrap_or_default(),
        response_body: a.response_body.clone().unwrap_or_default(),
    }
}

/// A delivery as the API shows it.
pub fn to_proto(row: &DeliveryRow, attempts: &[AttemptRow]) -> pb::Delivery {
    let event = match EventKind::parse(&row.event) {
        Some(EventKind::Start) => pb::Event::Start,
        Some(EventKind::Submission) => pb::Event::Submission,
        None => pb::Event::Unspecified,
    };
    let state = match row.state.as_str() {
        state::PENDING => pb::DeliveryState::Pending,
        state::SUCCEEDED => pb::DeliveryState::Succeeded,
        state::FAILED => pb::DeliveryState::Failed,
        state::CANCELLED => pb::DeliveryState::Cancelled,
        _ => pb::DeliveryState::Unspecified,
    };
    pb::Delivery {
        id: row.id.clone(),
        ai_interview_id: row.ai_interview_id,
        event: event.into(),
        state: state.into(),
        create_time: Some(timestamp(row.created_at)),
        next_attempt_time: (row.state == state::PENDING).then(|| timestamp(row.next_attempt_at)),
        attempt_count: row.attempt_count as i32,
        last_error: row.last_error.clone().unwrap_or_default(),
        attempts: attempts.iter().map(attempt_to_proto).collect(),
    }
}
