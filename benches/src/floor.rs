//! The floor under P7: the least that a durable acknowledgement costs on this machine.
//!
//! Callers paced exactly as `engine-bench durable --rate` paces them (the same [`Pacer`], latency
//! from each call's due time, a fresh reply channel per call, the same wake-lateness sampler
//! beside them) hand requests to one writer thread, which does what any group commit must: take
//! everything queued, append it to a file (as many bytes per signature as the engine's WAL
//! takes), `fdatasync`, and wake every caller. No index, no RocksDB, no encoding. Its ack latency
//! is what the engine's would be if the engine itself cost nothing, so it separates what the
//! machine (disk, thread wake-ups) costs from what the engine adds. One difference favours the
//! engine: RocksDB preallocates its WAL, while the floor's file grows with every append.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::open_loop::{latency_histogram, measure_wake_lateness, Pacer};
use crate::stalls::{SlowCall, SlowCalls};

/// One floor run.
#[derive(Debug, Clone)]
pub struct Floor {
    /// Calling threads.
    pub threads: usize,
    /// Signatures per call.
    pub batch: usize,
    /// Signatures per second over all threads.
    pub rate: u64,
    /// Signatures in all.
    pub signatures: u64,
    /// Bytes appended per signature.
    pub bytes_per_signature: usize,
    /// Calls at least this slow are kept with their times ([`FloorResult::slow_calls`]); zero
    /// keeps none.
    pub stall_threshold: Duration,
}

/// What a floor run measured, in microseconds.
#[derive(Debug)]
pub struct FloorResult {
    /// Per call, from its intended send time to its acknowledgement.
    pub latency_us: Histogram<u64>,
    /// Per call, from the hand-off to the writer to the acknowledgement.
    pub call_us: Histogram<u64>,
    /// Per group, the append and `fdatasync`.
    pub sync_us: Histogram<u64>,
    /// How late a 1 ms sleep woke during the run.
    pub wake_late_us: Histogram<u64>,
    /// Wake-ups at least [`crate::open_loop::LATE_WAKE_US`] late: (µs after the epoch, µs late).
    pub late_wakes: Vec<(u64, u64)>,
    /// Calls at least [`Floor::stall_threshold`] slow, timed from the epoch.
    pub slow_calls: Vec<SlowCall>,
    /// Slow calls past the bound of [`SlowCalls`], counted only.
    pub slow_calls_dropped: u64,
    /// The epoch (when the first call was due) on the Unix clock, µs.
    pub epoch_unix_us: u64,
    /// Calls already due when their thread came for them ([`Pacer::late`]).
    pub late_calls: u64,
    /// Calls made.
    pub calls: u64,
    /// Groups written (one `fdatasync` each).
    pub groups: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

type Request = (usize, SyncSender<()>);

/// Runs `floor` against a scratch file in `dir`, removed afterwards.
pub fn run(floor: &Floor, dir: &Path) -> std::io::Result<FloorResult> {
    let path = dir.join(".ack-floor");
    let mut file = File::create(&path)?;
    let threads = floor.threads.max(1);
    let batch = floor.batch.max(1);
    let calls_per_thread = floor.signatures.div_ceil((threads * batch) as u64);
    let interval = Pacer::interval(floor.rate, batch, threads);
    let (sender, receiver) = crossbeam_channel::unbounded::<Request>();
    let finished = AtomicBool::new(false);
    let started = Instant::now();
    let outcome = std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> std::io::Result<(Histogram<u64>, u64)> {
            let mut sync_us = latency_histogram();
            let mut groups = 0u64;
            let mut buffer = Vec::new();
            let mut waiting = Vec::new();
            while let Ok(first) = receiver.recv() {
                waiting.push(first);
                waiting.extend(receiver.try_iter());
                let signatures: usize = waiting.iter().map(|(signatures, _)| signatures).sum();
                buffer.clear();
                buffer.resize(signatures * floor.bytes_per_signature, 0x5a);
                let synced = Instant::now();
                file.write_all(&buffer)?;
                file.sync_data()?;
                sync_us.saturating_record((synced.elapsed().as_micros() as u64).max(1));
                groups += 1;
                for (_, reply) in waiting.drain(..) {
                    let _ = reply.send(());
                }
            }
            Ok((sync_us, groups))
        });
        let epoch = Instant::now();
        let epoch_unix_us = crate::stalls::unix_us_of(epoch);
        let finished = &finished;
        let wake = scope.spawn(move || measure_wake_lateness(epoch, finished));
        let callers: Vec<_> = (0..threads)
            .map(|t| {
                let sender = sender.clone();
                scope.spawn(move || {
                    let mut latency_us = latency_histogram();
                    let mut call_us = latency_histogram();
                    let mut pacer = Pacer::new(epoch, interval, t, threads);
                    let mut slow = SlowCalls::new(epoch, floor.stall_threshold);
                    for _ in 0..calls_per_thread {
                        let intended = pacer.wait_turn();
                        let called = Instant::now();
                        // A channel per call, as the engine's blocking calls have: if the
                        // writer stops (an I/O error), the sender goes with it and `recv` ends.
                        let (reply, acknowledged) = sync_channel(1);
                        if sender.send((batch, reply)).is_err() {
                            break;
                        }
                        if acknowledged.recv().is_err() {
                            break;
                        }
                        let inside = (called.elapsed().as_micros() as u64).max(1);
                        let latency = (intended.elapsed().as_micros() as u64).max(1);
                        call_us.saturating_record(inside);
                        latency_us.saturating_record(latency);
                        slow.note(intended, latency, inside);
                    }
                    (latency_us, call_us, pacer.late(), slow)
                })
            })
            .collect();
        drop(sender);
        let mut latency_us = latency_histogram();
        let mut call_us = latency_histogram();
        let mut late_calls = 0;
        let (mut slow_calls, mut slow_calls_dropped) = (Vec::new(), 0);
        for caller in callers {
            let (latency, call, late, slow) = caller.join().expect("floor caller panicked");
            latency_us.add(latency).expect("same bounds");
            call_us.add(call).expect("same bounds");
            late_calls += late;
            slow_calls_dropped += slow.dropped();
            slow_calls.extend(slow.into_calls());
        }
        let elapsed = started.elapsed();
        finished.store(true, Ordering::Release);
        let wake = wake.join().expect("wake-lateness thread panicked");
        let (sync_us, groups) = writer.join().expect("floor writer panicked")?;
        Ok(FloorResult {
            calls: latency_us.len(),
            latency_us,
            call_us,
            sync_us,
            wake_late_us: wake.histogram,
            late_wakes: wake.late_wakes,
            slow_calls,
            slow_calls_dropped,
            epoch_unix_us,
            late_calls,
            groups,
            elapsed,
        })
    });
    std::fs::remove_file(&path)?;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_is_acknowledged_after_a_sync() {
        let dir = tempfile::tempdir().expect("temp dir");
        let floor = Floor {
            threads: 3,
            batch: 10,
            rate: 30_000,
            signatures: 3_000,
            bytes_per_signature: 100,
            // Every call is at least 1 µs: all are kept.
            stall_threshold: Duration::from_micros(1),
        };
        let result = run(&floor, dir.path()).expect("floor run");
        assert_eq!(result.calls, 300);
        assert_eq!(result.call_us.len(), 300);
        // Every call waited for one group's sync; groups never outnumber calls.
        assert!((1..=300).contains(&result.groups), "{}", result.groups);
        assert_eq!(result.sync_us.len(), result.groups);
        assert!(result.latency_us.min() >= result.sync_us.min());
        // 100 calls a thread, one every millisecond: about 0.1 s.
        assert!(
            result.elapsed >= Duration::from_millis(90),
            "{:?}",
            result.elapsed
        );
        assert_eq!(result.slow_calls.len(), 300);
        assert_eq!(result.slow_calls_dropped, 0);
        assert!(result
            .slow_calls
            .iter()
            .all(|c| c.latency_us >= c.call_us && c.due_us < 1_000_000));
        assert!(!dir.path().join(".ack-floor").exists());
    }
}
