//! `ingest-server`: serves HTTP API v1 over an embedded petition engine.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use engine::{Config, Durability, Engine, RateLimits, SourcesConfig, Window};
use ingest_server::{AllowedNetworks, ApiKey, Server, ServerConfig};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: a request allocates and frees a few dozen small
/// buffers across two threads (hyper, the handler, the engine's writer), and glibc's malloc and
/// free were ~12% of the server's CPU under single-signature load (measured with commit 8d10b3d,
/// 2026-11-29; ARCHITECTURE.md has the A/B).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Petition signature ingestion server: exact, durable, fast.
///
/// Every flag has an environment variable of the same name in upper case with an `INGEST_`
/// prefix. Log verbosity follows `RUST_LOG` (default `info`; e.g. `info,access=off`).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "INGEST_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the store lives (created when missing).
    #[arg(long, env = "INGEST_DATA_DIR", default_value = "petition-data")]
    data_dir: PathBuf,
    /// Keep nothing on disk (benchmarks and demos only: everything is lost on exit).
    #[arg(long, env = "INGEST_IN_MEMORY")]
    in_memory: bool,
    /// When a signature is acknowledged: sync (fsync'd, survives power loss), buffered (written
    /// to the OS, survives a process crash), none (benchmarks only).
    #[arg(
        long,
        env = "INGEST_DURABILITY",
        default_value_t = Durability::Sync,
        value_parser = durability_parser()
    )]
    durability: Durability,
    /// API key as ROLE:KEY with ROLE ingest or admin; repeat for more. Env: comma-separated.
    /// With none, the server runs in open mode (anyone may write) and warns loudly.
    #[arg(
        long = "api-key",
        env = "INGEST_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<ApiKey>,
    /// Largest single-signature or admin request body, in bytes.
    #[arg(long, env = "INGEST_BODY_BYTES_MAX", default_value_t = 16 * 1024)]
    body_bytes_max: usize,
    /// Largest batch request body, in bytes.
    #[arg(long, env = "INGEST_BATCH_BYTES_MAX", default_value_t = 8 * 1024 * 1024)]
    batch_bytes_max: usize,
    /// Most bytes of batch bodies held at once across all connections (being read, or read and
    /// not yet handed to the engine); past it, 503. At least --batch-bytes-max. Single and admin
    /// bodies have their own budget: --inflight-max × --body-bytes-max.
    #[arg(long, env = "INGEST_BODY_BUFFER_BYTES_MAX", default_value_t = 256 * 1024 * 1024)]
    body_buffer_bytes_max: usize,
    /// Most lines in one batch request.
    #[arg(long, env = "INGEST_BATCH_LINES_MAX", default_value_t = 10_000)]
    batch_lines_max: usize,
    /// Time allowed for a request's headers (slowloris protection), counted from the accept
    /// for a connection's first request, e.g. 10s.
    #[arg(long, env = "INGEST_HEADER_TIMEOUT", default_value = "10s", value_parser = duration)]
    header_timeout: Duration,
    /// A keep-alive connection without a request for this long is closed, e.g. 60s.
    #[arg(long, env = "INGEST_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    idle_timeout: Duration,
    /// Time allowed for a request's body, else 408, e.g. 10s.
    #[arg(long, env = "INGEST_BODY_TIMEOUT", default_value = "10s", value_parser = duration)]
    body_timeout: Duration,
    /// Most open connections.
    #[arg(long, env = "INGEST_CONNECTIONS_MAX", default_value_t = 10_000)]
    connections_max: usize,
    /// Most single-signature and admin requests in flight before shedding with 503.
    #[arg(long, env = "INGEST_INFLIGHT_MAX", default_value_t = 4_096)]
    inflight_max: usize,
    /// Most batch requests in flight before shedding with 503.
    #[arg(long, env = "INGEST_BATCH_INFLIGHT_MAX", default_value_t = 32)]
    batch_inflight_max: usize,
    /// Signatures and validations per second each API key may submit (0: unlimited); past it,
    /// 429.
    #[arg(long, env = "INGEST_RATE_LIMIT_PER_KEY", default_value_t = 0)]
    rate_limit_per_key: u32,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish, e.g. 30s.
    #[arg(long, env = "INGEST_DRAIN_TIMEOUT", default_value = "30s", value_parser = duration)]
    drain_timeout: Duration,
    /// On SIGTERM/SIGINT, how long to keep accepting connections first, while /readyz answers
    /// 503 and every answer carries `Connection: close`, so that a load balancer stops sending
    /// traffic before the listener closes, e.g. 5s (0: close the listener at once). The drain
    /// (--drain-timeout) follows; a supervisor's stop timeout must exceed the two together.
    #[arg(long, env = "INGEST_SHUTDOWN_DELAY", default_value = "0s", value_parser = duration)]
    shutdown_delay: Duration,
    /// NATS server URLs, comma-separated: run as a node of a replicated deployment (an owner
    /// or a standby; see the README's "Replicated deployment"). Unset: one node, no NATS. With
    /// it, an acknowledgement waits for the replicated log and --durability is not used.
    #[arg(long, env = "INGEST_NATS")]
    nats: Option<String>,
    /// This node's name in the replicated deployment (unique). Default: the listen address.
    #[arg(long, env = "INGEST_NODE")]
    node: Option<String>,
    /// The replicated deployment's name: its stream, lease bucket and subjects are named after
    /// it.
    #[arg(long, env = "INGEST_CLUSTER_NAME", default_value = "ingest", value_parser = cluster_name)]
    cluster_name: String,
    /// Replicas of the log's stream and of the lease bucket (3: survives one NATS server lost).
    #[arg(long, env = "INGEST_CLUSTER_REPLICAS", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=5))]
    cluster_replicas: u8,
    /// How long the owner's lease lasts unrenewed: a standby takes over this long after the
    /// owner stopped renewing, e.g. 3s.
    #[arg(long, env = "INGEST_LEASE_TTL", default_value = "3s", value_parser = lease_ttl)]
    lease_ttl: Duration,
    /// The address clients reach this node at, shown to others in the lease. Default: the
    /// listen address.
    #[arg(long, env = "INGEST_ADVERTISE")]
    advertise: Option<String>,
    /// Bounds the log's stream: once it holds this many bytes, the owner snapshots its store
    /// into the `<cluster name>_snapshots` object store and purges the entries before the
    /// previous snapshot, so the stream holds at most about twice this. A node whose store is
    /// older than the stream's first entry starts from the latest snapshot.
    #[arg(long, env = "INGEST_SNAPSHOT_BYTES", default_value_t = 1 << 30, value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_bytes: u64,
    /// Log lines as text (for people) or json (one object per line, for log collectors).
    #[arg(long, env = "INGEST_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Log every request (method, path, route, status, time, request id, peer) at info level
    /// under the target `access`.
    #[arg(long, env = "INGEST_ACCESS_LOG")]
    access_log: bool,
    /// Expected number of stored signatures: the dedup index is pre-sized for it, and its memory
    /// (about 16 bytes a signature) is taken at start rather than under the first signatures.
    #[arg(long, env = "INGEST_SIGNATURES_EXPECTED", default_value_t = 0)]
    signatures_expected: u64,
    /// Save the dedup index beside the store in the background each time this many more
    /// signatures are stored (0: only at a clean stop). A restart after a crash reads back only
    /// the signatures stored after the last one saved (about 0.2 s a million); each save writes
    /// the whole index (about 16 bytes a stored signature).
    #[arg(
        long,
        env = "INGEST_INDEX_SNAPSHOT_SIGNATURES",
        default_value_t = engine::INDEX_SNAPSHOT_SIGNATURES_DEFAULT
    )]
    index_snapshot_signatures: u64,
    /// How long a pending signature (to a petition with "validation": "email") waits for its
    /// token before it expires and its signer may sign again, e.g. 7d.
    #[arg(
        long,
        env = "INGEST_PENDING_GRACE",
        default_value = "7d",
        value_parser = positive_duration
    )]
    pending_grace: Duration,
    /// How often the background sweep drops expired pending signatures, e.g. 1s.
    #[arg(
        long,
        env = "INGEST_SWEEP_INTERVAL",
        default_value = "1s",
        value_parser = positive_duration
    )]
    sweep_interval: Duration,
    /// Most pending signatures one step of the expiry sweep reads: the bound on the engine
    /// writer's time per sweep step.
    #[arg(
        long,
        env = "INGEST_LIFECYCLE_STEP",
        default_value_t = Config::in_memory().lifecycle_step,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    lifecycle_step: usize,
    /// Most signatures one step of an invalidation job reads; the matching ones of a step are
    /// invalidated in one engine write.
    #[arg(
        long,
        env = "INGEST_INVALIDATION_STEP",
        default_value_t = Config::in_memory().invalidation_step,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    invalidation_step: usize,
    /// Most invalidation jobs running at once; past it, starting another gets 429.
    #[arg(
        long,
        env = "INGEST_INVALIDATION_JOBS_MAX",
        default_value_t = Config::in_memory().invalidation_jobs_max,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    invalidation_jobs_max: usize,
    /// Most distinct regions the store names, each kept in memory for good (~60 bytes); a
    /// signature naming a new region past it is refused with 422 (`region`). At most 4194303.
    #[arg(
        long,
        env = "INGEST_REGIONS_MAX",
        default_value_t = engine::REGIONS_MAX_DEFAULT,
        value_parser = clap::builder::RangedU64ValueParser::<u32>::new()
            .range(1..=u64::from(engine::REGIONS_LIMIT))
    )]
    regions_max: u32,
    /// How old the trending list (GET /v1/petitions?sort=trending) may be before a read
    /// computes it again, e.g. 1s; a list is also computed again when the minute changes.
    #[arg(
        long,
        env = "INGEST_TRENDING_REFRESH",
        default_value = "1s",
        value_parser = positive_duration
    )]
    trending_refresh: Duration,
    /// Limits of signatures per (petition, address), for signatures that carry an `ip`:
    /// BURST/SECONDS,SUSTAINED/SECONDS (each "at most N in any S seconds"; the UK site's
    /// 1/60,5/300 by default), or off. Over a limit: 429 ip_rate_limited with Retry-After;
    /// addresses on the allow list (/v1/admin/allows) are exempt.
    #[arg(
        long,
        env = "INGEST_RATE_LIMITS",
        default_value = "1/60,5/300",
        value_parser = rate_limits_arg
    )]
    rate_limits: RateLimitsArg,
    /// (petition, address) pairs the limits remember at once, 32 bytes each (1000000: 32 MB).
    /// Past it the least recently active pair is forgotten, which can only let a signature
    /// through, never refuse one.
    #[arg(
        long,
        env = "INGEST_RATE_LIMIT_ENTRIES",
        default_value_t = 1_000_000,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1_000..=1 << 30)
    )]
    rate_limit_entries: usize,
    /// Trending sources (GET /v1/petitions/{id}/sources): the slot budget over all petitions,
    /// 32 bytes a slot (1048576: 32 MB; each petition signed in the last two hours also has 24
    /// slots an hour of its own), or off, which tracks no sources and raises no source_alert.
    #[arg(
        long,
        env = "INGEST_SOURCE_SLOTS",
        default_value = "1048576",
        value_parser = source_slots_arg
    )]
    source_slots: OptionArg<usize>,
    /// A source_alert event when one address, network or email domain reaches this many
    /// signatures to one petition in an hour (at most one per petition, source and clock
    /// hour), or off.
    #[arg(
        long,
        env = "INGEST_SOURCE_ALERT",
        default_value = "100",
        value_parser = source_alert_arg
    )]
    source_alert: OptionArg<u64>,
    /// Most event stream readers (GET /v1/events/stream) connected at once; past it, 503.
    #[arg(
        long,
        env = "INGEST_SSE_READERS_MAX",
        default_value_t = 10_000,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    sse_readers_max: usize,
    /// How often an idle event stream gets a heartbeat comment, e.g. 15s.
    #[arg(
        long,
        env = "INGEST_SSE_HEARTBEAT",
        default_value = "15s",
        value_parser = positive_duration
    )]
    sse_heartbeat: Duration,
    /// An event stream reader whose socket takes nothing for this long is disconnected.
    #[arg(
        long,
        env = "INGEST_SSE_STALL_TIMEOUT",
        default_value = "30s",
        value_parser = positive_duration
    )]
    sse_stall_timeout: Duration,
    /// An event stream writes at most once per this time; events that come sooner go out
    /// together in the next write (0: each at once), e.g. 30ms.
    #[arg(long, env = "INGEST_SSE_LINGER", default_value = "30ms", value_parser = duration)]
    sse_linger: Duration,
    /// Events the stream readers share in one ring; a reader further behind gets a `lagged`
    /// event and is disconnected (it resumes with Last-Event-ID).
    #[arg(
        long,
        env = "INGEST_SSE_BUFFER",
        default_value_t = 4_096,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000)
    )]
    sse_buffer: usize,
    /// Networks webhooks may be delivered to although they are loopback, private, link-local
    /// or unique-local (refused by default, against server-side request forgery), as
    /// comma-separated CIDRs or addresses, e.g. 10.1.0.0/16,127.0.0.1.
    #[arg(
        long,
        env = "INGEST_WEBHOOK_ALLOW_NETWORKS",
        default_value = "",
        value_parser = allowed_networks
    )]
    webhook_allow_networks: AllowedNetworks,
    /// Bound on one webhook delivery attempt (connect, send, read the answer), e.g. 10s.
    #[arg(
        long,
        env = "INGEST_WEBHOOK_TIMEOUT",
        default_value = "10s",
        value_parser = positive_duration
    )]
    webhook_timeout: Duration,
    /// The wait before the first retry of a failed webhook delivery; each further failure in a
    /// row doubles it, up to 5 minutes. At most 5s.
    #[arg(
        long,
        env = "INGEST_WEBHOOK_RETRY_FIRST",
        default_value = "1s",
        value_parser = retry_first
    )]
    webhook_retry_first: Duration,
    /// Async worker threads (default: one per core).
    #[arg(long, env = "INGEST_THREADS")]
    threads: Option<usize>,
}

fn retry_first(text: &str) -> Result<Duration, String> {
    match positive_duration(text)? {
        d if d > Duration::from_secs(5) => Err("must be at most 5s".to_string()),
        d => Ok(d),
    }
}

fn allowed_networks(text: &str) -> Result<AllowedNetworks, String> {
    AllowedNetworks::parse(text).map_err(|e| e.to_string())
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 500ms, 10s, 1m)"))
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        d if d.is_zero() => Err("must be longer than 0".to_string()),
        d => Ok(d),
    }
}

/// `--durability`: the engine's own names and parser, listed in `--help` and in errors.
fn durability_parser() -> impl clap::builder::TypedValueParser<Value = Durability> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Durability::ALL.map(Durability::as_str)).map(|name| {
        name.parse::<Durability>()
            .expect("each possible value is a durability's own name")
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if args.log_format == "json" {
        logs.json().flatten_event(true).init();
    } else {
        logs.with_ansi(std::io::stdout().is_terminal()).init();
    }
    if args.sse_stall_timeout <= args.sse_heartbeat {
        // A healthy idle stream is asked for data once a heartbeat: a stall timeout no longer
        // than that would close it.
        clap::Error::raw(
            clap::error::ErrorKind::ArgumentConflict,
            "--sse-stall-timeout must be longer than --sse-heartbeat\n",
        )
        .exit();
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime.build().context("cannot start the async runtime")?;

    let mut config = if args.in_memory {
        Config::in_memory()
    } else {
        Config::persistent(&args.data_dir)
    };
    config.durability = args.durability;
    config.signatures_expected = args.signatures_expected;
    config.index_snapshot_signatures = args.index_snapshot_signatures;
    config.pending_grace = args.pending_grace;
    config.sweep_interval = Some(args.sweep_interval);
    config.lifecycle_step = args.lifecycle_step;
    config.invalidation_step = args.invalidation_step;
    config.invalidation_jobs_max = args.invalidation_jobs_max;
    config.regions_max = args.regions_max;
    config.trending_refresh = args.trending_refresh;
    config.rate_limits = args.rate_limits.0.map(|(burst, sustained)| RateLimits {
        burst,
        sustained,
        entries: args.rate_limit_entries,
    });
    config.sources = args.source_slots.0.map(|slots| SourcesConfig {
        alert_threshold: args.source_alert.0,
        slots,
    });
    let server_config = server_config(&args);
    if let Some(nats) = &args.nats {
        if args.in_memory {
            anyhow::bail!("--nats needs a data directory, not --in-memory");
        }
        // The log holds every write on a quorum of NATS servers, fsynced: the local store is
        // its copy and need not sync.
        config.durability = Durability::Buffered;
        let cluster = ingest_server::cluster::ClusterConfig {
            nats: nats.clone(),
            node: args.node.clone().unwrap_or_else(|| args.listen.to_string()),
            name: args.cluster_name.clone(),
            replicas: usize::from(args.cluster_replicas),
            lease_ttl: args.lease_ttl,
            advertise: args
                .advertise
                .clone()
                .unwrap_or_else(|| args.listen.to_string()),
            snapshot_bytes: args.snapshot_bytes,
        };
        tracing::info!(node = %cluster.node, nats = %cluster.nats, "replicated: joining as a standby");
        runtime.block_on(ingest_server::cluster::run(
            cluster,
            config,
            server_config,
            shutdown_signal(),
        ))?;
        tracing::info!("closed cleanly");
        return Ok(());
    }
    let opening = Instant::now();
    let engine = Engine::open(config)
        .with_context(|| format!("cannot open the store in {}", args.data_dir.display()))?;
    let stats = engine.stats();
    if args.in_memory {
        tracing::warn!("IN-MEMORY MODE: nothing is persisted, every signature is lost on exit");
    } else {
        tracing::info!(
            data_dir = %args.data_dir.display(),
            durability = stats.durability.as_str(),
            petitions = stats.petitions,
            signatures = stats.signatures,
            "store open, counts loaded in {:.3} s",
            opening.elapsed().as_secs_f64()
        );
    }
    if args.durability == Durability::None && !args.in_memory {
        tracing::warn!(
            "DURABILITY NONE: acknowledged signatures can be lost on a crash; benchmarks only"
        );
    }

    let result = runtime.block_on(async {
        let server = Server::bind(server_config, engine.clone())
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        if server.open_mode() {
            tracing::warn!(
                "NO API KEY CONFIGURED: open mode, anyone who can reach {} may submit signatures, \
                 manage petitions and invalidate signatures. Set --api-key ROLE:KEY (or \
                 INGEST_API_KEYS).",
                server.local_addr()
            );
        }
        tracing::info!(listen = %server.local_addr(), "listening");
        let waiting = engine.clone();
        tokio::task::spawn_blocking(move || match waiting.wait_ready() {
            Ok(()) => {
                let stats = waiting.stats();
                match stats.recovery_index_from {
                    Some(mark) => tracing::info!(
                        signatures = stats.recovery_loaded,
                        mark,
                        "dedup index loaded from the saved one, signatures from its mark on read back: ready after {:.3} s",
                        stats.recovery_seconds
                    ),
                    None => tracing::info!(
                        signatures = stats.recovery_loaded,
                        "dedup index rebuilt: ready after {:.3} s",
                        stats.recovery_seconds
                    ),
                }
            }
            Err(e) => tracing::error!("recovery failed, not ready: {e}"),
        });
        let report = server.run(shutdown_signal()).await?;
        tracing::info!(
            connections_cut = report.connections_cut,
            "drained and flushed in {:.3} s",
            report.elapsed.as_secs_f64()
        );
        anyhow::Ok(())
    });
    let closed = engine.close().context("final flush failed");
    result.and(closed)?;
    tracing::info!("closed cleanly");
    Ok(())
}

/// The server's settings from the flags.
fn server_config(args: &Args) -> ServerConfig {
    let mut server_config = ServerConfig::default();
    server_config.listen = args.listen;
    server_config.api_keys = args.api_keys.clone();
    server_config.body_bytes_max = args.body_bytes_max;
    server_config.batch_bytes_max = args.batch_bytes_max;
    server_config.body_buffer_bytes_max = args.body_buffer_bytes_max;
    server_config.batch_lines_max = args.batch_lines_max;
    server_config.header_read_timeout = args.header_timeout;
    server_config.body_read_timeout = args.body_timeout;
    server_config.idle_timeout = args.idle_timeout;
    server_config.connections_max = args.connections_max;
    server_config.inflight_max = args.inflight_max;
    server_config.batch_inflight_max = args.batch_inflight_max;
    server_config.rate_limit_per_key = args.rate_limit_per_key;
    server_config.drain_timeout = args.drain_timeout;
    server_config.shutdown_delay = args.shutdown_delay;
    server_config.access_log = args.access_log;
    server_config.sse_readers_max = args.sse_readers_max;
    server_config.sse_heartbeat = args.sse_heartbeat;
    server_config.sse_stall_timeout = args.sse_stall_timeout;
    server_config.sse_linger = args.sse_linger;
    server_config.sse_buffer = args.sse_buffer;
    server_config.webhook_allow_networks = args.webhook_allow_networks.clone();
    server_config.webhook_timeout = args.webhook_timeout;
    server_config.webhook_retry_first = args.webhook_retry_first;
    server_config
}

/// `--cluster-name`: a NATS stream and bucket name part.
fn cluster_name(text: &str) -> Result<String, String> {
    let good = !text.is_empty()
        && text.len() <= 32
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if good {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?}: 1 to 32 of A-Z a-z 0-9 - _"))
    }
}

/// `--lease-ttl`: between 1 s and 1 min.
fn lease_ttl(text: &str) -> Result<Duration, String> {
    let ttl = duration(text)?;
    if (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
        Ok(ttl)
    } else {
        Err(format!("{text:?}: between 1s and 60s"))
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown signal received");
}

/// `--rate-limits`: two windows, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RateLimitsArg(Option<(Window, Window)>);

fn rate_limits_arg(text: &str) -> Result<RateLimitsArg, String> {
    RateLimits::parse_windows(text).map(RateLimitsArg)
}

/// A number, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OptionArg<T>(Option<T>);

fn source_slots_arg(text: &str) -> Result<OptionArg<usize>, String> {
    if text == "off" {
        return Ok(OptionArg(None));
    }
    let slots = text
        .parse()
        .map_err(|_| format!("{text:?}: a number of slots or off"))?;
    let config = SourcesConfig {
        slots,
        ..SourcesConfig::DEFAULT
    };
    config
        .check()
        .map(|()| OptionArg(Some(slots)))
        .map_err(str::to_owned)
}

fn source_alert_arg(text: &str) -> Result<OptionArg<u64>, String> {
    if text == "off" {
        return Ok(OptionArg(None));
    }
    let threshold = text
        .parse()
        .map_err(|_| format!("{text:?}: signatures an hour, or off"))?;
    let config = SourcesConfig {
        alert_threshold: Some(threshold),
        ..SourcesConfig::DEFAULT
    };
    config
        .check()
        .map(|()| OptionArg(Some(threshold)))
        .map_err(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_flags_default_to_the_engine_defaults() {
        // The counts take the engine's defaults; the durations are written as text for clap,
        // so this keeps them equal to the engine's.
        let args = Args::try_parse_from(["ingest-server"]).expect("defaults parse");
        let engine = Config::in_memory();
        assert_eq!(args.pending_grace, engine::PENDING_GRACE_DEFAULT);
        assert_eq!(Some(args.sweep_interval), engine.sweep_interval);
        assert_eq!(args.lifecycle_step, engine.lifecycle_step);
        assert_eq!(args.invalidation_step, engine.invalidation_step);
        assert_eq!(args.invalidation_jobs_max, engine.invalidation_jobs_max);
        assert_eq!(args.regions_max, engine.regions_max);
        assert_eq!(args.trending_refresh, engine.trending_refresh);
        let limits = engine.rate_limits.expect("on by default");
        assert_eq!(
            args.rate_limits,
            RateLimitsArg(Some((limits.burst, limits.sustained)))
        );
        assert_eq!(args.rate_limit_entries, limits.entries);
        let sources = engine.sources.expect("on by default");
        assert_eq!(args.source_slots, OptionArg(Some(sources.slots)));
        assert_eq!(args.source_alert, OptionArg(sources.alert_threshold));
    }

    #[test]
    fn engine_flags_refuse_what_is_out_of_range() {
        for flag in [
            "--pending-grace=0s",
            "--sweep-interval=0ms",
            "--lifecycle-step=0",
            "--invalidation-step=0",
            "--invalidation-jobs-max=0",
            "--regions-max=0",
            "--regions-max=4194304",
            "--trending-refresh=0s",
            "--rate-limits=1/60",
            "--rate-limits=0/60,5/300",
            "--rate-limits=1/60,6/300",
            "--rate-limits=1/0,5/300",
            "--rate-limits=1/60,5/x",
            "--rate-limits=none",
            "--rate-limit-entries=999",
            "--source-slots=1023",
            "--source-slots=none",
            "--source-alert=0",
            "--source-alert=4294967296",
            "--lease-ttl=0s",
            "--lease-ttl=500ms",
            "--lease-ttl=61s",
            "--cluster-name=",
            "--cluster-name=a.b",
            "--cluster-name=a*",
            "--cluster-replicas=0",
            "--cluster-replicas=6",
        ] {
            assert!(
                Args::try_parse_from(["ingest-server", flag]).is_err(),
                "{flag} is refused"
            );
        }
        let args = Args::try_parse_from(["ingest-server", "--pending-grace=2d"]).expect("parses");
        assert_eq!(args.pending_grace, Duration::from_secs(2 * 24 * 3600));
        let args = Args::try_parse_from([
            "ingest-server",
            "--regions-max=4194303",
            "--trending-refresh=250ms",
        ])
        .expect("parses");
        assert_eq!(args.regions_max, engine::REGIONS_LIMIT);
        assert_eq!(args.trending_refresh, Duration::from_millis(250));
        let args =
            Args::try_parse_from(["ingest-server", "--source-slots=off", "--source-alert=off"])
                .expect("parses");
        assert_eq!(args.source_slots, OptionArg(None));
        assert_eq!(args.source_alert, OptionArg(None));
        let args = Args::try_parse_from([
            "ingest-server",
            "--lease-ttl=1s",
            "--cluster-name=eu_west-1",
            "--cluster-replicas=5",
        ])
        .expect("parses");
        assert_eq!(args.lease_ttl, Duration::from_secs(1));
        assert_eq!(args.cluster_name, "eu_west-1");
        assert_eq!(args.cluster_replicas, 5);
        let args = Args::try_parse_from(["ingest-server", "--rate-limits=off"]).expect("parses");
        assert_eq!(args.rate_limits, RateLimitsArg(None));
        let args = Args::try_parse_from(["ingest-server", "--rate-limits", "2/10, 5/3600"])
            .expect("parses");
        assert_eq!(
            args.rate_limits,
            RateLimitsArg(Some((
                Window {
                    count: 2,
                    seconds: 10
                },
                Window {
                    count: 5,
                    seconds: 3600
                }
            )))
        );
    }
}
