//! The operator console: `GET /console`, one page embedded in the binary that reads the public
//! API (and, given an admin key, the admin one) from the browser; `GET /` redirects to it.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::StatusCode;

use crate::response::Response;

/// The page: markup, style and script in one file, so the page makes no other request than the
/// API calls its script makes to this server.
const PAGE: &str = include_str!("../console/console.html");

/// `GET /console`: the page.
pub(crate) fn page() -> Response {
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /`: 307 to the console.
pub(crate) fn root() -> Response {
    let mut response = hyper::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/console"));
    response
}
