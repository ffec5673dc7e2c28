//! Events: `GET /v1/events` (pages of the durable feed) and `GET /v1/events/stream` (the feed
//! live, as Server-Sent Events).
//!
//! A stream reader gets the events after its `Last-Event-ID` (or `?after=`; without either,
//! only new events), first the backlog from the engine, then the hub's frames, skipping what it
//! sent already: it subscribes to the hub before it reads the backlog, so nothing falls between
//! the two (`events::Stream`). A reader holds nothing of its own but its place in the hub's
//! ring, which is bounded; one further behind than the ring gets a final `lagged` event naming
//! where to resume, and its stream ends. A reader whose socket takes nothing for
//! `--sse-stall-timeout` is closed by its connection's watchdog. Heartbeats (`: heartbeat`
//! comments) keep idle streams and the proxies in front of them alive.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::StatusCode;
use serde::Serialize;

use super::blocking;
use crate::events::{EventJson, Stream};
use crate::request::{feed_query, query_pairs};
use crate::response::{bad_parameter, error, json, retry_later, Reply, Response};
use crate::state::State;
use crate::watchdog::Clock;

/// `GET /v1/events?after=SEQ&limit=N`: up to `limit` events after `after`, oldest first.
pub(crate) async fn list(state: &State, headers: &HeaderMap, query: Option<&str>) -> Response {
    let admin = is_admin(state, headers);
    let (after, limit) = match feed_query(query, "an event") {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    // Memory holds the newest events; an older page is read from the store.
    let engine = state.engine.clone();
    let events = match blocking(move || engine.events_after(after, limit)).await {
        Ok(events) => events,
        Err(response) => return response,
    };
    #[derive(Serialize)]
    struct Feed<'a> {
        events: Vec<EventJson<'a>>,
        next_after: u64,
        /// The newest event's sequence: a reader with `next_after` below it has more to read.
        last: u64,
    }
    let feed = Feed {
        next_after: events.last().map_or(after, |e| e.seq),
        last: state.engine.last_event_seq(),
        events: events.iter().map(|e| EventJson::new(e, admin)).collect(),
    };
    json(
        StatusCode::OK,
        serde_json::to_string(&feed).unwrap_or_default(),
    )
}

/// `GET /v1/events/stream`: the feed as Server-Sent Events.
pub(crate) fn stream(
    state: &Arc<State>,
    clock: &Arc<Clock>,
    headers: &HeaderMap,
    query: Option<&str>,
) -> hyper::Response<Reply> {
    let mut after = None;
    for (key, value) in query_pairs(query) {
        match key {
            "after" => match value.parse::<u64>() {
                Ok(n) => after = Some(n),
                Err(_) => {
                    return bad_parameter("after", "after is an event sequence number")
                        .map(Reply::Full)
                }
            },
            _ => return bad_parameter(key, "known parameters: after").map(Reply::Full),
        }
    }
    if let Some(value) = headers.get("last-event-id") {
        match value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(n) => after = Some(n),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    "Last-Event-ID: an event sequence number",
                )
                .map(Reply::Full)
            }
        }
    }
    if state.draining.load(Ordering::Acquire) {
        return retry_later(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        )
        .map(Reply::Full);
    }
    let readers = state.metrics.stream_readers.fetch_add(1, Ordering::AcqRel) + 1;
    if readers > state.config.sse_readers_max {
        state.metrics.stream_readers.fetch_sub(1, Ordering::AcqRel);
        return retry_later(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_readers",
            format_args!(
                "{} event stream readers are connected, the most this server takes",
                state.config.sse_readers_max
            ),
        )
        .map(Reply::Full);
    }
    // Subscribe before the backlog is read: what is published meanwhile is in the ring.
    let live = state.hub.subscribe();
    let after = after.unwrap_or_else(|| state.engine.last_event_seq());
    let admin = is_admin(state, headers);
    let stream = Stream::new(Arc::clone(state), Arc::clone(clock), after, admin, live);
    let mut response = hyper::Response::new(Reply::Stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies (nginx) must not hold the stream back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Whether the request carries an administrator's key (or the server is open): the feed is
/// public, and such a reader also sees what a `source_alert` names. Any other key, or a wrong
/// one, reads what everyone reads.
fn is_admin(state: &State, headers: &HeaderMap) -> bool {
    state
        .keys
        .authorize(
            headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
            crate::auth::Role::Admin,
        )
        .is_ok()
}
