//! The petition registry: which petitions exist, whether they take signatures, their counts and
//! the milestones they reached.
//!
//! A petition gets a dense number (`u32`) at registration; fingerprints, records and counts use the
//! number, never the id string. Each petition's count is one `AtomicU64`. It is not a contended
//! cache line because it is written once per *batch* (by the group-commit writer, or once per
//! `submit_batch` call in memory mode), never once per signature by many threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::error::StoreError;
use crate::event::{EventData, Response, Tracking};
use crate::lifecycle::Validation;
use crate::place::{country_code, Breakdown, Bucket, CountryCount, Place, Recent, Resolution};
use crate::record::decode_u64;
use crate::signature::{validate_petition_id, InvalidField};

/// Thresholds a petition gets when its registration names none.
pub const DEFAULT_THRESHOLDS: [u64; 2] = [10_000, 100_000];
/// Most thresholds one petition may have.
pub const THRESHOLDS_MAX: usize = 32;

/// What to register (or update): a petition id, an optional deadline and thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PetitionSpec {
    /// Petition id: 1–64 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
    pub id: String,
    /// Signatures are refused from this moment (Unix milliseconds) on.
    pub deadline_ms: Option<u64>,
    /// Counts whose crossing records a milestone; `None` keeps the current ones (or the
    /// defaults, 10,000 and 100,000, for a new petition).
    pub thresholds: Option<Vec<u64>>,
    /// How its signatures become counted; `None` keeps the current mode (or
    /// [`Validation::None`] for a new petition). A change applies to signatures that come after
    /// it: each signature keeps the state it was written in.
    pub validation: Option<Validation>,
    /// The threshold whose crossing makes a response due; `None` keeps the current one (or, for
    /// a new petition, its largest threshold). It is added to the thresholds if missing.
    pub response_threshold: Option<u64>,
    /// Days from crossing the response threshold to the response being due (1–3,650); `None`
    /// keeps the current number (or [`RESPONSE_DUE_DAYS_DEFAULT`] for a new petition).
    pub response_due_days: Option<u32>,
}

/// Days a response has, by default, from the crossing of the response threshold.
pub const RESPONSE_DUE_DAYS_DEFAULT: u32 = 90;
/// Most days a response may be given.
pub const RESPONSE_DUE_DAYS_MAX: u32 = 3_650;

const DAY_MS: u64 = 86_400_000;

impl PetitionSpec {
    /// A spec with only an id: no deadline, default thresholds.
    pub fn new(id: impl Into<String>) -> PetitionSpec {
        PetitionSpec {
            id: id.into(),
            deadline_ms: None,
            thresholds: None,
            validation: None,
            response_threshold: None,
            response_due_days: None,
        }
    }

    /// Applies the spec to a petition's meta (a new petition's starts with the defaults).
    pub(crate) fn apply(&self, meta: &mut PetitionMeta, thresholds: Option<Vec<u64>>) {
        meta.deadline_ms = self.deadline_ms;
        if let Some(thresholds) = thresholds {
            meta.thresholds = thresholds;
        }
        if let Some(validation) = self.validation {
            meta.validation = validation;
        }
        if let Some(days) = self.response_due_days {
            meta.response_due_days = days;
        }
        if let Some(threshold) = self.response_threshold {
            meta.response_threshold = Some(threshold);
        }
        if let Some(threshold) = meta.response_threshold {
            if let Err(at) = meta.thresholds.binary_search(&threshold) {
                meta.thresholds.insert(at, threshold);
            }
        }
    }

    pub(crate) fn checked_thresholds(&self) -> Result<Option<Vec<u64>>, InvalidField> {
        validate_petition_id(&self.id)?;
        if self.response_threshold == Some(0) {
            return Err(InvalidField {
                field: "response_threshold",
                reason: "must be positive",
            });
        }
        if self
            .response_due_days
            .is_some_and(|d| !(1..=RESPONSE_DUE_DAYS_MAX).contains(&d))
        {
            return Err(InvalidField {
                field: "response_due_days",
                reason: "1 to 3650 days",
            });
        }
        let Some(thresholds) = &self.thresholds else {
            return Ok(None);
        };
        let extra = usize::from(
            self.response_threshold
                .is_some_and(|t| !thresholds.contains(&t)),
        );
        if thresholds.len() + extra > THRESHOLDS_MAX {
            return Err(InvalidField {
                field: "thresholds",
                reason: "at most 32 thresholds",
            });
        }
        if thresholds.contains(&0) {
            return Err(InvalidField {
                field: "thresholds",
                reason: "must be positive",
            });
        }
        let mut sorted = thresholds.clone();
        sorted.sort_unstable();
        sorted.dedup();
        Ok(Some(sorted))
    }
}

/// Whether a petition takes signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PetitionState {
    /// Takes signatures.
    Open,
    /// Closed by an administrator.
    Closed,
    /// Its deadline has passed.
    Expired,
}

impl PetitionState {
    /// Lower-case name, as the HTTP API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            PetitionState::Open => "open",
            PetitionState::Closed => "closed",
            PetitionState::Expired => "expired",
        }
    }
}

/// A snapshot of one petition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PetitionInfo {
    /// The petition id.
    pub id: String,
    /// Validated signatures: the count that matters.
    pub count: u64,
    /// Pending signatures: stored, waiting for their token, not counted.
    pub pending_count: u64,
    /// Signatures removed by invalidations.
    pub invalidated_count: u64,
    /// How its signatures become counted.
    pub validation: Validation,
    /// Whether it takes signatures now.
    pub state: PetitionState,
    /// When it was registered (Unix milliseconds).
    pub created_at_ms: u64,
    /// When it stops taking signatures, if ever (Unix milliseconds).
    pub deadline_ms: Option<u64>,
    /// When it was closed, if it was (Unix milliseconds).
    pub closed_at_ms: Option<u64>,
    /// Its thresholds, ascending.
    pub thresholds: Vec<u64>,
    /// The thresholds its count has reached, ascending (one that an invalidation took the
    /// count back below is not reached until the count crosses it again).
    pub milestones_reached: Vec<u64>,
    /// The threshold whose crossing makes a response due (its largest, unless set); `None`
    /// when it has no thresholds.
    pub response_threshold: Option<u64>,
    /// Days from that crossing to the response being due.
    pub response_due_days: u32,
    /// When the count crossed the response threshold (the latest crossing that made a response
    /// due), if it did.
    pub response_threshold_reached_at_ms: Option<u64>,
    /// When the response is (or was) due, if one is.
    pub response_due_at_ms: Option<u64>,
    /// Whether a response is due and not yet recorded.
    pub awaiting_response: bool,
    /// Whether it awaits a response past its due time.
    pub overdue: bool,
    /// The recorded response, if any.
    pub response: Option<Response>,
    /// Its counts by country, the largest first, at most [`TOP_COUNTRIES`]: signatures that
    /// name no country count under `ZZ`.
    pub countries: Vec<CountryCount>,
    /// Who paused its signing and when, if it is paused (it then takes no signature; its
    /// pending signatures can still be validated).
    pub paused: Option<crate::guard::Change>,
}

/// Countries a [`PetitionInfo`] carries.
pub const TOP_COUNTRIES: usize = 10;

/// Which way a milestone moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MilestoneKind {
    /// The count rose to the threshold.
    ThresholdCrossed,
    /// An invalidation took the count back below a reached threshold.
    ThresholdRegressed,
}

impl MilestoneKind {
    /// The name the HTTP API and the events feed use.
    pub fn as_str(self) -> &'static str {
        match self {
            MilestoneKind::ThresholdCrossed => "threshold_crossed",
            MilestoneKind::ThresholdRegressed => "threshold_regressed",
        }
    }
}

/// A petition's count crossing one of its thresholds, or falling back below one. Recorded
/// exactly once per transition, durably, in the same batch as the change of count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Milestone {
    /// Position in the engine-wide milestone feed, from 1, without gaps.
    pub seq: u64,
    /// The petition id.
    pub petition: String,
    /// The threshold crossed.
    pub threshold: u64,
    /// When the count changed (Unix milliseconds).
    pub reached_at_ms: u64,
    /// Crossed or regressed.
    pub kind: MilestoneKind,
}

/// What is persisted about a petition (everything but its count and milestones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PetitionMeta {
    pub id: String,
    pub created_at_ms: u64,
    pub deadline_ms: Option<u64>,
    pub closed_at_ms: Option<u64>,
    pub thresholds: Vec<u64>,
    pub validation: Validation,
    /// Set explicitly; `None`: the largest threshold.
    pub response_threshold: Option<u64>,
    pub response_due_days: u32,
}

impl PetitionMeta {
    /// The threshold whose crossing makes a response due.
    pub fn effective_response_threshold(&self) -> Option<u64> {
        self.response_threshold
            .or_else(|| self.thresholds.last().copied())
    }

    /// When a response falls due if the threshold is crossed at `at_ms`.
    pub fn due_at(&self, at_ms: u64) -> u64 {
        at_ms.saturating_add(u64::from(self.response_due_days) * DAY_MS)
    }
}

/// A petition's stored counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub validated: u64,
    pub pending: u64,
    pub invalidated: u64,
}

impl Counts {
    /// Signatures holding a signer's slot in the index.
    pub fn held(&self) -> u64 {
        self.validated + self.pending + self.invalidated
    }

    /// The stored form: the validated count alone (8 bytes, as format 2 wrote it) while
    /// nothing is pending or invalidated, else all three (24 bytes).
    pub fn encode(&self) -> ([u8; 24], usize) {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.validated.to_be_bytes());
        if self.pending == 0 && self.invalidated == 0 {
            return (out, 8);
        }
        out[8..16].copy_from_slice(&self.pending.to_be_bytes());
        out[16..].copy_from_slice(&self.invalidated.to_be_bytes());
        (out, 24)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Counts, StoreError> {
        match bytes.len() {
            // The validated count alone.
            8 => Ok(Counts {
                validated: decode_u64(bytes, "count")?,
                ..Counts::default()
            }),
            24 => Ok(Counts {
                validated: decode_u64(&bytes[..8], "count")?,
                pending: decode_u64(&bytes[8..16], "count")?,
                invalidated: decode_u64(&bytes[16..], "count")?,
            }),
            _ => Err(StoreError::Corrupt { what: "count" }),
        }
    }
}

/// One registered petition, shared by the registry, admission and the writer.
pub(crate) struct Petition {
    pub num: u32,
    pub id: Box<str>,
    /// Validated durable signers. Written only by the writer (or in memory mode by `submit`).
    pub count: AtomicU64,
    /// Pending durable signatures. Written only by the writer.
    pub pending: AtomicU64,
    /// Invalidated signatures. Written only by the writer.
    pub invalidated: AtomicU64,
    /// Admission reads these three on every signature, so they are atomics, not behind the lock.
    closed: AtomicBool,
    deadline_ms: AtomicU64,
    validation: AtomicU8,
    meta: Mutex<PetitionMeta>,
    reached: Mutex<Vec<u64>>,
    /// Its response tracking, folded from its events as they are published.
    tracking: Mutex<Tracking>,
    /// Its counts by place and its history; changed with `count`, under this lock.
    breakdown: Mutex<Breakdown>,
    /// Whether its signing is paused (admission reads it on every call), and who paused it.
    paused: AtomicBool,
    paused_by: Mutex<Option<crate::guard::Change>>,
    /// Its trending sources, once a signature with a source came (see `sources.rs`).
    pub sources: Mutex<Option<Box<crate::sources::PetitionSources>>>,
}

/// What one batch (or one call in memory mode) changes in a petition's breakdown.
#[derive(Debug, Clone, Default)]
pub(crate) struct Changes {
    /// Changes of counts by place, ascending by place, each place once.
    pub places: Vec<(Place, i64)>,
    /// The change of the count, and when.
    pub history: Option<(u64, i64)>,
}

impl Petition {
    pub fn new(num: u32, meta: PetitionMeta, counts: Counts) -> Petition {
        Petition {
            num,
            id: meta.id.clone().into_boxed_str(),
            count: AtomicU64::new(counts.validated),
            pending: AtomicU64::new(counts.pending),
            invalidated: AtomicU64::new(counts.invalidated),
            closed: AtomicBool::new(meta.closed_at_ms.is_some()),
            deadline_ms: AtomicU64::new(meta.deadline_ms.unwrap_or(u64::MAX)),
            validation: AtomicU8::new(meta.validation.to_byte()),
            meta: Mutex::new(meta),
            reached: Mutex::new(Vec::new()),
            tracking: Mutex::new(Tracking::default()),
            breakdown: Mutex::new(Breakdown::default()),
            paused: AtomicBool::new(false),
            paused_by: Mutex::new(None),
            sources: Mutex::new(None),
        }
    }

    /// Asks the CPU for what [`Petition::publish`] touches first: the breakdown's lock and
    /// header, and the counts (a hint; call it a few petitions ahead).
    #[inline]
    pub fn prefetch_publish(&self) {
        let breakdown: *const Mutex<Breakdown> = &self.breakdown;
        crate::index::prefetch_line(breakdown.cast());
        crate::index::prefetch_line(breakdown.cast::<u8>().wrapping_add(64));
        crate::index::prefetch_line((&self.count as *const AtomicU64).cast());
    }

    /// Publishes counts made durable with the breakdown changes that go with them, under the
    /// breakdown's lock: a reader of the countries sees them sum to the count it reads with them.
    pub fn publish(&self, counts: Counts, changes: &Changes, recent: &Recent) {
        let mut breakdown = self.breakdown.lock();
        self.set_counts(counts);
        self.apply(&mut breakdown, changes, recent);
    }

    /// Memory mode: adds `k` accepted signers to the count with their breakdown changes; returns
    /// the count before.
    pub fn add_accepted(&self, k: u64, changes: &Changes, recent: &Recent) -> u64 {
        let mut breakdown = self.breakdown.lock();
        let before = self.count.fetch_add(k, Ordering::AcqRel);
        self.apply(&mut breakdown, changes, recent);
        before
    }

    fn apply(&self, breakdown: &mut Breakdown, changes: &Changes, recent: &Recent) {
        let signatures = self.count.load(Ordering::Acquire) + self.pending.load(Ordering::Acquire);
        breakdown.add_places_sorted(&changes.places, signatures);
        if let Some((at_ms, delta)) = changes.history {
            // Listed in `Recent` once per minute: when this minute is not its newest yet.
            let listed = breakdown.newest_minute() == Some((at_ms / 60_000) as u32);
            breakdown.add_history(at_ms, delta);
            if !listed {
                recent.note(self.num, at_ms);
            }
        }
    }

    /// Runs `f` on the breakdown, with the validated count read under the same lock.
    pub fn with_breakdown<T>(&self, f: impl FnOnce(u64, &mut Breakdown) -> T) -> T {
        let mut breakdown = self.breakdown.lock();
        let count = self.count.load(Ordering::Acquire);
        f(count, &mut breakdown)
    }

    /// Puts a breakdown loaded from the store in place (and the counts with it, if given),
    /// under the breakdown's lock.
    pub fn replace_breakdown(&self, counts: Option<Counts>, loaded: Breakdown) {
        let mut breakdown = self.breakdown.lock();
        if let Some(counts) = counts {
            self.set_counts(counts);
        }
        *breakdown = loaded;
    }

    /// The change of its count in the `minutes` whole minutes up to `now_ms`.
    pub fn window(&self, minutes: u32, now_ms: u64) -> i64 {
        self.breakdown.lock().window(minutes, now_ms)
    }

    /// Its history at `resolution` as of `now_ms`.
    pub fn history(&self, resolution: Resolution, now_ms: u64) -> Vec<Bucket> {
        self.breakdown.lock().history(resolution, now_ms)
    }

    /// Its count and counts by country number (ZZ is 0), the largest first (ties by code).
    pub fn countries(&self) -> (u64, Vec<(u32, u64)>) {
        let (count, mut countries) = self.with_breakdown(|count, b| (count, b.countries()));
        countries.sort_unstable_by(|a, b| {
            b.1.cmp(&a.1)
                .then(country_code(a.0).cmp(&country_code(b.0)))
        });
        (count, countries)
    }

    /// Whether its signing is paused.
    #[inline]
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Pauses its signing (`Some`: who and when) or resumes it (`None`).
    pub fn set_paused(&self, change: Option<crate::guard::Change>) {
        let mut by = self.paused_by.lock();
        self.paused.store(change.is_some(), Ordering::Release);
        *by = change;
    }

    /// Whether a signature received at `now_ms` may be accepted.
    #[inline]
    pub fn is_open(&self, now_ms: u64) -> bool {
        !self.closed.load(Ordering::Acquire) && now_ms < self.deadline_ms.load(Ordering::Acquire)
    }

    /// Its deadline, if it has passed by `now_ms` while it was not closed by an administrator.
    pub fn deadline_passed(&self, now_ms: u64) -> Option<u64> {
        let deadline = self.deadline_ms.load(Ordering::Acquire);
        (!self.closed.load(Ordering::Acquire) && deadline <= now_ms).then_some(deadline)
    }

    /// Whether its new signatures are stored pending.
    #[inline]
    pub fn validates_by_email(&self) -> bool {
        self.validation.load(Ordering::Acquire) == Validation::Email.to_byte()
    }

    /// Its published counts.
    pub fn counts(&self) -> Counts {
        Counts {
            validated: self.count.load(Ordering::Acquire),
            pending: self.pending.load(Ordering::Acquire),
            invalidated: self.invalidated.load(Ordering::Acquire),
        }
    }

    /// Publishes counts made durable.
    pub fn set_counts(&self, counts: Counts) {
        self.pending.store(counts.pending, Ordering::Release);
        self.invalidated
            .store(counts.invalidated, Ordering::Release);
        self.count.store(counts.validated, Ordering::Release);
    }

    pub fn meta(&self) -> PetitionMeta {
        self.meta.lock().clone()
    }

    pub fn set_meta(&self, meta: PetitionMeta) {
        self.deadline_ms
            .store(meta.deadline_ms.unwrap_or(u64::MAX), Ordering::Release);
        self.closed
            .store(meta.closed_at_ms.is_some(), Ordering::Release);
        self.validation
            .store(meta.validation.to_byte(), Ordering::Release);
        *self.meta.lock() = meta;
    }

    /// Thresholds in `(old, new]`: the ones a count moving from `old` to `new` crosses.
    pub fn crossed(&self, old: u64, new: u64) -> Vec<u64> {
        let meta = self.meta.lock();
        meta.thresholds
            .iter()
            .copied()
            .filter(|&t| old < t && t <= new)
            .collect()
    }

    /// Reached thresholds above `new`, highest first: the ones a count falling to `new`
    /// regresses, in the order it falls through them.
    pub fn regressed(&self, new: u64) -> Vec<u64> {
        self.reached
            .lock()
            .iter()
            .rev()
            .copied()
            .filter(|&t| t > new)
            .collect()
    }

    pub fn record_reached(&self, threshold: u64) {
        let mut reached = self.reached.lock();
        assert!(
            !reached.contains(&threshold),
            "milestone {threshold} of petition {} recorded twice",
            self.id
        );
        reached.push(threshold);
        reached.sort_unstable();
    }

    pub fn record_regressed(&self, threshold: u64) {
        let mut reached = self.reached.lock();
        let at = reached.iter().position(|&t| t == threshold);
        let at = at.unwrap_or_else(|| {
            panic!(
                "petition {} regressed below {threshold}, which it had not reached",
                self.id
            )
        });
        reached.remove(at);
    }

    /// Applies one of its published events to the thresholds reached and the response
    /// tracking.
    pub fn apply_event(&self, at_ms: u64, data: &EventData) {
        match data {
            EventData::ThresholdCrossed { threshold } => self.record_reached(*threshold),
            EventData::ThresholdRegressed { threshold } => self.record_regressed(*threshold),
            _ => {}
        }
        self.tracking.lock().apply(at_ms, data);
    }

    pub fn tracking(&self) -> Tracking {
        self.tracking.lock().clone()
    }

    /// The deadline a `petition_closed` (deadline) was recorded for, if any: without copying
    /// the tracking (the lifecycle thread asks this of every petition whose deadline passed).
    pub fn deadline_closed(&self) -> Option<u64> {
        self.tracking.lock().deadline_closed
    }

    /// Whether a response is due and not recorded: when it is due, if so.
    pub fn awaiting_since(&self) -> Option<u64> {
        let tracking = self.tracking.lock();
        if tracking.awaiting() {
            tracking.due.map(|d| d.due_at_ms)
        } else {
            None
        }
    }

    /// The threshold a count moving from `before` to `after` at `now_ms` makes a response due
    /// at, and when it is due: the response threshold, crossed while no response is due or
    /// recorded.
    pub fn response_falls_due(&self, before: u64, after: u64, now_ms: u64) -> Option<(u64, u64)> {
        let meta = self.meta.lock();
        let threshold = meta.effective_response_threshold()?;
        if !(before < threshold && threshold <= after) {
            return None;
        }
        let tracking = self.tracking.lock();
        if tracking.due.is_some() || tracking.response.is_some() {
            return None;
        }
        Some((threshold, meta.due_at(now_ms)))
    }

    pub fn info(&self, now_ms: u64) -> PetitionInfo {
        let meta = self.meta();
        let tracking = self.tracking();
        let response_threshold = meta.effective_response_threshold();
        let state = if meta.closed_at_ms.is_some() {
            PetitionState::Closed
        } else if meta.deadline_ms.is_some_and(|d| now_ms >= d) {
            PetitionState::Expired
        } else {
            PetitionState::Open
        };
        // The count and the countries read together, so the countries sum to the count shown.
        let (validated, mut countries) = self.countries();
        countries.truncate(TOP_COUNTRIES);
        let counts = Counts {
            validated,
            ..self.counts()
        };
        PetitionInfo {
            id: meta.id,
            count: counts.validated,
            pending_count: counts.pending,
            invalidated_count: counts.invalidated,
            validation: meta.validation,
            state,
            created_at_ms: meta.created_at_ms,
            deadline_ms: meta.deadline_ms,
            closed_at_ms: meta.closed_at_ms,
            response_threshold,
            response_due_days: meta.response_due_days,
            thresholds: meta.thresholds,
            milestones_reached: self.reached.lock().clone(),
            response_threshold_reached_at_ms: tracking.due.map(|d| d.reached_at_ms),
            response_due_at_ms: tracking.due.map(|d| d.due_at_ms),
            awaiting_response: tracking.awaiting(),
            overdue: tracking.awaiting() && tracking.due.is_some_and(|d| now_ms >= d.due_at_ms),
            response: tracking.response,
            countries: countries
                .into_iter()
                .map(|(country, count)| CountryCount::new(country, count))
                .collect(),
            paused: self.paused_by.lock().clone(),
        }
    }
}

#[derive(Default)]
struct Maps {
    by_id: HashMap<Box<str>, Arc<Petition>>,
    by_num: Vec<Arc<Petition>>,
}

/// All petitions, by id and by number. Registration is rare; lookups take the read lock briefly.
#[derive(Default)]
pub(crate) struct Registry {
    maps: RwLock<Maps>,
    /// Serializes registrations so two registrations of one new id cannot both get a number.
    pub registering: Mutex<()>,
}

/// The registry under its read lock; see [`Registry::read`].
pub(crate) struct RegistryRead<'a> {
    maps: parking_lot::RwLockReadGuard<'a, Maps>,
}

impl RegistryRead<'_> {
    /// The petition `id`, borrowed: no reference count is touched.
    #[inline]
    pub fn get(&self, id: &str) -> Option<&Arc<Petition>> {
        self.maps.by_id.get(id)
    }

    /// The petition numbered `num`.
    pub fn by_num(&self, num: u32) -> Option<&Arc<Petition>> {
        self.maps.by_num.get(num as usize)
    }
}

impl Registry {
    pub fn get(&self, id: &str) -> Option<Arc<Petition>> {
        self.maps.read().by_id.get(id).cloned()
    }

    pub fn by_num(&self, num: u32) -> Option<Arc<Petition>> {
        self.maps.read().by_num.get(num as usize).cloned()
    }

    /// A read view for resolving a whole batch under one read lock (the batch path). Hold it
    /// only for CPU work: registrations wait for it.
    pub fn read(&self) -> RegistryRead<'_> {
        RegistryRead {
            maps: self.maps.read(),
        }
    }

    pub fn next_num(&self) -> u32 {
        u32::try_from(self.maps.read().by_num.len()).unwrap_or(u32::MAX)
    }

    pub fn insert(&self, petition: Arc<Petition>) {
        let mut maps = self.maps.write();
        assert_eq!(
            petition.num as usize,
            maps.by_num.len(),
            "petition numbers must be dense"
        );
        maps.by_id
            .insert(petition.id.clone(), Arc::clone(&petition));
        maps.by_num.push(petition);
    }

    pub fn all(&self) -> Vec<Arc<Petition>> {
        self.maps.read().by_num.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(thresholds: Vec<u64>) -> PetitionMeta {
        PetitionMeta {
            id: "p".into(),
            created_at_ms: 0,
            deadline_ms: Some(1_000),
            closed_at_ms: None,
            thresholds,
            validation: Validation::None,
            response_threshold: None,
            response_due_days: RESPONSE_DUE_DAYS_DEFAULT,
        }
    }

    #[test]
    fn crossings_are_half_open_intervals() {
        let p = Petition::new(0, meta(vec![10, 20, 30]), Counts::default());
        let check = |old, new, want: &[u64]| assert_eq!(p.crossed(old, new), want, "{old}..{new}");
        check(0, 9, &[]);
        check(0, 10, &[10]);
        check(10, 19, &[]);
        check(9, 30, &[10, 20, 30]);
        check(30, 31, &[]);
    }

    #[test]
    fn open_until_deadline_or_close() {
        let p = Petition::new(0, meta(vec![]), Counts::default());
        assert!(p.is_open(999));
        assert!(!p.is_open(1_000));
        assert_eq!(p.info(1_000).state, PetitionState::Expired);
        let mut closed = meta(vec![]);
        closed.deadline_ms = None;
        closed.closed_at_ms = Some(5);
        p.set_meta(closed);
        assert!(!p.is_open(0));
        assert_eq!(p.info(0).state, PetitionState::Closed);
    }

    #[test]
    fn thresholds_are_checked_sorted_and_deduplicated() {
        let mut spec = PetitionSpec::new("p");
        assert_eq!(spec.checked_thresholds(), Ok(None));
        spec.thresholds = Some(vec![100, 5, 100]);
        assert_eq!(spec.checked_thresholds(), Ok(Some(vec![5, 100])));
        spec.thresholds = Some(vec![0]);
        assert!(spec.checked_thresholds().is_err());
        spec.thresholds = Some((1..=33).collect());
        assert!(spec.checked_thresholds().is_err());
        spec.id = "bad id".into();
        assert!(spec.checked_thresholds().is_err());
    }
}
