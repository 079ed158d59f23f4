//! Webhook settings rows: loading, the locked read-modify-write of an update, and the signing
//! secret kept beside them.

use diesel::prelude::*;

use super::schema::webhook_settings::dsl as ws;
use super::{DbConnection, on_backend};
use crate::domain::settings::{Auth, Credentials, EventKind, Patch, Secret, Settings, Webhook};
use crate::domain::signing;
use crate::error::Error;

/// How long a rotated-out signing secret keeps signing beside the new one.
pub const PREVIOUS_SECRET_GRACE_MS: i64 = 24 * 60 * 60 * 1000;

/// One interview's settings as stored, with their times.
#[derive(Debug, Clone)]
pub struct StoredSettings {
    /// The interview.
    pub ai_interview_id: i64,
    /// The settings.
    pub settings: Settings,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// The signing secrets in force for one interview.
#[derive(Clone)]
pub struct SigningSecrets {
    /// The current secret.
    pub current: String,
    /// When it was created, Unix ms.
    pub created_at: i64,
    /// The previous secret and when it stops signing, Unix ms.
    pub previous: Option<(String, i64)>,
}

// By hand, so that no log line or panic message can show a secret.
impl std::fmt::Debug for SigningSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningSecrets")
            .field("current", &"********")
            .field("created_at", &self.created_at)
            .field(
                "previous_until",
                &self.previous.as_ref().map(|(_, until)| until),
            )
            .finish()
    }
}

impl SigningSecrets {
    /// The secrets that sign a delivery made at `now`.
    pub fn in_force(&self, now: i64) -> Vec<&str> {
        let mut out = vec![self.current.as_str()];
        if let Some((previous, until)) = &self.previous
            && *until > now
        {
            out.push(previous);
        }
        out
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = super::schema::webhook_settings)]
#[diesel(treat_none_as_null = true)]
struct Row {
    account_id: i64,
    ai_interview_id: i64,
    start_status: Option<bool>,
    start_url: Option<String>,
    submission_status: Option<bool>,
    submission_url: Option<String>,
    auth_type: Option<String>,
    auth_status: bool,
    apikey_key: Option<String>,
    // TODO: webhook secrets are stored in clear (as the signing secret must be, to sign). An
    // envelope key from the environment (AES-GCM per value) would protect a copied database
    // file; not done yet because key management and rotation need their own design.
    apikey_value: Option<String>,
    basic_username: Option<String>,
    basic_password: Option<String>,
    signing_secret: String,
    signing_secret_created_at: i64,
    previous_signing_secret: Option<String>,
    previous_secret_expires_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    start_disabled_reason: Option<String>,
    submission_disabled_reason: Option<String>,
}

impl Row {
    fn empty(account_id: i64, ai_interview_id: i64, now: i64) -> Self {
        Row {
            account_id,
            ai_interview_id,
            start_status: None,
            start_url: None,
            submission_status: None,
            submission_url: None,
            auth_type: None,
            auth_status: true,
            apikey_key: None,
            apikey_value: None,
            basic_username: None,
            basic_password: None,
            signing_secret: signing::generate_secret(),
            signing_secret_created_at: now,
            previous_signing_secret: None,
            previous_secret_expires_at: None,
            created_at: now,
            updated_at: now,
            start_disabled_reason: None,
            submission_disabled_reason: None,
        }
    }

    fn settings(&self) -> Settings {
        let webhook = |status: Option<bool>, url: &Option<String>, reason: &Option<String>| {
            status.map(|enabled| Webhook {
                enabled,
                url: url.clone(),
                disabled_reason: reason.clone(),
            })
        };
        let credentials = match self.auth_type.as_deref() {
            Some("apikey") => Some(Credentials::ApiKey {
                header: self.apikey_key.clone().unwrap_or_default(),
                value: Secret::new(self.apikey_value.clone().unwrap_or_default()),
            }),
            Some("basic") => Some(Credentials::Basic {
                username: self.basic_username.clone().unwrap_or_default(),
                password: Secret::new(self.basic_password.clone().unwrap_or_default()),
            }),
            _ => None,
        };
        Settings {
            start: webhook(
                self.start_status,
                &self.start_url,
                &self.start_disabled_reason,
            ),
            submission: webhook(
                self.submission_status,
                &self.submission_url,
                &self.submission_disabled_reason,
            ),
            auth: credentials.map(|credentials| Auth {
                enabled: self.auth_status,
                credentials,
            }),
        }
    }

    /// Writes `settings` into the row. Every auth column is rewritten, so switching the auth
    /// type clears the other type's secrets.
    fn set_settings(&mut self, settings: &Settings) {
        self.start_status = settings.start.as_ref().map(|w| w.enabled);
        self.start_url = settings.start.as_ref().and_then(|w| w.url.clone());
        self.submission_status = settings.submission.as_ref().map(|w| w.enabled);
        self.submission_url = settings.submission.as_ref().and_then(|w| w.url.clone());
        self.start_disabled_reason = settings
            .start
            .as_ref()
            .and_then(|w| w.disabled_reason.clone());
        self.submission_disabled_reason = settings
            .submission
            .as_ref()
            .and_then(|w| w.disabled_reason.clone());

        self.auth_type = None;
        self.auth_status = true;
        self.apikey_key = None;
        self.apikey_value = None;
        self.basic_username = None;
        self.basic_password = None;
        if let Some(auth) = &settings.auth {
            self.auth_type = Some(auth.credentials.type_name().to_owned());
            self.auth_status = auth.enabled;
            match &auth.credentials {
                Credentials::ApiKey { header, value } => {
                    self.apikey_key = Some(header.clone());
                    self.apikey_value = Some(value.expose().to_owned());
                }
                Credentials::Basic { username, password } => {
                    self.basic_username = Some(username.clone());
                    self.basic_password = Some(password.expose().to_owned());
                }
            }
        }
    }

    fn stored(&self) -> StoredSettings {
        StoredSettings {
            ai_interview_id: self.ai_interview_id,
            settings: self.settings(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    fn secrets(&self) -> SigningSecrets {
        SigningSecrets {
            current: self.signing_secret.clone(),
            created_at: self.signing_secret_created_at,
            previous: self
                .previous_signing_secret
                .clone()
                .zip(self.previous_secret_expires_at),
        }
    }

    /// A row is only kept once something was configured; see [`update`].
    fn is_configured(&self) -> bool {
        self.start_status.is_some() || self.submission_status.is_some() || self.auth_type.is_some()
    }
}

fn find(
    conn: &mut DbConnection,
    account_id: i64,
    ai_interview_id: i64,
) -> QueryResult<Option<Row>> {
    // The concrete connection and `get_result` (the key selects at most one row): through
    // `MultiConnection` every call rebuilds the SQL to find its cached statement, and the
    // `LIMIT ?` of `first` makes SQLite (3.47+) re-prepare the statement on every bind.
    on_backend!(conn, |c| {
        ws::webhook_settings
            .filter(ws::account_id.eq(account_id))
            .filter(ws::ai_interview_id.eq(ai_interview_id))
            .select(Row::as_select())
            .get_result(c)
            .optional()
    })
}

/// Loads one interview's settings; `None` when the account has none for it.
pub fn get(
    conn: &mut DbConnection,
    account_id: i64,
    ai_interview_id: i64,
) -> Result<Option<StoredSettings>, Error> {
    Ok(find(conn, account_id, ai_interview_id)?
        .filter(Row::is_configured)
        .map(|r| r.stored()))
}

/// Loads the settings and signing secrets used to deliver one event.
pub fn get_for_delivery(
    conn: &mut DbConnection,
    account_id: i64,
    ai_interview_id: i64,
) -> Result<Option<(Settings, SigningSecrets)>, Error> {
    Ok(find(conn, account_id, ai_interview_id)?
        .filter(Row::is_configured)
        .map(|r| (r.settings(), r.secrets())))
}

/// Locks the interview's row, creating an empty one first if needed, so that concurrent
/// updates of one interview (from this or another process) run one after the other.
fn lock_row(
    conn: &mut DbConnection,
    account_id: i64,
    ai_interview_id: i64,
    now: i64,
) -> Result<Row, Error> {
    let fresh = Row::empty(account_id, ai_interview_id, now);
    on_backend!(conn, |c| {
        diesel::insert_into(ws::webhook_settings)
            .values(&fresh)
            .on_conflict_do_nothing()
            .execute(c)?;
    });
    let row = match conn {
        // SQLite has no row locks; the writer's `BEGIN IMMEDIATE` already holds the database's
        // write lock, which serializes writers across processes.
        DbConnection::Sqlite(_) => find(conn, account_id, ai_interview_id)?,
        DbConnection::Postgresql(pg) => ws::webhook_settings
            .filter(ws::account_id.eq(account_id))
            .filter(ws::ai_interview_id.eq(ai_interview_id))
            .select(Row::as_select())
            .for_update()
            .get_result(pg)
            .optional()?,
    };
    row.ok_or(Error::Internal)
}

/// Applies `patch` to the interview's stored settings. Must run inside a writer transaction
/// ([`super::Db::write`]): an error leaves nothing behind, not even the row it created.
pub fn update(
    conn: &mut DbConnection,
    account_id: i64,
    ai_interview_id: i64,
    patch: &Patch,
    now: i64,
) -> Result<StoredSettings, Error> {
    let mut row = lock_row(conn, account_id, ai_interview_id, now)?;
    let stored = row.is_configured().then(|| row.settings());

    let merged = patch.apply(stored.as_ref())?;
    row.set_settings(&merged);
    row.updated_at = now;

    on_backend!(conn, |c| {
        diesel::update(ws::webhook_settings.find((account_id, ai_interview_id)))
            .set(&row)
            .execute(c)
    })?;
    Ok(row.stored())
}

/// The signing secrets of one interview; `None` when it has no settings.
pub fn signing_secrets(
    conn: &mut DbConnection,
    account_id: i64,
    ai_interview_id: i64,
) -> Result<Option<SigningSecrets>, Error> {
    Ok(find(conn, account_id, ai_interview_id)?
        .filter(Row::is_configured)
        .map(|r| r.secrets()))
}

/// Replaces the signing secret; the old one keeps signing for [`PREVIOUS_SECRET_GRACE_MS`].
pub fn rotate_signing_secret(
    conn: &mut DbConnection,
    account_id: i64,
    ai_interview_id: i64,
    now: i64,
) -> Result<SigningSecrets, Error> {
    let mut row = lock_row(conn, account_id, ai_interview_id, now)?;
    if !row.is_configured() {
        return Err(Error::interview_not_found(ai_interview_id));
    }

    row.previous_signing_secret = Some(std::mem::replace(
        &mut row.signing_secret,
        signing::generate_secret(),
    ));
    row.previous_secret_expires_at = Some(now + PREVIOUS_SECRET_GRACE_MS);
    row.signing_secret_created_at = now;
    row.updated_at = now;

    diesel::update(ws::webhook_settings.find((account_id, ai_interview_id)))
        .set(&row)
        .execute(conn)?;
    Ok(row.secrets())
}

/// Switches one webhook off because delivery was told to stop (410 Gone), recording why.
/// Returns false when there was nothing enabled to switch off.
pub fn disable_webhook(
    conn: &mut DbConnection,
    account_id: i64,
    ai_interview_id: i64,
    event: EventKind,
    gone_url: &str,
    reason: &str,
    now: i64,
) -> Result<bool, Error> {
    // Only while the webhook still points where the 410 came from: a user who moved it to a
    // new URL meanwhile has already acted on it.
    let target = ws::webhook_settings.find((account_id, ai_interview_id));
    let n = match event {
        EventKind::Start => diesel::update(
            target
                .filter(ws::start_status.eq(true))
                .filter(ws::start_url.eq(gone_url)),
        )
        .set((
            ws::start_status.eq(false),
            ws::start_disabled_reason.eq(reason),
            ws::updated_at.eq(now),
        ))
        .execute(conn)?,
        EventKind::Submission => diesel::update(
            target
                .filter(ws::submission_status.eq(true))
                .filter(ws::submission_url.eq(gone_url)),
        )
        .set((
            ws::submission_status.eq(false),
            ws::submission_disabled_reason.eq(reason),
            ws::updated_at.eq(now),
        ))
        .execute(conn)?,
    };
    Ok(n == 1)
}
