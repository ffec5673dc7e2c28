//! [`Engine`]: the public handle. It opens the store and loads what counts need, starts the
//! writer, and hands each call to admission (`admission.rs`), the registry or the writer.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};

use crate::admission;
use crate::config::{Config, Storage};
use crate::error::{
    FlushError, InvalidationError, OpenError, PetitionError, RecoveryError, StoreError,
    SubmitError, VerifyError, WebhookError,
};
use crate::event::{self, CloseReason, Event, EventData, NewEvent, Subscription};
use crate::fingerprint::{Fingerprinter, SECRET_BYTES};
use crate::guard::{
    self, check_by, Change, EntrySpec, GuardChange, GuardError, ListEntry, ListName, Switches,
    LIST_ENTRIES_MAX,
};
use crate::invalidation::{
    self, InvalidationJob, InvalidationRequest, JobChange, JobRecord, JobState, Scope,
};
use crate::job::{Answers, Job, Outcome, Waiting};
use crate::lifecycle::Validation;
use crate::limit::RateLimits;
use crate::petition::Counts;
use crate::petition::{
    Milestone, Petition, PetitionInfo, PetitionMeta, PetitionSpec, DEFAULT_THRESHOLDS,
    RESPONSE_DUE_DAYS_DEFAULT,
};
use crate::place::{Bucket, CountryCount, Place, RegionCount, Resolution, MINUTES_KEPT};
use crate::replication::Handover;
use crate::shared::{Shared, TRENDING_KEPT};
use crate::signature::{AsSignatureRef, NewSignature, Op};
use crate::sources::{SourceHour, SourcesConfig, SourcesError, TopSources};
use crate::stats::Stats;
use crate::store::{Meta, Store, FORMAT_VERSION, FORMAT_VERSION_3, SIGNER_RULES};

/// The background thread's stop flag and wake-up.
#[derive(Default)]
struct Background {
    stop: Mutex<bool>,
    wake: Condvar,
}
use crate::signature::InvalidField;
use crate::verify::VerifyReport;
use crate::webhook::{Webhook, WebhookChange, WebhookSpec, WEBHOOKS_MAX};
use crate::writer::{IndexSource, Writer};

/// How petitions stand with their responses (see [`Engine::response_stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseStats {
    /// Petitions awaiting a response.
    pub awaiting: u64,
    /// Of those, the ones past their due time.
    pub overdue: u64,
    /// For each recorded response to a petition that had crossed its response threshold: the
    /// time from that crossing to the response (milliseconds).
    pub times_to_respond_ms: Vec<u64>,
}

/// Whether a registration created a petition or updated one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// The petition is new.
    Created,
    /// The petition existed; its deadline and thresholds were updated.
    Updated,
}

/// Joins the writer when the last [`Engine`] handle goes away.
struct Handle {
    shared: Arc<Shared>,
    sender: Option<Sender<Job>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The thread that sweeps expired pending signatures and runs invalidation jobs.
    background: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The thread that saves the index beside the store (`run_index_snapshots`).
    snapshots: Mutex<Option<std::thread::JoinHandle<()>>>,
    wake: Arc<Background>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Best effort: a clean close flushes the memtables so the next open is fast. Errors have
        // nowhere to go here; `Engine::close` reports them.
        let _ = close(self);
    }
}

fn close(handle: &Handle) -> Result<(), FlushError> {
    handle.shared.start_closing();
    // The background thread goes first: it holds a sender and, during a step, the store.
    *handle.wake.stop.lock() = true;
    handle.wake.wake.notify_all();
    if let Some(background) = handle.background.lock().take() {
        // It panics only on a broken invariant, which its own report has shown.
        let _ = background.join();
    }
    // An index save under way stops (its file is not used): the writer saves the index
    // whole once it has written everything.
    if let Some(snapshots) = handle.snapshots.lock().take() {
        let _ = snapshots.join();
    }
    let Some(writer) = handle.writer.lock().take() else {
        return Ok(());
    };
    let mut result = Ok(());
    if let Some(sender) = &handle.sender {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        if sender.send(Job::Shutdown(reply)).is_ok() {
            result = match answer.recv() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(FlushError::StorageUnavailable),
                Err(_) => Err(FlushError::ShutDown),
            };
        }
    }
    if writer.join().is_err() {
        result = Err(FlushError::StorageUnavailable);
    }
    result
}

/// The signature ingestion engine: exact dedup, counts, durable group commit.
///
/// Cheap to clone (an `Arc`); every method takes `&self` and may be called from any thread.
/// The blocking methods (`submit`, `submit_batch`, `register`, `close_petition`, `flush`,
/// `close`) wait for the disk: call them from an async runtime only through `spawn_blocking`, or
/// use the `_async` variants.
///
/// ```
/// use engine::{Config, Engine, NewSignature, Outcome, PetitionSpec};
///
/// let dir = tempfile::tempdir().unwrap();
/// let engine = Engine::open(Config::persistent(dir.path())).unwrap();
/// engine.wait_ready();
/// engine.register(PetitionSpec::new("save-the-bees")).unwrap();
///
/// let first = engine.submit(NewSignature::new("save-the-bees", "Jo@Example.org"));
/// assert_eq!(first, Ok(Outcome::Accepted { count: 1 }));
/// let again = engine.submit(NewSignature::new("save-the-bees", " jo@example.org"));
/// assert_eq!(again, Ok(Outcome::Duplicate { count: 1 }));
/// assert_eq!(engine.count("save-the-bees"), Some(1));
/// engine.close().unwrap();
/// ```
#[derive(Clone)]
pub struct Engine {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("storage", &self.handle.shared.config().storage)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens (or creates) the engine. Petitions, counts and milestones are loaded before this
    /// returns; the dedup index is rebuilt in the background, and submissions get
    /// [`SubmitError::Recovering`] until [`Engine::is_ready`].
    pub fn open(config: Config) -> Result<Engine, OpenError> {
        Engine::open_with(config, None)
    }

    /// [`Engine::open`] on a follower's open store, with the index it kept if it kept one
    /// (`Follower::into_engine`).
    pub(crate) fn open_with(
        config: Config,
        handover: Option<Handover>,
    ) -> Result<Engine, OpenError> {
        check_config(&config)?;
        let recovery_started = Instant::now();
        let (opened, index) = match handover {
            Some(handover) => (Some(handover.store), handover.index),
            None => (None, None),
        };
        // The index saved beside the store: read on a thread of its own from the start, while
        // RocksDB opens (after kill -9 it replays its log and flushes what it replayed: 4.3 s at
        // 359 M signatures) and the petitions and counts load, for the writer to check against
        // the store and bring up to it. The thread reads `index` only; the temporary file of a
        // save cut short is removed once the store is open, when this process holds its lock.
        let loading = match (&index, &config.storage) {
            (None, Storage::Directory(path)) => {
                let path = path.clone();
                let (bits, expected) = (config.index_shard_bits, config.signatures_expected);
                let loading = std::thread::Builder::new()
                    .name("engine-index-load".into())
                    .spawn(move || crate::index_file::read_saved(&path, bits, expected))
                    .map_err(|error| OpenError::Io {
                        what: "start the index loading thread",
                        error,
                    })?;
                Some(loading)
            }
            _ => None,
        };
        let store = open_store(&config, opened)?;
        let fingerprinter = match &store {
            Some((_, meta)) => Fingerprinter::new(meta.secret),
            None => Fingerprinter::random(),
        };
        debug_assert_eq!(fingerprinter.secret().len(), SECRET_BYTES);
        if let Some((store, _)) = &store {
            crate::index_file::remove_temporary(store.path());
        }
        let shared = Arc::new(Shared::new(config, fingerprinter, recovery_started));

        let Some((store, _)) = store else {
            shared.set_ready();
            let engine = Engine::new(shared, None, None);
            if let Some(interval) = engine.handle.shared.config().sweep_interval {
                // Memory mode sweeps nothing, but deadlines still pass.
                let shared = Arc::clone(&engine.handle.shared);
                let wake = Arc::clone(&engine.handle.wake);
                let thread = std::thread::Builder::new()
                    .name("engine-deadlines".into())
                    .spawn(move || run_deadlines(&shared, &wake, interval))
                    .map_err(|error| OpenError::Io {
                        what: "start the deadline thread",
                        error,
                    })?;
                *engine.handle.background.lock() = Some(thread);
            }
            return Ok(engine);
        };
        let next_event_seq = load_registry(&shared, &store)?;
        let next_seq = store.next_signature_seq()?;
        let sweep_cursor = store.sweep_cursor()?;
        let (sender, receiver) = crossbeam_channel::unbounded();
        let writer = Writer::new(
            Arc::clone(&shared),
            store,
            receiver,
            next_seq,
            next_event_seq,
            sweep_cursor,
            match (index, loading) {
                (Some(index), _) => IndexSource::Warm(index),
                (None, Some(loading)) => IndexSource::Saved(loading),
                (None, None) => IndexSource::Rebuild,
            },
        )
        .map_err(|error| OpenError::Io {
            what: "start the syncer thread",
            error,
        })?;
        let thread = std::thread::Builder::new()
            .name("engine-writer".into())
            .spawn(move || writer.run())
            .map_err(|error| OpenError::Io {
                what: "start the writer thread",
                error,
            })?;
        let engine = Engine::new(shared, Some(sender), Some(thread));
        let (shared, sender, wake) = (
            Arc::clone(&engine.handle.shared),
            engine.handle.sender.clone().expect("persistent"),
            Arc::clone(&engine.handle.wake),
        );
        let background = std::thread::Builder::new()
            .name("engine-lifecycle".into())
            .spawn(move || run_background(&shared, &sender, &wake))
            .map_err(|error| OpenError::Io {
                what: "start the lifecycle thread",
                error,
            })?;
        *engine.handle.background.lock() = Some(background);
        if engine.handle.shared.config().index_snapshot_signatures > 0 {
            let (shared, wake) = (
                Arc::clone(&engine.handle.shared),
                Arc::clone(&engine.handle.wake),
            );
            let snapshots = std::thread::Builder::new()
                .name("engine-index-save".into())
                .spawn(move || run_index_snapshots(&shared, &wake))
                .map_err(|error| OpenError::Io {
                    what: "start the index saving thread",
                    error,
                })?;
            *engine.handle.snapshots.lock() = Some(snapshots);
        }
        Ok(engine)
    }

    fn new(
        shared: Arc<Shared>,
        sender: Option<Sender<Job>>,
        writer: Option<std::thread::JoinHandle<()>>,
    ) -> Engine {
        Engine {
            handle: Arc::new(Handle {
                shared,
                sender,
                writer: Mutex::new(writer),
                background: Mutex::new(None),
                snapshots: Mutex::new(None),
                wake: Arc::new(Background::default()),
            }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// Whether the index is rebuilt and signatures are taken.
    pub fn is_ready(&self) -> bool {
        self.shared().is_ready()
    }

    /// Whether the store takes writes, the storage errors since open and the last one's
    /// message: the storage part of [`Engine::stats`], without its walk over the petitions.
    pub fn storage_health(&self) -> (bool, u64, Option<String>) {
        let health = self.shared().health();
        (
            health.is_healthy(),
            health.errors_total(),
            health.last_error(),
        )
    }

    /// Blocks until the index is rebuilt. Returns the recovery error if rebuilding failed.
    pub fn wait_ready(&self) -> Result<(), RecoveryError> {
        self.shared().wait_ready()
    }

    /// Submits one signature and waits until it is durable (or found duplicate, or refused).
    pub fn submit(&self, signature: NewSignature) -> Result<Outcome, SubmitError> {
        single(self.submit_batch(vec![signature]))
    }

    /// Submits many signatures; they share one group commit where possible. Answers come back in
    /// input order, one per signature.
    pub fn submit_batch(&self, signatures: Vec<NewSignature>) -> Vec<Result<Outcome, SubmitError>> {
        self.submit_batch_ref(&signatures)
    }

    /// [`Engine::submit_batch`] for signatures borrowed from the caller's buffers (a parsed
    /// request body, say): no field is copied unless the signature is stored.
    pub fn submit_batch_ref<S: AsSignatureRef>(
        &self,
        signatures: &[S],
    ) -> Vec<Result<Outcome, SubmitError>> {
        self.admit_blocking(signatures)
    }

    fn admit_blocking<O: admission::AsOp>(
        &self,
        signatures: &[O],
    ) -> Vec<Result<Outcome, SubmitError>> {
        let (results, waiting) = admission::admit(
            self.shared(),
            self.handle.sender.as_ref(),
            signatures,
            false,
        );
        match waiting {
            None => finish(results, None),
            Some(Waiting::Blocking(receiver)) => finish(results, receiver.recv().ok()),
            Some(Waiting::Async(_)) => unreachable!("blocking admission waits on a std channel"),
        }
    }

    /// Async [`Engine::submit`].
    pub async fn submit_async(&self, signature: NewSignature) -> Result<Outcome, SubmitError> {
        self.submit_ref_async(&signature).await
    }

    /// One signature of [`Engine::submit_batch_ref_async`].
    pub fn submit_ref_async<S: AsSignatureRef>(
        &self,
        signature: &S,
    ) -> impl Future<Output = Result<Outcome, SubmitError>> + Send + 'static {
        let answer = self.submit_batch_ref_async(std::slice::from_ref(signature));
        async move { single(answer.await) }
    }

    /// Async [`Engine::submit_batch_ref`]: the signatures are validated and claimed before this
    /// returns, so the future borrows nothing from them and can be awaited anywhere.
    ///
    /// ```
    /// # use engine::{Config, Engine, Outcome, PetitionSpec, SignatureRef};
    /// # let engine = Engine::open(Config::in_memory()).unwrap();
    /// # engine.register(PetitionSpec::new("p1")).unwrap();
    /// let body = String::from("ada@example.org"); // a request body, say
    /// let signature = SignatureRef { petition: "p1", email: &body, ..SignatureRef::default() };
    /// let answer = engine.submit_batch_ref_async(&[signature]);
    /// drop(body);
    /// # let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// let results = runtime.block_on(answer);
    /// assert!(matches!(results[0], Ok(Outcome::Accepted { count: 1 })));
    /// ```
    pub fn submit_batch_ref_async<S: AsSignatureRef>(
        &self,
        signatures: &[S],
    ) -> impl Future<Output = Vec<Result<Outcome, SubmitError>>> + Send + 'static {
        let (results, waiting) =
            admission::admit(self.shared(), self.handle.sender.as_ref(), signatures, true);
        async move {
            match waiting {
                None => finish(results, None),
                Some(Waiting::Async(receiver)) => finish(results, receiver.await.ok()),
                Some(Waiting::Blocking(_)) => unreachable!("async admission waits on a oneshot"),
            }
        }
    }

    /// Async [`Engine::submit_batch`].
    pub async fn submit_batch_async(
        &self,
        signatures: Vec<NewSignature>,
    ) -> Vec<Result<Outcome, SubmitError>> {
        let answer = self.submit_batch_ref_async(&signatures);
        drop(signatures);
        answer.await
    }

    /// Registers a petition, or updates the deadline and thresholds of an existing one.
    /// Durable (synced) before it returns.
    pub fn register(&self, spec: PetitionSpec) -> Result<Registered, PetitionError> {
        self.register_many(vec![spec])
            .pop()
            .unwrap_or(Err(PetitionError::ShuttingDown))
    }

    /// [`Engine::register`] for many petitions in one synced write. Answers in input order; an
    /// id given twice is registered by the first and updated by the second.
    pub fn register_many(
        &self,
        specs: Vec<PetitionSpec>,
    ) -> Vec<Result<Registered, PetitionError>> {
        let shared = self.shared();
        if shared.is_closing() {
            return vec![Err(PetitionError::ShuttingDown); specs.len()];
        }
        if shared.guards().is_read_only() {
            return vec![Err(PetitionError::ReadOnly); specs.len()];
        }
        let _registering = shared.registering_lock();
        let (results, planned) = plan_registrations(shared, specs);
        if planned.is_empty() {
            return results;
        }
        let persist: Vec<(u32, PetitionMeta)> = planned
            .iter()
            .map(|(num, meta, _)| (*num, meta.clone()))
            .collect();
        if let Err(e) = self.persist_petitions(persist, Vec::new()) {
            return results.into_iter().map(|r| r.and(Err(e.clone()))).collect();
        }
        for (num, meta, existing) in planned {
            match existing {
                Some(petition) => petition.set_meta(meta),
                None => {
                    shared
                        .registry()
                        .insert(Arc::new(Petition::new(num, meta, Counts::default())))
                }
            }
        }
        results
    }

    /// Closes a petition: it takes no more signatures, and the events feed records
    /// `petition_closed` (unless its deadline's close was recorded already). Closing a closed
    /// petition is a no-op.
    pub fn close_petition(&self, id: &str) -> Result<PetitionInfo, PetitionError> {
        let shared = self.shared();
        if shared.guards().is_read_only() {
            return Err(PetitionError::ReadOnly);
        }
        let _registering = shared.registering_lock();
        let petition = shared
            .registry()
            .get(id)
            .ok_or(PetitionError::UnknownPetition)?;
        let mut meta = petition.meta();
        if meta.closed_at_ms.is_none() {
            let now = shared.now_ms();
            let recorded = meta.deadline_ms.is_some_and(|d| d <= now)
                && petition.deadline_closed() == meta.deadline_ms;
            meta.closed_at_ms = Some(now);
            let events = if recorded {
                Vec::new()
            } else {
                vec![NewEvent {
                    petition: petition.num,
                    at_ms: now,
                    data: EventData::PetitionClosed {
                        reason: CloseReason::Admin,
                    },
                }]
            };
            self.persist_petitions(vec![(petition.num, meta.clone())], events)?;
        }
        Ok(petition.info(shared.now_ms()))
    }

    /// Records a petition's response (replacing an earlier one): `responded` goes into the
    /// events feed and the petition no longer awaits an answer. Durable (synced) before it
    /// returns.
    pub fn respond(
        &self,
        id: &str,
        summary: &str,
        url: Option<&str>,
    ) -> Result<PetitionInfo, PetitionError> {
        event::check_response(summary, url).map_err(|reason| InvalidField {
            field: if reason.starts_with("url") {
                "url"
            } else {
                "summary"
            },
            reason,
        })?;
        let shared = self.shared();
        if shared.is_closing() {
            return Err(PetitionError::ShuttingDown);
        }
        if shared.guards().is_read_only() {
            return Err(PetitionError::ReadOnly);
        }
        let _registering = shared.registering_lock();
        let petition = shared
            .registry()
            .get(id)
            .ok_or(PetitionError::UnknownPetition)?;
        let event = NewEvent {
            petition: petition.num,
            at_ms: shared.now_ms(),
            data: EventData::Responded {
                summary: summary.to_owned(),
                url: url.map(str::to_owned),
            },
        };
        self.persist_petitions(Vec::new(), vec![event])?;
        Ok(petition.info(shared.now_ms()))
    }

    /// Records `petition_closed` (reason `deadline`) for every open petition whose deadline has
    /// passed by the engine's clock and has no such event for that deadline yet; returns how
    /// many. The background thread does this every `sweep_interval`.
    pub fn record_deadlines(&self) -> Result<u64, PetitionError> {
        record_deadlines(self.shared(), self.handle.sender.as_ref())
    }

    fn persist_petitions(
        &self,
        petitions: Vec<(u32, PetitionMeta)>,
        events: Vec<NewEvent>,
    ) -> Result<(), PetitionError> {
        persist_petitions(
            self.shared(),
            self.handle.sender.as_ref(),
            petitions,
            events,
        )
    }

    /// Validates the pending signature `token` names: counted from now on, exactly once. Waits
    /// until that is durable. A second validation answers [`Outcome::AlreadyValidated`].
    pub fn validate(&self, token: &str) -> Result<Outcome, SubmitError> {
        single(self.admit_blocking(&[Op::Validate(token)]))
    }

    /// Async [`Engine::validate`].
    pub fn validate_async(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<Outcome, SubmitError>> + Send + 'static {
        let answer = self.submit_ops_ref_async(&[Op::Validate(token)]);
        async move { single(answer.await) }
    }

    /// Submits signatures and validations together: they share one group commit where
    /// possible. Answers come back in input order, one per operation.
    pub fn submit_ops_ref(&self, ops: &[Op<'_>]) -> Vec<Result<Outcome, SubmitError>> {
        self.admit_blocking(ops)
    }

    /// Async [`Engine::submit_ops_ref`]: admitted before this returns, so the future borrows
    /// nothing from `ops`.
    pub fn submit_ops_ref_async(
        &self,
        ops: &[Op<'_>],
    ) -> impl Future<Output = Vec<Result<Outcome, SubmitError>>> + Send + 'static {
        let (results, waiting) =
            admission::admit(self.shared(), self.handle.sender.as_ref(), ops, true);
        async move {
            match waiting {
                None => finish(results, None),
                Some(Waiting::Async(receiver)) => finish(results, receiver.await.ok()),
                Some(Waiting::Blocking(_)) => unreachable!("async admission waits on a oneshot"),
            }
        }
    }

    /// Drops every pending signature whose grace period has passed (by the engine's clock) and
    /// frees its signer's slot, in bounded steps; returns how many expired. The background
    /// sweep does this every `sweep_interval`; this runs it now.
    pub fn sweep_expired(&self) -> Result<u64, SubmitError> {
        let Some(sender) = &self.handle.sender else {
            return Ok(0);
        };
        let mut expired = 0;
        loop {
            let (reply, answer) = std::sync::mpsc::sync_channel(1);
            sender
                .send(Job::Sweep(reply))
                .map_err(|_| SubmitError::ShuttingDown)?;
            match answer.recv() {
                Ok(Ok((n, more))) => {
                    expired += n;
                    if !more {
                        return Ok(expired);
                    }
                }
                Ok(Err(_)) => return Err(SubmitError::StorageUnavailable),
                Err(_) => return Err(SubmitError::ShuttingDown),
            }
        }
    }

    /// Drops the trending-source tables of petitions with no source in the last hour, which
    /// returns their slots to the budget. The background thread does this every
    /// `sweep_interval`; this runs it now.
    pub fn sweep_sources(&self) {
        let shared = self.shared();
        if let Some(sources) = shared.sources() {
            sources.sweep(shared.now_ms());
        }
    }

    /// The petition number and compiled criteria of an invalidation request.
    fn resolve_invalidation(
        &self,
        request: &InvalidationRequest,
    ) -> Result<(Option<u32>, crate::lifecycle::Matcher), InvalidationError> {
        if self.handle.sender.is_none() {
            return Err(InvalidationError::Unsupported);
        }
        if self.shared().is_closing() {
            return Err(InvalidationError::ShuttingDown);
        }
        let matcher = request.criteria.compile()?;
        let petition = match &request.petition {
            None => None,
            Some(id) => Some(
                self.shared()
                    .registry()
                    .get(id)
                    .ok_or(InvalidationError::UnknownPetition)?
                    .num,
            ),
        };
        Ok((petition, matcher))
    }

    /// How many signatures an invalidation would invalidate now: those in scope that match and
    /// are pending or validated. Reads them all (a petition's through its own index), changes
    /// nothing.
    pub fn preview_invalidation(
        &self,
        request: &InvalidationRequest,
    ) -> Result<u64, InvalidationError> {
        let (petition, matcher) = self.resolve_invalidation(request)?;
        let store = self
            .shared()
            .store()
            .ok_or(InvalidationError::StorageUnavailable)?;
        let runs = match petition {
            Some(petition) => Some(
                store
                    .petition_runs(petition, u64::MAX)
                    .map_err(|_| InvalidationError::StorageUnavailable)?,
            ),
            None => None,
        };
        let scope = Scope {
            runs: runs.as_deref(),
            matcher: &matcher,
            upto: u64::MAX,
        };
        let mut matching = 0u64;
        let mut cursor = 0;
        loop {
            let step = invalidation::scan(
                &store,
                self.shared().states(),
                self.shared().regions(),
                &scope,
                cursor,
                PREVIEW_STEP,
            )
            .map_err(|_| InvalidationError::StorageUnavailable)?;
            matching += step.matching.len() as u64;
            if step.done {
                return Ok(matching);
            }
            cursor = step.cursor;
        }
    }

    /// Starts an invalidation job: it runs in the background, in steps of `invalidation_step`
    /// signatures, while ingestion goes on; [`Engine::invalidation`] shows its progress. It
    /// covers the signatures stored when it starts.
    pub fn start_invalidation(
        &self,
        request: InvalidationRequest,
    ) -> Result<InvalidationJob, InvalidationError> {
        if self.shared().guards().is_read_only() {
            return Err(InvalidationError::ReadOnly);
        }
        let (petition_num, _) = self.resolve_invalidation(&request)?;
        let record = JobRecord {
            job: InvalidationJob {
                id: 0,
                petition: request.petition,
                criteria: request.criteria,
                state: JobState::Running,
                scanned: 0,
                matched: 0,
                invalidated: 0,
                total: 0,
                created_at_ms: self.shared().now_ms(),
                finished_at_ms: None,
                error: None,
            },
            petition_num,
            cursor: 0,
            upto: 0,
        };
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.send(Job::JobChange(JobChange::Create(Box::new(record), reply)))
            .map_err(|()| InvalidationError::ShuttingDown)?;
        let job = answer
            .recv()
            .map_err(|_| InvalidationError::ShuttingDown)??;
        self.handle.wake.wake.notify_all();
        Ok(job)
    }

    /// One invalidation job, if it exists.
    pub fn invalidation(&self, id: u64) -> Option<InvalidationJob> {
        self.shared().jobs().get(id).map(|record| record.job)
    }

    /// Every invalidation job, oldest first.
    pub fn invalidations(&self) -> Vec<InvalidationJob> {
        self.shared().jobs().all()
    }

    /// Cancels a running invalidation job: it stops after its current step; what it
    /// invalidated stays invalidated. A finished job answers [`InvalidationError::Finished`].
    pub fn cancel_invalidation(&self, id: u64) -> Result<InvalidationJob, InvalidationError> {
        if self.handle.sender.is_none() {
            return Err(InvalidationError::Unsupported);
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.send(Job::JobChange(JobChange::Cancel(id, reply)))
            .map_err(|()| InvalidationError::ShuttingDown)?;
        answer.recv().map_err(|_| InvalidationError::ShuttingDown)?
    }

    fn send(&self, job: Job) -> Result<(), ()> {
        match &self.handle.sender {
            Some(sender) => sender.send(job).map_err(|_| ()),
            None => Err(()),
        }
    }

    /// The time by the engine's clock ([`Config::clock`]), Unix milliseconds: what its time
    /// rules (deadlines, expiry, history buckets, trending windows) read.
    pub fn now_ms(&self) -> u64 {
        self.shared().now_ms()
    }

    /// The petition's count of validated signatures, or `None` if it is unknown.
    pub fn count(&self, petition: &str) -> Option<u64> {
        self.shared()
            .registry()
            .get(petition)
            .map(|p| p.count.load(Ordering::Acquire))
    }

    /// A snapshot of one petition.
    pub fn petition(&self, id: &str) -> Option<PetitionInfo> {
        let now = self.shared().now_ms();
        self.shared().registry().get(id).map(|p| p.info(now))
    }

    /// A petition's count and its counts by country, the largest first (ties by code);
    /// signatures that name no country count under [`crate::NO_COUNTRY`] (`ZZ`). The counts
    /// sum to the count, both read at one instant. `None`: no such petition.
    pub fn countries(&self, id: &str) -> Option<(u64, Vec<CountryCount>)> {
        let petition = self.shared().registry().get(id)?;
        let (count, countries) = petition.countries();
        let countries = countries
            .into_iter()
            .map(|(country, n)| CountryCount::new(country, n))
            .collect();
        Some((count, countries))
    }

    /// A petition's counts by region, the largest first (ties by country, then region): of one
    /// country (`Some(code)`, either case), or of all. `Ok(None)`: no such petition;
    /// `Err`: `country` is not an assigned ISO 3166-1 alpha-2 code.
    pub fn regions(
        &self,
        id: &str,
        country: Option<&str>,
    ) -> Result<Option<Vec<RegionCount>>, InvalidField> {
        let wanted = match country {
            Some(code) if crate::country::is_assigned(code) => Some(Place::country_number(code)),
            Some(code) => {
                return Err(InvalidField {
                    field: "country",
                    reason: crate::country::refusal(code),
                })
            }
            None => None,
        };
        let Some(petition) = self.shared().registry().get(id) else {
            return Ok(None);
        };
        let places: Vec<(Place, u64)> = petition.with_breakdown(|_, b| {
            b.places()
                .filter(|(place, _)| {
                    place.region() != 0 && wanted.is_none_or(|c| place.country() == c)
                })
                .collect()
        });
        let regions = self.shared().regions();
        let mut out: Vec<RegionCount> = places
            .into_iter()
            .filter_map(|(place, count)| {
                let key = regions.key(place.region())?;
                Some(RegionCount {
                    country: String::from_utf8_lossy(&place.country_code()).into_owned(),
                    region: key.text().to_owned(),
                    count,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.country.cmp(&b.country))
                .then_with(|| a.region.cmp(&b.region))
        });
        Ok(Some(out))
    }

    /// A petition's history at `resolution`: how its count changed in each minute of the last
    /// 48 hours, or in each hour of its life, oldest first, empty buckets left out. A bucket
    /// counts the signatures counted in it (accepted, or validated) less those invalidated in
    /// it, so the hours sum to the count. `None`: no such petition.
    pub fn history(&self, id: &str, resolution: Resolution) -> Option<Vec<Bucket>> {
        let now = self.shared().now_ms();
        let petition = self.shared().registry().get(id)?;
        Some(petition.history(resolution, now))
    }

    /// The petitions whose count grew most in the last `window_minutes` whole minutes (the
    /// current one included; 1 to 2,880), most first (ties by id), at most `limit` (at most
    /// 1,000), each with its growth. Computed from the petitions that changed count in the
    /// window, at most once per [`Config::trending_refresh`].
    pub fn trending(&self, window_minutes: u32, limit: usize) -> Vec<(PetitionInfo, i64)> {
        let now = self.shared().now_ms();
        let window = window_minutes.clamp(1, MINUTES_KEPT);
        self.shared()
            .trending(window, limit.min(TRENDING_KEPT))
            .into_iter()
            .map(|(p, change)| (p.info(now), change))
            .collect()
    }

    /// Up to `limit` petitions with the highest counts, highest first (ties by id).
    pub fn top_petitions(&self, limit: usize) -> Vec<PetitionInfo> {
        let now = self.shared().now_ms();
        let mut all: Vec<(u64, Arc<Petition>)> = self
            .shared()
            .registry()
            .all()
            .into_iter()
            .map(|p| (p.count.load(Ordering::Acquire), p))
            .collect();
        all.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
        all.into_iter()
            .take(limit)
            .map(|(_, p)| p.info(now))
            .collect()
    }

    /// Threshold milestones with sequence greater than `after`, oldest first, at most `limit`:
    /// the `threshold_crossed` and `threshold_regressed` entries of the events feed, with
    /// their event sequences.
    pub fn milestones_after(&self, after: u64, limit: usize) -> Vec<Milestone> {
        self.shared().milestones_after(after, limit)
    }

    /// Events with sequence greater than `after`, oldest first, at most `limit`. Sequences
    /// start at 1, so `after = 0` reads from the first.
    pub fn events_after(&self, after: u64, limit: usize) -> Vec<Event> {
        self.shared().events_after(after, limit)
    }

    /// [`Engine::events_after`], waiting up to `timeout` for an event if there is none yet
    /// (less if the engine closes).
    pub fn wait_events(&self, after: u64, limit: usize, timeout: Duration) -> Vec<Event> {
        self.shared().wait_events(after, limit, timeout)
    }

    /// The sequence of the newest event (0 if none).
    pub fn last_event_seq(&self) -> u64 {
        self.shared().last_event_seq()
    }

    /// The newest event's sequence, for async readers: it changes whenever events are
    /// published.
    pub fn watch_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared().watch_events()
    }

    /// Every event after `after`, as they come: an iterator that blocks for the next one and
    /// ends when the engine closes.
    pub fn subscribe(&self, after: u64) -> Subscription {
        Subscription {
            shared: Arc::clone(&self.handle.shared),
            after,
            buffered: Default::default(),
        }
    }

    /// Petitions awaiting a response, the longest due first (then by id), at most `limit`.
    pub fn awaiting_response(&self, limit: usize) -> Vec<PetitionInfo> {
        let now = self.shared().now_ms();
        let mut awaiting: Vec<(u64, Arc<Petition>)> = self
            .shared()
            .registry()
            .all()
            .into_iter()
            .filter_map(|p| Some((p.awaiting_since()?, p)))
            .collect();
        awaiting.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
        awaiting
            .into_iter()
            .take(limit)
            .map(|(_, p)| p.info(now))
            .collect()
    }

    /// How petitions stand with their responses now: awaiting, overdue, and the time each
    /// response took from the crossing of the response threshold.
    pub fn response_stats(&self) -> ResponseStats {
        let now = self.shared().now_ms();
        let mut stats = ResponseStats::default();
        for petition in self.shared().registry().all() {
            let tracking = petition.tracking();
            match (&tracking.due, &tracking.response) {
                (Some(due), None) => {
                    stats.awaiting += 1;
                    if now >= due.due_at_ms {
                        stats.overdue += 1;
                    }
                }
                (Some(due), Some(response)) => stats
                    .times_to_respond_ms
                    .push(response.at_ms.saturating_sub(due.reached_at_ms)),
                (None, _) => {}
            }
        }
        stats
    }

    /// Registers a webhook, or replaces the one of that name (keeping its cursor unless the
    /// spec gives one). Durable (synced) before it returns. Answers the webhook and whether it
    /// is new.
    pub fn put_webhook(&self, spec: WebhookSpec) -> Result<(Webhook, bool), WebhookError> {
        spec.check()?;
        let shared = self.shared();
        let _registering = shared.registering_lock();
        let existing = shared.webhooks().get(&spec.name).cloned();
        if existing.is_none() && shared.webhooks().len() >= WEBHOOKS_MAX {
            return Err(WebhookError::TooMany(WEBHOOKS_MAX));
        }
        let hook = Webhook {
            cursor: spec
                .after
                .or(existing.as_ref().map(|h| h.cursor))
                .unwrap_or_else(|| shared.last_event_seq()),
            created_at_ms: existing
                .as_ref()
                .map_or_else(|| shared.now_ms(), |h| h.created_at_ms),
            revision: shared.next_webhook_revision(),
            name: spec.name,
            url: spec.url,
            events: spec.events,
            secret: spec.secret,
        };
        self.change_webhook(WebhookChange::Put(hook.clone()))?;
        Ok((hook, existing.is_none()))
    }

    /// Deletes a webhook.
    pub fn delete_webhook(&self, name: &str) -> Result<(), WebhookError> {
        let shared = self.shared();
        let _registering = shared.registering_lock();
        if !shared.webhooks().contains_key(name) {
            return Err(WebhookError::UnknownWebhook);
        }
        self.change_webhook(WebhookChange::Delete(name.to_owned()))
    }

    /// The webhook named `name`.
    pub fn webhook(&self, name: &str) -> Option<Webhook> {
        self.shared().webhooks().get(name).cloned()
    }

    /// Every webhook, by name.
    pub fn webhooks(&self) -> Vec<Webhook> {
        self.shared().webhooks().values().cloned().collect()
    }

    /// Moves a webhook's cursor to `cursor` (the last event delivered or skipped), for the
    /// registration `revision` it was delivered under ([`Webhook::revision`]). A cursor behind
    /// the stored one, or for a revision since replaced, is ignored. Written without a sync:
    /// after a crash the events delivered since the last write reached the disk are delivered
    /// again.
    pub fn set_webhook_cursor(
        &self,
        name: &str,
        revision: u64,
        cursor: u64,
    ) -> Result<(), WebhookError> {
        if !self.shared().webhooks().contains_key(name) {
            return Err(WebhookError::UnknownWebhook);
        }
        self.change_webhook(WebhookChange::Cursor(name.to_owned(), revision, cursor))
    }

    fn change_webhook(&self, change: WebhookChange) -> Result<(), WebhookError> {
        let Some(sender) = &self.handle.sender else {
            let mut hooks = self.shared().webhooks();
            match change {
                WebhookChange::Put(hook) => {
                    hooks.insert(hook.name.clone(), hook);
                }
                WebhookChange::Delete(name) => {
                    hooks.remove(&name);
                }
                WebhookChange::Cursor(name, revision, cursor) => {
                    if let Some(hook) = hooks.get_mut(&name) {
                        if hook.revision == revision {
                            hook.cursor = hook.cursor.max(cursor);
                        }
                    }
                }
            }
            return Ok(());
        };
        match self.synced_change(sender, |reply| Job::Webhook(change, reply)) {
            Ok(()) => Ok(()),
            Err(Changed::StorageUnavailable) => Err(WebhookError::StorageUnavailable),
            Err(Changed::ShuttingDown) => Err(WebhookError::ShuttingDown),
        }
    }

    /// Sends the writer a change it answers once it is written (`job` makes the job around the
    /// reply channel), and waits for the answer.
    fn synced_change(
        &self,
        sender: &Sender<Job>,
        job: impl FnOnce(std::sync::mpsc::SyncSender<Result<(), StoreError>>) -> Job,
    ) -> Result<(), Changed> {
        if self.shared().is_closing() {
            return Err(Changed::ShuttingDown);
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        sender.send(job(reply)).map_err(|_| Changed::ShuttingDown)?;
        match answer.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Changed::StorageUnavailable),
            Err(_) => Err(Changed::ShuttingDown),
        }
    }

    /// Adds an entry to the block or allow list. Durable before it returns, and in effect for
    /// every signature admitted after.
    pub fn add_list_entry(&self, spec: EntrySpec) -> Result<ListEntry, GuardError> {
        let value = spec.normalized()?;
        let shared = self.shared();
        let _registering = shared.registering_lock();
        let guards = shared.guards();
        if let Some(id) = guards.find(spec.list, spec.kind, &value) {
            return Err(GuardError::Listed(id));
        }
        if guards.len() >= LIST_ENTRIES_MAX {
            return Err(GuardError::TooMany(LIST_ENTRIES_MAX));
        }
        let entry = ListEntry {
            id: guards.next_id(),
            list: spec.list,
            kind: spec.kind,
            value,
            added: Change {
                by: spec.by,
                at_ms: shared.now_ms(),
            },
        };
        self.change_guard(GuardChange::Add(entry.clone()))?;
        Ok(entry)
    }

    /// Takes entry `id` off its list; answers the entry. Durable before it returns.
    pub fn remove_list_entry(&self, id: u64) -> Result<ListEntry, GuardError> {
        let shared = self.shared();
        let _registering = shared.registering_lock();
        let entry = shared.guards().entry(id).ok_or(GuardError::UnknownEntry)?;
        self.change_guard(GuardChange::Remove(id))?;
        Ok(entry)
    }

    /// The entries of `list`, by id.
    pub fn list_entries(&self, list: ListName) -> Vec<ListEntry> {
        self.shared().guards().entries(list)
    }

    /// The list entry numbered `id`.
    pub fn list_entry(&self, id: u64) -> Option<ListEntry> {
        self.shared().guards().entry(id)
    }

    /// Whether `ip` is on the allow list.
    pub fn is_allowed(&self, ip: std::net::IpAddr) -> bool {
        self.shared().guards().allows(ip)
    }

    /// The limits of signatures per (petition, address), if any.
    pub fn rate_limits(&self) -> Option<RateLimits> {
        self.shared().limiter().map(|l| l.limits())
    }

    /// How trending sources are tracked, if they are.
    pub fn sources_config(&self) -> Option<SourcesConfig> {
        self.shared().sources().map(|s| s.config())
    }

    /// The `limit` top addresses, networks and email domains of each kind signing petition
    /// `id` in the clock hour `hour` (the current one so far, or the one before), highest
    /// first, each with its error bound (see [`crate::SourceCount`]).
    pub fn sources(
        &self,
        id: &str,
        hour: SourceHour,
        limit: usize,
    ) -> Result<TopSources, SourcesError> {
        let shared = self.shared();
        let sources = shared.sources().ok_or(SourcesError::Off)?;
        let petition = shared
            .registry()
            .get(id)
            .ok_or(SourcesError::UnknownPetition)?;
        Ok(sources.top(&petition, hour, limit, shared.now_ms()))
    }

    /// The engine-wide switches.
    pub fn switches(&self) -> Switches {
        self.shared().guards().switches()
    }

    /// Sets the engine-wide switches: `paused` stops new signatures, `read_only` every change
    /// (see [`Switches`]). Durable before it returns, and in effect for every call after.
    pub fn set_switches(
        &self,
        paused: bool,
        read_only: bool,
        by: &str,
    ) -> Result<Switches, GuardError> {
        check_by(by)?;
        let shared = self.shared();
        let _registering = shared.registering_lock();
        let switches = Switches {
            paused,
            read_only,
            changed: Some(Change {
                by: by.to_owned(),
                at_ms: shared.now_ms(),
            }),
        };
        self.change_guard(GuardChange::Switches(switches.clone()))?;
        Ok(switches)
    }

    /// Pauses signing on petition `id`: it refuses new signatures (`SigningPaused`) until
    /// resumed; its pending signatures can still be validated, and it can still be read,
    /// closed or invalidated. Durable before it returns. Pausing a paused petition keeps who
    /// paused it first.
    pub fn pause_petition(&self, id: &str, by: &str) -> Result<PetitionInfo, GuardError> {
        check_by(by)?;
        let shared = self.shared();
        let _registering = shared.registering_lock();
        let petition = shared
            .registry()
            .get(id)
            .ok_or(GuardError::UnknownPetition)?;
        if !petition.is_paused() {
            let change = Change {
                by: by.to_owned(),
                at_ms: shared.now_ms(),
            };
            self.change_guard(GuardChange::Pause(petition.num, Some(change)))?;
        }
        Ok(petition.info(shared.now_ms()))
    }

    /// Resumes signing on petition `id`. Durable before it returns.
    pub fn resume_petition(&self, id: &str) -> Result<PetitionInfo, GuardError> {
        let shared = self.shared();
        let _registering = shared.registering_lock();
        let petition = shared
            .registry()
            .get(id)
            .ok_or(GuardError::UnknownPetition)?;
        if petition.is_paused() {
            self.change_guard(GuardChange::Pause(petition.num, None))?;
        }
        Ok(petition.info(shared.now_ms()))
    }

    fn change_guard(&self, change: GuardChange) -> Result<(), GuardError> {
        let Some(sender) = &self.handle.sender else {
            guard::apply(self.shared(), change);
            return Ok(());
        };
        match self.synced_change(sender, |reply| Job::Guard(change, reply)) {
            Ok(()) => Ok(()),
            Err(Changed::StorageUnavailable) => Err(GuardError::StorageUnavailable),
            Err(Changed::ShuttingDown) => Err(GuardError::ShuttingDown),
        }
    }

    /// Counters, sizes and the recovery state.
    pub fn stats(&self) -> Stats {
        self.shared().stats(self.handle.sender.is_some())
    }

    /// Waits until everything acknowledged so far is synced (it already is at `sync`
    /// durability; this matters for `buffered` and `none`).
    pub fn flush(&self) -> Result<(), FlushError> {
        let Some(sender) = &self.handle.sender else {
            return Ok(());
        };
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        sender
            .send(Job::Flush(reply))
            .map_err(|_| FlushError::ShutDown)?;
        match answer.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(FlushError::StorageUnavailable),
            Err(_) => Err(FlushError::ShutDown),
        }
    }

    /// Writes a checkpoint of the store into `dir` (a new directory on the store's filesystem):
    /// a whole store, sharing the store's files by hard link, that an engine or a
    /// [`crate::Follower`] opens like any other. Returns the replicated log's position it holds
    /// (0 without a log): a follower opened on it goes on from the entry after. Writes go on
    /// meanwhile; the checkpoint holds those made before it.
    pub fn checkpoint(&self, dir: &std::path::Path) -> Result<u64, StoreError> {
        if self.shared().config().storage == Storage::Memory {
            return Err(StoreError::InMemory);
        }
        let store = self.shared().store().ok_or(StoreError::Failing)?;
        store.checkpoint(dir)
    }

    /// Stops taking signatures, answers everything queued, flushes and closes the store.
    /// Other handles then get [`SubmitError::ShuttingDown`]. Closing twice is a no-op.
    pub fn close(&self) -> Result<(), FlushError> {
        close(&self.handle)
    }

    /// Reads the whole store and checks it against itself and memory: every stored signer once
    /// per petition, every count equal to its stored signers, fingerprints matching records.
    /// Costs a full scan; for tests and operators' checks.
    pub fn verify_store(&self) -> Result<VerifyReport, VerifyError> {
        let Some(sender) = &self.handle.sender else {
            return crate::verify::verify_memory(self.shared());
        };
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        sender
            .send(Job::Verify(reply))
            .map_err(|_| VerifyError::ShutDown)?;
        answer.recv().map_err(|_| VerifyError::ShutDown)?
    }
}

fn single(mut results: Vec<Result<Outcome, SubmitError>>) -> Result<Outcome, SubmitError> {
    results.pop().unwrap_or(Err(SubmitError::ShuttingDown))
}

fn finish(
    mut results: Vec<Result<Outcome, SubmitError>>,
    answers: Option<Answers>,
) -> Vec<Result<Outcome, SubmitError>> {
    if let Some(answers) = answers {
        for (index, answer) in answers {
            results[index] = answer;
        }
    }
    results
}

/// Signatures a preview reads per pass.
const PREVIEW_STEP: usize = 65_536;

/// How often the lifecycle thread looks again while the engine is not ready or its store is
/// failing.
const NOT_READY_POLL: Duration = Duration::from_millis(50);

/// The lifecycle thread: sweeps expired pending signatures every `sweep_interval`, and runs
/// the running invalidation jobs one step each in turn, until the engine closes.
fn run_background(shared: &Shared, sender: &Sender<Job>, wake: &Background) {
    let interval = shared.config().sweep_interval;
    let mut next_sweep = Instant::now();
    // Each running job's petition runs, read once (by its first step here).
    let mut runs: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
    loop {
        let busy = !shared.jobs().running().is_empty();
        {
            let mut stop = wake.stop.lock();
            if *stop {
                return;
            }
            if !busy {
                let until = interval.map_or(Duration::from_secs(3600), |i| {
                    next_sweep.saturating_duration_since(Instant::now()).min(i)
                });
                wake.wake.wait_for(&mut stop, until);
                if *stop {
                    return;
                }
            }
        }
        if !shared.is_ready() || !shared.health().is_healthy() {
            // Nothing to do until the index is rebuilt or the store is back. (Going straight
            // round again spun on the clock, taking a core from the rebuild.)
            let mut stop = wake.stop.lock();
            if !*stop {
                wake.wake.wait_for(&mut stop, NOT_READY_POLL);
            }
            continue;
        }
        if let Some(interval) = interval {
            if Instant::now() >= next_sweep {
                // Bounded: a backlog is worked off over several ticks, between job steps.
                for _ in 0..16 {
                    let (reply, answer) = std::sync::mpsc::sync_channel(1);
                    if sender.send(Job::Sweep(reply)).is_err() {
                        return;
                    }
                    match answer.recv() {
                        Ok(Ok((_, true))) => continue,
                        Ok(_) => break,
                        Err(_) => return,
                    }
                }
                // A deadline passed is recorded once per deadline (the registering lock keeps
                // this and an administrator's close from both recording a close).
                let engine_gone = matches!(
                    record_deadlines(shared, Some(sender)),
                    Err(PetitionError::ShuttingDown)
                );
                if engine_gone {
                    return;
                }
                if let Some(sources) = shared.sources() {
                    sources.sweep(shared.now_ms());
                }
                next_sweep = Instant::now() + interval;
            }
        }
        let running = shared.jobs().running();
        runs.retain(|id, _| running.iter().any(|r| r.job.id == *id));
        for record in running {
            if !run_step(shared, sender, &record, &mut runs) {
                return;
            }
        }
    }
}

/// How often the index saving thread looks at how many signatures were stored since the last
/// index saved.
const INDEX_SNAPSHOT_CHECK: Duration = Duration::from_millis(100);

/// The index saving thread: once `index_snapshot_signatures` more signatures are durable in
/// the index than at the mark of the last index saved (or loaded), saves it beside the store
/// (`index_file`) while signatures go on being admitted, until the engine closes.
///
/// The mark is taken before the copy starts: every signature below it is committed in the
/// index by then. A save is dropped if the store failed meanwhile (a recovery changes the
/// index in ways the mark does not cover) or the engine is closing.
fn run_index_snapshots(shared: &Shared, wake: &Background) {
    let every = shared.config().index_snapshot_signatures;
    // After a save that failed (a full disk), the next waits for as many signatures again.
    let mut failed_at = 0;
    loop {
        {
            let mut stop = wake.stop.lock();
            if !*stop {
                wake.wake.wait_for(&mut stop, INDEX_SNAPSHOT_CHECK);
            }
            if *stop {
                return;
            }
        }
        let healthy = || shared.health().is_healthy() && !shared.is_closing();
        if !shared.is_ready() || !healthy() {
            continue;
        }
        let from = shared.indexed();
        let last = shared.index_saved_from().unwrap_or(0).max(failed_at);
        if from.saturating_sub(last) < every {
            continue;
        }
        let Some(store) = shared.store() else {
            continue;
        };
        let errors = shared.health().errors_total();
        let Ok(sample) = crate::index_file::sample(&store, from) else {
            continue;
        };
        let path = store.path().to_owned();
        // The store's handle is not kept over the copy: a recovery may reopen it.
        drop(store);
        let stop = || !healthy() || shared.health().errors_total() != errors;
        let saved = crate::index_file::save(
            &path,
            shared.index(),
            from,
            sample,
            || shared.indexed(),
            &stop,
            crate::index_file::Pace::Shared,
        );
        match saved {
            Ok(true) => shared.index_saved(from),
            Ok(false) => {}
            Err(_) => failed_at = from,
        }
    }
}

/// Memory mode's background thread: records the closes of deadlines passed every `interval`.
fn run_deadlines(shared: &Shared, wake: &Background, interval: Duration) {
    loop {
        {
            let mut stop = wake.stop.lock();
            if *stop {
                return;
            }
            wake.wake.wait_for(&mut stop, interval);
            if *stop {
                return;
            }
        }
        if let Err(PetitionError::ShuttingDown) = record_deadlines(shared, None) {
            return;
        }
        if let Some(sources) = shared.sources() {
            sources.sweep(shared.now_ms());
        }
    }
}

/// See [`Engine::record_deadlines`].
fn record_deadlines(shared: &Shared, sender: Option<&Sender<Job>>) -> Result<u64, PetitionError> {
    if shared.is_closing() {
        return Err(PetitionError::ShuttingDown);
    }
    let _registering = shared.registering_lock();
    let now = shared.now_ms();
    let due: Vec<NewEvent> = shared
        .registry()
        .all()
        .into_iter()
        .filter_map(|p| {
            let deadline = p.deadline_passed(now)?;
            (p.deadline_closed() != Some(deadline)).then_some(NewEvent {
                petition: p.num,
                at_ms: deadline,
                data: EventData::PetitionClosed {
                    reason: CloseReason::Deadline,
                },
            })
        })
        .collect();
    let mut recorded = 0;
    for chunk in due.chunks(1024) {
        persist_petitions(shared, sender, Vec::new(), chunk.to_vec())?;
        recorded += chunk.len() as u64;
    }
    Ok(recorded)
}

/// Persists petitions' metas and the events their change makes (through the writer, synced),
/// or in memory mode applies and publishes them.
fn persist_petitions(
    shared: &Shared,
    sender: Option<&Sender<Job>>,
    petitions: Vec<(u32, PetitionMeta)>,
    events: Vec<NewEvent>,
) -> Result<(), PetitionError> {
    let Some(sender) = sender else {
        for (num, meta) in petitions {
            if let Some(petition) = shared.registry().by_num(num) {
                petition.set_meta(meta);
            }
        }
        for new in events {
            if let Some(petition) = shared.registry().by_num(new.petition) {
                shared.publish_memory_events(&petition, new.at_ms, vec![new.data]);
            }
        }
        return Ok(());
    };
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    sender
        .send(Job::Petitions(petitions, events, reply))
        .map_err(|_| PetitionError::ShuttingDown)?;
    match answer.recv() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(PetitionError::StorageUnavailable),
        Err(_) => Err(PetitionError::ShuttingDown),
    }
}

/// Scans one step of a job and hands it to the writer. Returns false once the writer is gone.
fn run_step(
    shared: &Shared,
    sender: &Sender<Job>,
    record: &JobRecord,
    runs: &mut HashMap<u64, Vec<(u64, u64)>>,
) -> bool {
    let id = record.job.id;
    let matcher = match record.job.criteria.compile() {
        Ok(matcher) => matcher,
        Err(e) => {
            return sender
                .send(Job::JobChange(JobChange::Fail(id, e.to_string())))
                .is_ok()
        }
    };
    let Some(store) = shared.store() else {
        // The writer is recovering the store.
        std::thread::sleep(Duration::from_millis(50));
        return true;
    };
    if let (Some(petition), false) = (record.petition_num, runs.contains_key(&id)) {
        match store.petition_runs(petition, record.upto) {
            Ok(found) => {
                runs.insert(id, found);
            }
            Err(e @ StoreError::Corrupt { .. }) => {
                return sender
                    .send(Job::JobChange(JobChange::Fail(id, e.to_string())))
                    .is_ok()
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                return true;
            }
        }
    }
    let scope = Scope {
        runs: record.petition_num.and(runs.get(&id).map(Vec::as_slice)),
        matcher: &matcher,
        upto: record.upto,
    };
    let scanned = invalidation::scan(
        &store,
        shared.states(),
        shared.regions(),
        &scope,
        record.cursor,
        shared.config().invalidation_step,
    );
    drop(store);
    let mut step = match scanned {
        Ok(step) => step,
        Err(e @ StoreError::Corrupt { .. }) => {
            return sender
                .send(Job::JobChange(JobChange::Fail(id, e.to_string())))
                .is_ok()
        }
        Err(_) => {
            std::thread::sleep(Duration::from_millis(50));
            return true;
        }
    };
    step.job = id;
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    if sender.send(Job::Invalidate(step, reply)).is_err() {
        return false;
    }
    if let Ok(Err(_)) = answer.recv() {
        // A failed write: the writer recovers the store; the step is scanned again.
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

pub(crate) fn check_config(config: &Config) -> Result<(), OpenError> {
    if config.index_shard_bits > 20 {
        return Err(OpenError::Config("index_shard_bits must be at most 20"));
    }
    if config.batch_signatures_max == 0 || config.queue_signatures_max == 0 {
        return Err(OpenError::Config(
            "batch_signatures_max and queue_signatures_max must be positive",
        ));
    }
    if config.lifecycle_step == 0
        || config.invalidation_step == 0
        || config.invalidation_jobs_max == 0
    {
        return Err(OpenError::Config(
            "lifecycle_step, invalidation_step and invalidation_jobs_max must be positive",
        ));
    }
    if config.pending_grace.is_zero() {
        return Err(OpenError::Config("pending_grace must be positive"));
    }
    if let Some(limits) = config.rate_limits {
        limits.check().map_err(OpenError::Config)?;
    }
    if let Some(sources) = config.sources {
        sources.check().map_err(OpenError::Config)?;
    }
    Ok(())
}

/// Opens the store of a persistent configuration (or takes the one `opened` already, a
/// follower's), with its `meta` (written on a new store).
fn open_store(config: &Config, opened: Option<Store>) -> Result<Option<(Store, Meta)>, OpenError> {
    let Storage::Directory(path) = &config.storage else {
        return Ok(None);
    };
    let store = match opened {
        Some(store) => store,
        None => {
            std::fs::create_dir_all(path).map_err(|error| OpenError::Io {
                what: "create the data directory",
                error,
            })?;
            Store::open(path)?
        }
    };
    if let Some(replication) = &config.replication {
        store.attach_log(Arc::clone(&replication.0));
    }
    let fresh = Meta {
        secret: *Fingerprinter::random().secret(),
        policy: config.signer_policy,
        rules: SIGNER_RULES,
        format: FORMAT_VERSION,
    };
    let meta = store.load_or_init_meta(&fresh)?;
    if meta.policy != config.signer_policy {
        return Err(OpenError::PolicyMismatch {
            stored: meta.policy,
            configured: config.signer_policy,
        });
    }
    if meta.rules != SIGNER_RULES || meta.format != FORMAT_VERSION {
        upgrade(&store, meta.rules, meta.format)?;
    }
    Ok(Some((store, meta)))
}

/// Brings a store of an older format to the current one, once, from one scan of its records:
/// it writes the petition index (format 2 and older wrote none), and checks the signer rules.
/// These changed only for emails that are not all ASCII, so a store of older rules without any
/// is upgraded as it is. One with some is refused: their stored fingerprints may differ from
/// what this build derives, which would let such a signer sign twice.
/// A store of format 3 or 4 has its petition index and current rules. Every older store gets
/// its counts by place and history from one more scan of its records (`Store::write_places`).
fn upgrade(store: &Store, stored_rules: u8, stored_format: u8) -> Result<(), OpenError> {
    let refused = |non_ascii| OpenError::SignerRules {
        stored: stored_rules,
        current: SIGNER_RULES,
        non_ascii,
    };
    if stored_rules > SIGNER_RULES {
        return Err(refused(0));
    }
    if stored_format >= FORMAT_VERSION_3 && stored_rules == SIGNER_RULES {
        // Formats 3 and 4 have the petition index and the current rules: they lack only the
        // counts by place and the history.
        store.write_places()?;
        store.set_current_format()?;
        return Ok(());
    }
    let non_ascii = store.write_petition_index()?;
    if stored_rules != SIGNER_RULES && non_ascii > 0 {
        return Err(refused(non_ascii));
    }
    store.write_places()?;
    store.set_current_format()?;
    Ok(())
}

/// Loads petitions, counts, events (which give each petition its thresholds reached and its
/// response tracking) and webhooks, and sizes the index for the signers stored. They are
/// small: loaded now so counts are served at once; the index (16 bytes a signature) is rebuilt
/// by the writer thread (or taken from a follower or the file saved at the last clean close).
/// Returns the next event sequence.
fn load_registry(shared: &Shared, store: &Store) -> Result<u64, OpenError> {
    let mut petitions = store.load_petitions()?;
    petitions.sort_by_key(|(num, _)| *num);
    let counts: HashMap<u32, Counts> = store.load_counts()?.into_iter().collect();
    for (expected, (num, meta)) in petitions.into_iter().enumerate() {
        if num as usize != expected {
            return Err(OpenError::Store(StoreError::Corrupt {
                what: "petition numbers (not dense)",
            }));
        }
        let count = counts.get(&num).copied().unwrap_or_default();
        shared
            .registry()
            .insert(Arc::new(Petition::new(num, meta, count)));
    }
    let mut next_event_seq = 1;
    loop {
        let stored = store.load_events(next_event_seq, 65_536)?;
        let Some((last, _)) = stored.last() else {
            break;
        };
        next_event_seq = last + 1;
        shared.publish_events(event::named(stored, |num| {
            shared.registry().by_num(num).map(|p| p.id.to_string())
        })?);
    }
    let mut webhooks = shared.webhooks();
    for hook in store.load_webhooks()? {
        shared.webhook_revisions_from(hook.revision);
        webhooks.insert(hook.name.clone(), hook);
    }
    drop(webhooks);
    let guards = store.load_guards()?;
    shared
        .guards()
        .load(guards.entries, guards.switches, guards.last_id);
    for (num, by) in guards.paused {
        if let Some(petition) = shared.registry().by_num(num) {
            petition.set_paused(Some(by));
        }
    }
    for (_, bytes) in store.load_jobs()? {
        shared.jobs().insert(JobRecord::decode(&bytes)?);
    }
    shared.load_places(store, true, None)?;
    let stored: u64 = counts.values().map(Counts::held).sum();
    // The index is sized for them where it is rebuilt (a saved one is read at its own size).
    shared.expect_recovered(stored);
    Ok(next_event_seq)
}

/// Why a change sent to the writer did not happen.
enum Changed {
    StorageUnavailable,
    ShuttingDown,
}

/// A registration to persist: the petition's number, its new meta, and the petition if it exists.
type Planned = (u32, PetitionMeta, Option<Arc<Petition>>);

/// Decides what each spec of `register_many` changes (under the registering lock): one answer
/// per spec, and one change per distinct valid id.
fn plan_registrations(
    shared: &Shared,
    specs: Vec<PetitionSpec>,
) -> (Vec<Result<Registered, PetitionError>>, Vec<Planned>) {
    let now = shared.now_ms();
    let memory = shared.config().storage == Storage::Memory;
    let mut results = Vec::with_capacity(specs.len());
    // (number, meta, existing petition) per change, and where each new id went.
    let mut planned: Vec<Planned> = Vec::new();
    let mut planned_by_id: HashMap<String, usize> = HashMap::new();
    let mut next_num = shared.registry().next_num();
    for spec in specs {
        let thresholds = match spec.checked_thresholds() {
            Ok(thresholds) => thresholds,
            Err(e) => {
                results.push(Err(e.into()));
                continue;
            }
        };
        if memory && spec.validation == Some(Validation::Email) {
            results.push(Err(PetitionError::Unsupported));
            continue;
        }
        if let Some(&at) = planned_by_id.get(&spec.id) {
            spec.apply(&mut planned[at].1, thresholds);
            results.push(Ok(Registered::Updated));
            continue;
        }
        match shared.registry().get(&spec.id) {
            Some(petition) => {
                let mut meta = petition.meta();
                spec.apply(&mut meta, thresholds);
                planned_by_id.insert(spec.id, planned.len());
                planned.push((petition.num, meta, Some(petition)));
                results.push(Ok(Registered::Updated));
            }
            None => {
                if next_num == u32::MAX {
                    results.push(Err(PetitionError::TooMany));
                    continue;
                }
                let mut meta = PetitionMeta {
                    id: spec.id.clone(),
                    created_at_ms: now,
                    deadline_ms: None,
                    closed_at_ms: None,
                    thresholds: DEFAULT_THRESHOLDS.to_vec(),
                    validation: Validation::default(),
                    response_threshold: None,
                    response_due_days: RESPONSE_DUE_DAYS_DEFAULT,
                };
                spec.apply(&mut meta, thresholds);
                planned_by_id.insert(spec.id, planned.len());
                planned.push((next_num, meta, None));
                next_num += 1;
                results.push(Ok(Registered::Created));
            }
        }
    }
    (results, planned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewSignature, PetitionSpec, SignerPolicy};

    /// A persistent engine in `dir` with one petition and these signers, closed again; then
    /// its store made to look written before the signer rules were recorded.
    fn old_store(dir: &std::path::Path, emails: &[&str]) {
        let engine = Engine::open(Config::persistent(dir)).expect("opens");
        engine.wait_ready().expect("ready");
        engine.register(PetitionSpec::new("p")).expect("registers");
        for email in emails {
            let outcome = engine.submit(NewSignature::new("p", *email));
            assert!(
                matches!(outcome, Ok(Outcome::Accepted { .. })),
                "{outcome:?}"
            );
        }
        engine.close().expect("closes");
        drop(engine);
        let store = Store::open(dir).expect("store opens");
        store.forget_signer_rules().expect("forgets");
    }

    #[test]
    fn an_old_store_of_ascii_signers_is_upgraded_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        old_store(dir.path(), &["ada@example.org", "bob@example.org"]);
        let engine = Engine::open(Config::persistent(dir.path())).expect("upgraded");
        engine.wait_ready().expect("ready");
        assert_eq!(engine.count("p"), Some(2));
        let again = engine.submit(NewSignature::new("p", "ADA@example.org"));
        assert!(
            matches!(again, Ok(Outcome::Duplicate { count: 2 })),
            "{again:?}"
        );
        engine.close().expect("closes");
        drop(engine);
        let store = Store::open(dir.path()).expect("store opens");
        let fresh = Meta {
            secret: [0; SECRET_BYTES],
            policy: SignerPolicy::default(),
            rules: SIGNER_RULES,
            format: FORMAT_VERSION,
        };
        let meta = store.load_or_init_meta(&fresh).expect("meta");
        assert_eq!(meta.rules, SIGNER_RULES, "the upgrade is recorded");
        assert_eq!(
            store.format_version().expect("reads"),
            Some(vec![crate::store::FORMAT_VERSION]),
            "with the format version older builds refuse"
        );
    }

    #[test]
    fn tokens_and_pending_signers_from_before_places_count_the_recorded_place() {
        use crate::token::Named;
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Engine::open(Config::persistent(dir.path())).expect("opens");
        engine.wait_ready().expect("ready");
        let mut spec = PetitionSpec::new("e");
        spec.validation = Some(crate::Validation::Email);
        engine.register(spec).expect("registers");
        let placed = |email: &str, country: &str, region: &str| {
            let mut s = NewSignature::new("e", email);
            s.country = Some(country.into());
            s.region = Some(region.into());
            s
        };
        let pending = |outcome: Result<Outcome, SubmitError>| match outcome {
            Ok(Outcome::Pending { token }) => token,
            other => panic!("pending: {other:?}"),
        };
        let a = pending(engine.submit(placed("a@x.example", "GB", "E1")));
        let b = pending(engine.submit(placed("b@x.example", "FR", "F2")));
        // `a`'s token as a build before places issued it (version 1, no place).
        let named = engine
            .shared()
            .tokens()
            .check(a.text().as_str())
            .expect("genuine");
        assert!(named.place.is_some(), "a version 2 token carries the place");
        let v1 = engine.shared().tokens().issue(Named {
            place: None,
            ..named
        });
        assert_ne!(v1, a);
        // `b`'s pending signer entry as a build before places wrote it (17 bytes).
        let store = engine.shared().store().expect("open");
        let fp = engine
            .shared()
            .fingerprinter()
            .fingerprint(named.petition, "b@x.example");
        let signer = store.pending_signers(&[fp]).expect("reads")[0].expect("pending");
        let old = crate::lifecycle::PendingSigner {
            place: None,
            ..signer
        };
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(
            store.cf(crate::store::CF_PENDING_SIGNERS),
            fp.to_bytes(),
            old.encode(),
        );
        store.write(batch, crate::Durability::Sync).expect("writes");
        drop(store);
        // Signing again from elsewhere gives back the same token, whose place is the first one.
        let again = pending(engine.submit(placed("b@x.example", "DE", "D9")));
        assert_eq!(again, b, "the same token back");
        assert_eq!(
            engine.validate(v1.text().as_str()),
            Ok(Outcome::Validated { count: 1 })
        );
        assert_eq!(
            engine.validate(b.text().as_str()),
            Ok(Outcome::Validated { count: 2 })
        );
        let mut regions: Vec<(String, String)> = engine
            .regions("e", None)
            .expect("valid")
            .expect("registered")
            .into_iter()
            .map(|r| (r.country, r.region))
            .collect();
        regions.sort();
        assert_eq!(
            regions,
            vec![("FR".into(), "F2".into()), ("GB".into(), "E1".into())]
        );
        engine.verify_store().expect("consistent");
        engine.close().expect("closes");
    }

    #[test]
    fn a_format_4_store_gets_its_counts_by_country_at_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Engine::open(Config::persistent(dir.path())).expect("opens");
        engine.wait_ready().expect("ready");
        engine.register(PetitionSpec::new("p")).expect("registers");
        let mut by_email = PetitionSpec::new("e");
        by_email.validation = Some(crate::Validation::Email);
        engine.register(by_email).expect("registers");
        let countries = [Some("GB"), Some("FR"), None];
        let signature = |petition: &str, i: usize| {
            let mut s = NewSignature::new(petition, format!("s{i}@x.example"));
            s.country = countries[i % 3].map(str::to_owned);
            s
        };
        let batch = (0..30).map(|i| signature("p", i)).collect();
        assert!(engine.submit_batch(batch).iter().all(|o| o.is_ok()));
        // Of the email petition's, validate every other one: only those count.
        let pending = engine.submit_batch((0..6).map(|i| signature("e", i)).collect());
        for (i, outcome) in pending.into_iter().enumerate() {
            let Ok(Outcome::Pending { token }) = outcome else {
                panic!("pending: {outcome:?}");
            };
            if i % 2 == 0 {
                engine.validate(token.text().as_str()).expect("validates");
            }
        }
        let before = (engine.countries("p"), engine.countries("e"));
        assert_eq!(before.1.as_ref().map(|(count, _)| *count), Some(3));
        engine.close().expect("closes");
        drop(engine);
        Store::open(dir.path())
            .expect("store opens")
            .make_format_4()
            .expect("made old");
        let engine = Engine::open(Config::persistent(dir.path())).expect("upgraded");
        engine.wait_ready().expect("ready");
        assert_eq!((engine.countries("p"), engine.countries("e")), before);
        let hours: i64 = engine
            .history("p", crate::Resolution::Hour)
            .expect("registered")
            .iter()
            .map(|b| b.count)
            .sum();
        assert_eq!(hours, 30, "the history from the records' times");
        engine.verify_store().expect("consistent");
        engine.close().expect("closes");
    }

    #[test]
    fn a_format_2_store_gets_its_petition_index_at_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Engine::open(Config::persistent(dir.path())).expect("opens");
        engine.wait_ready().expect("ready");
        let mut spec = PetitionSpec::new("p");
        spec.thresholds = Some(vec![2]);
        engine.register(spec).expect("registers");
        engine.register(PetitionSpec::new("q")).expect("registers");
        // Enough signers to span several 65,536-sequence chunks of the rebuilt index.
        let batch = (0..140_000u32)
            .map(|i| {
                let petition = if i % 3 == 0 { "p" } else { "q" };
                NewSignature::new(petition, format!("s{i}@{}.example", i % 2))
            })
            .collect();
        assert!(engine.submit_batch(batch).iter().all(|o| o.is_ok()));
        engine.close().expect("closes");
        drop(engine);
        Store::open(dir.path())
            .expect("store opens")
            .make_format_2()
            .expect("made old");

        let engine = Engine::open(Config::persistent(dir.path())).expect("upgraded");
        engine.wait_ready().expect("ready");
        let p = engine.petition("p").expect("kept");
        assert_eq!((p.count, p.pending_count), (46_667, 0));
        assert_eq!(p.milestones_reached, [2]);
        let request = InvalidationRequest {
            petition: Some("p".into()),
            criteria: crate::Criteria {
                email_domain: Some("1.example".into()),
                ..crate::Criteria::default()
            },
        };
        // Signers i ≡ 0 (mod 3) and odd: i ≡ 3 (mod 6).
        assert_eq!(engine.preview_invalidation(&request), Ok(23_333));
        engine.verify_store().expect("consistent");
        engine.close().expect("closes");
        drop(engine);
        let store = Store::open(dir.path()).expect("store opens");
        assert_eq!(
            store.format_version().expect("reads"),
            Some(vec![FORMAT_VERSION])
        );
    }

    #[test]
    fn a_clean_close_merges_the_breakdowns_operands_and_they_read_the_same() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Engine::open(Config::persistent(dir.path())).expect("opens");
        engine.wait_ready().expect("ready");
        engine.register(PetitionSpec::new("p")).expect("registers");
        // Three flushes: three level-0 files, each with an operand of the petition's breakdown.
        for round in 0..3 {
            for i in 0..10 {
                let mut s = NewSignature::new("p", format!("s{round}-{i}@x.example"));
                s.country = Some(if i % 2 == 0 { "GB" } else { "FR" }.into());
                assert!(matches!(engine.submit(s), Ok(Outcome::Accepted { .. })));
            }
            let store = engine.shared().store().expect("open");
            store.flush(true).expect("flushes");
        }
        let store = engine.shared().store().expect("open");
        assert_eq!(store.breakdown_level0_files(), 3);
        drop(store);
        let before = engine.countries("p").expect("known");
        engine.close().expect("closes");
        drop(engine);
        let store = Store::open(dir.path()).expect("store opens");
        assert_eq!(store.breakdown_level0_files(), 0, "merged by the close");
        drop(store);
        let engine = Engine::open(Config::persistent(dir.path())).expect("opens");
        engine.wait_ready().expect("ready");
        assert_eq!(engine.countries("p").expect("known"), before);
        assert_eq!(before.0, 30);
        engine.verify_store().expect("consistent");
    }

    #[test]
    fn a_new_store_has_the_format_version_older_builds_refuse() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Engine::open(Config::persistent(dir.path())).expect("opens");
        engine.close().expect("closes");
        drop(engine);
        let store = Store::open(dir.path()).expect("store opens");
        // Builds from before the lifecycle accept only format versions 1 and 2.
        assert_eq!(
            store.format_version().expect("reads"),
            Some(vec![FORMAT_VERSION])
        );
    }

    #[test]
    fn an_old_store_with_non_ascii_signers_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        old_store(dir.path(), &["ada@example.org", "rené@example.org"]);
        match Engine::open(Config::persistent(dir.path())) {
            Err(OpenError::SignerRules {
                stored: 1,
                current: SIGNER_RULES,
                non_ascii: 1,
            }) => {}
            other => panic!("expected SignerRules, got {:?}", other.map(|_| ())),
        }
    }
}
