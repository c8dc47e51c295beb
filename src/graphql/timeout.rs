//! A bound on how long one query or mutation runs (`graphql.operation_timeout_secs`).
//! Past it the request is answered with `TIMEOUT` and its resolvers are dropped, which
//! frees their database connections and upstream calls; work that must finish (a
//! checkout's flow) runs in a task of its own and is not cut short. Subscriptions are not
//! bounded: they are meant to stay open.

use super::errors::ErrorCode;
use async_graphql::Response;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct OperationTimeout {
    pub limit: Duration,
}

impl OperationTimeout {
    /// Runs `execution` (a query or mutation once admitted, in [`super::gate`]) within
    /// the limit.
    pub(super) async fn bound(
        &self,
        operation_name: Option<&str>,
        execution: impl std::future::Future<Output = Response>,
    ) -> Response {
        match tokio::time::timeout(self.limit, execution).await {
            Ok(response) => response,
            Err(_) => {
                tracing::warn!(
                    operation = operation_name.unwrap_or("(anonymous)"),
                    limit_ms = u64::try_from(self.limit.as_millis()).unwrap_or(u64::MAX),
                    "operation timed out"
                );
                Response::from_errors(vec![ErrorCode::Timeout.error(format!(
                    "The operation took longer than {} s; try again.",
                    self.limit.as_secs()
                ))])
            }
        }
    }
}
