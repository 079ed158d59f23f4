//! Starting and stopping the service: database preparation, the gRPC and HTTP servers on
//! already-bound listeners, and a graceful shutdown when the given future resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::delivery::DeliveryOptions;
use crate::delivery::queue::Handoff;
use crate::domain::url_guard::TargetPolicy;
use crate::service::App;
use crate::storage::{self, DatabaseUrl, Db, accounts};

/// The longest a request may take, body upload included; a client that stalls longer gets 408
/// (REST) or `CANCELLED` (gRPC) instead of holding a connection, and a shutdown, forever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// After a shutdown signal, how long open connections get before they are dropped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(35);

/// Name of the account the first `serve` creates on an empty database.
pub const BOOTSTRAP_ACCOUNT: &str = "default";

/// What `run` needs besides its listeners. Tests and benchmarks start from `default()`.
#[derive(Clone, Default)]
pub struct Options {
    /// Which webhook targets are accepted.
    pub policy: TargetPolicy,
    /// How webhooks are delivered.
    pub delivery: DeliveryOptions,
}

/// Connects, applies pending migrations and opens the pool. When the database has no account
/// yet, creates one and returns its API key (to be shown once).
pub async fn prepare(url: &DatabaseUrl) -> anyhow::Result<(Db, Option<String>)> {
    let url = url.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = url
            .connect()
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", url.redacted()))?;
        // Under one lock, so that instances starting together create one account, not two.
        let bootstrap_key = storage::with_setup_lock(&mut conn, |conn| {
            storage::migrate_unlocked(conn)?;
            if accounts::any_account(conn)? {
                return Ok(None);
            }
            let key = accounts::create_key(conn, BOOTSTRAP_ACCOUNT, storage::now_ms())?;
            Ok(Some(key))
        })?;
        drop(conn);

        Ok((Db::open(&url)?, bootstrap_key))
    })
    .await?
}

/// Serves gRPC on `grpc` and REST on `http`, and delivers webhooks, until `shutdown`
/// resolves; then stops accepting, lets in-flight requests finish, and gives in-flight
/// deliveries the attempt timeout to finish.
pub async fn run(
    db: Db,
    options: Options,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    crate::delivery::worker::release_leftover_leases(&db).await;
    let (handoff, inbox) = Handoff::new(
        crate::delivery::payload::new_delivery_id().replacen("msg_", "worker_", 1),
        options.delivery.lease(),
        // Room for a few rounds of attempts: publishes that find it full are claimed instead,
        // which costs a trip to the database.
        options.delivery.concurrency * 4,
    );
    let handoff = Arc::new(handoff);
    let app = App::new(
        db.clone(),
        options.policy,
        &options.delivery,
        handoff.clone(),
    )?;
    let stop = CancellationToken::new();

    let (routes, health) = crate::grpc::routes(app.clone())?;
    health
        .set_service_status(GRPC_HEALTH_SERVICE, tonic_health::ServingStatus::Serving)
        .await;
    // gRPC health tells the same as `/healthz`, checked in the background.
    let health_checks = tokio::spawn(report_health(app.clone(), health, stop.clone()));

    info!(
        grpc.addr = %grpc.local_addr()?,
        http.addr = %http.local_addr()?,
        "serving"
    );

    let grpc_server = tonic::transport::Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), stop.clone().cancelled_owned());
    let http_server = axum::serve(http, crate::http::router(app.clone()))
        .with_graceful_shutdown(stop.clone().cancelled_owned());

    let worker = tokio::spawn(crate::delivery::worker::run(
        db,
        app.sender.clone(),
        options.delivery.clone(),
        handoff,
        inbox,
        stop.clone(),
    ));

    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            info!("shutting down: finishing in-flight requests");
            stop.cancel();
        })
    };

    let servers = async {
        tokio::try_join!(
            async { grpc_server.await.map_err(anyhow::Error::from) },
            async { http_server.await.map_err(anyhow::Error::from) },
        )
    };
    let deadline = async {
        stop.cancelled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    let result = tokio::select! {
        result = servers => result.map(drop),
        () = deadline => {
            tracing::warn!(
                drain_ms = DRAIN_TIMEOUT.as_millis() as u64,
                "connections still open after the drain time; closing them"
            );
            Ok(())
        }
    };
    watcher.abort();
    // The servers stop on `stop` as well; a server that failed stops the worker here.
    stop.cancel();
    let _ = worker.await;
    let _ = health_checks.await;
    result?;
    info!("stopped");
    Ok(())
}

/// The service whose status `grpc.health.v1.Health` reports.
const GRPC_HEALTH_SERVICE: &str = "interview_webhooks.v1.WebhookSettings";

/// How often gRPC health checks the database.
const GRPC_HEALTH_EVERY: Duration = Duration::from_secs(5);

/// Keeps the gRPC health status in step with the database check behind `/healthz`, until
/// `stop`. The status only changes when the check's outcome does, and each change is logged.
async fn report_health(
    app: App,
    health: tonic_health::server::HealthReporter,
    stop: CancellationToken,
) {
    let mut serving = true;
    loop {
        tokio::select! {
            () = tokio::time::sleep(GRPC_HEALTH_EVERY) => {}
            () = stop.cancelled() => return,
        }
        let ok = app.settings.check_health().await.is_ok();
        if ok == serving {
            continue;
        }
        serving = ok;
        let status = if ok {
            info!("the database answers again; gRPC health is SERVING");
            tonic_health::ServingStatus::Serving
        } else {
            tracing::warn!(
                "the database does not answer reads and writes; gRPC health is NOT_SERVING"
            );
            tonic_health::ServingStatus::NotServing
        };
        health.set_service_status(GRPC_HEALTH_SERVICE, status).await;
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
