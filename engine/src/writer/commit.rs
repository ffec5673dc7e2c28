//! The commit of one group: encoding its `WriteBatch` ([`Writer::prepare`]), writing it, and
//! then either publishing it (or handing it to the syncer) or failing it.
//!
//! Where the batch is built its invariants are checked: at least one signature, one fingerprint
//! per record, and counts that grow by exactly the signers written; in debug builds also each
//! fingerprint once and every record decoding to its petition.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::Instant;

use rocksdb::WriteBatch;

use super::syncer::{self, Syncer, Written};
use super::{Prepared, Writer};
use crate::admission::NumberHasher;
use crate::config::Durability;
use crate::error::{StoreError, SubmitError};
use crate::event::{self, Event, EventData, NewEvent};
use crate::fingerprint::Fingerprint;
use crate::index::PREFETCH_DISTANCE;
use crate::job::{Item, ItemKind, Outcome, SignJob};
use crate::lifecycle::{
    self, LifecycleEntry, PendingSigner, SignatureState, Transition, RESUBMITS_MAX,
};
use crate::petition::{Changes, Counts, Petition};
use crate::place::{place_of_record, Place, Regions};
use crate::record;
use crate::states::States;
use crate::store::{
    Entries, Store, CF_BREAKDOWNS, CF_BY_PETITION, CF_COUNTS, CF_FINGERPRINTS, CF_LIFECYCLE,
    CF_MILESTONES, CF_PENDING_SIGNERS, CF_REGIONS, CF_REMOVED, CF_SIGNATURES, CF_TRANSITIONS,
};
use crate::token::Named;

/// A petition a batch changes: its counts before the batch and after it, and the changes of
/// its counts by place.
pub(super) struct Touched {
    pub petition: Arc<Petition>,
    pub before: Counts,
    pub after: Counts,
    /// Ascending by place, each place once.
    pub places: Vec<(Place, i64)>,
}

/// Changes of counts by `petition << 32 | place`, gathered over a batch.
pub(super) type PlaceChanges = HashMap<u64, i64, BuildHasherDefault<NumberHasher>>;

/// Adds `delta` to the count of `place` in `petition`.
#[inline]
pub(super) fn count_place(changes: &mut PlaceChanges, petition: u32, place: Place, delta: i64) {
    *changes
        .entry(u64::from(petition) << 32 | u64::from(place.0))
        .or_insert(0) += delta;
}

/// Hands the gathered changes by place to their petitions' `Touched` (every petition named
/// must be touched), each list ascending by place.
pub(super) fn sort_places(changes: PlaceChanges, touched: &mut HashMap<u32, Touched>) {
    let mut changes: Vec<(u64, i64)> = changes.into_iter().filter(|&(_, d)| d != 0).collect();
    changes.sort_unstable();
    for (key, delta) in changes {
        if let Some(t) = touched.get_mut(&((key >> 32) as u32)) {
            t.places.push((Place(key as u32), delta));
        }
    }
}

impl Touched {
    /// What publishing it changes in its petition's breakdown: its places, and the change of
    /// its count at `now`.
    pub fn changes(&mut self, now: u64) -> Changes {
        let delta = self.after.validated as i64 - self.before.validated as i64;
        Changes {
            places: std::mem::take(&mut self.places),
            history: (delta != 0).then_some((now, delta)),
        }
    }
}

impl Touched {
    /// Counts from what has been written: batches still with the syncer have counted past the
    /// published counts.
    pub fn new(petition: &Arc<Petition>, written: &HashMap<u32, Counts>) -> Touched {
        let counts = written
            .get(&petition.num)
            .copied()
            .unwrap_or_else(|| petition.counts());
        Touched {
            petition: Arc::clone(petition),
            before: counts,
            after: counts,
            places: Vec::new(),
        }
    }
}

/// The pending signer of each of a batch's re-submissions, in item order: read before the
/// batch is built.
fn resubmitted_signers(
    store: &Store,
    fresh: &[(usize, Item)],
) -> Result<Vec<Option<PendingSigner>>, StoreError> {
    let fps: Vec<Fingerprint> = fresh
        .iter()
        .filter(|(_, item)| item.kind == ItemKind::Resubmit)
        .map(|(_, item)| item.fp)
        .collect();
    if fps.is_empty() {
        return Ok(Vec::new());
    }
    store.pending_signers(&fps)
}

/// Puts `transition` into `batch` as the `transitions` entry `*next`, and moves `*next` on.
pub(super) fn put_transition(
    batch: &mut WriteBatch,
    store: &Store,
    next: &mut u64,
    transition: Transition,
) {
    batch.put_cf(
        store.cf(CF_TRANSITIONS),
        next.to_be_bytes(),
        transition.encode(),
    );
    *next += 1;
}

/// Puts the drop of an expired signature's record into `batch`, and its sequence among the
/// removed (an index rebuild leaves its fingerprint out) with `at`, the sequence the next
/// stored signature takes: the batch's first new one, if it has any (a saved index brought up
/// to the store takes the removals at or after its mark out, `index_file`). Its transition to `expired` and its `pending_signers`
/// entry are the caller's to write.
pub(super) fn drop_record(batch: &mut WriteBatch, store: &Store, seq: u64, at: u64) {
    let key = seq.to_be_bytes();
    batch.delete_cf(store.cf(CF_SIGNATURES), key);
    batch.put_cf(store.cf(CF_REMOVED), key, at.to_be_bytes());
}

/// What [`Building::finish`] hands back.
struct Finished {
    batch: WriteBatch,
    first_seq: u64,
    next_seq: u64,
    fingerprints: Vec<u8>,
    by_petition: BTreeMap<u32, Vec<u8>>,
    next_transition: u64,
    places: PlaceChanges,
}

/// One batch being built: what its items have written so far, so that a later item of the same
/// batch sees an earlier one's change (a token validated twice, a signer re-submitting twice).
struct Building<'s> {
    store: &'s Store,
    tokens: &'s crate::token::TokenKey,
    now: u64,
    grace: u64,
    first_seq: u64,
    next_seq: u64,
    batch: WriteBatch,
    fingerprints: Vec<u8>,
    by_petition: BTreeMap<u32, Vec<u8>>,
    /// Pending signers changed in this batch (`None`: no longer pending). Written at the end,
    /// in key order: a memtable insert that follows the one before in key order is cheap, one
    /// at a random place in the skip list walks it from the top (half the writer's time when
    /// validations came in random order, before).
    signers: BTreeMap<Fingerprint, Option<PendingSigner>>,
    /// Every signature's state (the writer is the only one to change it).
    states: &'s States,
    /// States changed in this batch, in order: each a `transitions` entry (new pending
    /// signatures are `lifecycle` entries instead), applied to `states` at the end.
    changes: Vec<(u64, SignatureState)>,
    /// The same, by sequence, for the lookups of later items of the batch.
    changed: HashMap<u64, SignatureState>,
    /// New pending signatures' `lifecycle` entries (ascending sequences).
    created: Vec<(u64, LifecycleEntry)>,
    /// The key of the next `transitions` entry.
    next_transition: u64,
    regions: &'s Regions,
    /// Changes of counts by place.
    places: PlaceChanges,
}

impl Building<'_> {
    /// The place of the stored signature `seq` (for a token or an entry from before places
    /// carried it): read from its record.
    fn place_of(&self, seq: u64) -> Place {
        let mut place = Place::NONE;
        // A read failure leaves the place unknown: the signature counts under no country, and
        // the count stays exact.
        let _ = self.store.records(&[seq], |_, record| {
            place = place_of_record(self.regions, &record);
        });
        place
    }

    /// The state of the signature `seq`, with this batch's changes so far.
    fn state(&self, seq: u64) -> SignatureState {
        match self.changed.get(&seq) {
            Some(state) => *state,
            None => self.states.get(seq),
        }
    }

    /// Records a change of state (a `transitions` entry).
    fn transition(&mut self, seq: u64, state: SignatureState) {
        put_transition(
            &mut self.batch,
            self.store,
            &mut self.next_transition,
            Transition {
                seq,
                state,
                at_ms: self.now,
            },
        );
        self.changes.push((seq, state));
        self.changed.insert(seq, state);
    }

    /// Puts the lifecycle changes into the batch (new entries and pending signers each once, in
    /// key order) and applies the batch's states to the table: the writer's next batch counts on
    /// from them; if this one fails, the recovery rebuilds the table from the store.
    fn finish(mut self) -> Finished {
        let lifecycle = self.store.cf(CF_LIFECYCLE);
        for (seq, entry) in &self.created {
            self.batch
                .put_cf(lifecycle, seq.to_be_bytes(), entry.encode());
        }
        self.states.set_all(
            self.created
                .iter()
                .map(|(seq, _)| (*seq, SignatureState::Pending))
                .chain(self.changes.iter().copied()),
        );
        let signers = self.store.cf(CF_PENDING_SIGNERS);
        for (fp, signer) in &self.signers {
            match signer {
                Some(signer) => self.batch.put_cf(signers, fp.to_bytes(), signer.encode()),
                None => self.batch.delete_cf(signers, fp.to_bytes()),
            }
        }
        Finished {
            batch: self.batch,
            first_seq: self.first_seq,
            next_seq: self.next_seq,
            fingerprints: self.fingerprints,
            by_petition: self.by_petition,
            next_transition: self.next_transition,
            places: self.places,
        }
    }

    fn token(&self, petition: u32, seq: u64, expires_at_ms: u64, place: Place) -> Outcome {
        Outcome::Pending {
            token: self.tokens.issue(Named {
                petition,
                seq,
                expires_at_ms,
                place: Some(place),
            }),
        }
    }

    /// Writes a new signature at the next sequence, pending if its petition validates by
    /// email; returns its answer.
    fn write_new(
        &mut self,
        job: &SignJob,
        item: &Item,
        petition: u32,
        counts: &mut Touched,
    ) -> Outcome {
        let seq = self.next_seq;
        self.next_seq += 1;
        let record = &job.records[item.record.clone()];
        debug_assert!(
            record::decode(record).is_ok_and(|r| r.petition == petition),
            "a record decodes and names its item's petition"
        );
        let key = seq.to_be_bytes();
        self.batch.put_cf(self.store.cf(CF_SIGNATURES), key, record);
        record::push_fingerprint(&mut self.fingerprints, item.fp);
        lifecycle::push_run(
            self.by_petition.entry(petition).or_default(),
            self.first_seq,
            seq,
        );
        if !item.by_email {
            counts.after.validated += 1;
            count_place(&mut self.places, petition, item.place, 1);
            return Outcome::Accepted {
                count: counts.after.validated,
            };
        }
        let expires_at_ms = self.now.saturating_add(self.grace);
        let entry = LifecycleEntry {
            state: SignatureState::Pending,
            petition,
            expires_at_ms,
            fp: item.fp,
            changed_at_ms: self.now,
        };
        let signer = PendingSigner {
            seq,
            expires_at_ms,
            resubmits: 0,
            place: Some(item.place),
        };
        self.signers.insert(item.fp, Some(signer));
        self.created.push((seq, entry));
        self.changed.insert(seq, SignatureState::Pending);
        counts.after.pending += 1;
        self.token(petition, seq, expires_at_ms, item.place)
    }

    /// A signer the index holds signs a petition that validates by email again.
    fn resubmit(
        &mut self,
        job: &SignJob,
        item: &Item,
        petition: u32,
        counts: &mut Touched,
        read: Option<PendingSigner>,
    ) -> Result<Outcome, SubmitError> {
        let signer = match self.signers.get(&item.fp) {
            Some(changed) => *changed,
            None => read,
        };
        let Some(signer) = signer else {
            // Validated, or invalidated: a duplicate either way.
            return Ok(Outcome::Duplicate {
                count: counts.after.validated,
            });
        };
        match self.state(signer.seq) {
            SignatureState::Pending => {}
            // Its entry outlived its pending state (the sweep clears such entries later).
            SignatureState::Validated | SignatureState::Invalidated => {
                return Ok(Outcome::Duplicate {
                    count: counts.after.validated,
                })
            }
            // Not reached while the index holds the signer; as a new signature if it were.
            SignatureState::Expired => return Ok(self.write_new(job, item, petition, counts)),
        }
        if self.now >= signer.expires_at_ms {
            // Expired, not swept yet: it goes now, and this signature takes the signer's slot
            // (already held in the index) as a new pending one.
            drop_record(&mut self.batch, self.store, signer.seq, self.first_seq);
            self.transition(signer.seq, SignatureState::Expired);
            counts.after.pending -= 1;
            return Ok(self.write_new(job, item, petition, counts));
        }
        if signer.resubmits >= RESUBMITS_MAX {
            return Err(SubmitError::TooManyResubmits);
        }
        let place = signer.place.unwrap_or_else(|| self.place_of(signer.seq));
        let again = PendingSigner {
            resubmits: signer.resubmits + 1,
            place: Some(place),
            ..signer
        };
        self.signers.insert(item.fp, Some(again));
        Ok(self.token(petition, signer.seq, signer.expires_at_ms, place))
    }

    /// A genuine token validates the signature `seq`, which expires at `expires_at_ms`.
    fn validate(
        &mut self,
        seq: u64,
        expires_at_ms: u64,
        place: Option<Place>,
        petition: &Petition,
        counts: &mut Touched,
    ) -> Result<Outcome, SubmitError> {
        match self.state(seq) {
            SignatureState::Pending if self.now >= expires_at_ms => Err(SubmitError::TokenExpired),
            SignatureState::Pending if !petition.is_open(self.now) => {
                Err(SubmitError::PetitionClosed)
            }
            SignatureState::Pending => {
                self.transition(seq, SignatureState::Validated);
                counts.after.pending -= 1;
                counts.after.validated += 1;
                let place = place.unwrap_or_else(|| self.place_of(seq));
                count_place(&mut self.places, petition.num, place, 1);
                Ok(Outcome::Validated {
                    count: counts.after.validated,
                })
            }
            SignatureState::Validated => Ok(Outcome::AlreadyValidated {
                count: counts.after.validated,
            }),
            SignatureState::Invalidated => Err(SubmitError::Invalidated),
            SignatureState::Expired => Err(SubmitError::TokenExpired),
        }
    }
}

impl Writer {
    /// Encodes one `WriteBatch` of `fresh`: new signature records and their fingerprints, the
    /// lifecycle changes of re-submissions and validations (read from the store first), the
    /// touched petitions' counts and the events those make. Every item's answer is decided
    /// here; the ones that wrote are given once the batch is durable.
    fn prepare(
        &self,
        store: &Store,
        open: &[SignJob],
        fresh: &[(usize, Item)],
        alerts: Vec<NewEvent>,
    ) -> Result<Prepared, StoreError> {
        assert!(!fresh.is_empty(), "a batch holds at least one item");
        debug_assert!(
            {
                let mut seen = std::collections::HashSet::with_capacity(fresh.len());
                fresh
                    .iter()
                    .filter(|(_, item)| item.kind == ItemKind::Sign)
                    .all(|(_, item)| seen.insert(item.fp))
            },
            "a new signer is written once per batch"
        );
        let now = self.shared.now_ms();
        let signers = resubmitted_signers(store, fresh)?;
        let mut b = Building {
            store,
            tokens: self.shared.tokens(),
            now,
            grace: self.shared.config().pending_grace.as_millis() as u64,
            first_seq: self.next_seq,
            next_seq: self.next_seq,
            batch: WriteBatch::default(),
            fingerprints: Vec::new(),
            by_petition: BTreeMap::new(),
            signers: BTreeMap::new(),
            states: self.shared.states(),
            changes: Vec::new(),
            changed: HashMap::new(),
            created: Vec::new(),
            next_transition: self.next_transition_seq,
            regions: self.shared.regions(),
            places: PlaceChanges::default(),
        };
        let mut commits = Vec::new();
        let mut touched: HashMap<u32, Touched> = HashMap::new();
        let mut answers = Vec::with_capacity(fresh.len());
        let mut signed = 0u64;
        let mut resubmit_at = 0;
        for (j, item) in fresh {
            let job = &open[*j];
            let petition = &job.petitions[item.petition as usize];
            let counts = touched
                .entry(petition.num)
                .or_insert_with(|| Touched::new(petition, &self.written_counts));
            let answer = match item.kind {
                ItemKind::Sign => {
                    signed += 1;
                    commits.push(item.fp);
                    Ok(b.write_new(job, item, petition.num, counts))
                }
                ItemKind::Resubmit => {
                    let read = signers[resubmit_at];
                    resubmit_at += 1;
                    b.resubmit(job, item, petition.num, counts, read)
                }
                ItemKind::Validate {
                    seq,
                    expires_at_ms,
                    place,
                } => b.validate(seq, expires_at_ms, place, petition, counts),
            };
            answers.push(answer);
        }
        let Finished {
            mut batch,
            first_seq,
            next_seq,
            fingerprints,
            by_petition,
            next_transition,
            places,
        } = b.finish();
        let written = next_seq - first_seq;
        assert_eq!(
            fingerprints.len() as u64,
            written * Fingerprint::BYTES as u64,
            "a fingerprint per record"
        );
        if written > 0 {
            batch.put_cf(
                store.cf(CF_FINGERPRINTS),
                first_seq.to_be_bytes(),
                &fingerprints,
            );
            let by_petition_cf = store.cf(CF_BY_PETITION);
            for (num, runs) in by_petition {
                batch.put_cf(
                    by_petition_cf,
                    lifecycle::by_petition_key(num, first_seq),
                    runs,
                );
            }
        }
        let grown: u64 = touched
            .values()
            .map(|t| t.after.held() - t.before.held())
            .sum();
        assert_eq!(
            grown, signed,
            "signers held grow by the new signers written"
        );
        sort_places(places, &mut touched);
        let (mut events, mut next_event_seq) = self.put_counts(store, &mut batch, &touched, now);
        for alert in alerts {
            if let Some(petition) = self.shared.registry().by_num(alert.petition) {
                events.push(self.put_event(
                    store,
                    &mut batch,
                    &mut next_event_seq,
                    &petition,
                    alert.at_ms,
                    alert.data,
                ));
            }
        }
        let _ = first_seq;
        Ok(Prepared {
            batch,
            counts: touched
                .into_values()
                .filter(|t| t.after != t.before)
                .map(|mut t| {
                    let changes = t.changes(now);
                    (t.petition, t.after, changes)
                })
                .collect(),
            answers,
            commits,
            written,
            events,
            next_event_seq,
            next_transition,
        })
    }

    /// Puts the touched petitions' changed counts into `batch`, with an event for each
    /// threshold a validated count moves across: `threshold_crossed` for each threshold in
    /// `(before, after]` as it rises (and `response_due` when that is the response threshold),
    /// `threshold_regressed` for each reached threshold above `after` as it falls (highest
    /// first). Returns the events and the next event sequence.
    pub(super) fn put_counts(
        &self,
        store: &Store,
        batch: &mut WriteBatch,
        touched: &HashMap<u32, Touched>,
        now: u64,
    ) -> (Vec<Event>, u64) {
        let mut new = Vec::new();
        let counts_cf = store.cf(CF_COUNTS);
        self.put_regions(store, batch);
        let breakdowns_cf = store.cf(CF_BREAKDOWNS);
        // In key order: a memtable insert next to the one before is cheap, one at a random
        // place walks the skip list from the top (see `Building`).
        let mut touched: Vec<(&u32, &Touched)> = touched.iter().collect();
        touched.sort_unstable_by_key(|(num, _)| **num);
        // One buffer for every petition's operand (the batch copies each), not one grown per
        // petition: a batch touches about 1,500 petitions over 500,000.
        let mut entries = Entries::default();
        for (num, t) in touched {
            if t.after == t.before {
                continue;
            }
            let (count, len) = t.after.encode();
            batch.put_cf(counts_cf, num.to_be_bytes(), &count[..len]);
            // One operand a petition: its changes by place and of its history.
            let (before, after) = (t.before.validated, t.after.validated);
            entries.clear();
            for &(place, delta) in &t.places {
                entries.place(place, delta);
            }
            if after != before {
                entries.history(now, after as i64 - before as i64);
            }
            if !entries.is_empty() {
                batch.merge_cf(breakdowns_cf, num.to_be_bytes(), entries.bytes());
            }
            if after >= before {
                let crossed = t.petition.crossed(before, after);
                // The response threshold is always one of the thresholds: without a crossing
                // it cannot fall due, and most batches cross nothing (one lock, not two).
                let any = !crossed.is_empty();
                for threshold in crossed {
                    new.push((&t.petition, EventData::ThresholdCrossed { threshold }));
                }
                let due = any
                    .then(|| t.petition.response_falls_due(before, after, now))
                    .flatten();
                if let Some((threshold, due_at_ms)) = due {
                    new.push((
                        &t.petition,
                        EventData::ResponseDue {
                            threshold,
                            due_at_ms,
                        },
                    ));
                }
            } else {
                for threshold in t.petition.regressed(after) {
                    new.push((&t.petition, EventData::ThresholdRegressed { threshold }));
                }
            }
        }
        let mut seq = self.next_event_seq;
        let events = new
            .into_iter()
            .map(|(petition, data)| self.put_event(store, batch, &mut seq, petition, now, data))
            .collect();
        (events, seq)
    }

    /// Puts the regions named since the last batch into `batch` (each batch carries the ones
    /// its signatures may name; the dictionary only grows).
    fn put_regions(&self, store: &Store, batch: &mut WriteBatch) {
        let stored = self.regions_stored.get();
        let regions = self.shared.regions();
        if regions.len() == stored {
            return;
        }
        let cf = store.cf(CF_REGIONS);
        let mut last = stored;
        for (id, key) in regions.since(stored + 1) {
            batch.put_cf(cf, id.to_be_bytes(), key.encode());
            last = id;
        }
        self.regions_stored.set(last);
    }

    /// Puts one event into `batch` under sequence `*seq` (then advanced) and returns it.
    pub(super) fn put_event(
        &self,
        store: &Store,
        batch: &mut WriteBatch,
        seq: &mut u64,
        petition: &Petition,
        at_ms: u64,
        data: EventData,
    ) -> Event {
        let new = NewEvent {
            petition: petition.num,
            at_ms,
            data,
        };
        batch.put_cf(
            store.cf(CF_MILESTONES),
            seq.to_be_bytes(),
            event::encode(&new),
        );
        let event = Event {
            seq: *seq,
            petition: petition.id.to_string(),
            at_ms,
            data: new.data,
        };
        *seq += 1;
        event
    }

    /// Writes `fresh` without a sync and hands the batch, with every job of the round, to the
    /// syncer, which makes it durable and answers.
    pub(super) fn write_for_syncer(
        &mut self,
        mut open: Vec<SignJob>,
        fresh: Vec<(usize, Item)>,
        alerts: Vec<NewEvent>,
    ) {
        let Some(store) = self.store.clone() else {
            unreachable!("write_for_syncer is only called with a healthy store")
        };
        if self.syncer.as_ref().is_some_and(Syncer::published) {
            // Everything written is published: the counts are current again. (Not after a
            // failed sync: then the failed batches' counts are in the log, and this batch
            // must count on from them; the recovery reloads them all.)
            self.written_counts.clear();
        }
        let prepared = self.prepare(&store, &open, &fresh, alerts);
        let started = Instant::now();
        let written = prepared.and_then(|mut p| {
            store
                .write(std::mem::take(&mut p.batch), Durability::Buffered)
                .map(|()| p)
        });
        let prepared = match written {
            Ok(prepared) => prepared,
            Err(e) => {
                self.fail_fresh(&mut open, fresh, &e);
                // Nothing here awaits an original (that takes the synced path): this only
                // answers.
                self.settle(open, true);
                return;
            }
        };
        let first_seq = self.next_seq;
        let first_event_seq = self.next_event_seq;
        for (petition, counts, _) in &prepared.counts {
            self.written_counts.insert(petition.num, *counts);
        }
        let fingerprints = prepared.commits;
        self.accept(
            &mut open,
            fresh,
            prepared.answers,
            prepared.written,
            (prepared.next_event_seq, prepared.next_transition),
        );
        let callers = open.into_iter().map(|job| job.caller).collect();
        let written = Written {
            store,
            first_seq,
            next_seq: self.next_seq,
            first_event_seq,
            fingerprints,
            counts: prepared.counts,
            events: prepared.events,
            callers,
            started,
        };
        self.syncer
            .as_mut()
            .expect("write_for_syncer is only called with a syncer")
            .send(written);
    }

    /// Writes `fresh` in one batch, synced as the durability says, and commits it.
    pub(super) fn write_fresh(
        &mut self,
        open: &mut [SignJob],
        fresh: Vec<(usize, Item)>,
        alerts: Vec<NewEvent>,
    ) {
        let Some(store) = self.store.clone() else {
            unreachable!("write_fresh is only called with a healthy store")
        };
        let mut prepared = match self.prepare(&store, open, &fresh, alerts) {
            Ok(prepared) => prepared,
            Err(e) => return self.fail_fresh(open, fresh, &e),
        };

        // The commit below finds every entry again; their buckets are long out of this core's
        // cache. Start the first few loads now so they land during the write.
        let index = self.shared.index();
        for fp in prepared.commits.iter().take(PREFETCH_DISTANCE) {
            index.prefetch(*fp);
        }
        let started = Instant::now();
        let result = store.write(std::mem::take(&mut prepared.batch), self.durability);
        self.shared.record_write_latency(started.elapsed());

        match result {
            Ok(()) => {
                self.accept(
                    open,
                    fresh,
                    prepared.answers,
                    prepared.written,
                    (prepared.next_event_seq, prepared.next_transition),
                );
                syncer::publish(
                    &self.shared,
                    self.next_seq,
                    &prepared.commits,
                    &prepared.counts,
                    prepared.events,
                );
            }
            Err(e) => self.fail_fresh(open, fresh, &e),
        }
    }

    /// After a successful write of `fresh`: moves the sequences past it and gives each item its
    /// answer (sent once the batch is durable).
    fn accept(
        &mut self,
        open: &mut [SignJob],
        fresh: Vec<(usize, Item)>,
        answers: Vec<Result<Outcome, SubmitError>>,
        written: u64,
        next: (u64, u64),
    ) {
        self.next_seq += written;
        (self.next_event_seq, self.next_transition_seq) = next;
        for ((j, item), answer) in fresh.into_iter().zip(answers) {
            if let Ok(Outcome::Duplicate { .. }) = answer {
                self.shared.count_duplicates(1);
            }
            open[j].caller.answers.push((item.index, answer));
        }
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
            if item.kind == ItemKind::Sign {
                self.shared.index().remove(item.fp);
            }
            open[j]
                .caller
                .answers
                .push((item.index, Err(SubmitError::StorageUnavailable)));
        }
    }
}
