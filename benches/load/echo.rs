//! The baseline: a bare tonic server in the shape of `interview-webhooks serve` (its own
//! process, the same `Runtime::new()` multi-threaded runtime, the same tracing subscriber
//! writing to stderr, `Server::builder().add_routes(..)` on an already-bound listener) serving
//! only `grpc.health.v1.Health`. Its `Check` with an empty request is the empty unary call:
//! no API key check, no database, a two-byte answer. What the real server adds on top of this
//! is what the ratios measure.

use std::io::Read as _;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing_subscriber::EnvFilter;

/// Runs the echo server until stdin closes (the bench holds the other end, so the server
/// never outlives it). Prints its address on stdout once it listens.
pub fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();

    tokio::runtime::Runtime::new()?.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);

        let stdin_closed = async {
            let _ = tokio::task::spawn_blocking(|| {
                let mut sink = Vec::new();
                let _ = std::io::stdin().read_to_end(&mut sink);
            })
            .await;
        };

        let (_reporter, health) = tonic_health::server::health_reporter();
        tonic::transport::Server::builder()
            .add_routes(tonic::service::Routes::new(health))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stdin_closed)
            .await?;
        Ok(())
    })
}
