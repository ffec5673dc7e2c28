//! `--sse-readers` and `--webhook`: how long a threshold crossing takes from the answer that
//! acknowledged it to its event reaching the readers of the server's event stream and a webhook
//! receiver (`--threshold-step` makes the petitions cross thresholds all through a run).
//!
//! Three parties meet in one report:
//!
//! - the load: a connection that reads an accepted (or validated) answer whose count is one of
//!   the petition's thresholds notes the crossing and the instant it parsed the answer, in a
//!   buffer of its own that it hands to [`Crossings`] when it merges its counts;
//! - the SSE readers ([`SseReaders`]): N streams of `GET /v1/events/stream`, one task each, all
//!   connected before the load starts. Each parses its stream with an [`SseParser`] (child
//!   module `sse`: the WHATWG rules for `event`, `data`, `id` and comments, lines split
//!   anywhere across chunks) and, for each `threshold_crossed` event, takes one short lock on a
//!   board shared by all readers that holds, per (petition, threshold), how many readers got it
//!   and the first and last receipt. The board also maps each event's id to its crossing, so
//!   that once one reader has parsed an event's JSON the others need not;
//! - the webhook receiver ([`Webhook`]): a hyper server on 127.0.0.1, registered with the server
//!   as webhook `loadtest-<seed>` for `threshold_crossed`, that notes each delivery's receipt.
//!
//! After the load, [`Events::finish`] waits up to [`EVENTS_WAIT`] for the events of the
//! crossings acknowledged, closes the readers, deletes the webhook and joins the three into an
//! [`EventsReport`]. A crossing whose event never came is counted, not left out.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::cli::{RunArgs, Target};
use crate::client::{self, Client};
use crate::outcome;
use crate::report::{EventsReport, Percentiles, SseReport, WebhookReport};
use crate::shape;
use crate::stats::{new_histogram, LATENCY_MAX_US};

mod sse;

pub use sse::{SseEvent, SseParser, SseStop};

/// Most thresholds a petition may have (the server's bound); `--threshold-step K` registers K,
/// 2K, …, this many times K.
pub const THRESHOLDS_PER_PETITION: u64 = 32;

/// Most `--sse-readers`: each is a socket here and one on the server.
pub const SSE_READERS_MAX: u32 = 20_000;

/// How long, after the load, to wait for the events of the crossings acknowledged.
pub const EVENTS_WAIT: Duration = Duration::from_secs(5);

/// How often the wait looks whether every event has come.
const EVENTS_WAIT_POLL: Duration = Duration::from_millis(50);

/// SSE readers connecting at once, so that 20,000 of them do not overflow the server's accept
/// queue.
const READERS_OPENING_MAX: usize = 256;

/// Largest webhook delivery (or error body) read.
const BODY_BYTES_MAX: usize = 64 * 1024;

/// A threshold crossing: a petition of the run (`lt-<seed>-<petition>`) and a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Crossing {
    /// Index of the petition.
    pub petition: u32,
    /// The threshold its count reached.
    pub threshold: u64,
}

/// The thresholds every petition of the run has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Thresholds {
    /// `--threshold-step K`: K, 2K, …, 32K.
    Step(u64),
    /// As the server reported them (its defaults), ascending.
    List(Vec<u64>),
}

impl Thresholds {
    /// The thresholds `--threshold-step step` registers.
    pub fn of_step(step: u64) -> Vec<u64> {
        (1..=THRESHOLDS_PER_PETITION)
            .map(|i| i.saturating_mul(step))
            .collect()
    }

    /// Whether a petition whose count is now `count` has just crossed one of its thresholds:
    /// one modulo and a compare for a step, a binary search of at most 32 otherwise.
    #[inline]
    pub fn contains(&self, count: u64) -> bool {
        match self {
            Thresholds::Step(step) => {
                count != 0
                    && count.is_multiple_of(*step)
                    && count / *step <= THRESHOLDS_PER_PETITION
            }
            Thresholds::List(list) => list.binary_search(&count).is_ok(),
        }
    }

    /// All of them, ascending.
    pub fn to_vec(&self) -> Vec<u64> {
        match self {
            Thresholds::Step(step) => Thresholds::of_step(*step),
            Thresholds::List(list) => list.clone(),
        }
    }
}

/// The crossings the load acknowledged, with the instant each answer was parsed. Connections
/// note them in a buffer of their own and hand it over with their counts.
#[derive(Debug)]
pub struct Crossings {
    thresholds: Thresholds,
    acknowledged: Mutex<Vec<(Crossing, Instant)>>,
}

impl Crossings {
    /// Crossings of these thresholds.
    pub fn new(thresholds: Thresholds) -> Crossings {
        Crossings {
            thresholds,
            acknowledged: Mutex::new(Vec::new()),
        }
    }

    /// The thresholds a count is checked against.
    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Takes a connection's crossings (and empties its buffer). The lock is held for the copy
    /// only, never across an await.
    pub fn absorb(&self, local: &mut Vec<(Crossing, Instant)>) {
        if local.is_empty() {
            return;
        }
        lock(&self.acknowledged).append(local);
    }

    /// The crossings acknowledged, each with its earliest acknowledgement, and how many were
    /// acknowledged more than once.
    fn take(&self) -> (HashMap<Crossing, Instant>, u64) {
        let all = std::mem::take(&mut *lock(&self.acknowledged));
        let mut earliest: HashMap<Crossing, Instant> = HashMap::with_capacity(all.len());
        let mut twice = 0;
        for (crossing, at) in all {
            match earliest.get_mut(&crossing) {
                Some(first) => {
                    twice += 1;
                    *first = (*first).min(at);
                }
                None => {
                    earliest.insert(crossing, at);
                }
            }
        }
        (earliest, twice)
    }
}

/// Locks a mutex; a panic elsewhere while it was held leaves plain numbers behind, still worth
/// reporting.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Tells the run's petitions (`lt-<seed>-<i>`) from others on the same server.
#[derive(Debug, Clone)]
pub struct Ours {
    prefix: String,
}

impl Ours {
    /// The petitions of a run with `seed`.
    pub fn new(seed: u64) -> Ours {
        Ours {
            prefix: format!("lt-{seed}-"),
        }
    }

    /// The crossing of `threshold` by `petition`, if the petition is the run's.
    fn crossing(&self, petition: &str, threshold: u64) -> Option<Crossing> {
        let index = petition.strip_prefix(&self.prefix)?;
        // `shape::petition_id` writes no sign and no leading zero.
        if index.starts_with(['+', '0']) && index != "0" {
            return None;
        }
        Some(Crossing {
            petition: index.parse().ok()?,
            threshold,
        })
    }
}

/// The part of an event's JSON data (SSE `data`, a webhook delivery's `data`) that names its
/// crossing.
#[derive(Deserialize)]
struct EventData<'a> {
    #[serde(borrow)]
    petition: Cow<'a, str>,
    threshold: u64,
}

/// A decimal event id.
fn parse_decimal(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// The first and last receipt of one crossing's event, and by how many readers (or how many
/// deliveries).
#[derive(Debug, Clone, Copy)]
struct Receipts {
    count: u32,
    first: Instant,
    last: Instant,
}

impl Receipts {
    fn add(map: &mut HashMap<Crossing, Receipts>, crossing: Crossing, at: Instant) {
        map.entry(crossing)
            .and_modify(|r| {
                r.count += 1;
                r.first = r.first.min(at);
                r.last = r.last.max(at);
            })
            .or_insert(Receipts {
                count: 1,
                first: at,
                last: at,
            });
    }
}

#[derive(Debug, Default)]
struct BoardInner {
    /// Event id → its crossing (None: not one of the run's petitions, or not understood).
    crossing_of: HashMap<u64, Option<Crossing>>,
    /// Per crossing, its readers.
    receipts: HashMap<Crossing, Receipts>,
}

/// What the SSE readers saw, shared by all of them.
#[derive(Debug)]
struct Board {
    ours: Ours,
    inner: Mutex<BoardInner>,
    lagged: AtomicU64,
    failed: AtomicU64,
    /// `threshold_crossed` events without an id or a crossing in their data (counted once per
    /// event id, or per reader when there is no id).
    malformed: AtomicU64,
    /// Events whose id was not above the last one on the same stream: out of order or
    /// repeated (per reader). Not recorded: ids increase on a stream, as resuming after one
    /// needs them to.
    out_of_order: AtomicU64,
}

impl Board {
    fn new(ours: Ours) -> Board {
        Board {
            ours,
            inner: Mutex::new(BoardInner::default()),
            lagged: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
        }
    }

    /// Notes that one reader got event `id` (with `data`) at `at`. The lock is held for two map
    /// updates, never across an await; the JSON is parsed outside it, by the first reader only.
    fn record(&self, id: u64, data: &[u8], at: Instant) {
        {
            let mut inner = lock(&self.inner);
            if let Some(known) = inner.crossing_of.get(&id).copied() {
                if let Some(crossing) = known {
                    Receipts::add(&mut inner.receipts, crossing, at);
                }
                return;
            }
        }
        let parsed = serde_json::from_slice::<EventData>(data);
        let malformed = parsed.is_err();
        let crossing = parsed
            .ok()
            .and_then(|parsed| self.ours.crossing(&parsed.petition, parsed.threshold));
        let mut inner = lock(&self.inner);
        let first = inner.crossing_of.insert(id, crossing).is_none();
        if first && malformed {
            self.malformed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(crossing) = crossing {
            Receipts::add(&mut inner.receipts, crossing, at);
        }
    }
}

/// How a reader's stream ended before the run closed it.
enum Ended {
    /// The server said it fell behind (`event: lagged`).
    Lagged,
    /// The stream failed, or ended without saying why.
    Failed,
}

/// What every reader task needs.
struct ReaderSetup {
    target: Target,
    /// The request target, `<base>/v1/events/stream`.
    path: String,
    key: Option<HeaderValue>,
    timeout: Duration,
    readers: u32,
    opening: Semaphore,
    board: Arc<Board>,
}

/// Aborts a task when dropped: a reader's hyper connection goes with the reader.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An open event stream: the response body, the connection driving it, and its sender (kept
/// so that the connection is not told to wind down).
struct Stream {
    body: Incoming,
    _sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    _connection: AbortOnDrop,
}

/// N readers of `GET /v1/events/stream`, one task each, on the caller's runtime.
pub struct SseReaders {
    readers: u32,
    board: Arc<Board>,
    tasks: JoinSet<()>,
}

impl SseReaders {
    /// Opens `readers` streams and returns once every one has answered 200 with
    /// `text/event-stream`; fails, closing them all, when one is refused or not answered within
    /// `timeout`.
    pub async fn open(
        target: &Target,
        key: Option<HeaderValue>,
        readers: u32,
        ours: Ours,
        timeout: Duration,
    ) -> Result<SseReaders> {
        let board = Arc::new(Board::new(ours));
        let setup = Arc::new(ReaderSetup {
            target: target.clone(),
            path: format!("{}/v1/events/stream", target.base_path),
            key,
            timeout,
            readers,
            opening: Semaphore::new(READERS_OPENING_MAX),
            board: Arc::clone(&board),
        });
        let (opened, mut opened_rx) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        for number in 1..=readers {
            tasks.spawn(read_stream(Arc::clone(&setup), number, opened.clone()));
        }
        drop(opened);
        let mut connected = 0;
        while connected < readers {
            match opened_rx.recv().await {
                Some(Ok(())) => connected += 1,
                Some(Err(reason)) => {
                    tasks.shutdown().await;
                    bail!("{reason}");
                }
                None => {
                    tasks.shutdown().await;
                    bail!(
                        "{} SSE readers ended before connecting",
                        readers - connected
                    );
                }
            }
        }
        Ok(SseReaders {
            readers,
            board,
            tasks,
        })
    }

    /// Readers whose stream has ended (lagged or failed).
    fn disconnected(&self) -> u64 {
        self.board.lagged.load(Ordering::Relaxed) + self.board.failed.load(Ordering::Relaxed)
    }

    /// Whether every crossing in `acknowledged` has reached every reader still connected.
    fn has_all(&self, acknowledged: &HashMap<Crossing, Instant>) -> bool {
        let connected = u64::from(self.readers).saturating_sub(self.disconnected());
        if connected == 0 {
            return true;
        }
        let inner = lock(&self.board.inner);
        acknowledged.keys().all(|crossing| {
            inner
                .receipts
                .get(crossing)
                .is_some_and(|r| u64::from(r.count) >= connected)
        })
    }

    /// Closes every stream and returns what the readers saw.
    async fn close(mut self) -> (Arc<Board>, u32) {
        self.tasks.shutdown().await;
        (self.board, self.readers)
    }
}

/// One reader: connect (a few at a time), report the outcome, then follow the stream until it
/// ends or the task is aborted.
async fn read_stream(
    setup: Arc<ReaderSetup>,
    number: u32,
    opened: mpsc::UnboundedSender<Result<(), String>>,
) {
    let result = match setup.opening.acquire().await {
        Ok(_permit) => tokio::time::timeout(setup.timeout, connect_stream(&setup))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "GET {} not answered within {:?}",
                    setup.path, setup.timeout
                ))
            }),
        Err(_) => Err("the readers were closed".to_owned()),
    };
    let stream = match result {
        Ok(stream) => stream,
        Err(reason) => {
            let _ = opened.send(Err(format!(
                "SSE reader {number} of {}: {reason}",
                setup.readers
            )));
            return;
        }
    };
    let _ = opened.send(Ok(()));
    drop(opened);
    let counter = match follow(&setup.board, stream).await {
        Ended::Lagged => &setup.board.lagged,
        Ended::Failed => &setup.board.failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Opens one stream: 200 with a `text/event-stream` body, or the reason why not.
async fn connect_stream(setup: &ReaderSetup) -> Result<Stream, String> {
    let tcp = client::connect(&setup.target).await.map_err(|error| {
        let hint = if error.raw_os_error() == Some(24) {
            " (too many open files: raise ulimit -n or lower --sse-readers)"
        } else {
            ""
        };
        format!("connecting to {}: {error}{hint}", setup.target.addr)
    })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|error| format!("HTTP handshake: {error}"))?;
    let connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(&setup.path)
        .header(header::HOST, setup.target.host.clone())
        .header(header::ACCEPT, "text/event-stream");
    if let Some(key) = &setup.key {
        request = request.header(header::AUTHORIZATION, key.clone());
    }
    let request = request
        .body(Empty::new())
        .map_err(|error| format!("building GET {}: {error}", setup.path))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| format!("GET {}: {error}", setup.path))?;
    let status = response.status();
    if status != StatusCode::OK {
        let body = Limited::new(response.into_body(), BODY_BYTES_MAX)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        let hint = match status.as_u16() {
            503 => " (more readers than the server allows, or the server is overloaded)",
            404 => " (does the server have the events feed?)",
            _ => "",
        };
        return Err(format!(
            "GET {} answered {} {}{hint}",
            setup.path,
            status.as_u16(),
            outcome::error_code(status, &body)
        ));
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("text/event-stream") {
        return Err(format!(
            "GET {} answered 200 with content-type {content_type:?}, not text/event-stream",
            setup.path
        ));
    }
    Ok(Stream {
        body: response.into_body(),
        _sender: sender,
        _connection: connection,
    })
}

/// Follows a stream until it ends: each `threshold_crossed` event is noted on the board with
/// the instant its last chunk came; one whose id is not above the stream's last is counted as
/// out of order instead.
async fn follow(board: &Board, mut stream: Stream) -> Ended {
    let mut parser = SseParser::default();
    let mut last_id: Option<u64> = None;
    loop {
        let frame = match stream.body.frame().await {
            Some(Ok(frame)) => frame,
            Some(Err(_)) | None => return Ended::Failed,
        };
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        let at = Instant::now();
        let flow = parser.feed(&chunk, |event| match event.kind {
            b"threshold_crossed" => {
                match parse_decimal(event.id) {
                    Some(id) if last_id.is_some_and(|last| id <= last) => {
                        board.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(id) => {
                        last_id = Some(id);
                        board.record(id, event.data, at);
                    }
                    None => {
                        board.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                ControlFlow::Continue(())
            }
            b"lagged" => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        });
        match flow {
            ControlFlow::Continue(()) => {}
            ControlFlow::Break(SseStop::Asked) => return Ended::Lagged,
            ControlFlow::Break(SseStop::LineTooLong) => return Ended::Failed,
        }
    }
}

/// What the webhook receiver got.
#[derive(Debug)]
struct HookBoard {
    ours: Ours,
    receipts: Mutex<HashMap<Crossing, Receipts>>,
    /// Deliveries outside the contract: no `webhook-id`, `webhook-timestamp` or `v1,`
    /// signature, or a body that is not a `threshold_crossed` event with a petition and a
    /// threshold.
    malformed: AtomicU64,
}

/// A delivery's body: `{"type":..., "timestamp":..., "data":{...}}`.
#[derive(Deserialize)]
struct Delivery<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    data: EventData<'a>,
}

impl HookBoard {
    fn record(&self, body: &[u8], at: Instant) {
        match serde_json::from_slice::<Delivery>(body) {
            Ok(delivery) if delivery.kind == "threshold_crossed" => {
                let data = delivery.data;
                if let Some(crossing) = self.ours.crossing(&data.petition, data.threshold) {
                    Receipts::add(&mut lock(&self.receipts), crossing, at);
                }
            }
            Ok(_) => {}
            Err(_) => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A webhook receiver on 127.0.0.1 and its registration with the server.
pub struct Webhook {
    name: String,
    path: String,
    /// The admin key; none against a server with keys off.
    auth: Option<HeaderValue>,
    client: Client,
    board: Arc<HookBoard>,
    server: Receiver,
}

/// The receiver's own thread, with a runtime of its own: a delivery is answered at once, not
/// after the tasks of a thousand stream readers that the same event woke. Dropping it stops the
/// receiver.
struct Receiver {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Receiver {
    fn start(listener: std::net::TcpListener, board: Arc<HookBoard>) -> Result<Receiver> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("the webhook receiver's runtime")?;
        std::thread::Builder::new()
            .name("webhook-receiver".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        () = receive(listener, board) => {}
                        _ = stopped => {}
                    }
                });
            })
            .context("starting the webhook receiver's thread")?;
        Ok(Receiver { stop: Some(stop) })
    }
}

impl Webhook {
    /// Starts the receiver and registers webhook `loadtest-<seed>` for `threshold_crossed` at
    /// `http://127.0.0.1:PORT/hook`, with the admin key `auth` (none: no `Authorization`).
    pub async fn start(
        target: &Target,
        auth: Option<HeaderValue>,
        seed: u64,
        ours: Ours,
        timeout: Duration,
    ) -> Result<Webhook> {
        if !target.addr.ip().is_loopback() {
            bail!(
                "--webhook needs the server on this machine: the receiver listens on 127.0.0.1, \
                 and {} is not a loopback address",
                target.addr.ip()
            );
        }
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding the webhook receiver on 127.0.0.1")?;
        listener
            .set_nonblocking(true)
            .context("the webhook receiver's socket")?;
        let port = listener
            .local_addr()
            .context("the webhook receiver's address")?
            .port();
        let board = Arc::new(HookBoard {
            ours,
            receipts: Mutex::new(HashMap::new()),
            malformed: AtomicU64::new(0),
        });
        let server = Receiver::start(listener, Arc::clone(&board))?;
        let name = format!("loadtest-{seed}");
        let path = format!("/v1/webhooks/{name}");
        let url = format!("http://127.0.0.1:{port}/hook");
        let body = serde_json::to_vec(&serde_json::json!({
            "url": url,
            "events": ["threshold_crossed"],
        }))
        .context("encoding the webhook")?;
        let mut client = Client::new(target, timeout);
        let answer = client
            .request(
                Method::PUT,
                &path,
                auth.as_ref(),
                "application/json",
                Bytes::from(body),
            )
            .await
            .with_context(|| format!("registering webhook {name}"))?;
        match answer.status.as_u16() {
            200 | 201 => {}
            status => {
                let hint = match (status, &auth) {
                    (401, None) => " (the server wants a key and none was given: pass --admin-key)",
                    (401 | 403, _) => {
                        " (registering a webhook needs an admin key: pass --admin-key)"
                    }
                    (404, _) => " (does the server have webhooks?)",
                    (400 | 422, _) => {
                        " (a receiver on 127.0.0.1 needs the server started with \
                         --webhook-allow-networks 127.0.0.0/8)"
                    }
                    _ => "",
                };
                bail!(
                    "registering webhook {name} at {url}: server answered {status} {}{hint}",
                    outcome::error_code(answer.status, &answer.body)
                );
            }
        }
        eprintln!("loadtest: webhook {name} registered, receiving at {url}");
        Ok(Webhook {
            name,
            path,
            auth,
            client,
            board,
            server,
        })
    }

    /// Whether every crossing in `acknowledged` has been delivered.
    fn has_all(&self, acknowledged: &HashMap<Crossing, Instant>) -> bool {
        let receipts = lock(&self.board.receipts);
        acknowledged.keys().all(|c| receipts.contains_key(c))
    }

    /// Deletes the webhook and stops the receiver; returns its deliveries, malformed ones, and
    /// whether the deletion went through.
    async fn close(mut self) -> (String, HashMap<Crossing, Receipts>, u64, bool) {
        let deleted = match self
            .client
            .request(
                Method::DELETE,
                &self.path,
                self.auth.as_ref(),
                "application/json",
                Bytes::new(),
            )
            .await
        {
            Ok(answer) if matches!(answer.status.as_u16(), 200 | 204 | 404) => true,
            Ok(answer) => {
                eprintln!(
                    "loadtest: deleting webhook {}: server answered {} {}; delete it by hand",
                    self.name,
                    answer.status.as_u16(),
                    outcome::error_code(answer.status, &answer.body)
                );
                false
            }
            Err(error) => {
                eprintln!(
                    "loadtest: deleting webhook {}: {error:#}; delete it by hand",
                    self.name
                );
                false
            }
        };
        drop(self.server);
        let receipts = std::mem::take(&mut *lock(&self.board.receipts));
        let malformed = self.board.malformed.load(Ordering::Relaxed);
        (self.name, receipts, malformed, deleted)
    }
}

/// The receiver's accept loop; its connections end with it.
async fn receive(listener: TcpListener, board: Arc<HookBoard>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors, most likely: let some close.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let board = Arc::clone(&board);
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let board = Arc::clone(&board);
                        async move { Ok::<_, Infallible>(deliver(&board, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One delivery: noted with the instant its head arrived, answered 204.
async fn deliver(board: &HookBoard, request: Request<Incoming>) -> Response<Empty<Bytes>> {
    let at = Instant::now();
    let answer = |status: StatusCode| {
        let mut response = Response::new(Empty::new());
        *response.status_mut() = status;
        response
    };
    if request.method() != Method::POST || request.uri().path() != "/hook" {
        return answer(StatusCode::NOT_FOUND);
    }
    let headers = request.headers();
    let signed = headers.contains_key("webhook-id")
        && headers.contains_key("webhook-timestamp")
        && headers
            .get("webhook-signature")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("v1,"));
    match Limited::new(request.into_body(), BODY_BYTES_MAX)
        .collect()
        .await
    {
        Ok(body) if signed => board.record(&body.to_bytes(), at),
        _ => {
            board.malformed.fetch_add(1, Ordering::Relaxed);
        }
    }
    answer(StatusCode::NO_CONTENT)
}

/// Reads the thresholds of the run's first petition (`GET /v1/petitions/{id}`): the server's,
/// which every petition the run registered without `--threshold-step` has.
async fn read_thresholds(args: &RunArgs, seed: u64) -> Result<Thresholds> {
    #[derive(Deserialize)]
    struct View {
        thresholds: Option<Vec<u64>>,
    }
    let id = shape::petition_id(seed, 0);
    let mut client = Client::new(&args.target, args.timeout);
    let answer = client
        .request(
            Method::GET,
            &format!("/v1/petitions/{id}"),
            None,
            "application/json",
            Bytes::new(),
        )
        .await
        .with_context(|| format!("reading the thresholds of petition {id}"))?;
    if answer.status != StatusCode::OK {
        bail!(
            "reading the thresholds of petition {id}: server answered {} {} (or pass \
             --threshold-step)",
            answer.status.as_u16(),
            outcome::error_code(answer.status, &answer.body)
        );
    }
    let mut thresholds = serde_json::from_slice::<View>(&answer.body)
        .ok()
        .and_then(|view| view.thresholds)
        .with_context(|| {
            format!(
                "petition {id}: the server's answer names no thresholds (pass --threshold-step)"
            )
        })?;
    thresholds.sort_unstable();
    thresholds.dedup();
    Ok(Thresholds::List(thresholds))
}

/// Event latency in microseconds from an acknowledgement to a receipt; 0 when the event came
/// first.
fn latency_us(acknowledged: Instant, received: Instant) -> u64 {
    u64::try_from(received.saturating_duration_since(acknowledged).as_micros())
        .unwrap_or(u64::MAX)
        .min(LATENCY_MAX_US)
}

/// What `--sse-readers` and `--webhook` measure, from before the load starts to the report.
pub struct Events {
    step: Option<u64>,
    crossings: Arc<Crossings>,
    sse: Option<SseReaders>,
    webhook: Option<Webhook>,
}

impl Events {
    /// Learns the thresholds (`--threshold-step`, or the server's), opens the SSE readers and
    /// registers the webhook; `None` when `args` asks for neither. Call after the petitions are
    /// registered and before the load starts.
    pub async fn start(args: &RunArgs, seed: u64) -> Result<Option<Events>> {
        if args.sse_readers == 0 && !args.webhook {
            return Ok(None);
        }
        let thresholds = match args.threshold_step {
            Some(step) => Thresholds::Step(step),
            None => {
                let thresholds = read_thresholds(args, seed).await?;
                eprintln!(
                    "loadtest: the petitions' thresholds are the server's: {:?} (--threshold-step \
                     makes crossings happen all through a run)",
                    thresholds.to_vec()
                );
                thresholds
            }
        };
        let sse = if args.sse_readers > 0 {
            // The stream is public; the key goes along anyway, as a client with one would send.
            let key = match args.api_key.as_deref().or(args.admin_key.as_deref()) {
                Some(key) => Some(client::bearer(key)?),
                None => None,
            };
            let readers = SseReaders::open(
                &args.target,
                key,
                args.sse_readers,
                Ours::new(seed),
                args.timeout,
            )
            .await
            .with_context(|| format!("opening {} SSE readers", args.sse_readers))?;
            eprintln!("loadtest: {} SSE readers connected", args.sse_readers);
            Some(readers)
        } else {
            None
        };
        let webhook = if args.webhook {
            // --admin-key, else --api-key, else none (a server with keys off).
            let auth = match args.admin_key.as_deref().or(args.api_key.as_deref()) {
                Some(key) => Some(client::bearer(key)?),
                None => None,
            };
            Some(Webhook::start(&args.target, auth, seed, Ours::new(seed), args.timeout).await?)
        } else {
            None
        };
        Ok(Some(Events {
            step: args.threshold_step,
            crossings: Arc::new(Crossings::new(thresholds)),
            sse,
            webhook,
        }))
    }

    /// Where the load notes the crossings it acknowledges.
    pub fn crossings(&self) -> Arc<Crossings> {
        Arc::clone(&self.crossings)
    }

    /// After a failed run: closes the readers and deletes the webhook.
    pub async fn abandon(self) {
        if let Some(sse) = self.sse {
            sse.close().await;
        }
        if let Some(webhook) = self.webhook {
            webhook.close().await;
        }
    }

    /// After the load (every connection's crossings handed over): waits up to [`EVENTS_WAIT`]
    /// for the events of the crossings acknowledged, closes the readers, deletes the webhook,
    /// and reports.
    pub async fn finish(self) -> EventsReport {
        let (acknowledged, acknowledged_twice) = self.crossings.take();
        if !acknowledged.is_empty() {
            let deadline = Instant::now() + EVENTS_WAIT;
            loop {
                let sse_done = self.sse.as_ref().is_none_or(|s| s.has_all(&acknowledged));
                let hook_done = self
                    .webhook
                    .as_ref()
                    .is_none_or(|w| w.has_all(&acknowledged));
                if sse_done && hook_done {
                    break;
                }
                if Instant::now() >= deadline {
                    eprintln!(
                        "loadtest: waited {EVENTS_WAIT:?} after the load; some crossings' events \
                         have not reached every reader (or the webhook): counted as such"
                    );
                    break;
                }
                tokio::time::sleep(EVENTS_WAIT_POLL).await;
            }
        }
        let sse = match self.sse {
            Some(readers) => {
                let (board, readers) = readers.close().await;
                Some(sse_report(&acknowledged, &board, readers))
            }
            None => None,
        };
        let webhook = match self.webhook {
            Some(webhook) => {
                let (name, receipts, malformed, deleted) = webhook.close().await;
                Some(webhook_report(
                    &acknowledged,
                    name,
                    &receipts,
                    malformed,
                    deleted,
                ))
            }
            None => None,
        };
        EventsReport {
            threshold_step: self.step,
            thresholds: self.crossings.thresholds().to_vec(),
            crossings_acknowledged: acknowledged.len() as u64,
            acknowledged_twice,
            sse,
            webhook,
        }
    }
}

fn sse_report(acknowledged: &HashMap<Crossing, Instant>, board: &Board, readers: u32) -> SseReport {
    let receipts = std::mem::take(&mut lock(&board.inner).receipts);
    let mut every: Histogram<u64> = new_histogram();
    let mut first: Histogram<u64> = new_histogram();
    let (mut by_every, mut by_some, mut by_none) = (0, 0, 0);
    for (crossing, at) in acknowledged {
        match receipts.get(crossing) {
            Some(r) => {
                first.saturating_record(latency_us(*at, r.first));
                if r.count >= readers {
                    by_every += 1;
                    every.saturating_record(latency_us(*at, r.last));
                } else {
                    by_some += 1;
                }
            }
            None => by_none += 1,
        }
    }
    let not_acknowledged = receipts
        .keys()
        .filter(|crossing| !acknowledged.contains_key(crossing))
        .count() as u64;
    SseReport {
        readers,
        seen_by_every_reader: by_every,
        seen_by_some_readers: by_some,
        seen_by_no_reader: by_none,
        not_acknowledged,
        malformed: board.malformed.load(Ordering::Relaxed),
        out_of_order: board.out_of_order.load(Ordering::Relaxed),
        disconnected_lagged: board.lagged.load(Ordering::Relaxed),
        disconnected_error: board.failed.load(Ordering::Relaxed),
        latency_ms: Percentiles::of(&every),
        first_reader_latency_ms: Percentiles::of(&first),
    }
}

fn webhook_report(
    acknowledged: &HashMap<Crossing, Instant>,
    name: String,
    receipts: &HashMap<Crossing, Receipts>,
    malformed: u64,
    deleted: bool,
) -> WebhookReport {
    let mut latency: Histogram<u64> = new_histogram();
    let mut delivered = 0;
    for (crossing, at) in acknowledged {
        if let Some(r) = receipts.get(crossing) {
            delivered += 1;
            latency.saturating_record(latency_us(*at, r.first));
        }
    }
    WebhookReport {
        name,
        delivered,
        not_delivered: acknowledged.len() as u64 - delivered,
        not_acknowledged: receipts
            .keys()
            .filter(|crossing| !acknowledged.contains_key(crossing))
            .count() as u64,
        repeated: receipts.values().map(|r| u64::from(r.count - 1)).sum(),
        malformed,
        deleted,
        latency_ms: Percentiles::of(&latency),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn thresholds() {
        let step = Thresholds::Step(100);
        for (count, crossed) in [
            (0, false),
            (99, false),
            (100, true),
            (150, false),
            (3200, true),
            (3300, false),
        ] {
            assert_eq!(step.contains(count), crossed, "{count}");
        }
        assert_eq!(step.to_vec().len(), 32);
        assert_eq!(step.to_vec()[31], 3200);
        assert!(Thresholds::Step(1).contains(32) && !Thresholds::Step(1).contains(33));
        let list = Thresholds::List(vec![10_000, 100_000]);
        assert!(list.contains(10_000) && list.contains(100_000) && !list.contains(20_000));
    }

    #[test]
    fn our_petitions() {
        let ours = Ours::new(42);
        let check = |petition: &str, expected: Option<u32>| {
            assert_eq!(
                ours.crossing(petition, 7).map(|c| c.petition),
                expected,
                "{petition}"
            );
        };
        check("lt-42-0", Some(0));
        check("lt-42-17", Some(17));
        check("lt-42-017", None);
        check("lt-42-+1", None);
        check("lt-421-1", None);
        check("lt-42-", None);
        check("other", None);
    }

    #[test]
    fn crossings_keep_the_earliest_acknowledgement() {
        let crossings = Crossings::new(Thresholds::Step(10));
        let start = Instant::now();
        let c = |petition, threshold| Crossing {
            petition,
            threshold,
        };
        let mut local = vec![
            (c(0, 10), start + Duration::from_millis(5)),
            (c(1, 10), start),
            (c(0, 10), start + Duration::from_millis(2)),
        ];
        crossings.absorb(&mut local);
        assert!(local.is_empty());
        let (acknowledged, twice) = crossings.take();
        assert_eq!((acknowledged.len(), twice), (2, 1));
        assert_eq!(acknowledged[&c(0, 10)], start + Duration::from_millis(2));
    }

    #[test]
    fn board_and_latency() {
        let board = Board::new(Ours::new(5));
        let start = Instant::now();
        let data = br#"{"seq":1,"type":"threshold_crossed","petition":"lt-5-3","threshold":20}"#;
        board.record(1, data, start + Duration::from_millis(3));
        board.record(1, b"not parsed again", start + Duration::from_millis(1));
        board.record(2, br#"{"petition":"elsewhere","threshold":20}"#, start);
        board.record(3, b"nonsense", start);
        let inner = lock(&board.inner);
        let r = inner.receipts[&Crossing {
            petition: 3,
            threshold: 20,
        }];
        assert_eq!(r.count, 2);
        assert_eq!(r.first - start, Duration::from_millis(1));
        assert_eq!(r.last - start, Duration::from_millis(3));
        assert_eq!(inner.receipts.len(), 1);
        assert_eq!(board.malformed.load(Ordering::Relaxed), 1);
        // An event ahead of its acknowledgement counts as 0.
        assert_eq!(latency_us(start + Duration::from_millis(1), start), 0);
        assert_eq!(latency_us(start, start + Duration::from_millis(2)), 2000);
        let mut h = new_histogram();
        h.saturating_record(0);
        assert_eq!(Percentiles::of(&h).max, 0.0);
    }
}
