//! Accounts and their API keys.

use diesel::prelude::*;

use super::DbConnection;
use super::schema::{accounts, api_keys};
use crate::domain::api_key::{self, NewApiKey};
use crate::error::Error;

/// An API key as listed: never its secret.
#[derive(Debug, Clone, Queryable)]
pub struct ApiKeyInfo {
    /// The public part of the key.
    pub id: String,
    /// The owning account's name.
    pub account: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms, when revoked.
    pub revoked_at: Option<i64>,
}

/// Whether any account exists (the first `serve` creates one when none does).
pub fn any_account(conn: &mut DbConnection) -> Result<bool, Error> {
    let count: i64 = accounts::table.count().get_result(conn)?;
    Ok(count > 0)
}

/// Returns the id of the account named `name`, creating it if needed.
pub fn ensure_account(conn: &mut DbConnection, name: &str, now: i64) -> Result<i64, Error> {
    let existing = accounts::table
        .filter(accounts::name.eq(name))
        .select(accounts::id)
        .first::<i64>(conn)
        .optional()?;
    if let Some(id) = existing {
        return Ok(id);
    }
    diesel::insert_into(accounts::table)
        .values((accounts::name.eq(name), accounts::created_at.eq(now)))
        .execute(conn)?;
    Ok(accounts::table
        .filter(accounts::name.eq(name))
        .select(accounts::id)
        .first(conn)?)
}

/// Creates a key for the account named `name` (creating the account if needed) and returns
/// the key's plaintext, which is stored nowhere.
pub fn create_key(conn: &mut DbConnection, account: &str, now: i64) -> Result<String, Error> {
    let account_id = ensure_account(conn, account, now)?;
    let NewApiKey {
        plaintext,
        id,
        secret_hash,
    } = api_key::generate();
    diesel::insert_into(api_keys::table)
        .values((
            api_keys::id.eq(id),
            api_keys::account_id.eq(account_id),
            api_keys::secret_hash.eq(secret_hash),
            api_keys::created_at.eq(now),
        ))
        .execute(conn)?;
    Ok(plaintext)
}

/// Every key, optionally of one account, oldest first.
pub fn list_keys(conn: &mut DbConnection, account: Option<&str>) -> Result<Vec<ApiKeyInfo>, Error> {
    let mut query = api_keys::table
        .inner_join(accounts::table)
        .select((
            api_keys::id,
            accounts::name,
            api_keys::created_at,
            api_keys::revoked_at,
        ))
        .order(api_keys::created_at.asc())
        .into_boxed();
    if let Some(account) = account {
        query = query.filter(accounts::name.eq(account.to_owned()));
    }
    Ok(query.load(conn)?)
}

/// Revokes a key by its id (the part after `iwk_`, before the second `_`). Returns false when
/// no active key has that id.
pub fn revoke_key(conn: &mut DbConnection, id: &str, now: i64) -> Result<bool, Error> {
    let n = diesel::update(
        api_keys::table
            .filter(api_keys::id.eq(id))
            .filter(api_keys::revoked_at.is_null()),
    )
    .set(api_keys::revoked_at.eq(now))
    .execute(conn)?;
    Ok(n == 1)
}

/// Finds the account a presented key belongs to; `None` for an unknown, malformed or revoked
/// key. The secret is compared in constant time.
pub fn authenticate(conn: &mut DbConnection, presented: &str) -> Result<Option<i64>, Error> {
    let Some(key) = api_key::parse(presented) else {
        return Ok(None);
    };
    let row = api_keys::table
        .filter(api_keys::id.eq(key.id))
        .filter(api_keys::revoked_at.is_null())
        .select((api_keys::account_id, api_keys::secret_hash))
        .first::<(i64, String)>(conn)
        .optional()?;
    Ok(row.and_then(|(account_id, hash)| key.matches(&hash).then_some(account_id)))
}
