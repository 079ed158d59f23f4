//! The rules of the service, free of transports and storage: settings validation and merge,
//! published events, webhook target checks, API keys and signing secrets.

pub mod api_key;
pub mod events;
pub mod settings;
pub mod signing;
pub mod url_guard;
