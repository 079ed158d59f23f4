//! Command-line flags and the environment variables that stand in for them.
//!
//! Every `serve` flag can be set by an environment variable, listed in `--help`:
//!
//! | flag | variable | default |
//! |---|---|---|
//! | `--database-url` | `INTERVIEW_WEBHOOKS_DATABASE_URL` | `sqlite://interview-webhooks.db` |
//! | `--grpc-addr` | `INTERVIEW_WEBHOOKS_GRPC_ADDR` | `127.0.0.1:50051` |
//! | `--http-addr` | `INTERVIEW_WEBHOOKS_HTTP_ADDR` | `127.0.0.1:8080` |
//! | `--allow-private-webhook-targets` | `INTERVIEW_WEBHOOKS_ALLOW_PRIVATE_WEBHOOK_TARGETS` | off |
//! | `--retry-schedule` | `INTERVIEW_WEBHOOKS_RETRY_SCHEDULE` | `5s,5m,30m,2h,5h,10h,10h` |
//! | `--delivery-connect-timeout` | `INTERVIEW_WEBHOOKS_DELIVERY_CONNECT_TIMEOUT` | `5s` |
//! | `--delivery-timeout` | `INTERVIEW_WEBHOOKS_DELIVERY_TIMEOUT` | `15s` |
//! | `--delivery-concurrency` | `INTERVIEW_WEBHOOKS_DELIVERY_CONCURRENCY` | `64` |
//! | `--delivery-retention` | `INTERVIEW_WEBHOOKS_DELIVERY_RETENTION` | `30d` |
//!
//! Logging follows `RUST_LOG` (default `info`); logs go to stderr, so stdout carries only what
//! a command prints for scripts (a new API key).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::delivery::RetrySchedule;

/// The default SQLite file, in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://interview-webhooks.db";

/// interview-webhooks: AI-interview webhook settings over gRPC and REST, and their delivery.
#[derive(Debug, Parser)]
#[command(name = "interview-webhooks", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC and REST servers (applies pending migrations first).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseArgs),
    /// Manage API keys.
    #[command(subcommand, name = "api-keys")]
    ApiKeys(ApiKeysCommand),
}

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// `sqlite://PATH` (or a bare path) for SQLite, `postgres://USER@HOST:PORT/DB` for
    /// PostgreSQL.
    #[arg(long, env = "INTERVIEW_WEBHOOKS_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

/// Flags of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Address of the gRPC server.
    #[arg(
        long,
        env = "INTERVIEW_WEBHOOKS_GRPC_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub grpc_addr: SocketAddr,

    /// Address of the REST adapter and `/healthz`.
    #[arg(
        long,
        env = "INTERVIEW_WEBHOOKS_HTTP_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub http_addr: SocketAddr,

    /// Accept webhook URLs on loopback, private, link-local and CGNAT addresses (for
    /// self-hosted receivers). Cloud metadata addresses stay refused.
    #[arg(
        long,
        env = "INTERVIEW_WEBHOOKS_ALLOW_PRIVATE_WEBHOOK_TARGETS",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub allow_private_webhook_targets: bool,

    /// Waits before each retry of a failed delivery, e.g. `1s,2s,5s`; the first attempt is
    /// immediate. Empty: never retry.
    #[arg(long, env = "INTERVIEW_WEBHOOKS_RETRY_SCHEDULE", default_value = crate::delivery::schedule::DEFAULT_SCHEDULE, value_parser = RetrySchedule::parse)]
    pub retry_schedule: RetrySchedule,

    /// Bound on connecting to a webhook receiver.
    #[arg(long, env = "INTERVIEW_WEBHOOKS_DELIVERY_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub delivery_connect_timeout: Duration,

    /// Bound on a whole delivery attempt, answer included.
    #[arg(long, env = "INTERVIEW_WEBHOOKS_DELIVERY_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub delivery_timeout: Duration,

    /// Delivery attempts in flight at once.
    #[arg(long, env = "INTERVIEW_WEBHOOKS_DELIVERY_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub delivery_concurrency: u16,

    /// How long finished deliveries (and their attempts) are kept.
    #[arg(long, env = "INTERVIEW_WEBHOOKS_DELIVERY_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub delivery_retention: Duration,
}

/// `api-keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApiKeysCommand {
    /// Create a key for an account (created if new) and print it, alone, on stdout.
    Create {
        /// The account's name.
        #[arg(long)]
        account: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List keys (never their secrets).
    List {
        /// Only this account's keys.
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Revoke a key by its id (as `list` shows it) or by the whole key.
    Revoke {
        /// The key id, or the whole key.
        key: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}
