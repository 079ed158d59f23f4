//! The `interview-webhooks` binary: parses flags, starts logging, runs the command.

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = interview_webhooks::config::Cli::parse();

    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal; log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    tokio::runtime::Runtime::new()?.block_on(interview_webhooks::cli::run(cli))
}
