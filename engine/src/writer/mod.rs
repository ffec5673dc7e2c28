//! The group-commit writer: one thread that owns the store.
//!
//! Callers admit signatures into the index as *pending* and send a [`Job`] down an unbounded
//! channel (the bound is the engine's in-flight signature count, checked before admission). The
//! writer blocks for the first job, takes every job already queued up to
//! `batch_signatures_max` signatures, and writes them with their count updates and any events
//! in one `WriteBatch`. Only once that is durable are the index entries committed, counts
//! published and callers answered. In `sync` durability the writer writes without a sync and
//! hands the batch to the [`Syncer`], which syncs the log for every batch handed
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
//!
//! Layout: this file holds the [`Writer`] thread's loop, its rounds and the deferred duplicates;
//! `commit` encodes, writes and publishes (or fails) one group; `syncer` is the second stage in
//! `sync` durability; `recovery` rebuilds the index and brings a failed store back.

mod commit;
mod lifecycle;
mod recovery;
pub(crate) mod syncer;

pub(crate) use recovery::{catch_up_index, load_index};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rocksdb::WriteBatch;

use crate::config::Durability;
use crate::error::{RecoveryError, StoreError, SubmitError, VerifyError};
use crate::event::{Event, NewEvent};
use crate::fingerprint::Fingerprint;
use crate::guard::{self, GuardChange};
use crate::index::{Insert, Presence};
use crate::job::{Item, ItemKind, Job, Outcome, SignJob};
use crate::petition::{Changes, Counts};
use crate::petition::{Petition, PetitionMeta};
use crate::shared::Shared;
use crate::store::{self, Store, CF_GUARDS, CF_PETITIONS, CF_WEBHOOKS};
use crate::webhook::{Webhook, WebhookChange};
use syncer::Syncer;

/// How long the writer waits between attempts to bring a failed store back.
const RECOVERY_BACKOFF: Duration = Duration::from_millis(200);
/// How long the writer waits for the original of a pending duplicate to arrive in the queue.
const DEFERRED_POLL: Duration = Duration::from_millis(1);

/// What the writer does when no job came.
enum Idle {
    /// The channel is closed, or the engine is shutting down with nothing left: stop.
    Stop,
    /// The store is failing: try to bring it back.
    Recover,
    /// Duplicates are deferred: see whether their originals have landed.
    Settle,
    /// Nothing to do but look at the syncer's progress again.
    Look,
}

/// Where the answer to `Shutdown` goes.
type ShutdownReply = std::sync::mpsc::SyncSender<Result<(), StoreError>>;

/// One group commit's `WriteBatch` and what the commit publishes.
/// (Built by `commit.rs`; declared here, beside the writer's other state.)
struct Prepared {
    batch: WriteBatch,
    /// Each petition whose counts the batch changes, its counts after it and its breakdown's
    /// changes.
    counts: Vec<(Arc<Petition>, Counts, Changes)>,
    /// Per fresh item, its answer (given once the batch is durable).
    answers: Vec<Result<Outcome, SubmitError>>,
    /// The new signers, pending in the index until the batch is durable.
    commits: Vec<Fingerprint>,
    /// Signature sequences the batch used.
    written: u64,
    events: Vec<Event>,
    next_event_seq: u64,
    /// The key of the next `transitions` entry after this batch.
    next_transition: u64,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    store: Option<Arc<Store>>,
    path: PathBuf,
    /// In `sync` durability, the thread that syncs written batches and answers their callers.
    syncer: Option<Syncer>,
    /// Petitions' counts as written, for those whose batches the syncer has not published yet.
    written_counts: HashMap<u32, Counts>,
    /// Regions (by id, from 1) put into a batch so far: the next batch carries the rest. A
    /// recovery sets it from the store.
    regions_stored: std::cell::Cell<u32>,
    receiver: Receiver<Job>,
    durability: Durability,
    batch_signatures_max: usize,
    next_seq: u64,
    next_event_seq: u64,
    deferred: Vec<SignJob>,
    /// Where the expiry sweep goes on from.
    sweep_cursor: u64,
    /// The key of the next `transitions` entry.
    next_transition_seq: u64,
    /// Expired signatures whose fingerprints are still in the index because the write that
    /// dropped them reported failure: the recovery looks them up in the store.
    unsettled_removals: Vec<(u64, Fingerprint)>,
    /// Where the index comes from at open; taken by `run`.
    source: Option<IndexSource>,
}

/// Where the writer gets the index from when it starts.
pub(crate) enum IndexSource {
    /// Reading every stored fingerprint back.
    Rebuild,
    /// It came filled from a follower of the log.
    Warm(crate::index::Index),
    /// The index saved beside the store, being read (`index_file`): taken if it is this
    /// store's, and brought up to it; else the fingerprints are read back.
    Saved(std::thread::JoinHandle<Option<crate::index_file::Saved>>),
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        store: Store,
        receiver: Receiver<Job>,
        next_seq: u64,
        next_event_seq: u64,
        sweep_cursor: u64,
        source: IndexSource,
    ) -> std::io::Result<Writer> {
        let durability = shared.config().durability;
        let batch_signatures_max = shared.config().batch_signatures_max;
        let syncer = match durability {
            Durability::Sync => Some(Syncer::start(Arc::clone(&shared))?),
            Durability::Buffered | Durability::None => None,
        };
        let store = Arc::new(store);
        shared.set_store(Some(Arc::clone(&store)));
        // At open the dictionary holds what the store holds.
        let regions_stored = std::cell::Cell::new(shared.regions().len());
        Ok(Writer {
            path: store.path().to_owned(),
            shared,
            store: Some(store),
            syncer,
            written_counts: HashMap::new(),
            regions_stored,
            receiver,
            durability,
            batch_signatures_max,
            next_seq,
            next_event_seq,
            deferred: Vec::new(),
            sweep_cursor,
            next_transition_seq: 0,
            unsettled_removals: Vec::new(),
            source: Some(source),
        })
    }

    /// Rebuilds the index from the store (or takes a follower's, or a saved one), then serves
    /// jobs until shut down.
    pub fn run(mut self) {
        let recovered = match self.source.take() {
            // One of another shape (a follower opened with other shard bits) is read back.
            Some(IndexSource::Warm(index))
                if index.shard_bits() == self.shared.index().shard_bits() =>
            {
                self.shared.index().replace_with(index);
                // Nothing is read back.
                self.shared.expect_recovered(0);
                self.adopt_index()
            }
            // A loading thread that panicked only costs the rebuild.
            Some(IndexSource::Saved(loading)) => {
                // While the index loads, what the read-back after it reads comes into the page
                // cache: with the store's files evicted from it, reading back 112 M signatures
                // took 7 s longer (26.2 s against 18.5-18.8 s ready).
                if let Some(store) = &self.store {
                    if let Some(from) = crate::index_file::saved_mark(store.path()) {
                        store.warm_fingerprints(from);
                    }
                }
                match loading.join().ok().flatten() {
                    Some(saved) => self.adopt_saved(saved),
                    None => self.rebuild_index(),
                }
            }
            Some(IndexSource::Warm(_) | IndexSource::Rebuild) | None => self.rebuild_index(),
        };
        // Every signature stored so far is durable and in the index.
        self.shared.set_indexed(self.next_seq);
        if let Err(e) = recovered {
            self.shared.fail_recovery(RecoveryError::Rebuild(e));
        } else {
            self.shared.set_ready();
        }
        let mut shutdown = None;
        loop {
            let first = match self.next_job(shutdown.is_some()) {
                Ok(job) => job,
                Err(Idle::Stop) => break,
                Err(Idle::Recover) => {
                    self.try_recover();
                    continue;
                }
                Err(Idle::Settle) => {
                    self.round(Vec::new());
                    continue;
                }
                Err(Idle::Look) => continue,
            };
            if let Some(reply) = self.gather(first) {
                shutdown = Some(reply);
            }
        }
        self.drain_syncer();
        self.syncer = None;
        let result = match &self.store {
            Some(store) => store.flush(true),
            None => Ok(()),
        };
        if let (Ok(()), Some(store)) = (&result, &self.store) {
            if self.shared.health().is_healthy() {
                store.compact_breakdowns();
            }
            self.save_index(store);
        }
        self.shared.set_store(None);
        self.store = None;
        if let Some(reply) = shutdown {
            // The closer may have given up waiting; nothing to do then.
            let _ = reply.send(result);
        }
    }

    /// Saves the index beside the store (`index_file`) after its last write, so that the next
    /// open loads it and reads nothing back. Only a healthy, ready engine's index is whole; a
    /// failure only costs the next open its rebuild (or a catch-up from the last saved one).
    fn save_index(&self, store: &Store) {
        if !self.shared.health().is_healthy() || !self.shared.is_ready() {
            return;
        }
        if self.shared.index_saved_from() == Some(self.next_seq)
            && crate::index_file::exists(store.path())
        {
            // The file beside the store (saved, or loaded at open) already holds every stored
            // signature; removals written since are taken out when it is loaded. Writing it again
            // would cost a second per 40 M signatures and change nothing.
            return;
        }
        if crate::index_file::save_at_rest(store, self.shared.index(), self.next_seq) {
            self.shared.index_saved(self.next_seq);
        }
    }

    /// Waits for the next job as long as the writer's state allows, or says what to do instead.
    fn next_job(&mut self, shutting_down: bool) -> Result<Job, Idle> {
        if shutting_down {
            return match self.receiver.try_recv() {
                Ok(job) => Ok(job),
                Err(_) if self.deferred.is_empty() => Err(Idle::Stop),
                Err(_) => {
                    // Only deferred duplicates remain; their originals are in flight.
                    std::thread::sleep(DEFERRED_POLL);
                    Err(Idle::Settle)
                }
            };
        }
        let (patience, idle) = if !self.shared.health().is_healthy() {
            (Some(RECOVERY_BACKOFF), Idle::Recover)
        } else if self.may_block() {
            (None, Idle::Stop)
        } else if self.deferred.is_empty() {
            // A batch with the syncer may yet fail (or has just failed): look again soon.
            (Some(RECOVERY_BACKOFF), Idle::Look)
        } else {
            (Some(DEFERRED_POLL), Idle::Settle)
        };
        let received = match patience {
            None => self
                .receiver
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
            Some(timeout) => self.receiver.recv_timeout(timeout),
        };
        received.map_err(|error| match error {
            RecvTimeoutError::Timeout => idle,
            RecvTimeoutError::Disconnected => Idle::Stop,
        })
    }

    /// Takes `first` and every job already queued, up to `batch_signatures_max` signatures, and
    /// writes the sign jobs as one round; control jobs are handled in queue order. Returns the
    /// reply channel of a `Shutdown` among them.
    fn gather(&mut self, first: Job) -> Option<ShutdownReply> {
        let mut shutdown = None;
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
        shutdown
    }

    /// Whether the writer may block until the next job: nothing is deferred, and nothing is
    /// with the syncer that could still fail or has failed. After a failed sync no job would
    /// wake the writer to recover (admission refuses while the engine is failing), so it must
    /// not block then. Asked after the health check: a failure between the two shows here.
    fn may_block(&self) -> bool {
        #[cfg(test)]
        syncer::fault::pause(&self.path, syncer::fault::Point::WriterLoop);
        self.deferred.is_empty() && self.syncer.as_ref().is_none_or(Syncer::published)
    }

    /// Handles a control job; returns the reply channel if it was `Shutdown`.
    fn control(&mut self, job: Job) -> Option<ShutdownReply> {
        // Control jobs see the store and memory with every earlier batch finished; a webhook's
        // cursor depends on no batch, and waiting for the syncer would put a sync's latency on
        // every webhook delivery.
        if !matches!(job, Job::Webhook(WebhookChange::Cursor(..), _)) {
            self.drain_syncer();
        }
        match job {
            Job::Sign(_) => unreachable!("sign jobs are batched by the caller"),
            Job::Petitions(petitions, events, reply) => {
                let result = self.write_petitions(&petitions, events);
                let _ = reply.send(result);
                None
            }
            Job::Guard(change, reply) => {
                let _ = reply.send(self.change_guard(change));
                None
            }
            Job::Flush(reply) => {
                let result = match &self.store {
                    Some(store) if self.shared.health().is_healthy() => {
                        store.flush(self.durability == Durability::None)
                    }
                    _ => Err(StoreError::Failing),
                };
                let _ = reply.send(result);
                None
            }
            Job::Verify(reply) => {
                let result = match &self.store {
                    Some(store) => crate::verify::verify(&self.shared, store),
                    None => Err(VerifyError::Store(StoreError::Failing)),
                };
                let _ = reply.send(result);
                None
            }
            Job::Sweep(reply) => {
                let _ = reply.send(self.sweep());
                None
            }
            Job::Invalidate(step, reply) => {
                let _ = reply.send(self.invalidate(step));
                None
            }
            Job::JobChange(change) => {
                self.job_change(change);
                None
            }
            Job::Webhook(change, reply) => {
                let _ = reply.send(self.change_webhook(change));
                None
            }
            Job::Shutdown(reply) => Some(reply),
        }
    }

    /// Writes petitions' metas and the events their change makes (a close, a response, a
    /// deadline passed) in one synced batch, then publishes the events.
    fn write_petitions(
        &mut self,
        petitions: &[(u32, PetitionMeta)],
        events: Vec<NewEvent>,
    ) -> Result<(), StoreError> {
        let store = self.recovered_store()?;
        let mut batch = WriteBatch::default();
        for (num, meta) in petitions {
            batch.put_cf(
                store.cf(CF_PETITIONS),
                num.to_be_bytes(),
                store::encode_petition(meta),
            );
        }
        let mut events = events;
        let now = self.shared.now_ms();
        for (num, meta) in petitions {
            if let Some(due) = self.due_by_settings(*num, meta, now) {
                events.push(due);
            }
        }
        let mut seq = self.next_event_seq;
        let mut published = Vec::with_capacity(events.len());
        for new in events {
            let Some(petition) = self.shared.registry().by_num(new.petition) else {
                continue;
            };
            published
                .push(self.put_event(&store, &mut batch, &mut seq, &petition, new.at_ms, new.data));
        }
        // Petition changes are rare and must survive power loss whatever the signature
        // durability: always sync.
        let result = self
            .settle_unlogged(&store)
            .and_then(|()| store.write(batch, Durability::Sync));
        match &result {
            Ok(()) => {
                self.next_event_seq = seq;
                // Metas first: a reader who sees the event sees the change.
                for (num, meta) in petitions {
                    if let Some(petition) = self.shared.registry().by_num(*num) {
                        petition.set_meta(meta.clone());
                    }
                }
                self.shared.publish_events(published);
            }
            Err(e) => self.shared.health().fail(e),
        }
        result
    }

    /// `response_due` for an existing petition whose new settings put its response threshold
    /// at or below its count while no response is due or recorded (a lowered
    /// `response_threshold`, or thresholds whose largest is now below the count): no crossing
    /// would ever make it due. Decided here, after every earlier batch is published, so a
    /// crossing in flight cannot make it due twice.
    fn due_by_settings(&self, num: u32, meta: &PetitionMeta, now: u64) -> Option<NewEvent> {
        let petition = self.shared.registry().by_num(num)?;
        let threshold = meta.effective_response_threshold()?;
        let count = petition.count.load(std::sync::atomic::Ordering::Acquire);
        let tracking = petition.tracking();
        let due = threshold <= count && tracking.due.is_none() && tracking.response.is_none();
        due.then(|| NewEvent {
            petition: num,
            at_ms: now,
            data: crate::event::EventData::ResponseDue {
                threshold,
                due_at_ms: meta.due_at(now),
            },
        })
    }

    /// Before a synced control batch under durability `none`: flushes the memtables, which
    /// hold the batches written without a log. Otherwise a crash could keep the synced batch
    /// (its events, say) and lose the unlogged ones before it (the crossings numbered before
    /// those events), leaving a gap in the feed. Control batches are rare; this is what `none`
    /// pays for them.
    pub(super) fn settle_unlogged(&self, store: &Store) -> Result<(), StoreError> {
        if self.durability == Durability::None {
            store.flush(true)?;
        }
        Ok(())
    }

    /// The store for a control job's write, after a recovery if the store is failing.
    fn recovered_store(&mut self) -> Result<Arc<Store>, StoreError> {
        if !self.shared.health().is_healthy() {
            self.try_recover();
        }
        self.store.clone().ok_or(StoreError::Failing)
    }

    /// Persists a change of the lists, the switches or a petition's pause (synced), then puts
    /// it in effect.
    fn change_guard(&mut self, change: GuardChange) -> Result<(), StoreError> {
        let store = self.recovered_store()?;
        let cf = store.cf(CF_GUARDS);
        let mut batch = WriteBatch::default();
        match &change {
            GuardChange::Add(entry) => {
                batch.put_cf(cf, guard::entry_key(entry.id), entry.encode());
                batch.put_cf(cf, [guard::KEY_LAST_ID], entry.id.to_le_bytes());
            }
            GuardChange::Remove(id) => batch.delete_cf(cf, guard::entry_key(*id)),
            GuardChange::Switches(switches) => {
                batch.put_cf(cf, [guard::KEY_SWITCHES], switches.encode())
            }
            GuardChange::Pause(num, Some(by)) => {
                batch.put_cf(cf, guard::paused_key(*num), guard::encode_pause(by))
            }
            GuardChange::Pause(num, None) => batch.delete_cf(cf, guard::paused_key(*num)),
        }
        if let Err(e) = store.write(batch, Durability::Sync) {
            self.shared.health().fail(&e);
            return Err(e);
        }
        guard::apply(&self.shared, change);
        Ok(())
    }

    /// Registers, replaces or deletes a webhook, or moves its cursor. A cursor is written
    /// without a sync (a lost one only means events delivered again); the rest is synced.
    fn change_webhook(&mut self, change: WebhookChange) -> Result<(), StoreError> {
        let store = self.recovered_store()?;
        let cf = store.cf(CF_WEBHOOKS);
        let mut batch = WriteBatch::default();
        let mut hooks = self.shared.webhooks();
        let (updated, durability) = match &change {
            WebhookChange::Put(hook) => {
                batch.put_cf(cf, hook.name.as_bytes(), hook.encode());
                (Some(hook.clone()), Durability::Sync)
            }
            WebhookChange::Delete(name) => {
                batch.delete_cf(cf, name.as_bytes());
                (None, Durability::Sync)
            }
            WebhookChange::Cursor(name, revision, cursor) => {
                let Some(hook) = hooks.get(name) else {
                    return Ok(());
                };
                if hook.revision != *revision || hook.cursor >= *cursor {
                    return Ok(());
                }
                let hook = Webhook {
                    cursor: *cursor,
                    ..hook.clone()
                };
                batch.put_cf(cf, hook.name.as_bytes(), hook.encode());
                (Some(hook), Durability::Buffered)
            }
        };
        let result = store.write(batch, durability);
        match &result {
            Ok(()) => match (change, updated) {
                (WebhookChange::Delete(name), _) => {
                    hooks.remove(&name);
                }
                (_, Some(hook)) => {
                    hooks.insert(hook.name.clone(), hook);
                }
                (_, None) => {}
            },
            Err(e) => self.shared.health().fail(e),
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
        let mut open: Vec<SignJob> = std::mem::take(&mut self.deferred);
        open.extend(jobs);
        // Written with this round's batch, once: a deferred job comes back without them.
        let alerts: Vec<NewEvent> = open
            .iter_mut()
            .flat_map(|job| std::mem::take(&mut job.alerts))
            .collect();
        if !self.shared.health().is_healthy() {
            self.try_recover();
        }
        let healthy = self.shared.health().is_healthy() && self.store.is_some();
        let generation = self.shared.generation();
        #[cfg(test)]
        syncer::fault::pause(&self.path, syncer::fault::Point::WriterRound);

        // Split items into fresh ones to write now and duplicates awaiting their original.
        let mut fresh: Vec<(usize, Item)> = Vec::new();
        let index = self.shared.index();
        for (j, job) in open.iter_mut().enumerate() {
            let mut waiting = Vec::new();
            for mut item in std::mem::take(&mut job.items) {
                if item.awaiting {
                    waiting.push(item);
                    continue;
                }
                match item.kind {
                    ItemKind::Sign
                        if job.generation != generation
                            && index.presence(item.fp) == Presence::Committed =>
                    {
                        // A reconcile found this signer in the store after the item was
                        // admitted: the write that "failed" had reached the log. It is a
                        // duplicate now (or, validating by email, perhaps still pending).
                        if item.by_email {
                            item.kind = ItemKind::Resubmit;
                            fresh.push((j, item));
                        } else {
                            let count = job.petitions[item.petition as usize]
                                .count
                                .load(Ordering::Acquire);
                            job.caller
                                .answers
                                .push((item.index, Ok(Outcome::Duplicate { count })));
                        }
                    }
                    ItemKind::Resubmit => match index.presence(item.fp) {
                        Presence::Committed => fresh.push((j, item)),
                        Presence::Pending => {
                            // Its signer is being written again: wait for that.
                            item.awaiting = true;
                            waiting.push(item);
                        }
                        Presence::Absent => {
                            // The pending signature expired and was swept since admission: this
                            // is a new signer now.
                            match index.insert(item.fp, true) {
                                Insert::Inserted => {
                                    item.kind = ItemKind::Sign;
                                    fresh.push((j, item));
                                }
                                Insert::Present(Presence::Committed) => fresh.push((j, item)),
                                Insert::Present(_) => {
                                    item.awaiting = true;
                                    waiting.push(item);
                                }
                            }
                        }
                    },
                    _ => fresh.push((j, item)),
                }
            }
            job.items = waiting;
        }

        if !fresh.is_empty() {
            let fresh = by_petition(&open, fresh);
            if !healthy {
                self.refuse_fresh(&mut open, fresh);
            } else if !awaiting && self.syncer.is_some() {
                // Every job is whole once its fresh items are durable: the syncer answers them.
                self.write_for_syncer(open, fresh, alerts);
                return;
            } else {
                self.write_fresh(&mut open, fresh, alerts);
            }
        }
        self.settle(open, healthy);
    }

    /// Resolves duplicates that waited for their original, then answers every job that has
    /// nothing left open and defers the others.
    fn settle(&mut self, open: Vec<SignJob>, healthy: bool) {
        for mut job in open {
            let mut still = Vec::new();
            for mut item in std::mem::take(&mut job.items) {
                if !healthy {
                    job.caller
                        .answers
                        .push((item.index, Err(SubmitError::StorageUnavailable)));
                    continue;
                }
                let petition = &job.petitions[item.petition as usize];
                match self.shared.index().presence(item.fp) {
                    Presence::Committed if item.by_email => {
                        // Its original is in: the writer tells pending from counted.
                        item.awaiting = false;
                        item.kind = ItemKind::Resubmit;
                        still.push(item);
                    }
                    Presence::Committed => {
                        let count = petition.count.load(Ordering::Acquire);
                        self.shared.count_duplicates(1);
                        job.caller
                            .answers
                            .push((item.index, Ok(Outcome::Duplicate { count })));
                    }
                    Presence::Pending => still.push(item),
                    Presence::Absent => {
                        // The original failed or was refused: this one becomes the original.
                        match self.shared.index().insert(item.fp, true) {
                            Insert::Inserted => {
                                item.awaiting = false;
                                still.push(item);
                            }
                            Insert::Present(Presence::Committed) => {
                                let count = petition.count.load(Ordering::Acquire);
                                self.shared.count_duplicates(1);
                                job.caller
                                    .answers
                                    .push((item.index, Ok(Outcome::Duplicate { count })));
                            }
                            Insert::Present(_) => still.push(item),
                        }
                    }
                }
            }
            job.items = still;
            if job.items.is_empty() {
                syncer::answer(&self.shared, job.caller);
            } else {
                self.deferred.push(job);
            }
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
}

/// The items of a batch grouped by petition (in petition number order), each petition's in
/// their order: the batch's records then lie in one run per petition, so that reading one
/// petition's signatures back (an invalidation, an export) reads blocks of its own instead of a
/// few records from every block of the store. Sequences still only grow, batch after batch
/// (the key order the P2 layout needs); within a batch every signature was written at once.
/// A batch already in that order (one hot petition, say) is left as it is.
fn by_petition(open: &[SignJob], fresh: Vec<(usize, Item)>) -> Vec<(usize, Item)> {
    // (petition number, position): sorting these keeps each petition's items in their order.
    let mut keys: Vec<u64> = fresh
        .iter()
        .enumerate()
        .map(|(at, (j, item))| {
            let num = open[*j].petitions[item.petition as usize].num;
            (u64::from(num) << 32) | at as u64
        })
        .collect();
    if keys.windows(2).all(|pair| pair[0] <= pair[1]) {
        return fresh;
    }
    keys.sort_unstable();
    let mut taken: Vec<Option<(usize, Item)>> = fresh.into_iter().map(Some).collect();
    keys.iter()
        .filter_map(|key| taken[(key & u64::from(u32::MAX)) as usize].take())
        .collect()
}
