//! Signing secrets and signatures, as the Standard Webhooks specification defines them.
//!
//! A secret reads `whsec_<base64 key>`. A delivery's `webhook-signature` header holds
//! `v1,<base64 HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>`, once per secret
//! in force, separated by spaces.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// Generates a new secret with a 192-bit key.
pub fn generate_secret() -> String {
    let mut key = [0u8; 24];
    rand::rng().fill_bytes(&mut key);
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// The `v1,<base64>` signature of one delivery under one secret. `None` when the secret is not
/// a `whsec_` secret (which would be a storage bug).
pub fn sign(secret: &str, webhook_id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix(PREFIX)?).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn matches_the_specification_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn generated_secrets_sign() {
        let secret = generate_secret();
        assert!(secret.starts_with("whsec_"));
        assert!(sign(&secret, "id", 1, b"{}").is_some());
        assert_ne!(generate_secret(), secret);
    }
}
