//! A small in-test ingest-server that follows the HTTP contract, with faults on demand.
//!
//! Its model is plain: per petition the signers counted and, for petitions registered with
//! `"validation":"email"`, the signers pending with their token; one map from token to signer
//! for `POST /v1/validations` and batch lines `{"validate":...}`. Tokens never expire unless
//! [`Fault::ExpiredTokens`] says they all have.
//!
//! Events: a count reaching one of its petition's thresholds (registered, or
//! [`DEFAULT_THRESHOLDS`]) publishes a `threshold_crossed` event [`EVENT_DELAY`] later, to every
//! `GET /v1/events/stream` reader (each event written in three chunks cut mid-line, every other
//! one with CRLF line ends) and as a `POST` to every webhook registered with
//! `PUT /v1/webhooks/{name}`.
//!
//! Countries: a signature's `country` must be two upper-case letters other than `UK` and `ZZ`,
//! and its `region` 1–16 of `[A-Za-z0-9-]` with a country (else 422 `invalid_signature`).
//! Each signer's country and region are kept as first sent (a re-send that differs is counted,
//! [`FakeServer::placement_changes`]), and counted by country (`ZZ` for none) whenever the
//! signer's count is; `GET /v1/petitions/{id}/countries` answers with those counts.
//!
//! Abuse controls ([`Controls`], given to [`FakeServer::start_with`]), for signatures that carry
//! an `ip` (which must parse as an address, else 422): with `paused`, every signature is 503
//! `signing_paused`; an address starting with one of `blocked_prefixes` is 403 `blocked`; past
//! `ip_limit` signatures taken (accepted, duplicate or pending) on one (petition, address), 429
//! `ip_rate_limited`, all with `Retry-After` but the 403, and batch lines with the same codes.
//! Each signer's address is kept as first sent (a re-send from another is counted,
//! [`FakeServer::address_changes`]), every signature received is counted per signer
//! ([`FakeServer::receipts`]), and every answer per address ([`FakeServer::answers_by_address`]).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

pub const INGEST_KEY: &str = "ingest-key";
pub const ADMIN_KEY: &str = "admin-key";

/// What the fake server gets wrong.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Nothing: a correct server.
    None,
    /// The `nth` accepted signature (from 1) is acknowledged but never stored.
    LoseAck { nth: u64 },
    /// The `nth` accepted signature is counted twice.
    DoubleCount { nth: u64 },
    /// When the `nth` request (from 1) arrives, the whole server stops answering for `pause`.
    Stall { nth: u64, pause: Duration },
    /// The `nth` request (from 1) is never answered (and never processed).
    Hang { nth: u64 },
    /// Every signature request waits this long before it is processed: a slow server.
    Slow { each: Duration },
    /// Every validation request waits this long before it is processed.
    SlowValidations { each: Duration },
    /// The `nth` validation that counts a signer (from 1) counts it twice.
    DoubleCountValidation { nth: u64 },
    /// The `nth` validation that counts a signer is answered `validated` but changes nothing.
    LoseValidation { nth: u64 },
    /// The `nth` new pending signer (from 1) is answered pending but never stored.
    ForgetPending { nth: u64 },
    /// Every token is expired when handed out: `expires_at` in the past, validations answered
    /// 410 `token_expired`, and no signer stays in `pending_count`.
    ExpiredTokens,
    /// A server from before the signature lifecycle: `GET /v1/petitions/{id}` carries no
    /// `pending_count` or `invalidated_count`.
    OldServer,
    /// More than `max` event-stream readers at once are answered 503.
    SseReadersMax { max: usize },
    /// The first event-stream reader gets one event, then `event: lagged` and the end.
    LagFirstReader,
    /// `GET /v1/petitions/{id}/countries` reports one signature fewer in its top country than
    /// the count it answers with.
    CountriesShort,
    /// A server without the breakdown: `GET /v1/petitions/{id}/countries` is 404 `not_found`.
    NoCountries,
}

/// The abuse controls the fake applies (all off by default).
#[derive(Debug, Clone, Default)]
pub struct Controls {
    /// Signatures taken per (petition, address) before the next is 429 `ip_rate_limited`.
    pub ip_limit: Option<u64>,
    /// Addresses that start with one of these are 403 `blocked`.
    pub blocked_prefixes: Vec<&'static str>,
    /// Every signature is 503 `signing_paused`.
    pub paused: bool,
    /// Keys off: a request without `Authorization` is admitted as admin.
    pub open: bool,
}

/// What the fake answered the signatures from one address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressAnswers {
    /// Accepted, duplicate or pending.
    pub taken: u64,
    /// 429 `ip_rate_limited`.
    pub limited: u64,
    /// 403 `blocked`.
    pub blocked: u64,
    /// Anything else.
    pub other: u64,
}

/// A petition's thresholds when its registration names none (the real server's are 10,000 and
/// 100,000; these are crossed within a short test).
pub const DEFAULT_THRESHOLDS: [u64; 2] = [25, 50];

/// How long after a crossing its event is published, as a server that publishes after its
/// commit would: the acknowledgement usually comes first.
pub const EVENT_DELAY: Duration = Duration::from_millis(20);

/// What the fake says a token expires at, and what it says once they have all expired.
pub const EXPIRES_LATER: &str = "2999-01-01T00:00:00Z";
pub const EXPIRED: &str = "2001-01-01T00:00:00Z";

#[derive(Default)]
struct Petition {
    /// Registered with `"validation":"email"`.
    email_validation: bool,
    /// Signers counted.
    signers: HashSet<String>,
    /// Email validation: signers pending, with their token and resubmissions so far.
    pending: HashMap<String, (String, u32)>,
    count: u64,
    /// Registered thresholds, or [`DEFAULT_THRESHOLDS`].
    thresholds: Vec<u64>,
    /// Each signer's country and region, as first sent.
    placements: HashMap<String, Placement>,
    /// Counted signatures by country (`ZZ`: none).
    by_country: HashMap<String, u64>,
}

/// A signature's country and region (upper-cased), if any.
pub type Placement = (Option<String>, Option<String>);

impl Petition {
    /// Counts `signer` once more, under its country.
    fn count_in(&mut self, signer: &str) {
        let country = self
            .placements
            .get(signer)
            .and_then(|(country, _)| country.clone())
            .unwrap_or_else(|| "ZZ".to_owned());
        *self.by_country.entry(country).or_default() += 1;
        self.count += 1;
    }
}

/// A signature's country and region, checked as the server checks them.
fn placement_of(signature: &Value) -> Result<Placement, (StatusCode, &'static str)> {
    let invalid = (StatusCode::UNPROCESSABLE_ENTITY, "invalid_signature");
    let text = |name: &str| match signature.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(invalid),
    };
    let (country, region) = (text("country")?, text("region")?);
    if let Some(country) = &country {
        let two_letters = country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase());
        if !two_letters || country == "UK" || country == "ZZ" {
            return Err(invalid);
        }
    }
    if let Some(region) = &region {
        let well_formed = (1..=16).contains(&region.len())
            && region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !well_formed || country.is_none() {
            return Err(invalid);
        }
    }
    Ok((country, region.map(|r| r.to_ascii_uppercase())))
}

#[derive(Default)]
struct Model {
    petitions: HashMap<String, Petition>,
    /// Token → (petition, signer).
    tokens: HashMap<String, (String, String)>,
    /// Every token a validation was asked for, in order of arrival.
    validation_requests: Vec<String>,
    /// (petition, signer) → its address as first sent (`None`: it carried none).
    addresses: HashMap<(String, String), Option<String>>,
    /// (petition, signer) → signatures received.
    receipts: HashMap<(String, String), u32>,
    /// (petition, address) → signatures taken.
    taken_per_pair: HashMap<(String, String), u64>,
    /// Address (`None`: none) → what its signatures were answered.
    answers: HashMap<Option<String>, AddressAnswers>,
}

struct State {
    fault: Fault,
    controls: Controls,
    model: Mutex<Model>,
    accepted: AtomicU64,
    validations: AtomicU64,
    pendings: AtomicU64,
    requests: AtomicU64,
    stall_until: Mutex<Option<Instant>>,
    /// Event ids handed out so far.
    events_published: AtomicU64,
    /// Events to publish, in order, each when it is due.
    to_publish: mpsc::UnboundedSender<(Instant, u64, Value)>,
    /// The text of each event, to every stream reader.
    events: broadcast::Sender<(u64, String)>,
    /// Event-stream readers: connected now, and ever.
    readers: AtomicU64,
    readers_opened: AtomicU64,
    /// Webhooks: name → URL.
    webhooks: Mutex<HashMap<String, String>>,
    /// The status each webhook delivery was answered with (0: not answered).
    delivery_statuses: Mutex<Vec<u16>>,
    /// Signatures of a known signer whose country or region differed from its first.
    placement_changes: AtomicU64,
    /// Signatures of a known signer whose address differed from its first.
    address_changes: AtomicU64,
    /// Requests that carried an `Authorization` header.
    authorized: AtomicU64,
}

/// A pending signer signing again gets its token back this many times; then 429.
const RESUBMISSIONS_MAX: u32 = 5;

pub struct FakeServer {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl FakeServer {
    pub async fn start(fault: Fault) -> FakeServer {
        FakeServer::start_with(fault, Controls::default()).await
    }

    /// A fake with `fault` that applies the abuse `controls`.
    pub async fn start_with(fault: Fault, controls: Controls) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (to_publish, publishing) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            fault,
            controls,
            model: Mutex::new(Model::default()),
            accepted: AtomicU64::new(0),
            validations: AtomicU64::new(0),
            pendings: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            stall_until: Mutex::new(None),
            events_published: AtomicU64::new(0),
            to_publish,
            events: broadcast::channel(4096).0,
            readers: AtomicU64::new(0),
            readers_opened: AtomicU64::new(0),
            webhooks: Mutex::new(HashMap::new()),
            delivery_statuses: Mutex::new(Vec::new()),
            placement_changes: AtomicU64::new(0),
            address_changes: AtomicU64::new(0),
            authorized: AtomicU64::new(0),
        });
        tokio::spawn(publisher(Arc::clone(&state), publishing));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let state = Arc::clone(&state);
                        async move {
                            if request.method() == Method::GET
                                && request.uri().path() == "/v1/events/stream"
                            {
                                return Ok::<_, Infallible>(stream_events(&state));
                            }
                            Ok(handle(&state, request).await.map(FakeBody::Full))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeServer { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The count the server reports for a petition.
    pub fn count(&self, petition: &str) -> Option<u64> {
        self.state
            .model
            .lock()
            .unwrap()
            .petitions
            .get(petition)
            .map(|p| p.count)
    }

    pub fn petition_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .state
            .model
            .lock()
            .unwrap()
            .petitions
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// Whether a petition was registered with `"validation":"email"`.
    pub fn validates_by_email(&self, petition: &str) -> bool {
        self.state
            .model
            .lock()
            .unwrap()
            .petitions
            .get(petition)
            .is_some_and(|p| p.email_validation)
    }

    /// Every token a validation was asked for, in order of arrival.
    pub fn validation_requests(&self) -> Vec<String> {
        self.state.model.lock().unwrap().validation_requests.clone()
    }

    /// Signers pending over all petitions.
    pub fn pending_total(&self) -> usize {
        let model = self.state.model.lock().unwrap();
        model.petitions.values().map(|p| p.pending.len()).sum()
    }

    /// A petition's thresholds its count has reached.
    pub fn crossed(&self, petition: &str) -> usize {
        let model = self.state.model.lock().unwrap();
        model.petitions.get(petition).map_or(0, |p| {
            p.thresholds.iter().filter(|&&t| t <= p.count).count()
        })
    }

    /// Event-stream readers ever connected.
    pub fn readers_opened(&self) -> u64 {
        self.state.readers_opened.load(Ordering::SeqCst)
    }

    /// Names of the webhooks registered now.
    pub fn webhooks(&self) -> Vec<String> {
        self.state
            .webhooks
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    /// The status each webhook delivery was answered with.
    pub fn delivery_statuses(&self) -> Vec<u16> {
        self.state.delivery_statuses.lock().unwrap().clone()
    }

    /// A petition's counted signatures by country (`ZZ`: none), highest first (ties by code).
    pub fn countries(&self, petition: &str) -> Vec<(String, u64)> {
        let model = self.state.model.lock().unwrap();
        model
            .petitions
            .get(petition)
            .map_or_else(Vec::new, |p| sorted_countries(&p.by_country))
    }

    /// Every signer of a petition (its email as sent, lower-cased) with its country and region as
    /// first sent.
    pub fn placements(&self, petition: &str) -> Vec<(String, Placement)> {
        let model = self.state.model.lock().unwrap();
        let mut placements: Vec<(String, Placement)> =
            model.petitions.get(petition).map_or_else(Vec::new, |p| {
                p.placements
                    .iter()
                    .map(|(signer, placement)| (signer.clone(), placement.clone()))
                    .collect()
            });
        placements.sort();
        placements
    }

    /// Signatures of a known signer whose country or region differed from its first.
    pub fn placement_changes(&self) -> u64 {
        self.state.placement_changes.load(Ordering::SeqCst)
    }

    /// Every (petition, signer) seen, with its address as first sent, sorted.
    pub fn addresses(&self) -> Vec<((String, String), Option<String>)> {
        let model = self.state.model.lock().unwrap();
        let mut addresses: Vec<_> = model
            .addresses
            .iter()
            .map(|(key, address)| (key.clone(), address.clone()))
            .collect();
        addresses.sort();
        addresses
    }

    /// Signatures of a known signer whose address differed from its first.
    pub fn address_changes(&self) -> u64 {
        self.state.address_changes.load(Ordering::SeqCst)
    }

    /// Signatures received per (petition, signer).
    pub fn receipts(&self) -> HashMap<(String, String), u32> {
        self.state.model.lock().unwrap().receipts.clone()
    }

    /// Requests that carried an `Authorization` header.
    pub fn authorized_requests(&self) -> u64 {
        self.state.authorized.load(Ordering::SeqCst)
    }

    /// Requests received (event streams included).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// What the signatures from each address (`None`: none) were answered.
    pub fn answers_by_address(&self) -> HashMap<Option<String>, AddressAnswers> {
        self.state.model.lock().unwrap().answers.clone()
    }
}

/// Counts by country, highest first, ties by code.
fn sorted_countries(by_country: &HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut countries: Vec<(String, u64)> = by_country
        .iter()
        .filter(|(_, &n)| n > 0)
        .map(|(code, &n)| (code.clone(), n))
        .collect();
    countries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    countries
}

/// The body of any answer: whole, or an event stream fed by a task.
pub enum FakeBody {
    Full(Full<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for FakeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            FakeBody::Full(full) => std::pin::Pin::new(full).poll_frame(cx),
            FakeBody::Stream(chunks) => chunks
                .poll_recv(cx)
                .map(|chunk| chunk.map(|bytes| Ok(hyper::body::Frame::data(bytes)))),
        }
    }
}

/// Publishes the crossing of `threshold` by `petition`, [`EVENT_DELAY`] from now. Called with
/// the model locked, so events are numbered in the order of the counts.
fn publish(state: &State, petition: &str, threshold: u64) {
    let seq = state.events_published.fetch_add(1, Ordering::SeqCst) + 1;
    let data = json!({"seq": seq, "type": "threshold_crossed", "petition": petition,
                      "at": "2026-11-30T07:00:00.123Z", "threshold": threshold});
    let _ = state
        .to_publish
        .send((Instant::now() + EVENT_DELAY, seq, data));
}

/// Sends each event, in order, when it is due: to the stream readers, and to each webhook.
async fn publisher(
    state: Arc<State>,
    mut publishing: mpsc::UnboundedReceiver<(Instant, u64, Value)>,
) {
    while let Some((due, seq, data)) = publishing.recv().await {
        tokio::time::sleep_until(due).await;
        let end = if seq % 2 == 0 { "\n" } else { "\r\n" };
        let text = format!("id: {seq}{end}event: threshold_crossed{end}data: {data}{end}{end}");
        let _ = state.events.send((seq, text));
        let body = json!({"type": "threshold_crossed", "timestamp": "2026-11-30T07:00:00Z",
                          "data": data})
        .to_string();
        let webhooks: Vec<String> = state.webhooks.lock().unwrap().values().cloned().collect();
        for url in webhooks {
            let state = Arc::clone(&state);
            let body = body.clone();
            tokio::spawn(async move {
                let status = post_delivery(&url, seq, body).await;
                state.delivery_statuses.lock().unwrap().push(status);
            });
        }
    }
}

/// Posts one webhook delivery; the status it was answered with, 0 if none.
async fn post_delivery(url: &str, seq: u64, body: String) -> u16 {
    let uri: hyper::Uri = url.parse().unwrap();
    let Ok(stream) = tokio::net::TcpStream::connect(uri.authority().unwrap().as_str()).await else {
        return 0;
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return 0;
    };
    tokio::spawn(connection);
    let request = Request::builder()
        .method(Method::POST)
        .uri(uri.path())
        .header(hyper::header::HOST, uri.authority().unwrap().as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", format!("msg_{seq}"))
        .header("webhook-timestamp", "1796022000")
        .header("webhook-signature", "v1,ZmFrZSBzaWduYXR1cmU=")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    match sender.send_request(request).await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// Cuts an event's text in three, mid-line, so that readers must join lines across chunks.
fn cut_in_three(text: &str) -> Vec<Bytes> {
    let bytes = Bytes::copy_from_slice(text.as_bytes());
    let (a, b) = (5, text.len() / 2);
    let c = text.len() - 1;
    vec![
        bytes.slice(..a),
        bytes.slice(a..b),
        bytes.slice(b..c),
        bytes.slice(c..),
    ]
}

/// `GET /v1/events/stream`: 503 past [`Fault::SseReadersMax`]; otherwise a heartbeat, then
/// every event published from now on, each in pieces.
fn stream_events(state: &Arc<State>) -> Response<FakeBody> {
    let connected = state.readers.fetch_add(1, Ordering::SeqCst) + 1;
    if let Fault::SseReadersMax { max } = state.fault {
        if connected > max as u64 {
            state.readers.fetch_sub(1, Ordering::SeqCst);
            return error(StatusCode::SERVICE_UNAVAILABLE, "too_many_readers").map(FakeBody::Full);
        }
    }
    let opened = state.readers_opened.fetch_add(1, Ordering::SeqCst) + 1;
    let lags = matches!(state.fault, Fault::LagFirstReader) && opened == 1;
    let mut events = state.events.subscribe();
    let (chunks, body) = mpsc::channel(64);
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let _ = chunks.send(Bytes::from_static(b": heartbeat\n\n")).await;
        'stream: while let Ok((seq, text)) = events.recv().await {
            for piece in cut_in_three(&text) {
                if chunks.send(piece).await.is_err() {
                    break 'stream;
                }
            }
            if lags {
                let lagged = format!("event: lagged\ndata: {{\"resume_after\":{seq}}}\n\n");
                let _ = chunks.send(Bytes::from(lagged)).await;
                break;
            }
        }
        state.readers.fetch_sub(1, Ordering::SeqCst);
    });
    let mut response = Response::new(FakeBody::Stream(body));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        "text/event-stream".parse().unwrap(),
    );
    response
}

/// The token of the `n`th pending signer: 72 lowercase hex digits, all different.
fn token_of(n: u64) -> String {
    let mixed = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef;
    format!("{mixed:016x}{:056x}", n)
}

/// With [`Fault::ExpiredTokens`], a pending answer's token has expired already.
fn expire(state: &State, mut body: Value) -> Value {
    if matches!(state.fault, Fault::ExpiredTokens) && body.get("expires_at").is_some() {
        body["expires_at"] = json!(EXPIRED);
    }
    body
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}

fn error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    let mut response = reply(status, json!({"error": {"code": code, "message": code}}));
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(hyper::header::RETRY_AFTER, "1".parse().unwrap());
    }
    response
}

enum Role {
    Ingest,
    Admin,
}

fn role(state: &State, request: &Request<Incoming>) -> Option<Role> {
    let Some(value) = request.headers().get(hyper::header::AUTHORIZATION) else {
        return state.controls.open.then_some(Role::Admin);
    };
    state.authorized.fetch_add(1, Ordering::SeqCst);
    match value.to_str().ok()?.strip_prefix("Bearer ")? {
        INGEST_KEY => Some(Role::Ingest),
        ADMIN_KEY => Some(Role::Admin),
        _ => None,
    }
}

/// What a signature gets.
enum Signed {
    Accepted(u64),
    Duplicate(u64),
    Pending(String),
}

impl Signed {
    /// The single endpoint's status and body, and the batch endpoint's line.
    fn answer(&self) -> (StatusCode, Value) {
        match self {
            Signed::Accepted(count) => (
                StatusCode::CREATED,
                json!({"status": "accepted", "count": count}),
            ),
            Signed::Duplicate(count) => (
                StatusCode::OK,
                json!({"status": "duplicate", "count": count}),
            ),
            Signed::Pending(token) => (
                StatusCode::ACCEPTED,
                json!({"status": "pending", "token": token, "expires_at": EXPIRES_LATER}),
            ),
        }
    }
}

/// Signs one signature ([`sign_controlled`]) and counts its answer under its address.
fn sign(
    state: &State,
    petition: &str,
    signature: &Value,
) -> Result<Signed, (StatusCode, &'static str)> {
    let result = sign_controlled(state, petition, signature);
    let address = signature
        .get("ip")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut model = state.model.lock().unwrap();
    let answers = model.answers.entry(address).or_default();
    match &result {
        Ok(_) => answers.taken += 1,
        Err((_, "ip_rate_limited")) => answers.limited += 1,
        Err((_, "blocked")) => answers.blocked += 1,
        Err(_) => answers.other += 1,
    }
    result
}

/// The abuse controls, then [`sign_counted`]; records the signer's address and receipt.
fn sign_controlled(
    state: &State,
    petition: &str,
    signature: &Value,
) -> Result<Signed, (StatusCode, &'static str)> {
    let invalid = (StatusCode::UNPROCESSABLE_ENTITY, "invalid_signature");
    let Some(email) = signature.get("email").and_then(Value::as_str) else {
        return Err(invalid);
    };
    let address = match signature.get("ip") {
        None => None,
        Some(Value::String(text)) if text.parse::<std::net::IpAddr>().is_ok() => Some(text.clone()),
        Some(_) => return Err(invalid),
    };
    let signer = email.trim().to_lowercase();
    {
        let mut model = state.model.lock().unwrap();
        let key = (petition.to_owned(), signer.clone());
        *model.receipts.entry(key.clone()).or_default() += 1;
        match model.addresses.get(&key) {
            Some(first) if *first != address => {
                state.address_changes.fetch_add(1, Ordering::SeqCst);
            }
            Some(_) => {}
            None => {
                model.addresses.insert(key, address.clone());
            }
        }
    }
    if state.controls.paused {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "signing_paused"));
    }
    let Some(address) = address else {
        return sign_counted(state, petition, signature);
    };
    if state
        .controls
        .blocked_prefixes
        .iter()
        .any(|prefix| address.starts_with(prefix))
    {
        return Err((StatusCode::FORBIDDEN, "blocked"));
    }
    let Some(limit) = state.controls.ip_limit else {
        return sign_counted(state, petition, signature);
    };
    // The slot is taken before the signature is signed, under the lock, so that connections
    // racing on one (petition, address) cannot pass the limit together; a refusal gives it
    // back (a duplicate counts toward the limit, a refusal does not).
    let pair = (petition.to_owned(), address);
    {
        let mut model = state.model.lock().unwrap();
        let taken = model.taken_per_pair.entry(pair.clone()).or_default();
        if *taken >= limit {
            return Err((StatusCode::TOO_MANY_REQUESTS, "ip_rate_limited"));
        }
        *taken += 1;
    }
    let result = sign_counted(state, petition, signature);
    if result.is_err() {
        if let Some(taken) = state.model.lock().unwrap().taken_per_pair.get_mut(&pair) {
            *taken -= 1;
        }
    }
    result
}

/// Dedups and counts one signature (or makes it pending), applying the fault.
fn sign_counted(
    state: &State,
    petition: &str,
    signature: &Value,
) -> Result<Signed, (StatusCode, &'static str)> {
    let Some(email) = signature.get("email").and_then(Value::as_str) else {
        return Err((StatusCode::UNPROCESSABLE_ENTITY, "invalid_signature"));
    };
    let placement = placement_of(signature)?;
    let mut model = state.model.lock().unwrap();
    let model = &mut *model;
    let Some(entry) = model.petitions.get_mut(petition) else {
        return Err((StatusCode::NOT_FOUND, "unknown_petition"));
    };
    let signer = email.trim().to_lowercase();
    match entry.placements.get(&signer) {
        Some(first) if *first != placement => {
            state.placement_changes.fetch_add(1, Ordering::SeqCst);
        }
        Some(_) => {}
        None => {
            entry.placements.insert(signer.clone(), placement);
        }
    }
    if entry.signers.contains(&signer) {
        return Ok(Signed::Duplicate(entry.count));
    }
    if entry.email_validation {
        if let Some((token, resubmissions)) = entry.pending.get_mut(&signer) {
            *resubmissions += 1;
            if *resubmissions > RESUBMISSIONS_MAX {
                return Err((StatusCode::TOO_MANY_REQUESTS, "too_many_resubmissions"));
            }
            return Ok(Signed::Pending(token.clone()));
        }
        let nth = state.pendings.fetch_add(1, Ordering::SeqCst) + 1;
        let token = token_of(nth);
        if matches!(state.fault, Fault::ForgetPending { nth: forgotten } if forgotten == nth) {
            return Ok(Signed::Pending(token));
        }
        entry.pending.insert(signer.clone(), (token.clone(), 0));
        model
            .tokens
            .insert(token.clone(), (petition.to_owned(), signer));
        return Ok(Signed::Pending(token));
    }
    let nth = state.accepted.fetch_add(1, Ordering::SeqCst) + 1;
    match state.fault {
        Fault::LoseAck { nth: lost } if nth == lost => {
            return Ok(Signed::Accepted(entry.count + 1))
        }
        Fault::DoubleCount { nth: twice } if nth == twice => entry.count_in(&signer),
        _ => {}
    }
    entry.count_in(&signer);
    entry.signers.insert(signer);
    if entry.thresholds.contains(&entry.count) {
        publish(state, petition, entry.count);
    }
    Ok(Signed::Accepted(entry.count))
}

/// Validates one token, applying the fault: `(already validated?, count)`.
fn validate(state: &State, token: &str) -> Result<(bool, u64), (StatusCode, &'static str)> {
    let mut model = state.model.lock().unwrap();
    let model = &mut *model;
    model.validation_requests.push(token.to_owned());
    let well_formed = token.len() == 72
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return Err((StatusCode::UNPROCESSABLE_ENTITY, "malformed_token"));
    }
    let Some((petition, signer)) = model.tokens.get(token) else {
        return Err((StatusCode::NOT_FOUND, "unknown_token"));
    };
    if matches!(state.fault, Fault::ExpiredTokens) {
        return Err((StatusCode::GONE, "token_expired"));
    }
    let entry = model
        .petitions
        .get_mut(petition)
        .expect("a token's petition exists");
    if entry.signers.contains(signer) {
        return Ok((true, entry.count));
    }
    let nth = state.validations.fetch_add(1, Ordering::SeqCst) + 1;
    match state.fault {
        Fault::LoseValidation { nth: lost } if nth == lost => return Ok((false, entry.count + 1)),
        Fault::DoubleCountValidation { nth: twice } if nth == twice => entry.count_in(signer),
        _ => {}
    }
    entry.pending.remove(signer);
    entry.signers.insert(signer.clone());
    entry.count_in(signer);
    if entry.thresholds.contains(&entry.count) {
        publish(state, petition, entry.count);
    }
    Ok((false, entry.count))
}

fn validated_answer(already: bool, count: u64) -> Value {
    let status = if already {
        "already_validated"
    } else {
        "validated"
    };
    json!({"status": status, "count": count})
}

async fn handle(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    if let Fault::Stall { nth, pause } = state.fault {
        let until = {
            let mut stall = state.stall_until.lock().unwrap();
            if n == nth {
                *stall = Some(Instant::now() + pause);
            }
            *stall
        };
        if let Some(until) = until {
            // Every request that arrives while the server is stalled waits for the stall's end.
            tokio::time::sleep_until(until).await;
        }
    }
    if let Fault::Hang { nth } = state.fault {
        if n == nth {
            std::future::pending::<()>().await;
        }
    }
    if let Fault::Slow { each } = state.fault {
        if request.method() == Method::POST && request.uri().path().contains("signatures") {
            tokio::time::sleep(each).await;
        }
    }
    if let Fault::SlowValidations { each } = state.fault {
        if request.method() == Method::POST && request.uri().path().ends_with("/validations") {
            tokio::time::sleep(each).await;
        }
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let role = role(state, &request);
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return error(StatusCode::BAD_REQUEST, "bad_request"),
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["v1", "petitions", id]) => {
            let model = state.model.lock().unwrap();
            match model.petitions.get(*id) {
                Some(p) if matches!(state.fault, Fault::OldServer) => reply(
                    StatusCode::OK,
                    json!({"id": id, "count": p.count, "state": "open"}),
                ),
                Some(p) => {
                    let pending = if matches!(state.fault, Fault::ExpiredTokens) {
                        0
                    } else {
                        p.pending.len()
                    };
                    reply(
                        StatusCode::OK,
                        json!({"id": id, "count": p.count, "pending_count": pending,
                               "invalidated_count": 0, "state": "open",
                               "thresholds": p.thresholds}),
                    )
                }
                None => error(StatusCode::NOT_FOUND, "unknown_petition"),
            }
        }
        (&Method::GET, ["v1", "petitions", id, "countries"]) => {
            if matches!(state.fault, Fault::NoCountries) {
                return error(StatusCode::NOT_FOUND, "not_found");
            }
            let limit = match query.strip_prefix("limit=") {
                None if query.is_empty() => 249,
                Some(n) => match n.parse::<usize>() {
                    Ok(n) if (1..=249).contains(&n) => n,
                    _ => return error(StatusCode::BAD_REQUEST, "bad_request"),
                },
                None => return error(StatusCode::BAD_REQUEST, "bad_request"),
            };
            let model = state.model.lock().unwrap();
            let Some(p) = model.petitions.get(*id) else {
                return error(StatusCode::NOT_FOUND, "unknown_petition");
            };
            let mut countries = sorted_countries(&p.by_country);
            if matches!(state.fault, Fault::CountriesShort) {
                if let Some(top) = countries.first_mut() {
                    top.1 -= 1;
                }
            }
            countries.truncate(limit);
            let countries: Vec<Value> = countries
                .into_iter()
                .map(|(country, count)| json!({"country": country, "count": count}))
                .collect();
            reply(
                StatusCode::OK,
                json!({"petition": id, "count": p.count, "countries": countries}),
            )
        }
        (&Method::PUT, ["v1", "petitions", id]) => match role {
            None => error(StatusCode::UNAUTHORIZED, "unauthorized"),
            Some(Role::Ingest) => error(StatusCode::FORBIDDEN, "forbidden"),
            Some(Role::Admin) => {
                let Ok(spec) = serde_json::from_slice::<Value>(&body) else {
                    return error(StatusCode::BAD_REQUEST, "bad_request");
                };
                let email_validation = match spec.get("validation").and_then(Value::as_str) {
                    None | Some("none") => false,
                    Some("email") => true,
                    Some(_) => return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_petition"),
                };
                let thresholds = match spec.get("thresholds") {
                    None => DEFAULT_THRESHOLDS.to_vec(),
                    Some(list) => match serde_json::from_value::<Vec<u64>>(list.clone()) {
                        Ok(list) if list.len() <= 32 && !list.contains(&0) => list,
                        _ => return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_petition"),
                    },
                };
                let mut model = state.model.lock().unwrap();
                let created = !model.petitions.contains_key(*id);
                let petition = model.petitions.entry((*id).to_owned()).or_default();
                petition.email_validation = email_validation;
                petition.thresholds = thresholds;
                let count = petition.count;
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                reply(status, json!({"id": id, "count": count, "state": "open"}))
            }
        },
        (&Method::POST, ["v1", "petitions", id, "signatures"]) => {
            if role.is_none() {
                return error(StatusCode::UNAUTHORIZED, "unauthorized");
            }
            let Ok(signature) = serde_json::from_slice::<Value>(&body) else {
                return error(StatusCode::BAD_REQUEST, "bad_request");
            };
            match sign(state, id, &signature) {
                Ok(signed) => {
                    let (status, body) = signed.answer();
                    reply(status, expire(state, body))
                }
                Err((status, code)) => error(status, code),
            }
        }
        (&Method::POST, ["v1", "validations"]) => {
            if role.is_none() {
                return error(StatusCode::UNAUTHORIZED, "unauthorized");
            }
            let Ok(body) = serde_json::from_slice::<Value>(&body) else {
                return error(StatusCode::BAD_REQUEST, "bad_request");
            };
            let Some(token) = body.get("token").and_then(Value::as_str) else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "malformed_token");
            };
            match validate(state, token) {
                Ok((already, count)) => reply(StatusCode::OK, validated_answer(already, count)),
                Err((status, code)) => error(status, code),
            }
        }
        (&Method::POST, ["v1", "signatures:batch"]) => {
            if role.is_none() {
                return error(StatusCode::UNAUTHORIZED, "unauthorized");
            }
            let mut out = String::new();
            for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let result = match serde_json::from_slice::<Value>(line) {
                    Ok(line) if line.get("validate").is_some() => {
                        let token = line.get("validate").and_then(Value::as_str).unwrap_or("");
                        match validate(state, token) {
                            Ok((already, count)) => validated_answer(already, count),
                            Err((_, code)) => {
                                json!({"status": "error", "code": code, "message": code})
                            }
                        }
                    }
                    Ok(signature) => {
                        let petition = signature
                            .get("petition")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        match sign(state, petition, &signature) {
                            Ok(signed) => expire(state, signed.answer().1),
                            Err((_, code)) => {
                                json!({"status": "error", "code": code, "message": code})
                            }
                        }
                    }
                    Err(_) => {
                        json!({"status": "error", "code": "bad_request", "message": "bad json"})
                    }
                };
                out.push_str(&result.to_string());
                out.push('\n');
            }
            let mut response = Response::new(Full::new(Bytes::from(out)));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                "application/x-ndjson".parse().unwrap(),
            );
            response
        }
        (&Method::PUT, ["v1", "webhooks", name]) => match role {
            Some(Role::Admin) => {
                let Some(url) = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|spec| spec.get("url").and_then(Value::as_str).map(str::to_owned))
                else {
                    return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_webhook");
                };
                let created = state
                    .webhooks
                    .lock()
                    .unwrap()
                    .insert((*name).to_owned(), url.clone())
                    .is_none();
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                reply(
                    status,
                    json!({"name": name, "url": url, "events": ["threshold_crossed"],
                           "secret": "whsec_ZmFrZSBzZWNyZXQ="}),
                )
            }
            Some(Role::Ingest) => error(StatusCode::FORBIDDEN, "forbidden"),
            None => error(StatusCode::UNAUTHORIZED, "unauthorized"),
        },
        (&Method::DELETE, ["v1", "webhooks", name]) => match role {
            Some(Role::Admin) => match state.webhooks.lock().unwrap().remove(*name) {
                Some(_) => {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = StatusCode::NO_CONTENT;
                    response
                }
                None => error(StatusCode::NOT_FOUND, "unknown_webhook"),
            },
            Some(Role::Ingest) => error(StatusCode::FORBIDDEN, "forbidden"),
            None => error(StatusCode::UNAUTHORIZED, "unauthorized"),
        },
        _ => error(StatusCode::NOT_FOUND, "not_found"),
    }
}
