//! `UpdateWebhooks`, `GetWebhooks`, the signing-secret calls and the health check.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::info;

use super::auth::AccountId;
use crate::domain::settings::{check_interview_id, parse_update};
use crate::domain::url_guard::TargetPolicy;
use crate::error::Error;
use crate::pb;
use crate::pb::timestamp;
use crate::storage::settings::{self as store, SigningSecrets, StoredSettings};
use crate::storage::{Db, now_ms};

/// How long a successful health-check write stands for the next checks.
pub const HEALTH_WRITE_EVERY: Duration = Duration::from_secs(1);

/// The settings operations.
#[derive(Clone)]
pub struct SettingsService {
    db: Db,
    policy: TargetPolicy,
    /// When a health check last wrote successfully.
    last_write_ok: Arc<Mutex<Option<Instant>>>,
}

impl SettingsService {
    /// Settings over `db`, checking webhook URLs with `policy`.
    pub fn new(db: Db, policy: TargetPolicy) -> Self {
        Self {
            db,
            policy,
            last_write_ok: Arc::default(),
        }
    }

    /// Applies a partial update and returns the stored result, secrets masked.
    pub async fn update(
        &self,
        account: AccountId,
        req: pb::UpdateWebhooksRequest,
    ) -> Result<pb::InterviewWebhooks, Error> {
        let update = parse_update(&req, self.policy)?;
        let id = update.ai_interview_id;

        let stored = self
            .db
            .write(move |conn| store::update(conn, account.0, id, &update.patch, now_ms()))
            .await?;

        info!(
            account_id = account.0,
            ai_interview_id = id,
            "webhook settings updated"
        );
        Ok(to_proto(&stored))
    }

    /// Returns the stored settings, secrets masked.
    pub async fn get(
        &self,
        account: AccountId,
        req: pb::GetWebhooksRequest,
    ) -> Result<pb::InterviewWebhooks, Error> {
        let id = check_interview_id(req.ai_interview_id)?;
        let stored = self
            .db
            .read(move |conn| store::get(conn, account.0, id))
            .await?
            .ok_or_else(|| Error::interview_not_found(id))?;
        Ok(to_proto(&stored))
    }

    /// Succeeds when the database answers a read and takes a write; for health checks. A
    /// write that succeeded less than [`HEALTH_WRITE_EVERY`] ago stands for a new one, so that
    /// a flood of checks (the endpoint needs no key) costs at most one write per interval.
    pub async fn check_health(&self) -> Result<(), Error> {
        self.db.read(crate::storage::ping).await?;

        let recent = |at: &Option<Instant>| at.is_some_and(|t| t.elapsed() < HEALTH_WRITE_EVERY);
        if recent(&self.last_write_ok.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(());
        }
        self.db
            .write(|conn| crate::storage::probe_write(conn, now_ms()))
            .await?;
        *self.last_write_ok.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(())
    }

    /// Returns the current signing secret.
    pub async fn signing_secret(
        &self,
        account: AccountId,
        req: pb::GetSigningSecretRequest,
    ) -> Result<pb::SigningSecret, Error> {
        let id = check_interview_id(req.ai_interview_id)?;
        let secrets = self
            .db
            .read(move |conn| store::signing_secrets(conn, account.0, id))
            .await?
            .ok_or_else(|| Error::interview_not_found(id))?;
        Ok(secret_to_proto(id, &secrets))
    }

    /// Rotates the signing secret.
    pub async fn rotate_signing_secret(
        &self,
        account: AccountId,
        req: pb::RotateSigningSecretRequest,
    ) -> Result<pb::SigningSecret, Error> {
        let id = check_interview_id(req.ai_interview_id)?;
        let secrets = self
            .db
            .write(move |conn| store::rotate_signing_secret(conn, account.0, id, now_ms()))
            .await?;
        info!(
            account_id = account.0,
            ai_interview_id = id,
            "signing secret rotated"
        );
        Ok(secret_to_proto(id, &secrets))
    }
}

fn to_proto(stored: &StoredSettings) -> pb::InterviewWebhooks {
    pb::InterviewWebhooks {
        ai_interview_id: stored.ai_interview_id,
        webhooks: Some(stored.settings.to_masked_proto()),
        create_time: Some(timestamp(stored.created_at)),
        update_time: Some(timestamp(stored.updated_at)),
    }
}

fn secret_to_proto(ai_interview_id: i64, secrets: &SigningSecrets) -> pb::SigningSecret {
    pb::SigningSecret {
        ai_interview_id,
        secret: secrets.current.clone(),
        create_time: Some(timestamp(secrets.created_at)),
        previous_expire_time: secrets
            .previous
            .as_ref()
            .map(|(_, until)| timestamp(*until)),
    }
}
