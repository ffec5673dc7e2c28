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
use hyper::header::{self, HeaderValue};
use hyper::StatusCode;

use crate::response::{error, Response};
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
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(METHOD, parts.method.as_str());
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str);
    headers.insert(TARGET, target);
    for (name, value) in &parts.headers {
        if let Ok(value) = value.to_str() {
            headers.append(name.as_str(), value);
        }
    }
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
            let mut response = error(StatusCode::SERVICE_UNAVAILABLE, code, message);
            if let Ok(value) = HeaderValue::from_str(&retry_after_s.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
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
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        if name == STATUS {
            continue;
        }
        let Ok(name) = header::HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        if name == header::CONTENT_LENGTH || name == header::CONNECTION {
            continue;
        }
        for value in values {
            if let Ok(value) = HeaderValue::from_str(value.as_str()) {
                response.headers_mut().append(name.clone(), value);
            }
        }
    }
    response
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
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(STATUS, answer.status().as_u16().to_string().as_str());
            for (name, value) in answer.headers() {
                if let Ok(value) = value.to_str() {
                    headers.append(name.as_str(), value);
                }
            }
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
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        if name == METHOD || name == TARGET {
            continue;
        }
        for value in values {
            request = request.header(name, value.as_str());
        }
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
