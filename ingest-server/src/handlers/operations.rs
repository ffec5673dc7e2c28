//! Operations: `GET /metrics`, `GET /livez`, `GET /readyz` and `GET /openapi.json`, for
//! monitoring, orchestrators and clients; public, no key needed.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::StatusCode;

use crate::exposition::Format;
use crate::response::{error, json, Response};
use crate::state::State;

/// `GET /livez`: the process answers; no dependency is checked.
pub(crate) fn livez() -> Response {
    json(StatusCode::OK, r#"{"status":"live"}"#)
}

/// `GET /openapi.json`: the OpenAPI 3 description of API v1.
pub(crate) fn openapi() -> Response {
    json(StatusCode::OK, crate::OPENAPI_JSON)
}

/// `GET /metrics`: the Prometheus exposition, OpenMetrics text or the text format 0.0.4 as
/// `Accept` prefers (see `exposition`).
pub(crate) fn metrics(state: &State, headers: &HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let format = Format::negotiate(accept);
    let Ok(mut text) = state.exposition.render(format) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "metrics encoding failed",
        );
    };
    if let Some(cluster) = &state.config.cluster {
        // Before OpenMetrics' closing `# EOF`, if there is one.
        let end = text.rfind("# EOF").unwrap_or(text.len());
        text.insert_str(end, &cluster.metrics_text());
    }
    let mut response = hyper::Response::new(Full::new(Bytes::from(text)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(header::VARY, HeaderValue::from_static("accept"));
    response
}

/// `GET /readyz`: 503 while recovering, draining or the store is failing.
pub(crate) fn readyz(state: &State) -> Response {
    if state.draining.load(Ordering::Acquire) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the server is shutting down",
        );
    }
    if !state.engine.is_ready() {
        let stats = state.engine.stats();
        if let Some(reason) = stats.recovery_error {
            return error(StatusCode::SERVICE_UNAVAILABLE, "recovery_failed", reason);
        }
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "recovering",
            format_args!(
                "rebuilding the dedup index: {} of {} signatures loaded",
                stats.recovery_loaded, stats.recovery_expected
            ),
        );
    }
    let stats = state.engine.stats();
    if !stats.storage_healthy {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            stats
                .last_storage_error
                .unwrap_or_else(|| "the store is failing".to_string()),
        );
    }
    match &state.config.cluster {
        Some(cluster) => json(
            StatusCode::OK,
            format!(r#"{{"status":"ready",{}}}"#, cluster.json_fields()),
        ),
        None => json(StatusCode::OK, r#"{"status":"ready"}"#),
    }
}
