//! The webhook settings of one AI interview and the rules for changing them.
//!
//! Both transports hand a `pb::UpdateWebhooksRequest` to [`parse_update`], which checks
//! everything that can be checked without the stored row and reports every problem at once.
//! [`Patch::apply`] then merges the patch onto the stored settings (inside the storage
//! transaction, so concurrent partial updates never overwrite each other) and checks the rules
//! that depend on what is stored. Nothing here touches the database or the network.

use std::fmt;

use crate::domain::url_guard::{TargetPolicy, check_webhook_url};
use crate::error::{Error, FieldViolation};
use crate::pb;

/// What every response shows instead of a secret. Sending it back keeps the stored secret.
pub const MASK: &str = "********";

/// Bounds on auth fields: each is sent as a header with every delivery, and receivers (and
/// proxies in front of them) refuse headers of more than a few KiB.
const MAX_HEADER_NAME: usize = 256;
const MAX_HEADER_VALUE: usize = 4096;
const MAX_USERNAME: usize = 256;
const MAX_PASSWORD: usize = 1024;

/// Header names a webhook's API key may not use: they frame the request or carry our own
/// signature, so letting a user set them would break or forge the delivery.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "proxy-connection",
    "proxy-authorization",
    "content-type",
    "content-encoding",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// The two moments of an AI interview that can fire a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The candidate started the interview.
    Start,
    /// The candidate submitted the interview.
    Submission,
}

impl EventKind {
    /// The name used in field paths and storage: `start` or `submission`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::Submission => "submission",
        }
    }

    /// Parses [`EventKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "start" => Some(EventKind::Start),
            "submission" => Some(EventKind::Submission),
            _ => None,
        }
    }
}

/// A secret value (API key value, password). Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for storage and for building a delivery's headers only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One webhook (`start` or `submission`) as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Whether the webhook fires.
    pub enabled: bool,
    /// Where it is delivered; always set when enabled.
    pub url: Option<String>,
    /// Why delivery switched it off, if it did.
    pub disabled_reason: Option<String>,
}

/// The credentials sent with every delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A header `header: value`.
    ApiKey {
        /// Header name.
        header: String,
        /// Header value.
        value: Secret,
    },
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        /// Never empty, never contains `:`.
        username: String,
        /// May contain `:`.
        password: Secret,
    },
}

impl Credentials {
    /// `apikey` or `basic`, as in the REST body.
    pub fn type_name(&self) -> &'static str {
        match self {
            Credentials::ApiKey { .. } => "apikey",
            Credentials::Basic { .. } => "basic",
        }
    }
}

/// The delivery auth as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Whether deliveries carry the credentials.
    pub enabled: bool,
    /// What they carry.
    pub credentials: Credentials,
}

/// Everything stored for one AI interview.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The `start` webhook, if ever configured.
    pub start: Option<Webhook>,
    /// The `submission` webhook, if ever configured.
    pub submission: Option<Webhook>,
    /// The delivery auth, if any.
    pub auth: Option<Auth>,
}

impl Settings {
    /// The webhook that fires for `kind`.
    pub fn webhook(&self, kind: EventKind) -> Option<&Webhook> {
        match kind {
            EventKind::Start => self.start.as_ref(),
            EventKind::Submission => self.submission.as_ref(),
        }
    }

    /// The URL to deliver `kind` to, when that webhook is enabled.
    pub fn enabled_url(&self, kind: EventKind) -> Option<&str> {
        self.webhook(kind)
            .filter(|w| w.enabled)
            .and_then(|w| w.url.as_deref())
    }

    /// The settings as the API shows them: every secret replaced by [`MASK`].
    pub fn to_masked_proto(&self) -> pb::Webhooks {
        let webhook = |w: &Webhook| pb::Webhook {
            status: Some(w.enabled),
            url: w.url.clone(),
            disabled_reason: w.disabled_reason.clone().unwrap_or_default(),
        };
        let auth = self.auth.as_ref().map(|a| {
            let mut out = pb::WebhookAuth {
                r#type: a.credentials.type_name().to_owned(),
                status: Some(a.enabled),
                apikey: None,
                basic: None,
            };
            match &a.credentials {
                Credentials::ApiKey { header, .. } => {
                    out.apikey = Some(pb::ApiKeyAuth {
                        key: header.clone(),
                        value: MASK.to_owned(),
                    })
                }
                Credentials::Basic { username, .. } => {
                    out.basic = Some(pb::BasicAuth {
                        username: username.clone(),
                        password: MASK.to_owned(),
                    })
                }
            }
            out
        });
        pb::Webhooks {
            start: self.start.as_ref().map(webhook),
            submission: self.submission.as_ref().map(webhook),
            auth,
        }
    }
}

/// A checked update request: which interview, and what to change.
#[derive(Debug, Clone)]
pub struct Update {
    /// Positive.
    pub ai_interview_id: i64,
    /// The change.
    pub patch: Patch,
}

/// A change to [`Settings`]; what is `None`/`Keep` keeps its stored value.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    start: Option<WebhookPatch>,
    submission: Option<WebhookPatch>,
    auth: AuthPatch,
}

#[derive(Debug, Clone)]
struct WebhookPatch {
    enabled: bool,
    url: UrlPatch,
}

#[derive(Debug, Clone)]
enum UrlPatch {
    Keep,
    Clear,
    Set(String),
}

#[derive(Debug, Clone, Default)]
enum AuthPatch {
    #[default]
    Keep,
    Remove,
    Set {
        enabled: bool,
        credentials: CredentialsPatch,
    },
}

#[derive(Debug, Clone)]
enum CredentialsPatch {
    ApiKey {
        header: String,
        value: SecretPatch,
    },
    Basic {
        username: String,
        password: SecretPatch,
    },
}

/// A secret in a request: a new value, or the mask, which keeps the stored one.
#[derive(Debug, Clone)]
enum SecretPatch {
    Keep,
    New(Secret),
}

impl SecretPatch {
    fn from_request(value: &str) -> Self {
        if value == MASK {
            SecretPatch::Keep
        } else {
            SecretPatch::New(Secret::new(value))
        }
    }
}

/// Checks an interview id: a positive 64-bit integer.
pub fn check_interview_id(ai_interview_id: i64) -> Result<i64, Error> {
    if ai_interview_id > 0 {
        Ok(ai_interview_id)
    } else {
        Err(Error::invalid(
            "ai_interview_id",
            "required: a positive integer identifying the AI interview",
        ))
    }
}

/// Checks an update request and turns it into an [`Update`], listing every problem found.
pub fn parse_update(
    req: &pb::UpdateWebhooksRequest,
    policy: TargetPolicy,
) -> Result<Update, Error> {
    let mut problems = Vec::new();

    if req.ai_interview_id <= 0 {
        problems.push(FieldViolation::new(
            "ai_interview_id",
            "required: a positive integer identifying the AI interview",
        ));
    }

    let mask = Mask::parse(req.update_mask.as_ref(), &mut problems);
    let empty = pb::Webhooks::default();
    let webhooks = req.webhooks.as_ref().unwrap_or(&empty);
    let mut patch = Patch::default();

    for kind in [EventKind::Start, EventKind::Submission] {
        let sent = match kind {
            EventKind::Start => webhooks.start.as_ref(),
            EventKind::Submission => webhooks.submission.as_ref(),
        };
        let listed = mask.includes(kind.as_str());
        let parsed = match (sent, listed) {
            (Some(w), true) => parse_webhook(kind, w, policy, &mut problems),
            (None, true) if mask.explicit => {
                problems.push(FieldViolation::new(
                    format!("webhooks.{}", kind.as_str()),
                    "listed in update_mask but not set; send {\"status\": false} to disable it",
                ));
                None
            }
            _ => None,
        };
        match kind {
            EventKind::Start => patch.start = parsed,
            EventKind::Submission => patch.submission = parsed,
        }
    }

    patch.auth = match (webhooks.auth.as_ref(), mask.includes("auth")) {
        (Some(auth), true) => parse_auth(auth, &mut problems),
        // AIP-134: a field named in the mask but left unset is cleared.
        (None, true) if mask.explicit => AuthPatch::Remove,
        _ => AuthPatch::Keep,
    };

    if problems.is_empty() && patch.is_empty() {
        problems.push(FieldViolation::new(
            "webhooks",
            "nothing to update: send `start`, `submission` or `auth` (`\"auth\": null` removes \
             the auth)",
        ));
    }

    if problems.is_empty() {
        Ok(Update {
            ai_interview_id: req.ai_interview_id,
            patch,
        })
    } else {
        Err(Error::InvalidArgument(problems))
    }
}

/// The update mask, AIP-134 style: empty means "every field that is set".
struct Mask {
    explicit: bool,
    paths: Vec<String>,
}

impl Mask {
    const ALLOWED: &'static [&'static str] = &[
        "webhooks",
        "webhooks.start",
        "webhooks.submission",
        "webhooks.auth",
    ];

    fn parse(mask: Option<&prost_types::FieldMask>, problems: &mut Vec<FieldViolation>) -> Self {
        let paths: Vec<String> = mask.map(|m| m.paths.clone()).unwrap_or_default();
        for path in &paths {
            if !Self::ALLOWED.contains(&path.as_str()) {
                problems.push(FieldViolation::new(
                    "update_mask",
                    format!(
                        "unknown path `{path}`; allowed: {}",
                        Self::ALLOWED.join(", ")
                    ),
                ));
            }
        }
        Mask {
            explicit: !paths.is_empty(),
            paths,
        }
    }

    fn includes(&self, field: &str) -> bool {
        !self.explicit
            || self
                .paths
                .iter()
                .any(|p| p == "webhooks" || p.strip_prefix("webhooks.") == Some(field))
    }
}

fn parse_webhook(
    kind: EventKind,
    w: &pb::Webhook,
    policy: TargetPolicy,
    problems: &mut Vec<FieldViolation>,
) -> Option<WebhookPatch> {
    let path = format!("webhooks.{}", kind.as_str());
    let Some(enabled) = w.status else {
        problems.push(FieldViolation::new(
            format!("{path}.status"),
            "required: true to enable the webhook, false to disable it",
        ));
        return None;
    };

    let url = match w.url.as_deref() {
        None => UrlPatch::Keep,
        Some("") if !enabled => UrlPatch::Clear,
        Some(raw) => match check_webhook_url(raw, policy) {
            Ok(url) => UrlPatch::Set(url.to_string()),
            Err(problem) => {
                problems.push(FieldViolation::new(
                    format!("{path}.url"),
                    problem.to_string(),
                ));
                return None;
            }
        },
    };
    Some(WebhookPatch { enabled, url })
}

fn parse_auth(auth: &pb::WebhookAuth, problems: &mut Vec<FieldViolation>) -> AuthPatch {
    let before = problems.len();
    let enabled = auth.status.unwrap_or(true);

    let credentials = match auth.r#type.as_str() {
        "apikey" => match &auth.apikey {
            Some(k) => {
                check_header_name(&k.key, problems);
                check_header_value(&k.value, problems);
                Some(CredentialsPatch::ApiKey {
                    header: k.key.clone(),
                    value: SecretPatch::from_request(&k.value),
                })
            }
            None => {
                problems.push(FieldViolation::new(
                    "webhooks.auth.apikey",
                    "required when type is `apikey`: send {\"key\": \"X-Webhook-Key\", \
                     \"value\": \"...\"}",
                ));
                None
            }
        },
        "basic" => match &auth.basic {
            Some(b) => {
                check_username(&b.username, problems);
                check_password(&b.password, problems);
                Some(CredentialsPatch::Basic {
                    username: b.username.clone(),
                    password: SecretPatch::from_request(&b.password),
                })
            }
            None => {
                problems.push(FieldViolation::new(
                    "webhooks.auth.basic",
                    "required when type is `basic`: send {\"username\": \"...\", \
                     \"password\": \"...\"}",
                ));
                None
            }
        },
        "" => {
            problems.push(FieldViolation::new(
                "webhooks.auth.type",
                "required when auth is sent: `apikey` or `basic`",
            ));
            None
        }
        // Never echo an unknown type back verbatim: it may be a pasted secret.
        _ => {
            problems.push(FieldViolation::new(
                "webhooks.auth.type",
                "unsupported auth type; allowed values: `apikey`, `basic`",
            ));
            None
        }
    };

    match credentials {
        Some(credentials) if problems.len() == before => AuthPatch::Set {
            enabled,
            credentials,
        },
        _ => AuthPatch::Keep,
    }
}

fn check_header_name(name: &str, problems: &mut Vec<FieldViolation>) {
    let field = "webhooks.auth.apikey.key";
    if name.is_empty() {
        problems.push(FieldViolation::new(
            field,
            "required: the header name sent to your endpoint, e.g. X-Webhook-Key",
        ));
    } else if name.len() > MAX_HEADER_NAME {
        problems.push(too_long(field, MAX_HEADER_NAME));
    } else if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        problems.push(FieldViolation::new(
            field,
            "not a valid HTTP header name: use letters, digits and `-` (e.g. X-Webhook-Key), \
             no spaces or colons",
        ));
    } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        problems.push(FieldViolation::new(
            field,
            format!(
                "`{name}` is set by the delivery itself and cannot carry the key; \
                 choose another header name, e.g. X-Webhook-Key"
            ),
        ));
    }
}

fn check_header_value(value: &str, problems: &mut Vec<FieldViolation>) {
    let field = "webhooks.auth.apikey.value";
    if value.is_empty() {
        problems.push(FieldViolation::new(
            field,
            "required: the header value sent to your endpoint",
        ));
    } else if value.len() > MAX_HEADER_VALUE {
        problems.push(too_long(field, MAX_HEADER_VALUE));
    } else if http::HeaderValue::from_str(value).is_err() {
        problems.push(FieldViolation::new(
            field,
            "not a valid HTTP header value: remove line breaks and other control characters",
        ));
    }
}

fn check_username(username: &str, problems: &mut Vec<FieldViolation>) {
    let field = "webhooks.auth.basic.username";
    if username.is_empty() {
        problems.push(FieldViolation::new(field, "required: must not be empty"));
    } else if username.len() > MAX_USERNAME {
        problems.push(too_long(field, MAX_USERNAME));
    } else if username.contains(':') {
        problems.push(FieldViolation::new(
            field,
            "must not contain `:` (HTTP basic auth separates username and password with it)",
        ));
    } else if username.chars().any(char::is_control) {
        problems.push(FieldViolation::new(
            field,
            "must not contain control characters",
        ));
    }
}

fn check_password(password: &str, problems: &mut Vec<FieldViolation>) {
    if password.len() > MAX_PASSWORD {
        problems.push(too_long("webhooks.auth.basic.password", MAX_PASSWORD));
    } else if password.chars().any(char::is_control) {
        problems.push(FieldViolation::new(
            "webhooks.auth.basic.password",
            "must not contain control characters such as line breaks",
        ));
    }
}

fn too_long(field: &str, max: usize) -> FieldViolation {
    FieldViolation::new(field, format!("too long: at most {max} bytes"))
}

impl Patch {
    /// Whether the patch changes nothing at all.
    pub fn is_empty(&self) -> bool {
        self.start.is_none() && self.submission.is_none() && matches!(self.auth, AuthPatch::Keep)
    }

    /// Merges the patch onto what is stored (`None` for a new interview) and checks the rules
    /// that depend on it. Returns the settings to store.
    pub fn apply(&self, stored: Option<&Settings>) -> Result<Settings, Error> {
        let empty = Settings::default();
        let stored = stored.unwrap_or(&empty);
        let mut problems = Vec::new();

        let start = merge_webhook(
            EventKind::Start,
            self.start.as_ref(),
            stored.start.as_ref(),
            &mut problems,
        );
        let submission = merge_webhook(
            EventKind::Submission,
            self.submission.as_ref(),
            stored.submission.as_ref(),
            &mut problems,
        );
        let auth = match &self.auth {
            AuthPatch::Keep => stored.auth.clone(),
            AuthPatch::Remove => None,
            AuthPatch::Set {
                enabled,
                credentials,
            } => merge_credentials(credentials, stored.auth.as_ref(), &mut problems).map(
                |credentials| Auth {
                    enabled: *enabled,
                    credentials,
                },
            ),
        };

        if problems.is_empty() {
            Ok(Settings {
                start,
                submission,
                auth,
            })
        } else {
            Err(Error::InvalidArgument(problems))
        }
    }
}

fn merge_webhook(
    kind: EventKind,
    patch: Option<&WebhookPatch>,
    stored: Option<&Webhook>,
    problems: &mut Vec<FieldViolation>,
) -> Option<Webhook> {
    let Some(patch) = patch else {
        return stored.cloned();
    };

    let url = match &patch.url {
        UrlPatch::Keep => stored.and_then(|w| w.url.clone()),
        UrlPatch::Clear => None,
        UrlPatch::Set(url) => Some(url.clone()),
    };
    if patch.enabled && url.is_none() {
        problems.push(FieldViolation::new(
            format!("webhooks.{}.url", kind.as_str()),
            "required when status is true: an absolute https:// or http:// URL",
        ));
    }
    Some(Webhook {
        enabled: patch.enabled,
        url,
        disabled_reason: None,
    })
}

fn merge_credentials(
    patch: &CredentialsPatch,
    stored: Option<&Auth>,
    problems: &mut Vec<FieldViolation>,
) -> Option<Credentials> {
    let stored = stored.map(|a| &a.credentials);
    match patch {
        CredentialsPatch::ApiKey { header, value } => {
            let kept = match stored {
                Some(Credentials::ApiKey { value, .. }) => Some(value),
                _ => None,
            };
            let value = resolve_secret(value, kept, "webhooks.auth.apikey.value", problems)?;
            Some(Credentials::ApiKey {
                header: header.clone(),
                value,
            })
        }
        CredentialsPatch::Basic { username, password } => {
            let kept = match stored {
                Some(Credentials::Basic { password, .. }) => Some(password),
                _ => None,
            };
            let password =
                resolve_secret(password, kept, "webhooks.auth.basic.password", problems)?;
            Some(Credentials::Basic {
                username: username.clone(),
                password,
            })
        }
    }
}

fn resolve_secret(
    patch: &SecretPatch,
    stored: Option<&Secret>,
    field: &str,
    problems: &mut Vec<FieldViolation>,
) -> Option<Secret> {
    match (patch, stored) {
        (SecretPatch::New(secret), _) => Some(secret.clone()),
        (SecretPatch::Keep, Some(secret)) => Some(secret.clone()),
        (SecretPatch::Keep, None) => {
            problems.push(FieldViolation::new(
                field,
                format!(
                    "`{MASK}` keeps a stored secret, but none of this auth type is stored; \
                     send the real value"
                ),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: TargetPolicy = TargetPolicy {
        allow_private: false,
    };

    fn request(webhooks: pb::Webhooks) -> pb::UpdateWebhooksRequest {
        pb::UpdateWebhooksRequest {
            ai_interview_id: 42,
            webhooks: Some(webhooks),
            update_mask: None,
        }
    }

    fn webhook(status: Option<bool>, url: Option<&str>) -> Option<pb::Webhook> {
        Some(pb::Webhook {
            status,
            url: url.map(str::to_owned),
            disabled_reason: String::new(),
        })
    }

    fn basic(username: &str, password: &str) -> Option<pb::WebhookAuth> {
        Some(pb::WebhookAuth {
            r#type: "basic".into(),
            status: None,
            apikey: None,
            basic: Some(pb::BasicAuth {
                username: username.into(),
                password: password.into(),
            }),
        })
    }

    fn apply(stored: Option<&Settings>, webhooks: pb::Webhooks) -> Result<Settings, Error> {
        parse_update(&request(webhooks), OPEN)?.patch.apply(stored)
    }

    fn fields(err: Error) -> Vec<String> {
        err.violations().iter().map(|v| v.field.clone()).collect()
    }

    #[test]
    fn an_omitted_webhook_keeps_its_stored_value() {
        let first = apply(
            None,
            pb::Webhooks {
                start: webhook(Some(true), Some("https://example.com/s")),
                ..Default::default()
            },
        )
        .unwrap();
        let second = apply(
            Some(&first),
            pb::Webhooks {
                submission: webhook(Some(true), Some("https://example.com/u")),
                ..Default::default()
            },
        )
        .unwrap();

        assert_eq!(second.start, first.start);
        assert_eq!(
            second.enabled_url(EventKind::Submission),
            Some("https://example.com/u")
        );
    }

    #[test]
    fn disabling_keeps_the_url_and_enabling_may_reuse_it() {
        let on = apply(
            None,
            pb::Webhooks {
                start: webhook(Some(true), Some("https://example.com/s")),
                ..Default::default()
            },
        )
        .unwrap();
        let off = apply(
            Some(&on),
            pb::Webhooks {
                start: webhook(Some(false), None),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(off.enabled_url(EventKind::Start), None);
        assert_eq!(
            off.start.as_ref().unwrap().url.as_deref(),
            Some("https://example.com/s")
        );

        let again = apply(
            Some(&off),
            pb::Webhooks {
                start: webhook(Some(true), None),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            again.enabled_url(EventKind::Start),
            Some("https://example.com/s")
        );
    }

    #[test]
    fn enabling_without_any_url_names_the_url() {
        let err = apply(
            None,
            pb::Webhooks {
                start: webhook(Some(true), None),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(fields(err), vec!["webhooks.start.url"]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = parse_update(
            &pb::UpdateWebhooksRequest {
                ai_interview_id: 0,
                webhooks: Some(pb::Webhooks {
                    start: webhook(None, Some("https://example.com")),
                    submission: webhook(Some(true), Some("ftp://example.com")),
                    auth: basic("a:b", "pw"),
                }),
                update_mask: None,
            },
            OPEN,
        )
        .unwrap_err();
        assert_eq!(
            fields(err),
            vec![
                "ai_interview_id",
                "webhooks.start.status",
                "webhooks.submission.url",
                "webhooks.auth.basic.username",
            ]
        );
    }

    #[test]
    fn the_mask_keeps_the_stored_secret_of_the_same_type_only() {
        let stored = apply(
            None,
            pb::Webhooks {
                auth: basic("user", "s3cret"),
                ..Default::default()
            },
        )
        .unwrap();
        let kept = apply(
            Some(&stored),
            pb::Webhooks {
                auth: basic("other-user", MASK),
                ..Default::default()
            },
        )
        .unwrap();
        match &kept.auth.as_ref().unwrap().credentials {
            Credentials::Basic { username, password } => {
                assert_eq!(username, "other-user");
                assert_eq!(password.expose(), "s3cret");
            }
            other => panic!("{other:?}"),
        }

        let switched = pb::Webhooks {
            auth: Some(pb::WebhookAuth {
                r#type: "apikey".into(),
                status: None,
                apikey: Some(pb::ApiKeyAuth {
                    key: "X-Key".into(),
                    value: MASK.into(),
                }),
                basic: None,
            }),
            ..Default::default()
        };
        let err = apply(Some(&stored), switched).unwrap_err();
        assert_eq!(fields(err), vec!["webhooks.auth.apikey.value"]);
    }

    #[test]
    fn a_mask_naming_auth_without_auth_removes_it() {
        let stored = apply(
            None,
            pb::Webhooks {
                auth: basic("user", "pw"),
                ..Default::default()
            },
        )
        .unwrap();
        let mut req = request(pb::Webhooks::default());
        req.update_mask = Some(prost_types::FieldMask {
            paths: vec!["webhooks.auth".into()],
        });
        let removed = parse_update(&req, OPEN)
            .unwrap()
            .patch
            .apply(Some(&stored))
            .unwrap();
        assert_eq!(removed.auth, None);

        req.update_mask = Some(prost_types::FieldMask {
            paths: vec!["webhooks.color".into()],
        });
        assert_eq!(
            fields(parse_update(&req, OPEN).unwrap_err()),
            vec!["update_mask"]
        );
    }

    #[test]
    fn framing_headers_cannot_carry_the_key() {
        for name in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "webhook-signature",
        ] {
            let webhooks = pb::Webhooks {
                auth: Some(pb::WebhookAuth {
                    r#type: "apikey".into(),
                    status: None,
                    apikey: Some(pb::ApiKeyAuth {
                        key: name.into(),
                        value: "v".into(),
                    }),
                    basic: None,
                }),
                ..Default::default()
            };
            let err = parse_update(&request(webhooks), OPEN).unwrap_err();
            assert_eq!(fields(err), vec!["webhooks.auth.apikey.key"], "{name}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug_or_responses() {
        let settings = apply(
            None,
            pb::Webhooks {
                auth: basic("user", "hunter2"),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
        let shown = settings.to_masked_proto();
        assert_eq!(shown.auth.unwrap().basic.unwrap().password, MASK);
    }
}
