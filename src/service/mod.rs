//! The service's operations, called by both transports with the caller's account and a proto
//! request. Nothing here knows about gRPC metadata or HTTP; the rules live in [`crate::domain`].

pub mod auth;
pub mod settings;

use std::sync::Arc;

use crate::domain::url_guard::TargetPolicy;
use crate::storage::Db;

/// Everything the transports share, built once at startup.
#[derive(Clone)]
pub struct App {
    /// API-key checks.
    pub auth: Arc<auth::Authenticator>,
    /// Webhook settings.
    pub settings: settings::SettingsService,
}

impl App {
    /// Wires the services onto one database.
    pub fn new(db: Db, policy: TargetPolicy) -> Self {
        Self {
            auth: Arc::new(auth::Authenticator::new(db.clone())),
            settings: settings::SettingsService::new(db, policy),
        }
    }
}
