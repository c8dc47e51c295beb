//! Gives every error the schema returns an `extensions.code` from [`ErrorCode`], whatever
//! phase it comes from: the parser's limits, validation, operation selection, argument
//! coercion during execution, or a resolver. Resolvers set their codes through
//! [`super::errors::ApiError`]; this step codes what async-graphql itself raises, and
//! turns anything left uncoded into `INTERNAL` with its detail logged, not returned.
//!
//! It runs around the schema (in [`super::gate`]), so HTTP and both websocket protocols get the same codes.

use super::errors::ErrorCode;
use async_graphql::{Response, ServerError};

/// The coding step, run by [`super::gate`] last, so that it sees what every other step
/// returns.
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
    /// The last pass over a response (each response of a subscription): whatever is still
    /// uncoded gets a code. What the parser's limits and validation refuse carries no path,
    /// so it is coded `GRAPHQL_VALIDATION_FAILED` here, or `BAD_USER_INPUT` for a value
    /// that does not coerce to its input type.
    pub(super) fn response(response: Response) -> Response {
        code_response(response)
    }
}
