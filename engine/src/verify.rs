//! A full consistency check of the store against itself and memory.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use crate::error::VerifyError;
use crate::fingerprint::Fingerprint;
use crate::index::Presence;
use crate::record;
use crate::shared::Shared;
use crate::signature::canonical_signer;
use crate::store::Store;

/// What [`crate::Engine::verify_store`] found consistent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Stored signatures.
    pub signatures: u64,
    /// Registered petitions.
    pub petitions: u64,
    /// Stored milestones.
    pub milestones: u64,
}

/// Runs on the writer thread, which owns the store, so nothing is written meanwhile.
pub(crate) fn verify(shared: &Shared, store: &Store) -> Result<VerifyReport, VerifyError> {
    let mut problems: Vec<String> = Vec::new();
    let (from_records, per_petition) = scan_records(shared, store, &mut problems)?;
    check_fingerprints(shared, store, &from_records, &mut problems)?;
    let petitions = check_counts(shared, store, &per_petition, &mut problems)?;
    let milestones = check_milestones(store, &per_petition, &mut problems)?;
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

/// Each record's (sequence, fingerprint), and the records per petition.
type Scanned = (Vec<(u64, u128)>, HashMap<u32, u64>);

/// Reads every signature record: each signer once per petition. Returns each record's
/// (sequence, fingerprint) and the records per petition.
fn scan_records(
    shared: &Shared,
    store: &Store,
    problems: &mut Vec<String>,
) -> Result<Scanned, VerifyError> {
    let policy = shared.config().signer_policy;
    let mut seen: HashSet<(u32, u128)> = HashSet::new();
    let mut per_petition: HashMap<u32, u64> = HashMap::new();
    let mut from_records: Vec<(u64, u128)> = Vec::new();
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
        *per_petition.entry(record.petition).or_default() += 1;
        from_records.push((seq, fp));
    })?;
    Ok((from_records, per_petition))
}

/// The fingerprint batches match the records one for one, and the index holds each committed.
fn check_fingerprints(
    shared: &Shared,
    store: &Store,
    from_records: &[(u64, u128)],
    problems: &mut Vec<String>,
) -> Result<(), VerifyError> {
    let mut from_fingerprints: Vec<(u64, u128)> = Vec::new();
    store.scan_fingerprints(0, |first, batch| {
        for (seq, fp) in (first..).zip(record::fingerprints(batch)) {
            from_fingerprints.push((seq, fp.0));
        }
    })?;
    if from_records != from_fingerprints {
        problems.push(format!(
            "fingerprints ({}) do not match the signature records ({})",
            from_fingerprints.len(),
            from_records.len()
        ));
    }
    for (_, fp) in from_records {
        let presence = shared.index().presence(Fingerprint(*fp));
        if presence != Presence::Committed {
            problems.push(format!("a stored fingerprint is {presence:?} in the index"));
            break;
        }
    }
    Ok(())
}

/// Every petition's records, stored count and count in memory agree. Returns the petitions.
fn check_counts(
    shared: &Shared,
    store: &Store,
    per_petition: &HashMap<u32, u64>,
    problems: &mut Vec<String>,
) -> Result<u64, VerifyError> {
    let stored_counts: HashMap<u32, u64> = store.load_counts()?.into_iter().collect();
    let petitions = shared.registry().all();
    for petition in &petitions {
        let records = per_petition.get(&petition.num).copied().unwrap_or(0);
        let stored = stored_counts.get(&petition.num).copied().unwrap_or(0);
        let memory = petition.count.load(Ordering::Acquire);
        if records != stored || stored != memory {
            problems.push(format!(
                "petition {}: {records} records, stored count {stored}, count in memory {memory}",
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

/// Each threshold reached once per petition, and none above its count. Returns the milestones.
fn check_milestones(
    store: &Store,
    per_petition: &HashMap<u32, u64>,
    problems: &mut Vec<String>,
) -> Result<u64, VerifyError> {
    let milestones = store.load_milestones(0)?;
    let mut reached: HashSet<(u32, u64)> = HashSet::new();
    for (seq, num, threshold, _) in &milestones {
        if !reached.insert((*num, *threshold)) {
            problems.push(format!(
                "milestone {seq}: threshold {threshold} recorded twice"
            ));
        }
        let records = per_petition.get(num).copied().unwrap_or(0);
        if *threshold > records {
            problems.push(format!(
                "milestone {seq}: threshold {threshold} above the count {records}"
            ));
        }
    }
    Ok(milestones.len() as u64)
}

/// Memory mode has no store: check that the index holds exactly the counted signers.
pub(crate) fn verify_memory(shared: &Shared) -> Result<VerifyReport, VerifyError> {
    let (entries, _) = shared.index().usage();
    let petitions = shared.registry().all();
    let counted: u64 = petitions
        .iter()
        .map(|p| p.count.load(Ordering::Acquire))
        .sum();
    if entries != counted {
        return Err(VerifyError::Inconsistent {
            problems: vec![format!(
                "index holds {entries} signers, counts sum to {counted}"
            )],
        });
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
