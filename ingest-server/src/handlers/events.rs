//! Events: `GET /v1/events` (pages of the durable feed) and `GET /v1/events/stream` (the feed
//! live, as Server-Sent Events).
//!
//! A stream reader gets the events after its `Last-Event-ID` (or `?after=`; without either,
//! only new events), first the backlog from the engine, then the hub's frames, skipping what it
//! sent already: it subscribes to the hub before it reads the backlog, so nothing falls between
//! the two. Each reader holds at most [`READER_FRAMES`] frames of its own; the ring the hub
//! shares is bounded too. A reader further behind than the ring gets a final `lagged` event
//! naming where to resume, and its stream ends. A reader whose socket accepts nothing for
//! `--sse-stall-timeout` is dropped. Heartbeats (`: heartbeat` comments) keep idle streams
//! and the proxies in front of them alive.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::StatusCode;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use super::blocking;
use crate::events::{self, EventJson, Frame};
use crate::request::query_pairs;
use crate::response::{bad_parameter, error, json, retry_later, Reply, Response, SseBody};
use crate::state::State;
use crate::watchdog::Clock;

/// Frames one reader may have queued between its task and its socket.
const READER_FRAMES: usize = 64;
/// Events read from the engine per backlog step.
const BACKLOG_PAGE: usize = 256;

/// `GET /v1/events?after=SEQ&limit=N`: up to `limit` events after `after`, oldest first.
pub(crate) async fn list(state: &State, query: Option<&str>) -> Response {
    let mut after = 0;
    let mut limit = 100;
    for (key, value) in query_pairs(query) {
        match key {
            "after" => match value.parse::<u64>() {
                Ok(n) => after = n,
                Err(_) => return bad_parameter("after", "after is an event sequence number"),
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => limit = n,
                _ => return bad_parameter("limit", "limit is 1 to 1000"),
            },
            _ => return bad_parameter(key, "known parameters: after, limit"),
        }
    }
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
        events: events.iter().map(EventJson::new).collect(),
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
    let (sender, receiver) = mpsc::channel(READER_FRAMES);
    tokio::spawn(pump(Arc::clone(state), after, sender, live));
    let mut response = hyper::Response::new(Reply::Stream(SseBody::new(receiver, clock.clone())));
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

/// Why a reader's stream ended.
enum End {
    /// The reader went away, the server is stopping, or the socket stalled.
    Gone,
}

/// Feeds one reader: the backlog after `after`, then the hub's frames, with heartbeats.
async fn pump(
    state: Arc<State>,
    mut after: u64,
    sender: mpsc::Sender<Bytes>,
    mut live: broadcast::Receiver<Arc<Frame>>,
) {
    let _reader = ReaderSlot(Arc::clone(&state));
    let mut stop = state.stop_streams.subscribe();
    let _ = backlog(&state, &mut after, &sender, &mut stop).await;
    let mut heartbeat = tokio::time::interval(state.config.sse_heartbeat);
    heartbeat.tick().await;
    loop {
        let frame = tokio::select! {
            received = live.recv() => match received {
                Ok(frame) => frame,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    state.metrics.stream_lagged.fetch_add(1, Ordering::Relaxed);
                    let text = format!(
                        "event: lagged\ndata: {{\"resume_after\":{after}}}\n\n"
                    );
                    let _ = send(&state, &sender, &mut stop, Bytes::from(text)).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = heartbeat.tick() => {
                if send(&state, &sender, &mut stop, Bytes::from_static(b": heartbeat\n\n"))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            _ = stop.changed() => return,
            () = sender.closed() => return,
        };
        if frame.seq <= after {
            continue;
        }
        if frame.seq > after + 1 {
            // Not expected (the ring holds every frame since the subscription), but if the
            // hub skipped ahead, the engine has the events between.
            if backlog(&state, &mut after, &sender, &mut stop)
                .await
                .is_err()
            {
                return;
            }
            if frame.seq <= after {
                continue;
            }
        }
        if send(&state, &sender, &mut stop, frame.bytes.clone())
            .await
            .is_err()
        {
            return;
        }
        after = frame.seq;
    }
}

/// Sends the engine's events after `*after` until none is left, moving `*after`.
async fn backlog(
    state: &State,
    after: &mut u64,
    sender: &mpsc::Sender<Bytes>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), End> {
    loop {
        let engine = state.engine.clone();
        let from = *after;
        let page = blocking(move || engine.events_after(from, BACKLOG_PAGE))
            .await
            .map_err(|_| End::Gone)?;
        let Some(last) = page.last().map(|e| e.seq) else {
            return Ok(());
        };
        for event in &page {
            send(state, sender, stop, events::sse_frame(event).bytes).await?;
        }
        *after = last;
    }
}

/// Queues one frame for the reader's socket, waiting at most the stall timeout for room.
async fn send(
    state: &State,
    sender: &mpsc::Sender<Bytes>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    bytes: Bytes,
) -> Result<(), End> {
    tokio::select! {
        sent = tokio::time::timeout(state.config.sse_stall_timeout, sender.send(bytes)) => match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => {
                state.metrics.stream_stalled.fetch_add(1, Ordering::Relaxed);
                Err(End::Gone)
            }
        },
        _ = stop.changed() => Err(End::Gone),
    }
}

/// A connected reader, counted while its task runs.
struct ReaderSlot(Arc<State>);

impl Drop for ReaderSlot {
    fn drop(&mut self) {
        self.0.metrics.stream_readers.fetch_sub(1, Ordering::AcqRel);
    }
}
