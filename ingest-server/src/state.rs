//! What every request handler shares: the engine, the settings, the keys, the in-flight limits,
//! the body budget, the drain flag, what tells rendered petition reads they are stale, and the
//! metrics. Built once by `Server::bind`, then shared behind an `Arc`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use engine::Engine;
use tokio::sync::Semaphore;

use crate::auth::Keys;
use crate::config::ServerConfig;
use crate::delivery::Deliveries;
use crate::events::Hub;
use crate::exposition::Exposition;
use crate::metrics::{self, Metrics};
use crate::request::BodyBudget;

/// What every request handler shares.
pub(crate) struct State {
    pub engine: Engine,
    pub config: ServerConfig,
    pub keys: Keys,
    pub inflight: Arc<Semaphore>,
    pub batch_inflight: Arc<Semaphore>,
    /// What single-signature and admin bodies may hold: `inflight_max` bodies of
    /// `body_bytes_max`.
    pub small_body_budget: Arc<BodyBudget>,
    /// What batch bodies may hold: `body_buffer_bytes_max`.
    pub batch_body_budget: Arc<BodyBudget>,
    pub draining: AtomicBool,
    /// Bumped after every change to petitions that their validated counts alone do not show:
    /// a registration, update or close, a pending signature answered, and invalidation jobs
    /// found finished. Invalidates the rendered petition reads (see `handlers::petitions`).
    pub generation: AtomicU64,
    /// Invalidation jobs this server may have running: bumped before each one is started, and
    /// 1 at start, since the engine resumes the jobs a restart interrupted.
    pub jobs_started: AtomicU64,
    /// The value of `jobs_started` when no job was last seen running. While the two differ,
    /// a job may be changing pending and invalidated counts in the background.
    pub jobs_settled: AtomicU64,
    /// Unique to this server in the process: the key of its rendered petition reads in each
    /// worker thread's cache (tests run several servers on shared threads).
    pub instance: u64,
    pub metrics: Arc<Metrics>,
    pub exposition: Exposition,
    /// Renders each new event once for the stream readers.
    pub hub: Arc<Hub>,
    /// Set when the server drains: streams end and webhook deliveries stop.
    pub stop_streams: tokio::sync::watch::Sender<bool>,
    /// The webhook delivery tasks.
    pub deliveries: Arc<Deliveries>,
}

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(0);

impl State {
    /// The shared state of a new server over `engine`.
    pub fn new(config: ServerConfig, engine: Engine) -> State {
        let metrics = Arc::new(Metrics::new());
        // At least one body of each kind must fit, or it could never be read.
        let small_body_budget = Arc::new(BodyBudget::new(
            config
                .inflight_max
                .max(1)
                .saturating_mul(config.body_bytes_max),
        ));
        let batch_body_budget = Arc::new(BodyBudget::new(
            config.body_buffer_bytes_max.max(config.batch_bytes_max),
        ));
        let stop_streams = tokio::sync::watch::Sender::new(false);
        let deliveries = Arc::new(Deliveries::new(
            engine.clone(),
            config.webhook_allow_networks.clone(),
            config.webhook_timeout,
            config.webhook_retry_first,
            stop_streams.subscribe(),
        ));
        State {
            hub: Arc::new(Hub::new(config.sse_buffer)),
            stop_streams,
            deliveries: Arc::clone(&deliveries),
            keys: Keys::new(&config.api_keys, config.rate_limit_per_key),
            inflight: Arc::new(Semaphore::new(config.inflight_max)),
            batch_inflight: Arc::new(Semaphore::new(config.batch_inflight_max)),
            exposition: Exposition::new(metrics::registry(
                metrics.clone(),
                engine.clone(),
                [small_body_budget.clone(), batch_body_budget.clone()],
                Arc::clone(&deliveries),
            )),
            small_body_budget,
            batch_body_budget,
            draining: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            jobs_started: AtomicU64::new(1),
            jobs_settled: AtomicU64::new(0),
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            metrics,
            engine,
            config,
        }
    }
}
