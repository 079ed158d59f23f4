//! interview-webhooks: holds each AI interview's webhook settings and delivers the webhooks.
//!
//! Layout, with imports pointing down only:
//! - transports: [`grpc`] (tonic) and [`http`] (the REST adapter, axum);
//! - [`service`]: the operations both transports call;
//! - [`domain`]: validation and merge rules, URL guard, API keys, signing;
//! - [`storage`]: diesel on SQLite or PostgreSQL, with group commit;
//! - [`delivery`]: the outbox worker that sends the webhooks.

pub mod cli;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod http;
pub mod pb;
pub mod server;
pub mod service;
pub mod storage;
