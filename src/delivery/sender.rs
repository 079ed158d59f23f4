//! One HTTP attempt: the guarded client, the Standard Webhooks headers, the configured auth,
//! and what the receiver answered.
//!
//! The client resolves names only through [`GuardedResolver`], so it connects only to an
//! address that was checked; IP-literal hosts, which skip the resolver, are checked before
//! each attempt. It never follows a redirect and ignores proxy variables (a proxy would connect
//! on our behalf to an address we never checked).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};

use super::resolver::{GuardedResolver, guard_literal_host};
use crate::domain::settings::{Auth, Credentials};
use crate::domain::signing;
use crate::domain::url_guard::{TargetPolicy, redact};

/// The most of a receiver's answer kept in the attempt log.
pub const MAX_RESPONSE_BODY: usize = 4096;

/// What identifies us to receivers.
pub const USER_AGENT: &str = concat!("interview-webhooks/", env!("CARGO_PKG_VERSION"));

/// A request to send.
pub struct Outgoing<'a> {
    /// Target URL, as stored.
    pub url: &'a str,
    /// `webhook-id`.
    pub webhook_id: &'a str,
    /// The JSON body.
    pub body: &'a str,
    /// The `whsec_` secrets in force; each adds one signature.
    pub secrets: &'a [&'a str],
    /// The auth to send, if enabled.
    pub auth: Option<&'a Auth>,
}

/// What one attempt found out. Never holds a secret, a URL's query or user-info.
#[derive(Debug, Clone)]
pub struct Attempted {
    /// Unix ms when it started.
    pub at_ms: i64,
    /// How long it took.
    pub duration: Duration,
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// The first [`MAX_RESPONSE_BODY`] bytes of the answer.
    pub response_body: Option<String>,
    /// The receiver's `Retry-After`, on 429 and 503.
    pub retry_after: Option<Duration>,
}

impl Attempted {
    /// Whether the receiver took it (2xx).
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Sends webhooks.
pub struct Sender {
    client: reqwest::Client,
    policy: TargetPolicy,
}

impl Sender {
    /// A sender with the given timeouts and target policy.
    pub fn new(
        policy: TargetPolicy,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        // reqwest is built without a default TLS provider; install ring once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver::new(policy)))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .user_agent(USER_AGENT)
            .build()?;
        Ok(Self { client, policy })
    }

    /// Makes one attempt. Never fails: every problem is described in the result.
    pub async fn send(&self, out: Outgoing<'_>) -> Attempted {
        let at_ms = crate::storage::now_ms();
        let started = Instant::now();
        let mut attempted = Attempted {
            at_ms,
            duration: Duration::ZERO,
            status: None,
            error: None,
            response_body: None,
            retry_after: None,
        };

        let request = match self.build(&out, at_ms) {
            Ok(r) => r,
            Err(reason) => {
                attempted.error = Some(reason);
                return attempted;
            }
        };

        match self.client.execute(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                attempted.status = Some(status);
                if status == 429 || status == 503 {
                    attempted.retry_after = retry_after(response.headers().get(RETRY_AFTER));
                }
                if !(200..300).contains(&status) {
                    attempted.error = Some(match status {
                        300..=399 => {
                            format!("receiver answered HTTP {status}; redirects are not followed")
                        }
                        _ => format!("receiver answered HTTP {status}"),
                    });
                }
                attempted.response_body = Some(read_capped(response).await);
            }
            Err(err) => attempted.error = Some(describe(err)),
        }
        attempted.duration = started.elapsed();
        if let Some(auth) = out.auth {
            scrub(&mut attempted.response_body, auth);
        }
        // Cut only after masking, so that a secret straddling the cut cannot leave its start.
        if let Some(body) = attempted.response_body.as_mut() {
            cut_at_char(body, MAX_RESPONSE_BODY);
        }
        attempted
    }

    fn build(&self, out: &Outgoing<'_>, at_ms: i64) -> Result<reqwest::Request, String> {
        let url =
            url::Url::parse(out.url).map_err(|_| "the stored URL no longer parses".to_owned())?;
        guard_literal_host(&url, self.policy)?;

        let timestamp = at_ms / 1000;
        let signatures: Vec<String> = out
            .secrets
            .iter()
            .filter_map(|s| signing::sign(s, out.webhook_id, timestamp, out.body.as_bytes()))
            .collect();
        if signatures.is_empty() {
            return Err("no usable signing secret".to_owned());
        }

        let mut request = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", out.webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signatures.join(" "))
            .body(out.body.to_owned());

        if let Some(auth) = out.auth.filter(|a| a.enabled) {
            request = match &auth.credentials {
                Credentials::ApiKey { header, value } => {
                    let name = HeaderName::from_bytes(header.as_bytes())
                        .map_err(|_| "the stored API key header name is invalid".to_owned())?;
                    let mut value = HeaderValue::from_str(value.expose())
                        .map_err(|_| "the stored API key value is invalid".to_owned())?;
                    value.set_sensitive(true);
                    request.header(name, value)
                }
                Credentials::Basic { username, password } => {
                    let token = basic_token(username, password.expose());
                    let mut value = HeaderValue::from_str(&format!("Basic {token}"))
                        .map_err(|_| "the stored basic credentials are invalid".to_owned())?;
                    value.set_sensitive(true);
                    request.header(reqwest::header::AUTHORIZATION, value)
                }
            };
        }

        request
            .build()
            .map_err(|_| format!("cannot build a request to {}", redact(&url)))
    }
}

/// The credentials of HTTP basic auth as sent after `Basic `.
fn basic_token(username: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
}

/// Masks the auth secrets in a receiver's answer: a receiver that echoes its request headers
/// must not make the attempt log (or a test event's reply) show them.
fn scrub(body: &mut Option<String>, auth: &Auth) {
    let Some(text) = body.as_mut() else {
        return;
    };
    let secrets: Vec<String> = match &auth.credentials {
        Credentials::ApiKey { value, .. } => vec![value.expose().to_owned()],
        Credentials::Basic { username, password } => vec![
            password.expose().to_owned(),
            basic_token(username, password.expose()),
        ],
    };
    // A receiver that echoes its request as JSON escapes quotes and backslashes: mask that
    // spelling too.
    let escaped: Vec<String> = secrets
        .iter()
        .filter_map(|s| serde_json::to_string(s).ok())
        .map(|quoted| quoted[1..quoted.len() - 1].to_owned())
        .collect();
    for secret in secrets.iter().chain(&escaped).filter(|s| !s.is_empty()) {
        if text.contains(secret.as_str()) {
            *text = text.replace(secret.as_str(), crate::domain::settings::MASK);
        }
    }
}

/// Shortens `text` to at most `max` bytes, on a character boundary.
fn cut_at_char(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// How much of an answer is read: what is kept plus room for the longest auth secret, even
/// JSON-escaped, so that masking sees every secret that starts within what is kept.
const READ_LIMIT: usize = MAX_RESPONSE_BODY + 32 * 1024;

/// Reads at most [`READ_LIMIT`] bytes of the answer, then stops reading.
async fn read_capped(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < READ_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(READ_LIMIT);
    String::from_utf8_lossy(&body).into_owned()
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let text = value?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A transport error as the attempt log shows it: the kind and the innermost cause, without
/// the URL (whose query string may carry a token).
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };

    let mut cause: Option<String> = None;
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        cause = Some(s.to_string());
        source = s.source();
    }
    match cause {
        Some(cause) if !err.is_timeout() => format!("{kind}: {cause}"),
        _ => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_key_auth(value: &str) -> Auth {
        Auth {
            enabled: true,
            credentials: Credentials::ApiKey {
                header: "X-K".into(),
                value: crate::domain::settings::Secret::new(value),
            },
        }
    }

    #[test]
    fn echoed_secrets_are_masked_in_the_logged_answer() {
        use crate::domain::settings::Secret;

        let basic = Auth {
            enabled: true,
            credentials: Credentials::Basic {
                username: "u".into(),
                password: Secret::new("hunter2"),
            },
        };
        let token = base64::engine::general_purpose::STANDARD.encode("u:hunter2");
        let mut body = Some(format!("pw=hunter2 auth=Basic {token}"));
        scrub(&mut body, &basic);
        assert_eq!(body.unwrap(), "pw=******** auth=Basic ********");

        let mut body = Some("x-k: k3y".to_owned());
        scrub(&mut body, &api_key_auth("k3y"));
        assert_eq!(body.unwrap(), "x-k: ********");

        let mut body = Some(r#"{"x-k": "a\"b\\c"}"#.to_owned());
        scrub(&mut body, &api_key_auth(r#"a"b\c"#));
        assert_eq!(body.unwrap(), r#"{"x-k": "********"}"#);
    }

    #[test]
    fn cutting_keeps_whole_characters() {
        let mut text = "aé".to_owned();
        cut_at_char(&mut text, 2);
        assert_eq!(text, "a");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let v = HeaderValue::from_static("120");
        assert_eq!(retry_after(Some(&v)), Some(Duration::from_secs(120)));

        let later = std::time::SystemTime::now() + Duration::from_secs(600);
        let v = HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap();
        let got = retry_after(Some(&v)).unwrap();
        assert!(got > Duration::from_secs(590) && got <= Duration::from_secs(600));

        assert_eq!(retry_after(Some(&HeaderValue::from_static("soon"))), None);
    }
}
