//! Request handlers: one function per route, plus the shared pieces (auth, body limits, errors).

// Helpers return `Result<_, Response>` where the error is the finished answer to send; it is
// built once per refused request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use engine::{
    Outcome, PetitionError, PetitionInfo, PetitionSpec, PetitionState, Registered, SignatureRef,
    SubmitError,
};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::{Caller, Denied, Role};
use crate::routes::{route, NoRoute, RouteId};
use crate::state::State;
use crate::watchdog::Clock;

pub(crate) type Response = hyper::Response<Full<Bytes>>;

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

/// The service function: routes, answers, counts.
pub(crate) async fn handle(
    state: Arc<State>,
    clock: Arc<Clock>,
    request: Request<Incoming>,
) -> Result<Response, Infallible> {
    clock.request_started();
    let (route_id, response) = dispatch(&state, request).await;
    state.metrics.request(route_id, response.status().as_u16());
    clock.request_done();
    Ok(response)
}

async fn dispatch(state: &State, request: Request<Incoming>) -> (Option<RouteId>, Response) {
    // `id` borrows the request; the routes that take the request copy it first.
    let (route_id, id) = match route(request.method(), request.uri().path()) {
        Ok(found) => found,
        Err(NoRoute::NotFound) => {
            return (
                None,
                error(StatusCode::NOT_FOUND, "not_found", "no such route"),
            )
        }
        Err(NoRoute::MethodNotAllowed(allow)) => {
            let mut response = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format_args!("this route takes {allow}"),
            );
            if let Ok(allow) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            return (None, response);
        }
    };
    let response = match route_id {
        RouteId::Sign => {
            let id = id.to_string();
            sign(state, id, request).await
        }
        RouteId::Batch => batch(state, request).await,
        RouteId::PetitionGet => petition_get(state, id, request.headers()),
        RouteId::PetitionList => petition_list(state, request.uri().query()),
        RouteId::PetitionPut => {
            let id = id.to_string();
            petition_put(state, id, request).await
        }
        RouteId::PetitionClose => {
            let id = id.to_string();
            petition_close(state, id, request).await
        }
        RouteId::Milestones => milestones(state, request.uri().query()),
        RouteId::Metrics => metrics(state),
        RouteId::Livez => json(StatusCode::OK, r#"{"status":"live"}"#),
        RouteId::Readyz => readyz(state),
        RouteId::OpenApi => json(StatusCode::OK, crate::OPENAPI_JSON),
    };
    (Some(route_id), response)
}

// ---------------------------------------------------------------------------------------------
// Signatures

/// The body of `POST /v1/petitions/{id}/signatures`, borrowed from the request body where no
/// JSON escape had to be decoded.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureBody<'a> {
    #[serde(borrow)]
    email: Cow<'a, str>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    postcode: Option<Cow<'a, str>>,
    #[serde(borrow)]
    country: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ip: Option<Cow<'a, str>>,
}

/// One line of `POST /v1/signatures:batch`, borrowed like [`SignatureBody`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchLine<'a> {
    #[serde(borrow)]
    petition: Cow<'a, str>,
    #[serde(borrow)]
    email: Cow<'a, str>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    postcode: Option<Cow<'a, str>>,
    #[serde(borrow)]
    country: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ip: Option<Cow<'a, str>>,
}

async fn sign(state: &State, petition: String, request: Request<Incoming>) -> Response {
    let caller = match authorize(state, request.headers(), Role::Ingest) {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let Some(_permit) = admit(state, &state.inflight) else {
        state.metrics.signature("overloaded");
        return shed(state);
    };
    if let Err(response) = content_type(request.headers(), &[JSON]) {
        return response;
    }
    let limit = state.config.body_bytes_max;
    let body = match read_body(state, request, limit).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let parsed: SignatureBody<'_> = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(e) => {
            let (status, code) = json_error_kind(&e);
            state.metrics.signature(code);
            return error(status, code, e);
        }
    };
    if !state.keys.take(caller, 1) {
        state.metrics.signature("rate_limited");
        return rate_limited(state);
    }
    let signature = SignatureRef {
        petition: &petition,
        email: &parsed.email,
        name: parsed.name.as_deref(),
        postcode: parsed.postcode.as_deref(),
        country: parsed.country.as_deref(),
        ip: parsed.ip.as_deref(),
        source: state.keys.source(caller),
    };
    let started = Instant::now();
    // Admission happens in this call; only the wait for the write is awaited. The request body
    // is released before that wait: a version that held it across cost ~1.4 µs more CPU a
    // request (BENCHMARKS.md), most likely because the body shares hyper's read buffer.
    let answer = state.engine.submit_ref_async(&signature);
    drop(parsed);
    drop(body);
    let result = answer.await;
    state.metrics.ack_latency.record(started.elapsed());
    match result {
        Ok(Outcome::Accepted { count }) => {
            state.metrics.signature("accepted");
            json(
                StatusCode::CREATED,
                format!(r#"{{"status":"accepted","count":{count}}}"#),
            )
        }
        Ok(Outcome::Duplicate { count }) => {
            state.metrics.signature("duplicate");
            json(
                StatusCode::OK,
                format!(r#"{{"status":"duplicate","count":{count}}}"#),
            )
        }
        Err(e) => {
            state.metrics.signature(e.code());
            if e.is_retryable() {
                retry_later(state, submit_status(&e), e.code(), &e)
            } else {
                error(submit_status(&e), e.code(), &e)
            }
        }
    }
}

async fn batch(state: &State, request: Request<Incoming>) -> Response {
    let caller = match authorize(state, request.headers(), Role::Ingest) {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let Some(_permit) = admit(state, &state.batch_inflight) else {
        // Its lines are unread, so they are not counted as signatures; `requests_shed` counts it.
        return shed(state);
    };
    if let Err(response) = content_type(request.headers(), &[NDJSON, "application/jsonl"]) {
        return response;
    }
    let limit = state.config.batch_bytes_max;
    let body = match read_body(state, request, limit).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let mut lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|line| line.is_empty()) {
        lines.pop();
    }
    if lines.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "empty_batch",
            "the batch has no lines",
        );
    }
    if lines.len() > state.config.batch_lines_max {
        return close_connection(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_lines",
            format_args!(
                "a batch has at most {} lines, this one has {}",
                state.config.batch_lines_max,
                lines.len()
            ),
        ));
    }
    // Each line is a signature to submit or an answer already known.
    let mut answers: Vec<Option<(&'static str, String)>> = Vec::with_capacity(lines.len());
    let mut parsed_lines = Vec::with_capacity(lines.len());
    for line in &lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match serde_json::from_slice::<BatchLine<'_>>(line) {
            Ok(parsed) => {
                parsed_lines.push(parsed);
                answers.push(None);
            }
            Err(e) => {
                let (_, code) = json_error_kind(&e);
                state.metrics.signature(code);
                answers.push(Some((code, e.to_string())));
            }
        }
    }
    let source = state.keys.source(caller);
    let signatures: Vec<SignatureRef<'_>> = parsed_lines
        .iter()
        .map(|line| SignatureRef {
            petition: &line.petition,
            email: &line.email,
            name: line.name.as_deref(),
            postcode: line.postcode.as_deref(),
            country: line.country.as_deref(),
            ip: line.ip.as_deref(),
            source,
        })
        .collect();
    if !state.keys.take(caller, signatures.len() as u64) {
        for _ in 0..signatures.len() {
            state.metrics.signature("rate_limited");
        }
        return rate_limited(state);
    }
    let line_count = lines.len();
    state.metrics.batch(line_count);
    let started = Instant::now();
    // As in `sign`: the body is released before the wait for the write.
    let answer = state.engine.submit_batch_ref_async(&signatures);
    drop(signatures);
    drop(parsed_lines);
    drop(lines);
    drop(body);
    let mut results = answer.await.into_iter();
    state.metrics.ack_latency.record(started.elapsed());
    let mut out = String::with_capacity(line_count * 40);
    for answer in answers {
        let line = match answer {
            Some((code, message)) => error_line(code, &message),
            None => match results.next() {
                Some(Ok(Outcome::Accepted { count })) => {
                    state.metrics.signature("accepted");
                    format!(r#"{{"status":"accepted","count":{count}}}"#)
                }
                Some(Ok(Outcome::Duplicate { count })) => {
                    state.metrics.signature("duplicate");
                    format!(r#"{{"status":"duplicate","count":{count}}}"#)
                }
                Some(Err(e)) => {
                    state.metrics.signature(e.code());
                    error_line(e.code(), &e.to_string())
                }
                None => error_line("shutting_down", "no answer from the engine"),
            },
        };
        out.push_str(&line);
        out.push('\n');
    }
    let mut response = hyper::Response::new(Full::new(Bytes::from(out)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    response
}

fn error_line(code: &str, message: &str) -> String {
    #[derive(Serialize)]
    struct ErrorLine<'a> {
        status: &'static str,
        code: &'a str,
        message: &'a str,
    }
    let line = ErrorLine {
        status: "error",
        code,
        message,
    };
    serde_json::to_string(&line).unwrap_or_default()
}

fn submit_status(e: &SubmitError) -> StatusCode {
    match e {
        SubmitError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        SubmitError::UnknownPetition => StatusCode::NOT_FOUND,
        SubmitError::PetitionClosed => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// 400 for text that is not JSON; 422 for JSON of the wrong shape (missing or unknown field,
/// wrong type).
fn json_error_kind(e: &serde_json::Error) -> (StatusCode, &'static str) {
    match e.classify() {
        serde_json::error::Category::Data => {
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_signature")
        }
        _ => (StatusCode::BAD_REQUEST, "malformed_json"),
    }
}

// ---------------------------------------------------------------------------------------------
// Petitions

#[derive(Serialize)]
struct PetitionJson<'a> {
    id: &'a str,
    count: u64,
    state: &'static str,
    created_at: String,
    deadline: Option<String>,
    closed_at: Option<String>,
    thresholds: &'a [u64],
    milestones_reached: &'a [u64],
}

impl<'a> PetitionJson<'a> {
    fn new(info: &'a PetitionInfo) -> PetitionJson<'a> {
        PetitionJson {
            id: &info.id,
            count: info.count,
            state: info.state.as_str(),
            created_at: rfc3339(info.created_at_ms),
            deadline: info.deadline_ms.map(rfc3339),
            closed_at: info.closed_at_ms.map(rfc3339),
            thresholds: &info.thresholds,
            milestones_reached: &info.milestones_reached,
        }
    }
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn petition_json(info: &PetitionInfo) -> String {
    serde_json::to_string(&PetitionJson::new(info)).unwrap_or_default()
}

/// A rendered `GET /v1/petitions/{id}` answer, reused while nothing in it can have changed: the
/// same count, no admin change since (see [`State::admin_generation`]), and, for an open
/// petition with a deadline, the deadline not yet passed. Under a refresh storm on a viral
/// petition this skips the JSON, timestamps and ETag of every request but the first after a
/// new signature.
///
/// Each worker thread keeps its own (see [`RENDERED`]): a shared cache put a lock, a reference
/// count and two shared buffers' counts on every read, cache lines that the two cores then
/// passed back and forth at 100 k reads a second.
struct Rendered {
    count: u64,
    generation: u64,
    open_until_ms: Option<u64>,
    body: Bytes,
    /// The quoted ETag, ready to send.
    etag: HeaderValue,
}

thread_local! {
    /// This thread's rendered petitions, by server ([`State::instance`]) and petition id.
    /// Bounded by the registered petitions: an unknown id is never rendered.
    static RENDERED: RefCell<HashMap<u64, HashMap<Box<str>, Rendered>>> =
        RefCell::new(HashMap::new());
}

/// The body and ETag of `GET /v1/petitions/{id}`, from this thread's cache when still exact.
fn rendered_petition(state: &State, id: &str) -> Option<(Bytes, HeaderValue)> {
    let generation = state.admin_generation.load(Ordering::Acquire);
    let count = state.engine.count(id)?;
    let now_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    let hit = RENDERED.with_borrow(|servers| {
        let r = servers.get(&state.instance)?.get(id)?;
        let exact = r.count == count
            && r.generation == generation
            && r.open_until_ms.is_none_or(|deadline| now_ms() < deadline);
        exact.then(|| (r.body.clone(), r.etag.clone()))
    });
    if hit.is_some() {
        return hit;
    }
    let info = state.engine.petition(id)?;
    let body = petition_json(&info);
    let etag = HeaderValue::from_str(&format!(
        "\"{:016x}\"",
        xxhash_rust::xxh3::xxh3_64(body.as_bytes())
    ))
    .unwrap_or_else(|_| unreachable!("hex digits in quotes are a valid header value"));
    let rendered = Rendered {
        count: info.count,
        generation,
        open_until_ms: match info.state {
            PetitionState::Open => info.deadline_ms,
            _ => None,
        },
        etag,
        body: Bytes::from(body),
    };
    let answer = (rendered.body.clone(), rendered.etag.clone());
    RENDERED.with_borrow_mut(|servers| {
        servers
            .entry(state.instance)
            .or_default()
            .insert(id.into(), rendered);
    });
    Some(answer)
}

fn petition_get(state: &State, id: &str, headers: &HeaderMap) -> Response {
    let Some((body, etag)) = rendered_petition(state, id) else {
        return unknown_petition();
    };
    let tag = etag.as_bytes();
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|candidate| candidate.as_bytes() == tag || candidate == "*");
    let mut response = if fresh {
        let mut response = hyper::Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        json(StatusCode::OK, body)
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=1"),
    );
    response
}

fn petition_list(state: &State, query: Option<&str>) -> Response {
    let mut limit = 10;
    for (key, value) in query_pairs(query) {
        match key {
            "sort" if value == "count" => {}
            "sort" => {
                return bad_parameter("sort", "the only order is sort=count");
            }
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => limit = n,
                _ => return bad_parameter("limit", "limit is 1 to 1000"),
            },
            _ => {
                return bad_parameter(key, "known parameters: sort, limit");
            }
        }
    }
    #[derive(Serialize)]
    struct List<'a> {
        petitions: Vec<PetitionJson<'a>>,
    }
    let top = state.engine.top_petitions(limit);
    let list = List {
        petitions: top.iter().map(PetitionJson::new).collect(),
    };
    json(
        StatusCode::OK,
        serde_json::to_string(&list).unwrap_or_default(),
    )
}

/// The body of `PUT /v1/petitions/{id}`; every field is optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PetitionBody {
    /// RFC 3339 in UTC; absent or null: no deadline.
    deadline: Option<String>,
    /// Absent: keep the current thresholds (defaults for a new petition).
    thresholds: Option<Vec<u64>>,
}

async fn petition_put(state: &State, id: String, request: Request<Incoming>) -> Response {
    if let Err(response) = authorize(state, request.headers(), Role::Admin) {
        return response;
    }
    let Some(_permit) = admit(state, &state.inflight) else {
        return shed(state);
    };
    if let Err(response) = content_type(request.headers(), &[JSON]) {
        return response;
    }
    let limit = state.config.body_bytes_max;
    let body = match read_body(state, request, limit).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let parsed: PetitionBody = if body.iter().all(u8::is_ascii_whitespace) {
        PetitionBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(parsed) => parsed,
            Err(e) => {
                let status = json_error_kind(&e).0;
                let code = if status == StatusCode::BAD_REQUEST {
                    "malformed_json"
                } else {
                    "invalid_petition"
                };
                return error(status, code, e);
            }
        }
    };
    let deadline_ms = match parsed.deadline.as_deref().map(parse_deadline).transpose() {
        Ok(deadline) => deadline,
        Err(message) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_petition",
                message,
            )
        }
    };
    let spec = PetitionSpec {
        id: id.clone(),
        deadline_ms,
        thresholds: parsed.thresholds,
    };
    let engine = state.engine.clone();
    let result = blocking(move || engine.register(spec)).await;
    state.admin_generation.fetch_add(1, Ordering::AcqRel);
    match result {
        Ok(Ok(registered)) => {
            let status = match registered {
                Registered::Created => StatusCode::CREATED,
                Registered::Updated => StatusCode::OK,
            };
            match state.engine.petition(&id) {
                Some(info) => json(status, petition_json(&info)),
                None => unknown_petition(),
            }
        }
        Ok(Err(e)) => petition_error(state, &e),
        Err(response) => response,
    }
}

fn parse_deadline(text: &str) -> Result<u64, String> {
    let at = humantime::parse_rfc3339(text).map_err(|e| {
        format!("deadline must be RFC 3339 in UTC, e.g. 2027-01-31T23:59:59Z ({e})")
    })?;
    let ms = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "deadline must be after 1970".to_string())?
        .as_millis();
    u64::try_from(ms).map_err(|_| "deadline is too far away".to_string())
}

async fn petition_close(state: &State, id: String, request: Request<Incoming>) -> Response {
    if let Err(response) = authorize(state, request.headers(), Role::Admin) {
        return response;
    }
    let Some(_permit) = admit(state, &state.inflight) else {
        return shed(state);
    };
    let engine = state.engine.clone();
    let result = blocking(move || engine.close_petition(&id)).await;
    state.admin_generation.fetch_add(1, Ordering::AcqRel);
    match result {
        Ok(Ok(info)) => json(StatusCode::OK, petition_json(&info)),
        Ok(Err(e)) => petition_error(state, &e),
        Err(response) => response,
    }
}

fn petition_error(state: &State, e: &PetitionError) -> Response {
    match e {
        PetitionError::Invalid(_) => error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_petition", e),
        PetitionError::UnknownPetition => unknown_petition(),
        PetitionError::TooMany => error(StatusCode::CONFLICT, "too_many_petitions", e),
        PetitionError::StorageUnavailable => retry_later(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            e,
        ),
        _ => retry_later(state, StatusCode::SERVICE_UNAVAILABLE, "shutting_down", e),
    }
}

fn unknown_petition() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown_petition",
        "no petition has this id",
    )
}

/// Runs a blocking engine call (registration waits for a synced write) off the async workers.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(call).await.map_err(|_| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the engine call failed",
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Milestones, metrics, health

fn milestones(state: &State, query: Option<&str>) -> Response {
    let mut after = 0;
    let mut limit = 100;
    for (key, value) in query_pairs(query) {
        match key {
            "after" => match value.parse::<u64>() {
                Ok(n) => after = n,
                Err(_) => return bad_parameter("after", "after is a milestone sequence number"),
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => limit = n,
                _ => return bad_parameter("limit", "limit is 1 to 1000"),
            },
            _ => return bad_parameter(key, "known parameters: after, limit"),
        }
    }
    #[derive(Serialize)]
    struct Item<'a> {
        seq: u64,
        petition: &'a str,
        threshold: u64,
        reached_at: String,
    }
    #[derive(Serialize)]
    struct Feed<'a> {
        milestones: Vec<Item<'a>>,
        next_after: u64,
    }
    let list = state.engine.milestones_after(after, limit);
    let feed = Feed {
        next_after: list.last().map_or(after, |m| m.seq),
        milestones: list
            .iter()
            .map(|m| Item {
                seq: m.seq,
                petition: &m.petition,
                threshold: m.threshold,
                reached_at: rfc3339(m.reached_at_ms),
            })
            .collect(),
    };
    json(
        StatusCode::OK,
        serde_json::to_string(&feed).unwrap_or_default(),
    )
}

fn metrics(state: &State) -> Response {
    let mut text = String::with_capacity(8 * 1024);
    if prometheus_client::encoding::text::encode(&mut text, &state.registry).is_err() {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "metrics encoding failed",
        );
    }
    let mut response = hyper::Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

fn readyz(state: &State) -> Response {
    if state.draining.load(Ordering::Acquire) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the server is shutting down",
        );
    }
    if !state.engine.is_ready() {
        let stats = state.engine.stats();
        if let Some(reason) = stats.recovery_error {
            return error(StatusCode::SERVICE_UNAVAILABLE, "recovery_failed", reason);
        }
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "recovering",
            format_args!(
                "rebuilding the dedup index: {} of {} signatures loaded",
                stats.recovery_loaded, stats.recovery_expected
            ),
        );
    }
    let stats = state.engine.stats();
    if !stats.storage_healthy {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            stats
                .last_storage_error
                .unwrap_or_else(|| "the store is failing".to_string()),
        );
    }
    json(StatusCode::OK, r#"{"status":"ready"}"#)
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response {
    let mut response = hyper::Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// The error shape of every non-2xx answer: `{"error":{"code":...,"message":...}}`.
pub(crate) fn error(status: StatusCode, code: &str, message: impl Display) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message.to_string()}});
    json(status, body.to_string())
}

fn bad_parameter(name: &str, message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
        format_args!("{name}: {message}"),
    )
}

/// An error the caller should retry (503, 429): the error shape plus `Retry-After`.
fn retry_later(state: &State, status: StatusCode, code: &str, message: impl Display) -> Response {
    let mut response = error(status, code, message);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(state.config.retry_after_s),
    );
    response
}

fn close_connection(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn authorize(state: &State, headers: &HeaderMap, needed: Role) -> Result<Caller, Response> {
    let header = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    state
        .keys
        .authorize(header, needed)
        .map_err(|denied| match denied {
            Denied::Unauthenticated => {
                let mut response = error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "send a configured API key as Authorization: Bearer <key>",
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
            Denied::Forbidden => error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this API key's role may not do this",
            ),
        })
}

/// Takes an in-flight slot, or `None` when the limit is reached (the caller sheds the request).
fn admit(state: &State, limit: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
    let permit = limit.clone().try_acquire_owned().ok();
    if permit.is_none() {
        state.metrics.shed.fetch_add(1, Ordering::Relaxed);
    }
    permit
}

fn shed(state: &State) -> Response {
    retry_later(
        state,
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "too many requests in flight, retry shortly",
    )
}

fn rate_limited(state: &State) -> Response {
    retry_later(
        state,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "this API key is over its signature rate, retry shortly",
    )
}

/// Accepts a missing `Content-Type` or one of `allowed` (parameters such as charset ignored).
fn content_type(headers: &HeaderMap, allowed: &[&str]) -> Result<(), Response> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(essence)) {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format_args!("send {}", allowed.join(" or ")),
        ))
    }
}

/// Reads a body of at most `limit` bytes within the body timeout: 413 past the limit (whether
/// announced by `Content-Length` or found while reading a chunked body), 408 on timeout.
async fn read_body(
    state: &State,
    request: Request<Incoming>,
    limit: usize,
) -> Result<Bytes, Response> {
    let too_large = || {
        close_connection(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format_args!("the body is larger than {limit} bytes"),
        ))
    };
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut collect = std::pin::pin!(Limited::new(request.into_body(), limit).collect());
    // Most bodies arrived with their headers: only arm the timer when one has to be waited for.
    let first = std::future::poll_fn(|cx| Poll::Ready(collect.as_mut().poll(cx))).await;
    let collected = match first {
        Poll::Ready(done) => Ok(done),
        Poll::Pending => tokio::time::timeout(state.config.body_read_timeout, collect).await,
    };
    match collected {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(close_connection(error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format_args!("could not read the request body: {e}"),
        ))),
        Err(_) => Err(close_connection(error(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format_args!(
                "the body did not arrive within {} ms",
                state.config.body_read_timeout.as_millis()
            ),
        ))),
    }
}

fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}
