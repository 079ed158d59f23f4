//! The hand-off from `PublishEvent` to this process's delivery worker.
//!
//! An event published here is committed already leased to this process's worker and passed to
//! it in memory, so its first attempt needs no claim: one write fewer per event, and no scan
//! of the outbox (BENCHMARKS.md). The attempt still reads the settings as they are when it
//! starts, like any other. Nothing is lost by it: the row
//! is in the outbox like any other, so if this process dies before the attempt is recorded,
//! the lease expires and whichever worker claims next delivers it (at least once, same
//! `webhook-id`).
//!
//! A place in the queue is reserved before the publish is written; when the worker is so far
//! behind that none is free, the event is committed unleased and the worker finds it by its
//! next claim, as it finds retries and other processes' events.

use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::storage::deliveries::DeliveryRow;

/// The publishing side: reserves places and hands events over.
pub struct Handoff {
    owner: String,
    lease: Duration,
    places: mpsc::Sender<DeliveryRow>,
    wake: Notify,
}

/// The worker's side of the hand-off.
pub struct Inbox {
    /// Events handed over, as committed, oldest first.
    pub fresh: mpsc::Receiver<DeliveryRow>,
}

/// A reserved place in the worker's queue: the event written with it is leased to the worker.
pub struct Place(mpsc::OwnedPermit<DeliveryRow>);

impl Handoff {
    /// A hand-off holding at most `capacity` events, for a worker that leases as `owner` for
    /// `lease`.
    pub fn new(owner: String, lease: Duration, capacity: usize) -> (Self, Inbox) {
        let (places, fresh) = mpsc::channel(capacity.max(1));
        let handoff = Self {
            owner,
            lease,
            places,
            wake: Notify::new(),
        };
        (handoff, Inbox { fresh })
    }

    /// The name this process's worker leases deliveries under.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// How long a lease lasts.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// A place for one event, if the worker has room.
    pub fn reserve(&self) -> Option<Place> {
        self.places.clone().try_reserve_owned().ok().map(Place)
    }

    /// Tells the worker that the outbox has work it has not been handed (an unleased publish, a
    /// redelivery).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves when [`Handoff::wake`] was called since the last time.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}

impl Place {
    /// Hands the committed event over.
    pub fn send(self, row: DeliveryRow) {
        self.0.send(row);
    }
}
