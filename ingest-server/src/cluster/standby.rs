//! The standby: its HTTP front, and its tail of the stream until it takes the lease.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::lease::Taken;
use super::{ClusterConfig, ClusterStatus, Links, NatsLog, Promoted, Role};
use crate::config::ServerConfig;
use crate::response::{error, json, Response};

/// The standby's HTTP front: answers `/livez`, `/readyz` and `/metrics` itself and forwards
/// everything else to the owner. The event stream is the owner's alone: 503 with its address.
pub(super) struct Front {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

struct FrontState {
    client: async_nats::Client,
    subject: String,
    status: Arc<ClusterStatus>,
    body_max: usize,
    retry_after_s: u32,
}

impl Front {
    pub async fn bind(
        config: &ServerConfig,
        client: async_nats::Client,
        cluster: &ClusterConfig,
        status: &Arc<ClusterStatus>,
    ) -> std::io::Result<Front> {
        let listener = TcpListener::bind(config.listen).await?;
        let state = Arc::new(FrontState {
            client,
            subject: cluster.forward_subject(),
            status: Arc::clone(status),
            body_max: config.batch_bytes_max.max(config.body_bytes_max),
            retry_after_s: config.retry_after_s,
        });
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    },
                    _ = stopped.changed() => return,
                };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, std::convert::Infallible>(front(&state, request).await) }
                    });
                    let connection = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    // A role change closes the standby's connections: their clients reconnect
                    // to the owner's front.
                    tokio::select! {
                        _ = connection => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        });
        Ok(Front { stop, task })
    }

    /// Stops accepting and closes the listener and every connection.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn front(state: &FrontState, request: hyper::Request<hyper::body::Incoming>) -> Response {
    let (parts, body) = request.into_parts();
    let get = parts.method == hyper::Method::GET || parts.method == hyper::Method::HEAD;
    match parts.uri.path() {
        "/livez" if get => return json(StatusCode::OK, r#"{"status":"live"}"#),
        "/readyz" if get => return readyz(state),
        "/metrics" if get => {
            let mut response =
                hyper::Response::new(Full::new(Bytes::from(state.status.metrics_text())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(crate::exposition::Format::Text.content_type()),
            );
            return response;
        }
        "/v1/events/stream" => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_owner",
                format_args!(
                    "the event stream is served by the owner: {}",
                    state.status.owner.lock()
                ),
            )
        }
        _ => {}
    }
    let body = match Limited::new(body, state.body_max).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format_args!("the body is over {} bytes or broke off", state.body_max),
            )
        }
    };
    super::forward::send(
        &state.client,
        &state.subject,
        &parts,
        body,
        state.retry_after_s,
    )
    .await
}

fn readyz(state: &FrontState) -> Response {
    let fields = state.status.json_fields();
    if state.status.owner.lock().is_empty() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(r#"{{"status":"no_owner",{fields}}}"#),
        );
    }
    json(StatusCode::OK, format!(r#"{{"status":"ready",{fields}}}"#))
}

/// Tails the stream into the node's store (and its dedup index), trying to take the lease every
/// quarter of its TTL; once it has, catches up to the stream's end and marks its epoch. `None`:
/// stopped first.
pub(super) async fn follow_until_owner(
    links: &Links,
    cluster: &ClusterConfig,
    engine_config: &engine::Config,
    status: &Arc<ClusterStatus>,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<Option<Promoted>> {
    let Links {
        js,
        stream,
        lease,
        snapshots,
        ..
    } = links;
    let mut follower = open_follower(engine_config).await?;
    // A store from before the stream's first entry cannot follow it: it starts from the latest
    // snapshot instead.
    let state = stream
        .get_info()
        .await
        .context("cannot read the stream's state")?
        .state;
    let first = state.first_sequence;
    if follower.position() + 1 < first {
        tracing::info!(
            position = follower.position(),
            first,
            "the store is behind the stream's first entry: restoring the latest snapshot"
        );
        close_follower(follower).await;
        let started = std::time::Instant::now();
        let position =
            super::snapshot::restore(snapshots, &super::data_dir(engine_config)?, first).await?;
        tracing::info!(
            position,
            seconds = format!("{:.3}", started.elapsed().as_secs_f64()),
            "snapshot restored"
        );
        status.snapshot_position.store(position, Ordering::Relaxed);
        follower = open_follower(engine_config).await?;
    }
    status
        .position
        .store(follower.position(), Ordering::Relaxed);
    status
        .epoch
        .store(follower.epoch().unwrap_or(0), Ordering::Relaxed);
    if state.last_sequence > 0 && follower.position() >= state.last_sequence {
        // Nothing to apply: the store holds the stream's newest entry, appended then.
        let appended = state.last_timestamp.unix_timestamp_nanos() / 1_000_000;
        status
            .applied_at_ms
            .store(u64::try_from(appended).unwrap_or(0), Ordering::Relaxed);
    }
    let mut tail = Tail::open(stream, follower.position()).await?;
    let mut next_try = tokio::time::Instant::now();
    let mut next_look = tokio::time::Instant::now() + STALL_LOOK;
    let mut looked_at = follower.position();
    let epoch = loop {
        tokio::select! {
            message = tail.next() => {
                follower = tail.apply(follower, message, status).await?;
            }
            () = tokio::time::sleep_until(next_look) => {
                next_look = tokio::time::Instant::now() + STALL_LOOK;
                // A tail that delivered nothing while the stream has entries after the store's
                // position has stalled (seen after the server cut a slow client off): tail
                // again from the position.
                if follower.position() == looked_at {
                    let last = stream.get_info().await.map(|info| info.state.last_sequence);
                    if last.is_ok_and(|last| last > follower.position()) {
                        tracing::warn!(position = follower.position(), "the tail stalled: tailing again");
                        tail = Tail::open(stream, follower.position()).await?;
                    }
                }
                looked_at = follower.position();
            }
            () = tokio::time::sleep_until(next_try) => {
                next_try = tokio::time::Instant::now() + cluster.lease_ttl / 4;
                match tokio::time::timeout(cluster.lease_ttl / 4, lease.take()).await {
                    Ok(Ok(Taken::Mine(epoch))) => break epoch,
                    Ok(Ok(Taken::Held(holder))) => *status.owner.lock() = holder,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot reach the lease");
                        status.owner.lock().clear();
                    }
                    Err(_) => {
                        tracing::warn!("the lease did not answer in time");
                        status.owner.lock().clear();
                    }
                }
            }
            _ = stopped.changed() => {
                close_follower(follower).await;
                return Ok(None);
            }
        }
    };
    let keeper = lease.keep(epoch);
    status.set_role(Role::Promoting);
    *status.owner.lock() = format!("{} at {}", cluster.node, cluster.advertise);
    tracing::info!(
        epoch,
        position = follower.position(),
        "lease taken: catching up"
    );
    loop {
        if keeper.is_lost() {
            close_follower(follower).await;
            anyhow::bail!("the lease was lost while catching up");
        }
        let last = match tokio::time::timeout(cluster.lease_ttl, stream.get_info()).await {
            Ok(Ok(info)) => info.state.last_sequence,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the stream's end");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(_) => {
                tracing::warn!("the stream's end did not come in time");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        while follower.position() < last {
            let message = tokio::time::timeout(cluster.lease_ttl, tail.next())
                .await
                .context("the stream did not deliver while catching up")?;
            follower = tail.apply(follower, message, status).await?;
        }
        let log = NatsLog::new(
            js.clone(),
            cluster.subject(),
            epoch,
            follower.position() + 1,
            Arc::clone(status),
        );
        let marking = Arc::clone(&log);
        let (back, marked) = tokio::task::spawn_blocking(move || {
            let marked = follower.mark_epoch(marking, epoch);
            (follower, marked)
        })
        .await
        .context("marking the epoch")?;
        follower = back;
        match marked {
            Ok(()) => {
                tracing::info!(
                    epoch,
                    position = follower.position(),
                    "caught up and epoch marked: opening the engine"
                );
                status.epoch.store(epoch, Ordering::Relaxed);
                status
                    .position
                    .store(follower.position(), Ordering::Relaxed);
                return Ok(Some(Promoted {
                    epoch,
                    log,
                    keeper,
                    follower,
                }));
            }
            // The old owner appended after the end was read, or the stream is unavailable:
            // catch up again.
            Err(e) => tracing::info!(error = %e, "the epoch mark was refused: catching up again"),
        }
    }
}

/// Opens the node's store as a follower that keeps the dedup index (read from the store first),
/// so that the engine it becomes is ready at once.
async fn open_follower(config: &engine::Config) -> anyhow::Result<engine::Follower> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || engine::Follower::open_warm(&config))
        .await
        .context("opening the store")?
        .context("cannot open the store to follow the log")
}

async fn close_follower(follower: engine::Follower) {
    let closed = tokio::task::spawn_blocking(move || follower.close()).await;
    if let Ok(Err(e)) = closed {
        tracing::warn!(error = %e, "closing the follower's store failed");
    }
}

/// How often a standby checks that its tail delivers while the stream has more.
const STALL_LOOK: Duration = Duration::from_secs(5);

/// Entries a tail asks for at once: the log's entries are up to `max_payload` (8 MB in the
/// deployments described), and NATS cuts off a client more than 64 MiB behind.
const TAIL_BATCH: i64 = 16;

/// The stream's entries from a position on, in order.
struct Tail {
    messages: consumer::pull::Ordered,
}

type Next = Option<Result<jetstream::Message, consumer::pull::OrderedError>>;

impl Tail {
    async fn open(stream: &jetstream::stream::Stream, position: u64) -> anyhow::Result<Tail> {
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: position + 1,
                },
                max_batch: TAIL_BATCH,
                ..Default::default()
            })
            .await
            .context("cannot tail the log")?;
        let messages = consumer.messages().await.context("cannot tail the log")?;
        Ok(Tail { messages })
    }

    async fn next(&mut self) -> Next {
        self.messages.next().await
    }

    /// Applies one delivered entry (on a blocking thread: it writes to RocksDB).
    async fn apply(
        &mut self,
        mut follower: engine::Follower,
        message: Next,
        status: &Arc<ClusterStatus>,
    ) -> anyhow::Result<engine::Follower> {
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "tailing the log");
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Ok(follower);
            }
            None => anyhow::bail!("the log's tail ended"),
        };
        let (position, pending, published) = {
            let info = message
                .info()
                .map_err(|e| anyhow::anyhow!("a log message without its position: {e}"))?;
            let published = info.published.unix_timestamp_nanos() / 1_000_000;
            (info.stream_sequence, info.pending, published)
        };
        if position <= follower.position() {
            return Ok(follower);
        }
        let payload = message.payload.clone();
        let (back, applied) = tokio::task::spawn_blocking(move || {
            let applied = follower.apply(position, &payload);
            (follower, applied)
        })
        .await
        .context("applying an entry")?;
        applied.with_context(|| format!("cannot apply log entry {position}"))?;
        status.position.store(position, Ordering::Relaxed);
        status.lag.store(pending, Ordering::Relaxed);
        status
            .applied_at_ms
            .store(u64::try_from(published).unwrap_or(0), Ordering::Relaxed);
        if let Ok(epoch) = back.epoch() {
            status.epoch.store(epoch, Ordering::Relaxed);
        }
        Ok(back)
    }
}
