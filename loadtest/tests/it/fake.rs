//! A small in-test ingest-server that follows the HTTP contract, with faults on demand.
//!
//! Its model is plain: per petition the signers counted and, for petitions registered with
//! `"validation":"email"`, the signers pending with their token; one map from token to signer
//! for `POST /v1/validations` and batch lines `{"validate":...}`. Tokens never expire unless
//! [`Fault::ExpiredTokens`] says they all have.

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
}

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
}

#[derive(Default)]
struct Model {
    petitions: HashMap<String, Petition>,
    /// Token → (petition, signer).
    tokens: HashMap<String, (String, String)>,
    /// Every token a validation was asked for, in order of arrival.
    validation_requests: Vec<String>,
}

struct State {
    fault: Fault,
    model: Mutex<Model>,
    accepted: AtomicU64,
    validations: AtomicU64,
    pendings: AtomicU64,
    requests: AtomicU64,
    stall_until: Mutex<Option<Instant>>,
}

/// A pending signer signing again gets its token back this many times; then 429.
const RESUBMISSIONS_MAX: u32 = 5;

pub struct FakeServer {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl FakeServer {
    pub async fn start(fault: Fault) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            fault,
            model: Mutex::new(Model::default()),
            accepted: AtomicU64::new(0),
            validations: AtomicU64::new(0),
            pendings: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            stall_until: Mutex::new(None),
        });
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(handle(&state, request).await) }
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

fn role(request: &Request<Incoming>) -> Option<Role> {
    let value = request.headers().get(hyper::header::AUTHORIZATION)?;
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

/// Dedups and counts one signature (or makes it pending), applying the fault.
fn sign(
    state: &State,
    petition: &str,
    signature: &Value,
) -> Result<Signed, (StatusCode, &'static str)> {
    let Some(email) = signature.get("email").and_then(Value::as_str) else {
        return Err((StatusCode::UNPROCESSABLE_ENTITY, "invalid_signature"));
    };
    let mut model = state.model.lock().unwrap();
    let model = &mut *model;
    let Some(entry) = model.petitions.get_mut(petition) else {
        return Err((StatusCode::NOT_FOUND, "unknown_petition"));
    };
    let signer = email.trim().to_lowercase();
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
        Fault::DoubleCount { nth: twice } if nth == twice => entry.count += 1,
        _ => {}
    }
    entry.signers.insert(signer);
    entry.count += 1;
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
        Fault::DoubleCountValidation { nth: twice } if nth == twice => entry.count += 1,
        _ => {}
    }
    entry.pending.remove(signer);
    entry.signers.insert(signer.clone());
    entry.count += 1;
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
    let role = role(&request);
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
                               "invalidated_count": 0, "state": "open"}),
                    )
                }
                None => error(StatusCode::NOT_FOUND, "unknown_petition"),
            }
        }
        (&Method::PUT, ["v1", "petitions", id]) => match role {
            None => error(StatusCode::UNAUTHORIZED, "unauthorized"),
            Some(Role::Ingest) => error(StatusCode::FORBIDDEN, "forbidden"),
            Some(Role::Admin) => {
                let email_validation = match serde_json::from_slice::<Value>(&body) {
                    Ok(spec) => match spec.get("validation").and_then(Value::as_str) {
                        None | Some("none") => false,
                        Some("email") => true,
                        Some(_) => {
                            return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_petition")
                        }
                    },
                    Err(_) => return error(StatusCode::BAD_REQUEST, "bad_request"),
                };
                let mut model = state.model.lock().unwrap();
                let created = !model.petitions.contains_key(*id);
                let petition = model.petitions.entry((*id).to_owned()).or_default();
                petition.email_validation = email_validation;
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
        _ => error(StatusCode::NOT_FOUND, "not_found"),
    }
}
