//! Events: what a responding team must learn at once. Thresholds crossed and regressed, petitions
//! closed (by an administrator or by their deadline), responses falling due and responses
//! recorded, numbered from 1 in one engine-wide feed without gaps.
//!
//! An event is written by the single writer in the batch that caused it (the signatures that
//! crossed a threshold, the close, the response), so it exists exactly when its cause does. The
//! feed is also the source of each petition's response tracking ([`Tracking`]): recovery replays
//! the events in order and arrives at the state the writer had.
//!
//! Memory: the newest [`TAIL_MAX`] events stay in memory for readers who keep up (the live
//! stream, webhooks); a reader further behind is served from the store.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::StoreError;
use crate::record::Reader;
use crate::sources::{Source, SourceKind};

/// Events kept in memory (the newest); older ones are read from the store.
pub const TAIL_MAX: usize = 65_536;

/// Most bytes of a response summary.
pub const RESPONSE_SUMMARY_BYTES_MAX: usize = 4_096;
/// Most bytes of a response URL.
pub const RESPONSE_URL_BYTES_MAX: usize = 2_048;

/// The kinds of event, as webhooks filter them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A petition's validated count rose to one of its thresholds.
    ThresholdCrossed,
    /// An invalidation took the count back below a threshold it had reached.
    ThresholdRegressed,
    /// A petition stopped taking signatures: closed by an administrator, or its deadline passed.
    PetitionClosed,
    /// The count crossed the petition's response threshold: an answer is now due.
    ResponseDue,
    /// An administrator recorded the petition's response.
    Responded,
    /// A source (address, network or email domain) reached the alert threshold of signatures
    /// to the petition in an hour.
    SourceAlert,
}

impl EventKind {
    /// Every kind, in the order of their stored codes.
    pub const ALL: [EventKind; 6] = [
        EventKind::ThresholdCrossed,
        EventKind::ThresholdRegressed,
        EventKind::PetitionClosed,
        EventKind::ResponseDue,
        EventKind::Responded,
        EventKind::SourceAlert,
    ];

    /// The name the HTTP API, the stream and webhooks use.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ThresholdCrossed => "threshold_crossed",
            EventKind::ThresholdRegressed => "threshold_regressed",
            EventKind::PetitionClosed => "petition_closed",
            EventKind::ResponseDue => "response_due",
            EventKind::Responded => "responded",
            EventKind::SourceAlert => "source_alert",
        }
    }

    /// The kind named `name` ([`EventKind::as_str`]).
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            EventKind::ThresholdCrossed => 0,
            EventKind::ThresholdRegressed => 1,
            EventKind::PetitionClosed => 2,
            EventKind::ResponseDue => 3,
            EventKind::Responded => 4,
            EventKind::SourceAlert => 5,
        }
    }
}

/// Why a petition closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// An administrator closed it.
    Admin,
    /// Its deadline passed.
    Deadline,
}

impl CloseReason {
    /// `admin` or `deadline`.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Admin => "admin",
            CloseReason::Deadline => "deadline",
        }
    }
}

/// What happened, with what the kind needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventData {
    /// The count rose to `threshold`.
    ThresholdCrossed { threshold: u64 },
    /// The count fell back below `threshold`.
    ThresholdRegressed { threshold: u64 },
    /// The petition closed. For a deadline, the event's time is the deadline.
    PetitionClosed { reason: CloseReason },
    /// The count crossed the response threshold; the answer is due at `due_at_ms`.
    ResponseDue { threshold: u64, due_at_ms: u64 },
    /// The response was recorded.
    Responded {
        summary: String,
        url: Option<String>,
    },
    /// `source` had at least `count` signatures to the petition in the hour: `threshold` or
    /// more. One per (petition, source) per clock hour.
    SourceAlert {
        source: Source,
        count: u64,
        threshold: u64,
    },
}

impl EventData {
    /// Its kind.
    pub fn kind(&self) -> EventKind {
        match self {
            EventData::ThresholdCrossed { .. } => EventKind::ThresholdCrossed,
            EventData::ThresholdRegressed { .. } => EventKind::ThresholdRegressed,
            EventData::PetitionClosed { .. } => EventKind::PetitionClosed,
            EventData::ResponseDue { .. } => EventKind::ResponseDue,
            EventData::Responded { .. } => EventKind::Responded,
            EventData::SourceAlert { .. } => EventKind::SourceAlert,
        }
    }
}

/// One entry of the events feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the feed, from 1, without gaps.
    pub seq: u64,
    /// The petition id.
    pub petition: String,
    /// When it happened (Unix milliseconds).
    pub at_ms: u64,
    /// What happened.
    pub data: EventData,
}

impl Event {
    /// Its kind.
    pub fn kind(&self) -> EventKind {
        self.data.kind()
    }
}

/// A petition's recorded response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// What the answer says, in short.
    pub summary: String,
    /// Where the full answer is published, if anywhere.
    pub url: Option<String>,
    /// When it was recorded (Unix milliseconds).
    pub at_ms: u64,
}

/// Checks a response's summary and URL: a summary of 1 to 4,096 bytes without control
/// characters other than newlines and tabs, and an optional http(s) URL of at most 2,048 bytes
/// without spaces or control characters.
pub(crate) fn check_response(summary: &str, url: Option<&str>) -> Result<(), &'static str> {
    if summary.trim().is_empty() {
        return Err("summary must not be empty");
    }
    if summary.len() > RESPONSE_SUMMARY_BYTES_MAX {
        return Err("summary is at most 4096 bytes");
    }
    if summary
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err("summary must not hold control characters");
    }
    if let Some(url) = url {
        if url.len() > RESPONSE_URL_BYTES_MAX {
            return Err("url is at most 2048 bytes");
        }
        let lower = url.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"));
        if rest.is_none_or(str::is_empty) {
            return Err("url must be an http:// or https:// URL");
        }
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("url must not hold spaces or control characters");
        }
    }
    Ok(())
}

/// An event the writer is about to number and write: the petition's number, when, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewEvent {
    pub petition: u32,
    pub at_ms: u64,
    pub data: EventData,
}

/// The stored form (column family `milestones`, keyed by sequence): petition number (u32), a
/// u64 (the threshold, or 0), the time (u64), the kind's code, then what the kind adds (a close
/// reason byte; a due time; a response's summary and optional URL, each with a u16 length; a
/// source alert's count (u64), source kind and source, with a u16 length).
/// Threshold events are 21 bytes; a 20-byte value (format 2) is a crossing.
pub(crate) fn encode(event: &NewEvent) -> Vec<u8> {
    let (number, extra_len) = match &event.data {
        EventData::ThresholdCrossed { threshold } | EventData::ThresholdRegressed { threshold } => {
            (*threshold, 0)
        }
        EventData::PetitionClosed { .. } => (0, 1),
        EventData::ResponseDue { threshold, .. } => (*threshold, 8),
        EventData::Responded { summary, url } => {
            (0, 5 + summary.len() + url.as_ref().map_or(0, String::len))
        }
        EventData::SourceAlert {
            source, threshold, ..
        } => (*threshold, 11 + source.value.len()),
    };
    let mut out = Vec::with_capacity(21 + extra_len);
    out.extend_from_slice(&event.petition.to_be_bytes());
    out.extend_from_slice(&number.to_be_bytes());
    out.extend_from_slice(&event.at_ms.to_be_bytes());
    out.push(event.data.kind().code());
    match &event.data {
        EventData::ThresholdCrossed { .. } | EventData::ThresholdRegressed { .. } => {}
        EventData::PetitionClosed { reason } => out.push(match reason {
            CloseReason::Admin => 0,
            CloseReason::Deadline => 1,
        }),
        EventData::ResponseDue { due_at_ms, .. } => out.extend_from_slice(&due_at_ms.to_be_bytes()),
        EventData::Responded { summary, url } => {
            // Both are bounded far below u16::MAX (`check_response`).
            out.extend_from_slice(&(summary.len() as u16).to_be_bytes());
            out.extend_from_slice(summary.as_bytes());
            out.push(u8::from(url.is_some()));
            let url = url.as_deref().unwrap_or("");
            out.extend_from_slice(&(url.len() as u16).to_be_bytes());
            out.extend_from_slice(url.as_bytes());
        }
        EventData::SourceAlert { source, count, .. } => {
            out.extend_from_slice(&count.to_be_bytes());
            out.push(source.kind.code());
            // A domain or an address: far below u16::MAX.
            out.extend_from_slice(&(source.value.len() as u16).to_be_bytes());
            out.extend_from_slice(source.value.as_bytes());
        }
    }
    out
}

/// Decodes a stored event ([`encode`]).
pub(crate) fn decode(bytes: &[u8]) -> Result<NewEvent, StoreError> {
    let corrupt = StoreError::Corrupt { what: "event" };
    let mut r = Reader::new(bytes, "event");
    let petition = r.u32()?;
    let number = r.u64()?;
    let at_ms = r.u64()?;
    if bytes.len() == 20 {
        return Ok(NewEvent {
            petition,
            at_ms,
            data: EventData::ThresholdCrossed { threshold: number },
        });
    }
    let data = match r.u8()? {
        0 => EventData::ThresholdCrossed { threshold: number },
        1 => EventData::ThresholdRegressed { threshold: number },
        2 => EventData::PetitionClosed {
            reason: match r.u8()? {
                0 => CloseReason::Admin,
                1 => CloseReason::Deadline,
                _ => return Err(corrupt),
            },
        },
        3 => EventData::ResponseDue {
            threshold: number,
            due_at_ms: r.u64()?,
        },
        4 => {
            let len = usize::from(r.u16()?);
            let summary = r.str(len)?.to_owned();
            let has_url = r.u8()? == 1;
            let len = usize::from(r.u16()?);
            let url = r.str(len)?.to_owned();
            EventData::Responded {
                summary,
                url: has_url.then_some(url),
            }
        }
        5 => {
            let count = r.u64()?;
            let kind =
                SourceKind::from_code(r.u8()?).ok_or(StoreError::Corrupt { what: "event" })?;
            let len = usize::from(r.u16()?);
            let value = r.str(len)?.to_owned();
            EventData::SourceAlert {
                source: Source { kind, value },
                count,
                threshold: number,
            }
        }
        _ => return Err(corrupt),
    };
    r.finish()?;
    Ok(NewEvent {
        petition,
        at_ms,
        data,
    })
}

/// A petition's response tracking, folded from its events in order: whether an answer is due
/// (and since when), the response, and which deadline its last deadline close was for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tracking {
    /// Set by `response_due`; cleared when the count falls back below that threshold before a
    /// response (the petition no longer awaits one).
    pub due: Option<Due>,
    /// The recorded response (the latest, if recorded more than once).
    pub response: Option<Response>,
    /// The deadline (Unix milliseconds) a `petition_closed` by deadline was recorded for.
    pub deadline_closed: Option<u64>,
}

/// An answer falling due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Due {
    pub threshold: u64,
    /// When the count crossed the response threshold.
    pub reached_at_ms: u64,
    pub due_at_ms: u64,
}

impl Tracking {
    /// Applies one of the petition's events, in feed order.
    pub fn apply(&mut self, at_ms: u64, data: &EventData) {
        match data {
            EventData::ResponseDue {
                threshold,
                due_at_ms,
            } => {
                self.due = Some(Due {
                    threshold: *threshold,
                    reached_at_ms: at_ms,
                    due_at_ms: *due_at_ms,
                })
            }
            EventData::ThresholdRegressed { threshold } => {
                if self.response.is_none() && self.due.is_some_and(|d| d.threshold == *threshold) {
                    self.due = None;
                }
            }
            EventData::Responded { summary, url } => {
                self.response = Some(Response {
                    summary: summary.clone(),
                    url: url.clone(),
                    at_ms,
                })
            }
            EventData::PetitionClosed {
                reason: CloseReason::Deadline,
            } => self.deadline_closed = Some(at_ms),
            EventData::PetitionClosed {
                reason: CloseReason::Admin,
            }
            | EventData::ThresholdCrossed { .. }
            | EventData::SourceAlert { .. } => {}
        }
    }

    /// Whether the petition waits for its response.
    pub fn awaiting(&self) -> bool {
        self.due.is_some() && self.response.is_none()
    }
}

/// The newest events in memory, and the means to wait for more.
pub(crate) struct EventLog {
    inner: Mutex<Tail>,
    changed: Condvar,
    /// The last sequence published, for async readers.
    watch: tokio::sync::watch::Sender<u64>,
    /// Whether older events may be read from the store (false in memory mode, which keeps all).
    bounded: bool,
}

struct Tail {
    events: VecDeque<Event>,
    last_seq: u64,
    closed: bool,
}

/// Where a read of the feed is served from.
pub(crate) enum Read {
    /// From memory: the events.
    Memory(Vec<Event>),
    /// From the store: events after this sequence are older than memory holds.
    Store,
}

impl EventLog {
    pub fn new(bounded: bool) -> EventLog {
        EventLog {
            inner: Mutex::new(Tail {
                events: VecDeque::new(),
                last_seq: 0,
                closed: false,
            }),
            changed: Condvar::new(),
            watch: tokio::sync::watch::Sender::new(0),
            bounded,
        }
    }

    /// Appends events whose sequences follow on, and wakes the waiting readers.
    pub fn push(&self, new: impl IntoIterator<Item = Event>) {
        let mut tail = self.inner.lock();
        let before = tail.last_seq;
        for event in new {
            assert_eq!(event.seq, tail.last_seq + 1, "event sequences have no gaps");
            tail.last_seq = event.seq;
            tail.events.push_back(event);
            if self.bounded && tail.events.len() > TAIL_MAX {
                tail.events.pop_front();
            }
        }
        let last = tail.last_seq;
        drop(tail);
        if last != before {
            self.changed.notify_all();
            self.watch.send_replace(last);
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.inner.lock().last_seq
    }

    /// Events after `after`, at most `limit`, if memory holds them.
    pub fn read(&self, after: u64, limit: usize) -> Read {
        let tail = self.inner.lock();
        read_tail(&tail, after, limit)
    }

    /// Like [`EventLog::read`], but waits up to `timeout` for an event after `after` first.
    pub fn wait(&self, after: u64, limit: usize, timeout: Duration) -> Read {
        let deadline = Instant::now() + timeout;
        let mut tail = self.inner.lock();
        while tail.last_seq <= after && !tail.closed {
            if self.changed.wait_until(&mut tail, deadline).timed_out() {
                break;
            }
        }
        read_tail(&tail, after, limit)
    }

    /// Wakes every waiting reader for good: the engine is closing.
    pub fn close(&self) {
        self.inner.lock().closed = true;
        self.changed.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watch.subscribe()
    }
}

fn read_tail(tail: &Tail, after: u64, limit: usize) -> Read {
    let first = tail.events.front().map_or(tail.last_seq + 1, |e| e.seq);
    if after + 1 < first && after < tail.last_seq {
        return Read::Store;
    }
    let start = tail.events.partition_point(|e| e.seq <= after);
    Read::Memory(tail.events.range(start..).take(limit).cloned().collect())
}

/// A subscription to the feed from a position on: [`Subscription::next_timeout`], or as a
/// blocking iterator that ends when the engine closes.
pub struct Subscription {
    pub(crate) shared: std::sync::Arc<crate::shared::Shared>,
    pub(crate) after: u64,
    pub(crate) buffered: VecDeque<Event>,
}

impl Subscription {
    /// The sequence of the last event handed out (where a new subscription would resume).
    pub fn position(&self) -> u64 {
        self.after
    }

    /// The next event, waiting up to `timeout` for one; `None` if none came (or the engine is
    /// closing).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Event> {
        if self.buffered.is_empty() {
            self.buffered = self.shared.wait_events(self.after, 256, timeout).into();
        }
        let event = self.buffered.pop_front()?;
        self.after = event.seq;
        Some(event)
    }
}

impl Iterator for Subscription {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.next_timeout(Duration::from_secs(1)) {
                return Some(event);
            }
            if self.shared.events_closed() {
                return None;
            }
        }
    }
}

/// The events of a store, from `from` on, at most `limit`, with petition numbers made ids.
pub(crate) fn named(
    stored: Vec<(u64, NewEvent)>,
    id_of: impl Fn(u32) -> Option<String>,
) -> Result<Vec<Event>, StoreError> {
    stored
        .into_iter()
        .map(|(seq, e)| {
            let id = id_of(e.petition).ok_or(StoreError::Corrupt {
                what: "event petition",
            })?;
            Ok(Event {
                seq,
                petition: id,
                at_ms: e.at_ms,
                data: e.data,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(data: EventData) {
        let event = NewEvent {
            petition: 7,
            at_ms: 1_700_000_000_000,
            data,
        };
        let bytes = encode(&event);
        assert_eq!(decode(&bytes).expect("decodes"), event);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err() || bytes.len() == 21);
    }

    #[test]
    fn every_kind_round_trips() {
        round_trip(EventData::ThresholdCrossed { threshold: 10 });
        round_trip(EventData::ThresholdRegressed { threshold: 10 });
        round_trip(EventData::PetitionClosed {
            reason: CloseReason::Admin,
        });
        round_trip(EventData::PetitionClosed {
            reason: CloseReason::Deadline,
        });
        round_trip(EventData::ResponseDue {
            threshold: 100_000,
            due_at_ms: 5,
        });
        round_trip(EventData::Responded {
            summary: "We will debate it.".into(),
            url: Some("https://example.org/r".into()),
        });
        round_trip(EventData::Responded {
            summary: "No.".into(),
            url: None,
        });
        for (kind, value) in [
            (SourceKind::Ip, "203.0.113.7"),
            (SourceKind::Network, "2001:db8:1::/48"),
            (SourceKind::EmailDomain, "example.org"),
        ] {
            round_trip(EventData::SourceAlert {
                source: Source {
                    kind,
                    value: value.into(),
                },
                count: 100,
                threshold: 100,
            });
        }
    }

    #[test]
    fn threshold_events_keep_the_milestone_layout() {
        let event = NewEvent {
            petition: 1,
            at_ms: 2,
            data: EventData::ThresholdRegressed { threshold: 3 },
        };
        assert_eq!(encode(&event).len(), 21);
        let mut old = encode(&NewEvent {
            data: EventData::ThresholdCrossed { threshold: 3 },
            ..event
        });
        old.pop();
        assert_eq!(
            decode(&old).expect("format 2").data,
            EventData::ThresholdCrossed { threshold: 3 }
        );
    }

    #[test]
    fn tracking_follows_due_regression_and_response() {
        let mut t = Tracking::default();
        t.apply(
            10,
            &EventData::ResponseDue {
                threshold: 100,
                due_at_ms: 90,
            },
        );
        assert!(t.awaiting());
        t.apply(20, &EventData::ThresholdRegressed { threshold: 50 });
        assert!(t.awaiting(), "another threshold");
        t.apply(30, &EventData::ThresholdRegressed { threshold: 100 });
        assert!(!t.awaiting(), "fell back below the response threshold");
        t.apply(
            40,
            &EventData::ResponseDue {
                threshold: 100,
                due_at_ms: 130,
            },
        );
        t.apply(
            50,
            &EventData::Responded {
                summary: "s".into(),
                url: None,
            },
        );
        assert!(!t.awaiting());
        t.apply(60, &EventData::ThresholdRegressed { threshold: 100 });
        assert_eq!(
            t.due.map(|d| d.reached_at_ms),
            Some(40),
            "kept once answered"
        );
        t.apply(
            70,
            &EventData::PetitionClosed {
                reason: CloseReason::Deadline,
            },
        );
        assert_eq!(t.deadline_closed, Some(70));
    }

    #[test]
    fn responses_are_checked() {
        assert!(check_response("We will debate it.", Some("https://x.org/a")).is_ok());
        assert!(check_response("ok", None).is_ok());
        assert!(check_response("  ", None).is_err());
        assert!(check_response(&"x".repeat(4097), None).is_err());
        assert!(check_response("a\u{7}b", None).is_err());
        assert!(check_response("ok", Some("ftp://x")).is_err());
        assert!(check_response("ok", Some("https://")).is_err());
        assert!(check_response("ok", Some("https://a b")).is_err());
    }

    #[test]
    fn the_log_serves_memory_then_defers_to_the_store() {
        let log = EventLog::new(true);
        let event = |seq| Event {
            seq,
            petition: "p".into(),
            at_ms: seq,
            data: EventData::ThresholdCrossed { threshold: seq },
        };
        log.push((1..=(TAIL_MAX as u64 + 10)).map(event));
        match log.read(0, 5) {
            Read::Store => {}
            Read::Memory(_) => panic!("the first events left memory"),
        }
        match log.read(10, 5) {
            Read::Memory(events) => assert_eq!(events[0].seq, 11),
            Read::Store => panic!("event 11 is the oldest in memory"),
        }
        match log.read(TAIL_MAX as u64 + 10, 5) {
            Read::Memory(events) => assert!(events.is_empty()),
            Read::Store => panic!("nothing newer"),
        }
        match log.wait(TAIL_MAX as u64 + 10, 5, Duration::from_millis(20)) {
            Read::Memory(events) => assert!(events.is_empty(), "timed out"),
            Read::Store => panic!("nothing newer"),
        }
    }
}
