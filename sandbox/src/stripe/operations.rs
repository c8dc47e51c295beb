//! Operations: what each write does to the ledger, and confirming an intent with a test
//! card.

use super::{
    HOLD_SECS,
    cards::{Behaviour, TestCard, test_card},
    errors::{ApiError, new_id},
    model::{Charge, Intent, Ledger, RefundRecord, Status},
    writes::Ctx,
};
use axum::http::StatusCode;
use serde_json::{Value, json};

impl Ledger {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub(super) fn intent_mut(&mut self, id: &str) -> Result<&mut Intent, ApiError> {
        self.intents
            .get_mut(id)
            .ok_or_else(|| ApiError::missing("payment_intent", id, "intent"))
    }

    pub(super) fn create_intent(&mut self, ctx: &mut Ctx) -> Result<Value, ApiError> {
        let p = &ctx.params;
        p.allow(&[
            "amount",
            "currency",
            "payment_method",
            "confirm",
            "capture_method",
            "description",
            "metadata[",
            "payment_method_types[",
            "automatic_payment_methods[enabled]",
            "automatic_payment_methods[allow_redirects]",
            "expand[",
            "return_url",
            "receipt_email",
            "customer",
            "statement_descriptor",
            "statement_descriptor_suffix",
            "setup_future_usage",
            "off_session",
        ])?;
        let amount = p.int("amount")?.ok_or_else(|| {
            ApiError::invalid("Missing required param: amount.")
                .code("parameter_missing")
                .param("amount")
        })?;
        let currency = p.required("currency")?.to_ascii_lowercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(
                ApiError::invalid(format!("Invalid currency: {currency}.")).param("currency")
            );
        }
        if amount < 1 {
            return Err(
                ApiError::invalid("This value must be greater than or equal to 1.")
                    .code("parameter_invalid_integer")
                    .param("amount"),
            );
        }
        let minimum = minimum_amount(&currency);
        if amount < minimum {
            return Err(ApiError::invalid(format!(
                "Amount must be at least {minimum} in the currency's minor unit."
            ))
            .code("amount_too_small")
            .param("amount"));
        }
        let confirm = p.boolean("confirm")?.unwrap_or(false);
        let capture_method = p
            .one_of(
                "capture_method",
                &["automatic", "automatic_async", "manual"],
            )?
            .unwrap_or("automatic_async")
            .to_owned();
        let types: Vec<String> = p
            .list("payment_method_types")
            .into_iter()
            .map(str::to_owned)
            .collect();
        let apm_enabled = p.boolean("automatic_payment_methods[enabled]")?;
        let allow_redirects = p.one_of(
            "automatic_payment_methods[allow_redirects]",
            &["always", "never"],
        )?;
        if !types.is_empty() && apm_enabled == Some(true) {
            return Err(ApiError::invalid(
                "You may only specify one of these parameters: automatic_payment_methods, \
                 payment_method_types.",
            ));
        }
        // Since API version 2023-08-16 an intent without payment_method_types uses the
        // Dashboard's payment methods, which may redirect.
        let automatic = types.is_empty() && apm_enabled != Some(false);
        let may_redirect = automatic && allow_redirects != Some("never");
        let token = p.get("payment_method").filter(|t| !t.is_empty());
        let card = match token {
            Some(token) => Some(test_card(token).ok_or_else(|| {
                ApiError::invalid(format!("No such PaymentMethod: '{token}'"))
                    .code("resource_missing")
                    .param("payment_method")
            })?),
            None => None,
        };
        if confirm && card.is_none() {
            return Err(ApiError::invalid(
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
            )
            .code("parameter_missing")
            .param("payment_method"));
        }
        if confirm && may_redirect && p.get("return_url").is_none() {
            return Err(ApiError::invalid(
                "This PaymentIntent is configured to accept payment methods enabled in your \
                 Dashboard, because some of these payment methods might redirect your \
                 customer off of your page, you must provide a `return_url`. If you don't \
                 want to accept redirect-based payment methods, set \
                 `automatic_payment_methods[enabled]` to `true` and \
                 `automatic_payment_methods[allow_redirects]` to `never`.",
            )
            .param("return_url"));
        }
        let description = p.get("description").map(str::to_owned);
        if description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 1000)
        {
            return Err(ApiError::invalid("Description is too long.").param("description"));
        }
        let metadata = p.metadata()?;
        let expand = p.expands_charge();

        let seq = self.next_seq();
        let id = new_id("pi");
        let secret_tail: String = std::iter::repeat_with(fastrand::alphanumeric)
            .take(25)
            .collect();
        let mut intent = Intent {
            seq,
            client_secret: format!("{id}_secret_{secret_tail}"),
            id: id.clone(),
            created: ctx.now,
            amount,
            currency,
            capture_method,
            status: if card.is_some() {
                Status::RequiresConfirmation
            } else {
                Status::RequiresPaymentMethod
            },
            amount_capturable: 0,
            amount_received: 0,
            description,
            metadata,
            payment_method: card.map(|_| new_id("pm")),
            card,
            requested_payment_method: token.map(str::to_owned),
            payment_method_types: if automatic {
                vec!["card".to_owned()]
            } else {
                types
            },
            automatic_payment_methods: if automatic {
                json!({"enabled": true, "allow_redirects": allow_redirects.unwrap_or("always")})
            } else {
                Value::Null
            },
            last_payment_error: None,
            next_action: None,
            canceled_at: None,
            cancellation_reason: None,
            charge: None,
            idempotency_key: ctx.idempotency_key.clone(),
        };
        let outcome = match card {
            Some(card) if confirm => confirm_card(&mut intent, card, ctx),
            _ => Ok(()),
        };
        let body = intent.json(expand);
        self.intents.insert(id, intent);
        outcome.map(|()| body)
    }

    pub(super) fn capture(&mut self, id: &str, ctx: &mut Ctx) -> Result<Value, ApiError> {
        let p = &ctx.params;
        p.allow(&[
            "amount_to_capture",
            "expand[",
            "metadata[",
            "statement_descriptor",
            "statement_descriptor_suffix",
        ])?;
        let requested = p.int("amount_to_capture")?;
        let metadata = p.metadata()?;
        let expand = p.expands_charge();
        let intent = self.intent_mut(id)?;
        if intent.status != Status::RequiresCapture {
            return Err(ApiError::unexpected_state(
                format!(
                    "This PaymentIntent could not be captured because it has a status of {}. \
                     Only a PaymentIntent with one of the following statuses may be \
                     captured: requires_capture.",
                    intent.status.as_str()
                ),
                intent,
            ));
        }
        let amount = requested.unwrap_or(intent.amount_capturable);
        if amount < 1 || amount > intent.amount_capturable {
            return Err(ApiError::invalid(format!(
                "The amount to capture must be between 1 and the amount capturable ({}).",
                intent.amount_capturable
            ))
            .code("amount_too_large")
            .param("amount_to_capture"));
        }
        intent.metadata.extend(metadata);
        intent.status = Status::Succeeded;
        intent.amount_received = amount;
        intent.amount_capturable = 0;
        if let Some(charge) = intent.charge.as_mut() {
            charge.captured = true;
            charge.amount_captured = amount;
        }
        ctx.emit("payment_intent.succeeded", intent.json(false));
        Ok(intent.json(expand))
    }

    pub(super) fn cancel(&mut self, id: &str, ctx: &mut Ctx) -> Result<Value, ApiError> {
        let p = &ctx.params;
        p.allow(&["cancellation_reason", "expand["])?;
        let reason = p.one_of(
            "cancellation_reason",
            &[
                "duplicate",
                "fraudulent",
                "requested_by_customer",
                "abandoned",
            ],
        )?;
        let reason = reason.map(str::to_owned);
        let expand = p.expands_charge();
        let now = ctx.now;
        let intent = self.intent_mut(id)?;
        let cancelable = [
            Status::RequiresPaymentMethod,
            Status::RequiresCapture,
            Status::RequiresConfirmation,
            Status::RequiresAction,
        ];
        if !cancelable.contains(&intent.status) {
            return Err(ApiError::unexpected_state(
                format!(
                    "You cannot cancel this PaymentIntent because it has a status of {}. \
                     Only a PaymentIntent with one of the following statuses may be \
                     canceled: requires_payment_method, requires_capture, \
                     requires_confirmation, requires_action, processing.",
                    intent.status.as_str()
                ),
                intent,
            ));
        }
        intent.status = Status::Canceled;
        intent.canceled_at = Some(now);
        intent.cancellation_reason = reason;
        intent.amount_capturable = 0;
        intent.next_action = None;
        ctx.emit("payment_intent.canceled", intent.json(false));
        Ok(intent.json(expand))
    }

    pub(super) fn refund(&mut self, ctx: &mut Ctx) -> Result<Value, ApiError> {
        let p = &ctx.params;
        p.allow(&[
            "payment_intent",
            "charge",
            "amount",
            "reason",
            "metadata[",
            "expand[",
        ])?;
        let requested = p.int("amount")?;
        let reason = p
            .one_of(
                "reason",
                &["duplicate", "fraudulent", "requested_by_customer"],
            )?
            .map(str::to_owned);
        let metadata = p.metadata()?;
        let intent_id = match (p.get("payment_intent"), p.get("charge")) {
            (Some(id), _) => id.to_owned(),
            (None, Some(charge)) => self
                .intents
                .values()
                .find(|i| i.charge.as_ref().is_some_and(|c| c.id == charge))
                .map(|i| i.id.clone())
                .ok_or_else(|| {
                    ApiError::missing("charge", charge, "charge").status(StatusCode::BAD_REQUEST)
                })?,
            (None, None) => {
                return Err(ApiError::invalid(
                    "One of the following params should be provided for this request: \
                     payment_intent or charge.",
                )
                .code("parameter_missing"));
            }
        };
        let seq = self.next_seq();
        let intent = self.intents.get_mut(&intent_id).ok_or_else(|| {
            ApiError::missing("payment_intent", &intent_id, "payment_intent")
                .status(StatusCode::BAD_REQUEST)
        })?;
        let charge = match intent.charge.as_mut() {
            Some(charge) if intent.status == Status::Succeeded => charge,
            _ => {
                return Err(ApiError::unexpected_state(
                    format!(
                        "This PaymentIntent ({}) does not have a successful charge to refund.",
                        intent.id
                    ),
                    intent,
                ));
            }
        };
        let remaining = charge.amount_captured - charge.amount_refunded;
        if remaining <= 0 {
            return Err(ApiError::invalid(format!(
                "Charge {} has already been refunded.",
                charge.id
            ))
            .code("charge_already_refunded")
            .saved());
        }
        let amount = requested.unwrap_or(remaining);
        if amount < 1 {
            return Err(
                ApiError::invalid("This value must be greater than or equal to 1.")
                    .code("parameter_invalid_integer")
                    .param("amount"),
            );
        }
        if amount > remaining {
            return Err(ApiError::invalid(format!(
                "Refund amount ({amount}) is greater than unrefunded amount on charge \
                 ({remaining})"
            ))
            .code("amount_too_large")
            .param("amount")
            .saved());
        }
        charge.amount_refunded += amount;
        let record = RefundRecord {
            seq,
            id: new_id("re"),
            amount,
            currency: intent.currency.clone(),
            charge: charge.id.clone(),
            payment_intent: intent.id.clone(),
            reason,
            metadata,
            created: ctx.now,
            idempotency_key: ctx.idempotency_key.clone(),
        };
        if let Some(charge) = intent.charge_json() {
            ctx.emit("charge.refunded", charge);
        }
        let body = record.json();
        self.refunds.push(record);
        Ok(body)
    }
}

fn minimum_amount(currency: &str) -> i64 {
    match currency {
        "usd" | "eur" | "cad" | "aud" | "nzd" | "sgd" | "chf" | "jpy" => 50,
        "gbp" => 30,
        _ => 1,
    }
}

/// Confirms the intent with a test card. A decline is an error response, as at Stripe,
/// but the intent it failed is kept (and embedded in the error).
fn confirm_card(
    intent: &mut Intent,
    card: &'static TestCard,
    ctx: &mut Ctx,
) -> Result<(), ApiError> {
    match card.behaviour {
        Behaviour::Approve => {
            authorise(intent, card, ctx);
            Ok(())
        }
        Behaviour::Authenticate => {
            intent.status = Status::RequiresAction;
            intent.next_action = Some(json!({
                "type": "use_stripe_sdk",
                "use_stripe_sdk": {
                    "type": "three_d_secure_redirect",
                    "stripe_js": "https://hooks.stripe.com/3d_secure_2/hosted",
                    "source": new_id("src"),
                },
            }));
            ctx.emit("payment_intent.requires_action", intent.json(false));
            Ok(())
        }
        Behaviour::Decline(failure) => {
            let charge_id = new_id("ch");
            let payment_method = json!({
                "id": intent.payment_method,
                "object": "payment_method",
                "type": "card",
                "card": {"brand": card.brand, "last4": card.last4, "funding": card.funding},
            });
            let error = json!({
                "type": "card_error",
                "code": failure.code,
                "decline_code": failure.decline_code,
                "message": failure.message,
                "charge": charge_id,
                "doc_url": format!("https://stripe.com/docs/error-codes/{}", failure.code.replace('_', "-")),
                "payment_method": payment_method,
            });
            intent.charge = Some(Charge {
                id: charge_id,
                created: ctx.now,
                amount_captured: 0,
                amount_refunded: 0,
                captured: false,
                capture_before: None,
                card,
                payment_method: intent.payment_method.clone().unwrap_or_default(),
                failure: Some(failure),
            });
            intent.status = Status::RequiresPaymentMethod;
            intent.last_payment_error = Some(error.clone());
            // Stripe detaches the failed method so the next attempt must bring a new one.
            intent.payment_method = None;
            ctx.emit("payment_intent.payment_failed", intent.json(false));
            let mut declined =
                ApiError::new(StatusCode::PAYMENT_REQUIRED, "card_error", failure.message);
            if let Some(fields) = error.as_object() {
                declined.error.extend(fields.clone());
            }
            declined.should_retry = Some(false);
            Err(declined.with("payment_intent", intent.json(false)).saved())
        }
    }
}

/// The card network approved: a captured charge, or a hold for manual capture.
pub(super) fn authorise(intent: &mut Intent, card: &'static TestCard, ctx: &mut Ctx) {
    let manual = intent.manual();
    intent.charge = Some(Charge {
        id: new_id("ch"),
        created: ctx.now,
        amount_captured: if manual { 0 } else { intent.amount },
        amount_refunded: 0,
        captured: !manual,
        capture_before: manual.then_some(ctx.now + HOLD_SECS),
        card,
        payment_method: intent.payment_method.clone().unwrap_or_default(),
        failure: None,
    });
    intent.next_action = None;
    intent.last_payment_error = None;
    if manual {
        intent.status = Status::RequiresCapture;
        intent.amount_capturable = intent.amount;
        ctx.emit(
            "payment_intent.amount_capturable_updated",
            intent.json(false),
        );
    } else {
        intent.status = Status::Succeeded;
        intent.amount_received = intent.amount;
        ctx.emit("payment_intent.succeeded", intent.json(false));
    }
}
