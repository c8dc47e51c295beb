//! Media types for GraphQL over HTTP: `Accept` negotiation and the request `Content-Type`,
//! parsed as HTTP defines them (RFC 9110 §8.3.1 and §12.5.1: case-insensitive type and
//! subtype, optional whitespace around `;`, quoted parameter values) with the `mediatype`
//! crate, never by splitting strings.

use mediatype::{MediaType, MediaTypeList, Name, ReadParams, names};

/// The two response media types the GraphQL over HTTP specification defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseType {
    /// `application/graphql-response+json`: request errors get a 4xx status.
    GraphqlResponseJson,
    /// `application/json`: the legacy type; every well-formed request gets 200.
    Json,
}

impl ResponseType {
    pub fn content_type(self) -> &'static str {
        match self {
            ResponseType::GraphqlResponseJson => "application/graphql-response+json; charset=utf-8",
            ResponseType::Json => "application/json; charset=utf-8",
        }
    }
}

/// `graphql-response`, which with the `+json` suffix names the GraphQL response type.
const GRAPHQL_RESPONSE: Name = Name::new_unchecked("graphql-response");

/// Picks the response type from an `Accept` header: the highest quality wins, then the
/// most specific range (an exact type beats a wildcard), then
/// `application/graphql-response+json`.
///
/// A client that names no GraphQL type, with no `Accept` at all or only `*/*` (curl,
/// `fetch`'s default, older mobile clients), gets `application/json`: those are the
/// legacy clients the specification keeps `application/json` for, and with it they get
/// 200 for every well-formed request rather than a 4xx they may not expect
/// (graphql-http's audits 47DE and 80D8). `None` means nothing acceptable (406).
pub fn negotiate(accept: Option<&str>) -> Option<ResponseType> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(ResponseType::Json);
    };
    let mut best: Option<(u16, u8, ResponseType)> = None;
    // An unparsable member of the list is skipped, as if it named a type we do not serve.
    for range in MediaTypeList::new(accept).flatten() {
        let quality = range
            .get_param(names::Q)
            .map_or(1000, |q| parse_quality(q.unquoted_str().as_ref()));
        if quality == 0 {
            continue;
        }
        let json_suffix = range.suffix.as_ref().is_some_and(|s| *s == names::JSON);
        let (kind, specificity) = if range.ty == names::_STAR && range.subty == names::_STAR {
            (ResponseType::Json, 0)
        } else if range.ty != names::APPLICATION {
            continue;
        } else if range.subty == names::_STAR && range.suffix.is_none() {
            (ResponseType::Json, 1)
        } else if range.subty == GRAPHQL_RESPONSE && json_suffix {
            (ResponseType::GraphqlResponseJson, 2)
        } else if range.subty == names::JSON && range.suffix.is_none() {
            (ResponseType::Json, 2)
        } else {
            continue;
        };
        let rank = |k: ResponseType| u8::from(k == ResponseType::GraphqlResponseJson);
        let better = match best {
            None => true,
            Some((q, s, current)) => (quality, specificity, rank(kind)) > (q, s, rank(current)),
        };
        if better {
            best = Some((quality, specificity, kind));
        }
    }
    best.map(|(_, _, kind)| kind)
}

/// A quality value in thousandths (RFC 9110 §12.4.2); a malformed one counts as 1.
fn parse_quality(raw: &str) -> u16 {
    match raw.trim().parse::<f32>() {
        Ok(q) if (0.0..=1.0).contains(&q) => (q * 1000.0).round() as u16,
        _ => 1000,
    }
}

/// Why a request body's `Content-Type` is refused (415).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContentTypeError {
    #[error("Content-Type is required: send application/json")]
    Missing,
    #[error("Content-Type must be application/json")]
    NotJson,
    #[error("the request body must be UTF-8 (charset=utf-8)")]
    NotUtf8,
}

/// Checks a request `Content-Type`: `application/json`, in any case and spacing, with no
/// charset or `charset=utf-8` (quoted or not), the one encoding the specification allows.
pub fn check_json_content_type(content_type: Option<&str>) -> Result<(), ContentTypeError> {
    let raw = content_type.ok_or(ContentTypeError::Missing)?;
    // What nearly every client sends, answered without parsing (a test checks the parse
    // agrees).
    if raw == "application/json" {
        return Ok(());
    }
    parse_json_content_type(raw)
}

fn parse_json_content_type(raw: &str) -> Result<(), ContentTypeError> {
    let media = MediaType::parse(raw.trim()).map_err(|_| ContentTypeError::NotJson)?;
    if media.ty != names::APPLICATION || media.subty != names::JSON || media.suffix.is_some() {
        return Err(ContentTypeError::NotJson);
    }
    match media.get_param(names::CHARSET) {
        None => Ok(()),
        Some(charset) if charset.unquoted_str().eq_ignore_ascii_case("utf-8") => Ok(()),
        Some(_) => Err(ContentTypeError::NotUtf8),
    }
}

/// True when an `Accept` header prefers an HTML page to a GraphQL response: a browser
/// navigating to `/graphql`.
pub fn prefers_html(accept: Option<&str>) -> bool {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return true;
    };
    MediaTypeList::new(accept).flatten().any(|range| {
        let quality = range
            .get_param(names::Q)
            .map_or(1000, |q| parse_quality(q.unquoted_str().as_ref()));
        quality > 0
            && ((range.ty == names::TEXT && range.subty == names::HTML)
                || (range.ty == names::_STAR && range.subty == names::_STAR))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ResponseType::*;

    #[test]
    fn negotiation_follows_the_specification() {
        assert_eq!(negotiate(None), Some(Json));
        assert_eq!(negotiate(Some("")), Some(Json));
        assert_eq!(negotiate(Some("*/*")), Some(Json));
        assert_eq!(negotiate(Some("application/*")), Some(Json));
        assert_eq!(negotiate(Some("application/json")), Some(Json));
        assert_eq!(
            negotiate(Some("application/graphql-response+json")),
            Some(GraphqlResponseJson)
        );
        assert_eq!(
            negotiate(Some("Application/GraphQL-Response+JSON ; charset=utf-8")),
            Some(GraphqlResponseJson)
        );
        assert_eq!(
            negotiate(Some("application/json, application/graphql-response+json")),
            Some(GraphqlResponseJson)
        );
        assert_eq!(
            negotiate(Some(
                "application/graphql-response+json;q=0.5, application/json"
            )),
            Some(Json)
        );
        assert_eq!(
            negotiate(Some("application/graphql-response+json, */*;q=0.1")),
            Some(GraphqlResponseJson)
        );
        assert_eq!(negotiate(Some("application/json, */*;q=0.1")), Some(Json));
        assert_eq!(
            negotiate(Some(
                "text/html; note=\"a, b\", application/graphql-response+json"
            )),
            Some(GraphqlResponseJson),
            "a comma inside a quoted parameter does not split the list"
        );
        assert_eq!(negotiate(Some("text/html")), None);
        assert_eq!(negotiate(Some("application/json;q=0")), None);
        assert_eq!(negotiate(Some("application/vnd.api+json")), None);
    }

    #[test]
    fn json_content_types_are_parsed_as_http_defines_them() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/json ; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/json ;charset=utf-8 ",
        ] {
            assert_eq!(check_json_content_type(Some(ok)), Ok(()), "{ok}");
            // The unparsed answer for the common case is the parser's.
            assert_eq!(parse_json_content_type(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            check_json_content_type(None),
            Err(ContentTypeError::Missing)
        );
        for not_json in [
            "text/plain",
            "application/jsonx",
            "application/ld+json",
            "json",
            "",
        ] {
            assert_eq!(
                check_json_content_type(Some(not_json)),
                Err(ContentTypeError::NotJson),
                "{not_json}"
            );
        }
        assert_eq!(
            check_json_content_type(Some("application/json; charset=iso-8859-1")),
            Err(ContentTypeError::NotUtf8)
        );
    }

    #[test]
    fn browsers_are_told_apart_from_graphql_clients() {
        assert!(prefers_html(Some(
            "text/html,application/xhtml+xml,*/*;q=0.8"
        )));
        assert!(prefers_html(None));
        assert!(!prefers_html(Some("application/graphql-response+json")));
        assert!(!prefers_html(Some("text/html;q=0, application/json")));
    }
}
