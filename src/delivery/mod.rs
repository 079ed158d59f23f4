//! Webhook delivery: the outbox worker, the guarded HTTP client, the payload and the retry
//! schedule.

pub mod payload;
pub mod queue;
pub mod resolver;
pub mod schedule;
pub mod sender;
pub mod worker;

use std::time::Duration;

pub use schedule::RetrySchedule;

/// How deliveries are made; `serve` flags set each field.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Waits before each retry.
    pub schedule: RetrySchedule,
    /// Bound on connecting to a receiver.
    pub connect_timeout: Duration,
    /// Bound on a whole attempt.
    pub timeout: Duration,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// How long finished deliveries are kept.
    pub retention: Duration,
    /// How often the outbox is checked for retries, for work published by other processes
    /// and for leases that expired. Local publishes are handed to the worker directly; a
    /// publish that found the hand-off full, a redelivery and a retry due before the next poll
    /// wake it.
    pub poll_interval: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self {
            schedule: RetrySchedule::default(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            concurrency: 64,
            retention: Duration::from_secs(30 * 24 * 60 * 60),
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl DeliveryOptions {
    /// How long a claimed delivery stays ours: longer than any attempt can take, so that only
    /// a dead process's claims expire.
    pub fn lease(&self) -> Duration {
        self.timeout + self.connect_timeout + Duration::from_secs(5)
    }
}
