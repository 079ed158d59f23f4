//! Turns a presented API key into the account it belongs to.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::error::Error;
use crate::storage::{Db, accounts};

/// How long a verified key is trusted without asking the database again. Bounds how late a
/// revocation (made by `api-keys revoke`, another process) takes effect.
const CACHE_TTL: Duration = Duration::from_secs(10);

/// Bounds the cache's memory; when full it is simply cleared.
const CACHE_CAPACITY: usize = 10_000;

/// The account a request acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountId(pub i64);

/// Checks API keys against the database, with a short-lived cache of successes so that the
/// hot path costs no database round trip.
pub struct Authenticator {
    db: Db,
    // Keyed by the SHA-256 of the whole presented key, so the cache holds no usable key.
    verified: Mutex<HashMap<[u8; 32], (AccountId, Instant)>>,
}

impl Authenticator {
    /// An authenticator over `db`.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// The account of the presented key, or `UNAUTHENTICATED`.
    pub async fn authenticate(&self, presented: Option<&str>) -> Result<AccountId, Error> {
        let Some(presented) = presented.map(str::trim).filter(|k| !k.is_empty()) else {
            return Err(Error::Unauthenticated(
                "missing API key: send it in the `apiKey` header (gRPC metadata `apikey`)",
            ));
        };

        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if let Some(account) = self.cached(&digest) {
            return Ok(account);
        }

        let key = presented.to_owned();
        let found = self
            .db
            .read(move |conn| accounts::authenticate(conn, &key))
            .await?;
        let account = found
            .map(AccountId)
            .ok_or(Error::Unauthenticated("invalid or revoked API key"))?;

        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(digest, (account, Instant::now()));
        Ok(account)
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<AccountId> {
        let cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(digest)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(account, _)| *account)
    }
}
