//! [`Engine`]: the public handle, admission (validate → petition → fingerprint → index), and the
//! state every part shares.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};

use crate::config::{Config, Storage};
use crate::error::{FlushError, OpenError, PetitionError, StoreError, SubmitError};
use crate::fingerprint::{Fingerprint, Fingerprinter, SECRET_BYTES};
use crate::index::{Index, Insert, Presence};
use crate::petition::{
    Milestone, Petition, PetitionInfo, PetitionMeta, PetitionSpec, Registry, DEFAULT_THRESHOLDS,
};
use crate::signature::{self, AsSignatureRef, NewSignature};
use crate::stats::{LatencyHistogram, Stats};
use crate::store::{Meta, Store};
use crate::verify::VerifyReport;
use crate::writer::{Answers, Item, Job, SignJob, Writer};

/// The answer to one signature that the engine took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new signer: counted and durable. `count` is the petition's count including this one
    /// (this signer's ordinal).
    Accepted {
        /// The petition's count with this signature.
        count: u64,
    },
    /// This signer had already signed this petition. `count` is the petition's current count.
    Duplicate {
        /// The petition's count now.
        count: u64,
    },
}

impl Outcome {
    /// The petition's count carried by the outcome.
    pub fn count(self) -> u64 {
        match self {
            Outcome::Accepted { count } | Outcome::Duplicate { count } => count,
        }
    }
}

/// Whether a registration created a petition or updated one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// The petition is new.
    Created,
    /// The petition existed; its deadline and thresholds were updated.
    Updated,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where the answers of a submission go: a blocking caller waits on a std channel, an async
/// caller awaits a tokio oneshot (which needs no runtime to send).
pub(crate) enum Reply {
    Blocking(std::sync::mpsc::SyncSender<Answers>),
    Async(tokio::sync::oneshot::Sender<Answers>),
}

impl Reply {
    pub fn send(self, answers: Answers) {
        // A caller that gave up (dropped its future) no longer needs the answers.
        match self {
            Reply::Blocking(sender) => {
                let _ = sender.send(answers);
            }
            Reply::Async(sender) => {
                let _ = sender.send(answers);
            }
        }
    }
}

/// How many inserts ahead admission prefetches the index: enough to overlap several DRAM misses,
/// few enough that the prefetched lines are still in L1 when their insert comes.
pub(crate) const PREFETCH_DISTANCE: usize = 16;

/// One petition named in a call to `admit`.
struct Slot {
    petition: Arc<Petition>,
    /// Whether it took signatures when the call began.
    open: bool,
    /// Signers accepted in this call (memory mode).
    accepted: u64,
}

/// One signature of a call that passed validation: where it goes in the index and the answers.
#[derive(Clone, Copy)]
struct Claim {
    index: usize,
    slot: u32,
    fp: Fingerprint,
    inserted: bool,
}

/// Hashes the engine's own dense petition numbers (not caller input) for the per-call slot map.
#[derive(Default)]
struct NumberHasher(u64);

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

enum Waiting {
    Blocking(std::sync::mpsc::Receiver<Answers>),
    Async(tokio::sync::oneshot::Receiver<Answers>),
}

#[derive(Default)]
struct Readiness {
    ready: bool,
    error: Option<String>,
}

/// State shared by the handles, the writer and recovery.
pub(crate) struct Shared {
    pub config: Config,
    pub fingerprinter: Fingerprinter,
    pub index: Index,
    pub registry: Registry,
    milestones: Mutex<Vec<Milestone>>,
    /// Signatures admitted and not yet answered.
    pub inflight: AtomicUsize,
    pub healthy: AtomicBool,
    closing: AtomicBool,
    readiness: Mutex<Readiness>,
    ready_changed: Condvar,
    ready_fast: AtomicBool,
    /// Bumped by every reconcile; see `writer.rs`.
    pub generation: AtomicU64,
    pub accepted: AtomicU64,
    pub duplicates: AtomicU64,
    rejected: AtomicU64,
    overloaded: AtomicU64,
    pub batches: AtomicU64,
    pub batch_signatures_last: AtomicU64,
    pub write_latency: LatencyHistogram,
    storage_errors: AtomicU64,
    last_storage_error: Mutex<Option<String>>,
    pub recovery_loaded: AtomicU64,
    recovery_expected: AtomicU64,
    recovery_started: Instant,
    recovery_elapsed_us: AtomicU64,
}

impl Shared {
    pub fn set_ready(&self) {
        self.recovery_elapsed_us.store(
            self.recovery_started.elapsed().as_micros() as u64,
            Ordering::Release,
        );
        self.readiness.lock().ready = true;
        self.ready_fast.store(true, Ordering::Release);
        self.ready_changed.notify_all();
    }

    pub fn fail_recovery(&self, error: String) {
        self.healthy.store(false, Ordering::Release);
        self.readiness.lock().error = Some(error);
        self.ready_changed.notify_all();
    }

    pub fn record_storage_error(&self, error: &StoreError) {
        self.storage_errors.fetch_add(1, Ordering::Relaxed);
        *self.last_storage_error.lock() = Some(error.to_string());
    }

    /// Memory mode: numbers and records milestones under the list lock, so that sequences rise
    /// in list order whichever thread crossed first.
    fn publish_memory_milestones(&self, petition: &Petition, thresholds: Vec<u64>) {
        let now = now_ms();
        let mut all = self.milestones.lock();
        for threshold in thresholds {
            let seq = all.last().map_or(1, |last| last.seq + 1);
            petition.record_reached(threshold);
            all.push(Milestone {
                seq,
                petition: petition.id.to_string(),
                threshold,
                reached_at_ms: now,
            });
        }
    }

    pub fn publish_milestones(&self, new: Vec<Milestone>) {
        if new.is_empty() {
            return;
        }
        let mut all = self.milestones.lock();
        for milestone in new {
            assert!(
                all.last().is_none_or(|last| last.seq < milestone.seq),
                "milestone sequences must rise"
            );
            if let Some(petition) = self.registry.get(&milestone.petition) {
                petition.record_reached(milestone.threshold);
            }
            all.push(milestone);
        }
    }
}

/// Joins the writer when the last [`Engine`] handle goes away.
struct Handle {
    shared: Arc<Shared>,
    sender: Option<Sender<Job>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Best effort: a clean close flushes the memtables so the next open is fast. Errors have
        // nowhere to go here; `Engine::close` reports them.
        let _ = close(self);
    }
}

fn close(handle: &Handle) -> Result<(), FlushError> {
    handle.shared.closing.store(true, Ordering::Release);
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
            .field("storage", &self.handle.shared.config.storage)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens (or creates) the engine. Petitions, counts and milestones are loaded before this
    /// returns; the dedup index is rebuilt in the background, and submissions get
    /// [`SubmitError::Recovering`] until [`Engine::is_ready`].
    pub fn open(config: Config) -> Result<Engine, OpenError> {
        if config.index_shard_bits > 20 {
            return Err(OpenError::Config("index_shard_bits must be at most 20"));
        }
        if config.batch_signatures_max == 0 || config.queue_signatures_max == 0 {
            return Err(OpenError::Config(
                "batch_signatures_max and queue_signatures_max must be positive",
            ));
        }
        let recovery_started = Instant::now();
        let (store, meta) = match &config.storage {
            Storage::Memory => (None, None),
            Storage::Directory(path) => {
                std::fs::create_dir_all(path)
                    .map_err(|e| OpenError::Store(StoreError::Rocks(e.to_string())))?;
                let store = Store::open(path)?;
                let fresh = Meta {
                    secret: *Fingerprinter::random().secret(),
                    policy: config.signer_policy,
                };
                let meta = store.load_or_init_meta(&fresh)?;
                if meta.policy != config.signer_policy {
                    return Err(OpenError::PolicyMismatch {
                        stored: meta.policy,
                        configured: config.signer_policy,
                    });
                }
                (Some(store), Some(meta))
            }
        };
        let fingerprinter = match &meta {
            Some(meta) => Fingerprinter::new(meta.secret),
            None => Fingerprinter::random(),
        };
        debug_assert_eq!(fingerprinter.secret().len(), SECRET_BYTES);
        let shared = Arc::new(Shared {
            index: Index::new(config.index_shard_bits, config.signatures_expected),
            config,
            fingerprinter,
            registry: Registry::default(),
            milestones: Mutex::new(Vec::new()),
            inflight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
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
            storage_errors: AtomicU64::new(0),
            last_storage_error: Mutex::new(None),
            recovery_loaded: AtomicU64::new(0),
            recovery_expected: AtomicU64::new(0),
            recovery_started,
            recovery_elapsed_us: AtomicU64::new(0),
        });

        let Some(store) = store else {
            shared.set_ready();
            return Ok(Engine {
                handle: Arc::new(Handle {
                    shared,
                    sender: None,
                    writer: Mutex::new(None),
                }),
            });
        };

        // Petitions, counts and milestones are small: load them now so counts are served at
        // once; the index (16 bytes a signature) is rebuilt by the writer thread.
        let mut petitions = store.load_petitions()?;
        petitions.sort_by_key(|(num, _)| *num);
        let counts: HashMap<u32, u64> = store.load_counts()?.into_iter().collect();
        for (expected, (num, meta)) in petitions.into_iter().enumerate() {
            if num as usize != expected {
                return Err(OpenError::Store(StoreError::Corrupt {
                    what: "petition numbers (not dense)",
                }));
            }
            let count = counts.get(&num).copied().unwrap_or(0);
            shared
                .registry
                .insert(Arc::new(Petition::new(num, meta, count)));
        }
        let mut next_milestone_seq = 1;
        let mut milestones = Vec::new();
        for (seq, num, threshold, at) in store.load_milestones(0)? {
            let petition = shared.registry.by_num(num).ok_or(StoreError::Corrupt {
                what: "milestone petition",
            })?;
            milestones.push(Milestone {
                seq,
                petition: petition.id.to_string(),
                threshold,
                reached_at_ms: at,
            });
            next_milestone_seq = seq + 1;
        }
        shared.publish_milestones(milestones);
        let stored: u64 = counts.values().sum();
        shared.recovery_expected.store(stored, Ordering::Release);
        shared
            .index
            .reserve(stored.max(shared.config.signatures_expected));
        let next_seq = store.next_signature_seq()?;

        let (sender, receiver) = crossbeam_channel::unbounded();
        let writer = Writer::new(
            Arc::clone(&shared),
            store,
            receiver,
            next_seq,
            next_milestone_seq,
        )
        .map_err(|e| OpenError::Store(StoreError::Rocks(e.to_string())))?;
        let thread = std::thread::Builder::new()
            .name("engine-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| OpenError::Store(StoreError::Rocks(e.to_string())))?;
        Ok(Engine {
            handle: Arc::new(Handle {
                shared,
                sender: Some(sender),
                writer: Mutex::new(Some(thread)),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// Whether the index is rebuilt and signatures are taken.
    pub fn is_ready(&self) -> bool {
        self.shared().ready_fast.load(Ordering::Acquire)
    }

    /// Blocks until the index is rebuilt. Returns the recovery error if rebuilding failed.
    pub fn wait_ready(&self) -> Result<(), String> {
        let shared = self.shared();
        let mut readiness = shared.readiness.lock();
        loop {
            if readiness.ready {
                return Ok(());
            }
            if let Some(error) = &readiness.error {
                return Err(error.clone());
            }
            shared.ready_changed.wait(&mut readiness);
        }
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
        let (results, waiting) = self.admit(signatures, false);
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
        let (results, waiting) = self.admit(signatures, true);
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

    /// Validates, resolves and fingerprints each signature and claims it in the index. In memory
    /// mode that is the whole job; otherwise new signers go to the writer.
    ///
    /// Three passes, so that per-signature work stays small and the index's cache misses overlap:
    /// (1) under one registry read lock, resolve each petition to a slot of this call (one
    /// reference count per distinct petition, not per signature), validate and fingerprint;
    /// (2) insert the fingerprints, prefetching the home bucket of the one 16 ahead; (3) memory mode: one atomic add per
    /// petition, then the ordinals in input order.
    fn admit<S: AsSignatureRef>(
        &self,
        signatures: &[S],
        async_reply: bool,
    ) -> (Vec<Result<Outcome, SubmitError>>, Option<Waiting>) {
        let shared = self.shared();
        let n = signatures.len();
        let refuse = |error: SubmitError| (vec![Err(error); n], None);
        if n == 0 {
            return (Vec::new(), None);
        }
        if shared.closing.load(Ordering::Acquire) {
            return refuse(SubmitError::ShuttingDown);
        }
        if !self.is_ready() {
            return refuse(SubmitError::Recovering);
        }
        if !shared.healthy.load(Ordering::Acquire) {
            return refuse(SubmitError::StorageUnavailable);
        }
        let memory = self.handle.sender.is_none();
        if !memory {
            let before = shared.inflight.fetch_add(n, Ordering::AcqRel);
            // One batch larger than the whole bound is let through when nothing else is queued.
            if before > 0 && before + n > shared.config.queue_signatures_max {
                shared.inflight.fetch_sub(n, Ordering::AcqRel);
                shared.overloaded.fetch_add(n as u64, Ordering::Relaxed);
                return refuse(SubmitError::Overloaded);
            }
        }

        let now = now_ms();
        let generation = shared.generation.load(Ordering::Acquire);
        let policy = shared.config.signer_policy;
        let fingerprinter = &shared.fingerprinter;
        // Every position is overwritten below or by the writer's answers; one that is not (the
        // writer went away) reads as shut down.
        let mut results: Vec<Result<Outcome, SubmitError>> =
            vec![Err(SubmitError::ShuttingDown); n];
        let mut slots: Vec<Slot> = Vec::new();
        let mut slot_of: HashMap<u32, u32, BuildHasherDefault<NumberHasher>> = HashMap::default();
        let mut claims: Vec<Claim> = Vec::with_capacity(n);
        // Persistent mode: the validated fields of each claim, encoded for the writer.
        let mut valid = Vec::new();
        let mut rejected = 0u64;

        // Pass 1: resolve, validate, fingerprint.
        {
            let registry = shared.registry.read();
            // Consecutive signatures mostly name the same petition, or go back to the one
            // before (a viral petition's run broken by one signature for another): the two
            // most recent petitions are remembered.
            let mut last: Option<(&str, u32)> = None;
            let mut before: Option<(&str, u32)> = None;
            for (index, signature) in signatures.iter().enumerate() {
                let signature = signature.signature_ref();
                let slot = match (last, before) {
                    (Some((id, slot)), _) if same_id(id, signature.petition) => Some(slot),
                    (_, Some((id, slot))) if same_id(id, signature.petition) => {
                        std::mem::swap(&mut last, &mut before);
                        Some(slot)
                    }
                    _ => registry.get(signature.petition).map(|petition| {
                        let slot = *slot_of.entry(petition.num).or_insert_with(|| {
                            slots.push(Slot {
                                open: petition.is_open(now),
                                petition: Arc::clone(petition),
                                accepted: 0,
                            });
                            (slots.len() - 1) as u32
                        });
                        before = last;
                        last = Some((signature.petition, slot));
                        slot
                    }),
                };
                let target = slot.map(|slot| &slots[slot as usize]);
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
                });
                match checked {
                    Ok((fields, slot, fp)) => {
                        claims.push(Claim {
                            index,
                            slot,
                            fp,
                            inserted: false,
                        });
                        if !memory {
                            valid.push(fields);
                        }
                    }
                    Err(error) => {
                        rejected += 1;
                        results[index] = Err(error);
                    }
                }
            }
        }
        if rejected > 0 {
            shared.rejected.fetch_add(rejected, Ordering::Relaxed);
        }

        // Pass 2: claim each fingerprint in the index.
        let mut items = Vec::new();
        // Room for every valid signature's record: one allocation per call.
        let mut records =
            Vec::with_capacity(valid.iter().map(|fields| fields.encoded_len_max()).sum());
        let mut duplicates = 0u64;
        for &claim in claims.iter().take(PREFETCH_DISTANCE) {
            shared.index.prefetch(claim.fp);
        }
        for at in 0..claims.len() {
            if let Some(ahead) = claims.get(at + PREFETCH_DISTANCE) {
                shared.index.prefetch(ahead.fp);
            }
            let claim = &mut claims[at];
            let inserted = shared.index.insert(claim.fp, !memory);
            match inserted {
                Insert::Inserted if memory => {
                    claim.inserted = true;
                    slots[claim.slot as usize].accepted += 1;
                }
                Insert::Inserted | Insert::Present(Presence::Pending) if !memory => {
                    items.push(Item {
                        index: claim.index,
                        // Met pending: another submission of this signer is on its way to the
                        // writer; this one's answer waits for that one's write.
                        awaiting: matches!(inserted, Insert::Present(_)),
                        petition: claim.slot,
                        fp: claim.fp,
                        record: valid[at].encode(
                            slots[claim.slot as usize].petition.num,
                            now,
                            &mut records,
                        ),
                    })
                }
                _ => {
                    duplicates += 1;
                    if !memory {
                        let count = slots[claim.slot as usize]
                            .petition
                            .count
                            .load(Ordering::Acquire);
                        results[claim.index] = Ok(Outcome::Duplicate { count });
                    }
                }
            }
        }
        if duplicates > 0 {
            shared.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        }

        if memory {
            self.count_in_memory(&mut slots, &claims, &mut results);
            return (results, None);
        }

        let answered = n - items.len();
        if items.is_empty() {
            shared.inflight.fetch_sub(n, Ordering::AcqRel);
            return (results, None);
        }
        shared.inflight.fetch_sub(answered, Ordering::AcqRel);
        let reserved = items.len();
        let (reply, waiting) = if async_reply {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            (Reply::Async(sender), Waiting::Async(receiver))
        } else {
            let (sender, receiver) = std::sync::mpsc::sync_channel(1);
            (Reply::Blocking(sender), Waiting::Blocking(receiver))
        };
        let job = SignJob {
            items,
            petitions: slots.into_iter().map(|slot| slot.petition).collect(),
            records,
            reply,
            generation,
            reserved,
        };
        let sender = self
            .handle
            .sender
            .as_ref()
            .expect("a persistent engine has a writer");
        if let Err(crossbeam_channel::SendError(Job::Sign(job))) = sender.send(Job::Sign(job)) {
            // The writer has stopped: undo the claims and refuse.
            for item in job.items {
                if !item.awaiting {
                    shared.index.remove(item.fp);
                }
                results[item.index] = Err(SubmitError::ShuttingDown);
            }
            shared.inflight.fetch_sub(reserved, Ordering::AcqRel);
            return (results, None);
        }
        (results, Some(waiting))
    }

    /// Memory mode: counts the accepted signers with one atomic add per petition per call (a hot
    /// petition is touched once per batch), then answers in input order. Duplicates are
    /// answered after the counting, so a re-send within one batch sees the count including its
    /// original.
    fn count_in_memory(
        &self,
        slots: &mut [Slot],
        claims: &[Claim],
        results: &mut [Result<Outcome, SubmitError>],
    ) {
        let shared = self.shared();
        let mut total = 0u64;
        for slot in slots.iter_mut().filter(|slot| slot.accepted > 0) {
            let k = slot.accepted;
            total += k;
            let before = slot.petition.count.fetch_add(k, Ordering::AcqRel);
            let crossed = slot.petition.crossed(before, before + k);
            if !crossed.is_empty() {
                shared.publish_memory_milestones(&slot.petition, crossed);
            }
            // From here on `accepted` is the last ordinal handed out.
            slot.accepted = before;
        }
        for claim in claims {
            let slot = &mut slots[claim.slot as usize];
            results[claim.index] = if claim.inserted {
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
        shared.accepted.fetch_add(total, Ordering::Relaxed);
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
        if shared.closing.load(Ordering::Acquire) {
            return vec![Err(PetitionError::ShuttingDown); specs.len()];
        }
        let _registering = shared.registering_lock();
        let now = now_ms();
        let mut results = Vec::with_capacity(specs.len());
        // (number, meta, existing petition) per change, and where each new id went.
        let mut planned: Vec<(u32, PetitionMeta, Option<Arc<Petition>>)> = Vec::new();
        let mut planned_by_id: HashMap<String, usize> = HashMap::new();
        let mut next_num = shared.registry.next_num();
        for spec in specs {
            let thresholds = match spec.checked_thresholds() {
                Ok(thresholds) => thresholds,
                Err(e) => {
                    results.push(Err(e.into()));
                    continue;
                }
            };
            if let Some(&at) = planned_by_id.get(&spec.id) {
                let meta = &mut planned[at].1;
                meta.deadline_ms = spec.deadline_ms;
                if let Some(thresholds) = thresholds {
                    meta.thresholds = thresholds;
                }
                results.push(Ok(Registered::Updated));
                continue;
            }
            match shared.registry.get(&spec.id) {
                Some(petition) => {
                    let mut meta = petition.meta();
                    meta.deadline_ms = spec.deadline_ms;
                    if let Some(thresholds) = thresholds {
                        meta.thresholds = thresholds;
                    }
                    planned_by_id.insert(spec.id, planned.len());
                    planned.push((petition.num, meta, Some(petition)));
                    results.push(Ok(Registered::Updated));
                }
                None => {
                    if next_num == u32::MAX {
                        results.push(Err(PetitionError::TooMany));
                        continue;
                    }
                    let meta = PetitionMeta {
                        id: spec.id.clone(),
                        created_at_ms: now,
                        deadline_ms: spec.deadline_ms,
                        closed_at_ms: None,
                        thresholds: thresholds.unwrap_or_else(|| DEFAULT_THRESHOLDS.to_vec()),
                    };
                    planned_by_id.insert(spec.id, planned.len());
                    planned.push((next_num, meta, None));
                    next_num += 1;
                    results.push(Ok(Registered::Created));
                }
            }
        }
        if planned.is_empty() {
            return results;
        }
        let persist: Vec<(u32, PetitionMeta)> = planned
            .iter()
            .map(|(num, meta, _)| (*num, meta.clone()))
            .collect();
        if let Err(e) = self.persist_petitions(persist) {
            return results.into_iter().map(|r| r.and(Err(e.clone()))).collect();
        }
        for (num, meta, existing) in planned {
            match existing {
                Some(petition) => petition.set_meta(meta),
                None => shared
                    .registry
                    .insert(Arc::new(Petition::new(num, meta, 0))),
            }
        }
        results
    }

    /// Closes a petition: it takes no more signatures. Closing a closed petition is a no-op.
    pub fn close_petition(&self, id: &str) -> Result<PetitionInfo, PetitionError> {
        let shared = self.shared();
        let _registering = shared.registering_lock();
        let petition = shared
            .registry
            .get(id)
            .ok_or(PetitionError::UnknownPetition)?;
        let mut meta = petition.meta();
        if meta.closed_at_ms.is_none() {
            meta.closed_at_ms = Some(now_ms());
            self.persist_petitions(vec![(petition.num, meta.clone())])?;
            petition.set_meta(meta);
        }
        Ok(petition.info(now_ms()))
    }

    fn persist_petitions(&self, petitions: Vec<(u32, PetitionMeta)>) -> Result<(), PetitionError> {
        let Some(sender) = &self.handle.sender else {
            return Ok(());
        };
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        sender
            .send(Job::Petitions(petitions, reply))
            .map_err(|_| PetitionError::ShuttingDown)?;
        match answer.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(PetitionError::StorageUnavailable),
            Err(_) => Err(PetitionError::ShuttingDown),
        }
    }

    /// The petition's count of distinct accepted signers, or `None` if it is unknown.
    pub fn count(&self, petition: &str) -> Option<u64> {
        self.shared()
            .registry
            .get(petition)
            .map(|p| p.count.load(Ordering::Acquire))
    }

    /// A snapshot of one petition.
    pub fn petition(&self, id: &str) -> Option<PetitionInfo> {
        self.shared().registry.get(id).map(|p| p.info(now_ms()))
    }

    /// Up to `limit` petitions with the highest counts, highest first (ties by id).
    pub fn top_petitions(&self, limit: usize) -> Vec<PetitionInfo> {
        let now = now_ms();
        let mut all: Vec<(u64, Arc<Petition>)> = self
            .shared()
            .registry
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

    /// Milestones with sequence greater than `after`, oldest first, at most `limit`.
    pub fn milestones_after(&self, after: u64, limit: usize) -> Vec<Milestone> {
        let all = self.shared().milestones.lock();
        let start = all.partition_point(|m| m.seq <= after);
        all[start..].iter().take(limit).cloned().collect()
    }

    /// Counters, sizes and the recovery state.
    pub fn stats(&self) -> Stats {
        let shared = self.shared();
        let (index_entries, index_bytes) = shared.index.usage();
        let petitions = shared.registry.all();
        let signatures = petitions
            .iter()
            .map(|p| p.count.load(Ordering::Acquire))
            .sum();
        let counts_bytes = (petitions.len() * std::mem::size_of::<Petition>()) as u64;
        Stats {
            ready: self.is_ready(),
            storage_healthy: shared.healthy.load(Ordering::Acquire),
            persistent: self.handle.sender.is_some(),
            durability: shared.config.durability,
            petitions: petitions.len() as u64,
            signatures,
            accepted_total: shared.accepted.load(Ordering::Relaxed),
            duplicates_total: shared.duplicates.load(Ordering::Relaxed),
            rejected_total: shared.rejected.load(Ordering::Relaxed),
            overloaded_total: shared.overloaded.load(Ordering::Relaxed),
            queue_signatures: shared.inflight.load(Ordering::Relaxed) as u64,
            batches_total: shared.batches.load(Ordering::Relaxed),
            batch_signatures_last: shared.batch_signatures_last.load(Ordering::Relaxed),
            write_latency: shared.write_latency.snapshot(),
            index_entries,
            index_bytes,
            counts_bytes,
            storage_errors_total: shared.storage_errors.load(Ordering::Relaxed),
            last_storage_error: shared.last_storage_error.lock().clone(),
            recovery_loaded: shared.recovery_loaded.load(Ordering::Relaxed),
            recovery_expected: shared.recovery_expected.load(Ordering::Relaxed),
            recovery_seconds: Duration::from_micros(
                shared.recovery_elapsed_us.load(Ordering::Acquire),
            )
            .as_secs_f64(),
            recovery_error: shared.readiness.lock().error.clone(),
        }
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

    /// Stops taking signatures, answers everything queued, flushes and closes the store.
    /// Other handles then get [`SubmitError::ShuttingDown`]. Closing twice is a no-op.
    pub fn close(&self) -> Result<(), FlushError> {
        close(&self.handle)
    }

    /// Reads the whole store and checks it against itself and memory: every stored signer once
    /// per petition, every count equal to its stored signers, fingerprints matching records.
    /// Costs a full scan; for tests and operators' checks.
    pub fn verify_store(&self) -> Result<VerifyReport, String> {
        let Some(sender) = &self.handle.sender else {
            return crate::verify::verify_memory(self.shared());
        };
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        sender
            .send(Job::Verify(reply))
            .map_err(|_| "the engine is shut down".to_string())?;
        answer
            .recv()
            .map_err(|_| "the engine is shut down".to_string())?
    }
}

impl Shared {
    fn registering_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.registry.registering.lock()
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

/// `a == b` for petition ids (at most 64 bytes, usually a few) without a call into the C
/// library's `bcmp`: admission compares every signature's petition with the latest two of its
/// call, and that call was 6% of in-memory admission's time.
#[inline]
fn same_id(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |differ, (x, y)| differ | (x ^ y))
            == 0
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
