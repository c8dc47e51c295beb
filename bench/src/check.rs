//! What counts as a request served: a 200 whose body is exactly the expected one, or, for
//! answers that legitimately vary, a 200 with GraphQL `data` and no `errors`. Anything else
//! is a failure with a reason, never a request served.

use bytes::Bytes;
use std::sync::Arc;

/// A custom test of a body that may vary between answers: `Err` names what is wrong.
pub type BodyTest = Arc<dyn Fn(&[u8]) -> Result<(), String> + Send + Sync>;

/// What an answer must be to count as served.
#[derive(Clone)]
pub enum Expected {
    /// A 200 with exactly these bytes.
    Exact(Bytes),
    /// A 200 whose body passes this test.
    Test(BodyTest),
}

impl Expected {
    /// A 200 with a GraphQL body carrying `data` and no `errors`.
    pub fn graphql_data() -> Self {
        Expected::Test(Arc::new(|body| graphql_data(body).map(|_| ())))
    }

    /// Checks one answer: `Ok` when it counts as served, else why not.
    pub fn check(&self, status: u16, body: &[u8]) -> Result<(), String> {
        if status != 200 {
            return Err(format!("status {status}: {}", excerpt(body)));
        }
        match self {
            Expected::Exact(expected) if body == expected.as_ref() => Ok(()),
            Expected::Exact(expected) => Err(match graphql_errors(body) {
                Some(errors) => format!("200 carrying errors: {errors}"),
                None => format!(
                    "body differs from the expected one at byte {} ({} bytes, expected {}): {}",
                    first_difference(body, expected),
                    body.len(),
                    expected.len(),
                    excerpt(body)
                ),
            }),
            Expected::Test(test) => test(body),
        }
    }
}

/// The body's `data`, when it is GraphQL JSON with `data` and without `errors`.
pub fn graphql_data(body: &[u8]) -> Result<serde_json::Value, String> {
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON ({e}): {}", excerpt(body)))?;
    if let Some(errors) = value.get("errors") {
        return Err(format!("200 carrying errors: {errors}"));
    }
    match value.get_mut("data").map(serde_json::Value::take) {
        Some(data) if !data.is_null() => Ok(data),
        _ => Err(format!("no data: {}", excerpt(body))),
    }
}

/// The `errors` of a GraphQL JSON body, if it has any.
pub fn graphql_errors(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("errors").map(ToString::to_string)
}

/// The index of the first byte where `a` and `b` differ (the shorter length when one is a
/// prefix of the other).
pub fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or_else(|| a.len().min(b.len()))
}

/// The first 200 characters of a body, for a failure message.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPENAME: &str = r#"{"data":{"__typename":"Query"}}"#;

    #[test]
    fn the_exact_body_is_served() {
        let expected = Expected::Exact(Bytes::from_static(TYPENAME.as_bytes()));
        assert_eq!(expected.check(200, TYPENAME.as_bytes()), Ok(()));
    }

    #[test]
    fn a_200_with_errors_is_a_failure() {
        let expected = Expected::Exact(Bytes::from_static(TYPENAME.as_bytes()));
        let body = br#"{"data":null,"errors":[{"message":"Too many requests"}]}"#;
        let err = expected.check(200, body).unwrap_err();
        assert!(err.contains("200 carrying errors"), "{err}");
        let err = Expected::graphql_data().check(200, body).unwrap_err();
        assert!(err.contains("200 carrying errors"), "{err}");
        // Partial data with errors is a failure too.
        let partial = br#"{"data":{"me":null},"errors":[{"message":"x"}]}"#;
        assert!(Expected::graphql_data().check(200, partial).is_err());
    }

    #[test]
    fn another_body_or_status_is_a_failure() {
        let expected = Expected::Exact(Bytes::from_static(TYPENAME.as_bytes()));
        let err = expected
            .check(200, br#"{"data":{"__typename":"Mutation"}}"#)
            .unwrap_err();
        assert!(err.contains("at byte 23"), "{err}");
        let err = expected.check(503, TYPENAME.as_bytes()).unwrap_err();
        assert!(err.starts_with("status 503"), "{err}");
        assert!(Expected::graphql_data().check(200, b"not json").is_err());
        assert!(
            Expected::graphql_data()
                .check(200, br#"{"data":null}"#)
                .is_err()
        );
        assert!(
            Expected::graphql_data()
                .check(200, br#"{"data":{"a":1}}"#)
                .is_ok()
        );
    }

    #[test]
    fn differences_are_located() {
        assert_eq!(first_difference(b"abc", b"abd"), 2);
        assert_eq!(first_difference(b"ab", b"abc"), 2);
        assert_eq!(first_difference(b"", b""), 0);
        assert_eq!(excerpt("é".repeat(300).as_bytes()).chars().count(), 201);
    }
}
