//! The documented JSON bodies and their mapping to and from the proto messages.
//!
//! Parsing is strict where silence would mislead: an unknown field (`submision`) or a value of
//! the wrong type (`"status": "true"`) is refused with its path named, never ignored. What the
//! fields may contain is checked by the service, not here.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, FieldViolation};
use crate::pb;

/// What every `ai_interview_id` problem says.
pub const INTERVIEW_ID_HINT: &str =
    "must be a positive integer, as a JSON number or a string of digits";

/// What an `ai_interview_id` of the wrong type was expected to be.
const INTERVIEW_ID_EXPECTED: &str = "a positive integer (a JSON number or a string of digits)";

/// Parses an id given as text (query string, or a JSON string).
pub fn parse_interview_id(raw: &str) -> Option<i64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse::<i64>().ok().filter(|id| *id > 0)
}

/// The body of `PUT /ai-interviews/settings/webhooks/`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    #[serde(default, deserialize_with = "interview_id")]
    pub ai_interview_id: Option<i64>,
    #[serde(default)]
    pub webhooks: Option<WebhooksBody>,
}

/// The `webhooks` object, in both directions (a GET's `data` is a valid PUT body).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksBody {
    /// Absent: keep the stored webhook. `null` is refused rather than read as "absent", since
    /// a caller sending it most likely means "remove".
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub start: Option<WebhookBody>,
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub submission: Option<WebhookBody>,
    /// Absent: keep the stored auth. `null`: remove it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub auth: Option<Option<AuthBody>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    #[serde(default)]
    pub status: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Output only (a GET shows it after a 410 Gone); ignored in a PUT so that a GET's `data`
    /// can be sent back as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthBody {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub status: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apikey: Option<ApiKeyBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicBody>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyBody {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BasicBody {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

/// Parses a JSON body into `T`, naming the offending field on failure.
fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Error> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return Error::invalid("body", format!("malformed JSON: {inner}"));
        }
        let field = if path == "." { "body".to_owned() } else { path };
        Error::InvalidArgument(vec![FieldViolation::new(field, strip_position(&inner))])
    })
}

/// Parses a body in which every value is an object or a scalar, as the settings body is.
///
/// serde also reads a JSON list where it expects a struct, taking the fields by position, so
/// `{"webhooks": [{"status": true, "url": "..."}]}` would otherwise be stored as if it named
/// `start`. Such a body is refused with the list's path named.
pub fn parse_without_lists<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Error> {
    let parsed = parse(bytes)?;
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Error::invalid("body", e.to_string()))?;
    match first_list(&value, "") {
        Some(path) => Err(Error::invalid(
            if path.is_empty() { "body" } else { &path },
            "must be a JSON object, not a list",
        )),
        None => Ok(parsed),
    }
}

/// The dotted path of the first list inside `value` (`""` for `value` itself).
fn first_list(value: &serde_json::Value, path: &str) -> Option<String> {
    match value {
        serde_json::Value::Array(_) => Some(path.to_owned()),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(key, value)| {
            let path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            first_list(value, &path)
        }),
        _ => None,
    }
}

/// serde's message without what only makes sense to us: the "at line L column C" that the
/// field path already gives, and our Rust type names (`expected struct PutBody`).
fn strip_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let text = match text.rfind(" at line ") {
        Some(i) => &text[..i],
        None => &text,
    };
    match text.find("expected struct ") {
        Some(i) => format!("{}expected a JSON object", &text[..i]),
        None => text.to_owned(),
    }
}

impl PutBody {
    /// The proto request this body asks for. `"auth": null` becomes an update mask that names
    /// `webhooks.auth` (AIP-134: listed but unset means remove).
    pub fn into_proto(self, ai_interview_id: i64) -> pb::UpdateWebhooksRequest {
        let webhooks = self.webhooks.unwrap_or_default();
        let remove_auth = matches!(webhooks.auth, Some(None));

        let update_mask = remove_auth.then(|| {
            let mut paths = vec!["webhooks.auth".to_owned()];
            if webhooks.start.is_some() {
                paths.push("webhooks.start".to_owned());
            }
            if webhooks.submission.is_some() {
                paths.push("webhooks.submission".to_owned());
            }
            prost_types::FieldMask { paths }
        });

        pb::UpdateWebhooksRequest {
            ai_interview_id,
            webhooks: Some(webhooks.into_proto()),
            update_mask,
        }
    }
}

impl WebhooksBody {
    fn into_proto(self) -> pb::Webhooks {
        let webhook = |w: WebhookBody| pb::Webhook {
            status: w.status,
            url: w.url,
            disabled_reason: String::new(),
        };
        pb::Webhooks {
            start: self.start.map(webhook),
            submission: self.submission.map(webhook),
            auth: self.auth.flatten().map(|a| pb::WebhookAuth {
                r#type: a.kind.unwrap_or_default(),
                status: a.status,
                apikey: a.apikey.map(|k| pb::ApiKeyAuth {
                    key: k.key.unwrap_or_default(),
                    value: k.value.unwrap_or_default(),
                }),
                basic: a.basic.map(|b| pb::BasicAuth {
                    username: b.username.unwrap_or_default(),
                    password: b.password.unwrap_or_default(),
                }),
            }),
        }
    }

    /// The JSON shape of stored (already masked) settings.
    pub fn from_proto(w: pb::Webhooks) -> Self {
        let webhook = |w: pb::Webhook| WebhookBody {
            status: w.status,
            url: w.url,
            disabled_reason: Some(w.disabled_reason).filter(|r| !r.is_empty()),
        };
        WebhooksBody {
            start: w.start.map(webhook),
            submission: w.submission.map(webhook),
            auth: w.auth.map(|a| {
                Some(AuthBody {
                    kind: Some(a.r#type),
                    status: a.status,
                    apikey: a.apikey.map(|k| ApiKeyBody {
                        key: Some(k.key),
                        value: Some(k.value),
                    }),
                    basic: a.basic.map(|b| BasicBody {
                        username: Some(b.username),
                        password: Some(b.password),
                    }),
                })
            }),
        }
    }
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// Like an ordinary optional field, but an explicit `null` is an error.
fn not_null<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    match Option::<T>::deserialize(de)? {
        Some(value) => Ok(Some(value)),
        None => Err(de::Error::custom(
            "must not be null: leave the webhook out to keep it, or send {\"status\": false} \
             to switch it off",
        )),
    }
}

/// Accepts `42` or `"42"` (the proto3 JSON convention for 64-bit integers); every REST body
/// reads its `ai_interview_id` with it.
pub fn interview_id<'de, D: Deserializer<'de>>(de: D) -> Result<Option<i64>, D::Error> {
    struct Id;

    impl Visitor<'_> for Id {
        type Value = Option<i64>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(INTERVIEW_ID_EXPECTED)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .ok()
                .filter(|v| *v > 0)
                .map(Some)
                .ok_or_else(|| E::custom(INTERVIEW_ID_HINT))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            if v > 0 {
                Ok(Some(v))
            } else {
                Err(E::custom(INTERVIEW_ID_HINT))
            }
        }

        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::custom(INTERVIEW_ID_HINT))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_interview_id(v)
                .map(Some)
                .ok_or_else(|| E::custom(INTERVIEW_ID_HINT))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    de.deserialize_any(Id)
}
