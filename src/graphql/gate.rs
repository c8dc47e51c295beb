//! The schema's one extension: error codes on everything (`error_codes`), automatic
//! persisted queries (`persisted`), admission (`admission`) and the operation timeout
//! (`timeout`), in that order, inside the schema so HTTP and both websocket protocols pass
//! the same steps.
//!
//! One extension rather than four because async-graphql runs every field of every response
//! through each registered extension's `resolve` hook (a boxed future per field and
//! extension, after two registry lookups), though none of these needs a field: a catalogue
//! answer has about 500 fields. The steps keep their order:
//!
//! - `request` and `subscribe`: codes every error of the response, last;
//! - `prepare_request`: a persisted query's hash is resolved to its text, then admission
//!   parses the document and checks its depth, aliases, root fields, operations,
//!   introspection and method;
//! - `parse_query` and `validation`: codes what they refuse; a registration of a persisted
//!   query is kept only once its document passed validation;
//! - `execute`: bounded by `graphql.operation_timeout_secs`.

use super::{
    admission::Admission,
    error_codes::ErrorCodes,
    persisted::{Pending, PersistedQueries},
    timeout::OperationTimeout,
};
use async_graphql::{
    Request, Response, ServerError, ServerResult, ValidationResult, Variables,
    extensions::{
        Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery,
        NextPrepareRequest, NextRequest, NextSubscribe, NextValidation,
    },
    parser::types::ExecutableDocument,
};
use futures_util::{StreamExt, stream::BoxStream};
use std::sync::{Arc, Mutex, PoisonError};

/// The extension's configuration, shared by every request.
#[derive(Clone)]
pub struct Gate {
    pub persisted: PersistedQueries,
    pub admission: Admission,
    pub timeout: OperationTimeout,
}

impl ExtensionFactory for Gate {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(GateRequest {
            gate: self.clone(),
            pending: Mutex::new(None),
        })
    }
}

/// The extension for one request: a persisted-query registration waiting for validation.
struct GateRequest {
    gate: Gate,
    pending: Mutex<Option<Pending>>,
}

#[async_graphql::async_trait::async_trait]
impl Extension for GateRequest {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        ErrorCodes::response(next.run(ctx).await)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream).map(ErrorCodes::response).boxed()
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let pending = self.gate.persisted.resolve(&mut request)?;
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = pending;
        self.gate.admission.admit(&mut request)?;
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables)
            .await
            .map_err(ErrorCodes::parse_error)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await;
        if result.is_ok() {
            let pending = self
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(pending) = pending {
                self.gate.persisted.register(pending);
            }
        }
        result.map_err(ErrorCodes::validation_errors)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        self.gate
            .timeout
            .bound(operation_name, next.run(ctx, operation_name))
            .await
    }
}
