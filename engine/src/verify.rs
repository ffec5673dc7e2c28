//! A full consistency check of the store against itself and memory.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::VerifyError;
use crate::event::{EventData, Tracking};
use crate::fingerprint::Fingerprint;
use crate::index::Presence;
use crate::lifecycle::{LifecycleEntry, SignatureState};
use crate::petition::Counts;
use crate::place::{record_place, Place, Resolution, MINUTES_KEPT};
use crate::record;
use crate::shared::Shared;
use crate::signature::canonical_signer;
use crate::store::{Store, Stored};

/// What [`crate::Engine::verify_store`] found consistent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Stored signatures (records: pending, validated and invalidated ones).
    pub signatures: u64,
    /// Registered petitions.
    pub petitions: u64,
    /// Stored milestones.
    pub milestones: u64,
}

/// Runs on the writer thread, which owns the store, so nothing is written meanwhile.
pub(crate) fn verify(shared: &Shared, store: &Store) -> Result<VerifyReport, VerifyError> {
    let mut problems: Vec<String> = Vec::new();
    let mut lifecycle: HashMap<u64, LifecycleEntry> = HashMap::new();
    let mut states: HashMap<u64, SignatureState> = HashMap::new();
    store.all_lifecycle(|seq, entry| {
        lifecycle.insert(seq, entry);
        states.insert(seq, SignatureState::Pending);
    })?;
    store.all_transitions(|t| {
        states.insert(t.seq, t.state);
    })?;
    // The states in memory are the store's.
    let memory = shared.states().read();
    for (seq, state) in &states {
        if memory.get(*seq) != *state {
            problems.push(format!(
                "signature {seq}: {state:?} in the store, {:?} in memory",
                memory.get(*seq)
            ));
        }
    }
    drop(memory);
    let (from_records, per_petition, places) =
        scan_records(shared, store, &lifecycle, &states, &mut problems)?;
    check_places(shared, store, &places, &per_petition, &mut problems)?;
    check_fingerprints(shared, store, &from_records, &states, &mut problems)?;
    check_pending_signers(store, &from_records, &lifecycle, &states, &mut problems)?;
    let petitions = check_counts(shared, store, &per_petition, &mut problems)?;
    let milestones = check_milestones(shared, store, &per_petition, &mut problems)?;
    if problems.is_empty() {
        Ok(VerifyReport {
            signatures: from_records.len() as u64,
            petitions,
            milestones,
        })
    } else {
        problems.truncate(20);
        Err(VerifyError::Inconsistent { problems })
    }
}

/// Each record's (sequence, fingerprint), the counts per petition by state, and the validated
/// signatures per petition and place.
type Scanned = (
    Vec<(u64, u128)>,
    HashMap<u32, Counts>,
    BTreeMap<(u32, Place), i64>,
);

/// Reads every signature record: each signer once per petition, each in a state that keeps a
/// record. Returns each record's (sequence, fingerprint) and the counts per petition.
fn scan_records(
    shared: &Shared,
    store: &Store,
    lifecycle: &HashMap<u64, LifecycleEntry>,
    states: &HashMap<u64, SignatureState>,
    problems: &mut Vec<String>,
) -> Result<Scanned, VerifyError> {
    let policy = shared.config().signer_policy;
    let mut seen: HashSet<(u32, u128)> = HashSet::new();
    let mut per_petition: HashMap<u32, Counts> = HashMap::new();
    let mut from_records: Vec<(u64, u128)> = Vec::new();
    let mut places: BTreeMap<(u32, Place), i64> = BTreeMap::new();
    let regions = shared.regions().read();
    store.scan_signatures(|seq, record| {
        let signer = match canonical_signer(record.email, policy) {
            Ok(signer) => signer,
            Err(e) => {
                problems.push(format!("signature {seq}: stored email is invalid: {e}"));
                return;
            }
        };
        let fp = shared
            .fingerprinter()
            .fingerprint(record.petition, &signer)
            .0;
        if !seen.insert((record.petition, fp)) {
            problems.push(format!(
                "signature {seq}: signer {signer} stored twice on petition {}",
                record.petition
            ));
        }
        let counts = per_petition.entry(record.petition).or_default();
        let entry = lifecycle.get(&seq);
        if entry.is_some_and(|e| e.petition != record.petition) {
            problems.push(format!(
                "signature {seq}: lifecycle entry names another petition"
            ));
        }
        match states
            .get(&seq)
            .copied()
            .unwrap_or(SignatureState::Validated)
        {
            SignatureState::Validated => {
                counts.validated += 1;
                let place =
                    record_place(&record, |key| regions.find(&key)).unwrap_or_else(|country| {
                        problems.push(format!(
                            "signature {seq}: region {:?} is not in the dictionary",
                            record.region
                        ));
                        country
                    });
                *places.entry((record.petition, place)).or_default() += 1;
            }
            SignatureState::Pending => {
                counts.pending += 1;
                if entry.is_some_and(|e| e.fp.0 != fp) {
                    problems.push(format!("signature {seq}: pending with another fingerprint"));
                }
            }
            SignatureState::Invalidated => counts.invalidated += 1,
            SignatureState::Expired => {
                problems.push(format!("signature {seq}: expired but its record is kept"))
            }
        }
        from_records.push((seq, fp));
    })?;
    Ok((from_records, per_petition, places))
}

/// Counts by place: the stored ones are what the validated records give, memory holds the
/// stored ones, and each petition's sum is its count. The history: each petition's hours sum
/// to its count, in the store and in memory alike, and memory's minutes are the store's. The
/// stored regions are memory's.
fn check_places(
    shared: &Shared,
    store: &Store,
    from_records: &BTreeMap<(u32, Place), i64>,
    per_petition: &HashMap<u32, Counts>,
    problems: &mut Vec<String>,
) -> Result<(), VerifyError> {
    let mut stored: BTreeMap<(u32, Place), i64> = BTreeMap::new();
    let mut hours: HashMap<u32, i64> = HashMap::new();
    let mut minutes: BTreeMap<(u32, u32), i64> = BTreeMap::new();
    let now = shared.now_ms();
    let minutes_from = ((now / 60_000) as u32).saturating_sub(MINUTES_KEPT - 1);
    store.scan_breakdowns(minutes_from, |num, entry| match entry {
        Stored::Place(place, count) => {
            stored.insert((num, place), count);
        }
        Stored::Bucket(Resolution::Hour, _, change) => *hours.entry(num).or_default() += change,
        Stored::Bucket(Resolution::Minute, bucket, change) => {
            minutes.insert((num, bucket), change);
        }
    })?;
    if &stored != from_records {
        let differ = stored
            .iter()
            .find(|(key, count)| from_records.get(key) != Some(count))
            .map(|(key, _)| *key)
            .or_else(|| {
                from_records
                    .keys()
                    .find(|key| !stored.contains_key(key))
                    .copied()
            });
        problems.push(format!(
            "counts by place: {} stored, {} from the records (first to differ: {differ:?})",
            stored.len(),
            from_records.len()
        ));
    }
    for petition in shared.registry().all() {
        let num = petition.num;
        let count = per_petition.get(&num).map_or(0, |c| c.validated) as i64;
        let (places, memory_hours, memory_minutes) = petition.with_breakdown(|_, b| {
            let places: Vec<(Place, i64)> = b.places().map(|(p, c)| (p, c as i64)).collect();
            let minutes = b.history(Resolution::Minute, now);
            (places, b.hours_total(), minutes)
        });
        let sum: i64 = places.iter().map(|&(_, c)| c).sum();
        if sum != count {
            problems.push(format!(
                "petition {}: counts by place sum to {sum}, its count is {count}",
                petition.id
            ));
        }
        let in_store: Vec<(Place, i64)> = stored
            .range((num, Place(0))..=(num, Place(u32::MAX)))
            .map(|(&(_, place), &c)| (place, c))
            .collect();
        if places != in_store {
            problems.push(format!(
                "petition {}: counts by place in memory differ from the store's",
                petition.id
            ));
        }
        let stored_hours = hours.get(&num).copied().unwrap_or(0);
        if stored_hours != count || memory_hours != count {
            problems.push(format!(
                "petition {}: its hours sum to {stored_hours} stored, {memory_hours} in memory; \
                 its count is {count}",
                petition.id
            ));
        }
        let stored_minutes: Vec<(u32, i64)> = minutes
            .range((num, 0)..=(num, u32::MAX))
            .map(|(&(_, m), &c)| (m, c))
            .collect();
        let memory_minutes: Vec<(u32, i64)> = memory_minutes
            .iter()
            .map(|b| ((b.start_ms / 60_000) as u32, b.count))
            .collect();
        if stored_minutes != memory_minutes {
            problems.push(format!(
                "petition {}: minutes in memory differ from the store's",
                petition.id
            ));
        }
    }
    let regions = shared.regions();
    for (id, key) in store.load_regions()? {
        if regions.key(id) != Some(key) {
            problems.push(format!(
                "region {id}: stored as {}, not so in memory",
                key.text()
            ));
        }
    }
    Ok(())
}

/// The fingerprint batches match the records one for one, but for expired signatures (whose
/// records are dropped and sequences removed); the index holds each stored signer committed,
/// and nothing else.
fn check_fingerprints(
    shared: &Shared,
    store: &Store,
    from_records: &[(u64, u128)],
    states: &HashMap<u64, SignatureState>,
    problems: &mut Vec<String>,
) -> Result<(), VerifyError> {
    let removed: HashSet<u64> = store.load_removed()?.into_iter().collect();
    let mut from_fingerprints: Vec<(u64, u128)> = Vec::new();
    store.scan_fingerprints(0, |first, batch| {
        for (seq, fp) in (first..).zip(record::fingerprints(batch)) {
            if !removed.contains(&seq) {
                from_fingerprints.push((seq, fp.0));
            }
        }
    })?;
    if from_records != from_fingerprints {
        problems.push(format!(
            "fingerprints ({}, less the removed) do not match the signature records ({})",
            from_fingerprints.len(),
            from_records.len()
        ));
    }
    for seq in &removed {
        if states.get(seq) != Some(&SignatureState::Expired) {
            problems.push(format!("signature {seq}: removed but not expired"));
        }
    }
    for (_, fp) in from_records {
        let presence = shared.index().presence(Fingerprint(*fp));
        if presence != Presence::Committed {
            problems.push(format!("a stored fingerprint is {presence:?} in the index"));
            break;
        }
    }
    let (entries, _) = shared.index().usage();
    if entries != from_records.len() as u64 {
        problems.push(format!(
            "the index holds {entries} signers, the store {}",
            from_records.len()
        ));
    }
    Ok(())
}

/// Every pending signature has its `pending_signers` entry; every entry names a signature of
/// its signer that is pending, or (not yet cleared by the sweep) validated or invalidated.
fn check_pending_signers(
    store: &Store,
    from_records: &[(u64, u128)],
    lifecycle: &HashMap<u64, LifecycleEntry>,
    states: &HashMap<u64, SignatureState>,
    problems: &mut Vec<String>,
) -> Result<(), VerifyError> {
    let fp_of: HashMap<u64, u128> = from_records.iter().copied().collect();
    let mut named: HashSet<u64> = HashSet::new();
    store.all_pending_signers(|fp, signer| {
        let entry = lifecycle.get(&signer.seq);
        let ok = entry.is_some_and(|e| e.expires_at_ms == signer.expires_at_ms)
            && fp_of.get(&signer.seq) == Some(&fp.0)
            && states.get(&signer.seq) != Some(&SignatureState::Expired);
        if !ok {
            problems.push(format!(
                "pending signer of signature {} does not match a stored signature",
                signer.seq
            ));
        }
        named.insert(signer.seq);
    })?;
    for (seq, state) in states {
        if *state == SignatureState::Pending && !named.contains(seq) {
            problems.push(format!("pending signature {seq} has no pending signer"));
        }
    }
    Ok(())
}

/// Every petition's records, stored counts and counts in memory agree. Returns the petitions.
fn check_counts(
    shared: &Shared,
    store: &Store,
    per_petition: &HashMap<u32, Counts>,
    problems: &mut Vec<String>,
) -> Result<u64, VerifyError> {
    let stored_counts: HashMap<u32, Counts> = store.load_counts()?.into_iter().collect();
    let petitions = shared.registry().all();
    for petition in &petitions {
        let records = per_petition.get(&petition.num).copied().unwrap_or_default();
        let stored = stored_counts
            .get(&petition.num)
            .copied()
            .unwrap_or_default();
        let memory = petition.counts();
        if records != stored || stored != memory {
            problems.push(format!(
                "petition {}: {records:?} in records, stored {stored:?}, in memory {memory:?}",
                petition.id
            ));
        }
    }
    if per_petition
        .keys()
        .any(|num| *num as usize >= petitions.len())
    {
        problems.push("a signature names an unknown petition".into());
    }
    Ok(petitions.len() as u64)
}

/// Events are numbered from 1 without gaps; threshold events alternate per threshold, crossed
/// first, and the ones standing at the end are at or below the count; each petition's response
/// tracking in memory is what its events fold to. Returns the number of threshold events.
fn check_milestones(
    shared: &Shared,
    store: &Store,
    per_petition: &HashMap<u32, Counts>,
    problems: &mut Vec<String>,
) -> Result<u64, VerifyError> {
    let events = store.load_events(0, usize::MAX)?;
    let mut reached: HashSet<(u32, u64)> = HashSet::new();
    let mut tracking: HashMap<u32, Tracking> = HashMap::new();
    let mut milestones = 0;
    for (at, (seq, e)) in events.iter().enumerate() {
        if *seq != at as u64 + 1 {
            problems.push(format!("event {seq} is at position {}", at + 1));
        }
        tracking
            .entry(e.petition)
            .or_default()
            .apply(e.at_ms, &e.data);
        let (ok, threshold) = match e.data {
            EventData::ThresholdCrossed { threshold } => {
                (reached.insert((e.petition, threshold)), threshold)
            }
            EventData::ThresholdRegressed { threshold } => {
                (reached.remove(&(e.petition, threshold)), threshold)
            }
            _ => continue,
        };
        milestones += 1;
        if !ok {
            problems.push(format!(
                "event {seq}: threshold {threshold} {} out of turn",
                e.data.kind().as_str()
            ));
        }
    }
    for (num, threshold) in &reached {
        let count = per_petition.get(num).map_or(0, |c| c.validated);
        if *threshold > count {
            problems.push(format!(
                "petition {num}: threshold {threshold} stands reached above the count {count}"
            ));
        }
    }
    for petition in shared.registry().all() {
        let folded = tracking.remove(&petition.num).unwrap_or_default();
        if petition.tracking() != folded {
            problems.push(format!(
                "petition {}: response tracking in memory differs from its events",
                petition.id
            ));
        }
    }
    Ok(milestones)
}

/// Memory mode has no store: check that the index holds exactly the counted signers.
pub(crate) fn verify_memory(shared: &Shared) -> Result<VerifyReport, VerifyError> {
    let (entries, _) = shared.index().usage();
    let petitions = shared.registry().all();
    let counted: u64 = petitions.iter().map(|p| p.counts().held()).sum();
    let mut problems = Vec::new();
    if entries != counted {
        problems.push(format!(
            "index holds {entries} signers, counts sum to {counted}"
        ));
    }
    for petition in &petitions {
        let (count, places, hours) = petition.with_breakdown(|count, b| {
            (
                count as i64,
                b.places().map(|(_, c)| c as i64).sum::<i64>(),
                b.hours_total(),
            )
        });
        if places != count || hours != count {
            problems.push(format!(
                "petition {}: places sum to {places}, hours to {hours}; its count is {count}",
                petition.id
            ));
        }
    }
    if !problems.is_empty() {
        problems.truncate(20);
        return Err(VerifyError::Inconsistent { problems });
    }
    Ok(VerifyReport {
        signatures: counted,
        petitions: petitions.len() as u64,
        milestones: petitions
            .iter()
            .map(|p| p.info(0).milestones_reached.len() as u64)
            .sum(),
    })
}
