//! The app's side of the wire: GraphQL over HTTP through the balancer, with the retries
//! an app makes when an answer does not come (same request, same idempotency key).

use serde_json::{Value, json};
use std::time::Duration;

/// `extensions.code`s of an error the app retries as it is (nothing was decided).
const RETRYABLE: [&str; 4] = [
    "UPSTREAM_UNAVAILABLE",
    "TIMEOUT",
    "RATE_LIMITED",
    "INTERNAL",
];
/// `userErrors` codes the app retries as they are (ours or an upstream's trouble).
pub const RETRYABLE_USER_ERRORS: [&str; 2] = ["SERVICE_UNAVAILABLE", "PAYMENT_UNAVAILABLE"];

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
}

/// Why a request got no usable answer.
#[derive(Debug)]
pub enum Failure {
    /// No answer, a gateway error or a body that is not a GraphQL response: the request
    /// may or may not have been acted on.
    Transport(String),
    /// A GraphQL error the app retries (its `extensions.code`).
    Retryable(String),
    /// A GraphQL error that is the answer (unauthenticated, bad input…).
    Final(Value),
}

impl Client {
    pub fn new(url: String) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(45))
                .pool_max_idle_per_host(4)
                .build()
                .unwrap_or_default(),
            url: format!("{url}/graphql"),
        }
    }

    /// One request: its `data` when it has no errors.
    pub async fn once(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> Result<Value, Failure> {
        let mut request = self
            .http
            .post(&self.url)
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Transport(e.without_url().to_string()))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| Failure::Transport(format!("{status}: {}", e.without_url())))?;
        match body["errors"].as_array() {
            Some(errors) if !errors.is_empty() => {
                let code = errors[0]["extensions"]["code"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                if RETRYABLE.contains(&code.as_str()) {
                    Err(Failure::Retryable(code))
                } else {
                    Err(Failure::Final(body))
                }
            }
            _ if body["data"].is_object() => Ok(body["data"].clone()),
            _ => Err(Failure::Transport(format!("{status}: {body}"))),
        }
    }

    /// The request, sent again (unchanged) after each transport failure or retryable
    /// error, with a growing pause, until an answer or `attempts` tries; the retries made
    /// are added to `retries`.
    pub async fn retried(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
        attempts: u32,
        retries: &mut u64,
    ) -> Result<Value, Failure> {
        let mut pause = Duration::from_millis(200);
        let mut last = Failure::Transport("not sent".to_owned());
        for _ in 0..attempts {
            match self.once(token, query, variables.clone()).await {
                Ok(data) => return Ok(data),
                Err(Failure::Final(body)) => return Err(Failure::Final(body)),
                Err(failure) => last = failure,
            }
            *retries += 1;
            tokio::time::sleep(pause + Duration::from_millis(fastrand::u64(0..200))).await;
            pause = (pause * 2).min(Duration::from_secs(4));
        }
        Err(last)
    }
}
