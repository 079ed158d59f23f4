//! `interview_webhooks.v1.WebhookEvents` over gRPC.

use tonic::{Request, Response, Status};

use super::account;
use crate::pb;
use crate::pb::webhook_events_server::WebhookEvents;
use crate::service::App;

/// The gRPC face of [`crate::service::events::EventsService`].
pub struct EventsGrpc {
    app: App,
}

impl EventsGrpc {
    /// Serves `app`.
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl WebhookEvents for EventsGrpc {
    #[tracing::instrument(skip_all, fields(rpc = "PublishEvent"))]
    async fn publish_event(
        &self,
        req: Request<pb::PublishEventRequest>,
    ) -> Result<Response<pb::PublishEventResponse>, Status> {
        let account = account(&self.app, &req).await?;
        let out = self.app.events.publish(account, req.into_inner()).await?;
        Ok(Response::new(out))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListDeliveries"))]
    async fn list_deliveries(
        &self,
        req: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let account = account(&self.app, &req).await?;
        let out = self.app.events.list(account, req.into_inner()).await?;
        Ok(Response::new(out))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetDelivery"))]
    async fn get_delivery(
        &self,
        req: Request<pb::GetDeliveryRequest>,
    ) -> Result<Response<pb::Delivery>, Status> {
        let account = account(&self.app, &req).await?;
        let out = self.app.events.get(account, req.into_inner().id).await?;
        Ok(Response::new(out))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RedeliverDelivery"))]
    async fn redeliver_delivery(
        &self,
        req: Request<pb::RedeliverDeliveryRequest>,
    ) -> Result<Response<pb::Delivery>, Status> {
        let account = account(&self.app, &req).await?;
        let out = self
            .app
            .events
            .redeliver(account, req.into_inner().id)
            .await?;
        Ok(Response::new(out))
    }

    #[tracing::instrument(skip_all, fields(rpc = "SendTestEvent"))]
    async fn send_test_event(
        &self,
        req: Request<pb::SendTestEventRequest>,
    ) -> Result<Response<pb::SendTestEventResponse>, Status> {
        let account = account(&self.app, &req).await?;
        let out = self.app.events.send_test(account, req.into_inner()).await?;
        Ok(Response::new(out))
    }
}
