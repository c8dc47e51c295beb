//! The Core API host: members (`/priv/v1/apps/{api_key}/users…`) and their statement,
//! behind Basic `api_key:api_secret`, with `Message-ID` replays.

use super::Shared;
use super::state::{State, User};
use super::wire::{CreateUserRequest, Reply, StatementEntry, core_error, core_ok, rfc1123};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State as Extract},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::sync::Arc;

/// "Subsequent requests for the same Message ID made within 30 minutes of the original
/// causes a cached response to be re-sent" (Message IDs page).
pub(super) const MESSAGE_ID_WINDOW_SECS: i64 = 30 * 60;

/// The Core API's routes.
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/priv/v1/apps/{api_key}/users", post(create_user))
        .route("/priv/v1/apps/{api_key}/users/{user_id}", get(get_user))
        .route(
            "/priv/v1/apps/{api_key}/external/users/{external_id}",
            get(get_external_user),
        )
        .route(
            "/priv/v1/apps/{api_key}/external/users/{external_id}/timelines/END_USER_MEMBER_STATEMENT",
            get(statement),
        )
}

async fn create_user(
    Extract(sim): Extract<Arc<Shared>>,
    Path(api_key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    core(&sim, &api_key, &headers, |state, now| {
        create(state, &body, now)
    })
}

async fn get_user(
    Extract(sim): Extract<Arc<Shared>>,
    Path((api_key, user_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    core(&sim, &api_key, &headers, |state, _| {
        found(state.user(&user_id))
    })
}

async fn get_external_user(
    Extract(sim): Extract<Arc<Shared>>,
    Path((api_key, external_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    core(&sim, &api_key, &headers, |state, _| {
        found(state.user_by_external(&external_id))
    })
}

async fn statement(
    Extract(sim): Extract<Arc<Shared>>,
    Path((api_key, external_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    core(&sim, &api_key, &headers, |state, _| {
        match state.user_by_external(&external_id) {
            Some(user) => core_ok(json!({"statement": user.statement})),
            None => user_not_found(),
        }
    })
}

/// Authenticates, then runs `handle` under the `Message-ID` rules: a repeat within the
/// window gets the first answer again, marked `Cached-Message: true`, and changes nothing.
/// The Message IDs page applies this to any request that carries the header, reads
/// included, so the simulator does too.
fn core(
    sim: &Shared,
    api_key: &str,
    headers: &HeaderMap,
    handle: impl FnOnce(&mut State, DateTime<Utc>) -> Reply,
) -> Response {
    if !sim.core_authorised(api_key, headers) {
        return respond(core_error(StatusCode::UNAUTHORIZED, "access_denied", None));
    }
    let now = Utc::now();
    let mut state = sim.lock();
    let Some(message_id) = headers
        .get("message-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return respond(handle(&mut state, now));
    };
    *state.message_counts.entry(message_id.clone()).or_default() += 1;
    if let Some(cached) = state.messages.get(&message_id)
        && (now - cached.at).num_seconds() < MESSAGE_ID_WINDOW_SECS
    {
        let mut response = respond(cached.reply.clone());
        stamp(&mut response, &message_id, cached.at);
        response
            .headers_mut()
            .insert("cached-message", HeaderValue::from_static("true"));
        return response;
    }
    let reply = handle(&mut state, now);
    state.messages.insert(
        message_id.clone(),
        super::state::CachedMessage {
            at: now,
            reply: reply.clone(),
        },
    );
    let mut response = respond(reply);
    stamp(&mut response, &message_id, now);
    response
}

/// Echoes `Message-Id` and the processing date, as the Message IDs page shows.
fn stamp(response: &mut Response, message_id: &str, at: DateTime<Utc>) {
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(message_id) {
        headers.insert("message-id", id);
    }
    if let Ok(date) = HeaderValue::from_str(&rfc1123(at)) {
        headers.insert("message-date", date);
    }
}

fn respond((status, body): Reply) -> Response {
    (status, Json(body)).into_response()
}

fn user_not_found() -> Reply {
    core_error(StatusCode::NOT_FOUND, "user_not_found", None)
}

fn found(user: Option<&User>) -> Reply {
    match user {
        Some(user) => core_ok(json!({"user": user.to_wire()})),
        None => user_not_found(),
    }
}

fn validation(message: &str) -> Reply {
    core_error(StatusCode::OK, "validation", Some(message))
}

fn create(state: &mut State, body: &[u8], now: DateTime<Utc>) -> Reply {
    let request: CreateUserRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            return core_error(StatusCode::OK, "argument_error", Some(&e.to_string()));
        }
    };
    let new = request.user;
    let Some(email) = new.email.filter(|e| e.contains('@')) else {
        return validation("email is missing or invalid");
    };
    // "Only one email address can exist for a SessionM customer profile."
    if state
        .users
        .iter()
        .any(|u| u.email.eq_ignore_ascii_case(&email))
    {
        return validation("email has already been taken");
    }
    if let Some(external_id) = &new.external_id
        && state.user_by_external(external_id).is_some()
    {
        return validation("external_id has already been taken");
    }
    let id = uuid::Uuid::new_v4().to_string();
    state.users.push(User {
        id: id.clone(),
        external_id: new.external_id,
        email,
        first_name: new.first_name,
        last_name: new.last_name,
        opted_in: new.opted_in.unwrap_or(false),
        phone_numbers: new.phone_numbers,
        points: 0,
        created_at: now,
        statement: Vec::<StatementEntry>::new(),
    });
    state.issue_welcome_offers(&id, now);
    found(state.user(&id))
}
