//! The steps every GraphQL request passes, around async-graphql's own: error codes on
//! everything (`error_codes`), automatic persisted queries (`persisted`), admission
//! (`admission`) and the operation timeout (`timeout`). [`AppSchema`] runs them for HTTP
//! and both websocket protocols alike, in this order:
//!
//! - a persisted query's hash is resolved to its text, then admission parses the document
//!   (or takes the one parsed before from the same text, `documents`) and checks its
//!   depth, aliases, root fields, operations, introspection and method;
//! - async-graphql takes that document, checks the parser's limits, validates and executes;
//!   a query or mutation is bounded by `graphql.operation_timeout_secs` from here on (the
//!   bound was on execution alone as an extension hook), a subscription is not;
//! - every error of the response (each response of a subscription) is coded, last.
//!
//! These steps are not a schema extension: async-graphql runs every field of every
//! response through its extensions' `resolve` hook as soon as there is one (two registry
//! lookups, the type names formatted for each item of a list and a boxed future, per
//! field), though none of the steps needs a field, and a catalogue answer has about 500.
//! The one step that must see inside async-graphql, keeping a persisted query's text once
//! its document passed validation, is an extension on a second copy of the schema that
//! runs only the requests registering a query: once per query and instance.
//!
//! The codes are those the steps gave as extension hooks: what the parser's limits and
//! validation refuse has no path, so the last pass codes it `GRAPHQL_VALIDATION_FAILED`
//! (`BAD_USER_INPUT` for a value that does not coerce), as they did.

use super::{
    Mutation, Query,
    admission::Admission,
    documents::ParsedDocuments,
    error_codes::ErrorCodes,
    orders::OrderSubscription,
    persisted::{Pending, PersistedQueries},
    timeout::OperationTimeout,
};
use async_graphql::{
    Request, Response, Schema, ServerError, ServerResult, ValidationResult,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation},
    parser::types::OperationType,
};
use futures_util::{StreamExt, stream::BoxStream};
use std::sync::Arc;

/// async-graphql's schema, as built by [`super::build`].
pub type InnerSchema = Schema<Query, Mutation, OrderSubscription>;

/// The steps' configuration, shared by every request.
#[derive(Clone)]
pub struct Gate {
    pub persisted: PersistedQueries,
    pub documents: ParsedDocuments,
    pub admission: Admission,
    pub timeout: OperationTimeout,
}

/// How a request that passed the steps before async-graphql runs.
struct Admitted {
    /// Whether it registers a persisted query (then it runs on the registering schema).
    registers: bool,
    /// The operation it runs, when admission could select one.
    operation: Option<OperationType>,
}

impl Gate {
    /// A persisted query's hash resolved to its text (or its registration noted), then
    /// admission, on the document parsed before from the same text if one is held.
    fn admit(&self, request: &mut Request) -> ServerResult<Admitted> {
        let pending = self.persisted.resolve(request)?;
        let held = self.documents.lookup(request);
        let operation = self.admission.admit(request)?;
        if !held {
            self.documents.keep(request);
        }
        let registers = pending.is_some();
        if let Some(pending) = pending {
            request.data.insert(Registration(pending));
        }
        Ok(Admitted {
            registers,
            operation,
        })
    }
}

/// The schema the HTTP and websocket layers run: async-graphql's, behind [`Gate`]'s steps.
/// Cheap to clone.
#[derive(Clone)]
pub struct AppSchema {
    /// No extension: every request but a registration.
    plain: InnerSchema,
    /// The same schema with [`Register`]: requests registering a persisted query.
    registering: InnerSchema,
    gate: Arc<Gate>,
}

impl AppSchema {
    pub(super) fn new(plain: InnerSchema, registering: InnerSchema, gate: Gate) -> Self {
        Self {
            plain,
            registering,
            gate: Arc::new(gate),
        }
    }

    fn inner(&self, admitted: &Admitted) -> &InnerSchema {
        if admitted.registers {
            &self.registering
        } else {
            &self.plain
        }
    }

    /// Runs a query or mutation (a subscription is refused by async-graphql on this path).
    pub async fn execute(&self, request: impl Into<Request>) -> Response {
        let mut request = request.into();
        let response = match self.gate.admit(&mut request) {
            Err(error) => Response::from_errors(vec![error]),
            Ok(admitted) => {
                let name = request.operation_name.clone();
                // Boxed: async-graphql's execution is a large future, which would otherwise
                // be copied into every future that holds this one.
                let execution = Box::pin(self.inner(&admitted).execute(request));
                self.gate.timeout.bound(name.as_deref(), execution).await
            }
        };
        ErrorCodes::response(response)
    }

    /// Runs any operation as a stream of responses (the websocket protocols): one for a
    /// query or mutation, bounded in time, and one per event for a subscription.
    pub fn execute_stream(&self, request: impl Into<Request>) -> BoxStream<'static, Response> {
        let mut request = request.into();
        let admitted = match self.gate.admit(&mut request) {
            Err(error) => {
                let response = ErrorCodes::response(Response::from_errors(vec![error]));
                return futures_util::stream::once(async move { response }).boxed();
            }
            Ok(admitted) => admitted,
        };
        let is_subscription = admitted.operation == Some(OperationType::Subscription);
        let name = request.operation_name.clone();
        let stream = self.inner(&admitted).execute_stream(request);
        if is_subscription {
            return stream.map(ErrorCodes::response).boxed();
        }
        let timeout = self.gate.timeout;
        // A query or mutation answers once; the bound covers that one response.
        futures_util::stream::once(async move {
            let mut stream = stream;
            timeout
                .bound(name.as_deref(), async move {
                    stream.next().await.unwrap_or_default()
                })
                .await
        })
        .map(ErrorCodes::response)
        .boxed()
    }

    /// The schema in SDL.
    pub fn sdl(&self) -> String {
        self.plain.sdl()
    }
}

/// Request data of a request that registers a persisted query: the registration to make
/// once its document passed validation.
struct Registration(Pending);

/// The registering schema's extension: keeps a persisted query's text once its document
/// passed validation, so invalid documents never take room in the cache.
pub(super) struct Register(pub PersistedQueries);

impl ExtensionFactory for Register {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Register(self.0.clone()))
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Register {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await;
        if result.is_ok()
            && let Some(Registration(pending)) = ctx.data_opt::<Registration>()
        {
            self.0.register(pending.clone());
        }
        result
    }
}
