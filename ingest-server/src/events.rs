//! The events feed as the server shows it: one JSON rendering of an event shared by
//! `GET /v1/events`, the live stream and webhook deliveries, and the hub that renders each new
//! event once and hands it to every stream reader.
//!
//! The hub is one task. It waits on the engine's event watch, reads the new events from the
//! engine's memory and sends each, rendered as a Server-Sent Events frame, down a
//! `tokio::sync::broadcast` channel. The channel's ring (`--sse-buffer` events) is the only
//! buffer readers share; a reader that falls further behind than the ring is told so and
//! disconnected, so memory stays bounded whatever the readers do.
//!
//! Each reader is a [`Stream`]: the body of its answer, with no task of its own. hyper asks it
//! for data whenever the reader's socket took what it had; it answers with the backlog (read
//! from the engine on the blocking pool), then with the frames the hub sent, as many as are
//! ready in one piece and at most one write per `--sse-linger` (frames that come sooner wait in
//! the ring and go out together), then heartbeats. A reader's socket that takes nothing means it is not
//! asked, and the connection's watchdog closes it after `--sse-stall-timeout`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use engine::{Engine, Event, EventData};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::task::JoinHandle;

use crate::response::rfc3339;
use crate::state::State;
use crate::watchdog::Clock;

/// Events read from the engine per backlog step.
const BACKLOG_PAGE: usize = 256;
/// Most bytes one answer to hyper gathers from the ring.
const GATHER_BYTES_MAX: usize = 64 * 1024;

/// An event ready to send: its sequence and its SSE frame, as anyone may read it and, when
/// that differs (a `source_alert` names its source only to administrators), in full.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub seq: u64,
    pub bytes: Bytes,
    pub full: Option<Bytes>,
}

impl Frame {
    /// The frame as a reader sees it: in full for an administrator.
    pub fn for_reader(&self, admin: bool) -> &Bytes {
        match &self.full {
            Some(full) if admin => full,
            _ => &self.bytes,
        }
    }
}

/// An event as JSON: `seq`, `type`, `petition`, `at`, and what the type adds (`threshold`;
/// `reason`; `threshold` and `due_at`; `summary` and `url`; `source_kind`, `count`, `threshold`
/// and, in full only, `source`).
#[derive(Serialize)]
pub(crate) struct EventJson<'a> {
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub petition: &'a str,
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<&'a str>,
    /// Present (possibly null) on `responded` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl<'a> EventJson<'a> {
    /// The event's JSON; `full`: with what only administrators see (a source alert's source).
    pub fn new(event: &'a Event, full: bool) -> EventJson<'a> {
        let mut json = EventJson {
            seq: event.seq,
            kind: event.kind().as_str(),
            petition: &event.petition,
            at: rfc3339(event.at_ms),
            threshold: None,
            reason: None,
            due_at: None,
            summary: None,
            url: None,
            source_kind: None,
            source: None,
            count: None,
        };
        match &event.data {
            EventData::ThresholdCrossed { threshold }
            | EventData::ThresholdRegressed { threshold } => json.threshold = Some(*threshold),
            EventData::PetitionClosed { reason } => json.reason = Some(reason.as_str()),
            EventData::ResponseDue {
                threshold,
                due_at_ms,
            } => {
                json.threshold = Some(*threshold);
                json.due_at = Some(rfc3339(*due_at_ms));
            }
            EventData::Responded { summary, url } => {
                json.summary = Some(summary);
                json.url = Some(url.as_deref());
            }
            EventData::SourceAlert {
                source,
                count,
                threshold,
            } => {
                json.source_kind = Some(source.kind.as_str());
                json.source = full.then_some(source.value.as_str());
                json.count = Some(*count);
                json.threshold = Some(*threshold);
            }
        }
        json
    }
}

/// The event as one line of JSON (`full`: see [`EventJson::new`]).
pub(crate) fn to_json(event: &Event, full: bool) -> String {
    serde_json::to_string(&EventJson::new(event, full)).unwrap_or_default()
}

/// The event as a Server-Sent Events frame: `id`, `event` (its type) and `data` (its JSON, one
/// line), for anyone and, if that differs, in full.
pub(crate) fn sse_frame(event: &Event) -> Frame {
    let text = |full| {
        Bytes::from(format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            event.seq,
            event.kind().as_str(),
            to_json(event, full)
        ))
    };
    Frame {
        seq: event.seq,
        bytes: text(false),
        full: matches!(event.data, EventData::SourceAlert { .. }).then(|| text(true)),
    }
}

/// The hub's side: where new frames go. The sender is dropped when the server stops, which
/// ends every stream.
pub(crate) struct Hub {
    sender: Mutex<Option<broadcast::Sender<Arc<Frame>>>>,
    /// A receiver kept only to hand out new ones after the sender is gone (they see the end).
    ended: Mutex<Option<broadcast::Receiver<Arc<Frame>>>>,
}

impl Hub {
    /// A hub whose ring holds `buffer` frames.
    pub fn new(buffer: usize) -> Hub {
        let (sender, _) = broadcast::channel(buffer.max(1));
        Hub {
            sender: Mutex::new(Some(sender)),
            ended: Mutex::new(None),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Frame>> {
        match &*self.sender.lock() {
            Some(sender) => sender.subscribe(),
            None => match &*self.ended.lock() {
                Some(ended) => ended.resubscribe(),
                None => broadcast::channel(1).1,
            },
        }
    }

    /// Renders and sends every new event, once each, until the engine closes or `stop` is set;
    /// then drops the sender, which ends every stream.
    pub async fn run(&self, engine: Engine, mut stop: tokio::sync::watch::Receiver<bool>) {
        self.relay(engine, &mut stop).await;
        if let Some(sender) = self.sender.lock().take() {
            let receiver = sender.subscribe();
            drop(sender);
            *self.ended.lock() = Some(receiver);
        }
    }

    async fn relay(&self, engine: Engine, stop: &mut tokio::sync::watch::Receiver<bool>) {
        let Some(sender) = self.sender.lock().clone() else {
            return;
        };
        let mut watch = engine.watch_events();
        let mut sent = *watch.borrow_and_update();
        loop {
            tokio::select! {
                changed = watch.changed() => if changed.is_err() { return },
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            loop {
                // The newest events are in the engine's memory: a short lock, no disk.
                let events = engine.events_after(sent, 1024);
                let Some(last) = events.last() else {
                    break;
                };
                sent = last.seq;
                for event in &events {
                    // No receiver is not an error: nobody is watching.
                    let _ = sender.send(Arc::new(sse_frame(event)));
                }
            }
        }
    }
}

/// A `recv` on the hub's ring that gives the receiver back with what it received.
type Recv = Pin<
    Box<
        dyn Future<
                Output = (
                    Result<Arc<Frame>, RecvError>,
                    broadcast::Receiver<Arc<Frame>>,
                ),
            > + Send,
    >,
>;

fn recv(mut receiver: broadcast::Receiver<Arc<Frame>>) -> Recv {
    Box::pin(async move { (receiver.recv().await, receiver) })
}

/// What [`Stream::gather`] found.
enum Gathered {
    Ok,
    /// The ring skipped ahead of the stream.
    Gap,
    /// The ring lapped the reader.
    Lagged,
}

/// Where a stream is.
enum Phase {
    /// Reading the events after `after` from the engine.
    Backlog(JoinHandle<Vec<Event>>),
    /// Waiting on the hub's ring.
    Live(Recv),
    /// Told the reader it fell behind, or the server stops: nothing more.
    Done,
}

/// One reader's event stream: the body of its answer (see the module's doc).
pub(crate) struct Stream {
    state: Arc<State>,
    clock: Arc<Clock>,
    /// The last event sent.
    after: u64,
    /// Whether the reader presented an administrator's key (sees events in full).
    admin: bool,
    phase: Phase,
    /// The hub's receiver, while no `recv` holds it.
    receiver: Option<broadcast::Receiver<Arc<Frame>>>,
    heartbeat: tokio::time::Interval,
    /// Frames gathered and not yet handed to hyper.
    out: BytesMut,
    /// When data last went out.
    written_at: Option<tokio::time::Instant>,
    /// While set, the stream lingers until it fires (`--sse-linger` after the last write), so
    /// that a busy feed goes out in fewer, larger writes.
    hold: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Stream {
    /// A stream of the events after `after`. The receiver must be subscribed before the
    /// backlog is read, so that nothing falls between the two.
    pub fn new(
        state: Arc<State>,
        clock: Arc<Clock>,
        after: u64,
        admin: bool,
        receiver: broadcast::Receiver<Arc<Frame>>,
    ) -> Stream {
        let mut heartbeat = tokio::time::interval(state.config.sse_heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.reset();
        clock.stream_polled();
        let phase = Phase::Backlog(backlog(&state, after));
        Stream {
            state,
            clock,
            after,
            admin,
            phase,
            receiver: Some(receiver),
            heartbeat,
            out: BytesMut::new(),
            written_at: None,
            hold: None,
        }
    }

    /// The next data, as hyper's `poll_frame` wants it.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.clock.stream_polled();
        loop {
            match &mut self.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::Backlog(reading) => {
                    let events = match std::task::ready!(Pin::new(reading).poll(cx)) {
                        Ok(events) => events,
                        Err(_) => {
                            self.phase = Phase::Done;
                            continue;
                        }
                    };
                    let Some(last) = events.last().map(|e| e.seq) else {
                        let receiver = self.receiver.take();
                        self.phase = match receiver {
                            Some(receiver) => Phase::Live(recv(receiver)),
                            None => Phase::Done,
                        };
                        continue;
                    };
                    // After what was gathered before a gap, if anything.
                    let mut out = std::mem::take(&mut self.out);
                    for event in &events {
                        out.extend_from_slice(sse_frame(event).for_reader(self.admin));
                    }
                    self.after = last;
                    self.phase = Phase::Backlog(backlog(&self.state, last));
                    self.heartbeat.reset();
                    return Poll::Ready(Some(out.freeze()));
                }
                Phase::Live(receiving) => {
                    if let Some(hold) = &mut self.hold {
                        // Lingering: what arrives meanwhile waits in the ring, to go out in
                        // the same write.
                        std::task::ready!(hold.as_mut().poll(cx));
                        self.hold = None;
                    }
                    let polled = match receiving.as_mut().poll(cx) {
                        Poll::Ready(polled) => Some(polled),
                        Poll::Pending => None,
                    };
                    let received = polled.is_some();
                    if let Some((received, mut receiver)) = polled {
                        let frame = match received {
                            Ok(frame) => frame,
                            Err(RecvError::Lagged(_)) => {
                                let out = std::mem::take(&mut self.out);
                                return Poll::Ready(Some(self.lagged_after(out)));
                            }
                            Err(RecvError::Closed) => {
                                self.phase = Phase::Done;
                                let out = std::mem::take(&mut self.out);
                                if out.is_empty() {
                                    continue;
                                }
                                return Poll::Ready(Some(out.freeze()));
                            }
                        };
                        match self.gather(frame, &mut receiver) {
                            Gathered::Lagged => {
                                let out = std::mem::take(&mut self.out);
                                return Poll::Ready(Some(self.lagged_after(out)));
                            }
                            Gathered::Gap => {
                                self.receiver = Some(receiver);
                                self.phase = Phase::Backlog(backlog(&self.state, self.after));
                            }
                            Gathered::Ok => self.phase = Phase::Live(recv(receiver)),
                        }
                    }
                    if self.out.is_empty() {
                        if received {
                            // Something came (a frame already sent, or a gap): look again.
                            continue;
                        }
                        if self.heartbeat.poll_tick(cx).is_ready() {
                            return Poll::Ready(Some(Bytes::from_static(b": heartbeat\n\n")));
                        }
                        // The ring was polled above: its next frame wakes this stream.
                        return Poll::Pending;
                    }
                    let now = tokio::time::Instant::now();
                    let due = self
                        .written_at
                        .map_or(now, |at| at + self.state.config.sse_linger);
                    if now < due && self.out.len() < GATHER_BYTES_MAX {
                        self.hold = Some(Box::pin(tokio::time::sleep_until(due)));
                        continue;
                    }
                    self.written_at = Some(now);
                    self.heartbeat.reset();
                    return Poll::Ready(Some(std::mem::take(&mut self.out).freeze()));
                }
            }
        }
    }

    /// Appends `frame` and every frame ready after it to the pending output, in order,
    /// skipping what was sent.
    fn gather(
        &mut self,
        frame: Arc<Frame>,
        receiver: &mut broadcast::Receiver<Arc<Frame>>,
    ) -> Gathered {
        let mut next = Some(frame);
        while let Some(frame) = next.take() {
            if frame.seq > self.after + 1 {
                // The ring holds every frame since the subscription, so this is not expected;
                // the engine has the events between.
                return Gathered::Gap;
            }
            if frame.seq == self.after + 1 {
                self.out.extend_from_slice(frame.for_reader(self.admin));
                self.after = frame.seq;
            }
            if self.out.len() >= GATHER_BYTES_MAX {
                break;
            }
            match receiver.try_recv() {
                Ok(frame) => next = Some(frame),
                Err(TryRecvError::Lagged(_)) => return Gathered::Lagged,
                Err(TryRecvError::Empty | TryRecvError::Closed) => {}
            }
        }
        Gathered::Ok
    }

    /// `out`, then the final `lagged` event: where the reader resumes.
    fn lagged_after(&mut self, mut out: BytesMut) -> Bytes {
        self.state
            .metrics
            .stream_lagged
            .fetch_add(1, Ordering::Relaxed);
        self.phase = Phase::Done;
        out.extend_from_slice(
            format!(
                "event: lagged\ndata: {{\"resume_after\":{}}}\n\n",
                self.after
            )
            .as_bytes(),
        );
        out.freeze()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.clock.stream_ended();
        self.clock.request_done();
        self.state
            .metrics
            .stream_readers
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads the engine's events after `after` on the blocking pool (older ones come from the
/// store).
fn backlog(state: &State, after: u64) -> JoinHandle<Vec<Event>> {
    let engine = state.engine.clone();
    tokio::task::spawn_blocking(move || engine.events_after(after, BACKLOG_PAGE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::CloseReason;

    fn event(data: EventData) -> Event {
        Event {
            seq: 7,
            petition: "p".into(),
            at_ms: 1_764_489_600_000,
            data,
        }
    }

    #[test]
    fn each_kind_renders_what_it_adds() {
        assert_eq!(
            to_json(&event(EventData::ThresholdCrossed { threshold: 10 }), false),
            r#"{"seq":7,"type":"threshold_crossed","petition":"p","at":"2025-11-30T08:00:00.000Z","threshold":10}"#
        );
        assert_eq!(
            to_json(
                &event(EventData::PetitionClosed {
                    reason: CloseReason::Deadline
                }),
                false
            ),
            r#"{"seq":7,"type":"petition_closed","petition":"p","at":"2025-11-30T08:00:00.000Z","reason":"deadline"}"#
        );
        assert_eq!(
            to_json(
                &event(EventData::ResponseDue {
                    threshold: 10,
                    due_at_ms: 1_764_489_600_000
                }),
                false
            ),
            r#"{"seq":7,"type":"response_due","petition":"p","at":"2025-11-30T08:00:00.000Z","threshold":10,"due_at":"2025-11-30T08:00:00.000Z"}"#
        );
        assert_eq!(
            to_json(
                &event(EventData::Responded {
                    summary: "a \"quoted\"\nline".into(),
                    url: None
                }),
                false
            ),
            r#"{"seq":7,"type":"responded","petition":"p","at":"2025-11-30T08:00:00.000Z","summary":"a \"quoted\"\nline","url":null}"#
        );
        let frame = sse_frame(&event(EventData::ThresholdRegressed { threshold: 3 }));
        let text = std::str::from_utf8(&frame.bytes).expect("utf-8");
        assert!(text.starts_with("id: 7\nevent: threshold_regressed\ndata: {"));
        assert!(text.ends_with("}\n\n"));
        assert_eq!(text.matches('\n').count(), 4, "the data is one line");
        assert!(frame.full.is_none(), "the same for every reader");
    }

    #[test]
    fn a_source_alert_names_its_source_to_administrators_only() {
        let alert = event(EventData::SourceAlert {
            source: engine::Source {
                kind: engine::SourceKind::Network,
                value: "203.0.113.0/24".into(),
            },
            count: 100,
            threshold: 100,
        });
        let public = r#"{"seq":7,"type":"source_alert","petition":"p","at":"2025-11-30T08:00:00.000Z","threshold":100,"source_kind":"network","count":100}"#;
        let full = r#"{"seq":7,"type":"source_alert","petition":"p","at":"2025-11-30T08:00:00.000Z","threshold":100,"source_kind":"network","source":"203.0.113.0/24","count":100}"#;
        assert_eq!(to_json(&alert, false), public);
        assert_eq!(to_json(&alert, true), full);
        let frame = sse_frame(&alert);
        let text = |admin| {
            std::str::from_utf8(frame.for_reader(admin))
                .expect("utf-8")
                .to_owned()
        };
        assert!(text(false).contains(public) && !text(false).contains("203.0.113"));
        assert!(text(true).contains(full));
    }
}
