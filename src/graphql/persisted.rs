//! Automatic persisted queries, as Apollo defines them
//! (<https://www.apollographql.com/docs/apollo-server/performance/apq>, the protocol of
//! `@apollo/client/link/persisted-queries`):
//!
//! 1. The client sends only `extensions.persistedQuery = {version: 1, sha256Hash}`.
//! 2. A hash we do not know answers `PersistedQueryNotFound` (code
//!    `PERSISTED_QUERY_NOT_FOUND`); the client sends the query again with its hash.
//! 3. A query whose SHA-256 (lowercase hex of its UTF-8 text) is not the hash is refused
//!    (`BAD_REQUEST`); one that matches runs, and once it has passed validation its text is
//!    kept under the hash, so invalid documents never take room in the cache.
//!
//! A version other than 1 answers `PersistedQueryNotSupported`, which makes the link send
//! full queries from then on. The cache is per instance and bounded both in entries and in
//! bytes (least recently used first out); with several instances a client simply registers
//! its query again where it is missing. It works alike over POST, GET and websockets,
//! since it runs inside the schema (in [`super::gate`]).

use super::errors::ErrorCode;
use async_graphql::{Request, ServerError, ServerResult};
use sha2::{Digest, Sha256};
use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex, PoisonError},
};

/// How many documents one instance keeps.
pub const MAX_ENTRIES: usize = 1_000;
/// How many bytes of query text one instance keeps, all documents together.
pub const MAX_BYTES: usize = 4 * 1024 * 1024;

/// The bounded store of registered queries, shared by every request of an instance.
#[derive(Clone)]
pub struct PersistedQueries {
    store: Arc<Mutex<Store>>,
}

/// Query texts by their hash; each weighs its text.
type Store = super::weighed_lru::WeighedLru<Arc<str>>;

impl PersistedQueries {
    /// A store holding at most `max_entries` documents and `max_bytes` of text.
    pub fn new(max_entries: NonZeroUsize, max_bytes: usize) -> Self {
        Self {
            store: Arc::new(Mutex::new(Store::new(
                max_entries,
                max_bytes,
                |_, query| query.len(),
            ))),
        }
    }

    fn get(&self, hash: &str) -> Option<Arc<str>> {
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        store.get(hash).cloned()
    }

    fn insert(&self, hash: String, query: Arc<str>) {
        self.store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(hash, query);
    }

    /// Documents held now.
    pub fn len(&self) -> usize {
        let store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        store.len()
    }

    /// True when no document is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for PersistedQueries {
    fn default() -> Self {
        Self::new(
            NonZeroUsize::new(MAX_ENTRIES).unwrap_or(NonZeroUsize::MIN),
            MAX_BYTES,
        )
    }
}

/// A registration waiting for validation: the hash and the query text to keep under it.
pub(super) type Pending = (String, Arc<str>);

/// What `extensions.persistedQuery` says, once checked.
struct PersistedQuery {
    hash: String,
}

fn read_extension(value: async_graphql::Value) -> Result<PersistedQuery, ServerError> {
    let invalid = || {
        ErrorCode::BadRequest.error(
            "extensions.persistedQuery must be {\"version\": 1, \"sha256Hash\": \"<64 hex digits>\"}",
        )
    };
    let async_graphql::Value::Object(fields) = value else {
        return Err(invalid());
    };
    match fields.get("version") {
        Some(async_graphql::Value::Number(n)) if n.as_i64() == Some(1) => {}
        Some(async_graphql::Value::Number(_)) => {
            return Err(ErrorCode::PersistedQueryNotSupported.error("PersistedQueryNotSupported"));
        }
        _ => return Err(invalid()),
    }
    match fields.get("sha256Hash") {
        Some(async_graphql::Value::String(hash))
            if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok(PersistedQuery {
                hash: hash.to_ascii_lowercase(),
            })
        }
        _ => Err(invalid()),
    }
}

/// SHA-256 of the query text, lowercase hex, as the link computes it.
pub fn hash_of(query: &str) -> String {
    hex::encode(Sha256::digest(query.as_bytes()))
}

impl PersistedQueries {
    /// Before the document is read (the `prepare_request` step, in [`super::gate`]): a
    /// request naming a known hash gets its query text; one sending its query with a
    /// matching hash answers the registration to make once the document is valid.
    pub(super) fn resolve(&self, request: &mut Request) -> ServerResult<Option<Pending>> {
        let Some(extension) = request.extensions.remove("persistedQuery") else {
            return Ok(None);
        };
        let persisted = read_extension(extension)?;
        if request.query.is_empty() {
            let Some(query) = self.get(&persisted.hash) else {
                return Err(ErrorCode::PersistedQueryNotFound.error("PersistedQueryNotFound"));
            };
            request.query = query.to_string();
            Ok(None)
        } else if hash_of(&request.query) == persisted.hash {
            Ok(Some((persisted.hash, Arc::from(request.query.as_str()))))
        } else {
            Err(ErrorCode::BadRequest.error("provided sha does not match query"))
        }
    }

    /// After the document passed validation: keeps its text under its hash.
    pub(super) fn register(&self, (hash, query): Pending) {
        self.insert(hash, query);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_bounded_in_entries_and_bytes() {
        let store = PersistedQueries::new(NonZeroUsize::new(3).unwrap(), 100);
        for i in 0..5 {
            store.insert(format!("h{i}"), Arc::from("x".repeat(10)));
        }
        assert_eq!(store.len(), 3, "entries bounded");
        assert!(store.get("h0").is_none() && store.get("h4").is_some());

        store.insert("big".into(), Arc::from("y".repeat(95)));
        assert_eq!(store.len(), 1, "older entries leave to make room");
        store.insert("huge".into(), Arc::from("z".repeat(101)));
        assert!(store.get("huge").is_none(), "larger than the whole store");
        assert!(store.get("big").is_some());
    }

    #[test]
    fn hashes_are_lowercase_hex_sha256() {
        assert_eq!(
            hash_of("{__typename}"),
            // The example in Apollo's documentation of the protocol.
            "ecf4edb46db40b5132295c0291d62fb65d6759a9eedfa4d5d612dd5ec54a6b38"
        );
    }
}
