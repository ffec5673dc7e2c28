//! The per-second timeline of phase 1: for each second of the run (second 0 starts at the first
//! due request), the signatures sent, the answers by outcome class, errors, achieved and
//! target rates, and the corrected latency percentiles of the requests answered in it. The JSON
//! report carries it (`timeline`), `--timeline FILE` writes it as NDJSON, and `loadtest plot`
//! draws it.
//!
//! Memory is bounded: while the run goes, only the last few seconds are open, each with one
//! histogram ([`Window`], [`OPEN_SECONDS_MAX`] of them, about 190 KB each); a second older than
//! [`GRACE_S`] is closed into a [`TimelineRow`] of a few numbers (about 200 bytes), and at most
//! [`ROWS_MAX`] rows (a day) are kept. Answers are attributed to the second they were parsed
//! in, and reach the window when their connection next merges its figures (every
//! [`FLUSH_INTERVAL`](crate::stats::FLUSH_INTERVAL)); one that comes after its second was closed
//! is counted as `late` (it is in the report's totals, not in a row). Sends are counted when
//! they happen, by the second they happen in, on a ring of atomic counters ([`SentRing`]), so a
//! request that waits long for its answer is still counted in the second it went out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::outcome::Outcome;
use crate::stats::new_histogram;

/// How long after a second ends it is closed: answers parsed in it must have been merged by
/// then (connections merge every 250 ms).
pub const GRACE_S: u32 = 3;

/// Seconds open at once, each with a histogram: the grace, the current second, and slack for
/// a second that starts while the older ones are being closed.
pub const OPEN_SECONDS_MAX: usize = GRACE_S as usize + 3;

/// Rows kept: one a second for a day. Later seconds are counted in `dropped`, not kept.
pub const ROWS_MAX: usize = 86_400;

/// Seconds the ring of send counters spans: a second's counter is read when the second closes,
/// and reused this many seconds later.
const SENT_RING_S: usize = 1024;

/// The second of the run `at` falls in, counted from `start` (0 before it).
pub fn second_of(start: Instant, at: Instant) -> u32 {
    u32::try_from(at.saturating_duration_since(start).as_secs()).unwrap_or(u32::MAX)
}

/// Answers in one second by outcome class, in signatures (or GETs), and failed connects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondCounts {
    /// Taken: 201 accepted, 200 duplicate, 202 pending (phase 2: validated, already
    /// validated; `--get`: 2xx).
    pub taken: u64,
    /// The abuse controls' final refusals: 429 `ip_rate_limited`, 403 `blocked`.
    pub refused: u64,
    /// Other 4xx (a 429 `too_many_resubmissions` included).
    pub rejected: u64,
    /// 429 `rate_limited`, the per-key limit.
    pub rate_limited: u64,
    /// 503.
    pub unavailable: u64,
    /// Other 5xx.
    pub server_errors: u64,
    /// Answers outside the contract.
    pub bad_responses: u64,
    /// No answer within `--timeout`.
    pub timeouts: u64,
    /// The connection failed with the request out.
    pub connection_errors: u64,
    /// Failed attempts to connect (nothing sent).
    pub connect_failures: u64,
}

impl SecondCounts {
    /// Counts one outcome.
    pub fn add(&mut self, outcome: &Outcome) {
        let class = match outcome {
            Outcome::Accepted
            | Outcome::Duplicate
            | Outcome::Pending { .. }
            | Outcome::Validated
            | Outcome::AlreadyValidated
            | Outcome::Ok => &mut self.taken,
            Outcome::IpRateLimited | Outcome::Blocked => &mut self.refused,
            Outcome::Rejected(_) => &mut self.rejected,
            Outcome::RateLimited => &mut self.rate_limited,
            Outcome::Unavailable(_) => &mut self.unavailable,
            Outcome::ServerError(_) => &mut self.server_errors,
            Outcome::BadResponse => &mut self.bad_responses,
            Outcome::Timeout => &mut self.timeouts,
            Outcome::ConnectionError => &mut self.connection_errors,
        };
        *class += 1;
    }

    /// Answers with any status.
    pub fn answered(&self) -> u64 {
        self.taken
            + self.refused
            + self.rejected
            + self.rate_limited
            + self.unavailable
            + self.server_errors
            + self.bad_responses
    }

    /// Errors as [`Counts::errors`](crate::stats::Counts::errors) counts them: everything but
    /// taken and refused.
    pub fn errors(&self) -> u64 {
        self.rejected
            + self.rate_limited
            + self.unavailable
            + self.server_errors
            + self.bad_responses
            + self.timeouts
            + self.connection_errors
            + self.connect_failures
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &SecondCounts) {
        self.taken += other.taken;
        self.refused += other.refused;
        self.rejected += other.rejected;
        self.rate_limited += other.rate_limited;
        self.unavailable += other.unavailable;
        self.server_errors += other.server_errors;
        self.bad_responses += other.bad_responses;
        self.timeouts += other.timeouts;
        self.connection_errors += other.connection_errors;
        self.connect_failures += other.connect_failures;
    }
}

/// Corrected latency percentiles of the requests answered in one second, in milliseconds (all
/// 0 when none was).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SecondLatency {
    /// Requests answered.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Highest.
    pub max: f64,
}

impl SecondLatency {
    fn of(histogram: &Histogram<u64>) -> SecondLatency {
        if histogram.is_empty() {
            return SecondLatency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        SecondLatency {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        }
    }
}

/// One second of the timeline: a line of `--timeline`, an entry of the report's `timeline`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimelineRow {
    /// Which second, from 0 at the first due request.
    pub second: u32,
    /// How much of the second the run lasted: 1, but for the last second, which ends with the
    /// last answer.
    pub span_s: f64,
    /// Signatures (or GETs) sent in it.
    pub sent: u64,
    /// Signatures (or GETs) answered in it, with any status.
    pub answered: u64,
    /// Errors in it, as the pass criteria count them.
    pub errors: u64,
    /// Signatures per second the schedule had due in it (`-R`, `--stages`); null in closed loop.
    pub target_per_s: Option<f64>,
    /// `answered / span_s`.
    pub achieved_per_s: f64,
    /// Answers (and failed connects) by outcome class.
    pub outcomes: SecondCounts,
    /// Corrected latency of the requests answered in it.
    pub latency_ms: SecondLatency,
}

/// One open second: its counts and its latency histogram.
#[derive(Debug)]
struct OpenSecond {
    counts: SecondCounts,
    histogram: Histogram<u64>,
}

/// Counters of signatures sent per second, on a ring of [`SENT_RING_S`] seconds, counted by the
/// connections with one relaxed atomic add per request (no lock on the load path).
#[derive(Debug)]
pub struct SentRing {
    seconds: Box<[AtomicU64]>,
}

impl Default for SentRing {
    fn default() -> SentRing {
        SentRing {
            seconds: (0..SENT_RING_S).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl SentRing {
    /// Counts `signatures` sent in `second`.
    pub fn add(&self, second: u32, signatures: u64) {
        self.seconds[second as usize % SENT_RING_S].fetch_add(signatures, Ordering::Relaxed);
    }

    /// Takes the count of `second`, leaving 0 for the second that reuses its counter.
    fn take(&self, second: u32) -> u64 {
        self.seconds[second as usize % SENT_RING_S].swap(0, Ordering::Relaxed)
    }
}

/// The open seconds and the rows of the closed ones (kept under [`crate::stats::Live`]'s lock).
#[derive(Debug, Default)]
pub struct Window {
    /// The oldest second still open; every second before it is a row.
    first_open: u32,
    /// Seconds `first_open ..`, at most [`OPEN_SECONDS_MAX`].
    open: VecDeque<OpenSecond>,
    /// Histograms of closed seconds, reset, for the next ones to reuse.
    spare: Vec<Histogram<u64>>,
    rows: Vec<TimelineRow>,
    /// Seconds past [`ROWS_MAX`], not kept.
    dropped: u64,
    /// Answers (and failed connects) that came after their second was closed.
    late: u64,
}

impl Window {
    /// The open second `second`, opening the seconds up to it (and closing the oldest when more
    /// than [`OPEN_SECONDS_MAX`] would be open); None if it is closed already.
    fn second(&mut self, second: u32, sent: &SentRing) -> Option<&mut OpenSecond> {
        if second < self.first_open {
            return None;
        }
        while second as usize >= self.first_open as usize + OPEN_SECONDS_MAX {
            self.close_oldest(sent);
        }
        while self.first_open as usize + self.open.len() <= second as usize {
            let histogram = self.spare.pop().unwrap_or_else(new_histogram);
            self.open.push_back(OpenSecond {
                counts: SecondCounts::default(),
                histogram,
            });
        }
        self.open.get_mut((second - self.first_open) as usize)
    }

    /// Records one answered request's corrected latency (µs) in `second`.
    pub fn record_latency(&mut self, second: u32, corrected_us: u64, sent: &SentRing) {
        match self.second(second, sent) {
            Some(open) => open.histogram.saturating_record(corrected_us),
            None => self.late += 1,
        }
    }

    /// Adds the counts of `second`.
    pub fn add_counts(&mut self, second: u32, counts: &SecondCounts, sent: &SentRing) {
        match self.second(second, sent) {
            Some(open) => open.counts.merge(counts),
            None => self.late += counts.answered() + counts.timeouts + counts.connection_errors,
        }
    }

    /// Closes the seconds that ended more than [`GRACE_S`] before `now_second` began.
    pub fn close_before(&mut self, now_second: u32, sent: &SentRing) {
        while self.first_open.saturating_add(GRACE_S) < now_second {
            self.close_oldest(sent);
        }
    }

    /// Closes the oldest open second (an empty one if none is open) into a row.
    fn close_oldest(&mut self, sent: &SentRing) {
        let second = self.first_open;
        let row = match self.open.pop_front() {
            Some(mut open) => {
                let latency = SecondLatency::of(&open.histogram);
                open.histogram.reset();
                self.spare.push(open.histogram);
                (open.counts, latency)
            }
            None => (SecondCounts::default(), SecondLatency::default()),
        };
        let (counts, latency) = row;
        let sent = sent.take(second);
        if self.rows.len() < ROWS_MAX {
            self.rows.push(TimelineRow {
                second,
                span_s: 1.0,
                sent,
                answered: counts.answered(),
                errors: counts.errors(),
                target_per_s: None,
                achieved_per_s: counts.answered() as f64,
                outcomes: counts,
                latency_ms: latency,
            });
        } else {
            self.dropped += 1;
        }
        self.first_open += 1;
    }

    /// Closes every second up to the end of the phase, `elapsed` after its start, and hands
    /// over the rows (the last one's span cut to the phase's end), the seconds dropped past
    /// [`ROWS_MAX`] and the late answers.
    pub fn finish(&mut self, elapsed: Duration, sent: &SentRing) -> (Vec<TimelineRow>, u64, u64) {
        let seconds = u32::try_from(elapsed.as_secs_f64().ceil() as u64)
            .unwrap_or(u32::MAX)
            .max(1);
        while self.first_open < seconds || !self.open.is_empty() {
            self.close_oldest(sent);
        }
        if let Some(last) = self.rows.last_mut() {
            let span = elapsed.as_secs_f64() - f64::from(last.second);
            if span > 0.0 && span < 1.0 {
                last.span_s = span;
                last.achieved_per_s = last.answered as f64 / span;
            }
        }
        (std::mem::take(&mut self.rows), self.dropped, self.late)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_close_in_order_with_their_sends_and_answers() {
        let sent = SentRing::default();
        let mut window = Window::default();
        sent.add(0, 3);
        sent.add(2, 5);
        let mut ok = SecondCounts::default();
        ok.add(&Outcome::Accepted);
        ok.add(&Outcome::Accepted);
        window.add_counts(0, &ok, &sent);
        window.record_latency(0, 1000, &sent);
        window.record_latency(0, 3000, &sent);
        let mut bad = SecondCounts::default();
        bad.add(&Outcome::Timeout);
        bad.add(&Outcome::IpRateLimited);
        window.add_counts(2, &bad, &sent);
        // Second 0 stays open within the grace, then closes; a late answer is counted as such.
        window.close_before(GRACE_S, &sent);
        assert_eq!(window.first_open, 0);
        window.close_before(GRACE_S + 1, &sent);
        assert_eq!(window.first_open, 1);
        window.add_counts(0, &ok, &sent);
        assert_eq!(window.late, 2);

        let (rows, dropped, late) = window.finish(Duration::from_millis(2500), &sent);
        assert_eq!((dropped, late), (0, 2));
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].sent, 3);
        assert_eq!((rows[0].answered, rows[0].errors), (2, 0));
        assert_eq!(rows[0].latency_ms.count, 2);
        assert!((rows[0].latency_ms.max - 3.0).abs() < 0.01);
        assert_eq!(rows[1].sent, 0);
        assert_eq!(rows[1].latency_ms, SecondLatency::default());
        assert_eq!(rows[2].sent, 5);
        // The timeout is an error, not an answer; the refusal is an answer, not an error.
        assert_eq!((rows[2].answered, rows[2].errors), (1, 1));
        assert!((rows[2].span_s - 0.5).abs() < 1e-9);
        assert!((rows[2].achieved_per_s - 2.0).abs() < 1e-9);
    }

    #[test]
    fn memory_stays_bounded_when_seconds_jump() {
        let sent = SentRing::default();
        let mut window = Window::default();
        for second in [0, 100, 5000] {
            window.record_latency(second, 10, &sent);
            assert!(window.open.len() <= OPEN_SECONDS_MAX);
            assert!(window.spare.len() <= OPEN_SECONDS_MAX);
        }
        let (rows, _, _) = window.finish(Duration::from_secs(5001), &sent);
        assert_eq!(rows.len(), 5001);
        assert!(rows.iter().enumerate().all(|(i, r)| r.second as usize == i));
        assert_eq!(
            rows.iter().map(|r| r.latency_ms.count).sum::<u64>(),
            3,
            "each answer in its own second"
        );
    }
}
