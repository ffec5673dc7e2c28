//! What handlers check of a request before their work: the API key and its role, a free
//! in-flight slot, the content type, a body within its byte limit and time; and the query
//! string's pairs.

// Checks return `Result<_, Response>` where the error is the finished answer to send; it is
// built once per refused request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::{Caller, Denied, Role};
use crate::response::{close_connection, error, Response};
use crate::state::State;

/// The caller, if its API key may act as `needed`; else 401 or 403.
pub(crate) fn authorize(
    state: &State,
    headers: &HeaderMap,
    needed: Role,
) -> Result<Caller, Response> {
    let header = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    state
        .keys
        .authorize(header, needed)
        .map_err(|denied| match denied {
            Denied::Unauthenticated => {
                let mut response = error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "send a configured API key as Authorization: Bearer <key>",
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
            Denied::Forbidden => error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this API key's role may not do this",
            ),
        })
}

/// Takes an in-flight slot, or `None` when the limit is reached (the caller sheds the request).
pub(crate) fn admit(state: &State, limit: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
    let permit = limit.clone().try_acquire_owned().ok();
    if permit.is_none() {
        state.metrics.shed.fetch_add(1, Ordering::Relaxed);
    }
    permit
}

/// Accepts a missing `Content-Type` or one of `allowed` (parameters such as charset ignored).
pub(crate) fn content_type(headers: &HeaderMap, allowed: &[&str]) -> Result<(), Response> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(essence)) {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format_args!("send {}", allowed.join(" or ")),
        ))
    }
}

/// Reads a body of at most `limit` bytes within the body timeout: 413 past the limit (whether
/// announced by `Content-Length` or found while reading a chunked body), 408 on timeout.
pub(crate) async fn read_body(
    state: &State,
    request: Request<Incoming>,
    limit: usize,
) -> Result<Bytes, Response> {
    let too_large = || {
        close_connection(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format_args!("the body is larger than {limit} bytes"),
        ))
    };
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut collect = std::pin::pin!(Limited::new(request.into_body(), limit).collect());
    // Most bodies arrived with their headers: only arm the timer when one has to be waited for.
    let first = std::future::poll_fn(|cx| Poll::Ready(collect.as_mut().poll(cx))).await;
    let collected = match first {
        Poll::Ready(done) => Ok(done),
        Poll::Pending => tokio::time::timeout(state.config.body_read_timeout, collect).await,
    };
    match collected {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(close_connection(error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format_args!("could not read the request body: {e}"),
        ))),
        Err(_) => Err(close_connection(error(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format_args!(
                "the body did not arrive within {} ms",
                state.config.body_read_timeout.as_millis()
            ),
        ))),
    }
}

/// 400 for a body that is not JSON; 422 for JSON of the wrong shape (missing or unknown field,
/// wrong type).
pub(crate) fn json_error_status(e: &serde_json::Error) -> StatusCode {
    match e.classify() {
        serde_json::error::Category::Data => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The `key=value` pairs of a query string (a key without `=` has the value "").
pub(crate) fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}
