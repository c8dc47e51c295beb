//! GraphiQL served whole from the binary: the page that `GET /graphql` gives a browser, and
//! the files it loads under `/graphiql/`, so it renders with no network at all (offline,
//! behind a proxy, in an air-gapped cluster). The third-party files are the production
//! browser builds of GraphiQL 4 and React 18 at pinned versions, vendored unchanged from
//! their npm packages in `assets/graphiql/vendor/` by `assets/graphiql/update.sh`; the page,
//! its start script and its stylesheet are ours, beside them.
//!
//! Each file's URL holds a hash of its content, `graphiql/<hash>/<name>`, written relative
//! to the page so that a path prefix in front of the service keeps working. A hashed URL
//! never changes content, so it is cached for a year as `immutable` (RFC 8246) and a new
//! build is a new URL. The page itself is revalidated on each load (`no-cache`) against its
//! `ETag`, and every response answers `If-None-Match` with 304 (RFC 9110 §8.8.3, §13.1.2).
//! The page's Content-Security-Policy lets it load only from its own origin, which makes the
//! "no other host" promise hold in the browser, not only in this code.

use axum::{
    body::Body,
    extract::Path,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use headers::{ETag, HeaderMapExt, IfNoneMatch};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// One file the page loads, embedded at build time.
struct Asset {
    /// The file's name in `assets/graphiql/` (or `vendor/`), the last segment of its URL and
    /// the `{{name}}` placeholder in `index.html`.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file the page may load; nothing else is served under `/graphiql/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "react.production.min.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("../../assets/graphiql/vendor/react.production.min.js"),
    },
    Asset {
        name: "react-dom.production.min.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("../../assets/graphiql/vendor/react-dom.production.min.js"),
    },
    Asset {
        name: "graphiql.min.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("../../assets/graphiql/vendor/graphiql.min.js"),
    },
    Asset {
        name: "graphiql.min.css",
        content_type: CSS,
        body: include_bytes!("../../assets/graphiql/vendor/graphiql.min.css"),
    },
    Asset {
        name: "page.css",
        content_type: CSS,
        body: include_bytes!("../../assets/graphiql/page.css"),
    },
    Asset {
        name: "start.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("../../assets/graphiql/start.js"),
    },
];

const PAGE_TEMPLATE: &str = include_str!("../../assets/graphiql/index.html");

/// Everything the page loads comes from its own origin: scripts and stylesheets are files
/// served here (no inline script), fonts and icons are `data:` URLs inside GraphiQL's
/// stylesheet, requests and the subscription websocket go to the page's own origin.
/// Inline styles stay allowed because GraphiQL's dialogs insert `<style>` elements.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; font-src 'self' data:; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A year, the longest `max-age` caches are asked to honour (RFC 9111 §5.2.2.1 leaves it
/// open; a year is the convention).
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// An asset with the content hash that names it.
struct Hashed {
    asset: &'static Asset,
    hash: String,
    etag: ETag,
}

/// The page with its files' hashed URLs filled in, and the files by URL.
struct Catalogue {
    assets: Vec<Hashed>,
    page: String,
    page_etag: ETag,
}

static CATALOGUE: LazyLock<Catalogue> = LazyLock::new(|| {
    let assets: Vec<Hashed> = ASSETS
        .iter()
        .map(|asset| {
            let hash = content_hash(asset.body);
            let etag = strong_etag(&hash);
            Hashed { asset, hash, etag }
        })
        .collect();
    let page = assets
        .iter()
        .fold(PAGE_TEMPLATE.to_owned(), |page, hashed| {
            page.replace(
                &format!("{{{{{}}}}}", hashed.asset.name),
                &format!("graphiql/{}/{}", hashed.hash, hashed.asset.name),
            )
        });
    let page_etag = strong_etag(&content_hash(page.as_bytes()));
    Catalogue {
        assets,
        page,
        page_etag,
    }
});

/// The first 64 bits of the SHA-256 of `bytes`, in hex: plenty to tell builds apart.
fn content_hash(bytes: &[u8]) -> String {
    let mut hex = hex::encode(Sha256::digest(bytes));
    hex.truncate(16);
    hex
}

fn strong_etag(hash: &str) -> ETag {
    // A quoted run of hex digits is always a valid entity tag.
    format!("\"{hash}\"")
        .parse()
        .expect("a quoted hex string is an entity tag")
}

/// The GraphiQL page, for a browser's `GET /graphql`. `request` is the request's headers,
/// read for `If-None-Match`.
pub fn page(request: &HeaderMap) -> Response {
    let catalogue = &*CATALOGUE;
    respond(
        request,
        &catalogue.page_etag,
        Body::from(catalogue.page.as_str()),
        &[
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // The same URL answers JSON to clients that ask for it.
            (header::VARY, "Accept"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
    )
}

/// `GET /graphiql/{hash}/{name}`: one of the page's files. A name this build does not have,
/// or a hash that is not its content's (a page from another build), is 404.
pub async fn asset(Path((hash, name)): Path<(String, String)>, request: HeaderMap) -> Response {
    let Some(hashed) = CATALOGUE
        .assets
        .iter()
        .find(|hashed| hashed.asset.name == name && hashed.hash == hash)
    else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "no-store")],
            "no such GraphiQL file in this build",
        )
            .into_response();
    };
    respond(
        &request,
        &hashed.etag,
        Body::from(hashed.asset.body),
        &[
            (header::CONTENT_TYPE, hashed.asset.content_type),
            (header::CACHE_CONTROL, IMMUTABLE),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
    )
}

/// 200 with `body`, or 304 when the request's `If-None-Match` already holds `etag`; both
/// carry the `ETag` and `fields`, since a 304 must repeat the `Cache-Control` and `Vary` a
/// 200 would have sent (RFC 9110 §15.4.5).
fn respond(
    request: &HeaderMap,
    etag: &ETag,
    body: Body,
    fields: &[(HeaderName, &'static str)],
) -> Response {
    let unchanged = request
        .typed_get::<IfNoneMatch>()
        .is_some_and(|if_none_match| !if_none_match.precondition_passes(etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_response()
    };
    let headers = response.headers_mut();
    headers.typed_insert(etag.clone());
    for (name, value) in fields {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_file_by_its_hash_and_leaves_no_placeholder() {
        let catalogue = &*CATALOGUE;
        assert!(
            !catalogue.page.contains("{{"),
            "a placeholder names no file: {}",
            catalogue.page
        );
        for hashed in &catalogue.assets {
            let url = format!("\"graphiql/{}/{}\"", hashed.hash, hashed.asset.name);
            assert!(catalogue.page.contains(&url), "the page loads {url}");
        }
    }
}
