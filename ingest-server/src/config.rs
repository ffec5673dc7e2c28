//! Server limits and settings.

use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::ApiKey;
use crate::webhooks::guard::AllowedNetworks;

/// Everything the server needs besides the engine. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// API keys and their roles. Empty: open mode, every caller is admin (a loud warning).
    pub api_keys: Vec<ApiKey>,
    /// Largest body of a single-signature or admin request, in bytes.
    pub body_bytes_max: usize,
    /// Largest body of a batch request, in bytes.
    pub batch_bytes_max: usize,
    /// Most bytes of batch bodies held at once, across all connections: bodies being read and
    /// bodies read but not yet handed to the engine. Charged as bytes arrive, so a body that
    /// stalls holds only what it sent; past it, 503 `overloaded`. Never less than
    /// `batch_bytes_max`. Single-signature and admin bodies have their own budget,
    /// `inflight_max` × `body_bytes_max`, so stalled batches cannot starve them.
    pub body_buffer_bytes_max: usize,
    /// Most lines in one batch request.
    pub batch_lines_max: usize,
    /// A request's headers must arrive within this time (slowloris protection). The clock
    /// starts when the connection is accepted, and again at the first byte of each later
    /// request.
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// A request's body must arrive within this time, else 408.
    pub body_read_timeout: Duration,
    /// Most open connections; past it new connections get 503 and are closed.
    pub connections_max: usize,
    /// Most single-signature and admin requests in flight; past it, 503 at once. A request
    /// takes its slot once its body is read, so slow bodies never hold one.
    pub inflight_max: usize,
    /// Most batch requests in flight; past it, 503 at once. Taken once the body is read, as
    /// for `inflight_max`.
    pub batch_inflight_max: usize,
    /// Signatures and validations per second each API key may submit (0: no limit); past it,
    /// 429.
    pub rate_limit_per_key: u32,
    /// How long a drain waits for in-flight requests before closing connections.
    pub drain_timeout: Duration,
    /// How long after the shutdown signal the server keeps its listener open while `/readyz`
    /// answers 503 and every answer carries `Connection: close`, so that a load balancer
    /// takes the server out of rotation before connections are refused (0: the listener
    /// closes at once).
    pub shutdown_delay: Duration,
    /// Log every request at info level under the target `access`: method, path, route,
    /// status, time taken, request id and peer address.
    pub access_log: bool,
    /// The `Retry-After` value of 503 and 429 answers, in seconds.
    pub retry_after_s: u32,
    /// Most event stream readers connected at once; past it, 503.
    pub sse_readers_max: usize,
    /// How often an idle event stream gets a heartbeat comment.
    pub sse_heartbeat: Duration,
    /// A stream reader whose socket takes nothing for this long is disconnected.
    pub sse_stall_timeout: Duration,
    /// A stream writes at most once per this time: events that come sooner go out together in
    /// the next write (0: every event at once). Fewer, larger writes when the feed is busy.
    pub sse_linger: Duration,
    /// Events the stream readers share in one ring: a reader further behind is told so
    /// (`lagged`) and disconnected, and resumes with `Last-Event-ID`.
    pub sse_buffer: usize,
    /// Networks webhooks may be delivered to although they are loopback, private, link-local
    /// or unique-local (refused by default, against server-side request forgery).
    pub webhook_allow_networks: AllowedNetworks,
    /// Bound on one delivery attempt: connect, send, read the answer's head.
    pub webhook_timeout: Duration,
    /// The wait before the first retry of a failed delivery; each further failure in a row
    /// doubles it, up to 5 minutes.
    pub webhook_retry_first: Duration,
    /// The node's place in a replicated deployment (set by `cluster::run`): `/readyz` and
    /// `/metrics` tell it.
    pub(crate) cluster: Option<std::sync::Arc<crate::cluster::ClusterStatus>>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_keys: Vec::new(),
            body_bytes_max: 16 * 1024,
            batch_bytes_max: 8 * 1024 * 1024,
            body_buffer_bytes_max: 256 * 1024 * 1024,
            batch_lines_max: 10_000,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(10),
            connections_max: 10_000,
            inflight_max: 4_096,
            batch_inflight_max: 32,
            rate_limit_per_key: 0,
            drain_timeout: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
            access_log: false,
            retry_after_s: 1,
            sse_readers_max: 10_000,
            sse_heartbeat: Duration::from_secs(15),
            sse_stall_timeout: Duration::from_secs(30),
            sse_linger: Duration::from_millis(30),
            sse_buffer: 4_096,
            webhook_allow_networks: AllowedNetworks::default(),
            webhook_timeout: Duration::from_secs(10),
            webhook_retry_first: Duration::from_secs(1),
            cluster: None,
        }
    }
}
