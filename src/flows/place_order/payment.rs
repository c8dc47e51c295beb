//! Stripe: the charge (with 3-D Secure and payment retries), what Stripe says is true
//! when an answer is unknown or refused, and the payment saved on Okya.

use super::*;

/// Who must act on Stripe's refusal of a new payment.
pub(super) enum ChargeRefusal {
    /// The card (or the payment method the app sent): the customer tries another one.
    Customer { failure: Failure, message: String },
    /// Our key, account or request: nothing was charged, the customer can do nothing about
    /// it but try again later; logged at ERROR for an operator.
    Ours { code: String, message: String },
}

/// Only card declines (Stripe's `card_error`, HTTP 402) and a payment method Stripe does
/// not know are the customer's; a 400, 401, 403 or 404 otherwise is a fault of ours.
/// See <https://docs.stripe.com/api/errors>.
pub(super) fn classify_charge_refusal(e: &UpstreamError) -> ChargeRefusal {
    if let Some(decline) = stripe::decline_of(e) {
        return ChargeRefusal::Customer {
            failure: stripe::payment_failure(&decline.code),
            message: decline.message,
        };
    }
    let Some((status, rejection)) = e.rejection() else {
        return ChargeRefusal::Ours {
            code: Failure::PaymentUnavailable.as_str().into(),
            message: e.to_string(),
        };
    };
    if status == 402 {
        return ChargeRefusal::Customer {
            failure: Failure::CardDeclined,
            message: rejection.message.clone(),
        };
    }
    if stripe::is_unknown_payment_method(rejection) {
        return ChargeRefusal::Customer {
            failure: Failure::CardDeclined,
            message: "This card cannot be used. Try another card.".into(),
        };
    }
    ChargeRefusal::Ours {
        code: rejection.code.clone(),
        message: rejection.message.clone(),
    }
}

/// Steps 12–13 (Use Reward 20–21): Stripe takes the total; a refusal is step 15.
pub(super) async fn charge(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let total = money(&order, "total", order.total_minor)?;
    let capture_mode = order.capture_mode;
    let mut metadata = BTreeMap::new();
    metadata.insert("order_id".to_owned(), order.id.to_string());
    if let Some(okya) = &order.okya_order_id {
        metadata.insert("okya_order_id".to_owned(), okya.clone());
    }
    let params = CreatePaymentIntent {
        amount: total,
        payment_method: order.payment_method_id.to_string(),
        capture_method: match capture_mode {
            CaptureMode::Immediate => CaptureMethod::Automatic,
            CaptureMode::OnAcceptance => CaptureMethod::Manual,
        },
        description: Some(format!(
            "CBTL order {}",
            order
                .number
                .as_deref()
                .ok_or_else(|| FlowError::Corrupt(format!(
                    "order {} has no Okya number",
                    order.id
                )))?
        )),
        metadata,
    };
    let error = match state
        .upstreams
        .stripe
        .create_payment_intent(&params, &key(&order, "charge"))
        .await
    {
        Ok(intent) => return adopt_intent(order, &intent),
        Err(e) => e,
    };
    // Stripe's circuit breaker is open: nothing was sent, so nothing can have been charged
    // by this try, and a search by metadata now would be refused the same way. Try again
    // later through the step's backoff; an earlier try's unknown outcome is still looked
    // up once Stripe is reachable.
    if error.was_not_sent() {
        return Ok(Next::Retry(format!("charge not sent: {error}")));
    }
    // The answer was lost, is still coming (409 in use), or can never come under this
    // key (a replayed 500): the intent may exist. After a few tries under the same key,
    // look it up by the order's metadata before anything else is decided.
    let idempotency_conflict = error
        .rejection()
        .is_some_and(|(_, r)| stripe::is_idempotency_error(r));
    let unknown = error.is_transient() || idempotency_conflict;
    let attempts = u32::try_from(order.step_attempts).unwrap_or(0) + 1;
    if unknown
        && (error.is_replayed_failure()
            || idempotency_conflict
            || attempts >= state.settings.orders.charge_lookup_after)
    {
        match find_intent(state, &order).await {
            Ok(Some(intent)) => {
                tracing::info!(order_id = %order.id, intent_id = %intent.id, "found the order's PaymentIntent after an unknown outcome");
                return adopt_intent(order, &intent);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(order_id = %order.id, error = %e, "looking the PaymentIntent up failed")
            }
        }
    }
    if unknown {
        return Ok(Next::Retry(format!("charge outcome unknown: {error}")));
    }
    match classify_charge_refusal(&error) {
        ChargeRefusal::Customer { failure, message } => {
            if let Some(decline) = stripe::decline_of(&error) {
                order.payment_intent_id = decline.payment_intent_id.or(order.payment_intent_id);
            }
            tracing::info!(order_id = %order.id, failure = failure.as_str(), "the card was declined");
            set_payment(&mut order, PaymentStatus::Failed);
            fail_with(&mut order, failure, &message);
            Ok(go(order, Step::CancelOkya).into())
        }
        ChargeRefusal::Ours { code, message } => {
            tracing::error!(order_id = %order.id, %code, error = %error, "Stripe refused our payment request; nothing charged, the customer may retry");
            fail_with(&mut order, Failure::PaymentUnavailable, &message);
            Ok(go(order, Step::AwaitPaymentRetry)
                .showing(OrderStatus::AwaitingPayment)
                .then_rest()
                .into())
        }
    }
}

/// The order's PaymentIntent found by its metadata, if Stripe shows one.
pub(super) async fn find_intent(
    state: &AppState,
    order: &Order,
) -> Result<Option<PaymentIntent>, FlowError> {
    let found = state
        .upstreams
        .stripe
        .search_payment_intents_by_metadata("order_id", order.id.as_str())
        .await?;
    // One intent per order is the invariant; the newest wins if Stripe ever shows more.
    Ok(found.into_iter().max_by_key(|pi| pi.created))
}

/// Goes on from the intent Stripe holds for the order, however it was learned.
pub(super) fn adopt_intent(mut order: Order, intent: &PaymentIntent) -> Result<Next, FlowError> {
    apply_intent(&mut order, intent);
    match intent.status {
        PaymentIntentStatus::Succeeded | PaymentIntentStatus::RequiresCapture => {
            Ok(go(order, Step::RecordPayment).into())
        }
        PaymentIntentStatus::RequiresAction
        | PaymentIntentStatus::RequiresConfirmation
        | PaymentIntentStatus::Processing => Ok(go(order, Step::AwaitAuthentication)
            .showing(OrderStatus::AwaitingPayment)
            .then_rest()
            .into()),
        PaymentIntentStatus::RequiresPaymentMethod | PaymentIntentStatus::Canceled => {
            let (failure, message) = payment_error(
                intent,
                ("card_declined", "payment_failed"),
                "The payment did not go through.",
            );
            set_payment(&mut order, PaymentStatus::Failed);
            fail_with(&mut order, failure, &message);
            Ok(go(order, Step::CancelOkya).into())
        }
        PaymentIntentStatus::Unknown => Ok(Next::Attention(format!(
            "PaymentIntent {} has a status this service does not know",
            intent.id
        ))),
    }
}

/// The failure and message of an intent's last payment error, read through Stripe's
/// codes. `codes` are the Stripe code to assume when the error has none, and when there is
/// no error at all (with `message`).
pub(super) fn payment_error(
    intent: &PaymentIntent,
    codes: (&str, &str),
    message: &str,
) -> (Failure, String) {
    match &intent.last_payment_error {
        Some(e) => (
            stripe::payment_failure(e.code.as_deref().unwrap_or(codes.0)),
            e.message.clone().unwrap_or_default(),
        ),
        None => (stripe::payment_failure(codes.1), message.to_owned()),
    }
}

/// What Stripe says an intent's money is, in the app's terms.
pub(super) enum Truth {
    Settled(PaymentStatus),
    /// Stripe is still working on it; ask again later.
    Processing,
    /// A status this code does not know.
    Unrecognised,
}

pub(super) fn truth_of(intent: &PaymentIntent) -> Truth {
    match intent.status {
        PaymentIntentStatus::RequiresPaymentMethod => Truth::Settled(PaymentStatus::Failed),
        PaymentIntentStatus::RequiresConfirmation | PaymentIntentStatus::RequiresAction => {
            Truth::Settled(PaymentStatus::RequiresAction)
        }
        PaymentIntentStatus::Processing => Truth::Processing,
        PaymentIntentStatus::RequiresCapture => Truth::Settled(PaymentStatus::Authorized),
        PaymentIntentStatus::Succeeded => {
            let refunded = intent.charge().is_some_and(|charge| {
                charge.refunded
                    || (charge.amount_captured > 0
                        && charge.amount_refunded >= charge.amount_captured)
            });
            Truth::Settled(if refunded {
                PaymentStatus::Refunded
            } else {
                PaymentStatus::Captured
            })
        }
        PaymentIntentStatus::Canceled => Truth::Settled(PaymentStatus::Cancelled),
        PaymentIntentStatus::Unknown => Truth::Unrecognised,
    }
}

/// Reads the order's PaymentIntent: what is true, whatever our last call was told.
pub(super) async fn read_truth(state: &AppState, order: &mut Order) -> Result<Truth, FlowError> {
    let intent_id = order
        .payment_intent_id
        .clone()
        .ok_or_else(|| FlowError::Corrupt(format!("order {} has no intent", order.id)))?;
    let intent = state
        .upstreams
        .stripe
        .retrieve_payment_intent(&intent_id)
        .await?;
    if let Some((brand, last4)) = intent.card() {
        order.card_brand = Some(brand.to_owned());
        order.card_last4 = Some(last4.chars().take(4).collect());
    }
    Ok(truth_of(&intent))
}

pub(super) fn apply_intent(order: &mut Order, intent: &PaymentIntent) {
    order.payment_intent_id = Some(intent.id.clone());
    if let Some((brand, last4)) = intent.card() {
        order.card_brand = Some(brand.to_owned());
        order.card_last4 = Some(last4.chars().take(4).collect());
    }
    let status = match truth_of(intent) {
        Truth::Settled(status) => status,
        Truth::Processing => PaymentStatus::RequiresAction,
        Truth::Unrecognised => PaymentStatus::Failed,
    };
    set_payment(order, status);
}

/// Stripe refused a request of ours: the customer may send the same checkout again (see
/// [`retry_payment`]); if nobody does before the authentication timeout, the order is
/// cancelled with nothing charged.
pub(super) async fn await_payment_retry(
    state: &AppState,
    mut order: Order,
) -> Result<Next, FlowError> {
    if now_ms() - order.updated_at_ms < authentication_timeout_ms(state) {
        return Ok(Next::Rest);
    }
    tracing::info!(order_id = %order.id, "the payment was not retried in time; cancelling the order");
    set_payment(&mut order, PaymentStatus::Failed);
    Ok(go(order, Step::CancelOkya).into())
}

pub(super) fn authentication_timeout_ms(state: &AppState) -> i64 {
    millis(state.settings.orders.authentication_timeout())
}

/// Waiting for 3-D Secure: Stripe's webhook moves the flow on; an abandoned
/// authentication is cancelled once the timeout passes.
pub(super) async fn await_authentication(
    state: &AppState,
    mut order: Order,
) -> Result<Next, FlowError> {
    let Some(intent_id) = order.payment_intent_id.clone() else {
        return Err(FlowError::Corrupt(format!(
            "order {} awaits authentication without an intent",
            order.id
        )));
    };
    let intent = match state
        .upstreams
        .stripe
        .retrieve_payment_intent(&intent_id)
        .await
    {
        Ok(intent) => intent,
        Err(e) if e.is_transient() => return Ok(Next::Rest),
        Err(e) => return Err(e.into()),
    };
    let next = match intent.status {
        PaymentIntentStatus::Succeeded | PaymentIntentStatus::RequiresCapture => {
            apply_intent(&mut order, &intent);
            Step::RecordPayment
        }
        PaymentIntentStatus::RequiresPaymentMethod | PaymentIntentStatus::Canceled => {
            apply_intent(&mut order, &intent);
            let (failure, message) = payment_error(
                &intent,
                ("authentication_failed", "authentication_failed"),
                "The card could not be authenticated.",
            );
            set_payment(&mut order, PaymentStatus::Failed);
            fail_with(&mut order, failure, &message);
            Step::CancelOkya
        }
        PaymentIntentStatus::RequiresAction
        | PaymentIntentStatus::RequiresConfirmation
        | PaymentIntentStatus::Processing
        | PaymentIntentStatus::Unknown => {
            if now_ms() - order.updated_at_ms < authentication_timeout_ms(state) {
                return Ok(Next::Rest);
            }
            match state
                .upstreams
                .stripe
                .cancel_payment_intent(
                    &intent_id,
                    Some("abandoned"),
                    &generation_key(&order, "abandon"),
                )
                .await
            {
                Ok(intent) => apply_intent(&mut order, &intent),
                Err(e) if e.is_transient() && !e.is_replayed_failure() => {
                    return Ok(Next::Retry(e.to_string()));
                }
                Err(e) => {
                    // Refused: the customer may have finished at the last moment. What the
                    // intent says now decides.
                    tracing::warn!(order_id = %order.id, error = %e, "Stripe would not cancel the abandoned intent; reading it");
                    match read_truth(state, &mut order).await? {
                        Truth::Settled(
                            status @ (PaymentStatus::Captured | PaymentStatus::Authorized),
                        ) => {
                            set_payment(&mut order, status);
                            return Ok(go(order, Step::RecordPayment).into());
                        }
                        Truth::Settled(
                            PaymentStatus::Cancelled
                            | PaymentStatus::Failed
                            | PaymentStatus::Refunded,
                        ) => {}
                        Truth::Settled(PaymentStatus::RequiresAction)
                            if e.is_replayed_failure() =>
                        {
                            order.key_generation += 1;
                            checkpoint(state, &mut order).await?;
                            return Ok(Next::Retry(e.to_string()));
                        }
                        Truth::Settled(PaymentStatus::RequiresAction) | Truth::Unrecognised => {
                            return Ok(Next::Attention(format!(
                                "Stripe refused to cancel an abandoned intent that still awaits the customer: {e}"
                            )));
                        }
                        Truth::Processing => return Ok(Next::Retry(e.to_string())),
                    }
                }
            }
            set_payment(&mut order, PaymentStatus::Cancelled);
            fail_with(
                &mut order,
                Failure::AuthenticationAbandoned,
                "The card was not authenticated in time.",
            );
            Step::CancelOkya
        }
    };
    Ok(go(order, next).into())
}

/// Steps 14 and 16–17: the payment details go on the Okya order, which puts it in front of the store.
pub(super) async fn record_payment(state: &AppState, mut order: Order) -> Result<Next, FlowError> {
    let okya_id = okya_id(&order)?;
    let captured = order.payment_status == Some(PaymentStatus::Captured);
    let free = order.total_minor == Some(0);
    let body = NewPayment {
        provider: if free { "voucher" } else { "stripe" }.into(),
        reference: if free {
            order
                .voucher_id
                .as_ref()
                .map_or_else(|| order.id.to_string(), VoucherId::to_string)
        } else {
            order.payment_intent_id.clone().ok_or_else(|| {
                FlowError::Corrupt(format!(
                    "order {} records a payment without an intent",
                    order.id
                ))
            })?
        },
        amount: WireMoney::from_money(&money(&order, "total", order.total_minor)?),
        status: if captured || free {
            PaymentRecordStatus::Captured
        } else {
            PaymentRecordStatus::Authorized
        },
        card: card(&order),
    };
    let recorded = match state
        .upstreams
        .okya
        .record_payment(&okya_id, &body, &key(&order, "payment"))
        .await
    {
        Ok(okya) => Some(okya),
        Err(e) if e.is_transient() => return Ok(Next::Retry(e.to_string())),
        Err(e) => {
            // Okya may hold our payment after all (an earlier try whose answer was lost):
            // its copy of the order decides.
            let okya = state.upstreams.okya.order(&okya_id).await?;
            match okya {
                Some(okya)
                    if okya
                        .payment
                        .as_ref()
                        .is_some_and(|p| p.reference == body.reference) =>
                {
                    Some(okya)
                }
                _ => {
                    tracing::error!(order_id = %order.id, error = %e, "Okya would not record the payment; refunding");
                    fail_with(&mut order, Failure::NotRecorded, &e.to_string());
                    None
                }
            }
        }
    };
    match recorded {
        Some(okya) => {
            record_okya(state, &mut order, &okya).await?;
            Ok(go(order, Step::AwaitAcceptance)
                .showing(OrderStatus::AwaitingAcceptance)
                .into())
        }
        None => Ok(go(order, Step::Refund).into()),
    }
}

pub(super) fn card(order: &Order) -> Option<crate::upstream::okya::orders::Card> {
    match (&order.card_brand, &order.card_last4) {
        (Some(brand), Some(last4)) => Some(crate::upstream::okya::orders::Card {
            brand: brand.clone(),
            last4: last4.clone(),
        }),
        _ => None,
    }
}

pub(super) fn okya_id(order: &Order) -> Result<String, FlowError> {
    order
        .okya_order_id
        .clone()
        .ok_or_else(|| FlowError::Corrupt(format!("order {} has no Okya order", order.id)))
}
