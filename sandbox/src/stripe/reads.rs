//! Reads and sandbox endpoints.

use super::{
    errors::{ApiError, api_key, new_id, reply},
    model::{Intent, RefundRecord, Sim, Status},
    operations::authorise,
    params::{Params, query_params},
    webhooks::publish,
    writes::Ctx,
};
use crate::unix_now;
use axum::{
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, Method, StatusCode, Uri},
    response::Response,
};
use serde_json::{Value, json};
use std::sync::Arc;

pub(super) async fn retrieve_intent(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let request_id = new_id("req");
    let found = api_key(&sim.config, &headers)
        .and_then(|_| query_params(query.as_deref()))
        .and_then(|params| {
            let ledger = sim.lock();
            let intent = ledger
                .intents
                .get(&id)
                .ok_or_else(|| ApiError::missing("payment_intent", &id, "intent"))?;
            Ok(intent.json(params.expands_charge()))
        });
    match found {
        Ok(body) => reply(StatusCode::OK, &body, &request_id, &[]),
        Err(e) => e.into_response(&request_id),
    }
}

/// `GET /v1/payment_intents`: Stripe's list endpoint
/// (<https://docs.stripe.com/api/payment_intents/list>): newest first, filtered by
/// `created[gt|gte|lt|lte]` (Unix seconds) or `created=<exact>`, `limit` 1–100 (10 by
/// default), and paged with `starting_after` (older than that intent) or `ending_before`
/// (newer than it); `has_more` says whether more match beyond the page. `expand[]=
/// data.latest_charge` expands each intent's charge. The `customer` filter is not
/// simulated (this service's intents carry none).
pub(super) async fn list_intents(
    State(sim): State<Arc<Sim>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let request_id = new_id("req");
    let found = api_key(&sim.config, &headers)
        .and_then(|_| query_params(query.as_deref()))
        .and_then(|params| {
            params.allow(&[
                "created",
                "created[gt]",
                "created[gte]",
                "created[lt]",
                "created[lte]",
                "limit",
                "starting_after",
                "ending_before",
                "expand[",
            ])?;
            let limit = params.int("limit")?.unwrap_or(10);
            if !(1..=100).contains(&limit) {
                return Err(
                    ApiError::invalid("Invalid integer: limit must be between 1 and 100")
                        .param("limit"),
                );
            }
            let bound = |name: &str| params.int(name);
            let (exact, gt, gte, lt, lte) = (
                bound("created")?,
                bound("created[gt]")?,
                bound("created[gte]")?,
                bound("created[lt]")?,
                bound("created[lte]")?,
            );
            let expand = params.list("expand").contains(&"data.latest_charge");
            let ledger = sim.lock();
            let cursor = |param: &str| -> Result<Option<u64>, ApiError> {
                params
                    .get(param)
                    .map(|id| {
                        ledger
                            .intents
                            .get(id)
                            .map(|i| i.seq)
                            .ok_or_else(|| ApiError::missing("payment_intent", id, param))
                    })
                    .transpose()
            };
            let (after, before) = (cursor("starting_after")?, cursor("ending_before")?);
            let mut intents: Vec<&Intent> = ledger
                .intents
                .values()
                .filter(|i| {
                    exact.is_none_or(|c| i.created == c)
                        && gt.is_none_or(|c| i.created > c)
                        && gte.is_none_or(|c| i.created >= c)
                        && lt.is_none_or(|c| i.created < c)
                        && lte.is_none_or(|c| i.created <= c)
                        && after.is_none_or(|seq| i.seq < seq)
                        && before.is_none_or(|seq| i.seq > seq)
                })
                .collect();
            // Newest first; an `ending_before` page is the one just newer than the cursor.
            intents.sort_by_key(|i| std::cmp::Reverse(i.seq));
            let limit = usize::try_from(limit).unwrap_or(10);
            let has_more = intents.len() > limit;
            let page: Vec<&Intent> = if before.is_some() {
                let skip = intents.len().saturating_sub(limit);
                intents.into_iter().skip(skip).collect()
            } else {
                intents.into_iter().take(limit).collect()
            };
            Ok(json!({
                "object": "list",
                "url": "/v1/payment_intents",
                "has_more": has_more,
                "data": page.into_iter().map(|i| i.json(expand)).collect::<Vec<Value>>(),
            }))
        });
    match found {
        Ok(body) => reply(StatusCode::OK, &body, &request_id, &[]),
        Err(e) => e.into_response(&request_id),
    }
}

/// `GET /v1/payment_intents/search?query=…`: Stripe's Search API for the clauses this
/// service uses, `metadata['key']:'value'` and `status:'value'` joined by `AND`
/// (<https://docs.stripe.com/search#search-query-language>). Unlike Stripe's, results are
/// searchable at once.
pub(super) async fn search_intents(
    State(sim): State<Arc<Sim>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let request_id = new_id("req");
    let found = api_key(&sim.config, &headers)
        .and_then(|_| query_params(query.as_deref()))
        .and_then(|params| {
            let clauses = parse_search(params.required("query")?)?;
            let limit = params.int("limit")?.unwrap_or(10).clamp(1, 100);
            let expand = params.list("expand").contains(&"data.latest_charge");
            let ledger = sim.lock();
            let mut intents: Vec<&Intent> = ledger
                .intents
                .values()
                .filter(|intent| {
                    clauses.iter().all(|clause| match clause {
                        Clause::Metadata(key, value) => intent.metadata.get(key) == Some(value),
                        Clause::Status(status) => intent.status.as_str() == status,
                    })
                })
                .collect();
            intents.sort_by_key(|i| std::cmp::Reverse(i.seq));
            let data: Vec<Value> = intents
                .into_iter()
                .take(usize::try_from(limit).unwrap_or(10))
                .map(|i| i.json(expand))
                .collect();
            Ok(json!({
                "object": "search_result",
                "url": "/v1/payment_intents/search",
                "has_more": false,
                "next_page": null,
                "data": data,
            }))
        });
    match found {
        Ok(body) => reply(StatusCode::OK, &body, &request_id, &[]),
        Err(e) => e.into_response(&request_id),
    }
}

enum Clause {
    Metadata(String, String),
    Status(String),
}

/// Parses `field:'value' AND field:'value'`, with `\'` and `\\` escapes in values.
fn parse_search(query: &str) -> Result<Vec<Clause>, ApiError> {
    let invalid = || {
        ApiError::invalid(format!("Invalid search query: {query}"))
            .code("parameter_invalid_string")
            .param("query")
    };
    let mut clauses = Vec::new();
    let mut rest = query.trim();
    loop {
        let (field, after) = rest.split_once(':').ok_or_else(invalid)?;
        let after = after.strip_prefix('\'').ok_or_else(invalid)?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.push(chars.next().ok_or_else(invalid)?.1),
                '\'' => {
                    end = Some(i + 1);
                    break;
                }
                other => value.push(other),
            }
        }
        let end = end.ok_or_else(invalid)?;
        let field = field.trim();
        let clause = if let Some(key) = field
            .strip_prefix("metadata['")
            .and_then(|k| k.strip_suffix("']"))
        {
            Clause::Metadata(key.to_owned(), value)
        } else if field == "status" {
            Clause::Status(value)
        } else {
            return Err(invalid());
        };
        clauses.push(clause);
        rest = after[end..].trim_start();
        if rest.is_empty() {
            return Ok(clauses);
        }
        rest = rest.strip_prefix("AND").ok_or_else(invalid)?.trim_start();
    }
}

pub(super) async fn retrieve_refund(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let request_id = new_id("req");
    let found = api_key(&sim.config, &headers).and_then(|_| {
        let ledger = sim.lock();
        ledger
            .refunds
            .iter()
            .find(|r| r.id == id)
            .map(RefundRecord::json)
            .ok_or_else(|| ApiError::missing("refund", &id, "id"))
    });
    match found {
        Ok(body) => reply(StatusCode::OK, &body, &request_id, &[]),
        Err(e) => e.into_response(&request_id),
    }
}

/// Plays the customer's part in 3-D Secure, which the app does with Stripe's SDK.
pub(super) async fn authenticate(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let request_id = new_id("req");
    let outcome = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["outcome"].as_str().map(str::to_owned));
    let succeed = match outcome.as_deref() {
        Some("succeed") => true,
        Some("fail") => false,
        _ => {
            return ApiError::invalid(r#"Send {"outcome": "succeed" | "fail"}."#)
                .param("outcome")
                .into_response(&request_id);
        }
    };
    let mut ctx = Ctx {
        params: Params(Vec::new()),
        idempotency_key: None,
        request_id: request_id.clone(),
        now: unix_now(),
        events: Vec::new(),
    };
    let result = {
        let mut ledger = sim.lock();
        ledger.intent_mut(&id).and_then(|intent| {
            let card = match intent.card {
                Some(card) if intent.status == Status::RequiresAction => card,
                _ => {
                    return Err(ApiError::unexpected_state(
                        format!(
                            "This PaymentIntent has a status of {}; only one in \
                             requires_action can be authenticated.",
                            intent.status.as_str()
                        ),
                        intent,
                    ));
                }
            };
            if succeed {
                authorise(intent, card, &mut ctx);
            } else {
                intent.status = Status::RequiresPaymentMethod;
                intent.next_action = None;
                intent.last_payment_error = Some(json!({
                    "type": "invalid_request_error",
                    "code": "payment_intent_authentication_failure",
                    "message": "The provided PaymentMethod has failed authentication. You can \
                                provide payment_method_data or a new PaymentMethod to attempt \
                                to fulfill this PaymentIntent again.",
                }));
                intent.payment_method = None;
                ctx.emit("payment_intent.payment_failed", intent.json(false));
            }
            Ok(intent.json(true))
        })
    };
    publish(&sim, std::mem::take(&mut ctx.events));
    match result {
        Ok(body) => reply(StatusCode::OK, &body, &request_id, &[]),
        Err(e) => e.into_response(&request_id),
    }
}

pub(super) async fn ledger(State(sim): State<Arc<Sim>>) -> Response {
    let body = {
        let ledger = sim.lock();
        let mut intents: Vec<&Intent> = ledger.intents.values().collect();
        intents.sort_by_key(|i| i.seq);
        let intents: Vec<Value> = intents
            .into_iter()
            .map(|i| {
                let charge = i.charge.as_ref();
                json!({
                    "id": i.id,
                    "amount": i.amount,
                    "currency": i.currency,
                    "status": i.status.as_str(),
                    "capture_method": i.capture_method,
                    "amount_capturable": i.amount_capturable,
                    "amount_captured": charge.map_or(0, |c| c.amount_captured),
                    "amount_received": i.amount_received,
                    "amount_refunded": charge.map_or(0, |c| c.amount_refunded),
                    "metadata": i.metadata,
                    "payment_method": i.requested_payment_method,
                    "latest_charge": charge.map(|c| c.id.clone()),
                    "idempotency_key": i.idempotency_key,
                    "created": i.created,
                })
            })
            .collect();
        let mut refunds: Vec<&RefundRecord> = ledger.refunds.iter().collect();
        refunds.sort_by_key(|r| r.seq);
        let refunds: Vec<Value> = refunds
            .into_iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "payment_intent": r.payment_intent,
                    "charge": r.charge,
                    "amount": r.amount,
                    "currency": r.currency,
                    "status": "succeeded",
                    "reason": r.reason,
                    "idempotency_key": r.idempotency_key,
                    "created": r.created,
                })
            })
            .collect();
        let events: Vec<Value> = ledger
            .events
            .iter()
            .map(|e| {
                json!({
                    "id": e.id,
                    "type": e.kind,
                    "object_id": e.object_id,
                    "created": e.created,
                    "delivered": e.delivered,
                    "delivery_attempts": e.delivery_attempts,
                })
            })
            .collect();
        json!({
            "payment_intents": intents,
            "refunds": refunds,
            "idempotency_keys": ledger.requests_per_key,
            "requests_without_idempotency_key": ledger.posts_without_key,
            "events": events,
        })
    };
    reply(StatusCode::OK, &body, &new_id("req"), &[])
}

pub(super) async fn unrecognised(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!(
            "Unrecognized request URL ({method}: {}). Please see https://stripe.com/docs.",
            uri.path()
        ),
    )
    .into_response(&new_id("req"))
}
