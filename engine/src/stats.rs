//! Engine statistics: counters, sizes, recovery progress and the write-latency histogram.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::Durability;

/// Upper bounds of the write-latency histogram buckets, in seconds (Prometheus style).
pub const LATENCY_BOUNDS_SECONDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128,
    0.256, 0.512, 1.024, 2.048,
];

/// A lock-free histogram of durations with fixed buckets.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// One counter per bound, plus one for "above the last bound".
    buckets: [AtomicU64; LATENCY_BOUNDS_SECONDS.len() + 1],
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn record(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BOUNDS_SECONDS.partition_point(|&bound| bound < seconds);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    /// A consistent-enough copy (each counter is read once).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(self.buckets.len());
        let mut total = 0;
        for bucket in &self.buckets {
            total += bucket.load(Ordering::Relaxed);
            cumulative.push(total);
        }
        HistogramSnapshot {
            bounds_seconds: LATENCY_BOUNDS_SECONDS.to_vec(),
            cumulative_counts: cumulative,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// A histogram snapshot: `cumulative_counts[i]` observations were ≤ `bounds_seconds[i]`; the
/// last entry (one past the bounds) counts every observation.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Bucket upper bounds, in seconds.
    pub bounds_seconds: Vec<f64>,
    /// Cumulative counts; one longer than `bounds_seconds` (the last is the total).
    pub cumulative_counts: Vec<u64>,
    /// Sum of all observations, in seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.cumulative_counts.last().copied().unwrap_or(0)
    }
}

/// What [`crate::Engine::stats`] reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Stats {
    /// The index is rebuilt and signatures are taken.
    pub ready: bool,
    /// The last write succeeded (or none failed since the store came back).
    pub storage_healthy: bool,
    /// The engine persists to a store (false: memory only).
    pub persistent: bool,
    /// The configured durability.
    pub durability: Durability,
    /// Registered petitions.
    pub petitions: u64,
    /// Sum of all petitions' counts.
    pub signatures: u64,
    /// Signatures accepted since open.
    pub accepted_total: u64,
    /// Duplicates answered since open.
    pub duplicates_total: u64,
    /// Signatures refused as invalid, for an unknown or closed petition, since open.
    pub rejected_total: u64,
    /// Signatures refused because the queue was full, since open.
    pub overloaded_total: u64,
    /// Signatures admitted and not yet answered.
    pub queue_signatures: u64,
    /// Write batches (group commits) since open.
    pub batches_total: u64,
    /// Signatures in the last write batch.
    pub batch_signatures_last: u64,
    /// Time of each batch from the start of its write until it is published: with `sync` its
    /// sync and any wait for the syncer included (failed batches are not recorded there); with
    /// `buffered` and `none` just the write.
    pub write_latency: HistogramSnapshot,
    /// Entries in the dedup index.
    pub index_entries: u64,
    /// Bytes held by the dedup index.
    pub index_bytes: u64,
    /// Bytes held by the petition table and counts.
    pub counts_bytes: u64,
    /// Bytes the counts by place and the histories hold beyond the petition table (their
    /// entries), with the dictionary of regions and the list of recently changed petitions.
    pub breakdown_bytes: u64,
    /// Bytes the limits per (petition, address) take: `entries × 32` over the shards of the
    /// table that have taken a signature (a shard holds memory once written).
    pub rate_limit_bytes: u64,
    /// Bytes the trending sources' tables take (32 per slot, without the email domains' names:
    /// at most the slot budget plus one set per kind and hour of each petition signed in the
    /// last two hours).
    pub source_bytes: u64,
    /// Bytes of the signature states in memory (2 bits per signature in the pages that hold a
    /// signature that is not simply validated; none for petitions that do not validate by
    /// email).
    pub states_bytes: u64,
    /// Failed store operations since open.
    pub storage_errors_total: u64,
    /// The last store error, if any.
    pub last_storage_error: Option<String>,
    /// Signatures loaded into the index so far by recovery.
    pub recovery_loaded: u64,
    /// Signatures recovery expects to load (the sum of stored counts; those stored from the
    /// mark on if it loaded a saved index; 0 if the index came from a follower of the log,
    /// `Follower::into_engine`).
    pub recovery_expected: u64,
    /// Where recovery's index came from: `Some(mark)` if it loaded the index saved beside the
    /// store at that mark and read back only the signatures from it on (`recovery_expected` of
    /// them); `None` if it read every stored fingerprint back or took a follower's index.
    pub recovery_index_from: Option<u64>,
    /// The mark of the index last saved beside the store (at a clean close, or in the
    /// background every `Config::index_snapshot_signatures`), or loaded at open: an open after
    /// a crash reads back the signatures from it on. `None`: no index saved yet.
    pub index_saved_from: Option<u64>,
    /// Indexes saved beside the store since open.
    pub index_saves_total: u64,
    /// Time from `open` to ready, in seconds (0 until ready).
    pub recovery_seconds: f64,
    /// Why recovery failed, if it did.
    pub recovery_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let histogram = LatencyHistogram::default();
        histogram.record(Duration::from_micros(10));
        histogram.record(Duration::from_micros(100));
        histogram.record(Duration::from_millis(3));
        histogram.record(Duration::from_secs(10));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count(), 4);
        assert_eq!(snapshot.cumulative_counts[0], 1, "10 µs ≤ 50 µs");
        assert_eq!(snapshot.cumulative_counts[1], 2, "100 µs ≤ 100 µs");
        assert_eq!(snapshot.cumulative_counts[6], 3, "3 ms ≤ 4 ms");
        assert_eq!(snapshot.cumulative_counts[15], 3, "10 s > 2.048 s");
        assert!((snapshot.sum_seconds - 10.00311).abs() < 1e-9);
    }
}
