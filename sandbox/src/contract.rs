//! The documented examples of each upstream's contract (`tests/fixtures/<upstream>/`, each
//! folder's README names the sources), and the comparisons by JSON structure that pin
//! both sides to them: the simulators' tests (this crate) and the clients' tests
//! (cbtl-bff) read the same files, so neither side can drift from the documents alone.
//!
//! A structure is compared, not values: keys, and the JSON kind of each value. Two rules
//! make documented examples usable as shapes:
//!
//! - a documented `null` stands for "nullable, empty here": it matches a value of any kind,
//!   or no value at all (an optional field left out);
//! - a documented `"{{name}}"` string is a placeholder (see [`fill`]) and matches any value.
//!
//! Arrays are compared element by element: each of ours against the documented element at
//! the same place, or the documented first one past the documented end (an empty
//! documented array says nothing about its elements).

use serde_json::Value;
use std::path::PathBuf;

/// Where the fixtures live: `tests/fixtures` at the repository root.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures"))
}

/// `tests/fixtures/<upstream>/<name>`, parsed.
pub fn fixture(upstream: &str, name: &str) -> Result<Value, String> {
    let path = fixtures_dir().join(upstream).join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Replaces every `"{{name}}"` string in `value` by the whole JSON value given for `name`.
pub fn fill(value: &mut Value, subs: &[(&str, Value)]) {
    match value {
        Value::String(s) => {
            if let Some((_, with)) = subs.iter().find(|(k, _)| *s == format!("{{{{{k}}}}}")) {
                *value = with.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| fill(v, subs)),
        Value::Object(map) => map.values_mut().for_each(|v| fill(v, subs)),
        _ => {}
    }
}

/// The JSON kind of a value: `null`, `bool`, `number`, `string`, `array` or `object`.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether a documented value stands for any value: a `null` or a placeholder.
fn wildcard(documented: &Value) -> bool {
    documented.is_null()
        || documented
            .as_str()
            .is_some_and(|s| s.starts_with("{{") && s.ends_with("}}"))
}

/// Which keys of `documented` and of `ours` must match: all of the one side, at least.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Every documented key is in ours.
    Covers,
    /// Every key of ours is documented.
    Within,
}

fn compare(documented: &Value, ours: &Value, at: &str, direction: Direction) -> Result<(), String> {
    if wildcard(documented) {
        return Ok(());
    }
    if kind(documented) != kind(ours) {
        return Err(format!(
            "{at}: documented {}, ours {}: {ours}",
            kind(documented),
            kind(ours)
        ));
    }
    match (documented, ours) {
        (Value::Object(documented), Value::Object(ours)) => {
            let (from, to, missing) = match direction {
                Direction::Covers => (documented, ours, "missing from ours"),
                Direction::Within => (ours, documented, "not documented"),
            };
            for (key, value) in from {
                let Some(other) = to.get(key) else {
                    if direction == Direction::Covers && value.is_null() {
                        continue;
                    }
                    return Err(format!("{at}.{key}: {missing}"));
                };
                let (documented, ours) = match direction {
                    Direction::Covers => (value, other),
                    Direction::Within => (other, value),
                };
                compare(documented, ours, &format!("{at}.{key}"), direction)?;
            }
            Ok(())
        }
        (Value::Array(documented), Value::Array(ours)) => {
            let Some(first) = documented.first() else {
                return Ok(());
            };
            ours.iter().enumerate().try_for_each(|(i, item)| {
                let documented = documented.get(i).unwrap_or(first);
                compare(documented, item, &format!("{at}[{i}]"), direction)
            })
        }
        _ => Ok(()),
    }
}

/// Every documented key is in `ours`, with a value of the same kind, recursively: ours
/// says at least what the document says.
pub fn covers(documented: &Value, ours: &Value) -> Result<(), String> {
    compare(documented, ours, "$", Direction::Covers)
}

/// Every key of `ours` is documented, with a value of the same kind, recursively: ours
/// says nothing the document does not (a subset of a published API, such as Stripe's).
pub fn within(ours: &Value, documented: &Value) -> Result<(), String> {
    compare(documented, ours, "$", Direction::Within)
}

/// The same keys on both sides, with values of the same kinds: a contract we write
/// ourselves (Okya, Epoint) is answered exactly as documented.
pub fn same_shape(documented: &Value, ours: &Value) -> Result<(), String> {
    covers(documented, ours)?;
    within(ours, documented)
}

/// Whether the form or query parameter `name` is among `documented` (a list of names as a
/// form writes them, `metadata[*]` standing for any metadata key): Stripe's parameters in
/// `stripe/parameters.json`.
pub fn documented_parameter(documented: &Value, name: &str) -> bool {
    let general = match name.split_once('[') {
        Some(("metadata", key)) if key != "]" => "metadata[*]",
        _ => name,
    };
    documented
        .as_array()
        .is_some_and(|names| names.iter().any(|n| n == general))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_compare_keys_and_kinds_not_values() {
        let documented = json!({"id": "a", "n": 1, "lines": [{"q": 1}], "note": null});
        let ours = json!({"id": "b", "n": 2, "lines": [{"q": 3}, {"q": 4}], "note": "x"});
        assert_eq!(same_shape(&documented, &ours), Ok(()));
        let extra = json!({"id": "b", "n": 2, "lines": [], "note": null, "more": true});
        assert_eq!(covers(&documented, &extra), Ok(()));
        assert_eq!(
            within(&extra, &documented),
            Err("$.more: not documented".to_owned())
        );
        assert_eq!(
            covers(&documented, &json!({"id": "b", "n": 2, "lines": []})),
            Ok(())
        );
        let missing = json!({"id": "b", "lines": []});
        assert_eq!(
            covers(&documented, &missing),
            Err("$.n: missing from ours".to_owned())
        );
        let wrong = json!({"id": "b", "n": "2", "lines": [], "note": null});
        assert!(
            same_shape(&documented, &wrong).is_err_and(|e| e.starts_with("$.n: documented number"))
        );
        let element = json!({"id": "b", "n": 2, "lines": [{"q": 3}, {"q": "4"}], "note": null});
        assert!(same_shape(&documented, &element).is_err_and(|e| e.starts_with("$.lines[1].q")));
    }

    #[test]
    fn array_elements_meet_the_documented_element_at_their_place() {
        let documented = json!([{"a": 1}, {"a": 1, "note": "x"}]);
        assert_eq!(
            same_shape(&documented, &json!([{"a": 2}, {"a": 3, "note": "y"}])),
            Ok(())
        );
        assert_eq!(
            covers(
                &documented,
                &json!([{"a": 2}, {"a": 3, "note": "y"}, {"a": 4}])
            ),
            Ok(())
        );
        assert!(within(&json!([{"a": 2, "note": "y"}]), &documented).is_err());
    }

    #[test]
    fn metadata_keys_are_any_documented_metadata() {
        let documented = json!(["amount", "metadata[*]", "expand[]"]);
        for name in ["amount", "metadata[order_id]", "expand[]"] {
            assert!(documented_parameter(&documented, name), "{name}");
        }
        for name in ["amunt", "metadata[]", "shipping[name]"] {
            assert!(!documented_parameter(&documented, name), "{name}");
        }
    }

    #[test]
    fn placeholders_are_filled_and_match_anything() {
        let mut documented = json!({"store_id": "{{store}}", "nested": ["{{store}}"]});
        assert_eq!(
            covers(&documented, &json!({"store_id": 5, "nested": [{}]})),
            Ok(())
        );
        fill(&mut documented, &[("store", json!("sm-1"))]);
        assert_eq!(documented, json!({"store_id": "sm-1", "nested": ["sm-1"]}));
    }
}
