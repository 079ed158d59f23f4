//! The gRPC transport: `WebhookSettings` (and the delivery services), server reflection
//! (`v1` and `v1alpha`) and `grpc.health.v1.Health`.
//!
//! Each method reads the API key from the `apikey` metadata, hands the request to the service
//! layer and converts its [`crate::error::Error`] into a `Status` (the one conversion lives in
//! `error.rs`).

mod events;
mod settings;

use tonic::service::Routes;

use crate::pb;
use crate::service::App;
use crate::service::auth::AccountId;

/// Metadata key that carries the API key.
pub const API_KEY_METADATA: &str = "apikey";

/// Builds every gRPC service, reflection and health included.
pub fn routes(app: App) -> anyhow::Result<(Routes, tonic_health::server::HealthReporter)> {
    let (health_reporter, health) = tonic_health::server::health_reporter();

    // Both reflection versions describe every service, themselves included, so that
    // `grpcurl list` shows the same set whichever version the client speaks.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let routes = Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(pb::webhook_settings_server::WebhookSettingsServer::new(
            settings::SettingsGrpc::new(app.clone()),
        ))
        .add_service(pb::webhook_events_server::WebhookEventsServer::new(
            events::EventsGrpc::new(app),
        ));
    Ok((routes, health_reporter))
}

/// The account of the request's `apikey` metadata.
async fn account<T>(app: &App, req: &tonic::Request<T>) -> Result<AccountId, tonic::Status> {
    let presented = req
        .metadata()
        .get(API_KEY_METADATA)
        .and_then(|v| v.to_str().ok());
    Ok(app.auth.authenticate(presented).await?)
}
