//! Gives every error the schema returns an `extensions.code` from [`ErrorCode`], whatever
//! phase it comes from: the parser's limits, validation, operation selection, argument
//! coercion during execution, or a resolver. Resolvers set their codes through
//! [`super::errors::ApiError`]; this extension codes what async-graphql itself raises, and
//! turns anything left uncoded into `INTERNAL` with its detail logged, not returned.
//!
//! It runs inside the schema, so HTTP and both websocket protocols get the same codes.

use super::errors::ErrorCode;
use async_graphql::{
    Response, ServerError, ServerResult, ValidationResult, Variables,
    extensions::{
        Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextSubscribe,
        NextValidation,
    },
    parser::types::ExecutableDocument,
};
use futures_util::{StreamExt, stream::BoxStream};
use std::sync::Arc;

/// The extension; register it first so that it sees what every other one returns.
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodes)
    }
}

/// Messages async-graphql gives a value that does not coerce to its input type: the
/// validation rule "Values of Correct Type" (`Invalid value for argument …`, literals and
/// variables alike) and `InputValueError` while a resolver reads its arguments
/// (`Failed to parse "Int": …`, `Expected input type …`). A unit test pins them.
const COERCION_MESSAGES: [&str; 3] = [
    "Invalid value for argument",
    "Failed to parse \"",
    "Expected input type \"",
];

fn is_coercion_error(error: &ServerError) -> bool {
    COERCION_MESSAGES
        .iter()
        .any(|prefix| error.message.starts_with(prefix))
}

fn code_if_missing(error: &mut ServerError, code: ErrorCode) {
    if ErrorCode::of(error).is_none() {
        code.set_on(error);
    }
}

/// The last pass over a response: whatever is still uncoded gets a code.
fn code_response(mut response: Response) -> Response {
    for error in &mut response.errors {
        if ErrorCode::of(error).is_some() {
            continue;
        }
        if is_coercion_error(error) {
            ErrorCode::BadUserInput.set_on(error);
        } else if error.path.is_empty() {
            // A request error after validation: no operation by the name given, a name
            // required among several operations, an operation this transport cannot run.
            ErrorCode::GraphqlValidationFailed.set_on(error);
        } else {
            tracing::error!(message = %error.message, path = ?error.path, "uncoded field error");
            error.message = "Something went wrong on our side.".to_owned();
            ErrorCode::Internal.set_on(error);
        }
    }
    response
}

#[async_graphql::async_trait::async_trait]
impl Extension for ErrorCodes {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        code_response(next.run(ctx).await)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream).map(code_response).boxed()
    }

    /// The document was parsed by [`super::admission::Admission`], which codes syntax
    /// errors; what fails here are the parser's own limits (recursion, directives).
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables).await.map_err(|mut error| {
            code_if_missing(&mut error, ErrorCode::GraphqlValidationFailed);
            error
        })
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|mut errors| {
            for error in &mut errors {
                let code = if is_coercion_error(error) {
                    ErrorCode::BadUserInput
                } else {
                    ErrorCode::GraphqlValidationFailed
                };
                code_if_missing(error, code);
            }
            errors
        })
    }
}
