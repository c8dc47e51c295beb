//! Content negotiation for GraphQL over HTTP.

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

/// Picks the response type from an `Accept` header: the highest quality wins, and
/// `application/graphql-response+json` wins ties. With no header, or only wildcards, the
/// specification (since 2025) lets the server choose `application/graphql-response+json`.
/// `None` means nothing acceptable (406).
pub fn negotiate(accept: Option<&str>) -> Option<ResponseType> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(ResponseType::GraphqlResponseJson);
    };
    let mut best: Option<(u16, u8, ResponseType)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut quality = 1000_u16;
        for param in parts {
            if let Some(q) = param.trim().strip_prefix("q=") {
                quality = parse_quality(q.trim());
            }
        }
        if quality == 0 {
            continue;
        }
        // Specificity breaks ties between equal qualities: an exact type beats a wildcard.
        let candidates: &[(ResponseType, u8)] = match media.as_str() {
            "application/graphql-response+json" => &[(ResponseType::GraphqlResponseJson, 2)],
            "application/json" => &[(ResponseType::Json, 2)],
            "application/*" | "*/*" => &[(ResponseType::GraphqlResponseJson, 1)],
            _ => &[],
        };
        for &(kind, specificity) in candidates {
            let rank = |k: ResponseType| u8::from(k == ResponseType::GraphqlResponseJson);
            let better = match best {
                None => true,
                Some((q, s, current)) => (quality, specificity, rank(kind)) > (q, s, rank(current)),
            };
            if better {
                best = Some((quality, specificity, kind));
            }
        }
    }
    best.map(|(_, _, kind)| kind)
}

fn parse_quality(raw: &str) -> u16 {
    match raw.parse::<f32>() {
        Ok(q) if (0.0..=1.0).contains(&q) => (q * 1000.0).round() as u16,
        _ => 1000,
    }
}

/// True when a request `Content-Type` is JSON (`application/json`, any charset).
pub fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ResponseType::*;

    #[test]
    fn negotiation_follows_the_specification() {
        assert_eq!(negotiate(None), Some(GraphqlResponseJson));
        assert_eq!(negotiate(Some("*/*")), Some(GraphqlResponseJson));
        assert_eq!(negotiate(Some("application/json")), Some(Json));
        assert_eq!(
            negotiate(Some("application/graphql-response+json")),
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
        assert_eq!(negotiate(Some("application/json, */*;q=0.1")), Some(Json));
        assert_eq!(negotiate(Some("text/html")), None);
        assert_eq!(negotiate(Some("application/json;q=0")), None);
    }

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type("application/jsonx"));
    }
}
