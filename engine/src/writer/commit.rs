//! The commit of one group: encoding its `WriteBatch` ([`Writer::prepare`]), writing it, and
//! then either publishing it (or handing it to the syncer) or failing it.
//!
//! Where the batch is built its invariants are checked: at least one signature, one fingerprint
//! per record, and counts that grow by exactly the signers written; in debug builds also each
//! fingerprint once and every record decoding to its petition.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rocksdb::WriteBatch;

use super::syncer::{self, Syncer, Written};
use super::{Prepared, Writer};
use crate::clock::now_ms;
use crate::config::Durability;
use crate::error::{StoreError, SubmitError};
use crate::fingerprint::Fingerprint;
use crate::index::PREFETCH_DISTANCE;
use crate::job::{Item, Outcome, SignJob};
use crate::petition::{Milestone, Petition};
use crate::record;
use crate::store::{self, Store, CF_COUNTS, CF_FINGERPRINTS, CF_MILESTONES, CF_SIGNATURES};

impl Writer {
    /// Encodes one `WriteBatch` of `fresh`: the signature records, their fingerprints, the
    /// touched petitions' counts and the milestones those cross.
    fn prepare(&self, store: &Store, open: &[SignJob], fresh: &[(usize, Item)]) -> Prepared {
        assert!(!fresh.is_empty(), "a batch writes at least one signature");
        debug_assert!(
            {
                let mut seen = std::collections::HashSet::with_capacity(fresh.len());
                fresh.iter().all(|(_, item)| seen.insert(item.fp))
            },
            "a fingerprint is written once per batch"
        );
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
            let record = &job.records[item.record.clone()];
            debug_assert!(
                record::decode(record).is_ok_and(|r| r.petition == petition.num),
                "a record decodes and names its item's petition"
            );
            batch.put_cf(signatures_cf, seq.to_be_bytes(), record);
            record::push_fingerprint(&mut fingerprints, item.fp);
        }
        assert_eq!(fingerprints.len(), fresh.len() * Fingerprint::BYTES);
        batch.put_cf(
            store.cf(CF_FINGERPRINTS),
            first_seq.to_be_bytes(),
            &fingerprints,
        );
        let grown: u64 = touched
            .values()
            .map(|(_, before, after)| after - before)
            .sum();
        assert_eq!(
            grown,
            fresh.len() as u64,
            "counts grow by the signers written"
        );
        let (milestones, next_milestone_seq) = self.put_counts(store, &mut batch, &touched);
        Prepared {
            batch,
            counts: touched
                .into_values()
                .map(|(petition, _, after)| (petition, after))
                .collect(),
            ordinals,
            milestones,
            next_milestone_seq,
        }
    }

    /// Puts the touched petitions' new counts and the milestones they cross into `batch`.
    /// Returns the milestones and the next milestone sequence.
    fn put_counts(
        &self,
        store: &Store,
        batch: &mut WriteBatch,
        touched: &HashMap<u32, (Arc<Petition>, u64, u64)>,
    ) -> (Vec<Milestone>, u64) {
        let now = now_ms();
        let mut milestones = Vec::new();
        let counts_cf = store.cf(CF_COUNTS);
        let milestones_cf = store.cf(CF_MILESTONES);
        let mut milestone_seq = self.next_milestone_seq;
        for (num, (petition, before, after)) in touched {
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
        (milestones, milestone_seq)
    }

    /// Writes `fresh` without a sync and hands the batch, with every job of the round, to the
    /// syncer, which makes it durable and answers.
    pub(super) fn write_for_syncer(&mut self, mut open: Vec<SignJob>, fresh: Vec<(usize, Item)>) {
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
        let callers = open.into_iter().map(|job| job.caller).collect();
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
    pub(super) fn write_fresh(&mut self, open: &mut [SignJob], fresh: Vec<(usize, Item)>) {
        let Some(store) = self.store.clone() else {
            unreachable!("write_fresh is only called with a healthy store")
        };
        let prepared = self.prepare(&store, open, &fresh);

        // The commit below finds every entry again; their buckets are long out of this core's
        // cache. Start the first few loads now so they land during the write.
        let index = self.shared.index();
        for (_, item) in fresh.iter().take(PREFETCH_DISTANCE) {
            index.prefetch(item.fp);
        }
        let started = Instant::now();
        let result = store.write(prepared.batch, self.durability);
        self.shared.record_write_latency(started.elapsed());

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
        open: &mut [SignJob],
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
                .caller
                .answers
                .push((item.index, Ok(Outcome::Accepted { count })));
        }
        fingerprints
    }

    /// A failed write: nothing in it is acknowledged, and the engine stops taking signatures
    /// until the store is recovered.
    fn fail_fresh(&self, open: &mut [SignJob], fresh: Vec<(usize, Item)>, e: &StoreError) {
        self.shared.health().fail(e);
        self.refuse_fresh(open, fresh);
    }

    /// Answers `fresh` with `StorageUnavailable` and takes its fingerprints back out of the
    /// index: nothing of it was written.
    pub(super) fn refuse_fresh(&self, open: &mut [SignJob], fresh: Vec<(usize, Item)>) {
        for (j, item) in fresh {
            self.shared.index().remove(item.fp);
            open[j]
                .caller
                .answers
                .push((item.index, Err(SubmitError::StorageUnavailable)));
        }
    }
}
