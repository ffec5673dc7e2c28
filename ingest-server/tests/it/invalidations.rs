//! Invalidation jobs over HTTP: preview, start, progress, cancel, the job limit, what they do
//! to counts, petition views and the milestone feed, and every refusal.

use hyper::Method;
use serde_json::json;

use crate::support::{TestServer, ADMIN, INGEST};

/// Signs `emails` to `petition` in one batch, each expected to be accepted.
async fn sign_all(server: &TestServer, petition: &str, emails: &[String]) {
    let body: String = emails
        .iter()
        .map(|email| json!({"petition": petition, "email": email}).to_string() + "\n")
        .collect();
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
    for line in String::from_utf8(reply.body.to_vec()).unwrap().lines() {
        assert!(line.contains(r#""status":"accepted""#), "{line}");
    }
}

/// Checks the whole store against memory (every count equal to its stored signers).
async fn verify(server: &TestServer) {
    let engine = server.engine.clone();
    tokio::task::spawn_blocking(move || engine.verify_store())
        .await
        .unwrap()
        .expect("the store is consistent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_lowers_counts_and_regresses_milestones() {
    let server = TestServer::start(|_| {}).await;
    server.register("p", r#"{"thresholds":[2]}"#).await;
    for email in ["a@bad.example", "b@bad.example", "c@good.example"] {
        assert_eq!(server.sign("p", email).await.status, 201);
    }
    assert_eq!(server.petition("p").await["milestones_reached"], json!([2]));

    let preview = |body: serde_json::Value| {
        let server = &server;
        async move {
            let reply = server.invalidate(&body.to_string()).await;
            assert_eq!(reply.status, 200, "{body}: {reply:?}");
            reply.json()["matching"].as_u64().unwrap()
        }
    };
    let bad = json!({"email_domain": "bad.example"});
    assert_eq!(
        preview(json!({"petition": "p", "criteria": bad, "dry_run": true})).await,
        2
    );
    assert_eq!(
        preview(json!({"criteria": {"email_pattern": "*@bad.exam?le"}, "dry_run": true})).await,
        2,
        "every petition's signatures when none is named"
    );
    assert_eq!(
        preview(json!({"criteria": {"email_domain": "nowhere.example"}, "dry_run": true})).await,
        0
    );
    assert_eq!(
        preview(json!({"criteria": {"received_before": "2001-01-01T00:00:00Z"}, "dry_run": true}))
            .await,
        0
    );
    assert_eq!(
        server.engine.count("p"),
        Some(3),
        "a preview changes nothing"
    );

    let started = server
        .invalidate(
            &json!({
                "petition": "p",
                "criteria": {"email_domain": "bad.example", "received_after": "2001-01-01T00:00:00Z"},
            })
            .to_string(),
        )
        .await;
    assert_eq!(started.status, 202, "{started:?}");
    let job = started.json();
    assert_eq!(job["id"], 1);
    assert_eq!(job["petition"], "p");
    assert_eq!(
        job["criteria"],
        json!({"email_domain": "bad.example", "received_after": "2001-01-01T00:00:00.000Z"}),
        "the criteria as given, times in RFC 3339"
    );
    assert_eq!(job["total"], 3);
    assert!(["running", "completed"].contains(&job["state"].as_str().unwrap()));
    humantime::parse_rfc3339(job["created_at"].as_str().unwrap()).expect("RFC 3339");

    let done = server.finished_job(1).await;
    assert_eq!(done["state"], "completed", "{done}");
    for (field, value) in [
        ("scanned", 3),
        ("matched", 2),
        ("invalidated", 2),
        ("total", 3),
    ] {
        assert_eq!(done[field], value, "{field}: {done}");
    }
    assert_eq!(done["progress"], 1.0);
    assert!(done["finished_at"].is_string(), "{done}");
    assert!(done["error"].is_null(), "{done}");

    let view = server.petition("p").await;
    assert_eq!(
        (
            &view["count"],
            &view["invalidated_count"],
            &view["pending_count"]
        ),
        (&json!(1), &json!(2), &json!(0))
    );
    assert_eq!(view["milestones_reached"], json!([]));
    let feed = server
        .send(Method::GET, "/v1/milestones", &[], "")
        .await
        .json();
    let seen: Vec<(u64, u64, String)> = feed["milestones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().unwrap(),
                m["threshold"].as_u64().unwrap(),
                m["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, 2, "threshold_crossed".to_string()),
            // 2 is the response falling due (the events feed numbers both).
            (3, 2, "threshold_regressed".to_string())
        ]
    );

    let list = server.get_admin("/v1/invalidations").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json(), json!({ "invalidations": [done] }));
    let cancel = server
        .post_json("/v1/invalidations/1/cancel", ADMIN, "")
        .await;
    assert_eq!(
        (cancel.status, cancel.code().as_str()),
        (409, "job_finished"),
        "{cancel:?}"
    );

    let again = server.sign("p", "a@bad.example").await;
    assert_eq!(again.status, 200, "an invalidated signer is a duplicate");
    assert_eq!(again.json(), json!({"status": "duplicate", "count": 1}));
    assert_eq!(server.sign("p", "d@good.example").await.status, 201);
    let feed = server
        .send(Method::GET, "/v1/milestones?after=3", &[], "")
        .await
        .json();
    assert_eq!(feed["milestones"][0]["type"], "threshold_crossed");
    assert_eq!(feed["milestones"][0]["threshold"], 2, "crossed again");
    verify(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidating_pending_signatures() {
    let server = TestServer::start(|_| {}).await;
    server.register("e", r#"{"validation":"email"}"#).await;
    let pending = server.sign("e", "a@bad.example").await;
    assert_eq!(pending.status, 202);
    let ta = pending.json()["token"].as_str().unwrap().to_string();
    let tb = server.sign("e", "b@good.example").await.json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(server.validate(&tb).await.status, 200);
    let view = server.petition("e").await;
    assert_eq!(
        (&view["count"], &view["pending_count"]),
        (&json!(1), &json!(1))
    );

    let started = server
        .invalidate(r#"{"petition":"e","criteria":{"email_domain":"bad.example"}}"#)
        .await;
    assert_eq!(started.status, 202, "{started:?}");
    let done = server
        .finished_job(started.json()["id"].as_u64().unwrap())
        .await;
    assert_eq!(
        (&done["state"], &done["matched"], &done["invalidated"]),
        (&json!("completed"), &json!(1), &json!(1))
    );
    // The validated count did not move: the view must still change.
    let view = server.petition("e").await;
    assert_eq!(
        (
            &view["count"],
            &view["pending_count"],
            &view["invalidated_count"]
        ),
        (&json!(1), &json!(0), &json!(1))
    );
    let late = server.validate(&ta).await;
    assert_eq!(
        (late.status, late.code().as_str()),
        (409, "invalidated"),
        "{late:?}"
    );
    let again = server.sign("e", "a@bad.example").await;
    assert_eq!(again.json(), json!({"status": "duplicate", "count": 1}));
    verify(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_shows_even_when_the_count_is_back_where_it_was() {
    let server = TestServer::start(|_| {}).await;
    server.register("p", "{}").await;
    server.sign("p", "a@bad.example").await;
    server.sign("p", "b@good.example").await;
    // Each worker thread keeps its own rendered views: read often enough to fill both.
    for _ in 0..20 {
        let view = server.petition("p").await;
        assert_eq!(
            (&view["count"], &view["invalidated_count"]),
            (&json!(2), &json!(0))
        );
    }
    let started = server
        .invalidate(r#"{"criteria":{"email_domain":"bad.example"}}"#)
        .await;
    assert_eq!(started.status, 202);
    assert_eq!(server.finished_job(1).await["invalidated"], 1);
    // The count goes back to 2: only the invalidated count tells the views apart.
    assert_eq!(server.sign("p", "c@good.example").await.json()["count"], 2);
    for _ in 0..20 {
        let view = server.petition("p").await;
        assert_eq!(
            (&view["count"], &view["invalidated_count"]),
            (&json!(2), &json!(1)),
            "{view}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_can_be_cancelled_and_jobs_are_bounded() {
    // One signature a step: the job below takes thousands of synced writes, far longer than
    // the few requests that follow its start.
    let server = TestServer::start_with(
        |config| {
            config.invalidation_step = 1;
            config.invalidation_jobs_max = 1;
        },
        |_| {},
    )
    .await;
    server.register("p", "{}").await;
    server.register("q", "{}").await;
    let emails: Vec<String> = (0..3000).map(|n| format!("s{n}@bad.example")).collect();
    sign_all(&server, "p", &emails).await;

    let body = r#"{"petition":"p","criteria":{"email_domain":"bad.example"}}"#;
    let first = server.invalidate(body).await;
    assert_eq!(first.status, 202, "{first:?}");
    let id = first.json()["id"].as_u64().unwrap();
    let second = server.invalidate(r#"{"criteria":{"country":"GB"}}"#).await;
    assert_eq!(
        (second.status, second.code().as_str()),
        (429, "too_many_jobs"),
        "{second:?}"
    );
    assert_eq!(second.header("retry-after"), None);
    let cancelled = server
        .post_json(&format!("/v1/invalidations/{id}/cancel"), ADMIN, "")
        .await;
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    let cancelled = cancelled.json();
    assert_eq!(cancelled["state"], "cancelled");
    assert!(cancelled["finished_at"].is_string());
    let job = server.finished_job(id).await;
    assert_eq!(job["state"], "cancelled");
    let invalidated = job["invalidated"].as_u64().unwrap();
    assert!(invalidated < 3000, "cancelled before the end: {job}");
    assert!(job["progress"].as_f64().unwrap() < 1.0, "{job}");
    let view = server.petition("p").await;
    assert_eq!(view["count"], 3000 - invalidated, "{view} {job}");
    assert_eq!(view["invalidated_count"], invalidated);
    let again = server
        .post_json(&format!("/v1/invalidations/{id}/cancel"), ADMIN, "")
        .await;
    assert_eq!((again.status, again.code().as_str()), (409, "job_finished"));

    let next = server
        .invalidate(r#"{"petition":"q","criteria":{"country":"GB"}}"#)
        .await;
    assert_eq!(next.status, 202, "a slot is free again: {next:?}");
    assert_eq!(server.finished_job(id + 1).await["state"], "completed");
    verify(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_requests_are_checked() {
    let server = TestServer::start(|_| {}).await;
    server.register("p", "{}").await;
    server.sign("p", "a@x.org").await;
    let cases: &[(&str, u16, &str, &str)] = &[
        (
            r#"{"criteria":{"ip":"300.1.2.3/8"}}"#,
            422,
            "invalid_criteria",
            "criteria.ip",
        ),
        (
            r#"{"criteria":{"ip":"10.0.0.0/33"}}"#,
            422,
            "invalid_criteria",
            "criteria.ip",
        ),
        (
            r#"{"criteria":{"email_pattern":"[a-"}}"#,
            422,
            "invalid_criteria",
            "criteria.email_pattern",
        ),
        (r#"{"criteria":{}}"#, 422, "invalid_criteria", "criteria"),
        (
            r#"{"criteria":{},"dry_run":true}"#,
            422,
            "invalid_criteria",
            "criteria",
        ),
        (
            r#"{"criteria":{"region":"GB ENG"}}"#,
            422,
            "invalid_criteria",
            "criteria.region",
        ),
        (
            r#"{"criteria":{"country":"GBR"}}"#,
            422,
            "invalid_criteria",
            "criteria.country",
        ),
        (
            r#"{"criteria":{"received_after":"yesterday"}}"#,
            422,
            "invalid_criteria",
            "criteria.received_after",
        ),
        (
            r#"{"criteria":{"received_after":"2030-01-01T00:00:00Z","received_before":"2020-01-01T00:00:00Z"}}"#,
            422,
            "invalid_criteria",
            "criteria.received_before",
        ),
        (
            r#"{"criteria":{"email_domain":"x.org"},"colour":"red"}"#,
            422,
            "invalid_criteria",
            "colour",
        ),
        (
            r#"{"criteria":{"email_domain":"x.org","colour":"red"}}"#,
            422,
            "invalid_criteria",
            "colour",
        ),
        (r#"{"petition":"p"}"#, 422, "invalid_criteria", "criteria"),
        (
            r#"{"criteria":{"email_domain":"x.org"},"dry_run":"yes"}"#,
            422,
            "invalid_criteria",
            "boolean",
        ),
        ("{", 400, "malformed_json", ""),
        ("", 400, "malformed_json", ""),
        (
            r#"{"petition":"ghost","criteria":{"email_domain":"x.org"}}"#,
            404,
            "unknown_petition",
            "",
        ),
        (
            r#"{"petition":"ghost","criteria":{"email_domain":"x.org"},"dry_run":true}"#,
            404,
            "unknown_petition",
            "",
        ),
    ];
    for (body, status, code, names) in cases {
        let reply = server.invalidate(body).await;
        assert_eq!(reply.status, *status, "{body}: {reply:?}");
        assert_eq!(reply.code(), *code, "{body}");
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains(names), "{body}: {message:?} names {names}");
    }
    let wrong_type = server
        .send(
            Method::POST,
            "/v1/invalidations",
            &[("authorization", ADMIN), ("content-type", "text/plain")],
            r#"{"criteria":{"email_domain":"x.org"}}"#,
        )
        .await;
    assert_eq!(wrong_type.status, 415);
    assert_eq!(
        server.get_admin("/v1/invalidations").await.json(),
        json!({"invalidations": []}),
        "nothing refused started a job"
    );
    assert_eq!(server.engine.count("p"), Some(1));

    for path in [
        "/v1/invalidations/99",
        "/v1/invalidations/abc",
        "/v1/invalidations/-1",
        "/v1/invalidations/0",
    ] {
        let reply = server.get_admin(path).await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (404, "not_found"),
            "{path}"
        );
        let cancel = server.post_json(&format!("{path}/cancel"), ADMIN, "").await;
        assert_eq!(
            (cancel.status, cancel.code().as_str()),
            (404, "not_found"),
            "{path}/cancel"
        );
    }

    // Every invalidation route is the admin's: no key 401, an ingest key 403.
    let body = r#"{"criteria":{"email_domain":"x.org"},"dry_run":true}"#;
    let routes = [
        (Method::POST, "/v1/invalidations", body),
        (Method::GET, "/v1/invalidations", ""),
        (Method::GET, "/v1/invalidations/1", ""),
        (Method::POST, "/v1/invalidations/1/cancel", ""),
    ];
    for (method, path, body) in routes {
        let json = ("content-type", "application/json");
        let none = server.send(method.clone(), path, &[json], body).await;
        assert_eq!(
            (none.status, none.code().as_str()),
            (401, "unauthorized"),
            "{method} {path}"
        );
        let ingest = server
            .send(
                method.clone(),
                path,
                &[json, ("authorization", INGEST)],
                body,
            )
            .await;
        assert_eq!(
            (ingest.status, ingest.code().as_str()),
            (403, "forbidden"),
            "{method} {path}"
        );
    }
    server.stop().await;
}
