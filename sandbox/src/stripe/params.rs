//! Form parameters: Stripe's form-encoded bodies and queries with bracketed keys.

use super::{errors::ApiError, model::Fingerprint};
use std::collections::BTreeMap;

pub(super) struct Params(pub(super) Vec<(String, String)>);

impl Params {
    pub(super) fn parse(raw: &[u8]) -> Result<Self, ApiError> {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(raw)
            .map(Self)
            .map_err(|_| {
                ApiError::invalid("Invalid request: the body must be form-encoded parameters.")
            })
    }

    /// Stripe refuses parameters it does not know, which catches typos before they reach
    /// live mode. An entry ending in `[` allows any `name[…]`.
    pub(super) fn allow(&self, known: &[&str]) -> Result<(), ApiError> {
        for (key, _) in &self.0 {
            let ok = known.iter().any(|allowed| {
                if allowed.ends_with('[') {
                    key.starts_with(allowed) && key.ends_with(']')
                } else {
                    key == allowed
                }
            });
            if !ok {
                return Err(
                    ApiError::invalid(format!("Received unknown parameter: {key}"))
                        .code("parameter_unknown")
                        .param(key),
                );
            }
        }
        Ok(())
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub(super) fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            ApiError::invalid(format!("Missing required param: {name}."))
                .code("parameter_missing")
                .param(name)
        })
    }

    pub(super) fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|raw| {
                raw.parse::<i64>().map_err(|_| {
                    ApiError::invalid(format!("Invalid integer: {raw}"))
                        .code("parameter_invalid_integer")
                        .param(name)
                })
            })
            .transpose()
    }

    pub(super) fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.get(name)
            .map(|raw| match raw {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(ApiError::invalid(format!("Invalid boolean: {raw}")).param(name)),
            })
            .transpose()
    }

    pub(super) fn one_of<'a>(
        &'a self,
        name: &str,
        allowed: &[&str],
    ) -> Result<Option<&'a str>, ApiError> {
        match self.get(name) {
            Some(value) if !allowed.contains(&value) => Err(ApiError::invalid(format!(
                "Invalid {name}: must be one of {}",
                allowed.join(", ")
            ))
            .param(name)),
            other => Ok(other),
        }
    }

    /// Values of `name[]` / `name[0]`, Stripe's two spellings of a list.
    pub(super) fn list(&self, name: &str) -> Vec<&str> {
        let open = format!("{name}[");
        self.0
            .iter()
            .filter(|(key, _)| {
                key.strip_prefix(&open)
                    .and_then(|rest| rest.strip_suffix(']'))
                    .is_some_and(|index| index.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|(_, value)| value.as_str())
            .collect()
    }

    pub(super) fn expands_charge(&self) -> bool {
        self.list("expand").contains(&"latest_charge")
    }

    pub(super) fn metadata(&self) -> Result<BTreeMap<String, String>, ApiError> {
        let mut metadata = BTreeMap::new();
        for (key, value) in &self.0 {
            let Some(name) = key
                .strip_prefix("metadata[")
                .and_then(|rest| rest.strip_suffix(']'))
            else {
                continue;
            };
            if name.is_empty() || name.chars().count() > 40 || value.chars().count() > 500 {
                return Err(ApiError::invalid(
                    "Metadata keys must be 1 to 40 characters and values at most 500.",
                )
                .param(key));
            }
            if value.is_empty() {
                metadata.remove(name);
            } else {
                metadata.insert(name.to_owned(), value.clone());
            }
        }
        if metadata.len() > 50 {
            return Err(ApiError::invalid("Metadata may have at most 50 keys.").param("metadata"));
        }
        Ok(metadata)
    }

    pub(super) fn fingerprint(&self, route: String) -> Fingerprint {
        let mut params = self.0.clone();
        params.sort();
        Fingerprint { route, params }
    }
}

pub(super) fn query_params(query: Option<&str>) -> Result<Params, ApiError> {
    Params::parse(query.unwrap_or_default().as_bytes())
}
