//! The second stage of the group commit in `sync` durability: making written batches durable.
//!
//! The writer writes each batch to RocksDB without a sync (the log appended, the memtables
//! updated) and hands it here as a [`Written`]. This thread takes every batch handed over so far,
//! makes them all durable with one sync of the log (RocksDB's `SyncWAL`, an `fdatasync`), and
//! only then commits their index entries, publishes their counts and events and answers their
//! callers. While it waits for the disk, the writer is already encoding and writing the next
//! batch: one group's CPU work overlaps the previous group's sync instead of adding to it on one
//! thread. Nothing is acknowledged before the sync that covers it has returned.
//!
//! A failed sync acknowledges nothing in its group, and the syncer then fails every batch that
//! follows until the writer has drained it and taken the failure at the start of its recovery
//! ([`Syncer::take_failure`]; the writer sends nothing more until the store is back): a log that
//! lost a batch must not be trusted with the ones after it.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use crate::error::StoreError;
use crate::error::SubmitError;
use crate::event::Event;
use crate::fingerprint::Fingerprint;
use crate::index::PREFETCH_DISTANCE;
use crate::job::Caller;
use crate::petition::Petition;
use crate::petition::{Changes, Counts};
use crate::shared::Shared;
use crate::store::Store;

/// A batch the writer wrote without syncing, with everything needed to finish it.
pub(crate) struct Written {
    pub store: Arc<Store>,
    /// Sequence number of its first signature record.
    pub first_seq: u64,
    /// The sequence number after its last signature record.
    pub next_seq: u64,
    /// Sequence number its first event took (the next one, if it has none).
    pub first_event_seq: u64,
    /// Its signers, pending in the index until the sync.
    pub fingerprints: Vec<Fingerprint>,
    /// Each petition whose counts it changed and those counts once it is durable.
    pub counts: Vec<(Arc<Petition>, Counts, Changes)>,
    pub events: Vec<Event>,
    /// Its callers, each whole: every answer already decided, `Accepted` ones valid once synced.
    pub callers: Vec<Caller>,
    /// When the writer began writing it.
    pub started: Instant,
}

/// Where the first failed batch began, for the writer's reconcile.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failure {
    pub first_seq: u64,
    pub first_event_seq: u64,
}

#[derive(Default)]
struct Progress {
    /// Batches finished (made durable and answered, or failed and answered).
    done: u64,
    /// Set by the first failed sync; taken by the writer as it starts to recover.
    failure: Option<Failure>,
}

struct SyncState {
    progress: Mutex<Progress>,
    changed: Condvar,
}

/// The writer's handle on the syncer thread.
pub(crate) struct Syncer {
    sender: Option<Sender<Written>>,
    state: Arc<SyncState>,
    /// Batches handed over.
    sent: u64,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    pub fn start(shared: Arc<Shared>) -> std::io::Result<Syncer> {
        let (sender, receiver) = crossbeam_channel::unbounded();
        let state = Arc::new(SyncState {
            progress: Mutex::new(Progress::default()),
            changed: Condvar::new(),
        });
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("engine-syncer".into())
            .spawn(move || run(&shared, &thread_state, receiver))?;
        Ok(Syncer {
            sender: Some(sender),
            state,
            sent: 0,
            thread: Some(thread),
        })
    }

    /// Hands a written batch over.
    pub fn send(&mut self, written: Written) {
        let sender = self.sender.as_ref().expect("the syncer runs until dropped");
        if sender.send(written).is_err() {
            panic!("the syncer thread stopped (it panicked)");
        }
        self.sent += 1;
    }

    /// True when every batch handed over has been made durable and published: all finished,
    /// and no failure since the last [`take_failure`](Syncer::take_failure).
    pub fn published(&self) -> bool {
        let progress = self.state.progress.lock();
        progress.done == self.sent && progress.failure.is_none()
    }

    /// Waits until every batch handed over has been finished (synced and answered, or failed).
    pub fn drain(&mut self) {
        let mut progress = self.state.progress.lock();
        while progress.done < self.sent {
            let timed_out = self
                .state
                .changed
                .wait_for(&mut progress, Duration::from_millis(100))
                .timed_out();
            if timed_out && self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                panic!("the syncer thread stopped (it panicked) with batches unfinished");
            }
        }
    }

    /// After [`drain`](Syncer::drain): the first failed batch since the last call, if any. The
    /// syncer accepts batches again after this.
    pub fn take_failure(&mut self) -> Option<Failure> {
        self.drain();
        self.state.progress.lock().failure.take()
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            // A panic there has already been reported; the writer is stopping anyway.
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared, state: &SyncState, receiver: Receiver<Written>) {
    let mut group = Vec::new();
    while let Ok(first) = receiver.recv() {
        group.push(first);
        // Everything handed over by now was written before this sync starts, so it covers all.
        group.extend(receiver.try_iter());
        let failed = state.progress.lock().failure.is_some();
        let result = if failed {
            Err(StoreError::Failing)
        } else {
            for fp in group
                .iter()
                .flat_map(|w| w.fingerprints.iter())
                .take(PREFETCH_DISTANCE)
            {
                shared.index().prefetch(*fp);
            }
            sync(&group[0].store)
        };
        let finished = group.len() as u64;
        match result {
            Ok(()) => group.drain(..).for_each(|written| commit(shared, written)),
            Err(e) => {
                if !failed {
                    shared.health().fail(&e);
                    state.progress.lock().failure = Some(Failure {
                        first_seq: group[0].first_seq,
                        first_event_seq: group[0].first_event_seq,
                    });
                }
                group.drain(..).for_each(|written| fail(shared, written));
            }
        }
        // The group's store handles are dropped by now: a drained syncer holds none, so the
        // writer can close and reopen the store.
        state.progress.lock().done += finished;
        state.changed.notify_all();
    }
}

fn sync(store: &Store) -> Result<(), StoreError> {
    #[cfg(test)]
    if fault::take(store.path()) {
        fault::pause(store.path(), fault::Point::FailingSync);
        return Err(StoreError::Rocks("injected sync failure".into()));
    }
    // Syncs the log only: every write that returned before this call is durable after it.
    store.flush(false)
}

fn commit(shared: &Shared, written: Written) {
    publish(
        shared,
        written.next_seq,
        &written.fingerprints,
        &written.counts,
        written.events,
    );
    shared.record_write_latency(written.started.elapsed());
    written
        .callers
        .into_iter()
        .for_each(|caller| answer(shared, caller));
}

/// How many petitions ahead publication prefetches.
const PUBLISH_AHEAD: usize = 4;

/// Publishes a durable batch whose signatures end before `next_seq`: its index entries
/// committed (and the index's mark moved to `next_seq`), its petitions' counts and its events
/// published, the engine's counters advanced.
pub(crate) fn publish(
    shared: &Shared,
    next_seq: u64,
    fingerprints: &[Fingerprint],
    counts: &[(Arc<Petition>, Counts, Changes)],
    events: Vec<Event>,
) {
    let index = shared.index();
    for fp in index.prefetching(fingerprints.iter().copied()) {
        let was_pending = index.commit(fp);
        debug_assert!(was_pending, "an accepted fingerprint was committed twice");
    }
    shared.set_indexed(next_seq);
    // A batch's petitions are mostly cold (over 500,000 petitions, about 1,500 a batch):
    // each one's lock and counts are asked for a few petitions ahead.
    for (at, (petition, after, changes)) in counts.iter().enumerate() {
        if let Some((ahead, _, _)) = counts.get(at + PUBLISH_AHEAD) {
            ahead.prefetch_publish();
        }
        petition.publish(*after, changes, shared.recent());
    }
    shared.publish_events(events);
    shared.count_batch(fingerprints.len() as u64);
}

fn fail(shared: &Shared, mut written: Written) {
    for fp in &written.fingerprints {
        shared.index().remove(*fp);
    }
    // Every answer of the batch goes: the accepted ones were not made durable, and the others
    // (a duplicate, a token already validated) may rest on an earlier batch that failed with it.
    for caller in &mut written.callers {
        for (_, answer) in &mut caller.answers {
            *answer = Err(SubmitError::StorageUnavailable);
        }
    }
    written
        .callers
        .into_iter()
        .for_each(|caller| answer(shared, caller));
}

/// Answers one caller whose signatures are all decided.
pub(crate) fn answer(shared: &Shared, caller: Caller) {
    // Release the reservation before answering: a caller that got its answer must see the queue
    // without its signatures.
    shared.release_inflight(caller.reserved);
    caller.reply.send(caller.answers);
}

/// A test hook: make the syncs of one store fail, as a disk whose `fdatasync` reports an error.
#[cfg(test)]
pub(crate) mod fault {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use parking_lot::{Condvar, Mutex};

    static FAILURES: Mutex<Vec<(PathBuf, u32)>> = Mutex::new(Vec::new());
    static HOLDS: Mutex<Vec<(PathBuf, Point, Arc<Gate>)>> = Mutex::new(Vec::new());

    /// How long a test waits for a thread to reach a held point before it fails.
    const ARRIVAL_LIMIT: Duration = Duration::from_secs(30);

    /// Where a test can hold a thread once, to force an interleaving.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Point {
        /// An injected sync failure, before it is reported.
        FailingSync,
        /// The writer's loop, after its health check and before it decides to block.
        WriterLoop,
        /// A writer round, after its health check and before it writes.
        WriterRound,
    }

    #[derive(Default)]
    struct GateState {
        arrived: bool,
        released: bool,
    }

    #[derive(Default)]
    struct Gate {
        state: Mutex<GateState>,
        changed: Condvar,
    }

    /// A point held by a test: the next thread of its store to reach it waits there until the
    /// test releases it (or drops the hold, as a failing test does).
    pub struct Hold(Arc<Gate>);

    /// Holds the next thread of the store at `path` that reaches `point`.
    pub fn hold(path: &Path, point: Point) -> Hold {
        let gate = Arc::new(Gate::default());
        HOLDS
            .lock()
            .push((path.to_owned(), point, Arc::clone(&gate)));
        Hold(gate)
    }

    impl Hold {
        /// Waits until a thread is held here; fails the test if none comes in time.
        pub fn wait_arrival(&self) {
            let deadline = Instant::now() + ARRIVAL_LIMIT;
            let mut state = self.0.state.lock();
            while !state.arrived {
                let timed_out = self.0.changed.wait_until(&mut state, deadline).timed_out();
                assert!(
                    !timed_out || state.arrived,
                    "no thread reached the held point"
                );
            }
        }

        /// Lets the held thread (or the next one to arrive) go on.
        pub fn release(self) {}
    }

    impl Drop for Hold {
        fn drop(&mut self) {
            self.0.state.lock().released = true;
            self.0.changed.notify_all();
        }
    }

    /// Waits here while a test holds this point.
    pub fn pause(path: &Path, point: Point) {
        let gate = {
            let mut holds = HOLDS.lock();
            let Some(at) = holds.iter().position(|(p, q, _)| p == path && *q == point) else {
                return;
            };
            holds.swap_remove(at).2
        };
        let mut state = gate.state.lock();
        state.arrived = true;
        gate.changed.notify_all();
        while !state.released {
            gate.changed.wait(&mut state);
        }
    }

    /// The next `n` syncs of the store at `path` fail.
    pub fn fail_syncs(path: &Path, n: u32) {
        FAILURES.lock().push((path.to_owned(), n));
    }

    /// Whether this sync of the store at `path` is to fail.
    pub(super) fn take(path: &Path) -> bool {
        let mut failures = FAILURES.lock();
        let Some(at) = failures.iter().position(|(p, _)| p == path) else {
            return false;
        };
        failures[at].1 -= 1;
        if failures[at].1 == 0 {
            failures.swap_remove(at);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    use crate::{Config, Durability, Engine, NewSignature, Outcome, PetitionSpec};

    /// A failed sync while other batches are written behind it: nothing it covers, nor any batch
    /// after it, is acknowledged; the engine recovers by itself; the refused signatures that
    /// reached the log anyway are found (resent, they are duplicates), and counts match the
    /// store, also after a reopen.
    #[test]
    fn a_failed_sync_acknowledges_nothing_and_the_engine_recovers() {
        const THREADS: usize = 4;
        let (_dir, path, config, engine) = sync_engine(vec![10_000, 100_000]);

        let submit = |thread: usize, round: usize| {
            let emails: Vec<String> = (0..50)
                .map(|i| format!("t{thread}.r{round}.{i}@example.org"))
                .collect();
            let batch = emails.iter().map(|e| NewSignature::new("p", e)).collect();
            emails.into_iter().zip(engine.submit_batch(batch))
        };
        let (mut acked, mut refused) = (HashSet::new(), HashSet::new());
        let mut fail_at = Some(20);
        for round in 0..200 {
            if fail_at == Some(round) {
                super::fault::fail_syncs(&path, 1);
                fail_at = None;
            }
            let answers: Vec<Vec<_>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..THREADS)
                    .map(|t| scope.spawn(move || submit(t, round).collect()))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("submitter"))
                    .collect()
            });
            for (email, outcome) in answers.into_iter().flatten() {
                match outcome {
                    Ok(Outcome::Accepted { .. }) => assert!(acked.insert(email)),
                    Err(e) => {
                        assert!(e.is_retryable(), "a failed sync must be retryable: {e:?}");
                        assert!(refused.insert(email));
                    }
                    Ok(other) => panic!("unexpected {other:?}"),
                }
            }
            if !refused.is_empty() && round > 40 {
                break;
            }
        }
        assert!(!refused.is_empty(), "the injected failure refused nothing");

        wait_healthy(&engine);
        let resend = acked.iter().map(|e| NewSignature::new("p", e)).collect();
        for outcome in engine.submit_batch(resend) {
            assert!(
                matches!(outcome, Ok(Outcome::Duplicate { .. })),
                "lost: {outcome:?}"
            );
        }
        // The batches whose sync failed were written first: they are in the store, and the
        // recovery found them. Signatures refused at admission while the engine was failing
        // never reached it.
        let resend = refused.iter().map(|e| NewSignature::new("p", e)).collect();
        let mut found = 0;
        for outcome in engine.submit_batch(resend) {
            match outcome {
                Ok(Outcome::Duplicate { .. }) => found += 1,
                Ok(Outcome::Accepted { .. }) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            found > 0,
            "the failed sync's own batch was not found in the store"
        );
        let total = (acked.len() + refused.len()) as u64;
        assert_eq!(engine.count("p"), Some(total));
        engine.verify_store().expect("consistent");
        engine.close().expect("closes");

        let engine = Engine::open(config).expect("reopens");
        engine.wait_ready().expect("ready");
        assert_eq!(engine.count("p"), Some(total));
        engine.verify_store().expect("consistent after reopen");
    }

    fn sync_engine(
        thresholds: Vec<u64>,
    ) -> (tempfile::TempDir, std::path::PathBuf, Config, Engine) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("data");
        let mut config = Config::persistent(&path);
        config.durability = Durability::Sync;
        // No expiry sweep: its control job would wait for a held sync and hold up the writer.
        config.sweep_interval = None;
        let engine = Engine::open(config.clone()).expect("opens");
        engine.wait_ready().expect("ready");
        let mut spec = PetitionSpec::new("p");
        spec.thresholds = Some(thresholds);
        engine.register(spec).expect("registers");
        (dir, path, config, engine)
    }

    /// Recovery retries by itself; poll for it with a bound.
    fn wait_healthy(engine: &Engine) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !engine.stats().storage_healthy {
            let stats = engine.stats();
            assert!(
                Instant::now() < deadline,
                "the engine did not recover: {} storage errors, the last {:?}",
                stats.storage_errors_total,
                stats.last_storage_error
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The failed sync is reported on the syncer's thread; poll for it with a bound.
    fn wait_unhealthy(engine: &Engine) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while engine.stats().storage_healthy {
            assert!(
                Instant::now() < deadline,
                "the failed sync was not reported"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn three(prefix: &str) -> Vec<NewSignature> {
        (0..3)
            .map(|i| NewSignature::new("p", format!("{prefix}{i}@example.org")))
            .collect()
    }

    /// A's sync fails while the writer is already in B's round, past its health check: B must
    /// count on from A's written count (A's records and count are in the log), or the store
    /// holds a count below its signers and a milestone twice. The interleaving is forced: A's
    /// failing sync is held until B's round has passed its health check, and B's round until
    /// the failure is reported.
    #[test]
    fn a_sync_failure_during_the_next_round_keeps_counts_and_milestones_exact() {
        use super::fault::{fail_syncs, hold, Point};
        let (_dir, path, config, engine) = sync_engine(vec![3]);
        fail_syncs(&path, 1);
        let failing = hold(&path, Point::FailingSync);
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(|| engine.submit_batch(three("a")));
            failing.wait_arrival();
            let round = hold(&path, Point::WriterRound);
            let b = scope.spawn(|| engine.submit_batch(three("b")));
            round.wait_arrival();
            assert!(engine.stats().storage_healthy, "B's round began healthy");
            failing.release();
            wait_unhealthy(&engine);
            round.release();
            (a.join().expect("a"), b.join().expect("b"))
        });
        for outcome in a.iter().chain(&b) {
            assert!(matches!(outcome, Err(e) if e.is_retryable()), "{outcome:?}");
        }
        wait_healthy(&engine);
        // Both batches were written before their syncs failed, so the recovery found both.
        assert_eq!(engine.count("p"), Some(6));
        let milestones = engine.milestones_after(0, 10);
        assert_eq!(milestones.len(), 1, "{milestones:?}");
        engine.verify_store().expect("consistent");
        engine.close().expect("closes");
        let engine = Engine::open(config).expect("reopens");
        engine.wait_ready().expect("ready after reopen");
        assert_eq!(engine.count("p"), Some(6));
        engine.verify_store().expect("consistent after reopen");
    }

    /// The last batch's sync fails just after the writer's health check: the writer must not
    /// then block waiting for a job, since admission refuses every signature while the engine
    /// is failing and no job would come to wake it. The interleaving is forced: the failing
    /// sync is held until the writer's loop has passed its health check, and the loop until the
    /// failure is reported.
    #[test]
    fn a_sync_failure_as_the_writer_goes_idle_is_still_recovered() {
        use super::fault::{fail_syncs, hold, Point};
        let (_dir, path, _config, engine) = sync_engine(vec![1_000]);
        fail_syncs(&path, 1);
        let failing = hold(&path, Point::FailingSync);
        let outcome = std::thread::scope(|scope| {
            let submitted = scope.spawn(|| engine.submit(NewSignature::new("p", "a@example.org")));
            failing.wait_arrival();
            // The writer has handed the batch over; while its sync is held the writer looks at
            // the syncer again and again, so its next look is held here.
            let idle = hold(&path, Point::WriterLoop);
            idle.wait_arrival();
            failing.release();
            wait_unhealthy(&engine);
            idle.release();
            submitted.join().expect("submitter")
        });
        assert!(
            matches!(&outcome, Err(e) if e.is_retryable()),
            "{outcome:?}"
        );
        wait_healthy(&engine);
        let outcome = engine.submit(NewSignature::new("p", "b@example.org"));
        assert!(
            matches!(outcome, Ok(Outcome::Accepted { .. })),
            "{outcome:?}"
        );
        engine.verify_store().expect("consistent");
    }
}
