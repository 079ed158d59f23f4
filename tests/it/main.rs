//! Integration tests: the real server on loopback, driven over REST, gRPC and a real grpcurl,
//! on SQLite and (with `TEST_POSTGRES_URL`) on PostgreSQL. See `common` for the harness.

#[macro_use]
mod common;

mod cli;
mod concurrency;
mod delivery;
mod grpcurl;
mod process;
mod receiver;
mod restart;
mod settings_grpc;
mod settings_rest;
