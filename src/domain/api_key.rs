//! API keys: how they look, how they are generated and how a presented key is checked.
//!
//! A key reads `iwk_<id>_<secret>`. The id is stored in clear so the key can be found with one
//! indexed lookup; the secret is stored only as its SHA-256 and compared in constant time. The
//! secret has 256 bits of entropy, so a fast hash is enough (no password-style stretching).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

const PREFIX: &str = "iwk_";

/// A newly generated key: the full text, shown once, and what is stored of it.
pub struct NewApiKey {
    /// The whole key, to be shown to its owner once and never stored.
    pub plaintext: String,
    /// The public part, used to find the key.
    pub id: String,
    /// Hex SHA-256 of the secret part.
    pub secret_hash: String,
}

/// A key as presented by a caller, split into its parts.
pub struct PresentedKey<'a> {
    /// The public part.
    pub id: &'a str,
    secret: &'a str,
}

/// Generates a fresh key.
pub fn generate() -> NewApiKey {
    let mut rng = rand::rng();
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);

    let id = hex(&id);
    let secret = URL_SAFE_NO_PAD.encode(secret);
    NewApiKey {
        plaintext: format!("{PREFIX}{id}_{secret}"),
        secret_hash: hash_secret(&secret),
        id,
    }
}

/// Splits a presented key; `None` when it cannot be one of ours.
pub fn parse(presented: &str) -> Option<PresentedKey<'_>> {
    let rest = presented.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.is_empty() {
        return None;
    }
    Some(PresentedKey { id, secret })
}

impl PresentedKey<'_> {
    /// Whether the secret part matches a stored hash, in constant time.
    pub fn matches(&self, stored_hash: &str) -> bool {
        hash_secret(self.secret)
            .as_bytes()
            .ct_eq(stored_hash.as_bytes())
            .into()
    }
}

fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_and_matches_only_its_hash() {
        let key = generate();
        let parsed = parse(&key.plaintext).expect("own format");

        assert_eq!(parsed.id, key.id);
        assert!(parsed.matches(&key.secret_hash));
        assert!(!parsed.matches(&generate().secret_hash));
    }

    #[test]
    fn foreign_strings_are_not_keys() {
        for s in ["", "iwk_", "iwk_abc_def", "abc", "iwk_zzzzzzzzzzzzzzzz_x"] {
            assert!(parse(s).is_none(), "{s:?}");
        }
    }

    #[test]
    fn a_tampered_secret_does_not_match() {
        let key = generate();
        let tampered = format!("{}x", key.plaintext);
        assert!(!parse(&tampered).unwrap().matches(&key.secret_hash));
    }
}
