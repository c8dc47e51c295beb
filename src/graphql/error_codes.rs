//! Gives every error the schema returns an `extensions.code` from [`ErrorCode`], whatever
//! phase it comes from: the parser's limits, validation, operation selection, argument
//! coercion during execution, or a resolver. Resolvers set their codes through
//! [`super::errors::ApiError`]; this extension codes what async-graphql itself raises, and
//! turns anything left uncoded into `INTERNAL` with its detail logged, not returned.
//!
//! It runs inside the schema (in [`super::gate`], the schema's one extension), so HTTP and both websocket protocols get the same codes.

use super::errors::ErrorCode;
use async_graphql::{Response, ServerError};

/// The coding steps, run by [`super::gate`] first and last, so that they see what every
/// other step returns.
pub struct ErrorCodes;

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

impl ErrorCodes {
    /// The last pass over a response (the `request` hook, and each response of a
    /// subscription): whatever is still uncoded gets a code.
    pub(super) fn response(response: Response) -> Response {
        code_response(response)
    }

    /// The document was parsed by [`super::admission::Admission`], which codes syntax
    /// errors; what fails in the `parse_query` step are the parser's own limits (recursion,
    /// directives).
    pub(super) fn parse_error(mut error: ServerError) -> ServerError {
        code_if_missing(&mut error, ErrorCode::GraphqlValidationFailed);
        error
    }

    /// Validation errors: a value that does not coerce is the caller's input, the rest the
    /// document's.
    pub(super) fn validation_errors(mut errors: Vec<ServerError>) -> Vec<ServerError> {
        for error in &mut errors {
            let code = if is_coercion_error(error) {
                ErrorCode::BadUserInput
            } else {
                ErrorCode::GraphqlValidationFailed
            };
            code_if_missing(error, code);
        }
        errors
    }
}
