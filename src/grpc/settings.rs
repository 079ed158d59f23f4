//! `interview_webhooks.v1.WebhookSettings` over gRPC.

use tonic::{Request, Response, Status};

use super::account;
use crate::pb;
use crate::pb::webhook_settings_server::WebhookSettings;
use crate::service::App;

/// The gRPC face of [`crate::service::settings::SettingsService`].
pub struct SettingsGrpc {
    app: App,
}

impl SettingsGrpc {
    /// Serves `app`.
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl WebhookSettings for SettingsGrpc {
    #[tracing::instrument(skip_all, fields(rpc = "UpdateWebhooks"))]
    async fn update_webhooks(
        &self,
        req: Request<pb::UpdateWebhooksRequest>,
    ) -> Result<Response<pb::InterviewWebhooks>, Status> {
        let account = account(&self.app, &req).await?;
        let out = self.app.settings.update(account, req.into_inner()).await?;
        Ok(Response::new(out))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetWebhooks"))]
    async fn get_webhooks(
        &self,
        req: Request<pb::GetWebhooksRequest>,
    ) -> Result<Response<pb::InterviewWebhooks>, Status> {
        let account = account(&self.app, &req).await?;
        let out = self.app.settings.get(account, req.into_inner()).await?;
        Ok(Response::new(out))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetSigningSecret"))]
    async fn get_signing_secret(
        &self,
        req: Request<pb::GetSigningSecretRequest>,
    ) -> Result<Response<pb::SigningSecret>, Status> {
        let account = account(&self.app, &req).await?;
        let out = self
            .app
            .settings
            .signing_secret(account, req.into_inner())
            .await?;
        Ok(Response::new(out))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RotateSigningSecret"))]
    async fn rotate_signing_secret(
        &self,
        req: Request<pb::RotateSigningSecretRequest>,
    ) -> Result<Response<pb::SigningSecret>, Status> {
        let account = account(&self.app, &req).await?;
        let out = self
            .app
            .settings
            .rotate_signing_secret(account, req.into_inner())
            .await?;
        Ok(Response::new(out))
    }
}
