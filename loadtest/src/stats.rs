//! Latency histograms and outcome counters.
//!
//! Each connection task records into its own [`Recent`] (no sharing on the hot path) and merges
//! it into the shared [`Live`] every [`FLUSH_INTERVAL`], which the progress line and the final
//! report read; [`Live`] also keeps the per-second timeline ([`crate::timeline`]).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::ips::GroupSplit;
use crate::outcome::Outcome;
use crate::timeline::{self, SecondCounts, SentRing, TimelineRow, Window};

/// Highest latency the histograms hold, in microseconds (one hour); longer ones are clamped.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// How often a connection task merges its counts into the shared totals.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);

/// A latency histogram in microseconds, 1 µs to one hour, three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy the library's rules (low >= 1, high >= 2 * low,
    // sigfig <= 5), so this cannot fail.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("constant histogram bounds are valid")
}

/// Microseconds in a duration, clamped into the histogram's range.
pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, LATENCY_MAX_US)
}

/// Counts by outcome. Signature outcomes are counted per signature (a batch of 100 adds 100),
/// validation outcomes per validation. The JSON report's `outcomes` is this struct as it stands
/// (map keys become strings) but for the validation counts, which only phase 2 has and which its
/// own `validation.outcomes` shows, and the split by group, which `ips.groups` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// HTTP requests that got an answer (any status).
    pub requests: u64,
    /// Signatures (or GETs) that got an HTTP answer (any status): what "achieved rate" counts.
    pub answered: u64,
    /// `201 accepted`.
    pub accepted: u64,
    /// `200 duplicate`.
    pub duplicate: u64,
    /// `202 pending`: taken, to be counted once its token is validated.
    pub pending: u64,
    /// Phase 2: `200 validated`.
    #[serde(skip)]
    pub validated: u64,
    /// Phase 2: `200 already_validated`.
    #[serde(skip)]
    pub already_validated: u64,
    /// `--get`: 2xx.
    pub ok: u64,
    /// 4xx other than a 429 `rate_limited`, a 429 `ip_rate_limited` and a 403 `blocked`, by
    /// error code (a 429 `too_many_resubmissions` is here).
    pub rejected: BTreeMap<String, u64>,
    /// 429 `rate_limited`, the per-key limit (any 429 but `too_many_resubmissions` and
    /// `ip_rate_limited`).
    pub rate_limited: u64,
    /// 429 `ip_rate_limited` (and batch lines with that code): over the server's limits per
    /// (petition, address). A final refusal, not an error.
    pub ip_rate_limited: u64,
    /// 403 `blocked` (and batch lines with that code): a block list matched. A final refusal,
    /// not an error.
    pub blocked: u64,
    /// 503 by error code.
    pub unavailable: BTreeMap<String, u64>,
    /// Other 5xx by status.
    pub server_errors: BTreeMap<u16, u64>,
    /// Answers outside the contract.
    pub bad_responses: u64,
    /// No answer within `--timeout`.
    pub timeouts: u64,
    /// The connection failed with the request outstanding.
    pub connection_errors: u64,
    /// Failed attempts to open a connection (no request was sent).
    pub connect_failures: u64,
    /// Signatures that re-sent an acknowledged signer (`--dup-ratio`).
    pub resends: u64,
    /// Open loop: signatures (or GETs) due before the end of the run (`-z`, or the moment
    /// Ctrl-C stopped it) that no connection took, the connections being behind schedule. They
    /// are never sent, and are not in `answered`.
    pub not_sent: u64,
    /// With `--abusers`: the signatures' outcomes per group (the report's `ips.groups`).
    #[serde(skip)]
    pub groups: GroupSplit,
}

impl Counts {
    /// Counts one outcome.
    pub fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Timeout => self.timeouts += 1,
            Outcome::ConnectionError => self.connection_errors += 1,
            answered => {
                self.answered += 1;
                match answered {
                    Outcome::Accepted => self.accepted += 1,
                    Outcome::Duplicate => self.duplicate += 1,
                    Outcome::Pending { .. } => self.pending += 1,
                    Outcome::Validated => self.validated += 1,
                    Outcome::AlreadyValidated => self.already_validated += 1,
                    Outcome::Ok => self.ok += 1,
                    Outcome::Rejected(code) => *self.rejected.entry(code.clone()).or_default() += 1,
                    Outcome::RateLimited => self.rate_limited += 1,
                    Outcome::IpRateLimited => self.ip_rate_limited += 1,
                    Outcome::Blocked => self.blocked += 1,
                    Outcome::Unavailable(code) => {
                        *self.unavailable.entry(code.clone()).or_default() += 1;
                    }
                    Outcome::ServerError(status) => {
                        *self.server_errors.entry(*status).or_default() += 1
                    }
                    Outcome::BadResponse => self.bad_responses += 1,
                    Outcome::Timeout | Outcome::ConnectionError => unreachable!("matched above"),
                }
            }
        }
    }

    /// Everything that is not accepted, duplicate, pending, validated, already validated or ok
    /// (connect failures included), nor a final refusal of the abuse controls
    /// (`ip_rate_limited`, `blocked`): those are the server doing its job.
    pub fn errors(&self) -> u64 {
        self.rejected.values().sum::<u64>()
            + self.rate_limited
            + self.unavailable.values().sum::<u64>()
            + self.server_errors.values().sum::<u64>()
            + self.bad_responses
            + self.timeouts
            + self.connection_errors
            + self.connect_failures
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.answered += other.answered;
        self.accepted += other.accepted;
        self.duplicate += other.duplicate;
        self.pending += other.pending;
        self.validated += other.validated;
        self.already_validated += other.already_validated;
        self.ok += other.ok;
        for (code, n) in &other.rejected {
            *self.rejected.entry(code.clone()).or_default() += n;
        }
        self.rate_limited += other.rate_limited;
        self.ip_rate_limited += other.ip_rate_limited;
        self.blocked += other.blocked;
        for (code, n) in &other.unavailable {
            *self.unavailable.entry(code.clone()).or_default() += n;
        }
        for (status, n) in &other.server_errors {
            *self.server_errors.entry(*status).or_default() += n;
        }
        self.bad_responses += other.bad_responses;
        self.timeouts += other.timeouts;
        self.connection_errors += other.connection_errors;
        self.not_sent += other.not_sent;
        self.connect_failures += other.connect_failures;
        self.resends += other.resends;
        self.groups.merge(&other.groups);
    }
}

/// Latencies and counts of all connections, once merged.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Per request, from the intended send time (open loop) or the send time (closed loop).
    pub corrected: Histogram<u64>,
    /// Per request, from the moment it was actually sent: what a coordinated-omission-prone
    /// tool reports.
    pub uncorrected: Histogram<u64>,
    /// Counts by outcome.
    pub counts: Counts,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            corrected: new_histogram(),
            uncorrected: new_histogram(),
            counts: Counts::default(),
        }
    }
}

/// What one connection recorded since it last merged into [`Live`]: raw latency samples (cheaper
/// to merge than a histogram of 22,000 buckets) and counts, in total and by second.
#[derive(Debug, Clone, Default)]
pub struct Recent {
    /// (corrected, uncorrected) latency of each answered request, in microseconds, and the
    /// second of the run it was answered in.
    pub samples: Vec<(u32, u32, u32)>,
    /// Counts by outcome. Count outcomes with [`Recent::add`], so that the timeline gets them.
    pub counts: Counts,
    /// The outcomes by second of the run (a few seconds at most between two merges).
    pub seconds: Vec<(u32, SecondCounts)>,
}

impl Recent {
    /// Records the latency of one request answered in `second`.
    pub fn record_latency(&mut self, second: u32, corrected: Duration, uncorrected: Duration) {
        // The histogram's range ends at one hour, which fits in a u32 of microseconds.
        let clamp = |d: Duration| micros(d).min(u64::from(u32::MAX)) as u32;
        self.samples
            .push((clamp(corrected), clamp(uncorrected), second));
    }

    /// Counts one outcome, which came in `second`.
    pub fn add(&mut self, second: u32, outcome: &Outcome) {
        self.counts.add(outcome);
        self.second(second).add(outcome);
    }

    /// Counts a failed connect in `second`.
    pub fn connect_failed(&mut self, second: u32) {
        self.counts.connect_failures += 1;
        self.second(second).connect_failures += 1;
    }

    fn second(&mut self, second: u32) -> &mut SecondCounts {
        // Seconds come in order but for a few stragglers; look from the newest.
        let index = match self.seconds.iter().rposition(|(s, _)| *s == second) {
            Some(index) => index,
            None => {
                self.seconds.push((second, SecondCounts::default()));
                self.seconds.len() - 1
            }
        };
        &mut self.seconds[index].1
    }
}

/// Totals shared by the connection tasks and read by the progress line, and the timeline.
#[derive(Debug)]
pub struct Live {
    /// Second 0 of the timeline: the first due request.
    start: Instant,
    /// Signatures sent per second, counted without the lock.
    sent: SentRing,
    inner: Mutex<LiveInner>,
}

impl Default for Live {
    fn default() -> Live {
        Live::new(Instant::now())
    }
}

#[derive(Debug, Default)]
struct LiveInner {
    total: Stats,
    /// Corrected latencies since the progress line last looked.
    interval: Option<Histogram<u64>>,
    /// The open seconds of the timeline and the rows of the closed ones.
    window: Window,
}

impl Live {
    /// Totals whose timeline starts at `start`.
    pub fn new(start: Instant) -> Live {
        Live {
            start,
            sent: SentRing::default(),
            inner: Mutex::default(),
        }
    }

    /// The second of the run `at` falls in.
    pub fn second_of(&self, at: Instant) -> u32 {
        timeline::second_of(self.start, at)
    }

    /// Counts `signatures` sent at `at` (one atomic add; no lock).
    pub fn note_sent(&self, at: Instant, signatures: u64) {
        self.sent.add(self.second_of(at), signatures);
    }

    fn lock(&self) -> MutexGuard<'_, LiveInner> {
        // A panic in another task while holding the lock leaves plain numbers behind, still
        // worth reporting.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Merges a connection's recent samples and counts into the totals and empties them. The lock
    /// is held for a few hundred histogram records only, never across an await.
    pub fn absorb(&self, recent: &mut Recent) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let interval = inner.interval.get_or_insert_with(new_histogram);
        for &(corrected, uncorrected, second) in &recent.samples {
            inner
                .total
                .corrected
                .saturating_record(u64::from(corrected));
            inner
                .total
                .uncorrected
                .saturating_record(u64::from(uncorrected));
            interval.saturating_record(u64::from(corrected));
            inner
                .window
                .record_latency(second, u64::from(corrected), &self.sent);
        }
        inner.total.counts.merge(&recent.counts);
        for (second, counts) in &recent.seconds {
            inner.window.add_counts(*second, counts, &self.sent);
        }
        inner
            .window
            .close_before(self.second_of(Instant::now()), &self.sent);
        drop(guard);
        recent.samples.clear();
        recent.seconds.clear();
        recent.counts = Counts::default();
    }

    /// At the end of the phase, `elapsed` after the start (every connection merged): the
    /// timeline's rows, the seconds dropped past [`timeline::ROWS_MAX`], and the answers that
    /// came after their second was closed.
    pub fn finish_timeline(&self, elapsed: Duration) -> (Vec<TimelineRow>, u64, u64) {
        self.lock().window.finish(elapsed, &self.sent)
    }

    /// The counts so far and the corrected p99 since the last call (None if nothing was answered).
    pub fn snapshot(&self) -> (Counts, Option<Duration>) {
        let mut inner = self.lock();
        let p99 = inner.interval.as_mut().and_then(|h| {
            let p99 = (!h.is_empty()).then(|| Duration::from_micros(h.value_at_quantile(0.99)));
            h.reset();
            p99
        });
        (inner.total.counts.clone(), p99)
    }

    /// The final totals.
    pub fn total(&self) -> Stats {
        self.lock().total.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_merge() {
        let mut a = Counts::default();
        for outcome in [
            Outcome::Accepted,
            Outcome::Duplicate,
            Outcome::Rejected("invalid_signature".into()),
            Outcome::Unavailable("overloaded".into()),
            Outcome::Timeout,
            Outcome::ConnectionError,
            Outcome::ServerError(500),
        ] {
            a.add(&outcome);
        }
        assert_eq!(a.answered, 5);
        assert_eq!(a.errors(), 5);
        let mut b = a.clone();
        b.merge(&a);
        assert_eq!(b.answered, 10);
        assert_eq!(b.rejected["invalid_signature"], 2);
        assert_eq!(b.server_errors[&500], 2);

        // The lifecycle's answers are outcomes, not errors.
        let mut c = Counts::default();
        let token = crate::token::Token::parse(&"ab".repeat(36)).expect("a token");
        for outcome in [
            Outcome::Pending {
                token,
                expires_unix_s: 0,
            },
            Outcome::Validated,
            Outcome::AlreadyValidated,
            Outcome::Rejected("too_many_resubmissions".into()),
        ] {
            c.add(&outcome);
        }
        assert_eq!((c.pending, c.validated, c.already_validated), (1, 1, 1));
        assert_eq!((c.answered, c.errors()), (4, 1));
        let mut d = c.clone();
        d.merge(&c);
        assert_eq!((d.pending, d.validated, d.already_validated), (2, 2, 2));

        // The abuse controls' final refusals are counted apart, and are not errors; the
        // per-key limit's 429 still is one.
        let mut e = Counts::default();
        for outcome in [
            Outcome::IpRateLimited,
            Outcome::IpRateLimited,
            Outcome::Blocked,
            Outcome::RateLimited,
        ] {
            e.add(&outcome);
        }
        assert_eq!((e.ip_rate_limited, e.blocked, e.rate_limited), (2, 1, 1));
        assert_eq!((e.answered, e.errors()), (4, 1));
        assert!(e.rejected.is_empty());
        let mut f = e.clone();
        f.merge(&e);
        assert_eq!((f.ip_rate_limited, f.blocked, f.rate_limited), (4, 2, 2));
    }

    #[test]
    fn live_interval_resets() {
        let live = Live::default();
        let mut recent = Recent::default();
        recent.record_latency(0, Duration::from_millis(100), Duration::from_millis(1));
        recent.add(0, &Outcome::Accepted);
        live.absorb(&mut recent);
        assert!(recent.counts.accepted == 0 && recent.samples.is_empty());
        assert!(recent.seconds.is_empty());
        let (counts, p99) = live.snapshot();
        assert_eq!(counts.accepted, 1);
        let p99 = p99.expect("one sample");
        assert!(p99 >= Duration::from_millis(99) && p99 <= Duration::from_millis(101));
        assert_eq!(live.snapshot().1, None);
        assert_eq!(live.total().corrected.len(), 1);
        let (rows, dropped, late) = live.finish_timeline(Duration::from_millis(500));
        assert_eq!((rows.len(), dropped, late), (1, 0, 0));
        assert_eq!((rows[0].answered, rows[0].latency_ms.count), (1, 1));
    }
}
