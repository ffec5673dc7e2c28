//! The writer's side of the signature lifecycle outside signing rounds: one step of the expiry
//! sweep ([`Writer::sweep`]), one step of an invalidation job ([`Writer::invalidate`]), and the
//! creation, cancel and failure of jobs ([`Writer::job_change`]).
//!
//! Each runs as a control job, after every earlier batch is finished (so published counts and
//! reached thresholds are current), and writes one synced batch holding every state change with
//! the counts it changes, the milestones it regresses and the progress it makes: recovery after
//! a crash finds all of a step or none of it.

use std::collections::HashMap;

use rocksdb::WriteBatch;

use super::commit::{count_place, drop_record, put_transition, sort_places, PlaceChanges, Touched};
use super::Writer;
use crate::config::Durability;
use crate::error::{InvalidationError, StoreError};
use crate::event::Event;
use crate::fingerprint::Fingerprint;
use crate::invalidation::{JobChange, JobRecord, JobState, Step, StepResult};
use crate::lifecycle::{LifecycleEntry, SignatureState, Transition};
use crate::store::{Store, CF_JOBS, CF_META, CF_PENDING_SIGNERS, META_SWEEP_CURSOR};

impl Writer {
    /// The store, after recovering it if it is failing.
    fn healthy_store(&mut self) -> Result<std::sync::Arc<Store>, StoreError> {
        if !self.shared.health().is_healthy() {
            self.try_recover();
        }
        match &self.store {
            Some(store) if self.shared.health().is_healthy() => Ok(std::sync::Arc::clone(store)),
            _ => Err(StoreError::Failing),
        }
    }

    /// Writes a control batch, synced; a failure fails the store like any write.
    fn write_control(&self, store: &Store, batch: WriteBatch) -> Result<(), StoreError> {
        let result = self
            .settle_unlogged(store)
            .and_then(|()| store.write(batch, Durability::Sync));
        if let Err(e) = &result {
            self.shared.health().fail(e);
        }
        result
    }

    /// Publishes what a control batch changed, once it is durable.
    fn publish_lowered(&mut self, touched: HashMap<u32, Touched>, now: u64, events: Vec<Event>) {
        for mut t in touched.into_values() {
            let changes = t.changes(now);
            t.petition.publish(t.after, &changes, self.shared.recent());
        }
        if let Some(last) = events.last() {
            self.next_event_seq = last.seq + 1;
        }
        self.shared.publish_events(events);
    }

    /// One step of the expiry sweep: drops up to `lifecycle_step` pending signatures whose grace
    /// has passed, from the sweep's cursor on, and frees their signers' slots once that is
    /// durable. On its way it clears the `pending_signers` entries of signatures that were
    /// validated or invalidated since. Returns how many expired and whether more may be due
    /// now.
    pub(super) fn sweep(&mut self) -> Result<(u64, bool), StoreError> {
        let store = self.healthy_store()?;
        let now = self.shared.now_ms();
        let step = self.shared.config().lifecycle_step;
        let mut cursor = self.sweep_cursor;
        let mut due: Vec<(u64, LifecycleEntry)> = Vec::new();
        let mut settled: Vec<Fingerprint> = Vec::new();
        let mut read = 0usize;
        let mut waiting = false;
        {
            let states = self.shared.states().read();
            store.scan_lifecycle(cursor, step, |seq, entry| {
                read += 1;
                match states.get(seq) {
                    SignatureState::Pending if entry.expires_at_ms > now => {
                        // Expiries follow sequence order: nothing after this one is due yet.
                        waiting = true;
                        cursor = seq;
                        return false;
                    }
                    SignatureState::Pending => due.push((seq, entry)),
                    // A signer who was validated or invalidated keeps the slot for good, so
                    // its entry names this signature: no longer needed.
                    SignatureState::Validated | SignatureState::Invalidated => {
                        settled.push(entry.fp)
                    }
                    SignatureState::Expired => {}
                }
                cursor = seq + 1;
                true
            })?;
        }
        let more = read == step && !waiting;
        if cursor == self.sweep_cursor {
            return Ok((0, false));
        }
        let mut batch = WriteBatch::default();
        let mut touched: HashMap<u32, Touched> = HashMap::new();
        for (seq, entry) in &due {
            let Some(petition) = self.shared.registry().by_num(entry.petition) else {
                return Err(StoreError::Corrupt {
                    what: "lifecycle entry (unknown petition)",
                });
            };
            drop_record(&mut batch, &store, *seq, self.next_seq);
            put_transition(
                &mut batch,
                &store,
                &mut self.next_transition_seq,
                Transition {
                    seq: *seq,
                    state: SignatureState::Expired,
                    at_ms: now,
                },
            );
            touched
                .entry(entry.petition)
                .or_insert_with(|| Touched::new(&petition, &HashMap::new()))
                .after
                .pending -= 1;
        }
        // In key order: see `Building` in commit.rs.
        let mut fps: Vec<Fingerprint> = due.iter().map(|(_, entry)| entry.fp).collect();
        fps.append(&mut settled);
        fps.sort_unstable();
        for fp in fps {
            batch.delete_cf(store.cf(CF_PENDING_SIGNERS), fp.to_bytes());
        }
        let (events, _) = self.put_counts(&store, &mut batch, &touched, now);
        debug_assert!(events.is_empty(), "expiry changes no validated count");
        batch.put_cf(store.cf(CF_META), META_SWEEP_CURSOR, cursor.to_be_bytes());
        self.shared
            .states()
            .set_all(due.iter().map(|(seq, _)| (*seq, SignatureState::Expired)));
        if let Err(e) = self.write_control(&store, batch) {
            self.unsettled_removals
                .extend(due.iter().map(|(seq, entry)| (*seq, entry.fp)));
            return Err(e);
        }
        for (_, entry) in &due {
            self.shared.index().remove(entry.fp);
        }
        self.publish_lowered(touched, now, events);
        self.sweep_cursor = cursor;
        Ok((due.len() as u64, more))
    }

    /// One step of an invalidation job: invalidates the step's signatures that are still
    /// pending or validated, lowers the counts, regresses thresholds, and records the job's
    /// progress, in one synced batch.
    pub(super) fn invalidate(&mut self, step: Step) -> StepResult {
        let Some(mut record) = self.shared.jobs().get(step.job) else {
            return Ok(JobState::Failed);
        };
        if record.job.state != JobState::Running {
            return Ok(record.job.state);
        }
        let store = self.healthy_store()?;
        let now = self.shared.now_ms();
        let mut batch = WriteBatch::default();
        let mut touched: HashMap<u32, Touched> = HashMap::new();
        let mut changes = Vec::new();
        let mut places = PlaceChanges::default();
        for &(seq, num, place) in &step.matching {
            let state = self.shared.states().get(seq);
            if !matches!(state, SignatureState::Pending | SignatureState::Validated) {
                continue;
            }
            let Some(petition) = self.shared.registry().by_num(num) else {
                continue;
            };
            let counts = &mut touched
                .entry(num)
                .or_insert_with(|| Touched::new(&petition, &HashMap::new()))
                .after;
            if state == SignatureState::Pending {
                counts.pending -= 1;
            } else {
                counts.validated -= 1;
                count_place(&mut places, num, place, -1);
            }
            counts.invalidated += 1;
            put_transition(
                &mut batch,
                &store,
                &mut self.next_transition_seq,
                Transition {
                    seq,
                    state: SignatureState::Invalidated,
                    at_ms: now,
                },
            );
            changes.push((seq, SignatureState::Invalidated));
        }
        let invalidated = changes.len() as u64;
        sort_places(places, &mut touched);
        let (events, _) = self.put_counts(&store, &mut batch, &touched, now);
        let job = &mut record.job;
        job.scanned += step.scanned;
        job.matched += step.matching.len() as u64;
        job.invalidated += invalidated;
        record.cursor = step.cursor;
        if step.done {
            job.state = JobState::Completed;
            job.finished_at_ms = Some(now);
        }
        batch.put_cf(store.cf(CF_JOBS), job.id.to_be_bytes(), record.encode());
        // The writer counts on from the new states; a failed write rebuilds them from the store.
        self.shared.states().set_all(changes);
        self.write_control(&store, batch)?;
        self.publish_lowered(touched, now, events);
        let state = record.job.state;
        self.shared.jobs().insert(record);
        Ok(state)
    }

    /// Creates, cancels or fails a job: persisted (synced) before memory changes.
    pub(super) fn job_change(&mut self, change: JobChange) {
        match change {
            JobChange::Create(mut record, reply) => {
                let shared = std::sync::Arc::clone(&self.shared);
                let jobs = shared.jobs();
                let running = jobs.running().len();
                let result = if running >= self.shared.config().invalidation_jobs_max {
                    Err(InvalidationError::TooManyJobs(running))
                } else {
                    record.job.id = jobs.next_id();
                    record.upto = self.next_seq;
                    record.job.total = match record.petition_num {
                        Some(num) => self
                            .shared
                            .registry()
                            .by_num(num)
                            .map_or(0, |p| p.counts().held()),
                        None => self
                            .shared
                            .registry()
                            .all()
                            .iter()
                            .map(|p| p.counts().held())
                            .sum(),
                    };
                    let job = record.job.clone();
                    self.put_job(*record)
                        .map(|()| job)
                        .map_err(|_| InvalidationError::StorageUnavailable)
                };
                let _ = reply.send(result);
            }
            JobChange::Cancel(id, reply) => {
                let result = match self.shared.jobs().get(id) {
                    None => Err(InvalidationError::UnknownJob),
                    Some(record) if record.job.state != JobState::Running => {
                        Err(InvalidationError::Finished(record.job.state.as_str()))
                    }
                    Some(mut record) => {
                        record.job.state = JobState::Cancelled;
                        record.job.finished_at_ms = Some(self.shared.now_ms());
                        let job = record.job.clone();
                        self.put_job(record)
                            .map(|()| job)
                            .map_err(|_| InvalidationError::StorageUnavailable)
                    }
                };
                let _ = reply.send(result);
            }
            JobChange::Fail(id, error) => {
                if let Some(mut record) = self.shared.jobs().get(id) {
                    if record.job.state == JobState::Running {
                        record.job.state = JobState::Failed;
                        record.job.finished_at_ms = Some(self.shared.now_ms());
                        record.job.error = Some(error);
                        // If this write fails the job stays running and fails again later.
                        let _ = self.put_job(record);
                    }
                }
            }
        }
    }

    fn put_job(&mut self, record: JobRecord) -> Result<(), StoreError> {
        let store = self.healthy_store()?;
        let mut batch = WriteBatch::default();
        batch.put_cf(
            store.cf(CF_JOBS),
            record.job.id.to_be_bytes(),
            record.encode(),
        );
        self.write_control(&store, batch)?;
        self.shared.jobs().insert(record);
        Ok(())
    }
}
