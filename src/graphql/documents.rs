//! Parsed documents by query text, so that a query an app sends again and again (its
//! catalogue, its cart) is not parsed again: async-graphql's parser costs more than
//! validating and executing a small query (about 34k instructions for `{ __typename }`,
//! 170k for the catalogue query, against a few thousand to copy the parsed document).
//!
//! Parsing is a function of the text alone, so a document from here is the one the parser
//! would give, positions included; every check after parsing (admission, the parser's
//! limits, validation) still runs on every request. Only documents that passed admission
//! are kept, and the cache is bounded in entries and in bytes of query text (a parsed
//! document is a small multiple of its text), least recently used first out; a text
//! longer than [`MAX_QUERY_BYTES`] is never kept.

use async_graphql::{Request, parser::types::ExecutableDocument};
use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex, PoisonError},
};

/// Documents kept per instance.
pub const MAX_ENTRIES: usize = 256;
/// Bytes of query text kept, all documents together.
pub const MAX_BYTES: usize = 512 * 1024;
/// Longest query text kept.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

/// The cache, shared by every request of an instance; cheap to clone.
#[derive(Clone)]
pub struct ParsedDocuments {
    store: Arc<Mutex<Store>>,
}

/// Documents by their query text, which is what they weigh.
type Store = super::weighed_lru::WeighedLru<Arc<ExecutableDocument>>;

impl Default for ParsedDocuments {
    fn default() -> Self {
        Self::new(
            NonZeroUsize::new(MAX_ENTRIES).unwrap_or(NonZeroUsize::MIN),
            MAX_BYTES,
        )
    }
}

impl ParsedDocuments {
    /// A cache holding at most `max_entries` documents and `max_bytes` of query text.
    pub fn new(max_entries: NonZeroUsize, max_bytes: usize) -> Self {
        Self {
            store: Arc::new(Mutex::new(Store::new(
                max_entries,
                max_bytes,
                |query, _| query.len(),
            ))),
        }
    }

    /// Gives `request` the parsed document of its query text when one is held; true if so.
    pub(super) fn lookup(&self, request: &mut Request) -> bool {
        if request.query.len() > MAX_QUERY_BYTES {
            return false;
        }
        let held = {
            let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
            store.get(request.query.as_str()).cloned()
        };
        match held {
            Some(document) => {
                request.set_parsed_query(ExecutableDocument::clone(&document));
                true
            }
            None => false,
        }
    }

    /// Keeps the document `request` was parsed into (after admission), under its text.
    pub(super) fn keep(&self, request: &mut Request) {
        if request.query.len() > MAX_QUERY_BYTES {
            return;
        }
        let Ok(document) = request.parsed_query() else {
            return;
        };
        let document = Arc::new(document.clone());
        let query = request.query.clone();
        self.store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(query, document);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str) -> Request {
        Request::new(query)
    }

    #[test]
    fn a_held_document_is_the_one_the_parser_gives() {
        let cache = ParsedDocuments::default();
        let query =
            "query Q($id: ID!) {\n  store(id: $id) { id ...F }\n}\nfragment F on Store { name }";
        let mut first = request(query);
        assert!(!cache.lookup(&mut first));
        cache.keep(&mut first);
        let mut second = request(query);
        assert!(cache.lookup(&mut second));
        let held = format!("{:?}", second.parsed_query().unwrap());
        let parsed = format!("{:?}", request(query).parsed_query().unwrap());
        assert_eq!(held, parsed, "positions and all");
        assert!(
            !cache.lookup(&mut request("{ __typename }")),
            "by exact text"
        );
    }

    #[test]
    fn unparsable_and_long_texts_are_not_kept() {
        let cache = ParsedDocuments::default();
        cache.keep(&mut request("{ nope"));
        assert!(cache.is_empty());
        let long = format!("{{ {} }}", "__typename ".repeat(MAX_QUERY_BYTES / 10));
        cache.keep(&mut request(&long));
        assert!(cache.is_empty());
    }

    #[test]
    fn the_cache_is_bounded_in_entries_and_bytes() {
        let cache = ParsedDocuments::new(NonZeroUsize::new(3).unwrap(), 60);
        for i in 0..5 {
            cache.keep(&mut request(&format!("{{ a{i}: __typename }}")));
        }
        assert_eq!(cache.len(), 3, "entries bounded");
        let big = format!("{{ {} }}", "b: __typename ".repeat(4));
        cache.keep(&mut request(&big));
        assert!(cache.len() < 3, "older entries leave to make room");
        assert!(cache.lookup(&mut request(&big)));
    }
}
