//! What handlers check of a request before their work: the API key and its role, the content
//! type, a body within its byte limit, its time and the body budget, then a free in-flight
//! slot; what is done with a body a handler left unread; the query string's pairs and the
//! RFC 3339 times of bodies.

// Checks return `Result<_, Response>` where the error is the finished answer to send; it is
// built once per refused request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::{Caller, Denied, Role};
use crate::response::{close_connection, error, retry_later, shed, Response, CLOSE, JSON};
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

/// A request with a small JSON body, let in: its caller, its body, and the in-flight slot it
/// holds until dropped.
pub(crate) struct Admitted<'s> {
    pub caller: Caller,
    pub body: ReadBody<'s>,
    /// Bind it (`permit: _permit`) for as long as the request is served.
    pub permit: OwnedSemaphorePermit,
}

/// What every handler of a small JSON body does first, in order: the key (401/403), the content
/// type (415), the body (413/408, 503 past the body budget), then an in-flight slot (503).
/// `overloaded` is called if the request is shed for load, for the handler's own metric.
pub(crate) async fn admit_json<'s>(
    state: &'s State,
    headers: &HeaderMap,
    body: &mut Body,
    role: Role,
    overloaded: impl FnOnce(),
) -> Result<Admitted<'s>, Response> {
    let caller = authorize(state, headers, role)?;
    content_type(headers, &[JSON])?;
    let body = match read_body(state, headers, body, BodyKind::Small).await {
        Ok(body) => body,
        Err(response) => {
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                overloaded();
            }
            return Err(response);
        }
    };
    // The slot is taken once the body is in: a slow body holds no slot.
    let Some(permit) = admit(state, &state.inflight) else {
        overloaded();
        return Err(shed(state));
    };
    Ok(Admitted {
        caller,
        body,
        permit,
    })
}

/// An administrator's JSON body, parsed: [`admit_json`] with the admin role, then
/// [`parse_json`] (`invalid_code` for a body of the wrong shape); the body's bytes are given
/// back before the handler goes on. Bind the permit for as long as the request is served.
pub(crate) async fn admin_json<T: serde::de::DeserializeOwned>(
    state: &State,
    headers: &HeaderMap,
    body: &mut Body,
    invalid_code: &str,
) -> Result<(T, Caller, OwnedSemaphorePermit), Response> {
    let Admitted {
        body,
        caller,
        permit,
    } = admit_json(state, headers, body, Role::Admin, || {}).await?;
    let parsed = parse_json(&body, invalid_code)?;
    Ok((parsed, caller, permit))
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

/// A request's body, lent to its handler. `handle` looks at it after the handler answered: a
/// body the handler did not read is drained if it has already arrived, else the answer says
/// `Connection: close` (see [`finish_unread`]).
pub(crate) struct Body {
    incoming: Source,
    /// Read to its end by [`read_body`].
    read: bool,
}

/// Where a body comes from: the connection, or (for a request another node forwarded) bytes
/// already here.
type Source = http_body_util::Either<Incoming, http_body_util::Full<Bytes>>;

impl Body {
    pub fn new(incoming: Incoming) -> Body {
        Body {
            incoming: Source::Left(incoming),
            read: false,
        }
    }

    /// A body that has arrived whole.
    pub fn whole(bytes: Bytes) -> Body {
        Body {
            incoming: Source::Right(http_body_util::Full::new(bytes)),
            read: false,
        }
    }
}

/// The most bytes of an unread body drained to keep its connection open; a larger one, or one
/// that has not arrived, closes the connection instead.
const DRAIN_BYTES_MAX: usize = 64 * 1024;

/// Called with every answer: if the handler left the body unread, reads what has already
/// arrived of it (without waiting, up to [`DRAIN_BYTES_MAX`]); if that is not all of it, the
/// answer gets `Connection: close`, which hyper honours by closing after it. Without this,
/// hyper would close such a connection unannounced and the client's next request on it would
/// fail.
pub(crate) async fn finish_unread(body: &mut Body, response: &mut Response) {
    if body.read || body.incoming.is_end_stream() {
        return;
    }
    if response.headers().get(header::CONNECTION) == Some(&CLOSE) {
        return;
    }
    // Read what has arrived: hyper feeds the body from the same task, so after each round that
    // brought bytes this yields once to let it read more; the first round that brings nothing
    // ends the drain. No timer, and no wait for bytes still on their way.
    let mut drained = 0;
    let mut progressed = true;
    let ended = std::future::poll_fn(|cx| loop {
        match std::pin::Pin::new(&mut body.incoming).poll_frame(cx) {
            Poll::Ready(None) => return Poll::Ready(true),
            Poll::Ready(Some(Ok(frame))) => {
                drained += frame.data_ref().map_or(0, Bytes::len);
                if drained > DRAIN_BYTES_MAX {
                    return Poll::Ready(false);
                }
                progressed = true;
            }
            Poll::Ready(Some(Err(_))) => return Poll::Ready(false),
            Poll::Pending if progressed => {
                progressed = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Pending => return Poll::Ready(false),
        }
    })
    .await;
    if ended {
        body.read = true;
    } else {
        response.headers_mut().insert(header::CONNECTION, CLOSE);
    }
}

/// Which body a route reads: its byte limit and the budget it is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// A single signature or an admin request: `body_bytes_max`, the small-body budget.
    Small,
    /// An NDJSON batch: `batch_bytes_max`, the batch budget. Batches stalled by one client
    /// cannot take what single signatures need.
    Batch,
}

/// The bytes of request bodies of one kind held at once, across all connections: batches up to
/// `ServerConfig::body_buffer_bytes_max`, single and admin bodies up to `inflight_max` ×
/// `body_bytes_max`.
#[derive(Debug)]
pub(crate) struct BodyBudget {
    held: AtomicUsize,
    max: usize,
}

impl BodyBudget {
    pub fn new(max: usize) -> BodyBudget {
        BodyBudget {
            held: AtomicUsize::new(0),
            max,
        }
    }

    /// Bytes held now (for metrics and tests).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// A share of the [`BodyBudget`], given back when dropped.
pub(crate) struct Held<'a> {
    budget: &'a BodyBudget,
    bytes: usize,
}

impl Held<'_> {
    /// Takes `n` more bytes; `false` (taking nothing) if the budget has not got them. A refusal
    /// never counts against another request meanwhile (no add-then-take-back).
    fn grow(&mut self, n: usize) -> bool {
        let max = self.budget.max;
        let taken = self
            .budget
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(n).filter(|&after| after <= max)
            });
        if taken.is_ok() {
            self.bytes += n;
        }
        taken.is_ok()
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A body read in full, holding its share of the body budget until dropped.
pub(crate) struct ReadBody<'a> {
    bytes: Bytes,
    _held: Held<'a>,
}

impl std::ops::Deref for ReadBody<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Why a body could not be read.
enum Unread {
    TooLarge,
    Budget,
    Broken(Box<dyn std::error::Error + Send + Sync>),
}

/// Reads a body of at most its kind's limit within the body timeout: 413 past the limit (whether
/// announced by `Content-Length` or found while reading a chunked body), 408 on timeout, 503
/// `overloaded` when the bodies of its kind held by all requests reach their budget. Call it
/// before taking an in-flight slot: a slow body then holds only the bytes it sent.
pub(crate) async fn read_body<'s>(
    state: &'s State,
    headers: &HeaderMap,
    body: &mut Body,
    kind: BodyKind,
) -> Result<ReadBody<'s>, Response> {
    let (limit, budget) = match kind {
        BodyKind::Small => (state.config.body_bytes_max, &state.small_body_budget),
        BodyKind::Batch => (state.config.batch_bytes_max, &state.batch_body_budget),
    };
    let too_large = || {
        close_connection(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format_args!("the body is larger than {limit} bytes"),
        ))
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let held = Held { budget, bytes: 0 };
    let mut read = std::pin::pin!(read_frames(&mut body.incoming, limit, held));
    // Most bodies arrived with their headers: only arm the timer when one has to be waited for.
    let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
    let read = match first {
        Poll::Ready(done) => Ok(done),
        Poll::Pending => tokio::time::timeout(state.config.body_read_timeout, read).await,
    };
    match read {
        Ok(Ok(read)) => {
            body.read = true;
            Ok(read)
        }
        Ok(Err(Unread::TooLarge)) => Err(too_large()),
        Ok(Err(Unread::Budget)) => {
            state.metrics.shed.fetch_add(1, Ordering::Relaxed);
            Err(close_connection(retry_later(
                state,
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many request bodies are being read, retry shortly",
            )))
        }
        Ok(Err(Unread::Broken(e))) => Err(close_connection(error(
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

/// Reads frames to the end of the body, charging each to the budget as it arrives. A body that
/// came as one frame (the common case) is returned without a copy.
async fn read_frames<'s>(
    incoming: &mut Source,
    limit: usize,
    mut held: Held<'s>,
) -> Result<ReadBody<'s>, Unread> {
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = incoming.frame().await {
        let Ok(data) = frame.map_err(Unread::Broken)?.into_data() else {
            continue; // trailers
        };
        total += data.len();
        if total > limit {
            return Err(Unread::TooLarge);
        }
        if !held.grow(data.len()) {
            return Err(Unread::Budget);
        }
        match &first {
            None => first = Some(data),
            Some(first) => {
                if joined.is_empty() {
                    joined.reserve(total);
                    joined.extend_from_slice(first);
                }
                joined.extend_from_slice(&data);
            }
        }
    }
    let bytes = if joined.is_empty() {
        first.unwrap_or_default()
    } else {
        joined.freeze()
    };
    Ok(ReadBody { bytes, _held: held })
}

/// Parses a JSON body: 400 `malformed_json` for a body that is not JSON; 422 `invalid_code` for
/// JSON of the wrong shape.
// The error is the finished answer to send, built once per refused request.
#[allow(clippy::result_large_err)]
pub(crate) fn parse_json<'a, T: serde::Deserialize<'a>>(
    body: &'a [u8],
    invalid_code: &str,
) -> Result<T, crate::response::Response> {
    serde_json::from_slice(body).map_err(|e| {
        let status = json_error_status(&e);
        let code = if status == StatusCode::BAD_REQUEST {
            "malformed_json"
        } else {
            invalid_code
        };
        crate::response::error(status, code, e)
    })
}

/// `after` (a sequence, default 0) and `limit` (1 to 1000, default 100) of a feed's query; 400
/// `invalid_parameter` for anything else.
#[allow(clippy::result_large_err)]
pub(crate) fn feed_query(
    query: Option<&str>,
    what: &str,
) -> Result<(u64, usize), crate::response::Response> {
    let (mut after, mut limit) = (0, 100);
    for (key, value) in query_pairs(query) {
        match key {
            "after" => match value.parse::<u64>() {
                Ok(n) => after = n,
                Err(_) => {
                    return Err(crate::response::bad_parameter(
                        "after",
                        &format!("after is {what} sequence number"),
                    ))
                }
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => limit = n,
                _ => {
                    return Err(crate::response::bad_parameter(
                        "limit",
                        "limit is 1 to 1000",
                    ))
                }
            },
            _ => {
                return Err(crate::response::bad_parameter(
                    key,
                    "known parameters: after, limit",
                ))
            }
        }
    }
    Ok((after, limit))
}

/// 400 for a body that is not JSON; 422 for JSON of the wrong shape (missing or unknown field,
/// wrong type).
pub(crate) fn json_error_status(e: &serde_json::Error) -> StatusCode {
    match e.classify() {
        serde_json::error::Category::Data => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 time in a body field (`field` names it in
/// the message).
pub(crate) fn parse_time(field: &str, text: &str) -> Result<u64, String> {
    let at = humantime::parse_rfc3339(text).map_err(|e| {
        format!("invalid {field}: must be RFC 3339 in UTC, e.g. 2027-01-31T23:59:59Z ({e})")
    })?;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("invalid {field}: must be after 1970"))?
        .as_millis();
    u64::try_from(ms).map_err(|_| format!("invalid {field}: too far away"))
}

/// The `key=value` pairs of a query string (a key without `=` has the value "").
pub(crate) fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_grow_takes_nothing_even_for_a_moment() {
        // One thread keeps asking for more than is left; the other's small requests always fit
        // and must never be refused because of it.
        let budget = BodyBudget::new(100);
        let mut resident = Held {
            budget: &budget,
            bytes: 0,
        };
        assert!(resident.grow(50));
        let stop = std::sync::atomic::AtomicBool::new(false);
        let refused = std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let mut big = Held {
                        budget: &budget,
                        bytes: 0,
                    };
                    assert!(!big.grow(60), "50 + 60 is over 100");
                }
            });
            let refused = (0..500_000)
                .filter(|_| {
                    let mut small = Held {
                        budget: &budget,
                        bytes: 0,
                    };
                    !small.grow(10)
                })
                .count();
            stop.store(true, Ordering::Relaxed);
            refused
        });
        assert_eq!(refused, 0, "small grows refused though 50 + 10 fits in 100");
        drop(resident);
        assert_eq!(budget.held(), 0, "every grow given back");
    }
}
