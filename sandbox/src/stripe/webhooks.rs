//! Webhooks: events recorded in the ledger and delivered, signed, with retries.

use super::{
    WEBHOOK_ATTEMPTS,
    model::{EventRecord, Sim},
};
use crate::{faults::WebhookFate, signature, unix_now};
use axum::http::header;
use serde_json::Value;
use std::{sync::Arc, time::Duration};

/// Records the events in the ledger and, when a webhook URL is set, sends each from its own
/// task: like Stripe, deliveries can arrive out of order and are retried on failure.
pub(super) fn publish(sim: &Arc<Sim>, events: Vec<Value>) {
    if events.is_empty() {
        return;
    }
    {
        let mut ledger = sim.lock();
        for event in &events {
            ledger.events.push(EventRecord {
                id: event["id"].as_str().unwrap_or_default().to_owned(),
                kind: event["type"].as_str().unwrap_or_default().to_owned(),
                object_id: event["data"]["object"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                created: event["created"].as_i64().unwrap_or_default(),
                delivered: false,
                delivery_attempts: 0,
            });
        }
    }
    let Some(url) = sim.config.webhook_url.clone() else {
        return;
    };
    for event in events {
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        let (sim, url, body) = (sim.clone(), url.clone(), event.to_string());
        match sim.faults.webhook_fate() {
            WebhookFate::Deliver => {
                tokio::spawn(deliver(sim, url, id, body));
            }
            WebhookFate::Lose => {
                tracing::debug!(event = %id, "sandbox fault: stripe webhook lost");
            }
            WebhookFate::Duplicate => {
                tokio::spawn(deliver(sim.clone(), url.clone(), id.clone(), body.clone()));
                tokio::spawn(deliver(sim, url, id, body));
            }
            WebhookFate::Delay(wait) => {
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    deliver(sim, url, id, body).await;
                });
            }
        }
    }
}

async fn deliver(sim: Arc<Sim>, url: String, event_id: String, body: String) {
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        let signed = signature::header(&sim.config.webhook_secret, unix_now(), body.as_bytes());
        let sent = sim
            .http
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
            .header(
                header::USER_AGENT,
                "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            )
            .header("Stripe-Signature", signed)
            .body(body.clone())
            .send()
            .await;
        let delivered = matches!(&sent, Ok(response) if response.status().is_success());
        {
            let mut ledger = sim.lock();
            if let Some(record) = ledger.events.iter_mut().find(|e| e.id == event_id) {
                record.delivery_attempts = attempt;
                record.delivered = delivered;
            }
        }
        if delivered {
            return;
        }
        match sent {
            Ok(response) => {
                tracing::debug!(event = %event_id, status = %response.status(), attempt, "stripe webhook refused")
            }
            Err(e) => {
                tracing::debug!(event = %event_id, error = %e.without_url(), attempt, "stripe webhook failed")
            }
        }
        tokio::time::sleep(Duration::from_millis(200 * 2_u64.pow(attempt - 1))).await;
    }
    tracing::warn!(event = %event_id, "stripe webhook not delivered; giving up");
}
