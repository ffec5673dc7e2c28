//! A small in-test ingest-server that follows the HTTP contract, with faults on demand.

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
}

#[derive(Default)]
struct Petition {
    signers: HashSet<String>,
    count: u64,
}

struct State {
    fault: Fault,
    petitions: Mutex<HashMap<String, Petition>>,
    accepted: AtomicU64,
    requests: AtomicU64,
    stall_until: Mutex<Option<Instant>>,
}

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
            petitions: Mutex::new(HashMap::new()),
            accepted: AtomicU64::new(0),
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
            .petitions
            .lock()
            .unwrap()
            .get(petition)
            .map(|p| p.count)
    }

    pub fn petition_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .state
            .petitions
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }
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

/// Dedups and counts one signature, applying the fault; `Ok(true)` when accepted.
fn sign(
    state: &State,
    petition: &str,
    signature: &Value,
) -> Result<(bool, u64), (StatusCode, &'static str)> {
    let Some(email) = signature.get("email").and_then(Value::as_str) else {
        return Err((StatusCode::UNPROCESSABLE_ENTITY, "invalid_signature"));
    };
    let mut petitions = state.petitions.lock().unwrap();
    let Some(entry) = petitions.get_mut(petition) else {
        return Err((StatusCode::NOT_FOUND, "unknown_petition"));
    };
    let signer = email.trim().to_lowercase();
    if entry.signers.contains(&signer) {
        return Ok((false, entry.count));
    }
    let nth = state.accepted.fetch_add(1, Ordering::SeqCst) + 1;
    match state.fault {
        Fault::LoseAck { nth: lost } if nth == lost => return Ok((true, entry.count + 1)),
        Fault::DoubleCount { nth: twice } if nth == twice => entry.count += 1,
        _ => {}
    }
    entry.signers.insert(signer);
    entry.count += 1;
    Ok((true, entry.count))
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
            let petitions = state.petitions.lock().unwrap();
            match petitions.get(*id) {
                Some(p) => reply(
                    StatusCode::OK,
                    json!({"id": id, "count": p.count, "state": "open"}),
                ),
                None => error(StatusCode::NOT_FOUND, "unknown_petition"),
            }
        }
        (&Method::PUT, ["v1", "petitions", id]) => match role {
            None => error(StatusCode::UNAUTHORIZED, "unauthorized"),
            Some(Role::Ingest) => error(StatusCode::FORBIDDEN, "forbidden"),
            Some(Role::Admin) => {
                let mut petitions = state.petitions.lock().unwrap();
                let created = !petitions.contains_key(*id);
                let count = petitions.entry((*id).to_owned()).or_default().count;
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
                Ok((true, count)) => reply(
                    StatusCode::CREATED,
                    json!({"status": "accepted", "count": count}),
                ),
                Ok((false, count)) => reply(
                    StatusCode::OK,
                    json!({"status": "duplicate", "count": count}),
                ),
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
                    Ok(signature) => {
                        let petition = signature
                            .get("petition")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        match sign(state, petition, &signature) {
                            Ok((true, count)) => json!({"status": "accepted", "count": count}),
                            Ok((false, count)) => json!({"status": "duplicate", "count": count}),
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
