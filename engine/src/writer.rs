//! The group-commit writer: one thread that owns the store.
//!
//! Callers admit signatures into the index as *pending* and send a [`Job`] down an unbounded
//! channel (the bound is the engine's in-flight signature count, checked before admission). The
//! writer blocks for the first job, takes every job already queued up to
//! `batch_signatures_max` signatures, and writes them with their count updates and any milestones
//! in one `WriteBatch`. Only once that is durable are the index entries committed, counts
//! published and callers answered. In `sync` durability the writer writes without a sync and
//! hands the batch to the [`Syncer`](crate::syncer), which syncs the log for every batch handed
//! over so far and then commits and answers, while the writer goes on with the next batch. In
//! the other durabilities the writer commits by itself. There is no timer: at low load a batch is
//! one job, under load batches grow by themselves because jobs queue while earlier ones are
//! written and synced.
//!
//! On a failed write nothing in the batch is acknowledged: its index entries are removed, every
//! caller gets `StorageUnavailable`, and the engine refuses new signatures until the writer has
//! reopened the store, reconciled memory with what the store really holds (a failed write may
//! still have reached the log), and seen a probe write succeed.
//!
//! The writer is also where the index is rebuilt on open, since it owns the store.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rocksdb::WriteBatch;

use crate::config::Durability;
use crate::engine::{now_ms, Reply, Shared, PREFETCH_DISTANCE};
use crate::error::StoreError;
use crate::error::SubmitError;
use crate::fingerprint::Fingerprint;
use crate::index::{Insert, Presence};
use crate::petition::{Milestone, Petition, PetitionMeta};
use crate::record;
use crate::store::{self, Store, CF_COUNTS, CF_FINGERPRINTS, CF_META};
use crate::store::{CF_MILESTONES, CF_PETITIONS, CF_SIGNATURES};
use crate::syncer::{self, Caller, Syncer, Written};
use crate::Outcome;

/// How long the writer waits between attempts to bring a failed store back.
const RECOVERY_BACKOFF: Duration = Duration::from_millis(200);
/// How long the writer waits for the original of a pending duplicate to arrive in the queue.
const DEFERRED_POLL: Duration = Duration::from_millis(1);

/// One signature on its way to the writer.
pub(crate) struct Item {
    /// Position in the caller's batch.
    pub index: usize,
    /// Which of its job's `petitions` it signs.
    pub petition: u32,
    pub fp: Fingerprint,
    /// Where its encoded signature record ([`record::encode`]), built at admission, lies
    /// in its job's `records`.
    pub record: Range<usize>,
    /// True: the index already held this fingerprint as pending when it was admitted, so its
    /// answer waits for the original's write (duplicate if it lands, retry if it fails).
    pub awaiting: bool,
}

pub(crate) type Answers = Vec<(usize, Result<Outcome, SubmitError>)>;

/// Work for the writer.
pub(crate) enum Job {
    Sign(SignJob),
    /// Persist new or changed petitions (number, meta) in one synced batch, then answer.
    Petitions(
        Vec<(u32, PetitionMeta)>,
        std::sync::mpsc::SyncSender<Result<(), StoreError>>,
    ),
    /// Sync everything written so far.
    Flush(std::sync::mpsc::SyncSender<Result<(), StoreError>>),
    /// Check the whole store (see `verify.rs`).
    Verify(std::sync::mpsc::SyncSender<Result<crate::VerifyReport, String>>),
    /// Finish every queued job, flush memtables, and stop.
    Shutdown(std::sync::mpsc::SyncSender<Result<(), StoreError>>),
}

pub(crate) struct SignJob {
    pub items: Vec<Item>,
    /// Every petition the call resolved (items refer to them by position), each once: a hot
    /// petition's reference count is touched once per call, not once per signature on every
    /// core.
    pub petitions: Vec<Arc<Petition>>,
    /// The items' encoded records, back to back: one allocation per call.
    pub records: Vec<u8>,
    pub reply: Reply,
    /// The engine's reconcile generation when the items were admitted.
    pub generation: u64,
    /// In-flight signatures this job holds, released when it is answered.
    pub reserved: usize,
}

/// One group commit's `WriteBatch` and what the commit publishes.
struct Prepared {
    batch: WriteBatch,
    /// Each touched petition and its count after the batch.
    counts: Vec<(Arc<Petition>, u64)>,
    /// Per fresh item, its petition's count once it is in.
    ordinals: Vec<u64>,
    milestones: Vec<Milestone>,
    next_milestone_seq: u64,
}

/// A job being worked on: answers so far, items still open.
struct OpenJob {
    items: Vec<Item>,
    petitions: Vec<Arc<Petition>>,
    records: Vec<u8>,
    answers: Answers,
    reply: Option<Reply>,
    generation: u64,
    reserved: usize,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    store: Option<Arc<Store>>,
    path: PathBuf,
    /// In `sync` durability, the thread that syncs written batches and answers their callers.
    syncer: Option<Syncer>,
    /// Petitions' counts as written, for those whose batches the syncer has not published yet.
    written_counts: HashMap<u32, u64>,
    receiver: Receiver<Job>,
    durability: Durability,
    batch_signatures_max: usize,
    next_seq: u64,
    next_milestone_seq: u64,
    deferred: Vec<OpenJob>,
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        store: Store,
        receiver: Receiver<Job>,
        next_seq: u64,
        next_milestone_seq: u64,
    ) -> std::io::Result<Writer> {
        let durability = shared.config.durability;
        let batch_signatures_max = shared.config.batch_signatures_max;
        let syncer = match durability {
            Durability::Sync => Some(Syncer::start(Arc::clone(&shared))?),
            Durability::Buffered | Durability::None => None,
        };
        Ok(Writer {
            path: store.path().to_owned(),
            shared,
            store: Some(Arc::new(store)),
            syncer,
            written_counts: HashMap::new(),
            receiver,
            durability,
            batch_signatures_max,
            next_seq,
            next_milestone_seq,
            deferred: Vec::new(),
        })
    }

    /// Rebuilds the index from the store, then serves jobs until shut down.
    pub fn run(mut self) {
        if let Err(e) = self.rebuild_index() {
            self.shared
                .fail_recovery(format!("rebuilding the index failed: {e}"));
        } else {
            self.shared.set_ready();
        }
        let mut shutdown = None;
        loop {
            let first = if shutdown.is_some() {
                match self.receiver.try_recv() {
                    Ok(job) => job,
                    Err(_) if self.deferred.is_empty() => break,
                    Err(_) => {
                        // Only deferred duplicates remain; their originals are in flight.
                        std::thread::sleep(DEFERRED_POLL);
                        self.round(Vec::new());
                        continue;
                    }
                }
            } else if !self.shared.healthy.load(Ordering::Acquire) {
                match self.receiver.recv_timeout(RECOVERY_BACKOFF) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        self.try_recover();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else if self.may_block() {
                match self.receiver.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            } else if self.deferred.is_empty() {
                // A batch with the syncer may yet fail (or has just failed): look again soon.
                match self.receiver.recv_timeout(RECOVERY_BACKOFF) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match self.receiver.recv_timeout(DEFERRED_POLL) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        self.round(Vec::new());
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            let mut sign_jobs = Vec::new();
            let mut signatures = 0usize;
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Sign(job) => {
                        signatures += job.items.len();
                        sign_jobs.push(job);
                    }
                    other => {
                        // Keep order: everything queued before a control job is written first.
                        self.round(std::mem::take(&mut sign_jobs));
                        signatures = 0;
                        if let Some(reply) = self.control(other) {
                            shutdown = Some(reply);
                        }
                    }
                }
                if signatures < self.batch_signatures_max {
                    next = self.receiver.try_recv().ok();
                }
            }
            if !sign_jobs.is_empty() || !self.deferred.is_empty() {
                self.round(sign_jobs);
            }
        }
        self.drain_syncer();
        self.syncer = None;
        let result = match &self.store {
            Some(store) => store.flush(true),
            None => Ok(()),
        };
        self.store = None;
        if let Some(reply) = shutdown {
            // The closer may have given up waiting; nothing to do then.
            let _ = reply.send(result);
        }
    }

    /// Whether the writer may block until the next job: nothing is deferred, and nothing is
    /// with the syncer that could still fail or has failed. After a failed sync no job would
    /// wake the writer to recover (admission refuses while the engine is failing), so it must
    /// not block then. Asked after the health check: a failure between the two shows here.
    fn may_block(&self) -> bool {
        #[cfg(test)]
        crate::syncer::fault::pause(&self.path, crate::syncer::fault::Point::WriterLoop);
        self.deferred.is_empty() && self.syncer.as_ref().is_none_or(Syncer::published)
    }

    /// Handles a control job; returns the reply channel if it was `Shutdown`.
    fn control(&mut self, job: Job) -> Option<std::sync::mpsc::SyncSender<Result<(), StoreError>>> {
        // Control jobs see the store and memory with every earlier batch finished.
        self.drain_syncer();
        match job {
            Job::Sign(_) => unreachable!("sign jobs are batched by the caller"),
            Job::Petitions(petitions, reply) => {
                let result = self.write_petitions(&petitions);
                let _ = reply.send(result);
                None
            }
            Job::Flush(reply) => {
                let result = match &self.store {
                    Some(store) if self.shared.healthy.load(Ordering::Acquire) => {
                        store.flush(self.durability == Durability::None)
                    }
                    _ => Err(StoreError::Rocks("store is failing".into())),
                };
                let _ = reply.send(result);
                None
            }
            Job::Verify(reply) => {
                let result = match &self.store {
                    Some(store) => crate::verify::verify(&self.shared, store),
                    None => Err("the store is failing".into()),
                };
                let _ = reply.send(result);
                None
            }
            Job::Shutdown(reply) => Some(reply),
        }
    }

    fn write_petitions(&mut self, petitions: &[(u32, PetitionMeta)]) -> Result<(), StoreError> {
        if !self.shared.healthy.load(Ordering::Acquire) {
            self.try_recover();
        }
        let Some(store) = &self.store else {
            return Err(StoreError::Rocks("store is failing".into()));
        };
        let mut batch = WriteBatch::default();
        for (num, meta) in petitions {
            batch.put_cf(
                store.cf(CF_PETITIONS),
                num.to_be_bytes(),
                store::encode_petition(meta),
            );
        }
        // Petition changes are rare and must survive power loss whatever the signature
        // durability: always sync.
        let result = store.write(batch, Durability::Sync);
        if result.is_err() {
            self.shared.healthy.store(false, Ordering::Release);
        }
        result
    }

    /// Writes one group commit: every fresh item of `jobs` and of the deferred jobs.
    fn round(&mut self, jobs: Vec<SignJob>) {
        // Duplicates awaiting their original are resolved against the index, so the batches the
        // syncer still holds must be finished (committed or failed) first.
        let awaiting = !self.deferred.is_empty()
            || jobs
                .iter()
                .any(|job| job.items.iter().any(|item| item.awaiting));
        if awaiting {
            self.drain_syncer();
        }
        let mut open: Vec<OpenJob> = std::mem::take(&mut self.deferred);
        open.extend(jobs.into_iter().map(|job| OpenJob {
            items: job.items,
            petitions: job.petitions,
            records: job.records,
            answers: Vec::new(),
            reply: Some(job.reply),
            generation: job.generation,
            reserved: job.reserved,
        }));
        if !self.shared.healthy.load(Ordering::Acquire) {
            self.try_recover();
        }
        let healthy = self.shared.healthy.load(Ordering::Acquire) && self.store.is_some();
        let generation = self.shared.generation.load(Ordering::Acquire);
        #[cfg(test)]
        crate::syncer::fault::pause(&self.path, crate::syncer::fault::Point::WriterRound);

        // Split items into fresh ones to write now and duplicates awaiting their original.
        let mut fresh: Vec<(usize, Item)> = Vec::new();
        for (j, job) in open.iter_mut().enumerate() {
            let mut waiting = Vec::new();
            for item in std::mem::take(&mut job.items) {
                if item.awaiting {
                    waiting.push(item);
                } else if job.generation != generation
                    && self.shared.index.presence(item.fp) == Presence::Committed
                {
                    // A reconcile found this signer in the store after the item was admitted:
                    // the write that "failed" had reached the log. It is a duplicate now.
                    let count = job.petitions[item.petition as usize]
                        .count
                        .load(Ordering::Acquire);
                    job.answers
                        .push((item.index, Ok(Outcome::Duplicate { count })));
                } else {
                    fresh.push((j, item));
                }
            }
            job.items = waiting;
        }

        if !fresh.is_empty() {
            if !healthy {
                for (j, item) in fresh {
                    self.shared.index.remove(item.fp);
                    open[j]
                        .answers
                        .push((item.index, Err(SubmitError::StorageUnavailable)));
                }
            } else if !awaiting && self.syncer.is_some() {
                // Every job is whole once its fresh items are durable: the syncer answers them.
                self.write_for_syncer(open, fresh);
                return;
            } else {
                self.write_fresh(&mut open, fresh);
            }
        }
        self.settle(open, healthy);
    }

    /// Resolves duplicates that waited for their original, then answers every job that has
    /// nothing left open and defers the others.
    fn settle(&mut self, open: Vec<OpenJob>, healthy: bool) {
        for mut job in open {
            let mut still = Vec::new();
            for mut item in std::mem::take(&mut job.items) {
                if !healthy {
                    job.answers
                        .push((item.index, Err(SubmitError::StorageUnavailable)));
                    continue;
                }
                let petition = &job.petitions[item.petition as usize];
                match self.shared.index.presence(item.fp) {
                    Presence::Committed => {
                        let count = petition.count.load(Ordering::Acquire);
                        self.shared.duplicates.fetch_add(1, Ordering::Relaxed);
                        job.answers
                            .push((item.index, Ok(Outcome::Duplicate { count })));
                    }
                    Presence::Pending => still.push(item),
                    Presence::Absent => {
                        // The original failed or was refused: this one becomes the original.
                        match self.shared.index.insert(item.fp, true) {
                            Insert::Inserted => {
                                item.awaiting = false;
                                still.push(item);
                            }
                            Insert::Present(Presence::Committed) => {
                                let count = petition.count.load(Ordering::Acquire);
                                self.shared.duplicates.fetch_add(1, Ordering::Relaxed);
                                job.answers
                                    .push((item.index, Ok(Outcome::Duplicate { count })));
                            }
                            Insert::Present(_) => still.push(item),
                        }
                    }
                }
            }
            job.items = still;
            if job.items.is_empty() {
                let reply = job.reply.take().expect("a job is answered once");
                syncer::answer(
                    &self.shared,
                    Caller {
                        reply,
                        answers: std::mem::take(&mut job.answers),
                        reserved: job.reserved,
                    },
                );
            } else {
                self.deferred.push(job);
            }
        }
    }

    /// Encodes one `WriteBatch` of `fresh`: the signature records, their fingerprints, the
    /// touched petitions' counts and the milestones those cross.
    fn prepare(&self, store: &Store, open: &[OpenJob], fresh: &[(usize, Item)]) -> Prepared {
        let now = now_ms();
        let first_seq = self.next_seq;
        let mut batch = WriteBatch::default();
        let mut fingerprints = Vec::with_capacity(fresh.len() * Fingerprint::BYTES);
        // Per petition: (petition, count before, count after).
        let mut touched: HashMap<u32, (Arc<Petition>, u64, u64)> = HashMap::new();
        let mut ordinals = Vec::with_capacity(fresh.len());
        let signatures_cf = store.cf(CF_SIGNATURES);
        for (seq, (j, item)) in (first_seq..).zip(fresh.iter()) {
            let job = &open[*j];
            let petition = &job.petitions[item.petition as usize];
            let entry = touched.entry(petition.num).or_insert_with(|| {
                // Batches still with the syncer have counted past the published count.
                let count = match self.written_counts.get(&petition.num) {
                    Some(&count) => count,
                    None => petition.count.load(Ordering::Acquire),
                };
                (Arc::clone(petition), count, count)
            });
            entry.2 += 1;
            ordinals.push(entry.2);
            batch.put_cf(
                signatures_cf,
                seq.to_be_bytes(),
                &job.records[item.record.clone()],
            );
            record::push_fingerprint(&mut fingerprints, item.fp);
        }
        batch.put_cf(
            store.cf(CF_FINGERPRINTS),
            first_seq.to_be_bytes(),
            &fingerprints,
        );
        let mut milestones = Vec::new();
        let counts_cf = store.cf(CF_COUNTS);
        let milestones_cf = store.cf(CF_MILESTONES);
        let mut milestone_seq = self.next_milestone_seq;
        for (num, (petition, before, after)) in &touched {
            assert!(after > before, "a touched petition's count must grow");
            batch.put_cf(counts_cf, num.to_be_bytes(), after.to_be_bytes());
            for threshold in petition.crossed(*before, *after) {
                batch.put_cf(
                    milestones_cf,
                    milestone_seq.to_be_bytes(),
                    store::milestone_value(*num, threshold, now),
                );
                milestones.push(Milestone {
                    seq: milestone_seq,
                    petition: petition.id.to_string(),
                    threshold,
                    reached_at_ms: now,
                });
                milestone_seq += 1;
            }
        }
        Prepared {
            batch,
            counts: touched
                .into_values()
                .map(|(petition, _, after)| (petition, after))
                .collect(),
            ordinals,
            milestones,
            next_milestone_seq: milestone_seq,
        }
    }

    /// Writes `fresh` without a sync and hands the batch, with every job of the round, to the
    /// syncer, which makes it durable and answers.
    fn write_for_syncer(&mut self, mut open: Vec<OpenJob>, fresh: Vec<(usize, Item)>) {
        let Some(store) = self.store.clone() else {
            unreachable!("write_for_syncer is only called with a healthy store")
        };
        if self.syncer.as_ref().is_some_and(Syncer::published) {
            // Everything written is published: the counts are current again. (Not after a
            // failed sync: then the failed batches' counts are in the log, and this batch
            // must count on from them; the recovery reloads them all.)
            self.written_counts.clear();
        }
        let prepared = self.prepare(&store, &open, &fresh);
        let started = Instant::now();
        if let Err(e) = store.write(prepared.batch, Durability::Buffered) {
            self.fail_fresh(&mut open, fresh, &e);
            // Nothing here awaits an original (that takes the synced path): this only answers.
            self.settle(open, true);
            return;
        }
        let first_seq = self.next_seq;
        let first_milestone_seq = self.next_milestone_seq;
        for (petition, count) in &prepared.counts {
            self.written_counts.insert(petition.num, *count);
        }
        let fingerprints = self.accept(
            &mut open,
            fresh,
            prepared.ordinals,
            prepared.next_milestone_seq,
        );
        let callers = open
            .into_iter()
            .map(|mut job| Caller {
                reply: job.reply.take().expect("a job is answered once"),
                answers: job.answers,
                reserved: job.reserved,
            })
            .collect();
        let written = Written {
            store,
            first_seq,
            first_milestone_seq,
            fingerprints,
            counts: prepared.counts,
            milestones: prepared.milestones,
            callers,
            started,
        };
        self.syncer
            .as_mut()
            .expect("write_for_syncer is only called with a syncer")
            .send(written);
    }

    /// Writes `fresh` in one batch, synced as the durability says, and commits it.
    fn write_fresh(&mut self, open: &mut [OpenJob], fresh: Vec<(usize, Item)>) {
        let Some(store) = self.store.clone() else {
            unreachable!("write_fresh is only called with a healthy store")
        };
        let prepared = self.prepare(&store, open, &fresh);

        // The commit below finds every entry again; their buckets are long out of this core's
        // cache. Start the first few loads now so they land during the write.
        let index = &self.shared.index;
        for (_, item) in fresh.iter().take(PREFETCH_DISTANCE) {
            index.prefetch(item.fp);
        }
        let started = Instant::now();
        let result = store.write(prepared.batch, self.durability);
        self.shared.write_latency.record(started.elapsed());

        match result {
            Ok(()) => {
                let fingerprints =
                    self.accept(open, fresh, prepared.ordinals, prepared.next_milestone_seq);
                syncer::publish(
                    &self.shared,
                    &fingerprints,
                    &prepared.counts,
                    prepared.milestones,
                );
            }
            Err(e) => self.fail_fresh(open, fresh, &e),
        }
    }

    /// After a successful write of `fresh`: moves the sequences past it and gives each item its
    /// `Accepted` answer (sent once the batch is durable). Returns the items' fingerprints.
    fn accept(
        &mut self,
        open: &mut [OpenJob],
        fresh: Vec<(usize, Item)>,
        ordinals: Vec<u64>,
        next_milestone_seq: u64,
    ) -> Vec<Fingerprint> {
        self.next_seq += fresh.len() as u64;
        self.next_milestone_seq = next_milestone_seq;
        let mut fingerprints = Vec::with_capacity(fresh.len());
        for ((j, item), count) in fresh.into_iter().zip(ordinals) {
            fingerprints.push(item.fp);
            open[j]
                .answers
                .push((item.index, Ok(Outcome::Accepted { count })));
        }
        fingerprints
    }

    /// A failed write: nothing in it is acknowledged, and the engine stops taking signatures
    /// until the store is recovered.
    fn fail_fresh(&self, open: &mut [OpenJob], fresh: Vec<(usize, Item)>, e: &StoreError) {
        self.shared.record_storage_error(e);
        self.shared.healthy.store(false, Ordering::Release);
        for (j, item) in fresh {
            self.shared.index.remove(item.fp);
            open[j]
                .answers
                .push((item.index, Err(SubmitError::StorageUnavailable)));
        }
    }

    /// Waits until the syncer has finished every batch handed to it: then every count written
    /// is published (or, after a failure, about to be reloaded by the recovery).
    fn drain_syncer(&mut self) {
        if let Some(syncer) = &mut self.syncer {
            syncer.drain();
        }
        self.written_counts.clear();
    }

    /// Reopens the store, reconciles memory with it, and marks the engine healthy if a probe
    /// write succeeds.
    fn try_recover(&mut self) {
        if let Some(failure) = self.syncer.as_mut().and_then(Syncer::take_failure) {
            // The failed batches and every one after them were answered with an error; the
            // reconcile below finds whichever of them reached the log anyway.
            self.next_seq = self.next_seq.min(failure.first_seq);
            self.next_milestone_seq = self.next_milestone_seq.min(failure.first_milestone_seq);
        }
        self.written_counts.clear();
        // RocksDB refuses writes after a failed one until it is reopened (and the drained
        // syncer holds no handle on it).
        self.store = None;
        let store = match Store::open(&self.path) {
            Ok(store) => store,
            Err(e) => {
                self.shared.record_storage_error(&e);
                return;
            }
        };
        if let Err(e) = self.reconcile(&store) {
            self.shared.record_storage_error(&e);
            self.store = Some(Arc::new(store));
            return;
        }
        let mut probe = WriteBatch::default();
        probe.put_cf(store.cf(CF_META), b"probe", now_ms().to_be_bytes());
        let result = store.write(probe, Durability::Sync);
        self.store = Some(Arc::new(store));
        match result {
            Ok(()) => self.shared.healthy.store(true, Ordering::Release),
            Err(e) => self.shared.record_storage_error(&e),
        }
    }

    /// Brings memory in line with the store after a failed write: batches that reached the log
    /// although their write reported failure are committed in the index, and counts and
    /// milestones are reloaded.
    fn reconcile(&mut self, store: &Store) -> Result<(), StoreError> {
        let stored_next = store.next_signature_seq()?;
        if stored_next > self.next_seq {
            let index = &self.shared.index;
            store.scan_fingerprints(self.next_seq, |_, batch| {
                for fp in record::fingerprints(batch) {
                    if let Insert::Present(Presence::Pending) = index.insert(fp, false) {
                        index.commit(fp);
                    }
                }
            })?;
            // Jobs admitted before this point must re-check their items before writing them.
            self.shared.generation.fetch_add(1, Ordering::AcqRel);
            self.next_seq = stored_next;
        }
        for (num, count) in store.load_counts()? {
            if let Some(petition) = self.shared.registry.by_num(num) {
                petition.count.store(count, Ordering::Release);
            }
        }
        let mut milestones = Vec::new();
        for (seq, num, threshold, at) in store.load_milestones(self.next_milestone_seq)? {
            if let Some(petition) = self.shared.registry.by_num(num) {
                milestones.push(Milestone {
                    seq,
                    petition: petition.id.to_string(),
                    threshold,
                    reached_at_ms: at,
                });
            }
            self.next_milestone_seq = seq + 1;
        }
        self.shared.publish_milestones(milestones);
        Ok(())
    }

    /// Reads every fingerprint batch and inserts it, committed. Two threads: this one reads and
    /// inserts every other batch, a helper inserts the rest.
    fn rebuild_index(&mut self) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let shared = &self.shared;
        let (sender, receiver) = crossbeam_channel::bounded::<Box<[u8]>>(64);
        let duplicates = std::thread::scope(|scope| {
            let helper = scope.spawn(|| {
                let mut duplicates = 0u64;
                for batch in receiver {
                    duplicates += insert_batch(shared, &batch);
                }
                duplicates
            });
            let mut duplicates = 0u64;
            let mut alternate = false;
            let scanned = store.scan_fingerprints(0, |_, batch| {
                alternate = !alternate;
                if alternate {
                    // The helper only stops early if it panicked; then the join below reports it.
                    let _ = sender.send(batch.into());
                } else {
                    duplicates += insert_batch(shared, batch);
                }
            });
            drop(sender);
            let helper = helper.join().expect("index rebuild helper panicked");
            scanned.map(|()| duplicates + helper)
        })?;
        if duplicates > 0 {
            return Err(StoreError::Corrupt {
                what: "fingerprints (a signer is stored twice)",
            });
        }
        let (entries, _) = shared.index.usage();
        let counted: u64 = shared
            .registry
            .all()
            .iter()
            .map(|p| p.count.load(Ordering::Acquire))
            .sum();
        if entries != counted {
            return Err(StoreError::Corrupt {
                what: "counts (they differ from the stored fingerprints)",
            });
        }
        Ok(())
    }
}

/// Inserts one stored fingerprint batch; returns how many were already present.
fn insert_batch(shared: &Shared, batch: &[u8]) -> u64 {
    let mut duplicates = 0;
    let fingerprints = record::fingerprints(batch);
    let n = fingerprints.len();
    for fp in fingerprints {
        if shared.index.insert(fp, false) != Insert::Inserted {
            duplicates += 1;
        }
    }
    shared
        .recovery_loaded
        .fetch_add(n as u64, Ordering::Relaxed);
    duplicates
}
