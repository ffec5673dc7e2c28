//! Recovery, which the writer runs since it owns the store: rebuilding the index on open, and
//! bringing a failed store back ([`Writer::try_recover`]).
//!
//! Where recovery reads fingerprint batches back they are checked: each a whole number of
//! fingerprints (`record.rs`), none overlapping the one before, no signer stored twice, and the
//! counts equal to the signers stored.

use std::collections::HashMap;
use std::sync::Arc;

use rocksdb::WriteBatch;

use super::syncer::Syncer;
use super::Writer;
use crate::clock::now_ms;
use crate::config::Durability;
use crate::error::StoreError;
use crate::event;
use crate::fingerprint::Fingerprint;
use crate::index::{Index, Insert, Presence};
use crate::invalidation::JobRecord;
use crate::lifecycle::SignatureState;
use crate::petition::Counts;
use crate::record;
use crate::store::{Store, CF_META};

impl Writer {
    /// Reopens the store, reconciles memory with it, and marks the engine healthy if a probe
    /// write succeeds.
    pub(super) fn try_recover(&mut self) {
        if let Some(failure) = self.syncer.as_mut().and_then(Syncer::take_failure) {
            // The failed batches and every one after them were answered with an error; the
            // reconcile below finds whichever of them reached the log anyway.
            self.next_seq = self.next_seq.min(failure.first_seq);
            self.next_event_seq = self.next_event_seq.min(failure.first_event_seq);
        }
        self.written_counts.clear();
        // RocksDB refuses writes after a failed one until it is reopened (and the drained
        // syncer holds no handle on it; an invalidation scan drops its handle after its step).
        self.shared.set_store(None);
        self.store = None;
        let store = match Store::open(&self.path) {
            Ok(store) => {
                if let Some(replication) = &self.shared.config().replication {
                    store.attach_log(Arc::clone(&replication.0));
                }
                store
            }
            Err(e) => {
                self.shared.health().record(&e);
                return;
            }
        };
        if let Err(e) = self.reconcile(&store) {
            self.shared.health().record(&e);
            self.store = Some(Arc::new(store));
            return;
        }
        let mut probe = WriteBatch::default();
        probe.put_cf(store.cf(CF_META), b"probe", now_ms().to_be_bytes());
        let result = store.write(probe, Durability::Sync);
        let store = Arc::new(store);
        self.shared.set_store(Some(Arc::clone(&store)));
        self.store = Some(store);
        match result {
            Ok(()) => self.shared.health().recovered(),
            Err(e) => self.shared.health().record(&e),
        }
    }

    /// Brings memory in line with the store after a failed write: batches that reached the log
    /// although their write reported failure are committed in the index, and counts and
    /// events are reloaded.
    fn reconcile(&mut self, store: &Store) -> Result<(), StoreError> {
        let stored_next = store.next_signature_seq()?;
        if stored_next > self.next_seq {
            let index = self.shared.index();
            let mut sequence = Sequence::starting_at(self.next_seq);
            store.scan_fingerprints(self.next_seq, |first, batch| {
                sequence.follow(first, batch);
                for fp in record::fingerprints(batch) {
                    if let Insert::Present(Presence::Pending) = index.insert(fp, false) {
                        index.commit(fp);
                    }
                }
            })?;
            sequence.check()?;
            // Jobs admitted before this point must re-check their items before writing them.
            self.shared.bump_generation();
            self.next_seq = stored_next;
        }
        // Expiries whose write reported failure: the ones that reached the store free their
        // signers' slots now.
        for (seq, fp) in std::mem::take(&mut self.unsettled_removals) {
            if store.is_removed(seq)? {
                self.shared.index().remove(fp);
            }
        }
        self.sweep_cursor = store.sweep_cursor()?;
        // A failed batch's states were applied when it was built: the store says which stand.
        self.rebuild_states(store)?;
        let counts: HashMap<u32, Counts> = store.load_counts()?.into_iter().collect();
        // Counts by place and the history, as the store has them (a failed batch's changes were
        // never published; the ones that reached the store are there); regions named but not
        // stored go with the next batch. The counts are set with them, under each petition's
        // breakdown lock.
        self.regions_stored
            .set(self.shared.load_places(store, false, Some(&counts))?);
        // A petition change (a close, a registration) whose write reported failure may have
        // reached the store with its events: the metas say what stands.
        for (num, meta) in store.load_petitions()? {
            if let Some(petition) = self.shared.registry().by_num(num) {
                petition.set_meta(meta);
            }
        }
        let stored = store.load_events(self.next_event_seq, usize::MAX)?;
        let events = event::named(stored, |num| {
            self.shared.registry().by_num(num).map(|p| p.id.to_string())
        })?;
        if let Some(last) = events.last() {
            self.next_event_seq = last.seq + 1;
        }
        self.shared.publish_events(events);
        // A job step whose write reported failure may have reached the store.
        for (_, bytes) in store.load_jobs()? {
            self.shared.jobs().insert(JobRecord::decode(&bytes)?);
        }
        Ok(())
    }

    /// Rebuilds every signature's state from the store: each pending signature as written
    /// (`lifecycle`), then every transition in order.
    fn rebuild_states(&mut self, store: &Store) -> Result<(), StoreError> {
        let states = self.shared.states();
        states.clear();
        let mut chunk = Vec::with_capacity(4096);
        store.all_lifecycle(|seq, _| {
            chunk.push((seq, SignatureState::Pending));
            if chunk.len() == chunk.capacity() {
                states.set_all(chunk.drain(..));
            }
        })?;
        states.set_all(chunk.drain(..));
        self.next_transition_seq = store.all_transitions(|transition| {
            chunk.push((transition.seq, transition.state));
            if chunk.len() == chunk.capacity() {
                states.set_all(chunk.drain(..));
            }
        })?;
        states.set_all(chunk.drain(..));
        Ok(())
    }

    /// Reads every fingerprint batch and inserts it, committed, then the signatures' states,
    /// and checks the counts against the index.
    pub(super) fn rebuild_index(&mut self) -> Result<(), StoreError> {
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        self.rebuild_states(&store)?;
        let shared = &self.shared;
        // Sized once for every signature it will hold, so that no shard resizes on the way;
        // `reserve` also faults the grown tables in, here rather than under the first inserts.
        shared.index().reserve(
            shared
                .recovery_expected()
                .max(shared.config().signatures_expected),
        );
        load_index(&store, shared.index(), &|n| shared.count_recovered(n))?;
        self.check_counts()
    }

    /// Takes the index a follower kept while it applied the log (`Follower::into_engine`):
    /// rebuilds the signatures' states only, and checks the counts against the index.
    pub(super) fn adopt_index(&mut self) -> Result<(), StoreError> {
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        self.rebuild_states(&store)?;
        self.check_counts()
    }

    /// Takes an index saved beside the store (`index_file`) if it is this store's, brings it up
    /// to the store, rebuilds the signatures' states and checks the counts against the index.
    /// One that is not this store's, or whose counts do not check, is dropped and the
    /// fingerprints are read back instead.
    pub(super) fn adopt_saved(
        &mut self,
        saved: crate::index_file::Saved,
    ) -> Result<(), StoreError> {
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        let bits = self.shared.index().shard_bits();
        if saved.index.shard_bits() != bits || !saved.belongs_to(&store)? {
            return self.rebuild_index();
        }
        let from = saved.from;
        self.shared.index().replace_with(saved.index);
        self.shared
            .expect_recovered(self.next_seq.saturating_sub(from));
        self.rebuild_states(&store)?;
        let shared = &self.shared;
        catch_up_index(&store, shared.index(), from, &|n| shared.count_recovered(n))?;
        if self.check_counts().is_err() {
            // Not expected: the saved index is dropped rather than trusted.
            self.shared.index().replace_with(Index::new(bits, 0));
            self.shared.expect_recovered(self.next_seq);
            return self.rebuild_index();
        }
        self.shared.index_loaded(from);
        Ok(())
    }

    /// Every signer the index holds is counted once: the counts' sum equals its entries.
    fn check_counts(&self) -> Result<(), StoreError> {
        let (entries, _) = self.shared.index().usage();
        let counted: u64 = self
            .shared
            .registry()
            .all()
            .iter()
            .map(|p| p.counts().held())
            .sum();
        if entries != counted {
            return Err(StoreError::Corrupt {
                what: "counts (they differ from the stored fingerprints)",
            });
        }
        Ok(())
    }
}

/// Reads every fingerprint batch of `store` into `index`, committed, leaving out the signatures
/// that no longer hold their signer's slot; `progress` hears how many signatures each batch
/// held. A signer stored twice, or batches empty or overlapping, make the store corrupt.
pub(crate) fn load_index(
    store: &Store,
    index: &Index,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), StoreError> {
    // Expired signatures' fingerprints no longer hold a slot: left out.
    let removed = store.load_removed()?;
    if read_back(store, index, 0, &removed, progress)? > 0 {
        return Err(StoreError::Corrupt {
            what: "fingerprints (a signer is stored twice)",
        });
    }
    Ok(())
}

/// Brings an index saved at mark `from` (see `index_file`) up to `store`: takes out the
/// fingerprints of the signatures whose removal was written at or after `from` (the saved copy
/// may or may not have seen it), then puts in every stored signature from `from` on that was
/// not removed (the copy may hold some already). Removals come first: a signer whose
/// signature expired may have signed anew since, always at a later sequence.
pub(crate) fn catch_up_index(
    store: &Store,
    index: &Index,
    from: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), StoreError> {
    for seq in store.removed_since(from)? {
        if let Some(fp) = store.fingerprint_at(seq)? {
            index.remove(fp);
        }
    }
    let removed = store.load_removed()?;
    read_back(store, index, from, &removed, progress)?;
    Ok(())
}

/// Reads the fingerprint batches of `store` from sequence `from` on into `index`, committed,
/// leaving out the sequences in `removed` (ascending); returns how many were present already.
/// Two threads: this one reads and inserts every other batch, a helper inserts the rest.
/// Batches empty or overlapping make the store corrupt.
fn read_back(
    store: &Store,
    index: &Index,
    from: u64,
    removed: &[u64],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, StoreError> {
    let (sender, receiver) = crossbeam_channel::bounded::<(u64, Box<[u8]>)>(64);
    std::thread::scope(|scope| {
        let helper = scope.spawn(|| {
            let mut present = 0u64;
            for (first, batch) in receiver {
                present += insert_batch(index, first, &batch, removed);
                progress((batch.len() / Fingerprint::BYTES) as u64);
            }
            present
        });
        let mut present = 0u64;
        let mut alternate = false;
        let mut sequence = Sequence::starting_at(from);
        let scanned = store.scan_fingerprints(from, |first, batch| {
            sequence.follow(first, batch);
            alternate = !alternate;
            if alternate {
                // The helper only stops early if it panicked; then the join below reports it.
                let _ = sender.send((first, batch.into()));
            } else {
                present += insert_batch(index, first, batch, removed);
                progress((batch.len() / Fingerprint::BYTES) as u64);
            }
        });
        drop(sender);
        // The helper panics only on a broken invariant of the index; re-raise it here rather
        // than report a half-built index as ready.
        let helper = helper.join().expect("index rebuild helper panicked");
        scanned
            .and_then(|()| sequence.check())
            .map(|()| present + helper)
    })
}

/// Inserts one stored fingerprint batch (its first signature's sequence is `first`), leaving
/// out the sequences in `removed` (ascending); returns how many were already present. Each
/// fingerprint's bucket is prefetched a few inserts ahead: the inserts land at random in a
/// table of gigabytes.
fn insert_batch(index: &Index, first: u64, batch: &[u8], removed: &[u64]) -> u64 {
    let mut present = 0;
    let mut skip = &removed[removed.partition_point(|&seq| seq < first)..];
    for (seq, fp) in (first..).zip(index.prefetching(record::fingerprints(batch))) {
        if skip.first() == Some(&seq) {
            skip = &skip[1..];
            continue;
        }
        if index.insert(fp, false) != Insert::Inserted {
            present += 1;
        }
    }
    present
}

/// Follows fingerprint batches as recovery reads them back in key order: each holds at least one
/// fingerprint and starts at or past the end of the one before (the writer hands out sequences
/// in order and never writes an empty batch).
struct Sequence {
    next: u64,
    broken: bool,
}

impl Sequence {
    /// Batches from sequence `from` on.
    fn starting_at(from: u64) -> Sequence {
        Sequence {
            next: from,
            broken: false,
        }
    }

    fn follow(&mut self, first: u64, batch: &[u8]) {
        self.broken |= batch.is_empty() || first < self.next;
        self.next = first + (batch.len() / Fingerprint::BYTES) as u64;
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.broken {
            return Err(StoreError::Corrupt {
                what: "fingerprint batches (empty or overlapping)",
            });
        }
        Ok(())
    }
}
