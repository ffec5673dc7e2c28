//! [`Shared`]: the state the handles, admission, the writer, the syncer and recovery share.
//!
//! Its fields are private; every change goes through a method named for what it means (reserve
//! in-flight signatures, count a batch, fail recovery), so the counters' invariants are kept in
//! one place.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::sync::Arc;

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::config::Config;
use crate::error::RecoveryError;
use crate::error::StoreError;
use crate::event::{self, Event, EventData, EventLog, Read};
use crate::fingerprint::Fingerprinter;
use crate::health::Health;
use crate::index::Index;
use crate::invalidation::Jobs;
use crate::petition::Counts;
use crate::petition::{Milestone, MilestoneKind, Petition, Registry};
use crate::place::{Breakdown, Place, Recent, Regions, Resolution, MINUTES_KEPT};
use crate::states::States;
use crate::stats::{LatencyHistogram, Stats};
use crate::store::{Store, Stored};
use crate::token::TokenKey;
use crate::webhook::Webhook;

#[derive(Default)]
struct Readiness {
    ready: bool,
    error: Option<RecoveryError>,
}

/// State shared by the handles, the writer and recovery.
/// Most petitions a trending list keeps (the most a read can ask for).
pub(crate) const TRENDING_KEPT: usize = 1_000;
/// A trending list: when it was computed, and (petition number, change) most first.
type Trending = (u64, Arc<Vec<(u32, i64)>>);

/// Most windows whose trending lists are kept at once.
const TRENDING_WINDOWS_CACHED: usize = 16;

pub(crate) struct Shared {
    config: Config,
    fingerprinter: Fingerprinter,
    tokens: TokenKey,
    jobs: Jobs,
    states: States,
    /// The writer's store while it is open and healthy, for readers off the writer thread (the
    /// invalidation scans). The writer sets it and takes it back before it reopens or closes.
    store: Mutex<Option<Arc<Store>>>,
    index: Index,
    registry: Registry,
    events: EventLog,
    /// Memory mode: orders the numbering of events.
    memory_events: Mutex<()>,
    /// Block and allow lists and switches, as the writer last wrote them.
    guards: crate::guard::Guards,
    /// Limits of signatures per (petition, address), if any.
    limiter: Option<crate::limit::Limiter>,
    /// Trending sources per petition, if tracked.
    sources: Option<crate::sources::Sources>,
    /// Webhooks by name, as the writer last wrote them.
    webhooks: Mutex<std::collections::BTreeMap<String, Webhook>>,
    /// The last webhook revision handed out: a name deleted and registered again gets a new
    /// one, so its old deliverer is told apart.
    webhook_revision: AtomicU64,
    /// Signatures admitted and not yet answered.
    inflight: AtomicUsize,
    health: Health,
    closing: AtomicBool,
    readiness: Mutex<Readiness>,
    ready_changed: Condvar,
    ready_fast: AtomicBool,
    /// Bumped by every reconcile; see `writer/mod.rs` (rounds) and `writer/recovery.rs`.
    generation: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    overloaded: AtomicU64,
    batches: AtomicU64,
    batch_signatures_last: AtomicU64,
    write_latency: LatencyHistogram,
    recovery_loaded: AtomicU64,
    recovery_expected: AtomicU64,
    recovery_started: Instant,
    recovery_elapsed_us: AtomicU64,
    /// Every signature below this is durable and committed in the index, and every removal
    /// written before the writer reached it is out of the index: the mark an index copied now
    /// is saved at (`index_file`).
    indexed: AtomicU64,
    /// The mark of the index last saved beside the store, or loaded from it at open
    /// ([`NO_MARK`]: none).
    index_saved_from: AtomicU64,
    /// Indexes saved since open.
    index_saves: AtomicU64,
    /// The mark of the saved index recovery loaded ([`NO_MARK`]: it read everything back or
    /// took a follower's).
    index_loaded_from: AtomicU64,
    /// The regions signatures name, each with its id.
    regions: Regions,
    /// Which petitions changed count in each recent minute (for trending).
    recent: Recent,
    /// Trending lists by window (minutes), with when they were computed.
    trending: Mutex<std::collections::HashMap<u32, Trending>>,
    /// Held while a trending list is computed.
    trending_computing: Mutex<()>,
}

/// No index saved or loaded.
const NO_MARK: u64 = u64::MAX;

fn mark(stored: u64) -> Option<u64> {
    (stored != NO_MARK).then_some(stored)
}

/// The signatures a petition's stored counts by place add up to.
fn signatures_of(places: &[(Place, i64)]) -> u64 {
    places.iter().map(|&(_, count)| count.max(0) as u64).sum()
}

impl Shared {
    /// Fresh state: no petitions, an empty index sized from `config`, not ready.
    pub fn new(config: Config, fingerprinter: Fingerprinter, recovery_started: Instant) -> Shared {
        let bounded = config.storage != crate::config::Storage::Memory;
        let limiter = config.rate_limits.map(crate::limit::Limiter::new);
        let sources = config.sources.map(crate::sources::Sources::new);
        Shared {
            // A store's index is sized where recovery builds it (or read at its saved size):
            // this one only stands in until then, and takes no memory of that size.
            index: Index::new(
                config.index_shard_bits,
                if bounded {
                    0
                } else {
                    config.signatures_expected
                },
            ),
            regions: Regions::new(config.regions_max),
            recent: Recent::default(),
            trending: Mutex::default(),
            trending_computing: Mutex::new(()),
            config,
            tokens: TokenKey::new(fingerprinter.secret()),
            jobs: Jobs::default(),
            states: States::default(),
            store: Mutex::new(None),
            fingerprinter,
            registry: Registry::default(),
            events: EventLog::new(bounded),
            memory_events: Mutex::new(()),
            guards: crate::guard::Guards::new(),
            limiter,
            sources,
            webhooks: Mutex::new(std::collections::BTreeMap::new()),
            webhook_revision: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
            health: Health::default(),
            closing: AtomicBool::new(false),
            readiness: Mutex::new(Readiness::default()),
            ready_changed: Condvar::new(),
            ready_fast: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_signatures_last: AtomicU64::new(0),
            write_latency: LatencyHistogram::default(),
            recovery_loaded: AtomicU64::new(0),
            recovery_expected: AtomicU64::new(0),
            recovery_started,
            recovery_elapsed_us: AtomicU64::new(0),
            indexed: AtomicU64::new(0),
            index_saved_from: AtomicU64::new(NO_MARK),
            index_saves: AtomicU64::new(0),
            index_loaded_from: AtomicU64::new(NO_MARK),
        }
    }

    /// Signatures below `through` are durable and committed in the index (see `indexed`).
    pub fn set_indexed(&self, through: u64) {
        self.indexed.fetch_max(through, Ordering::AcqRel);
    }

    /// The mark an index copied now would be saved at.
    pub fn indexed(&self) -> u64 {
        self.indexed.load(Ordering::Acquire)
    }

    /// The index was saved beside the store at mark `from`.
    pub fn index_saved(&self, from: u64) {
        self.index_saved_from.store(from, Ordering::Release);
        self.index_saves.fetch_add(1, Ordering::Relaxed);
    }

    /// Recovery loaded the index saved at mark `from`.
    pub fn index_loaded(&self, from: u64) {
        self.index_loaded_from.store(from, Ordering::Release);
        self.index_saved_from.store(from, Ordering::Release);
    }

    /// The mark of the index last saved beside the store or loaded from it.
    pub fn index_saved_from(&self) -> Option<u64> {
        mark(self.index_saved_from.load(Ordering::Acquire))
    }

    #[inline]
    /// Loads every petition's counts by place and history from the store (at open, and after
    /// a recovery, when the store says what stands), and at open the regions; returns how many
    /// regions the store holds. With `counts`, each petition's counts are set with its
    /// breakdown, under its lock, so no reader sees one without the other.
    pub fn load_places(
        &self,
        store: &Store,
        open: bool,
        counts: Option<&std::collections::HashMap<u32, Counts>>,
    ) -> Result<u32, StoreError> {
        let stored = store.load_regions()?;
        let count = stored.last().map_or(0, |(id, _)| *id);
        if open {
            for (id, key) in stored {
                if !self.regions.restore(id, key) {
                    return Err(StoreError::Corrupt {
                        what: "regions (ids not dense)",
                    });
                }
            }
        }
        let petitions = self.registry().all();
        let mut loaded: Vec<Breakdown> = petitions.iter().map(|_| Breakdown::default()).collect();
        let now = self.now_ms();
        let minutes_from = ((now / 60_000) as u32).saturating_sub(MINUTES_KEPT - 1);
        let mut noted: Vec<(u32, u32)> = Vec::new();
        let mut current: Option<u32> = None;
        let mut places: Vec<(Place, i64)> = Vec::new();
        store.scan_breakdowns(minutes_from, |num, stored| {
            if current.is_some_and(|c| c != num) {
                if let Some(b) = current.and_then(|c| loaded.get_mut(c as usize)) {
                    b.add_places_sorted(&places, signatures_of(&places));
                }
                places.clear();
            }
            current = Some(num);
            match stored {
                Stored::Place(place, count) => places.push((place, count)),
                Stored::Bucket(resolution, bucket, change) => {
                    if let Some(b) = loaded.get_mut(num as usize) {
                        b.restore_bucket(resolution, bucket, change, now);
                        if resolution == Resolution::Minute {
                            noted.push((bucket, num));
                        }
                    }
                }
            }
        })?;
        if let Some(b) = current.and_then(|c| loaded.get_mut(c as usize)) {
            b.add_places_sorted(&places, signatures_of(&places));
        }
        self.recent.clear();
        self.trending.lock().clear();
        for (bucket, num) in noted {
            self.recent.note(num, u64::from(bucket) * 60_000);
        }
        for (petition, mut breakdown) in petitions.iter().zip(loaded) {
            breakdown.shrink();
            let counts = counts.map(|c| c.get(&petition.num).copied().unwrap_or_default());
            petition.replace_breakdown(counts, breakdown);
        }
        Ok(count)
    }

    pub fn regions(&self) -> &Regions {
        &self.regions
    }

    pub fn recent(&self) -> &Recent {
        &self.recent
    }

    /// The petitions with the largest change of count in the `window` minutes up to now,
    /// largest first, at most `limit`: from a list at most `trending_refresh` old, computed from
    /// the petitions that changed count in the window (never from every petition).
    pub fn trending(&self, window: u32, limit: usize) -> Vec<(Arc<Petition>, i64)> {
        let now = self.now_ms();
        let refresh = self.config.trending_refresh.as_millis() as u64;
        let fresh = |at: u64| now >= at && now - at < refresh && now / 60_000 == at / 60_000;
        let cached = self.trending.lock().get(&window).cloned();
        let list = match cached {
            Some((at, list)) if fresh(at) => list,
            stale => {
                // One computation at a time: a storm of reads that find the list old waits
                // for one of them, or takes the old list if it has one.
                let _computing = match (&stale, self.trending_computing.try_lock()) {
                    (_, Some(guard)) => guard,
                    (Some((_, old)), None) => return self.trending_entries(old, limit),
                    (None, None) => self.trending_computing.lock(),
                };
                let again = self.trending.lock().get(&window).cloned();
                match again {
                    // Another reader computed it meanwhile.
                    Some((at, list)) if fresh(at) => list,
                    _ => {
                        let list = Arc::new(self.compute_trending(window, now));
                        let mut cache = self.trending.lock();
                        if cache.len() >= TRENDING_WINDOWS_CACHED && !cache.contains_key(&window) {
                            let oldest =
                                cache.iter().min_by_key(|(_, (at, _))| *at).map(|(w, _)| *w);
                            if let Some(oldest) = oldest {
                                cache.remove(&oldest);
                            }
                        }
                        cache.insert(window, (now, Arc::clone(&list)));
                        list
                    }
                }
            }
        };
        self.trending_entries(&list, limit)
    }

    /// The petitions of a trending list, at most `limit`.
    fn trending_entries(&self, list: &[(u32, i64)], limit: usize) -> Vec<(Arc<Petition>, i64)> {
        let registry = self.registry();
        list.iter()
            .take(limit)
            .filter_map(|&(num, change)| Some((registry.by_num(num)?, change)))
            .collect()
    }

    /// The trending list of `window` minutes at `now`: the petitions that changed count in the
    /// window, with their growth (only those that grew), most first, ties by id.
    fn compute_trending(&self, window: u32, now: u64) -> Vec<(u32, i64)> {
        let registry = self.registry();
        let mut found: Vec<(Arc<Petition>, i64)> = self
            .recent
            .since(window, now)
            .into_iter()
            .filter_map(|num| {
                let petition = registry.by_num(num)?;
                let change = petition.window(window, now);
                (change > 0).then_some((petition, change))
            })
            .collect();
        found.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.id.cmp(&b.0.id)));
        found.truncate(TRENDING_KEPT);
        found
            .into_iter()
            .map(|(p, change)| (p.num, change))
            .collect()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    #[inline]
    pub fn fingerprinter(&self) -> &Fingerprinter {
        &self.fingerprinter
    }

    #[inline]
    pub fn tokens(&self) -> &TokenKey {
        &self.tokens
    }

    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// Every signature's state; only the writer changes it.
    pub fn states(&self) -> &States {
        &self.states
    }

    /// The store, if the writer has one open.
    pub fn store(&self) -> Option<Arc<Store>> {
        self.store.lock().clone()
    }

    pub fn set_store(&self, store: Option<Arc<Store>>) {
        *self.store.lock() = store;
    }

    /// Now, by the engine's clock.
    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.config.clock.now_ms()
    }

    #[inline]
    pub fn index(&self) -> &Index {
        &self.index
    }

    #[inline]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    #[inline]
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Whether `close` has begun.
    #[inline]
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub fn start_closing(&self) {
        self.closing.store(true, Ordering::Release);
        self.events.close();
    }

    /// The lock that serialises registrations and closes of petitions.
    pub fn registering_lock(&self) -> MutexGuard<'_, ()> {
        self.registry.registering.lock()
    }

    /// Whether the index is rebuilt and signatures are taken.
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.ready_fast.load(Ordering::Acquire)
    }

    pub fn set_ready(&self) {
        self.recovery_elapsed_us.store(
            self.recovery_started.elapsed().as_micros() as u64,
            Ordering::Release,
        );
        self.readiness.lock().ready = true;
        self.ready_fast.store(true, Ordering::Release);
        self.ready_changed.notify_all();
    }

    /// Rebuilding the index failed: the engine never becomes ready, and the store is failing.
    pub fn fail_recovery(&self, error: RecoveryError) {
        match &error {
            RecoveryError::Rebuild(store) => self.health.fail(store),
        }
        self.readiness.lock().error = Some(error);
        self.ready_changed.notify_all();
    }

    /// Blocks until the engine is ready, or returns why it never will be.
    pub fn wait_ready(&self) -> Result<(), RecoveryError> {
        let mut readiness = self.readiness.lock();
        loop {
            if readiness.ready {
                return Ok(());
            }
            if let Some(error) = &readiness.error {
                return Err(error.clone());
            }
            self.ready_changed.wait(&mut readiness);
        }
    }

    /// The reconcile generation admission stamps on its jobs.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A reconcile changed the index: jobs admitted before must re-check their items.
    pub fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Reserves room for `n` signatures in the queue, or counts them overloaded and returns
    /// false. One batch larger than the whole bound is let through when nothing else is queued.
    #[inline]
    pub fn reserve_inflight(&self, n: usize) -> bool {
        let before = self.inflight.fetch_add(n, Ordering::AcqRel);
        debug_assert!(
            before.checked_add(n).is_some(),
            "the in-flight count wrapped"
        );
        if before > 0 && before + n > self.config.queue_signatures_max {
            self.inflight.fetch_sub(n, Ordering::AcqRel);
            self.overloaded.fetch_add(n as u64, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Releases `n` reserved signatures: they are answered (or about to be).
    #[inline]
    pub fn release_inflight(&self, n: usize) {
        let before = self.inflight.fetch_sub(n, Ordering::AcqRel);
        debug_assert!(before >= n, "released {n} in-flight signatures of {before}");
    }

    #[inline]
    pub fn count_accepted(&self, n: u64) {
        self.accepted.fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn count_duplicates(&self, n: u64) {
        self.duplicates.fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn count_rejected(&self, n: u64) {
        self.rejected.fetch_add(n, Ordering::Relaxed);
    }

    /// A durable batch of `signatures` new signers was published.
    pub fn count_batch(&self, signatures: u64) {
        self.accepted.fetch_add(signatures, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_signatures_last
            .store(signatures, Ordering::Relaxed);
    }

    /// How long a batch took from its write to its durability.
    pub fn record_write_latency(&self, elapsed: Duration) {
        self.write_latency.record(elapsed);
    }

    /// Recovery will load `n` stored signatures into the index.
    pub fn expect_recovered(&self, n: u64) {
        self.recovery_expected.store(n, Ordering::Release);
    }

    /// How many stored signatures recovery loads into the index.
    pub fn recovery_expected(&self) -> u64 {
        self.recovery_expected.load(Ordering::Acquire)
    }

    /// Recovery loaded `n` more stored signatures.
    pub fn count_recovered(&self, n: u64) {
        self.recovery_loaded.fetch_add(n, Ordering::Relaxed);
    }

    /// Memory mode: numbers and records the events of a count rising from `before` to `after`
    /// under the log's order, so that sequences rise in feed order whichever thread crossed
    /// first.
    pub fn publish_memory_crossings(&self, petition: &Petition, before: u64, after: u64) {
        let now = self.now_ms();
        let _order = self.memory_events.lock();
        let mut data: Vec<EventData> = petition
            .crossed(before, after)
            .into_iter()
            .map(|threshold| EventData::ThresholdCrossed { threshold })
            .collect();
        if let Some((threshold, due_at_ms)) = petition.response_falls_due(before, after, now) {
            data.push(EventData::ResponseDue {
                threshold,
                due_at_ms,
            });
        }
        self.publish_memory_events_locked(petition, now, data);
    }

    /// Memory mode: numbers and publishes events of one petition.
    pub fn publish_memory_events(&self, petition: &Petition, at_ms: u64, data: Vec<EventData>) {
        let _order = self.memory_events.lock();
        self.publish_memory_events_locked(petition, at_ms, data);
    }

    fn publish_memory_events_locked(&self, petition: &Petition, at_ms: u64, data: Vec<EventData>) {
        let mut seq = self.events.last_seq();
        let events = data
            .into_iter()
            .map(|data| {
                seq += 1;
                Event {
                    seq,
                    petition: petition.id.to_string(),
                    at_ms,
                    data,
                }
            })
            .collect();
        self.publish_events(events);
    }

    /// Publishes durable events: each petition's thresholds reached and response tracking
    /// follow, then readers see them.
    pub fn publish_events(&self, new: Vec<Event>) {
        if new.is_empty() {
            return;
        }
        for event in &new {
            if let Some(petition) = self.registry.get(&event.petition) {
                petition.apply_event(event.at_ms, &event.data);
                if let (EventData::SourceAlert { source, .. }, Some(sources)) =
                    (&event.data, &self.sources)
                {
                    sources.note_alert(&petition, source, event.at_ms, self.now_ms());
                }
            }
        }
        self.events.push(new);
    }

    pub fn last_event_seq(&self) -> u64 {
        self.events.last_seq()
    }

    /// Events with sequence greater than `after`, oldest first, at most `limit`: from memory,
    /// or from the store for a reader further behind than memory keeps.
    pub fn events_after(&self, after: u64, limit: usize) -> Vec<Event> {
        match self.events.read(after, limit) {
            Read::Memory(events) => events,
            Read::Store => self.stored_events(after, limit),
        }
    }

    /// [`Shared::events_after`], waiting up to `timeout` for one if there is none yet.
    pub fn wait_events(&self, after: u64, limit: usize, timeout: Duration) -> Vec<Event> {
        match self.events.wait(after, limit, timeout) {
            Read::Memory(events) => events,
            Read::Store => {
                let events = self.stored_events(after, limit);
                if events.is_empty() {
                    // The store is being recovered or failed the read: a caller that asks
                    // again at once must not spin.
                    std::thread::sleep(timeout.min(Duration::from_millis(50)));
                }
                events
            }
        }
    }

    /// A revision no webhook has had since the engine opened (see `Webhook::revision`).
    pub fn next_webhook_revision(&self) -> u64 {
        self.webhook_revision.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// At open: revisions go on from the highest stored.
    pub fn webhook_revisions_from(&self, highest: u64) {
        self.webhook_revision.fetch_max(highest, Ordering::AcqRel);
    }

    fn stored_events(&self, after: u64, limit: usize) -> Vec<Event> {
        let Some(store) = self.store() else {
            // The store is being recovered: the reader asks again.
            return Vec::new();
        };
        let loaded = store.load_events(after + 1, limit).and_then(|stored| {
            event::named(stored, |num| {
                self.registry.by_num(num).map(|p| p.id.to_string())
            })
        });
        loaded.unwrap_or_default()
    }

    pub fn events_closed(&self) -> bool {
        self.events.is_closed()
    }

    pub fn watch_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }

    /// Threshold milestones with sequence greater than `after`, oldest first, at most `limit`
    /// (the milestone view of the events feed).
    pub fn milestones_after(&self, after: u64, limit: usize) -> Vec<Milestone> {
        let mut out = Vec::new();
        let mut at = after;
        loop {
            let page = self.events_after(at, 1024);
            let Some(last) = page.last() else {
                return out;
            };
            at = last.seq;
            for event in page {
                let (kind, threshold) = match event.data {
                    EventData::ThresholdCrossed { threshold } => {
                        (MilestoneKind::ThresholdCrossed, threshold)
                    }
                    EventData::ThresholdRegressed { threshold } => {
                        (MilestoneKind::ThresholdRegressed, threshold)
                    }
                    _ => continue,
                };
                out.push(Milestone {
                    seq: event.seq,
                    petition: event.petition,
                    threshold,
                    reached_at_ms: event.at_ms,
                    kind,
                });
                if out.len() == limit {
                    return out;
                }
            }
        }
    }

    pub fn guards(&self) -> &crate::guard::Guards {
        &self.guards
    }

    pub fn limiter(&self) -> Option<&crate::limit::Limiter> {
        self.limiter.as_ref()
    }

    pub fn sources(&self) -> Option<&crate::sources::Sources> {
        self.sources.as_ref()
    }

    pub fn webhooks(&self) -> MutexGuard<'_, std::collections::BTreeMap<String, Webhook>> {
        self.webhooks.lock()
    }

    /// Counters, sizes and the recovery state.
    pub fn stats(&self, persistent: bool) -> Stats {
        let (index_entries, index_bytes) = self.index.usage();
        let petitions = self.registry.all();
        let signatures = petitions
            .iter()
            .map(|p| p.count.load(Ordering::Acquire))
            .sum();
        let counts_bytes = (petitions.len() * std::mem::size_of::<Petition>()) as u64;
        let breakdown_bytes = petitions
            .iter()
            .map(|p| p.with_breakdown(|_, b| b.bytes()))
            .sum::<u64>()
            + self.regions.bytes()
            + self.recent.bytes();
        Stats {
            ready: self.is_ready(),
            storage_healthy: self.health.is_healthy(),
            persistent,
            durability: self.config.durability,
            petitions: petitions.len() as u64,
            signatures,
            accepted_total: self.accepted.load(Ordering::Relaxed),
            duplicates_total: self.duplicates.load(Ordering::Relaxed),
            rejected_total: self.rejected.load(Ordering::Relaxed),
            overloaded_total: self.overloaded.load(Ordering::Relaxed),
            queue_signatures: self.inflight.load(Ordering::Relaxed) as u64,
            batches_total: self.batches.load(Ordering::Relaxed),
            batch_signatures_last: self.batch_signatures_last.load(Ordering::Relaxed),
            write_latency: self.write_latency.snapshot(),
            index_entries,
            index_bytes,
            counts_bytes,
            breakdown_bytes,
            rate_limit_bytes: self.limiter.as_ref().map_or(0, |l| l.bytes()),
            source_bytes: self.sources.as_ref().map_or(0, |s| s.bytes()),
            states_bytes: self.states.bytes(),
            storage_errors_total: self.health.errors_total(),
            last_storage_error: self.health.last_error(),
            recovery_loaded: self.recovery_loaded.load(Ordering::Relaxed),
            recovery_expected: self.recovery_expected.load(Ordering::Relaxed),
            recovery_index_from: mark(self.index_loaded_from.load(Ordering::Acquire)),
            index_saved_from: self.index_saved_from(),
            index_saves_total: self.index_saves.load(Ordering::Relaxed),
            recovery_seconds: Duration::from_micros(
                self.recovery_elapsed_us.load(Ordering::Acquire),
            )
            .as_secs_f64(),
            recovery_error: self
                .readiness
                .lock()
                .error
                .as_ref()
                .map(ToString::to_string),
        }
    }
}
