//! Invalidation jobs: removing signatures that match criteria, in the background, with
//! progress and cancel.
//!
//! A job is created by the engine handle ([`JobChange::Create`], persisted by the writer before
//! it runs). The jobs thread (`engine.rs`) then works through it one [`Step`] at a time: it reads
//! up to `invalidation_step` signatures in scope from the store (a petition's from its petition
//! index, in signing order; without a petition every record), keeps those that match and are
//! pending or validated, and sends them to the writer. The writer re-reads each signature's state,
//! invalidates the ones still pending or validated, corrects the counts, records any threshold
//! that regresses, and writes the job's progress in the same batch (`writer/lifecycle.rs`). So a
//! job resumes where its last step ended after a restart, and its counters always agree with the
//! store. A job covers the signatures stored when it was created (sequences below `upto`);
//! ingestion goes on meanwhile.

use std::collections::BTreeMap;

use parking_lot::Mutex;

use crate::error::{InvalidationError, StoreError};
use crate::lifecycle::{Criteria, Matcher, SignatureState};
use crate::place::{place_of_record, Place, Regions};
use crate::record::Reader;
use crate::states::States;
use crate::store::Store;

/// Where an invalidation job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Working through its signatures.
    Running,
    /// Every signature in scope was scanned.
    Completed,
    /// Cancelled; what it invalidated before stays invalidated.
    Cancelled,
    /// Stopped by an error it cannot get past (a corrupt record, say).
    Failed,
}

impl JobState {
    /// Lower-case name, as the HTTP API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
            JobState::Failed => "failed",
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            JobState::Running => 0,
            JobState::Completed => 1,
            JobState::Cancelled => 2,
            JobState::Failed => 3,
        }
    }

    fn from_byte(byte: u8) -> Option<JobState> {
        Some(match byte {
            0 => JobState::Running,
            1 => JobState::Completed,
            2 => JobState::Cancelled,
            3 => JobState::Failed,
            _ => return None,
        })
    }
}

/// What to invalidate: the signatures of one petition (or of all) that match `criteria`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvalidationRequest {
    /// The petition whose signatures are in scope; `None`: every petition's.
    pub petition: Option<String>,
    /// Every criterion given must match; at least one is required.
    pub criteria: Criteria,
}

/// A snapshot of one invalidation job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidationJob {
    /// Its id, from 1.
    pub id: u64,
    /// The petition in scope, if one was named.
    pub petition: Option<String>,
    /// Its criteria.
    pub criteria: Criteria,
    /// Where it is.
    pub state: JobState,
    /// Signatures read so far.
    pub scanned: u64,
    /// Of those, the ones that matched while pending or validated.
    pub matched: u64,
    /// Of those, the ones it invalidated (a signature can change state between the two reads).
    pub invalidated: u64,
    /// Signatures in scope when it was created (stored ones, at least).
    pub total: u64,
    /// When it was created (Unix milliseconds).
    pub created_at_ms: u64,
    /// When it finished (Unix milliseconds).
    pub finished_at_ms: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

impl InvalidationJob {
    /// Share of the signatures in scope scanned, 0 to 1 (1 once completed).
    pub fn progress(&self) -> f64 {
        if self.state == JobState::Completed {
            return 1.0;
        }
        if self.total == 0 {
            return 0.0;
        }
        (self.scanned as f64 / self.total as f64).min(1.0)
    }
}

/// A job as the engine keeps it: its snapshot, and where its scan is.
#[derive(Debug, Clone)]
pub(crate) struct JobRecord {
    pub job: InvalidationJob,
    /// The petition's number, if one is in scope.
    pub petition_num: Option<u32>,
    /// The next sequence to scan.
    pub cursor: u64,
    /// One past the last sequence in scope.
    pub upto: u64,
}

const JOB_VERSION: u8 = 1;
const NONE_U32: u32 = u32::MAX;
const NONE_U64: u64 = u64::MAX;

impl JobRecord {
    pub fn encode(&self) -> Vec<u8> {
        let job = &self.job;
        let mut out = Vec::with_capacity(128);
        out.push(JOB_VERSION);
        out.extend_from_slice(&job.id.to_be_bytes());
        out.extend_from_slice(&self.petition_num.unwrap_or(NONE_U32).to_be_bytes());
        let id = job.petition.as_deref().unwrap_or("");
        out.push(id.len() as u8);
        out.extend_from_slice(id.as_bytes());
        job.criteria.encode(&mut out);
        out.push(job.state.to_byte());
        for n in [
            job.scanned,
            job.matched,
            job.invalidated,
            job.total,
            job.created_at_ms,
            job.finished_at_ms.unwrap_or(NONE_U64),
            self.cursor,
            self.upto,
        ] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        let error = job.error.as_deref().unwrap_or("");
        let mut end = error.len().min(200);
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        let error = &error[..end];
        out.push(error.len() as u8);
        out.extend_from_slice(error.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<JobRecord, StoreError> {
        const CORRUPT: StoreError = StoreError::Corrupt {
            what: "invalidation job",
        };
        let mut r = Reader::new(bytes, "invalidation job");
        if r.u8()? != JOB_VERSION {
            return Err(CORRUPT);
        }
        let id = r.u64()?;
        let petition_num = Some(r.u32()?).filter(|&n| n != NONE_U32);
        let len = usize::from(r.u8()?);
        let petition = Some(r.str(len)?.to_owned()).filter(|_| petition_num.is_some());
        let criteria = Criteria::decode(&mut r)?;
        let state = JobState::from_byte(r.u8()?).ok_or(CORRUPT)?;
        let mut n = [0u64; 8];
        for slot in &mut n {
            *slot = r.u64()?;
        }
        let len = usize::from(r.u8()?);
        let error = Some(r.str(len)?.to_owned()).filter(|e| !e.is_empty());
        r.finish()?;
        Ok(JobRecord {
            job: InvalidationJob {
                id,
                petition,
                criteria,
                state,
                scanned: n[0],
                matched: n[1],
                invalidated: n[2],
                total: n[3],
                created_at_ms: n[4],
                finished_at_ms: Some(n[5]).filter(|&t| t != NONE_U64),
                error,
            },
            petition_num,
            cursor: n[6],
            upto: n[7],
        })
    }
}

/// Every job the engine knows, by id.
#[derive(Default)]
pub(crate) struct Jobs {
    jobs: Mutex<BTreeMap<u64, JobRecord>>,
}

impl Jobs {
    pub fn insert(&self, record: JobRecord) {
        self.jobs.lock().insert(record.job.id, record);
    }

    pub fn get(&self, id: u64) -> Option<JobRecord> {
        self.jobs.lock().get(&id).cloned()
    }

    pub fn all(&self) -> Vec<InvalidationJob> {
        self.jobs.lock().values().map(|r| r.job.clone()).collect()
    }

    pub fn running(&self) -> Vec<JobRecord> {
        self.jobs
            .lock()
            .values()
            .filter(|r| r.job.state == JobState::Running)
            .cloned()
            .collect()
    }

    pub fn next_id(&self) -> u64 {
        self.jobs.lock().keys().next_back().map_or(1, |id| id + 1)
    }
}

/// One step of a job, for the writer: the signatures it found matching, and where its scan got.
pub(crate) struct Step {
    pub job: u64,
    /// Matching signatures (sequence, petition number) that were pending or validated when read.
    pub matching: Vec<(u64, u32, Place)>,
    /// Signatures read in this step.
    pub scanned: u64,
    /// Where the next step starts.
    pub cursor: u64,
    /// Nothing in scope is left after this step.
    pub done: bool,
}

/// The writer's answer to a step: the job's state after it.
pub(crate) type StepResult = Result<JobState, StoreError>;

/// A change to a job's existence or state, made by the writer.
pub(crate) enum JobChange {
    /// Number, bound (`upto`, `total`) and persist a new job, then answer.
    Create(
        Box<JobRecord>,
        std::sync::mpsc::SyncSender<Result<InvalidationJob, InvalidationError>>,
    ),
    /// Cancel a running job.
    Cancel(
        u64,
        std::sync::mpsc::SyncSender<Result<InvalidationJob, InvalidationError>>,
    ),
    /// A job cannot go on: mark it failed.
    Fail(u64, String),
}

/// The scope and criteria of a scan.
pub(crate) struct Scope<'a> {
    /// The petition's runs of sequences (`Store::petition_runs`), read once per job or
    /// preview; `None`: every petition.
    pub runs: Option<&'a [(u64, u64)]>,
    pub matcher: &'a Matcher,
    pub upto: u64,
}

/// Up to `limit` sequences of `runs` (ascending `(start, len)`) from `from` on.
fn seqs_of(runs: &[(u64, u64)], from: u64, limit: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    let first = runs.partition_point(|&(start, len)| start + len <= from);
    for &(start, len) in &runs[first..] {
        for seq in start.max(from)..start + len {
            if seqs.len() == limit {
                return seqs;
            }
            seqs.push(seq);
        }
    }
    seqs
}

/// Reads up to `limit` signatures in scope from `cursor` on, and returns a [`Step`] (for job 0)
/// with those that match and are pending or validated.
pub(crate) fn scan(
    store: &Store,
    states: &States,
    regions: &Regions,
    scope: &Scope<'_>,
    cursor: u64,
    limit: usize,
) -> Result<Step, StoreError> {
    let mut candidates: Vec<(u64, u32, Place)> = Vec::new();
    let mut scanned = 0u64;
    let (next, done) = match scope.runs {
        Some(runs) => {
            let seqs = seqs_of(runs, cursor, limit);
            store.records(&seqs, |seq, record| {
                scanned += 1;
                if scope.matcher.matches(&record) {
                    candidates.push((seq, record.petition, place_of_record(regions, &record)));
                }
            })?;
            match seqs.last() {
                Some(&last) if seqs.len() == limit => (last + 1, false),
                _ => (scope.upto, true),
            }
        }
        None => {
            let next = store.records_from(cursor, scope.upto, limit, |seq, record| {
                scanned += 1;
                if scope.matcher.matches(&record) {
                    candidates.push((seq, record.petition, place_of_record(regions, &record)));
                }
            })?;
            match next {
                Some(next) => (next, false),
                None => (scope.upto, true),
            }
        }
    };
    let states = states.read();
    let matching = candidates
        .into_iter()
        .filter(|(seq, _, _)| {
            matches!(
                states.get(*seq),
                SignatureState::Pending | SignatureState::Validated
            )
        })
        .collect();
    Ok(Step {
        job: 0,
        matching,
        scanned,
        cursor: next,
        done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_records_round_trip() {
        let record = JobRecord {
            job: InvalidationJob {
                id: 3,
                petition: Some("p1".into()),
                criteria: Criteria {
                    email_domain: Some("example.org".into()),
                    ..Criteria::default()
                },
                state: JobState::Cancelled,
                scanned: 10,
                matched: 4,
                invalidated: 3,
                total: 12,
                created_at_ms: 100,
                finished_at_ms: Some(200),
                error: None,
            },
            petition_num: Some(1),
            cursor: 77,
            upto: 99,
        };
        let decoded = JobRecord::decode(&record.encode()).expect("decodes");
        assert_eq!(decoded.job, record.job);
        assert_eq!((decoded.cursor, decoded.upto), (77, 99));
        assert_eq!(decoded.petition_num, Some(1));
        assert!(JobRecord::decode(&record.encode()[1..]).is_err());
    }

    #[test]
    fn sequences_come_from_the_runs_in_order() {
        let runs = [(10, 3), (20, 2), (30, 1)];
        assert_eq!(seqs_of(&runs, 0, 100), [10, 11, 12, 20, 21, 30]);
        assert_eq!(seqs_of(&runs, 11, 3), [11, 12, 20]);
        assert_eq!(seqs_of(&runs, 13, 100), [20, 21, 30]);
        assert_eq!(seqs_of(&runs, 31, 100), Vec::<u64>::new());
    }

    #[test]
    fn progress_is_a_share() {
        let mut job = InvalidationJob {
            id: 1,
            petition: None,
            criteria: Criteria::default(),
            state: JobState::Running,
            scanned: 5,
            matched: 0,
            invalidated: 0,
            total: 10,
            created_at_ms: 0,
            finished_at_ms: None,
            error: None,
        };
        assert_eq!(job.progress(), 0.5);
        job.scanned = 20;
        assert_eq!(job.progress(), 1.0);
        job.total = 0;
        assert_eq!(job.progress(), 0.0);
        job.state = JobState::Completed;
        assert_eq!(job.progress(), 1.0);
    }
}
