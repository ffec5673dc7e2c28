//! The listener: accepts connections under a limit, serves HTTP/1.1 on each, drains on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{Engine, FlushError};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::config::ServerConfig;
use crate::handlers;
use crate::state::State;
use crate::watchdog::{Clock, Expired, Watched};

/// A bound server, ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    state: Arc<State>,
}

/// How a drain went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections still open when the drain deadline passed (0: all finished in time).
    pub connections_cut: usize,
    /// How long the drain and the final flush took.
    pub elapsed: Duration,
}

impl Server {
    /// Binds the listener. The engine may still be recovering: `/readyz` says so, and signature
    /// requests get 503 `recovering` until it is ready.
    pub async fn bind(config: ServerConfig, engine: Engine) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        let state = State::new(config, engine);
        Ok(Server {
            listener,
            state: Arc::new(state),
        })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.state.config.listen)
    }

    /// What the handlers share (for requests forwarded over NATS, `cluster::forward`).
    pub(crate) fn shared(&self) -> Arc<State> {
        Arc::clone(&self.state)
    }

    /// Whether no API key is configured (every caller is admin).
    pub fn open_mode(&self) -> bool {
        self.state.keys.open_mode()
    }

    /// Serves until `shutdown` completes, then drains: `/readyz` turns 503, the listener closes,
    /// in-flight requests finish (up to the drain timeout), and the engine flushes and syncs
    /// everything queued. The engine stays open; the caller closes it.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<DrainReport, FlushError> {
        let Server { listener, state } = self;
        let hub = {
            let (hub, engine) = (Arc::clone(&state.hub), state.engine.clone());
            let stop = state.stop_streams.subscribe();
            tokio::spawn(async move { hub.run(engine, stop).await })
        };
        let deliveries = start_deliveries(&state);
        tokio::spawn(watch_storage(
            state.engine.clone(),
            state.stop_streams.subscribe(),
        ));
        let connections = Arc::new(Semaphore::new(state.config.connections_max));
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        // Set once the shutdown signal came, when a shutdown delay is configured: until then
        // the listener still accepts.
        let mut listen_until: Option<tokio::time::Instant> = None;
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown, if listen_until.is_none() => {
                    let delay = state.config.shutdown_delay;
                    if delay.is_zero() {
                        break;
                    }
                    state.draining.store(true, Ordering::Release);
                    tracing::info!(
                        delay = %humantime::format_duration(delay),
                        "shutting down: /readyz answers 503 and every answer closes its \
                         connection; the listener closes after the delay"
                    );
                    listen_until = Some(tokio::time::Instant::now() + delay);
                    continue;
                }
                () = sleep_until(listen_until), if listen_until.is_some() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                state
                    .metrics
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                tokio::spawn(refuse(stream, state.config.retry_after_s));
                continue;
            };
            let _ = stream.set_nodelay(true);
            let clock = Clock::new();
            let service_clock = clock.clone();
            let service_state = state.clone();
            let connection = http1::Builder::new()
                .max_buf_size(64 * 1024)
                .max_header_size(32 * 1024)
                .keep_alive(true)
                .serve_connection(
                    TokioIo::new(Watched::new(stream, clock.clone())),
                    service_fn(move |request| {
                        handlers::handle(
                            service_state.clone(),
                            service_clock.clone(),
                            peer,
                            request,
                        )
                    }),
                );
            let connection = graceful.watch(connection);
            let task_state = state.clone();
            task_state
                .metrics
                .connections_open
                .fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let config = &task_state.config;
                let (headers, idle) = (config.header_read_timeout, config.idle_timeout);
                let stall = config.sse_stall_timeout;
                let mut tick = tokio::time::interval(Clock::period(headers, idle));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut connection = std::pin::pin!(connection);
                loop {
                    // The connection first: it is what wakes this task almost every time.
                    tokio::select! {
                        biased;
                        ended = &mut connection => {
                            if let Err(e) = ended {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                            break;
                        }
                        _ = tick.tick() => {
                            if let Some(why) = clock.expired(headers, idle, stall) {
                                if why == Expired::Stalled {
                                    task_state.metrics.stream_stalled.fetch_add(1, Ordering::Relaxed);
                                }
                                // Dropping the connection closes the socket.
                                tracing::debug!(?why, "closing a slow or idle connection");
                                break;
                            }
                        }
                    }
                }
                task_state
                    .metrics
                    .connections_open
                    .fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            });
        }

        let started = Instant::now();
        state.draining.store(true, Ordering::Release);
        // Event streams end and webhook deliveries stop (an attempt in flight is sent again
        // after the restart): neither would finish on its own.
        state.stop_streams.send_replace(true);
        let _ = tokio::join!(hub, deliveries);
        drop(listener);
        tracing::info!("draining: listener closed, finishing in-flight requests");
        let connections_cut =
            match tokio::time::timeout(state.config.drain_timeout, graceful.shutdown()).await {
                Ok(()) => 0,
                Err(_) => {
                    let open = state.metrics.connections_open.load(Ordering::Relaxed);
                    tracing::warn!(
                        connections = open,
                        "drain timeout passed, closing remaining connections"
                    );
                    usize::try_from(open).unwrap_or(0)
                }
            };
        let engine = state.engine.clone();
        let flushed = tokio::task::spawn_blocking(move || engine.flush())
            .await
            .unwrap_or(Err(FlushError::ShutDown));
        flushed?;
        Ok(DrainReport {
            connections_cut,
            elapsed: started.elapsed(),
        })
    }
}

/// Starts webhook delivery on a thread of its own with a single-threaded runtime, so that a
/// delivery's hops are not queued behind the tasks of every stream reader the same event woke
/// (on two cores, with 1,000 readers, that queue made a delivery wait tens of milliseconds per
/// hop). Completes when delivery has stopped.
fn start_deliveries(state: &Arc<State>) -> tokio::task::JoinHandle<()> {
    let (done, stopped) = tokio::sync::oneshot::channel::<()>();
    let deliveries = Arc::clone(&state.deliveries);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let thread = runtime.and_then(|runtime| {
        std::thread::Builder::new()
            .name("webhooks".into())
            .spawn(move || {
                runtime.block_on(deliveries.supervise());
                let _ = done.send(());
            })
    });
    match thread {
        Ok(_) => tokio::spawn(async move {
            let _ = stopped.await;
        }),
        Err(e) => {
            tracing::warn!(error = %e, "webhook delivery runs on the server's runtime");
            tokio::spawn(Arc::clone(&state.deliveries).supervise())
        }
    }
}

/// Answers a connection over the limit with 503 and closes it, without reading the request.
async fn refuse(mut stream: TcpStream, retry_after_s: u32) {
    let body = r#"{"error":{"code":"too_many_connections","message":"connection limit reached, retry shortly"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {retry_after_s}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent until it closes: closing with unread input would reset the
        // connection and could destroy the answer before the client reads it.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
}

/// Completes at `until`; never, without one.
async fn sleep_until(until: Option<tokio::time::Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}

/// Logs the store's health as it changes, until the server stops: an error when it starts
/// failing (signatures are refused from then on) and every 10 s while errors go on, info when
/// it is back.
async fn watch_storage(engine: Engine, mut stop: tokio::sync::watch::Receiver<bool>) {
    let (mut healthy, mut errors, _) = engine.storage_health();
    let mut logged = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let (now_healthy, now_errors, last_error) = engine.storage_health();
        let more = now_errors > errors;
        let last_error = last_error.unwrap_or_default();
        match (healthy, now_healthy) {
            (true, false) => tracing::error!(
                errors = now_errors,
                error = %last_error,
                "storage failing: signatures are refused until the store takes writes again"
            ),
            (false, true) => tracing::info!(errors = now_errors, "storage healthy again"),
            (false, false) if more && logged.elapsed() >= Duration::from_secs(10) => {
                tracing::error!(errors = now_errors, error = %last_error, "storage still failing");
            }
            (true, true) if more => tracing::warn!(
                errors = now_errors,
                error = %last_error,
                "storage error"
            ),
            // Nothing to say: the errors not yet logged are still new at the next tick.
            _ => continue,
        }
        logged = Instant::now();
        (healthy, errors) = (now_healthy, now_errors);
    }
}
