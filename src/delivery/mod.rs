//! Webhook delivery: the outbox worker, the guarded HTTP client and signing.

pub mod resolver;
