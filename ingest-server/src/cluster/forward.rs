//! HTTP requests carried over NATS request/reply: a standby sends each request it does not
//! answer itself to `<name>.http`, where only the owner listens; the owner answers it as if it
//! had come on a connection (routed, checked, counted) and replies with the answer.
//!
//! A request travels as a NATS message whose payload is the body, with headers `Http-Method`,
//! `Http-Target` (path and query) and the request's own headers; the answer likewise with
//! `Http-Status`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::Full;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::StatusCode;

use crate::response::{error, retry_after, Response};
use crate::state::State;

const METHOD: &str = "Http-Method";
const TARGET: &str = "Http-Target";
const STATUS: &str = "Http-Status";

/// How long a forwarded request may take, answer included: past it, 503 `owner_unreachable`
/// (the owner may still have done it, as with any request whose answer was lost).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// The peer address forwarded requests are logged with: they came over NATS.
const NATS_PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Sends a request to the owner and returns its answer, or 503 when no owner answers.
pub(super) async fn send(
    client: &async_nats::Client,
    subject: &str,
    parts: &hyper::http::request::Parts,
    body: Bytes,
    retry_after_s: u32,
) -> Response {
    let mut headers = to_nats(&parts.headers);
    headers.insert(METHOD, parts.method.as_str());
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str);
    headers.insert(TARGET, target);
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(body)
        .timeout(Some(FORWARD_TIMEOUT));
    match client.send_request(subject.to_owned(), request).await {
        Ok(answer) => from_message(answer),
        Err(e) => {
            let (code, message) = match e.kind() {
                async_nats::RequestErrorKind::NoResponders => (
                    "no_owner",
                    "no node owns the data at the moment (a takeover is under way); retry shortly"
                        .to_string(),
                ),
                _ => (
                    "owner_unreachable",
                    format!("the owner did not answer: {e}"),
                ),
            };
            retry_after(
                retry_after_s,
                StatusCode::SERVICE_UNAVAILABLE,
                code,
                message,
            )
        }
    }
}

fn from_message(message: async_nats::Message) -> Response {
    let headers = message.headers.unwrap_or_default();
    let status = headers
        .get(STATUS)
        .and_then(|s| s.as_str().parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok());
    let Some(status) = status else {
        return error(
            StatusCode::BAD_GATEWAY,
            "bad_forward",
            "the owner's answer had no status",
        );
    };
    let mut response = hyper::Response::new(Full::new(message.payload));
    *response.status_mut() = status;
    for (name, value) in from_nats(&headers) {
        // The connection's own: hyper sets them for the answer it sends.
        if name != header::CONTENT_LENGTH && name != header::CONNECTION {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// HTTP headers as NATS headers (those whose values are text).
fn to_nats(headers: &hyper::HeaderMap) -> async_nats::HeaderMap {
    let mut nats = async_nats::HeaderMap::new();
    for (name, value) in headers {
        if let Ok(value) = value.to_str() {
            nats.append(name.as_str(), value);
        }
    }
    nats
}

/// NATS headers as HTTP headers, without this module's own (`Http-*`).
fn from_nats(headers: &async_nats::HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut http = Vec::new();
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        if [METHOD, TARGET, STATUS].contains(&name) {
            continue;
        }
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        for value in values {
            if let Ok(value) = HeaderValue::from_str(value.as_str()) {
                http.push((name.clone(), value));
            }
        }
    }
    http
}

/// Answers forwarded requests with the owner's state until aborted.
pub(super) async fn serve(client: async_nats::Client, subject: String, state: Arc<State>) {
    let mut requests = match client.subscribe(subject).await {
        Ok(requests) => requests,
        Err(e) => {
            tracing::error!(error = %e, "cannot take forwarded requests");
            return;
        }
    };
    while let Some(message) = requests.next().await {
        let (client, state) = (client.clone(), Arc::clone(&state));
        tokio::spawn(async move {
            let Some(reply) = message.reply.clone() else {
                return;
            };
            let answer = answer(&state, message).await;
            let mut headers = to_nats(answer.headers());
            headers.insert(STATUS, answer.status().as_u16().to_string().as_str());
            let body = http_body_util::BodyExt::collect(answer.into_body())
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            if let Err(e) = client.publish_with_headers(reply, headers, body).await {
                tracing::debug!(error = %e, "could not reply to a forwarded request");
            }
        });
    }
}

async fn answer(state: &Arc<State>, message: async_nats::Message) -> Response {
    let headers = message.headers.unwrap_or_default();
    let mut request = hyper::Request::builder();
    if let Some(method) = headers.get(METHOD) {
        request = request.method(method.as_str());
    }
    if let Some(target) = headers.get(TARGET) {
        request = request.uri(target.as_str());
    }
    for (name, value) in from_nats(&headers) {
        request = request.header(name, value);
    }
    match request.body(()) {
        Ok(request) => {
            let (parts, ()) = request.into_parts();
            crate::handlers::forwarded(state, parts, message.payload, NATS_PEER).await
        }
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format_args!("the forwarded request does not parse: {e}"),
        ),
    }
}
