//! The replicated deployment: engine nodes over NATS JetStream.
//!
//! One node owns the data at a time; the others are standbys. The owner holds a lease (a key in
//! a JetStream key-value bucket whose entries expire after the lease's TTL, renewed by
//! compare-and-set) and runs the engine with a [`NatsLog`] as its replicated log: every store
//! write is appended to an R3 stream, fenced by the stream's expected last sequence, before it is
//! made, so nothing is acknowledged that a quorum of NATS servers does not hold (`sync_interval:
//! always`: fsynced). A standby tails the stream into its own store ([`engine::Follower`]); when
//! the lease lapses it takes it, catches up to the stream's end, appends a mark of its epoch
//! (which fences the old owner, whose next append no longer finds the stream where it expects)
//! and opens the engine on its store.
//!
//! Every node answers HTTP on its address. The owner serves requests itself, and also those
//! other nodes forward to it over NATS request/reply (`<name>.http`); a standby forwards every
//! request but its own health, readiness and metrics, and answers 503 + `Retry-After` while no
//! owner answers. Background work (webhook delivery, pending expiry, deadlines) runs with the
//! engine, so on the owner only.
//!
//! Layout: `log` is the [`engine::ReplicatedLog`] on a JetStream stream; `lease` takes and keeps
//! the lease; `forward` carries HTTP requests over NATS both ways; `standby` is the standby's
//! front and its tail of the stream; `snapshot` keeps the stream bounded by snapshots of the
//! owner's store in an object store, and restores a node from the latest; this file has the settings, the status every part shares,
//! and the node's loop between the two roles.

mod forward;
mod lease;
mod log;
mod snapshot;
mod standby;

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use engine::ReplicatedLog as _;

use crate::config::ServerConfig;
use crate::server::Server;

pub use log::NatsLog;

/// Where the node finds NATS and how it takes part.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URLs, comma-separated.
    pub nats: String,
    /// This node's name (unique in the cluster).
    pub node: String,
    /// The deployment's name: the stream is `<name>_log` (subject `<name>.log`), the lease
    /// bucket `<name>_lease`, forwarded requests go to `<name>.http`.
    pub name: String,
    /// Replicas of the stream and the lease bucket (3 in production; 1 with one NATS server).
    pub replicas: usize,
    /// How long a lease lasts without renewal: the owner renews it every third of it and steps
    /// down if it could not for two thirds of it; a standby takes over after it lapsed.
    pub lease_ttl: Duration,
    /// The address other nodes and clients reach this node's HTTP at (shown in the lease).
    pub advertise: String,
    /// The owner snapshots its store once the stream holds this many bytes, and purges the
    /// entries before the previous snapshot (`snapshot`).
    pub snapshot_bytes: u64,
}

impl ClusterConfig {
    fn stream(&self) -> String {
        format!("{}_log", self.name)
    }
    fn subject(&self) -> String {
        format!("{}.log", self.name)
    }
    fn bucket(&self) -> String {
        format!("{}_lease", self.name)
    }
    fn forward_subject(&self) -> String {
        format!("{}.http", self.name)
    }
    fn snapshots(&self) -> String {
        format!("{}_snapshots", self.name)
    }
}

/// The node's role as `/readyz` and `/metrics` tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Tailing the stream, forwarding requests.
    Standby = 0,
    /// Holds the lease and is catching up, marking its epoch or opening its engine.
    Promoting = 1,
    /// Serves with its engine.
    Owner = 2,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standby => "standby",
            Role::Promoting => "promoting",
            Role::Owner => "owner",
        }
    }
}

/// What the parts of a node share and report.
#[derive(Debug)]
pub struct ClusterStatus {
    pub node: String,
    role: AtomicU8,
    /// The epoch of this node's lease while it holds one; else the newest mark applied.
    pub epoch: AtomicU64,
    /// The position of the last entry this node's store has (applied or appended).
    pub position: AtomicU64,
    /// Entries in the stream after `position`, as last seen (a standby's lag).
    pub lag: AtomicU64,
    /// When the newest entry in this node's store was appended to the log (ms since the epoch;
    /// 0: none since the node started): on a standby the stream's time of the last entry it
    /// applied (or of the stream's newest, when it started with nothing to apply), on the owner
    /// its clock when its last append was acknowledged.
    pub applied_at_ms: AtomicU64,
    /// The lease's holder, as its value says (`node` at `http address`), or empty.
    pub owner: parking_lot::Mutex<String>,
    /// The position of the latest snapshot this node took or restored (0: none).
    pub snapshot_position: AtomicU64,
}

impl ClusterStatus {
    fn new(node: &str) -> ClusterStatus {
        ClusterStatus {
            node: node.to_owned(),
            role: AtomicU8::new(Role::Standby as u8),
            epoch: AtomicU64::new(0),
            position: AtomicU64::new(0),
            lag: AtomicU64::new(0),
            applied_at_ms: AtomicU64::new(0),
            owner: parking_lot::Mutex::new(String::new()),
            snapshot_position: AtomicU64::new(0),
        }
    }

    pub fn role(&self) -> Role {
        match self.role.load(Ordering::Acquire) {
            0 => Role::Standby,
            1 => Role::Promoting,
            _ => Role::Owner,
        }
    }

    fn set_role(&self, role: Role) {
        self.role.store(role as u8, Ordering::Release);
    }

    /// The readiness body's cluster fields, as JSON members (no braces).
    pub fn json_fields(&self) -> String {
        let owner = self.owner.lock().clone();
        format!(
            r#""role":"{}","node":{},"owner":{},"epoch":{},"position":{},"lag":{},"applied_at_ms":{},"snapshot_position":{}"#,
            self.role().as_str(),
            serde_json::Value::from(self.node.as_str()),
            serde_json::Value::from(owner),
            self.epoch.load(Ordering::Relaxed),
            self.position.load(Ordering::Relaxed),
            self.lag.load(Ordering::Relaxed),
            self.applied_at_ms.load(Ordering::Relaxed),
            self.snapshot_position.load(Ordering::Relaxed),
        )
    }

    /// The cluster's metric families, in the text both exposition formats share.
    pub fn metrics_text(&self) -> String {
        let role = self.role();
        let mut out = String::new();
        out += "# HELP ingest_cluster_role This node's role in the replicated deployment (1 for the current one).\n";
        out += "# TYPE ingest_cluster_role gauge\n";
        for r in [Role::Standby, Role::Promoting, Role::Owner] {
            out += &format!(
                "ingest_cluster_role{{role=\"{}\"}} {}\n",
                r.as_str(),
                u8::from(r == role)
            );
        }
        for (name, help, value) in [
            (
                "ingest_cluster_epoch",
                "The epoch of this node's lease while it owns; else the newest owner's mark applied.",
                self.epoch.load(Ordering::Relaxed),
            ),
            (
                "ingest_cluster_log_position",
                "The position of the last log entry in this node's store.",
                self.position.load(Ordering::Relaxed),
            ),
            (
                "ingest_cluster_replication_lag_entries",
                "Log entries not yet applied to this node's store, as last seen.",
                self.lag.load(Ordering::Relaxed),
            ),
            (
                "ingest_cluster_snapshot_position",
                "The log position of the latest snapshot this node took or restored (0: none).",
                self.snapshot_position.load(Ordering::Relaxed),
            ),
        ] {
            out += &format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n");
        }
        let applied_at_ms = self.applied_at_ms.load(Ordering::Relaxed);
        out += "# HELP ingest_cluster_applied_at_seconds When the newest log entry in this node's store was appended to the log (Unix seconds; 0: none since it started).\n";
        out += "# TYPE ingest_cluster_applied_at_seconds gauge\n";
        out += &format!(
            "ingest_cluster_applied_at_seconds {}.{:03}\n",
            applied_at_ms / 1000,
            applied_at_ms % 1000
        );
        out
    }
}

/// Runs the node until `shutdown` completes: a standby until it takes the lease, then the owner
/// until it loses it (and a standby again), and so on.
pub async fn run(
    cluster: ClusterConfig,
    engine_config: engine::Config,
    mut server_config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let status = Arc::new(ClusterStatus::new(&cluster.node));
    server_config.cluster = Some(Arc::clone(&status));
    let links = connect(&cluster).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut ended = false;
    while !ended {
        status.set_role(Role::Standby);
        let front = standby::Front::bind(&server_config, links.client.clone(), &cluster, &status)
            .await
            .with_context(|| format!("cannot listen on {}", server_config.listen))?;
        let promoted = tokio::select! {
            promoted = standby::follow_until_owner(&links, &cluster, &engine_config, &status, stopped.clone()) => promoted,
            () = &mut shutdown => Ok(None),
        };
        front.close().await;
        let promoted = match promoted {
            Ok(promoted) => promoted,
            Err(e) => {
                // NATS unreachable, the lease lost while catching up: start over.
                tracing::warn!(
                    error = format!("{e:#}"),
                    "following the log stopped: starting over"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(promoted) = promoted else {
            ended = true;
            continue;
        };
        status.set_role(Role::Owner);
        tracing::info!(
            epoch = promoted.epoch,
            position = promoted.log.position(),
            "owner"
        );
        let why = own(
            &engine_config,
            &server_config,
            &links,
            &cluster,
            promoted,
            &mut shutdown,
        )
        .await?;
        match why {
            StepDown::Shutdown => ended = true,
            StepDown::LeaseLost => tracing::warn!("lease lost: stepping down to standby"),
            StepDown::LogFailed(why) => {
                tracing::warn!(%why, "the log refused an append: stepping down to standby")
            }
        }
    }
    let _ = stop.send(true);
    Ok(())
}

/// Why an owner stopped owning.
enum StepDown {
    Shutdown,
    LeaseLost,
    LogFailed(String),
}

/// What a standby brings to its term as owner.
struct Promoted {
    epoch: u64,
    log: Arc<NatsLog>,
    keeper: lease::Keeper,
    /// Its store, caught up and marked, with the dedup index it kept.
    follower: engine::Follower,
}

/// Serves as the owner until shut down, the lease is lost or the log fails.
async fn own(
    engine_config: &engine::Config,
    server_config: &ServerConfig,
    links: &Links,
    cluster: &ClusterConfig,
    promoted: Promoted,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> anyhow::Result<StepDown> {
    let Promoted {
        epoch,
        log,
        mut keeper,
        follower,
    } = promoted;
    let mut config = engine_config.clone();
    let replicated: Arc<dyn engine::ReplicatedLog> = log.clone();
    config.replication = Some(engine::Replication(replicated));
    let engine = tokio::task::spawn_blocking(move || follower.into_engine(config))
        .await
        .context("opening the engine")?
        .context("cannot open the engine on the caught-up store")?;
    let waiting = engine.clone();
    tokio::task::spawn_blocking(move || match waiting.wait_ready() {
        Ok(()) => tracing::info!("ready after {:.3} s", waiting.stats().recovery_seconds),
        Err(e) => tracing::error!("recovery failed, not ready: {e}"),
    });
    let server = Server::bind(server_config.clone(), engine.clone())
        .await
        .with_context(|| format!("cannot listen on {}", server_config.listen))?;
    let responder = tokio::spawn(forward::serve(
        links.client.clone(),
        cluster.forward_subject(),
        server.shared(),
    ));
    let status = server_config
        .cluster
        .clone()
        .context("a cluster node has a status")?;
    if let Ok(Some(latest)) = snapshot::latest(&links.snapshots).await {
        status
            .snapshot_position
            .store(latest.position, Ordering::Relaxed);
    }
    let snapshotting = tokio::spawn(snapshot::keep(
        engine.clone(),
        links.snapshots.clone(),
        links.stream.clone(),
        data_dir(engine_config)?,
        epoch,
        cluster.snapshot_bytes,
        status,
    ));
    let mut failed = log.failures();
    let why = std::cell::Cell::new(StepDown::Shutdown);
    let step_down = async {
        tokio::select! {
            () = shutdown.as_mut() => {}
            () = keeper.lost() => {
                // No more acknowledgements from here: the lease may pass to another node.
                log.fail("the lease was lost");
                why.set(StepDown::LeaseLost);
            }
            reason = failed.wait_for(Option::is_some) => {
                let reason = reason.map(|r| r.clone().unwrap_or_default()).unwrap_or_default();
                why.set(StepDown::LogFailed(reason));
            }
        }
    };
    let drained = server.run(step_down).await;
    responder.abort();
    snapshotting.abort();
    let _ = snapshotting.await;
    let closing = engine.clone();
    let closed = tokio::task::spawn_blocking(move || closing.close()).await;
    keeper.release().await;
    if let Err(e) = drained {
        tracing::warn!(error = %e, "the final flush failed");
    }
    if let Ok(Err(e)) = closed {
        tracing::warn!(error = %e, "closing the engine failed");
    }
    Ok(why.into_inner())
}

/// The node's handles on NATS.
struct Links {
    client: async_nats::Client,
    js: jetstream::Context,
    /// The log's stream.
    stream: jetstream::stream::Stream,
    lease: lease::Lease,
    /// The snapshots' bucket.
    snapshots: jetstream::object_store::ObjectStore,
}

/// The engine's data directory (a cluster node always has one).
fn data_dir(config: &engine::Config) -> anyhow::Result<std::path::PathBuf> {
    match &config.storage {
        engine::Storage::Directory(dir) => Ok(dir.components().collect()),
        engine::Storage::Memory => anyhow::bail!("a cluster node keeps its store in a directory"),
    }
}

/// Connects to NATS and finds (or creates) the log's stream, R`replicas` on file storage, the
/// lease bucket and the snapshots' bucket.
///
/// When several nodes start with a new NATS cluster, requests that create the same stream at
/// once were seen to go unanswered, and a client whose first JetStream request went out before
/// the cluster had elected its JetStream leader to get no answer to any later one (nats-server
/// 2.15.1, async-nats 0.51.0). So each attempt has a deadline and a new connection, and looks
/// for what exists before creating it.
async fn connect(cluster: &ClusterConfig) -> anyhow::Result<Links> {
    let addresses = cluster
        .nats
        .split(',')
        .map(|url| url.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad NATS URL in {:?}", cluster.nats))?;
    let config = jetstream::stream::Config {
        name: cluster.stream(),
        subjects: vec![cluster.subject()],
        num_replicas: cluster.replicas,
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let client = async_nats::ConnectOptions::new()
            .name(format!("ingest-server {}", cluster.node))
            .retry_on_initial_connect()
            .connect(addresses.clone())
            .await
            .with_context(|| format!("cannot connect to NATS at {}", cluster.nats))?;
        let js = jetstream::new(client.clone());
        let found = tokio::time::timeout(Duration::from_secs(2), async {
            let stream = match js.get_stream(&config.name).await {
                Ok(stream) => stream,
                Err(_) => js.get_or_create_stream(config.clone()).await?,
            };
            let lease = lease::Lease::open(&js, cluster).await?;
            let snapshots = snapshot::bucket(&js, cluster).await?;
            anyhow::Ok((stream, lease, snapshots))
        })
        .await;
        let error = match found {
            Ok(Ok((stream, lease, snapshots))) => {
                return Ok(Links {
                    client,
                    js,
                    stream,
                    lease,
                    snapshots,
                })
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 2 s".to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("cannot create or find the log's stream: {error}");
        }
        tracing::info!(%error, "waiting for JetStream");
        drop(client);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
