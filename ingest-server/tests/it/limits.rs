//! Protection: slow clients, oversized and chunked bodies, hostile input, connection and
//! in-flight limits, the per-key rate limit. Every refusal is a clean 4xx/503, never a 5xx
//! crash, and the server keeps serving.

use std::time::{Duration, Instant};

use hyper::Method;

use crate::support::{raw, raw_status, Conn, TestServer, INGEST};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_off() {
    let server = TestServer::start(|c| c.header_read_timeout = Duration::from_millis(300)).await;
    let started = Instant::now();
    // Headers that never finish.
    let answer = raw(
        server.addr,
        b"POST /v1/petitions/p/signatures HTTP/1.1\r\nHost: x\r\nX-Slow: 1",
    )
    .await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "cut after {waited:?}");
    assert!(
        waited < Duration::from_secs(5),
        "still open after {waited:?}: {answer:?}"
    );
    assert!(
        answer.is_empty() || raw_status(&answer) == 408,
        "{answer:?}"
    );
    let alive = server.send(Method::GET, "/livez", &[], "").await;
    assert_eq!(alive.status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_get_408() {
    let server = TestServer::start(|c| c.body_read_timeout = Duration::from_millis(300)).await;
    server.register("p", "{}").await;
    let request = format!(
        "POST /v1/petitions/p/signatures HTTP/1.1\r\nHost: x\r\nAuthorization: {INGEST}\r\nContent-Length: 100\r\n\r\n{{\"email\""
    );
    let answer = raw(server.addr, request.as_bytes()).await;
    assert_eq!(raw_status(&answer), 408, "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert_eq!(server.engine.count("p"), Some(0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_announced_or_chunked() {
    let server = TestServer::start(|c| {
        c.body_bytes_max = 1024;
        c.batch_bytes_max = 4096;
        c.batch_lines_max = 3;
    })
    .await;
    server.register("p", "{}").await;
    let big_email = format!(r#"{{"email":"{}@x.org"}}"#, "a".repeat(2000));
    let announced = server
        .send(
            Method::POST,
            "/v1/petitions/p/signatures",
            &[
                ("authorization", INGEST),
                ("content-type", "application/json"),
            ],
            &big_email,
        )
        .await;
    assert_eq!(
        (announced.status, announced.code().as_str()),
        (413, "body_too_large")
    );

    // Chunked: no Content-Length, the limit trips while reading.
    let chunk = "a".repeat(600);
    let request = format!(
        "POST /v1/petitions/p/signatures HTTP/1.1\r\nHost: x\r\nAuthorization: {INGEST}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    let answer = raw(server.addr, request.as_bytes()).await;
    assert_eq!(raw_status(&answer), 413, "{answer}");
    assert!(answer.contains("body_too_large"));

    let batch: String = (0..4)
        .map(|n| format!("{{\"petition\":\"p\",\"email\":\"b{n}@x.org\"}}\n"))
        .collect();
    let lines = server
        .send(
            Method::POST,
            "/v1/signatures:batch",
            &[
                ("authorization", INGEST),
                ("content-type", "application/x-ndjson"),
            ],
            &batch,
        )
        .await;
    assert_eq!(
        (lines.status, lines.code().as_str()),
        (413, "too_many_lines")
    );
    assert_eq!(
        server.engine.count("p"),
        Some(0),
        "nothing of a refused request is counted"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_a_clean_4xx() {
    let server = TestServer::start(|_| {}).await;
    server.register("p", "{}").await;
    let deep = "[".repeat(100_000);
    let nested_email = format!(r#"{{"email":{}"#, "{\"a\":".repeat(5000));
    let long_id = "p".repeat(5000);
    let bodies: Vec<(String, Vec<u8>)> = vec![
        (
            "/v1/petitions/p/signatures".into(),
            b"{\"email\":\"\xff\xfe@x.org\"}".to_vec(),
        ),
        (
            "/v1/petitions/p/signatures".into(),
            deep.clone().into_bytes(),
        ),
        (
            "/v1/petitions/p/signatures".into(),
            nested_email.into_bytes(),
        ),
        (
            "/v1/petitions/p/signatures".into(),
            b"\x00\x01\x02".to_vec(),
        ),
        (
            "/v1/petitions/p/signatures".into(),
            br#"{"email":"a@b.org","email":"c@d.org"}"#.to_vec(),
        ),
        (
            "/v1/petitions/p/signatures".into(),
            br#"{"email":"a@b.org","name":"\u0000"}"#.to_vec(),
        ),
        ("/v1/petitions/p/signatures".into(), Vec::new()),
        (
            format!("/v1/petitions/{long_id}/signatures"),
            br#"{"email":"a@b.org"}"#.to_vec(),
        ),
        (
            "/v1/petitions/%C3%A9/signatures".into(),
            br#"{"email":"a@b.org"}"#.to_vec(),
        ),
        ("/v1/signatures:batch".into(), deep.into_bytes()),
        ("/v1/signatures:batch".into(), b"\xff\n\xfe\n".to_vec()),
    ];
    for (path, body) in bodies {
        let mut conn = server.conn().await;
        let reply = conn
            .send(
                Method::POST,
                &path,
                &[("authorization", INGEST)],
                body.clone(),
            )
            .await;
        assert!(
            (400..500).contains(&reply.status) || (path.contains("batch") && reply.status == 200),
            "{path} {:?} → {reply:?}",
            String::from_utf8_lossy(&body[..body.len().min(40)])
        );
        if reply.status != 200 {
            assert!(!reply.code().is_empty());
        } else {
            for line in String::from_utf8_lossy(&reply.body).lines() {
                let line: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(line["status"], "error", "{line}");
            }
        }
    }
    for path in [
        "/v1/petitions/%00",
        "/v1/petitions/..",
        "/v1/petitions/a%2Fb",
    ] {
        let reply = server.send(Method::GET, path, &[], "").await;
        assert_eq!(reply.status, 404, "{path}");
    }
    // Request line and headers the HTTP parser refuses.
    let garbage = raw(server.addr, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(
        garbage.is_empty() || raw_status(&garbage) == 400,
        "{garbage:?}"
    );
    let huge_header = format!(
        "GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let answer = raw(server.addr, huge_header.as_bytes()).await;
    assert!(
        answer.is_empty() || (400..500).contains(&raw_status(&answer)),
        "{answer:?}"
    );
    assert_eq!(server.engine.count("p"), Some(0));
    assert_eq!(
        server.send(Method::GET, "/livez", &[], "").await.status,
        200
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_refuses_with_503() {
    let server = TestServer::start(|c| c.connections_max = 2).await;
    let mut first = server.conn().await;
    let mut second = server.conn().await;
    assert_eq!(first.send(Method::GET, "/livez", &[], "").await.status, 200);
    assert_eq!(
        second.send(Method::GET, "/livez", &[], "").await.status,
        200
    );
    let refused = raw(server.addr, b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(raw_status(&refused), 503, "{refused}");
    assert!(refused.to_ascii_lowercase().contains("retry-after: 1"));
    assert!(refused.contains("too_many_connections"));
    drop(first);
    // Once a connection closes, a new one is served. The close is asynchronous on the server
    // side, so poll until the slot is free (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = raw(
            server.addr,
            b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        if raw_status(&answer) == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed: {answer}");
        tokio::task::yield_now().await;
    }
    drop(second);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_limit_sheds_with_503_and_retry_after() {
    let server = TestServer::start(|c| {
        c.inflight_max = 0;
        c.batch_inflight_max = 0;
    })
    .await;
    let reply = server.sign("p", "a@b.org").await;
    assert_eq!((reply.status, reply.code().as_str()), (503, "overloaded"));
    assert_eq!(reply.header("retry-after"), Some("1"));
    let batch = server
        .send(
            Method::POST,
            "/v1/signatures:batch",
            &[("authorization", INGEST)],
            "{\"petition\":\"p\",\"email\":\"a@b.org\"}\n",
        )
        .await;
    assert_eq!((batch.status, batch.code().as_str()), (503, "overloaded"));
    assert_eq!(
        server.send(Method::GET, "/livez", &[], "").await.status,
        200,
        "reads are not shed"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_per_key_answers_429() {
    let server = TestServer::start(|c| c.rate_limit_per_key = 5).await;
    server.register("p", "{}").await;
    let started = Instant::now();
    let mut conn: Conn = server.conn().await;
    let mut accepted = 0;
    let mut limited = 0;
    for n in 0..20 {
        let reply = conn
            .send(
                Method::POST,
                "/v1/petitions/p/signatures",
                &[
                    ("authorization", INGEST),
                    ("content-type", "application/json"),
                ],
                format!(r#"{{"email":"s{n}@x.org"}}"#),
            )
            .await;
        match reply.status {
            201 => accepted += 1,
            429 => {
                assert_eq!(reply.code(), "rate_limited");
                assert_eq!(reply.header("retry-after"), Some("1"));
                limited += 1;
            }
            other => panic!("unexpected {other}: {reply:?}"),
        }
    }
    // The bucket holds 5 and refills at 5/s.
    let allowed = 5 + (started.elapsed().as_secs_f64() * 5.0).ceil() as u64;
    assert!(
        accepted <= allowed,
        "{accepted} accepted, at most {allowed} allowed"
    );
    assert!(limited > 0);
    assert_eq!(server.engine.count("p"), Some(accepted));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(|c| c.idle_timeout = Duration::from_millis(300)).await;
    // A connection that was answered once and then sends nothing more.
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connects");
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("writes");
    let mut answer = [0u8; 1024];
    let n = stream.read(&mut answer).await.expect("answer");
    assert_eq!(raw_status(&String::from_utf8_lossy(&answer[..n])), 200);
    let answered = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest));
    let _ = read.await.expect("closed within 10 s");
    let waited = answered.elapsed();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "still open after {waited:?}"
    );
    // A keep-alive connection stays usable while it is busy, then goes once idle.
    let mut conn = server.conn().await;
    for _ in 0..5 {
        assert_eq!(conn.send(Method::GET, "/livez", &[], "").await.status, 200);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_a_full_bucket_gets_422_not_429() {
    let server = TestServer::start(|c| c.rate_limit_per_key = 5).await;
    server.register("p", "{}").await;
    let batch = |lines: std::ops::Range<usize>| -> String {
        lines
            .map(|n| format!("{{\"petition\":\"p\",\"email\":\"r{n}@x.org\"}}\n"))
            .collect()
    };
    let mut conn = server.conn().await;
    for _ in 0..3 {
        // Never retryable, however long the client waits: 422, no Retry-After.
        let reply = conn
            .send(
                Method::POST,
                "/v1/signatures:batch",
                &[("authorization", INGEST)],
                batch(0..10),
            )
            .await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (422, "batch_exceeds_rate"),
            "{reply:?}"
        );
        assert_eq!(reply.header("retry-after"), None);
        assert!(reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 5"));
    }
    // A full bucket's worth goes through; the next is merely early: 429 with Retry-After.
    let full = conn
        .send(
            Method::POST,
            "/v1/signatures:batch",
            &[("authorization", INGEST)],
            batch(0..5),
        )
        .await;
    assert_eq!(full.status, 200, "{full:?}");
    let early = conn
        .send(
            Method::POST,
            "/v1/signatures:batch",
            &[("authorization", INGEST)],
            batch(5..10),
        )
        .await;
    assert_eq!((early.status, early.code().as_str()), (429, "rate_limited"));
    assert_eq!(early.header("retry-after"), Some("1"));
    assert_eq!(server.engine.count("p"), Some(5));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let server = TestServer::start(|_| {}).await;
    server.register("p", "{}").await;
    for (n, authorization) in [
        "bearer ingest-key-0001",
        "BEARER ingest-key-0001",
        "Bearer    ingest-key-0001",
    ]
    .into_iter()
    .enumerate()
    {
        let reply = server
            .send(
                Method::POST,
                "/v1/petitions/p/signatures",
                &[("authorization", authorization)],
                &format!(r#"{{"email":"b{n}@x.org"}}"#),
            )
            .await;
        assert_eq!(reply.status, 201, "{authorization}: {reply:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_required_in_http_1_1_and_head_answers_get_routes() {
    let server = TestServer::start(|_| {}).await;
    server.register("p", "{}").await;
    let answer = raw(
        server.addr,
        b"GET /livez HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    assert!(answer.contains("missing_host"), "{answer}");
    let answer = raw(server.addr, b"GET /livez HTTP/1.0\r\n\r\n").await;
    assert_eq!(
        raw_status(&answer),
        200,
        "HTTP/1.0 has no Host rule: {answer}"
    );
    // HEAD: the GET answer's status and headers, no body.
    let get = server.send(Method::GET, "/v1/petitions/p", &[], "").await;
    let head = server.send(Method::HEAD, "/v1/petitions/p", &[], "").await;
    assert_eq!(head.status, 200, "{head:?}");
    assert!(head.body.is_empty());
    assert_eq!(head.header("etag"), get.header("etag"));
    assert_eq!(head.header("content-type"), Some("application/json"));
    let answer = raw(
        server.addr,
        b"HEAD /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert!(
        answer.ends_with("\r\n\r\n"),
        "no body after the headers: {answer:?}"
    );
    let post = server
        .send(Method::HEAD, "/v1/signatures:batch", &[], "")
        .await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("POST"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_hyper_writes_itself_are_the_documented_exception() {
    // The OpenAPI document and the README say which answers lack the error shape: these.
    let server = TestServer::start(|_| {}).await;
    let bad_line = raw(server.addr, b"GET /livez HTTP/1.1 extra\r\nHost: x\r\n\r\n").await;
    let flood = format!(
        "GET /livez HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X-Flood: 0123456789abcdef0123456789abcdef\r\n".repeat(2000)
    );
    let flood = raw(server.addr, flood.as_bytes()).await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(70_000));
    let long_uri = raw(server.addr, long_uri.as_bytes()).await;
    for (answer, status) in [(bad_line, 400), (flood, 431), (long_uri, 431)] {
        assert_eq!(raw_status(&answer), status, "{answer}");
        let (_, body) = answer.split_once("\r\n\r\n").expect("a head");
        assert!(body.is_empty(), "{answer}");
    }
    let document = ingest_server::OPENAPI_JSON;
    for mentioned in [
        "400 for a request line",
        "431 for a request head",
        "empty body",
    ] {
        assert!(
            document.contains(mentioned),
            "the document says {mentioned:?}"
        );
    }
    let readme = include_str!("../../../README.md");
    assert!(
        readme.contains("431") && readme.contains("empty body"),
        "the README's limits section documents them"
    );
    server.stop().await;
}
