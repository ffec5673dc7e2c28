//! The events feed as the server shows it: one JSON rendering of an event shared by
//! `GET /v1/events`, the live stream and webhook deliveries, and the hub that renders each new
//! event once and hands it to every stream reader.
//!
//! The hub is one task. It waits on the engine's event watch, reads the new events from the
//! engine's memory and sends each, rendered as a Server-Sent Events frame, down a
//! `tokio::sync::broadcast` channel. The channel's ring (`--sse-buffer` events) is the only
//! buffer readers share; a reader that falls further behind than the ring is told so and
//! disconnected (see `handlers::events`), so memory stays bounded whatever the readers do.

use std::sync::Arc;

use bytes::Bytes;
use engine::{Engine, Event, EventData};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::response::rfc3339;

/// An event ready to send: its sequence and its SSE frame.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub seq: u64,
    pub bytes: Bytes,
}

/// An event as JSON: `seq`, `type`, `petition`, `at`, and what the type adds (`threshold`;
/// `reason`; `threshold` and `due_at`; `summary` and `url`).
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
}

impl<'a> EventJson<'a> {
    pub fn new(event: &'a Event) -> EventJson<'a> {
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
        }
        json
    }
}

/// The event as one line of JSON.
pub(crate) fn to_json(event: &Event) -> String {
    serde_json::to_string(&EventJson::new(event)).unwrap_or_default()
}

/// The event as a Server-Sent Events frame: `id`, `event` (its type) and `data` (its JSON, one
/// line).
pub(crate) fn sse_frame(event: &Event) -> Frame {
    let json = to_json(event);
    let text = format!(
        "id: {}\nevent: {}\ndata: {json}\n\n",
        event.seq,
        event.kind().as_str()
    );
    Frame {
        seq: event.seq,
        bytes: Bytes::from(text),
    }
}

/// The hub's side: where new frames go.
pub(crate) struct Hub {
    sender: broadcast::Sender<Arc<Frame>>,
}

impl Hub {
    /// A hub whose ring holds `buffer` frames.
    pub fn new(buffer: usize) -> Hub {
        let (sender, _) = broadcast::channel(buffer.max(1));
        Hub { sender }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Frame>> {
        self.sender.subscribe()
    }

    /// Renders and sends every new event, once each, until the engine closes or `stop` is set.
    pub async fn run(&self, engine: Engine, mut stop: tokio::sync::watch::Receiver<bool>) {
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
                    let _ = self.sender.send(Arc::new(sse_frame(event)));
                }
            }
        }
    }
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
            to_json(&event(EventData::ThresholdCrossed { threshold: 10 })),
            r#"{"seq":7,"type":"threshold_crossed","petition":"p","at":"2025-11-30T08:00:00.000Z","threshold":10}"#
        );
        assert_eq!(
            to_json(&event(EventData::PetitionClosed {
                reason: CloseReason::Deadline
            })),
            r#"{"seq":7,"type":"petition_closed","petition":"p","at":"2025-11-30T08:00:00.000Z","reason":"deadline"}"#
        );
        assert_eq!(
            to_json(&event(EventData::ResponseDue {
                threshold: 10,
                due_at_ms: 1_764_489_600_000
            })),
            r#"{"seq":7,"type":"response_due","petition":"p","at":"2025-11-30T08:00:00.000Z","threshold":10,"due_at":"2025-11-30T08:00:00.000Z"}"#
        );
        assert_eq!(
            to_json(&event(EventData::Responded {
                summary: "a \"quoted\"\nline".into(),
                url: None
            })),
            r#"{"seq":7,"type":"responded","petition":"p","at":"2025-11-30T08:00:00.000Z","summary":"a \"quoted\"\nline","url":null}"#
        );
        let frame = sse_frame(&event(EventData::ThresholdRegressed { threshold: 3 }));
        let text = std::str::from_utf8(&frame.bytes).expect("utf-8");
        assert!(text.starts_with("id: 7\nevent: threshold_regressed\ndata: {"));
        assert!(text.ends_with("}\n\n"));
        assert_eq!(text.matches('\n').count(), 4, "the data is one line");
    }
}
