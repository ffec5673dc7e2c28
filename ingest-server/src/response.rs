//! Building answers: the JSON and NDJSON content types, the error shape every non-2xx answer
//! shares, `Retry-After` on what the caller should retry, cacheable reads (ETag, 304) and
//! timestamps as the API writes them.

use std::fmt::Display;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::StatusCode;

use crate::state::State;

/// Every answer the handlers give.
pub(crate) type Response = hyper::Response<Full<Bytes>>;

pub(crate) const JSON: &str = "application/json";
pub(crate) const NDJSON: &str = "application/x-ndjson";

/// A JSON answer with this status and body.
pub(crate) fn json(status: StatusCode, body: impl Into<Bytes>) -> Response {
    let mut response = hyper::Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// A 200 NDJSON answer with this body.
pub(crate) fn ndjson(body: impl Into<Bytes>) -> Response {
    let mut response = hyper::Response::new(Full::new(body.into()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    response
}

/// The error shape of every non-2xx answer: `{"error":{"code":...,"message":...}}`.
pub(crate) fn error(status: StatusCode, code: &str, message: impl Display) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message.to_string()}});
    json(status, body.to_string())
}

/// 400 `invalid_parameter` for a query parameter.
pub(crate) fn bad_parameter(name: &str, message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
        format_args!("{name}: {message}"),
    )
}

/// An error the caller should retry (503, 429): the error shape plus `Retry-After`.
pub(crate) fn retry_later(
    state: &State,
    status: StatusCode,
    code: &str,
    message: impl Display,
) -> Response {
    retry_after(state.config.retry_after_s, status, code, message)
}

/// [`retry_later`] with the seconds given (a standby's front has no `State`).
pub(crate) fn retry_after(
    seconds: u32,
    status: StatusCode,
    code: &str,
    message: impl Display,
) -> Response {
    let mut response = error(status, code, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// The `Connection` value of an answer after which the server closes.
pub(crate) const CLOSE: HeaderValue = HeaderValue::from_static("close");

/// The answer with `Connection: close`.
pub(crate) fn close_connection(mut response: Response) -> Response {
    response.headers_mut().insert(header::CONNECTION, CLOSE);
    response
}

/// 503 `overloaded`: the in-flight limit is reached.
pub(crate) fn shed(state: &State) -> Response {
    retry_later(
        state,
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "too many requests in flight, retry shortly",
    )
}

/// 429 `rate_limited`: the API key is over its signature rate.
pub(crate) fn rate_limited(state: &State) -> Response {
    retry_later(
        state,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "this API key is over its signature rate, retry shortly",
    )
}

/// The quoted ETag of a rendered body: its XXH3 in hex.
pub(crate) fn etag_of(body: &[u8]) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(body)))
        .unwrap_or_else(|_| unreachable!("hex digits in quotes are a valid header value"))
}

/// A public read's answer: 200 with `body`, or 304 without one when `If-None-Match` names
/// `etag` (or is `*`); either way with the ETag and `Cache-Control: public, max-age=1`.
pub(crate) fn cacheable(request: &HeaderMap, body: Bytes, etag: HeaderValue) -> Response {
    let tag = etag.as_bytes();
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|candidate| candidate.as_bytes() == tag || candidate == "*");
    let mut response = if fresh {
        let mut response = hyper::Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        json(StatusCode::OK, body)
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=1"),
    );
    response
}

/// A time in milliseconds since the Unix epoch as the API writes it: RFC 3339 in UTC, to the
/// millisecond.
pub(crate) fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A body as the service sends it: whole (every route but one) or streamed (the event stream).
pub(crate) enum Reply {
    Full(Full<Bytes>),
    Stream(crate::events::Stream),
}

impl hyper::body::Body for Reply {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Reply::Full(full) => std::pin::Pin::new(full).poll_frame(cx),
            Reply::Stream(stream) => stream
                .poll_data(cx)
                .map(|data| data.map(|bytes| Ok(hyper::body::Frame::data(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Reply::Full(full) => full.is_end_stream(),
            Reply::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Reply::Full(full) => full.size_hint(),
            Reply::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}
