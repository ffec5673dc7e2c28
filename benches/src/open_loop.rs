//! Open-loop load: calls paced to a schedule, latency counted from when each call was due, and
//! how late this machine wakes a sleeping thread meanwhile. Shared by `engine-bench durable
//! --rate` and `engine-bench floor`, so that the two are measured the same way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// An empty histogram of microseconds, 1 µs to 60 s at three significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// A wake-up at least this late is kept with its time ([`WakeLateness::late_wakes`]), so that a
/// stall can be put beside it.
pub const LATE_WAKE_US: u64 = 1_000;

/// How late a sleeping thread woke during a run.
#[derive(Debug)]
pub struct WakeLateness {
    /// Every wake-up, µs late.
    pub histogram: Histogram<u64>,
    /// Wake-ups at least [`LATE_WAKE_US`] late: (µs after the epoch, µs late), at most
    /// [`crate::stalls::SLOW_CALLS_MAX`].
    pub late_wakes: Vec<(u64, u64)>,
}

/// Sleeps 1 ms at a time until `finished` and records how late each wake-up was, in µs: the
/// scheduling delay any thread of this process can meet. Times are kept from `epoch`.
pub fn measure_wake_lateness(epoch: Instant, finished: &AtomicBool) -> WakeLateness {
    let mut histogram = latency_histogram();
    let mut late_wakes = Vec::new();
    let nap = Duration::from_millis(1);
    while !finished.load(Ordering::Acquire) {
        let before = Instant::now();
        std::thread::sleep(nap);
        let over = before.elapsed().saturating_sub(nap).as_micros() as u64;
        histogram.saturating_record(over.max(1));
        if over >= LATE_WAKE_US && late_wakes.len() < crate::stalls::SLOW_CALLS_MAX {
            let at = before.saturating_duration_since(epoch).as_micros() as u64;
            late_wakes.push((at, over));
        }
    }
    WakeLateness {
        histogram,
        late_wakes,
    }
}

/// Paces one of `threads` threads that together send a call every `interval / threads`: thread
/// `t` starts `t / threads` of an interval after `epoch`, so the total rate is even.
#[derive(Debug)]
pub struct Pacer {
    begin: Instant,
    interval: Duration,
    sent: u32,
    late: u64,
}

impl Pacer {
    /// The pacer of thread `t` of `threads`, each sending every `interval` (zero: as fast as
    /// possible).
    pub fn new(epoch: Instant, interval: Duration, t: usize, threads: usize) -> Pacer {
        Pacer {
            begin: epoch + interval * t as u32 / threads.max(1) as u32,
            interval,
            sent: 0,
            late: 0,
        }
    }

    /// The interval that makes `threads` threads of `batch`-signature calls send `rate`
    /// signatures per second (zero for `rate == 0`).
    pub fn interval(rate: u64, batch: usize, threads: usize) -> Duration {
        if rate == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(batch as f64 * threads as f64 / rate as f64)
        }
    }

    /// Sleeps until the next call is due, unless it is already late, and returns when it was
    /// due: latency counts from then, so a late call's wait is counted (open loop).
    pub fn wait_turn(&mut self) -> Instant {
        if self.interval.is_zero() {
            return Instant::now();
        }
        let at = self.begin + self.interval * self.sent;
        self.sent += 1;
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        } else if self.sent > 1 {
            // (A thread's first call can only be late by the time it took to start.)
            self.late += 1;
        }
        at
    }

    /// Calls that were already due when this thread came for them, because it was still busy
    /// with its previous one (or, with input generated inline, with generating this one). Each
    /// waited in the load generator, not in the system under test, and was then sent on its
    /// own: an open-loop client with a connection per request would have sent it on time. Their
    /// latency still counts from the due time.
    pub fn late(&self) -> u64 {
        self.late
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_staggers_threads_and_counts_from_the_due_time() {
        let epoch = Instant::now();
        let interval = Pacer::interval(1_000, 10, 2);
        assert_eq!(interval, Duration::from_millis(20));
        let mut second = Pacer::new(epoch, interval, 1, 2);
        assert_eq!(second.wait_turn(), epoch + Duration::from_millis(10));
        assert_eq!(second.wait_turn(), epoch + Duration::from_millis(30));
        assert!(Instant::now() >= epoch + Duration::from_millis(30));
        // Busy past the next due time: that call is late, and counted.
        let late = second.late();
        std::thread::sleep(Duration::from_millis(45));
        assert_eq!(second.wait_turn(), epoch + Duration::from_millis(50));
        assert_eq!(second.late(), late + 1);
        assert_eq!(Pacer::interval(0, 10, 2), Duration::ZERO);
    }
}
