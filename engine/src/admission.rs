//! Admission: validate → petition → fingerprint → index, for one call of many signatures.
//!
//! Three passes, so that per-signature work stays small and the index's cache misses overlap:
//! (1) [`Call::resolve`]: under one registry read lock, resolve each petition to a slot of this
//! call (one reference count per distinct petition, not per signature), validate and fingerprint;
//! (2) [`Call::claim`]: insert the fingerprints, prefetching the home bucket of the one
//! [`PREFETCH_DISTANCE`] ahead; (3) in memory mode [`Call::count_in_memory`]: one atomic add per
//! petition, then the ordinals in input order; otherwise [`Call::hand_over`]: new signers go to
//! the writer as one job.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::error::SubmitError;
use crate::event::{EventData, NewEvent};
use crate::fingerprint::Fingerprint;
use crate::index::{Insert, Presence, PREFETCH_DISTANCE};
use crate::job::{reply_channel, Caller, Item, ItemKind, Job, Outcome, SignJob, Waiting};
use crate::limit::{Key as LimitKey, Limiter};
use crate::petition::{Changes, Petition, RegistryRead};
use crate::place::{Place, RegionKey, RegionsFull};
use crate::shared::Shared;
use crate::signature::InvalidField;
use crate::signature::{self, AsSignatureRef, Op, ValidRef};
use crate::sources::{Signer, Sources};
use crate::token::TokenError;

/// What admission takes: signatures, or a mix of signatures and validations ([`Op`]).
pub(crate) trait AsOp {
    fn op(&self) -> Op<'_>;
}

impl<S: AsSignatureRef> AsOp for S {
    #[inline]
    fn op(&self) -> Op<'_> {
        Op::Sign(self.signature_ref())
    }
}

impl AsOp for Op<'_> {
    #[inline]
    fn op(&self) -> Op<'_> {
        *self
    }
}

/// One answer per signature of a call, in input order.
pub(crate) type Results = Vec<Result<Outcome, SubmitError>>;

/// Validates, resolves and fingerprints each signature and claims it in the index. In memory
/// mode (`sender` is `None`) that is the whole job; otherwise new signers go to the writer, and
/// the caller waits for their answers on the returned [`Waiting`].
#[inline]
pub(crate) fn admit<S: AsOp>(
    shared: &Shared,
    sender: Option<&Sender<Job>>,
    signatures: &[S],
    async_reply: bool,
) -> (Results, Option<Waiting>) {
    let n = signatures.len();
    if n == 0 {
        return (Vec::new(), None);
    }
    if let Err(error) = check_taking(shared, sender.is_none(), n) {
        return (vec![Err(error); n], None);
    }
    let now = shared.now_ms();
    let generation = shared.generation();
    let mut call = Call {
        shared,
        memory: sender.is_none(),
        now,
        // Every position is overwritten below or by the writer's answers; one that is not (the
        // writer went away) reads as shut down.
        results: vec![Err(SubmitError::ShuttingDown); n],
        slots: Vec::new(),
        claims: Vec::with_capacity(n),
        validations: Vec::new(),
    };
    let (valid, signers) = call.resolve(signatures);
    let (mut items, records) = call.claim(&valid);
    items.append(&mut call.validations);
    let alerts = match shared.sources() {
        Some(sources) if !signers.is_empty() => call.track_sources(sources, &signers),
        _ => Vec::new(),
    };
    match sender {
        None => {
            call.count_in_memory();
            call.publish_alerts(alerts);
            (call.results, None)
        }
        Some(sender) => call.hand_over(sender, items, records, alerts, generation, async_reply),
    }
}

/// Whether the engine takes signatures now; a persistent engine also reserves room for `n` in
/// its queue.
#[inline]
fn check_taking(shared: &Shared, memory: bool, n: usize) -> Result<(), SubmitError> {
    if shared.is_closing() {
        return Err(SubmitError::ShuttingDown);
    }
    if !shared.is_ready() {
        return Err(SubmitError::Recovering);
    }
    if !shared.health().is_healthy() {
        return Err(SubmitError::StorageUnavailable);
    }
    if shared.guards().is_read_only() {
        return Err(SubmitError::ReadOnly);
    }
    if !memory && !shared.reserve_inflight(n) {
        return Err(SubmitError::Overloaded);
    }
    Ok(())
}

/// One petition named in a call.
struct Slot {
    petition: Arc<Petition>,
    /// Whether it took signatures when the call began.
    open: bool,
    /// Whether its new signatures are stored pending (validation by email).
    by_email: bool,
    /// Whether its signing was paused when the call began.
    paused: bool,
    /// Signers accepted in this call (memory mode).
    accepted: u64,
}

impl Slot {
    fn new(petition: &Arc<Petition>, now: u64) -> Slot {
        Slot {
            open: petition.is_open(now),
            by_email: petition.validates_by_email(),
            paused: petition.is_paused(),
            petition: Arc::clone(petition),
            accepted: 0,
        }
    }
}

/// One signature of a call that passed validation: where it goes in the index and the answers.
#[derive(Clone, Copy)]
struct Claim {
    index: usize,
    slot: u32,
    fp: Fingerprint,
    inserted: bool,
    /// Its country and region.
    place: Place,
}

/// Hashes the engine's own dense numbers (petitions, places: not caller input) for per-call
/// and per-batch maps.
#[derive(Default)]
pub(crate) struct NumberHasher(u64);

impl Hasher for NumberHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Pass 1's memory of the petitions seen: each one's slot, and the two most recent.
///
/// Consecutive signatures mostly name the same petition, or go back to the one before (a viral
/// petition's run broken by one signature for another): the two most recent petitions are
/// remembered.
#[derive(Default)]
struct Recent<'s> {
    slot_of: HashMap<u32, u32, BuildHasherDefault<NumberHasher>>,
    last: Option<(&'s str, u32)>,
    before: Option<(&'s str, u32)>,
}

impl<'s> Recent<'s> {
    /// The slot of the petition `id`, added to `slots` on first sight; `None` if it is unknown.
    #[inline]
    fn slot(
        &mut self,
        slots: &mut Vec<Slot>,
        registry: &RegistryRead<'_>,
        id: &'s str,
        now: u64,
    ) -> Option<u32> {
        match (self.last, self.before) {
            (Some((last, slot)), _) if same_id(last, id) => Some(slot),
            (_, Some((before, slot))) if same_id(before, id) => {
                std::mem::swap(&mut self.last, &mut self.before);
                Some(slot)
            }
            _ => registry.get(id).map(|petition| {
                let slot = *self.slot_of.entry(petition.num).or_insert_with(|| {
                    slots.push(Slot::new(petition, now));
                    (slots.len() - 1) as u32
                });
                self.before = self.last;
                self.last = Some((id, slot));
                slot
            }),
        }
    }

    /// The slot of the petition numbered `num`, added to `slots` on first sight.
    fn slot_by_num(
        &mut self,
        slots: &mut Vec<Slot>,
        registry: &RegistryRead<'_>,
        num: u32,
        now: u64,
    ) -> Option<u32> {
        if let Some(&slot) = self.slot_of.get(&num) {
            return Some(slot);
        }
        let petition = registry.by_num(num)?;
        slots.push(Slot::new(petition, now));
        let slot = (slots.len() - 1) as u32;
        self.slot_of.insert(num, slot);
        Some(slot)
    }
}

/// One call's state through the passes.
struct Call<'a> {
    shared: &'a Shared,
    memory: bool,
    now: u64,
    results: Results,
    slots: Vec<Slot>,
    claims: Vec<Claim>,
    /// Validations with a genuine token, for the writer.
    validations: Vec<Item>,
}

impl Call<'_> {
    /// Pass 1: resolve, validate, fingerprint. Returns the validated fields of each claim
    /// (persistent mode only: they are encoded for the writer in pass 2) and, if trending
    /// sources are tracked, each claim's sources by input index.
    #[inline]
    fn resolve<'s, S: AsOp>(
        &mut self,
        signatures: &'s [S],
    ) -> (Vec<ValidRef<'s>>, Vec<(usize, Signer<'s>)>) {
        let shared = self.shared;
        let policy = shared.config().signer_policy;
        let fingerprinter = shared.fingerprinter();
        let mut valid = Vec::new();
        let mut rejected = 0u64;
        let registry = shared.registry().read();
        let regions = shared.regions().read();
        let guards = shared.guards().read();
        let paused = shared.guards().is_paused();
        let limiter = shared.limiter();
        let tracking = shared.sources().is_some();
        let mut signers = Vec::new();
        // Signatures for the limits per (petition, address), by input index: taken in a pass
        // of their own, each set prefetched a few ahead.
        let mut limit_keys: Vec<(usize, LimitKey)> = Vec::with_capacity(if limiter.is_some() {
            signatures.len()
        } else {
            0
        });
        // Claims whose region is not in the dictionary yet: named after this pass.
        let mut unnamed: Vec<(usize, RegionKey)> = Vec::new();
        let mut recent = Recent::default();
        for (index, op) in signatures.iter().enumerate() {
            let signature = match op.op() {
                Op::Sign(signature) => signature,
                Op::Validate(token) => {
                    if let Err(error) = self.validation(&mut recent, &registry, index, token) {
                        rejected += 1;
                        self.results[index] = Err(error);
                    }
                    continue;
                }
            };
            let slot = recent.slot(&mut self.slots, &registry, signature.petition, self.now);
            if self.memory && slot.is_some_and(|slot| self.slots[slot as usize].by_email) {
                rejected += 1;
                self.results[index] = Err(SubmitError::Unsupported);
                continue;
            }
            let target = slot.map(|slot| &self.slots[slot as usize]);
            // Fingerprint only for an open petition: a refused signature costs no hash.
            let checked = signature::validate(&signature, policy, |signer| {
                target
                    .filter(|slot| slot.open)
                    .map(|slot| fingerprinter.fingerprint(slot.petition.num, signer))
            })
            .map_err(SubmitError::from)
            .and_then(|(fields, fp)| match (slot, fp) {
                (Some(slot), Some(fp)) => Ok((fields, slot, fp)),
                (Some(_), None) => Err(SubmitError::PetitionClosed),
                (None, _) => Err(SubmitError::UnknownPetition),
            })
            .and_then(|(fields, slot, fp)| {
                if paused || self.slots[slot as usize].paused {
                    return Err(SubmitError::SigningPaused);
                }
                if guards.blocks(fields.ip_addr, fields.email) {
                    return Err(SubmitError::Blocked);
                }
                Ok((fields, slot, fp))
            });
            match checked {
                Ok((fields, slot, fp)) => {
                    if let (Some(limiter), Some(ip)) = (limiter, fields.ip_addr) {
                        if !guards.allows(ip) {
                            let num = self.slots[slot as usize].petition.num;
                            limit_keys.push((index, limiter.key(num, ip)));
                        }
                    }
                    if tracking {
                        signers.push((
                            index,
                            Signer {
                                ip: fields.ip_addr,
                                email: fields.email,
                            },
                        ));
                    }
                    let mut place = Place::of_country(fields.country);
                    if let Some(region) = fields.region {
                        let key = RegionKey::new(place.country(), region);
                        match regions.find(&key) {
                            Some(id) => place = Place::new(place.country(), id),
                            None => unnamed.push((self.claims.len(), key)),
                        }
                    }
                    self.claims.push(Claim {
                        index,
                        slot,
                        fp,
                        inserted: false,
                        place,
                    });
                    if !self.memory {
                        valid.push(fields);
                    }
                }
                Err(error) => {
                    rejected += 1;
                    self.results[index] = Err(error);
                }
            }
        }
        drop(registry);
        drop(regions);
        drop(guards);
        if !unnamed.is_empty() {
            rejected += self.name_regions(unnamed, &mut valid);
        }
        if let (Some(limiter), false) = (limiter, limit_keys.is_empty()) {
            rejected += self.limit(limiter, &limit_keys, &mut valid);
        }
        if rejected > 0 {
            shared.count_rejected(rejected);
        }
        (valid, signers)
    }

    /// Counts the sources of the new signers claimed (`signers`: by input index, a superset
    /// of the claims), under one lock per petition; returns the alerts they make, as events.
    fn track_sources(&self, sources: &Sources, signers: &[(usize, Signer<'_>)]) -> Vec<NewEvent> {
        // The new signers' sources, grouped by petition slot (a counting sort: each
        // petition's signers stay in input order).
        let mut starts = vec![0u32; self.slots.len() + 1];
        let mut claimed: Vec<(u32, &Signer<'_>)> = Vec::with_capacity(self.claims.len());
        let mut next = signers.iter().peekable();
        for claim in self.claims.iter().filter(|claim| claim.inserted) {
            while next.next_if(|(index, _)| *index < claim.index).is_some() {}
            if let Some((_, signer)) = next.next_if(|(index, _)| *index == claim.index) {
                claimed.push((claim.slot, signer));
                starts[claim.slot as usize + 1] += 1;
            }
        }
        for at in 1..starts.len() {
            starts[at] += starts[at - 1];
        }
        let mut grouped: Vec<&Signer<'_>> = Vec::new();
        if let (Some(&(_, first)), false) = (claimed.first(), self.slots.len() == 1) {
            grouped.resize(claimed.len(), first);
            let mut place = starts.clone();
            for &(slot, signer) in &claimed {
                grouped[place[slot as usize] as usize] = signer;
                place[slot as usize] += 1;
            }
        } else {
            grouped.extend(claimed.iter().map(|&(_, signer)| signer));
        }
        let mut alerts = Vec::new();
        for (slot, range) in starts.windows(2).enumerate() {
            if range[0] == range[1] {
                continue;
            }
            let run = &grouped[range[0] as usize..range[1] as usize];
            alerts.extend(sources.record(&self.slots[slot].petition, run, self.now));
        }
        alerts
            .into_iter()
            .map(|alert| NewEvent {
                petition: alert.petition,
                at_ms: self.now,
                data: EventData::SourceAlert {
                    source: alert.source,
                    count: alert.count,
                    threshold: alert.threshold,
                },
            })
            .collect()
    }

    /// Memory mode: numbers and publishes source alerts (a persistent engine's go to the
    /// writer with the signatures that made them).
    #[cold]
    fn publish_alerts(&self, alerts: Vec<NewEvent>) {
        for event in alerts {
            if let Some(petition) = self.shared.registry().by_num(event.petition) {
                self.shared
                    .publish_memory_events(&petition, event.at_ms, vec![event.data]);
            }
        }
    }

    /// Names the regions the dictionary did not hold (new ones get ids); a claim whose region
    /// cannot be named (the dictionary is full) is refused. Returns how many were refused.
    #[cold]
    fn name_regions(
        &mut self,
        unnamed: Vec<(usize, RegionKey)>,
        valid: &mut Vec<ValidRef<'_>>,
    ) -> u64 {
        let mut refused = Vec::new();
        for (at, key) in unnamed {
            let claim = &mut self.claims[at];
            match self.shared.regions().intern(key) {
                Ok(id) => claim.place = Place::new(claim.place.country(), id),
                Err(RegionsFull) => {
                    self.results[claim.index] = Err(SubmitError::Invalid(InvalidField {
                        field: "region",
                        reason: "too many distinct regions: the store names as many as it may",
                    }));
                    refused.push(at);
                }
            }
        }
        for &at in refused.iter().rev() {
            self.claims.remove(at);
            if !self.memory {
                valid.remove(at);
            }
        }
        refused.len() as u64
    }

    /// Counts each signature of `keys` (by input index, in input order) against the limits per
    /// (petition, address); a claim over a limit is refused. Returns how many were refused.
    fn limit(
        &mut self,
        limiter: &Limiter,
        keys: &[(usize, LimitKey)],
        valid: &mut Vec<ValidRef<'_>>,
    ) -> u64 {
        let refused: Vec<usize> = limiter
            .take_all(keys, self.now)
            .into_iter()
            .map(|(index, limited)| {
                self.results[index] = Err(SubmitError::RateLimited {
                    retry_after_s: limited.retry_after_s,
                });
                index
            })
            .collect();
        if refused.is_empty() {
            return 0;
        }
        // Claims and `keys` are both in input order: one pass marks the refused claims.
        let mut next = refused.iter().peekable();
        let drop: Vec<bool> = self
            .claims
            .iter()
            .map(|claim| next.next_if(|&&index| index == claim.index).is_some())
            .collect();
        let mut at = 0;
        self.claims.retain(|_| {
            at += 1;
            !drop[at - 1]
        });
        if !self.memory {
            let mut at = 0;
            valid.retain(|_| {
                at += 1;
                !drop[at - 1]
            });
        }
        refused.len() as u64
    }

    /// A validation: checks the token (its tag, in constant time) and queues it for the writer,
    /// which reads and changes the state of the signature it names.
    fn validation<'s>(
        &mut self,
        recent: &mut Recent<'s>,
        registry: &RegistryRead<'_>,
        index: usize,
        token: &str,
    ) -> Result<(), SubmitError> {
        if self.memory {
            return Err(SubmitError::Unsupported);
        }
        let named = self
            .shared
            .tokens()
            .check(token)
            .map_err(|error| match error {
                TokenError::Malformed => SubmitError::MalformedToken,
                TokenError::Unknown => SubmitError::UnknownToken,
            })?;
        let slot = recent
            .slot_by_num(&mut self.slots, registry, named.petition, self.now)
            .ok_or(SubmitError::UnknownToken)?;
        self.validations.push(Item {
            index,
            petition: slot,
            fp: Fingerprint(0),
            record: 0..0,
            awaiting: false,
            kind: ItemKind::Validate {
                seq: named.seq,
                expires_at_ms: named.expires_at_ms,
                place: named.place,
            },
            by_email: true,
            place: Place::NONE,
        });
        Ok(())
    }

    /// Pass 2: claims each fingerprint in the index. Persistent mode: returns the items for the
    /// writer and their records, encoded back to back.
    #[inline]
    fn claim(&mut self, valid: &[ValidRef<'_>]) -> (Vec<Item>, Vec<u8>) {
        let shared = self.shared;
        let index = shared.index();
        let memory = self.memory;
        let mut items = Vec::new();
        // Room for every valid signature's record: one allocation per call.
        let mut records =
            Vec::with_capacity(valid.iter().map(|fields| fields.encoded_len_max()).sum());
        let mut duplicates = 0u64;
        for &claim in self.claims.iter().take(PREFETCH_DISTANCE) {
            index.prefetch(claim.fp);
        }
        // By position: the loop reads the claim `PREFETCH_DISTANCE` ahead as well as its own.
        #[allow(clippy::needless_range_loop)]
        for at in 0..self.claims.len() {
            if let Some(ahead) = self.claims.get(at + PREFETCH_DISTANCE) {
                index.prefetch(ahead.fp);
            }
            let claim = &mut self.claims[at];
            let inserted = index.insert(claim.fp, !memory);
            match inserted {
                Insert::Inserted if memory => {
                    claim.inserted = true;
                    self.slots[claim.slot as usize].accepted += 1;
                }
                Insert::Inserted | Insert::Present(Presence::Pending) if !memory => {
                    claim.inserted = inserted == Insert::Inserted;
                    let slot = &self.slots[claim.slot as usize];
                    items.push(Item {
                        index: claim.index,
                        // Met pending: another submission of this signer is on its way to the
                        // writer; this one's answer waits for that one's write.
                        awaiting: matches!(inserted, Insert::Present(_)),
                        petition: claim.slot,
                        fp: claim.fp,
                        record: valid[at].encode(slot.petition.num, self.now, &mut records),
                        kind: ItemKind::Sign,
                        by_email: slot.by_email,
                        place: claim.place,
                    })
                }
                Insert::Present(Presence::Committed)
                    if !memory && self.slots[claim.slot as usize].by_email =>
                {
                    // A signer the index holds, on a petition that validates by email: the
                    // writer tells a pending signature (same token back) from a counted one.
                    // The record comes along in case the pending one has expired unswept.
                    let slot = &self.slots[claim.slot as usize];
                    items.push(Item {
                        index: claim.index,
                        awaiting: false,
                        petition: claim.slot,
                        fp: claim.fp,
                        record: valid[at].encode(slot.petition.num, self.now, &mut records),
                        kind: ItemKind::Resubmit,
                        by_email: true,
                        place: claim.place,
                    })
                }
                _ => {
                    duplicates += 1;
                    if !memory {
                        let count = self.slots[claim.slot as usize]
                            .petition
                            .count
                            .load(Ordering::Acquire);
                        self.results[claim.index] = Ok(Outcome::Duplicate { count });
                    }
                }
            }
        }
        if duplicates > 0 {
            shared.count_duplicates(duplicates);
        }
        (items, records)
    }

    /// Pass 3, memory mode: counts the accepted signers with one atomic add per petition per
    /// call (a hot petition is touched once per batch), then answers in input order. Duplicates
    /// are answered after the counting, so a re-send within one batch sees the count including
    /// its original.
    #[inline]
    fn count_in_memory(&mut self) {
        let mut total = 0u64;
        // The accepted signers' places, grouped by slot: `slot << 32 | place`, sorted. Without
        // any place named (no country), each slot's signers all count under none.
        let named = self
            .claims
            .iter()
            .any(|claim| claim.inserted && claim.place != Place::NONE);
        let mut placed: Vec<u64> = Vec::new();
        if named {
            placed.extend(
                self.claims
                    .iter()
                    .filter(|claim| claim.inserted)
                    .map(|claim| u64::from(claim.slot) << 32 | u64::from(claim.place.0)),
            );
            placed.sort_unstable();
        }
        let mut at = 0;
        let mut changes = Changes::default();
        let recent = self.shared.recent();
        for (number, slot) in self.slots.iter_mut().enumerate() {
            if slot.accepted == 0 {
                continue;
            }
            let k = slot.accepted;
            total += k;
            changes.places.clear();
            if named {
                while at < placed.len() && placed[at] >> 32 == number as u64 {
                    let place = Place(placed[at] as u32);
                    match changes.places.last_mut() {
                        Some((last, n)) if *last == place => *n += 1,
                        _ => changes.places.push((place, 1)),
                    }
                    at += 1;
                }
            } else {
                changes.places.push((Place::NONE, k as i64));
            }
            changes.history = Some((self.now, k as i64));
            let before = slot.petition.add_accepted(k, &changes, recent);
            let crossed = slot.petition.crossed(before, before + k);
            if !crossed.is_empty() {
                self.shared
                    .publish_memory_crossings(&slot.petition, before, before + k);
            }
            // From here on `accepted` is the last ordinal handed out.
            slot.accepted = before;
        }
        for claim in &self.claims {
            let slot = &mut self.slots[claim.slot as usize];
            self.results[claim.index] = if claim.inserted {
                slot.accepted += 1;
                Ok(Outcome::Accepted {
                    count: slot.accepted,
                })
            } else {
                Ok(Outcome::Duplicate {
                    count: slot.petition.count.load(Ordering::Acquire),
                })
            };
        }
        self.shared.count_accepted(total);
    }

    /// Pass 3, persistent mode: releases the reservation of the signatures answered already and
    /// sends the rest to the writer as one job, with the source alerts they made.
    #[inline]
    fn hand_over(
        mut self,
        sender: &Sender<Job>,
        items: Vec<Item>,
        records: Vec<u8>,
        alerts: Vec<NewEvent>,
        generation: u64,
        async_reply: bool,
    ) -> (Results, Option<Waiting>) {
        let shared = self.shared;
        let n = self.results.len();
        let answered = n - items.len();
        if items.is_empty() {
            shared.release_inflight(n);
            return (self.results, None);
        }
        shared.release_inflight(answered);
        let reserved = items.len();
        let (reply, waiting) = reply_channel(async_reply);
        let job = SignJob {
            items,
            petitions: self.slots.into_iter().map(|slot| slot.petition).collect(),
            records,
            generation,
            alerts,
            caller: Caller {
                reply,
                answers: Vec::new(),
                reserved,
            },
        };
        if let Err(crossbeam_channel::SendError(Job::Sign(job))) = sender.send(Job::Sign(job)) {
            // The writer has stopped: undo the claims and refuse.
            for item in job.items {
                if !item.awaiting && item.kind == ItemKind::Sign {
                    shared.index().remove(item.fp);
                }
                self.results[item.index] = Err(SubmitError::ShuttingDown);
            }
            shared.release_inflight(reserved);
            return (self.results, None);
        }
        (self.results, Some(waiting))
    }
}

/// `a == b` for petition ids (at most 64 bytes, usually a few) without a call into the C
/// library's `bcmp`: admission compares every signature's petition with the latest two of its
/// call, and that call was 6% of in-memory admission's time (commit 51ed48e, 2026-11-29).
#[inline]
fn same_id(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

/// `a == b` for short byte strings, without a call into the C library's `bcmp` (see
/// [`same_id`]).
#[inline]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |differ, (x, y)| differ | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::same_id;

    #[test]
    fn same_id_is_string_equality() {
        let ids = [
            "",
            "p",
            "p0",
            "p1",
            "p01",
            "P0",
            "p0 ",
            &"x".repeat(64),
            &"x".repeat(63),
        ];
        for a in ids {
            for b in ids {
                assert_eq!(same_id(a, b), a == b, "{a:?} vs {b:?}");
            }
        }
    }
}
