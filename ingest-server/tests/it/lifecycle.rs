//! Petitions that validate by email: pending answers and their tokens, re-submissions,
//! `POST /v1/validations`, validation lines in batches, expiry, the petition views' counts, the
//! metrics, and a server without a store.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use engine::{Durability, ManualClock, Storage};
use hyper::Method;
use serde_json::json;

use crate::support::{Reply, TestServer, ADMIN, INGEST};

const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

/// The token of a pending answer, checked to be 72 lower-case hex digits.
fn token(reply: &Reply) -> String {
    assert_eq!(reply.status, 202, "{reply:?}");
    let body = reply.json();
    assert_eq!(body["status"], "pending", "{body}");
    let token = body["token"].as_str().expect("a token").to_string();
    assert_eq!(token.len(), 72, "{token}");
    assert!(
        token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "lower-case hex: {token}"
    );
    token
}

/// The `expires_at` of a pending answer.
fn expires_at(reply: &Reply) -> SystemTime {
    let text = reply.json()["expires_at"]
        .as_str()
        .expect("expires_at")
        .to_string();
    humantime::parse_rfc3339(&text).unwrap_or_else(|e| panic!("{text} is not RFC 3339: {e}"))
}

/// The answer lines of a batch.
async fn batch(server: &TestServer, lines: &[String]) -> Vec<serde_json::Value> {
    let reply = server
        .send(
            Method::POST,
            "/v1/signatures:batch",
            &[("authorization", INGEST), NDJSON],
            &(lines.join("\n") + "\n"),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    String::from_utf8(reply.body.to_vec())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_petitions_answer_pending_and_count_once_validated() {
    let server = TestServer::start(|_| {}).await;
    let created = server
        .register("e", r#"{"validation":"email","thresholds":[1]}"#)
        .await
        .json();
    assert_eq!(created["validation"], "email");
    assert_eq!(
        (
            &created["count"],
            &created["pending_count"],
            &created["invalidated_count"]
        ),
        (&json!(0), &json!(0), &json!(0))
    );
    // Rendered and cached before the signature: the next read must not reuse it.
    assert_eq!(server.petition("e").await["pending_count"], 0);

    let signed_at = SystemTime::now();
    let first = server.sign("e", "Jo@Example.org").await;
    let t = token(&first);
    let expires = expires_at(&first);
    let grace = expires
        .duration_since(signed_at)
        .expect("expires after it was signed");
    let week = Duration::from_secs(7 * 24 * 3600);
    assert!(
        grace > week - Duration::from_secs(60) && grace <= week + Duration::from_secs(60),
        "the default grace is 7 days: {grace:?}"
    );
    let view = server.petition("e").await;
    assert_eq!(
        (&view["count"], &view["pending_count"]),
        (&json!(0), &json!(1))
    );
    assert_eq!(view["milestones_reached"], json!([]));

    let again = server.sign("e", " jo@example.org").await;
    assert_eq!(
        token(&again),
        t,
        "the same pending signer gets the same token"
    );
    assert_eq!(expires_at(&again), expires, "and the same expiry");
    assert_eq!(server.petition("e").await["pending_count"], 1);

    let validated = server.validate(&t).await;
    assert_eq!(validated.status, 200, "{validated:?}");
    assert_eq!(validated.json(), json!({"status": "validated", "count": 1}));
    let view = server.petition("e").await;
    assert_eq!(
        (&view["count"], &view["pending_count"]),
        (&json!(1), &json!(0))
    );
    assert_eq!(view["milestones_reached"], json!([1]));

    let twice = server.validate(&t).await;
    assert_eq!(twice.status, 200, "{twice:?}");
    assert_eq!(
        twice.json(),
        json!({"status": "already_validated", "count": 1})
    );
    let duplicate = server.sign("e", "jo@example.org").await;
    assert_eq!(duplicate.status, 200, "a validated signer is a duplicate");
    assert_eq!(duplicate.json(), json!({"status": "duplicate", "count": 1}));
    assert_eq!(server.engine.count("e"), Some(1), "counted exactly once");

    let feed = server
        .send(Method::GET, "/v1/milestones", &[], "")
        .await
        .json();
    assert_eq!(feed["milestones"][0]["threshold"], 1);
    assert_eq!(feed["milestones"][0]["type"], "threshold_crossed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_signer_gets_the_token_back_at_most_five_times() {
    let server = TestServer::start(|_| {}).await;
    server.register("e", r#"{"validation":"email"}"#).await;
    let t = token(&server.sign("e", "jo@example.org").await);
    for n in 1..=5 {
        let again = server.sign("e", "jo@example.org").await;
        assert_eq!(token(&again), t, "re-submission {n}");
    }
    let sixth = server.sign("e", "jo@example.org").await;
    assert_eq!(
        (sixth.status, sixth.code().as_str()),
        (429, "too_many_resubmissions"),
        "{sixth:?}"
    );
    assert_eq!(
        sixth.header("retry-after"),
        None,
        "not a rate that passes: no Retry-After"
    );
    let validated = server.validate(&t).await;
    assert_eq!(validated.json(), json!({"status": "validated", "count": 1}));
    assert_eq!(server.petition("e").await["pending_count"], 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_answers_by_status() {
    let server = TestServer::start(|_| {}).await;
    server.register("e", r#"{"validation":"email"}"#).await;
    let t = token(&server.sign("e", "jo@example.org").await);
    let mut altered_last = t.clone().into_bytes();
    altered_last[71] = if altered_last[71] == b'0' { b'1' } else { b'0' };
    let altered_last = String::from_utf8(altered_last).unwrap();
    let mut altered_first = t.clone().into_bytes();
    altered_first[0] = if altered_first[0] == b'0' { b'1' } else { b'0' };
    let altered_first = String::from_utf8(altered_first).unwrap();
    let body = |token: &str| json!({ "token": token }).to_string();
    let cases: Vec<(String, u16, &str)> = vec![
        ("{".into(), 400, "malformed_json"),
        ("not json".into(), 400, "malformed_json"),
        ("{}".into(), 422, "invalid_validation"),
        (r#"{"token":5}"#.into(), 422, "invalid_validation"),
        (
            json!({"token": t, "petition": "e"}).to_string(),
            422,
            "invalid_validation",
        ),
        (body("abc"), 422, "malformed_token"),
        (body(""), 422, "malformed_token"),
        (body(&"g".repeat(72)), 422, "malformed_token"),
        (body(&t.to_uppercase()), 422, "malformed_token"),
        (body(&format!("{t}0")), 422, "malformed_token"),
        (body(&"0".repeat(72)), 404, "unknown_token"),
        (body(&altered_last), 404, "unknown_token"),
        (body(&altered_first), 404, "unknown_token"),
    ];
    for (body, status, code) in &cases {
        let reply = server.post_json("/v1/validations", INGEST, body).await;
        assert_eq!(reply.status, *status, "{body}: {reply:?}");
        assert_eq!(reply.code(), *code, "{body}");
    }
    let wrong_type = server
        .send(
            Method::POST,
            "/v1/validations",
            &[("authorization", INGEST), ("content-type", "text/plain")],
            &body(&t),
        )
        .await;
    assert_eq!(
        (wrong_type.status, wrong_type.code().as_str()),
        (415, "unsupported_media_type")
    );
    for auth in [None, Some("Bearer nobody-at-all")] {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(auth.map(|a| ("authorization", a)));
        let reply = server
            .send(Method::POST, "/v1/validations", &headers, &body(&t))
            .await;
        assert_eq!((reply.status, reply.code().as_str()), (401, "unauthorized"));
    }
    assert_eq!(
        server.petition("e").await["pending_count"],
        1,
        "nothing refused validated it"
    );
    // An admin key may validate too, like it may sign.
    let validated = server.post_json("/v1/validations", ADMIN, &body(&t)).await;
    assert_eq!(validated.json(), json!({"status": "validated", "count": 1}));
    let get = server.send(Method::GET, "/v1/validations", &[], "").await;
    assert_eq!(get.status, 405);
    assert_eq!(server.engine.count("e"), Some(1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_petition_validates_nothing() {
    let server = TestServer::start(|_| {}).await;
    server.register("e", r#"{"validation":"email"}"#).await;
    let t = token(&server.sign("e", "jo@example.org").await);
    assert_eq!(server.close("e").await.status, 200);
    let late = server.validate(&t).await;
    assert_eq!(
        (late.status, late.code().as_str()),
        (409, "petition_closed"),
        "{late:?}"
    );
    let view = server.petition("e").await;
    assert_eq!(
        (&view["count"], &view["pending_count"]),
        (&json!(0), &json!(1))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_answers_410_and_frees_the_signer() {
    let clock = Arc::new(ManualClock::starting_now());
    let engine_clock = Arc::clone(&clock);
    let server = TestServer::start_with(
        move |config| {
            config.clock = engine_clock;
            // Expiry is swept by hand below, when the test says so.
            config.sweep_interval = None;
        },
        |_| {},
    )
    .await;
    server.register("e", r#"{"validation":"email"}"#).await;
    let first = server.sign("e", "jo@example.org").await;
    let t = token(&first);
    // Each worker thread keeps its own rendered views: read often enough to fill both.
    for _ in 0..20 {
        assert_eq!(server.petition("e").await["pending_count"], 1);
    }

    clock.advance(Duration::from_secs(7 * 24 * 3600 + 1));
    let expired = server.validate(&t).await;
    assert_eq!(
        (expired.status, expired.code().as_str()),
        (410, "token_expired"),
        "{expired:?}"
    );
    let engine = server.engine.clone();
    let swept = tokio::task::spawn_blocking(move || engine.sweep_expired())
        .await
        .unwrap();
    assert_eq!(swept, Ok(1));
    // The sweep changed no validated count and no generation the server knows of: the view
    // must show it all the same.
    for _ in 0..20 {
        let view = server.petition("e").await;
        assert_eq!(
            (&view["count"], &view["pending_count"]),
            (&json!(0), &json!(0))
        );
    }
    let still = server.validate(&t).await;
    assert_eq!(
        (still.status, still.code().as_str()),
        (410, "token_expired")
    );

    let again = server.sign("e", "jo@example.org").await;
    assert_ne!(
        token(&again),
        t,
        "signing again after expiry is a new signature"
    );
    assert_eq!(server.petition("e").await["pending_count"], 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_mixes_signatures_and_validations() {
    let server = TestServer::start(|_| {}).await;
    server.register("e", r#"{"validation":"email"}"#).await;
    server.register("n", "{}").await;
    let signed = batch(
        &server,
        &[
            json!({"petition": "e", "email": "a@x.org"}).to_string(),
            json!({"petition": "e", "email": "b@x.org"}).to_string(),
        ],
    )
    .await;
    let tokens: Vec<String> = signed
        .iter()
        .map(|line| {
            assert_eq!(line["status"], "pending", "{line}");
            assert!(line["expires_at"].is_string(), "{line}");
            line["token"].as_str().unwrap().to_string()
        })
        .collect();
    let (ta, tb) = (&tokens[0], &tokens[1]);
    let lines = [
        json!({"validate": ta}).to_string(),
        json!({"petition": "n", "email": "a@x.org"}).to_string(),
        json!({"validate": ta}).to_string(),
        json!({"petition": "e", "email": "c@x.org", "validate": tb}).to_string(),
        json!({"validate": tb, "name": "B"}).to_string(),
        json!({"validate": tb, "region": "E1"}).to_string(),
        json!({"validate": "short"}).to_string(),
        json!({"validate": "0".repeat(72)}).to_string(),
        json!({"email": "d@x.org"}).to_string(),
        "{\"validate\":".to_string(),
        json!({"petition": "e", "email": "c@x.org"}).to_string(),
        json!({"validate": tb}).to_string(),
    ];
    let answers = batch(&server, &lines).await;
    assert_eq!(answers.len(), lines.len());
    let expected = [
        json!({"status": "validated", "count": 1}),
        json!({"status": "accepted", "count": 1}),
        json!({"status": "already_validated", "count": 1}),
        json!({"status": "error", "code": "invalid_validation"}),
        json!({"status": "error", "code": "invalid_validation"}),
        json!({"status": "error", "code": "invalid_validation"}),
        json!({"status": "error", "code": "malformed_token"}),
        json!({"status": "error", "code": "unknown_token"}),
        json!({"status": "error", "code": "invalid_signature"}),
        json!({"status": "error", "code": "malformed_json"}),
        json!({"status": "pending"}),
        json!({"status": "validated", "count": 2}),
    ];
    for (n, (answer, expected)) in answers.iter().zip(&expected).enumerate() {
        for (key, value) in expected.as_object().unwrap() {
            assert_eq!(&answer[key], value, "line {n}: {answer}");
        }
        if answer["status"] == "error" {
            assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
    assert_eq!(answers[10]["token"].as_str().map(str::len), Some(72));
    let view = server.petition("e").await;
    assert_eq!(
        (&view["count"], &view["pending_count"]),
        (&json!(2), &json!(1))
    );
    assert_eq!(server.engine.count("n"), Some(1));
    server.stop().await;
}

/// The value of one series of a `/metrics` answer.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_outcomes_are_counted() {
    let server = TestServer::start(|_| {}).await;
    server.register("e", r#"{"validation":"email"}"#).await;
    let t = token(&server.sign("e", "jo@example.org").await);
    for _ in 0..6 {
        server.sign("e", "jo@example.org").await;
    }
    server.validate(&t).await;
    server.validate(&t).await;
    server.validate(&"0".repeat(72)).await;
    server.validate("nope").await;
    server.post_json("/v1/validations", INGEST, "{").await;
    let text = String::from_utf8(
        server
            .send(Method::GET, "/metrics", &[], "")
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    let cases = [
        (r#"ingest_signatures_total{outcome="pending"}"#, 6.0),
        (
            r#"ingest_signatures_total{outcome="too_many_resubmissions"}"#,
            1.0,
        ),
        (r#"ingest_signatures_total{outcome="accepted"}"#, 0.0),
        (r#"ingest_validations_total{outcome="validated"}"#, 1.0),
        (
            r#"ingest_validations_total{outcome="already_validated"}"#,
            1.0,
        ),
        (r#"ingest_validations_total{outcome="unknown_token"}"#, 1.0),
        (
            r#"ingest_validations_total{outcome="malformed_token"}"#,
            1.0,
        ),
        (r#"ingest_validations_total{outcome="malformed_json"}"#, 1.0),
        (r#"ingest_validations_total{outcome="token_expired"}"#, 0.0),
        (
            r#"ingest_http_requests_total{route="validate",class="2xx"}"#,
            2.0,
        ),
        (
            r#"ingest_http_requests_total{route="validate",class="4xx"}"#,
            3.0,
        ),
    ];
    for (series, value) in cases {
        assert_eq!(sample(&text, series), value, "{series}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_a_store_refuses_the_lifecycle_with_501() {
    let server = TestServer::start_with(
        |config| {
            config.storage = Storage::Memory;
            config.durability = Durability::None;
        },
        |_| {},
    )
    .await;
    let put = server
        .send(
            Method::PUT,
            "/v1/petitions/e",
            &[
                ("authorization", ADMIN),
                ("content-type", "application/json"),
            ],
            r#"{"validation":"email"}"#,
        )
        .await;
    assert_eq!((put.status, put.code().as_str()), (501, "unsupported"));
    let validate = server.validate(&"0".repeat(72)).await;
    assert_eq!(
        (validate.status, validate.code().as_str()),
        (501, "unsupported")
    );
    server.register("n", "{}").await;
    for dry_run in [true, false] {
        let body = json!({"criteria": {"email_domain": "x.org"}, "dry_run": dry_run});
        let reply = server.invalidate(&body.to_string()).await;
        assert_eq!((reply.status, reply.code().as_str()), (501, "unsupported"));
    }
    let cancel = server
        .post_json("/v1/invalidations/1/cancel", ADMIN, "")
        .await;
    assert_eq!(
        (cancel.status, cancel.code().as_str()),
        (501, "unsupported")
    );
    let list = server.get_admin("/v1/invalidations").await;
    assert_eq!(list.json(), json!({"invalidations": []}));
    server.stop().await;
}
