//! The service's operations, called by both transports with the caller's account and a proto
//! request. Nothing here knows about gRPC metadata or HTTP; the rules live in [`crate::domain`].

pub mod auth;
pub mod events;
pub mod settings;

use std::sync::Arc;

use crate::delivery::DeliveryOptions;
use crate::delivery::queue::Handoff;
use crate::delivery::sender::Sender;
use crate::domain::url_guard::TargetPolicy;
use crate::storage::Db;

/// Everything the transports share, built once at startup.
#[derive(Clone)]
pub struct App {
    /// API-key checks.
    pub auth: Arc<auth::Authenticator>,
    /// Webhook settings.
    pub settings: settings::SettingsService,
    /// Events and the delivery log.
    pub events: events::EventsService,
    /// Sends webhooks (shared with the delivery worker).
    pub sender: Arc<Sender>,
}

impl App {
    /// Wires the services onto one database and one delivery worker's hand-off.
    pub fn new(
        db: Db,
        policy: TargetPolicy,
        delivery: &DeliveryOptions,
        handoff: Arc<Handoff>,
    ) -> anyhow::Result<Self> {
        let sender = Arc::new(Sender::new(
            policy,
            delivery.connect_timeout,
            delivery.timeout,
        )?);
        Ok(Self {
            auth: Arc::new(auth::Authenticator::new(db.clone())),
            settings: settings::SettingsService::new(db.clone(), policy),
            events: events::EventsService::new(db, sender.clone(), handoff),
            sender,
        })
    }
}
