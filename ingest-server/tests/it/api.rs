//! The routes of API v1: answers, status codes, auth, batches, caching, feeds, metrics.

use std::collections::HashSet;

use hyper::Method;

use crate::support::{raw, raw_status, TestServer, ADMIN, INGEST};

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_answers_by_status() {
    let server = TestServer::start(|_| {}).await;
    server.register("p1", "{}").await;

    let first = server.sign("p1", "Alice@Example.org").await;
    assert_eq!(first.status, 201);
    assert_eq!(
        first.json(),
        serde_json::json!({"status": "accepted", "count": 1})
    );
    let again = server.sign("p1", " alice@example.org ").await;
    assert_eq!(again.status, 200, "same canonical signer");
    assert_eq!(
        again.json(),
        serde_json::json!({"status": "duplicate", "count": 1})
    );
    // JSON escapes are decoded before the signer is derived (the body is read without copying
    // only where there is nothing to decode).
    let escaped = server.sign("p1", r"\u0061lice@example.org").await;
    assert_eq!(escaped.status, 200, "\\u0061 is 'a': {escaped:?}");
    let escaped = server.sign("p1", r"b\u00f6b@example.org").await;
    assert_eq!(escaped.status, 201, "{escaped:?}");

    let cases: &[(&str, &str, u16, &str)] = &[
        ("p1", r#"{"email":"#, 400, "malformed_json"),
        ("p1", "not json", 400, "malformed_json"),
        ("p1", r#"{"email":"no-at-sign"}"#, 422, "invalid_signature"),
        ("p1", r#"{"email":5}"#, 422, "invalid_signature"),
        ("p1", r#"{"name":"no email"}"#, 422, "invalid_signature"),
        (
            "p1",
            r#"{"email":"a@b.org","extra":1}"#,
            422,
            "invalid_signature",
        ),
        (
            "p1",
            r#"{"email":"a@b.org","country":"Narnia"}"#,
            422,
            "invalid_signature",
        ),
        ("nope", r#"{"email":"a@b.org"}"#, 404, "unknown_petition"),
        (
            "bad%20id",
            r#"{"email":"a@b.org"}"#,
            422,
            "invalid_signature",
        ),
    ];
    for (petition, body, status, code) in cases {
        let reply = server
            .send(
                Method::POST,
                &format!("/v1/petitions/{petition}/signatures"),
                &[("authorization", INGEST), JSON],
                body,
            )
            .await;
        assert_eq!(reply.status, *status, "{petition} {body}: {reply:?}");
        assert_eq!(reply.code(), *code, "{petition} {body}");
    }

    let closed = server.close("p1").await;
    assert_eq!(closed.status, 200);
    assert_eq!(closed.json()["state"], "closed");
    let late = server.sign("p1", "bob@example.org").await;
    assert_eq!(
        (late.status, late.code().as_str()),
        (409, "petition_closed")
    );

    let wrong_type = server
        .send(
            Method::POST,
            "/v1/petitions/p1/signatures",
            &[("authorization", INGEST), ("content-type", "text/plain")],
            r#"{"email":"a@b.org"}"#,
        )
        .await;
    assert_eq!(
        (wrong_type.status, wrong_type.code().as_str()),
        (415, "unsupported_media_type")
    );

    let method = server
        .send(Method::DELETE, "/v1/petitions/p1", &[], "")
        .await;
    assert_eq!(
        (method.status, method.code().as_str()),
        (405, "method_not_allowed")
    );
    assert_eq!(method.header("allow"), Some("GET, HEAD, PUT"));
    let route = server.send(Method::GET, "/v2/nothing", &[], "").await;
    assert_eq!((route.status, route.code().as_str()), (404, "not_found"));

    assert_eq!(
        server.engine.count("p1"),
        Some(2),
        "alice and böb; nothing refused was counted"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_roles() {
    let server = TestServer::start(|_| {}).await;
    let sign = |auth: &'static str| {
        let server = &server;
        async move {
            let mut headers = vec![JSON];
            if !auth.is_empty() {
                headers.push(("authorization", auth));
            }
            server
                .send(
                    Method::POST,
                    "/v1/petitions/p/signatures",
                    &headers,
                    r#"{"email":"a@b.org"}"#,
                )
                .await
        }
    };
    let missing = sign("").await;
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (401, "unauthorized")
    );
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    for wrong in [
        "Bearer admin-key-0002",
        "Bearer ",
        "admin-key-0001",
        "Basic YTpi",
    ] {
        assert_eq!(sign(wrong).await.status, 401, "{wrong}");
    }
    let put = |auth: &'static str| {
        let server = &server;
        async move {
            server
                .send(
                    Method::PUT,
                    "/v1/petitions/p",
                    &[("authorization", auth), JSON],
                    "{}",
                )
                .await
        }
    };
    let forbidden = put(INGEST).await;
    assert_eq!(
        (forbidden.status, forbidden.code().as_str()),
        (403, "forbidden")
    );
    assert_eq!(
        server.engine.petition("p"),
        None,
        "a refused PUT changes nothing"
    );
    assert_eq!(put(ADMIN).await.status, 201);
    assert_eq!(put(ADMIN).await.status, 200, "second PUT updates");
    assert_eq!(sign(INGEST).await.status, 201);
    assert_eq!(
        sign(ADMIN).await.status,
        200,
        "admin may sign too; same signer is a duplicate"
    );
    let close = server
        .send(
            Method::POST,
            "/v1/petitions/p/close",
            &[("authorization", INGEST)],
            "",
        )
        .await;
    assert_eq!(close.status, 403);
    let read = server.send(Method::GET, "/v1/petitions/p", &[], "").await;
    assert_eq!(read.status, 200, "reads are public");
    assert_eq!(read.json()["state"], "open");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn petition_registration_fields() {
    let server = TestServer::start(|_| {}).await;
    let created = server
        .register(
            "p.1",
            r#"{"deadline":"2099-01-31T23:59:59Z","thresholds":[5,3]}"#,
        )
        .await;
    assert_eq!(created.status, 201);
    let body = created.json();
    assert_eq!(body["deadline"], "2099-01-31T23:59:59.000Z");
    assert_eq!(body["thresholds"], serde_json::json!([3, 5]));
    assert_eq!(body["count"], 0);
    let past = server
        .register("p.1", r#"{"deadline":"2001-01-01T00:00:00Z"}"#)
        .await;
    assert_eq!(past.json()["state"], "expired");
    assert_eq!(past.json()["thresholds"], serde_json::json!([3, 5]), "kept");
    let late = server.sign("p.1", "a@b.org").await;
    assert_eq!(late.status, 409);

    let bad: &[(&str, &str, u16)] = &[
        ("p2", r#"{"deadline":"tomorrow"}"#, 422),
        ("p2", r#"{"thresholds":[0]}"#, 422),
        ("p2", r#"{"thresholds":"many"}"#, 422),
        ("p2", r#"{"colour":"red"}"#, 422),
        ("p2", "{", 400),
        (&"x".repeat(65), "{}", 422),
        ("p%2F2", "{}", 422),
    ];
    for (id, body, status) in bad {
        let reply = server
            .send(
                Method::PUT,
                &format!("/v1/petitions/{id}"),
                &[("authorization", ADMIN), JSON],
                body,
            )
            .await;
        assert_eq!(reply.status, *status, "{id} {body}: {reply:?}");
        assert!(reply.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(
        server.engine.stats().petitions,
        1,
        "refused PUTs register nothing"
    );
    let unknown = server.close("ghost").await;
    assert_eq!(
        (unknown.status, unknown.code().as_str()),
        (404, "unknown_petition")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_answers_each_line_in_order() {
    let server = TestServer::start(|_| {}).await;
    server.register("a", "{}").await;
    server.register("b", "{}").await;
    server.close("b").await;
    let body = [
        r#"{"petition":"a","email":"one@x.org"}"#,
        r#"{"petition":"a","email":"ONE@x.org"}"#,
        "garbage",
        r#"{"petition":"zz","email":"one@x.org"}"#,
        r#"{"petition":"b","email":"one@x.org"}"#,
        r#"{"petition":"a","email":"bad"}"#,
        "",
        r#"{"petition":"a","email":"two@x.org"}"#,
    ]
    .join("\n")
        + "\n";
    let reply = server
        .send(
            Method::POST,
            "/v1/signatures:batch",
            &[
                ("authorization", INGEST),
                ("content-type", "application/x-ndjson"),
            ],
            &body,
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<serde_json::Value> = String::from_utf8(reply.body.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            let status = l["status"].as_str().unwrap().to_string();
            let detail = match status.as_str() {
                "error" => l["code"].as_str().unwrap().to_string(),
                // A duplicate carries the count when answered: the batch's own first line of
                // this signer may or may not be counted by then.
                "duplicate" => {
                    let count = l["count"].as_u64().unwrap();
                    assert!((1..=2).contains(&count), "{l}");
                    "1 or 2".to_string()
                }
                _ => l["count"].to_string(),
            };
            (status, detail)
        })
        .collect();
    let expected = [
        ("accepted", "1"),
        ("duplicate", "1 or 2"),
        ("error", "malformed_json"),
        ("error", "unknown_petition"),
        ("error", "petition_closed"),
        ("error", "invalid_signature"),
        ("error", "malformed_json"),
        ("accepted", "2"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(server.engine.count("a"), Some(2));

    let empty = server
        .send(
            Method::POST,
            "/v1/signatures:batch",
            &[("authorization", INGEST)],
            "",
        )
        .await;
    assert_eq!((empty.status, empty.code().as_str()), (400, "empty_batch"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_signer_from_many_connections_is_accepted_once() {
    let server = TestServer::start(|_| {}).await;
    server.register("hot", "{}").await;
    let mut conns = Vec::new();
    for _ in 0..32 {
        conns.push(server.conn().await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(conns.len()));
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                conn.send(
                    Method::POST,
                    "/v1/petitions/hot/signatures",
                    &[("authorization", INGEST), JSON],
                    r#"{"email":"same@example.org"}"#,
                )
                .await
                .status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        31,
        "{statuses:?}"
    );
    assert_eq!(server.engine.count("hot"), Some(1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn petition_reads_carry_etag_and_cache_control() {
    let server = TestServer::start(|_| {}).await;
    server.register("p", "{}").await;
    let first = server.send(Method::GET, "/v1/petitions/p", &[], "").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("cache-control"), Some("public, max-age=1"));
    let etag = first.header("etag").unwrap().to_string();
    let same = server
        .send(
            Method::GET,
            "/v1/petitions/p",
            &[("if-none-match", &etag)],
            "",
        )
        .await;
    assert_eq!(same.status, 304);
    assert!(same.body.is_empty());
    assert_eq!(same.header("etag"), Some(etag.as_str()));
    server.sign("p", "a@b.org").await;
    let changed = server
        .send(
            Method::GET,
            "/v1/petitions/p",
            &[("if-none-match", &etag)],
            "",
        )
        .await;
    assert_eq!(changed.status, 200, "a new count is a new ETag");
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
    assert_eq!(changed.json()["count"], 1);
    let unknown = server
        .send(Method::GET, "/v1/petitions/nope", &[], "")
        .await;
    assert_eq!(
        (unknown.status, unknown.code().as_str()),
        (404, "unknown_petition")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderboard_and_milestone_feed() {
    let server = TestServer::start(|_| {}).await;
    server.register("small", r#"{"thresholds":[1]}"#).await;
    server.register("big", r#"{"thresholds":[2,3]}"#).await;
    for n in 0..3 {
        server.sign("big", &format!("s{n}@x.org")).await;
    }
    server.sign("small", "s0@x.org").await;
    let top = server
        .send(Method::GET, "/v1/petitions?sort=count&limit=1", &[], "")
        .await;
    assert_eq!(top.status, 200);
    let petitions = top.json()["petitions"].as_array().unwrap().clone();
    assert_eq!(petitions.len(), 1);
    assert_eq!(petitions[0]["id"], "big");
    for bad in [
        "/v1/petitions?sort=name",
        "/v1/petitions?limit=0",
        "/v1/petitions?limit=x",
        "/v1/petitions?color=1",
    ] {
        let reply = server.send(Method::GET, bad, &[], "").await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (400, "invalid_parameter"),
            "{bad}"
        );
    }

    let feed = server
        .send(Method::GET, "/v1/milestones", &[], "")
        .await
        .json();
    let seen: Vec<(u64, String, u64)> = feed["milestones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().unwrap(),
                m["petition"].as_str().unwrap().to_string(),
                m["threshold"].as_u64().unwrap(),
            )
        })
        .collect();
    // Sequences are the events feed's: 3 is big's response falling due at its largest
    // threshold.
    assert_eq!(
        seen,
        vec![
            (1, "big".into(), 2),
            (2, "big".into(), 3),
            (4, "small".into(), 1)
        ]
    );
    assert_eq!(feed["next_after"], 4);
    let resumed = server
        .send(Method::GET, "/v1/milestones?after=1&limit=1", &[], "")
        .await
        .json();
    assert_eq!(resumed["milestones"][0]["seq"], 2);
    assert_eq!(resumed["next_after"], 2);
    let end = server
        .send(Method::GET, "/v1/milestones?after=4", &[], "")
        .await
        .json();
    assert_eq!(end["milestones"], serde_json::json!([]));
    assert_eq!(
        end["next_after"], 4,
        "an empty page resumes from the same place"
    );
    let bad = server
        .send(Method::GET, "/v1/milestones?after=-1", &[], "")
        .await;
    assert_eq!(bad.status, 400);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count() {
    let server = TestServer::start(|_| {}).await;
    server.register("p", "{}").await;
    server.sign("p", "a@b.org").await;
    server.sign("p", "a@b.org").await;
    server.sign("nope", "a@b.org").await;
    let live = server.send(Method::GET, "/livez", &[], "").await;
    assert_eq!(
        (live.status, live.json()["status"].as_str()),
        (200, Some("live"))
    );
    let ready = server.send(Method::GET, "/readyz", &[], "").await;
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (200, Some("ready"))
    );

    // As Prometheus asks: OpenMetrics (the text format is checked by `promtool` in
    // `operators`).
    let reply = server
        .send(
            Method::GET,
            "/metrics",
            &[("accept", "application/openmetrics-text; version=1.0.0")],
            "",
        )
        .await;
    assert_eq!(reply.status, 200);
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    let mut samples = std::collections::HashMap::new();
    let mut families = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(
                name.starts_with("ingest_") || name.starts_with("process_"),
                "{line}"
            );
            assert!(
                ["counter", "gauge", "histogram", "info"].contains(&kind),
                "{line}"
            );
            families.insert(name.to_string());
            continue;
        }
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP ") || line.starts_with("# UNIT ") || line == "# EOF",
                "{line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample line: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        if let Some(labels) = series.split_once('{').map(|(_, l)| l) {
            let labels = labels
                .strip_suffix('}')
                .unwrap_or_else(|| panic!("labels in {line}"));
            for pair in labels.split(',') {
                let (key, value) = pair.split_once('=').unwrap();
                assert!(
                    ["route", "class", "outcome", "le", "version", "revision"].contains(&key),
                    "{line}"
                );
                assert!(value.starts_with('"') && value.ends_with('"'), "{line}");
                assert!(!value.contains('@'), "no email in labels: {line}");
            }
        }
        samples.insert(series.to_string(), value);
    }
    assert_eq!(text.lines().last(), Some("# EOF"));
    for family in [
        "ingest_http_requests",
        "ingest_signatures",
        "ingest_batch_lines",
        "ingest_ack_latency_seconds",
        "ingest_store_write_latency_seconds",
        "ingest_queue_signatures",
        "ingest_index_entries",
        "ingest_recovery_seconds",
        "ingest_build",
        "ingest_http_request_duration_seconds",
        "process_cpu_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(families.contains(family), "{family} missing from:\n{text}");
    }
    assert_eq!(
        samples[r#"ingest_signatures_total{outcome="accepted"}"#],
        1.0
    );
    assert_eq!(
        samples[r#"ingest_signatures_total{outcome="duplicate"}"#],
        1.0
    );
    assert_eq!(
        samples[r#"ingest_signatures_total{outcome="unknown_petition"}"#],
        1.0
    );
    assert_eq!(
        samples[r#"ingest_http_requests_total{route="sign",class="2xx"}"#],
        2.0
    );
    assert_eq!(
        samples[r#"ingest_http_requests_total{route="sign",class="4xx"}"#],
        1.0
    );
    assert_eq!(samples["ingest_ack_latency_seconds_count"], 3.0);
    assert_eq!(samples["ingest_index_entries"], 1.0);
    assert_eq!(samples["ingest_ready"], 1.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn petition_reads_follow_admin_changes_and_deadlines() {
    let server = TestServer::start(|_| {}).await;
    server.register("p", "{}").await;
    let read = || async {
        server
            .send(Method::GET, "/v1/petitions/p", &[], "")
            .await
            .json()
    };
    assert_eq!(
        read().await["thresholds"],
        serde_json::json!([10000, 100000])
    );
    server.register("p", r#"{"thresholds":[7]}"#).await;
    assert_eq!(
        read().await["thresholds"],
        serde_json::json!([7]),
        "an update shows at once"
    );
    // A deadline passing changes the state without any signature or admin call.
    let deadline = std::time::SystemTime::now() + std::time::Duration::from_millis(300);
    let deadline = humantime::format_rfc3339_millis(deadline).to_string();
    server
        .register("p", &format!(r#"{{"deadline":"{deadline}"}}"#))
        .await;
    assert_eq!(read().await["state"], "open");
    let started = std::time::Instant::now();
    while read().await["state"] == "open" {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    assert_eq!(read().await["state"], "expired");
    server.register("p", "{}").await;
    assert_eq!(read().await["state"], "open", "the deadline was removed");
    server.close("p").await;
    assert_eq!(read().await["state"], "closed", "a close shows at once");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_are_not_petition_ids() {
    let server = TestServer::start(|_| {}).await;
    for id in [".", ".."] {
        let request = format!(
            "PUT /v1/petitions/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: {ADMIN}\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let answer = raw(server.addr, request.as_bytes()).await;
        assert_eq!(raw_status(&answer), 422, "{id}: {answer}");
        assert!(answer.contains("invalid_petition"), "{answer}");
        assert!(server.engine.petition(id).is_none());
    }
    // Dots inside an id are still fine.
    server.register("...", "{}").await;
    server.register("a..b", "{}").await;
    server.stop().await;
}
