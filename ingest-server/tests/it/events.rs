//! The events feed over HTTP: the live stream (resume from every position, a stalled reader
//! dropped, a lagging one told where to resume, the bound on readers), webhooks against a
//! receiver that fails at random (every event at least once, in order, signed as the Standard
//! Webhooks specification says), and deliveries across a kill -9 of the real binary.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sha2::Sha256;
use tokio::net::{TcpListener, TcpStream};

use crate::support::{start_binary, Conn, KillOnPanic, TestServer, ADMIN, INGEST};

/// One item of an event stream.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Event {
        id: Option<u64>,
        kind: String,
        data: String,
    },
    Comment,
}

/// A reader of `GET /v1/events/stream` over its own connection.
struct Stream {
    body: Incoming,
    text: String,
    /// Body frames (chunks, one per write of the server) read so far.
    frames: usize,
}

/// Opens a stream; the status, and the stream if it is 200.
async fn open_stream(
    addr: SocketAddr,
    path: &str,
    last_event_id: Option<u64>,
) -> (u16, Option<Stream>) {
    let tcp = TcpStream::connect(addr).await.expect("connects");
    let (mut sender, connection) = http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("host", "test");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("answered");
    let status = response.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{response:?}"
    );
    let stream = Stream {
        body: response.into_body(),
        text: String::new(),
        frames: 0,
    };
    (status, Some(stream))
}

impl Stream {
    /// The next item, or `None` if none comes within `wait` or the stream ended.
    async fn next(&mut self, wait: Duration) -> Option<Item> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(at) = self.text.find("\n\n") {
                let block: String = self.text.drain(..at + 2).collect();
                let (mut id, mut kind, mut data) = (None, String::from("message"), String::new());
                let mut comment = true;
                for line in block.lines() {
                    if line.is_empty() || line.starts_with(':') {
                        continue;
                    }
                    comment = false;
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    match field {
                        "id" => id = Some(value.parse().expect("numeric id")),
                        "event" => kind = value.to_string(),
                        "data" => data.push_str(value),
                        other => panic!("unexpected field {other:?} in {block:?}"),
                    }
                }
                return Some(if comment {
                    Item::Comment
                } else {
                    Item::Event { id, kind, data }
                });
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame()).await;
            match frame {
                Ok(Some(Ok(frame))) => {
                    if let Ok(bytes) = frame.into_data() {
                        self.frames += 1;
                        self.text
                            .push_str(std::str::from_utf8(&bytes).expect("utf-8"));
                    }
                }
                Ok(_) | Err(_) => return None,
            }
        }
    }

    /// The next event (skipping heartbeats), or `None`.
    async fn next_event(&mut self, wait: Duration) -> Option<(Option<u64>, String, String)> {
        loop {
            match self.next(wait).await? {
                Item::Comment => continue,
                Item::Event { id, kind, data } => return Some((id, kind, data)),
            }
        }
    }
}

async fn get_json(server: &TestServer, path: &str) -> Value {
    let reply = server.send(Method::GET, path, &[], "").await;
    assert_eq!(reply.status, 200, "{path}: {reply:?}");
    reply.json()
}

async fn respond(server: &TestServer, petition: &str, summary: &str) {
    let reply = server
        .send(
            Method::PUT,
            &format!("/v1/petitions/{petition}/response"),
            &[
                ("authorization", ADMIN),
                ("content-type", "application/json"),
            ],
            &serde_json::json!({ "summary": summary }).to_string(),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

/// Signs `n` new signers into `petition` in one batch.
async fn sign_batch(server: &TestServer, petition: &str, from: usize, n: usize) {
    let lines: String = (from..from + n)
        .map(|i| format!("{{\"petition\":\"{petition}\",\"email\":\"s{i}@example.org\"}}\n"))
        .collect();
    let reply = server
        .send(
            Method::POST,
            "/v1/signatures:batch",
            &[
                ("authorization", INGEST),
                ("content-type", "application/x-ndjson"),
            ],
            &lines,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_resumes_from_every_position_without_gap_or_duplicate() {
    let server = TestServer::start(|c| c.sse_heartbeat = Duration::from_millis(50)).await;
    server
        .register("p", r#"{"thresholds":[1,2,3,4,5,6,7,8,9,10]}"#)
        .await;
    let (_, live) = open_stream(server.addr, "/v1/events/stream", None).await;
    let mut live = live.expect("200");
    for i in 0..10 {
        assert_eq!(
            server.sign("p", &format!("s{i}@example.org")).await.status,
            201
        );
    }
    assert_eq!(server.close("p").await.status, 200);
    respond(&server, "p", "We will debate it.").await;
    // 10 crossings, the response falling due at 10, the close, the response.
    let total = 13u64;
    let mut recorded = Vec::new();
    while recorded.len() < total as usize {
        let (id, kind, data) = live
            .next_event(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("stream ended after {recorded:?}"));
        let json: Value = serde_json::from_str(&data).expect("JSON data");
        assert_eq!(json["seq"].as_u64(), id, "id is the sequence");
        assert_eq!(json["type"], kind.as_str(), "event is the type");
        recorded.push((id.expect("every event has an id"), data));
    }
    let ids: Vec<u64> = recorded.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (1..=total).collect::<Vec<_>>());
    // The pull feed shows the same events.
    let feed = get_json(&server, "/v1/events?after=0").await;
    let pulled: Vec<Value> = feed["events"].as_array().unwrap().clone();
    let streamed: Vec<Value> = recorded
        .iter()
        .map(|(_, data)| serde_json::from_str(data).unwrap())
        .collect();
    assert_eq!(pulled, streamed);
    assert_eq!(feed["last"], total);
    let kinds: Vec<&str> = pulled.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        &kinds[9..],
        [
            "threshold_crossed",
            "response_due",
            "petition_closed",
            "responded"
        ]
    );

    // Resuming from every position gives exactly the rest.
    for k in 0..=total {
        let (path, last) = if k % 2 == 0 {
            ("/v1/events/stream".to_string(), Some(k))
        } else {
            (format!("/v1/events/stream?after={k}"), None)
        };
        let (_, stream) = open_stream(server.addr, &path, last).await;
        let mut stream = stream.expect("200");
        let mut rest = Vec::new();
        while rest.len() < (total - k) as usize {
            let (id, _, data) = stream
                .next_event(Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("from {k}: only {rest:?}"));
            rest.push((id.unwrap(), data));
        }
        assert_eq!(rest, recorded[k as usize..], "resumed after {k}");
        // Then only heartbeats: no duplicate, nothing invented.
        let after = stream.next(Duration::from_millis(300)).await;
        assert_eq!(after, Some(Item::Comment), "after {k}: {after:?}");
    }
    let bad = server
        .send(
            Method::GET,
            "/v1/events/stream",
            &[("last-event-id", "seven")],
            "",
        )
        .await;
    assert_eq!(bad.status, 400);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_feed_goes_out_in_fewer_writes_while_a_stream_lingers() {
    for (linger, writes_max) in [
        (Duration::ZERO, None),
        (Duration::from_millis(500), Some(3)),
    ] {
        let server = TestServer::start(|c| c.sse_linger = linger).await;
        let thresholds: Vec<u64> = (1..=10).collect();
        server
            .register(
                "p",
                &serde_json::json!({ "thresholds": thresholds }).to_string(),
            )
            .await;
        let (_, stream) = open_stream(server.addr, "/v1/events/stream", None).await;
        let mut stream = stream.expect("200");
        // Ten crossings in ten commits, well within the linger.
        for i in 0..10 {
            assert_eq!(
                server.sign("p", &format!("s{i}@example.org")).await.status,
                201
            );
        }
        let mut ids = Vec::new();
        while ids.len() < 11 {
            let (id, _, _) = stream
                .next_event(Duration::from_secs(10))
                .await
                .expect("every event");
            ids.push(id.unwrap());
        }
        assert_eq!(ids, (1..=11).collect::<Vec<u64>>(), "all, in order");
        match writes_max {
            Some(most) => assert!(
                stream.frames <= most,
                "lingering {linger:?}: {} writes for 11 events",
                stream.frames
            ),
            None => assert!(stream.frames > 3, "no linger: {} writes", stream.frames),
        }
        server.stop().await;
    }
}

/// `ingest_<name>` from `/metrics`.
async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = server.send(Method::GET, "/metrics", &[], "").await.body;
    let text = String::from_utf8_lossy(&text).into_owned();
    let prefix = format!("ingest_{name} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in metrics"))
        .trim()
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_reader_is_told_where_to_resume_and_resumes_without_a_gap() {
    let server = TestServer::start(|c| {
        c.sse_buffer = 8;
        c.sse_stall_timeout = Duration::from_secs(60);
    })
    .await;
    server.register("p", r#"{"thresholds":[1]}"#).await;
    let (_, reader) = open_stream(server.addr, "/v1/events/stream?after=0", None).await;
    let mut reader = reader.expect("200");
    // Far more than the reader's queue, the ring and the sockets hold, while it reads nothing.
    let summary = "x".repeat(4000);
    let total = 1500u64;
    for i in 0..total {
        respond(&server, "p", &format!("{i} {summary}")).await;
    }
    let mut seen = Vec::new();
    let resume_after = loop {
        let (id, kind, data) = reader
            .next_event(Duration::from_secs(10))
            .await
            .expect("the stream ends with lagged");
        if kind == "lagged" {
            assert_eq!(id, None);
            let data: Value = serde_json::from_str(&data).unwrap();
            break data["resume_after"].as_u64().unwrap();
        }
        seen.push(id.unwrap());
    };
    assert!(
        (seen.len() as u64) < total,
        "it fell behind: saw {}",
        seen.len()
    );
    assert_eq!(
        seen,
        (1..=resume_after).collect::<Vec<_>>(),
        "no gap before"
    );
    assert_eq!(reader.next(Duration::from_secs(5)).await, None, "ended");
    assert!(metric(&server, "event_stream_lagged_total").await >= 1.0);
    let (_, again) = open_stream(server.addr, "/v1/events/stream", Some(resume_after)).await;
    let mut again = again.expect("200");
    for expected in resume_after + 1..=total {
        let (id, _, _) = again
            .next_event(Duration::from_secs(10))
            .await
            .expect("the rest");
        assert_eq!(id, Some(expected));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_dropped_and_readers_are_bounded() {
    let server = TestServer::start(|c| {
        c.sse_buffer = 8;
        c.sse_stall_timeout = Duration::from_millis(500);
        c.sse_readers_max = 2;
    })
    .await;
    server.register("p", r#"{"thresholds":[1]}"#).await;
    // A reader that sends its request and never reads, with a small receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(server.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut stalled,
        b"GET /v1/events/stream?after=0 HTTP/1.1\r\nhost: test\r\n\r\n",
    )
    .await
    .unwrap();
    let (_, second) = open_stream(server.addr, "/v1/events/stream", None).await;
    let second = second.expect("200");
    let (status, _) = open_stream(server.addr, "/v1/events/stream", None).await;
    assert_eq!(status, 503, "a third reader is over the bound");
    drop(second);
    let summary = "x".repeat(4000);
    for i in 0..1500 {
        respond(&server, "p", &format!("{i} {summary}")).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&server, "event_stream_readers").await > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the stalled reader is still connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dropped = metric(&server, "event_stream_stalled_total").await
        + metric(&server, "event_stream_lagged_total").await;
    assert!(dropped >= 1.0, "dropped as stalled or lagging");
    let (status, _) = open_stream(server.addr, "/v1/events/stream", None).await;
    assert_eq!(status, 200, "room again");
    drop(stalled);
    server.stop().await;
}

/// The Standard Webhooks signature, computed here: `v1,` and the base64 HMAC-SHA256 of
/// `id.timestamp.body` under the key after `whsec_`.
fn standard_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

#[test]
fn the_test_signature_matches_the_specification_vector() {
    assert_eq!(
        standard_signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

/// What the receiver saw: each attempt's id, whether its signature verified, and its body.
#[derive(Default)]
struct Received {
    attempts: Vec<(String, bool, Value)>,
}

/// A receiver on 127.0.0.1:0 that verifies signatures and, with probability `fail` per
/// attempt (seeded), answers 500, answers too late, or drops the connection.
async fn receiver(
    secret: Arc<Mutex<String>>,
    fail: f64,
    seed: u64,
    pause: Duration,
) -> (SocketAddr, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Received::default()));
    let rng = Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)));
    let seen = Arc::clone(&received);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (seen, rng, secret) = (Arc::clone(&seen), Arc::clone(&rng), Arc::clone(&secret));
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (seen, rng, secret) =
                        (Arc::clone(&seen), Arc::clone(&rng), Arc::clone(&secret));
                    async move {
                        let header =
                            |name: &str| request.headers()[name].to_str().unwrap().to_string();
                        let (id, timestamp, signature) = (
                            header("webhook-id"),
                            header("webhook-timestamp"),
                            header("webhook-signature"),
                        );
                        let body = request
                            .into_body()
                            .collect()
                            .await
                            .map_err(std::io::Error::other)?
                            .to_bytes();
                        let expected =
                            standard_signature(&secret.lock().unwrap(), &id, &timestamp, &body);
                        let verified = signature.split(' ').any(|s| s == expected);
                        let roll: f64 = rng.lock().unwrap().random();
                        let mode = (roll * 3.0 / fail.max(f64::MIN_POSITIVE)) as u32;
                        tokio::time::sleep(pause).await;
                        let json: Value = serde_json::from_slice(&body).unwrap();
                        seen.lock().unwrap().attempts.push((id, verified, json));
                        let status = if roll < fail {
                            match mode {
                                0 => 500,
                                1 => {
                                    // Longer than the server's attempt timeout.
                                    tokio::time::sleep(Duration::from_secs(2)).await;
                                    200
                                }
                                _ => {
                                    // Drop the connection without an answer.
                                    return Err(std::io::Error::other("dropped"));
                                }
                            }
                        } else {
                            204
                        };
                        let mut response = hyper::Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::io::Error>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

/// The ids of the deliveries the receiver took (2xx answered) and the order of first
/// attempts, once the unique ids reach `expected` (or 60 s pass).
async fn wait_for(received: &Mutex<Received>, expected: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let unique: BTreeSet<String> = received
            .lock()
            .unwrap()
            .attempts
            .iter()
            .map(|(id, _, _)| id.clone())
            .collect();
        if unique.len() >= expected {
            let mut first = Vec::new();
            for (id, _, _) in &received.lock().unwrap().attempts {
                if !first.contains(id) {
                    first.push(id.clone());
                }
            }
            return first;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} events arrived",
            unique.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The receiver's seed: `WEBHOOK_TEST_SEED` if set (to replay a failure), else fresh. Printed
/// either way.
fn seed() -> u64 {
    let seed = match std::env::var("WEBHOOK_TEST_SEED") {
        Ok(text) => text.parse().expect("WEBHOOK_TEST_SEED must be a u64"),
        Err(_) => rand::random(),
    };
    eprintln!("receiver seed {seed} (replay with WEBHOOK_TEST_SEED={seed})");
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_deliver_every_event_in_order_signed_through_failures() {
    let secret = Arc::new(Mutex::new(String::new()));
    let (hook_addr, received) = receiver(Arc::clone(&secret), 0.4, seed(), Duration::ZERO).await;
    let server = TestServer::start(|c| {
        c.webhook_allow_networks = "127.0.0.0/8".parse().unwrap();
        c.webhook_timeout = Duration::from_millis(300);
        c.webhook_retry_first = Duration::from_millis(20);
    })
    .await;
    let put = server
        .send(
            Method::PUT,
            "/v1/webhooks/responders",
            &[
                ("authorization", ADMIN),
                ("content-type", "application/json"),
            ],
            &serde_json::json!({ "url": format!("http://{hook_addr}/hook") }).to_string(),
        )
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    *secret.lock().unwrap() = put.json()["secret"].as_str().unwrap().to_string();
    let thresholds: Vec<u64> = (1..=20).collect();
    server
        .register(
            "p",
            &serde_json::json!({ "thresholds": thresholds }).to_string(),
        )
        .await;
    for i in 0..20 {
        sign_batch(&server, "p", i, 1).await;
    }
    respond(&server, "p", "Answered.").await;
    let feed = get_json(&server, "/v1/events?after=0").await;
    let ids: Vec<String> = feed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("evt_{}", e["seq"]))
        .collect();
    assert_eq!(ids.len(), 22, "20 crossings, due, responded");
    let first = wait_for(&received, ids.len()).await;
    assert_eq!(first, ids, "in feed order, each once at least");
    let attempts = received.lock().unwrap().attempts.clone();
    assert!(
        attempts.iter().all(|(_, verified, _)| *verified),
        "every signature verifies"
    );
    assert!(
        attempts.len() > ids.len(),
        "the receiver failed some attempts"
    );
    for (id, _, body) in &attempts {
        let seq: u64 = id.trim_start_matches("evt_").parse().unwrap();
        let event = &feed["events"][(seq - 1) as usize];
        assert_eq!(&body["data"], event, "{id}: the event as the feed shows it");
        assert_eq!(body["type"], event["type"]);
    }
    // The durable cursor reaches the last event.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = server.get_admin("/v1/webhooks/responders").await.json();
        if state["cursor"] == 22 && state["delivery"]["failures"] == 0 {
            assert_eq!(state["delivery"]["delivered"], 22);
            assert!(state.get("secret").is_none(), "shown only once");
            let text = server.send(Method::GET, "/metrics", &[], "").await.body;
            let text = String::from_utf8_lossy(&text).into_owned();
            for line in [
                "ingest_webhook_lag_events{webhook=\"responders\"} 0",
                "ingest_webhook_failures{webhook=\"responders\"} 0",
                "ingest_webhook_delivered_total{webhook=\"responders\"} 22",
            ] {
                assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "{state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

/// Starts the real binary on `dir` with webhooks allowed to loopback and quick retries.
fn start_server(dir: &std::path::Path) -> (Child, SocketAddr) {
    let (child, addr, _logs) = start_binary(
        dir,
        &[
            "--webhook-allow-networks",
            "127.0.0.0/8",
            "--webhook-retry-first",
            "20ms",
        ],
    );
    (child, addr)
}

async fn ready(addr: SocketAddr) -> Conn {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut conn = Conn::open(addr).await;
        if conn.send(Method::GET, "/readyz", &[], "").await.status == 200 {
            return conn;
        }
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_deliveries_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let secret = Arc::new(Mutex::new(String::new()));
    // A slow receiver: deliveries are in flight when the server dies.
    let (hook_addr, received) =
        receiver(Arc::clone(&secret), 0.0, seed(), Duration::from_millis(30)).await;
    let (mut child, addr) = start_server(dir.path());
    let _kill = KillOnPanic(child.id());
    let mut admin = ready(addr).await;
    let json = ("content-type", "application/json");
    let put = admin
        .send(
            Method::PUT,
            "/v1/webhooks/h",
            &[("authorization", ADMIN), json],
            serde_json::json!({ "url": format!("http://{hook_addr}/") }).to_string(),
        )
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    *secret.lock().unwrap() = put.json()["secret"].as_str().unwrap().to_string();
    let thresholds: Vec<u64> = (1..=30).collect();
    let reg = admin
        .send(
            Method::PUT,
            "/v1/petitions/p",
            &[("authorization", ADMIN), json],
            serde_json::json!({ "thresholds": thresholds }).to_string(),
        )
        .await;
    assert_eq!(reg.status, 201);
    let lines: String = (0..30)
        .map(|i| format!("{{\"petition\":\"p\",\"email\":\"s{i}@example.org\"}}\n"))
        .collect();
    let signed = admin
        .send(
            Method::POST,
            "/v1/signatures:batch",
            &[
                ("authorization", INGEST),
                ("content-type", "application/x-ndjson"),
            ],
            lines,
        )
        .await;
    assert_eq!(signed.status, 200);
    // 30 crossings and the response falling due: 31 events. Kill once some arrived.
    wait_for(&received, 5).await;
    child.kill().expect("kill -9");
    child.wait().unwrap();
    let before = received.lock().unwrap().attempts.len();
    assert!(before < 31, "killed in the middle: {before} delivered");

    let (mut child, _addr) = start_server(dir.path());
    let _kill = KillOnPanic(child.id());
    let first = wait_for(&received, 31).await;
    let expected: Vec<String> = (1..=31).map(|s| format!("evt_{s}")).collect();
    assert_eq!(first, expected, "every event, in order");
    let attempts = received.lock().unwrap().attempts.len();
    assert!(
        attempts <= 31 + 2,
        "at most what was in flight is sent again: {attempts} attempts"
    );
    assert!(received
        .lock()
        .unwrap()
        .attempts
        .iter()
        .all(|(_, verified, _)| *verified));
    child.kill().expect("kill");
    child.wait().unwrap();
}
