//! Webhooks (admin): `PUT /v1/webhooks/{name}` registers or replaces one,
//! `GET /v1/webhooks[/{name}]` shows them with their delivery state, `DELETE` removes one.
//!
//! A URL is checked at registration against server-side request forgery: a literal address in
//! a refused range (loopback, private, link-local, unique-local, …) is refused unless
//! `--webhook-allow-networks` lists it; names are judged at every delivery, on the addresses
//! they resolve to (`webhooks::guard`). The secret (`whsec_…`, generated when none is given) is
//! shown in the answer to the `PUT` only.

use engine::{EventKind, Webhook, WebhookError, WebhookSpec};
use hyper::header::HeaderMap;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use super::blocking;
use crate::auth::Role;
use crate::delivery::DeliveryState;
use crate::request::{admin_json, admit, authorize, Body};
use crate::response::{error, json, retry_later, rfc3339, shed, Response};
use crate::state::State;
use crate::webhooks::guard;
use crate::webhooks::signing::WebhookSecret;

/// The body of `PUT /v1/webhooks/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    url: String,
    /// Event types to deliver; absent or empty: every type but `source_alert` (it names
    /// signers' addresses: delivered only when listed).
    #[serde(default)]
    events: Vec<String>,
    /// `whsec_<base64>`; absent: generated.
    secret: Option<String>,
    /// Start after this event; absent: a new webhook starts after the newest event, a
    /// replaced one keeps its cursor.
    after: Option<u64>,
}

/// A webhook as the API shows it.
#[derive(Serialize)]
struct WebhookJson<'a> {
    name: &'a str,
    url: &'a str,
    /// Empty: every type but `source_alert`.
    events: Vec<&'static str>,
    created_at: String,
    /// The last event delivered (or skipped as not wanted).
    cursor: u64,
    /// The newest event: the webhook is `last_event - cursor` events behind.
    last_event: u64,
    delivery: DeliveryState,
    /// Only in the answer to the `PUT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'a str>,
}

fn webhook_json<'a>(state: &State, hook: &'a Webhook, secret: bool) -> WebhookJson<'a> {
    WebhookJson {
        name: &hook.name,
        url: &hook.url,
        events: hook.events.iter().map(|k| k.as_str()).collect(),
        created_at: rfc3339(hook.created_at_ms),
        cursor: hook.cursor,
        last_event: state.engine.last_event_seq(),
        delivery: state.deliveries.state(&hook.name),
        secret: secret.then_some(hook.secret.as_str()),
    }
}

fn invalid(message: impl std::fmt::Display) -> Response {
    error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_webhook", message)
}

/// `PUT /v1/webhooks/{name}` (admin).
pub(crate) async fn put(
    state: &State,
    name: &str,
    headers: &HeaderMap,
    body: &mut Body,
) -> Response {
    let (parsed, _, _permit) =
        match admin_json::<WebhookBody>(state, headers, body, "invalid_webhook").await {
            Ok(admitted) => admitted,
            Err(response) => return response,
        };
    if let Err(e) = guard::check_url(&parsed.url, state.deliveries.allowed()) {
        return invalid(format_args!("url: {e}"));
    }
    let mut events = Vec::with_capacity(parsed.events.len());
    for name in &parsed.events {
        match EventKind::parse(name) {
            Some(kind) if !events.contains(&kind) => events.push(kind),
            Some(_) => {}
            None => {
                let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                return invalid(format_args!(
                    "events: unknown event type {name:?} (known: {})",
                    known.join(", ")
                ));
            }
        }
    }
    let secret = match &parsed.secret {
        Some(text) => match WebhookSecret::parse(text) {
            Ok(secret) => secret.to_text(),
            Err(e) => return invalid(format_args!("secret: {e}")),
        },
        None => WebhookSecret::generate().to_text(),
    };
    let spec = WebhookSpec {
        name: name.to_owned(),
        url: parsed.url,
        events,
        secret,
        after: parsed.after,
    };
    let engine = state.engine.clone();
    let result = blocking(move || engine.put_webhook(spec)).await;
    state.deliveries.changed();
    match result {
        Ok(Ok((hook, created))) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            json(
                status,
                serde_json::to_string(&webhook_json(state, &hook, true)).unwrap_or_default(),
            )
        }
        Ok(Err(e)) => webhook_error(state, &e),
        Err(response) => response,
    }
}

/// `GET /v1/webhooks` (admin).
pub(crate) fn list(state: &State, headers: &HeaderMap) -> Response {
    if let Err(response) = authorize(state, headers, Role::Admin) {
        return response;
    }
    #[derive(Serialize)]
    struct List<'a> {
        webhooks: Vec<WebhookJson<'a>>,
    }
    let hooks = state.engine.webhooks();
    let list = List {
        webhooks: hooks
            .iter()
            .map(|h| webhook_json(state, h, false))
            .collect(),
    };
    json(
        StatusCode::OK,
        serde_json::to_string(&list).unwrap_or_default(),
    )
}

/// `GET /v1/webhooks/{name}` (admin).
pub(crate) fn get(state: &State, name: &str, headers: &HeaderMap) -> Response {
    if let Err(response) = authorize(state, headers, Role::Admin) {
        return response;
    }
    match state.engine.webhook(name) {
        Some(hook) => json(
            StatusCode::OK,
            serde_json::to_string(&webhook_json(state, &hook, false)).unwrap_or_default(),
        ),
        None => unknown_webhook(),
    }
}

/// `DELETE /v1/webhooks/{name}` (admin).
pub(crate) async fn delete(state: &State, name: &str, headers: &HeaderMap) -> Response {
    if let Err(response) = authorize(state, headers, Role::Admin) {
        return response;
    }
    let Some(_permit) = admit(state, &state.inflight) else {
        return shed(state);
    };
    let engine = state.engine.clone();
    let name = name.to_owned();
    let result = blocking(move || engine.delete_webhook(&name)).await;
    state.deliveries.changed();
    match result {
        Ok(Ok(())) => {
            let mut response = json(StatusCode::NO_CONTENT, "");
            response.headers_mut().remove(hyper::header::CONTENT_TYPE);
            response
        }
        Ok(Err(e)) => webhook_error(state, &e),
        Err(response) => response,
    }
}

fn webhook_error(state: &State, e: &WebhookError) -> Response {
    match e {
        WebhookError::Invalid(_) => invalid(e),
        WebhookError::UnknownWebhook => unknown_webhook(),
        WebhookError::TooMany(_) => error(StatusCode::CONFLICT, "too_many_webhooks", e),
        WebhookError::StorageUnavailable => retry_later(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            e,
        ),
        _ => retry_later(state, StatusCode::SERVICE_UNAVAILABLE, "shutting_down", e),
    }
}

fn unknown_webhook() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown_webhook",
        "no webhook has this name",
    )
}
