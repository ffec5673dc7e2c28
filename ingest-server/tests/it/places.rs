//! Where signatures come from and when they came, over HTTP: countries and regions on
//! signatures, `GET /v1/petitions/{id}/countries`, `/regions` and `/history`, trending
//! petitions, and the cached answers of countries and history.

use std::sync::Arc;
use std::time::Duration;

use engine::ManualClock;
use hyper::Method;
use serde_json::{json, Value};

use crate::support::{Reply, TestServer, INGEST};

const JSON: (&str, &str) = ("content-type", "application/json");

/// 2030-01-01T00:00:00Z: a whole hour, for clocks set by hand.
const T0: u64 = 1_893_456_000_000;
const MINUTE: u64 = 60_000;

/// `POST /v1/petitions/{petition}/signatures` of `email` with the optional `place` fields
/// (`country`, `region`).
async fn sign_from(server: &TestServer, petition: &str, email: &str, place: Value) -> Reply {
    let mut body = json!({ "email": email });
    for (key, value) in place.as_object().into_iter().flatten() {
        body[key] = value.clone();
    }
    server
        .send(
            Method::POST,
            &format!("/v1/petitions/{petition}/signatures"),
            &[("authorization", INGEST), JSON],
            &body.to_string(),
        )
        .await
}

/// Signs `n` new signers (`{prefix}-{i}@example.org`) from `place`, each accepted.
async fn sign_n(server: &TestServer, petition: &str, prefix: &str, n: usize, place: Value) {
    let body: String = (0..n)
        .map(|i| {
            let mut line =
                json!({"petition": petition, "email": format!("{prefix}-{i}@example.org")});
            for (key, value) in place.as_object().into_iter().flatten() {
                line[key] = value.clone();
            }
            line.to_string() + "\n"
        })
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
    assert_eq!(reply.status, 200, "{reply:?}");
    for line in String::from_utf8(reply.body.to_vec()).unwrap().lines() {
        assert!(line.contains(r#""status":"accepted""#), "{line}");
    }
}

async fn get(server: &TestServer, path: &str) -> Reply {
    server.send(Method::GET, path, &[], "").await
}

/// The 200 answer's JSON.
async fn get_json(server: &TestServer, path: &str) -> Value {
    let reply = get(server, path).await;
    assert_eq!(reply.status, 200, "{path}: {reply:?}");
    reply.json()
}

/// `(country, count)` of each entry of a countries list.
fn countries_of(list: &Value) -> Vec<(String, u64)> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|c| {
            (
                c["country"].as_str().unwrap().to_string(),
                c["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn owned(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(c, n)| (c.to_string(), *n)).collect()
}

/// Polls invalidation job `id` until it has finished, checking it completed.
async fn completed(server: &TestServer, id: u64) {
    let job = server.finished_job(id).await;
    assert_eq!(job["state"], "completed", "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn countries_and_regions_count_every_signature() {
    let server = TestServer::start(|_| {}).await;
    server.register("p1", "{}").await;
    server.register("quiet", "{}").await;
    sign_n(
        &server,
        "p1",
        "gb-a",
        4,
        json!({"country": "GB", "region": "E14000639"}),
    )
    .await;
    sign_n(
        &server,
        "p1",
        "gb-b",
        2,
        json!({"country": "gb", "region": "e14000530"}),
    )
    .await;
    sign_n(&server, "p1", "gb-c", 1, json!({"country": "GB"})).await;
    sign_n(
        &server,
        "p1",
        "fr",
        3,
        json!({"country": "FR", "region": "IDF"}),
    )
    .await;
    sign_n(&server, "p1", "de", 3, json!({"country": "DE"})).await;
    sign_n(
        &server,
        "p1",
        "us",
        2,
        json!({"country": "us", "region": "US-CA"}),
    )
    .await;
    sign_n(&server, "p1", "none", 3, json!({})).await;
    let single = sign_from(
        &server,
        "p1",
        "one@example.org",
        json!({"country": "IE", "region": "D"}),
    )
    .await;
    assert_eq!(single.status, 201, "{single:?}");

    let answer = get_json(&server, "/v1/petitions/p1/countries").await;
    assert_eq!(answer["petition"], "p1");
    assert_eq!(answer["count"], 19);
    let countries = countries_of(&answer["countries"]);
    assert_eq!(
        countries,
        owned(&[
            ("GB", 7),
            ("DE", 3),
            ("FR", 3),
            ("ZZ", 3),
            ("US", 2),
            ("IE", 1)
        ]),
        "largest first, ties by code, ZZ for no country"
    );
    assert_eq!(
        countries.iter().map(|(_, n)| n).sum::<u64>(),
        19,
        "they sum to the count"
    );
    let two = get_json(&server, "/v1/petitions/p1/countries?limit=2").await;
    assert_eq!(
        countries_of(&two["countries"]),
        owned(&[("GB", 7), ("DE", 3)])
    );
    assert_eq!(two["count"], 19, "the count is the whole count");
    let empty = get_json(&server, "/v1/petitions/quiet/countries").await;
    assert_eq!(
        empty,
        json!({"petition": "quiet", "count": 0, "countries": []})
    );

    let all = get_json(&server, "/v1/petitions/p1/regions").await;
    assert_eq!(
        all,
        json!({"petition": "p1", "regions": [
            {"country": "GB", "region": "E14000639", "count": 4},
            {"country": "FR", "region": "IDF", "count": 3},
            {"country": "GB", "region": "E14000530", "count": 2},
            {"country": "US", "region": "US-CA", "count": 2},
            {"country": "IE", "region": "D", "count": 1},
        ]}),
        "regions upper-cased, largest first, ties by country; no region, no entry"
    );
    let gb = get_json(&server, "/v1/petitions/p1/regions?country=gb").await;
    assert_eq!(
        gb,
        json!({"petition": "p1", "country": "GB", "regions": [
            {"region": "E14000639", "count": 4},
            {"region": "E14000530", "count": 2},
        ]})
    );
    let one = get_json(&server, "/v1/petitions/p1/regions?limit=1&country=GB").await;
    assert_eq!(one["regions"], json!([{"region": "E14000639", "count": 4}]));
    let none = get_json(&server, "/v1/petitions/p1/regions?country=JP").await;
    assert_eq!(
        none,
        json!({"petition": "p1", "country": "JP", "regions": []})
    );
    for country in ["UK", "ZZ", "XX", "GBR", ""] {
        let bad = get(
            &server,
            &format!("/v1/petitions/p1/regions?country={country}"),
        )
        .await;
        assert_eq!(
            (bad.status, bad.code().as_str()),
            (400, "invalid_parameter"),
            "{country}"
        );
        let message = bad.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.starts_with("country: "), "{country}: {message}");
    }
    let uk = get(&server, "/v1/petitions/p1/regions?country=uk").await;
    assert!(
        uk.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"GB\""),
        "{uk:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn petition_views_and_lists_carry_the_top_ten_countries() {
    let server = TestServer::start(|_| {}).await;
    server.register("p1", "{}").await;
    server.register("p2", "{}").await;
    // Twelve countries: AD 12, AE 11, ..., AM 1 (assigned codes in order), and 5 with none.
    let codes = [
        "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT",
    ];
    for (at, code) in codes.iter().enumerate() {
        sign_n(&server, "p1", code, 12 - at, json!({"country": code})).await;
    }
    sign_n(&server, "p1", "none", 5, json!({})).await;
    sign_n(&server, "p2", "x", 1, json!({"country": "NZ"})).await;
    let view = server.petition("p1").await;
    assert_eq!(view["count"], 83);
    // Ties by code: AO before ZZ.
    let sorted = owned(&[
        ("AD", 12),
        ("AE", 11),
        ("AF", 10),
        ("AG", 9),
        ("AI", 8),
        ("AL", 7),
        ("AM", 6),
        ("AO", 5),
        ("ZZ", 5),
        ("AQ", 4),
    ]);
    assert_eq!(countries_of(&view["countries"]), sorted);
    let list = get_json(&server, "/v1/petitions?sort=count").await;
    assert_eq!(list["petitions"][0]["id"], "p1");
    assert_eq!(countries_of(&list["petitions"][0]["countries"]), sorted);
    assert_eq!(
        countries_of(&list["petitions"][1]["countries"]),
        owned(&[("NZ", 1)])
    );
    let full = get_json(&server, "/v1/petitions/p1/countries").await;
    assert_eq!(
        full["countries"].as_array().unwrap().len(),
        13,
        "all of them here"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_places_are_checked() {
    let server = TestServer::start(|_| {}).await;
    server.register("p1", "{}").await;
    let cases = [
        (json!({"country": "XX"}), "country"),
        (json!({"country": "ZZ"}), "country"),
        (json!({"country": "EU"}), "country"),
        (json!({"country": "GBR"}), "country"),
        (json!({"country": "UK"}), "country"),
        (json!({"country": "GB", "region": "R".repeat(17)}), "region"),
        (json!({"country": "GB", "region": "E1 4"}), "region"),
        (json!({"country": "GB", "region": "E1_4"}), "region"),
        (json!({"country": "GB", "region": "É1"}), "region"),
        (json!({"region": "E14000639"}), "region"),
        (json!({"country": "", "region": "E1"}), "region"),
    ];
    for (n, (place, field)) in cases.iter().enumerate() {
        let reply = sign_from(&server, "p1", &format!("s{n}@example.org"), place.clone()).await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (422, "invalid_signature"),
            "{place}: {reply:?}"
        );
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            message.starts_with(&format!("invalid {field}:")),
            "{place}: {message}"
        );
    }
    let uk = sign_from(&server, "p1", "uk@example.org", json!({"country": "UK"})).await;
    assert!(
        uk.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"GB\""),
        "the hint"
    );
    // The same in a batch: a line error each, the good line counted.
    let lines = [
        json!({"petition": "p1", "email": "b1@example.org", "region": "E1"}),
        json!({"petition": "p1", "email": "b2@example.org", "country": "UK"}),
        json!({"petition": "p1", "email": "b3@example.org", "country": "GB", "region": "R".repeat(17)}),
        json!({"petition": "p1", "email": "b4@example.org", "country": "GB", "region": "R".repeat(16)}),
    ];
    let body: String = lines.iter().map(|l| l.to_string() + "\n").collect();
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
    let answers: Vec<Value> = String::from_utf8(reply.body.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let fields: Vec<String> = answers
        .iter()
        .map(|a| match a["status"].as_str().unwrap() {
            "error" => a["message"]
                .as_str()
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .to_string(),
            status => status.to_string(),
        })
        .collect();
    assert_eq!(
        fields,
        [
            "invalid region",
            "invalid country",
            "invalid region",
            "accepted"
        ],
        "{answers:?}"
    );
    assert_eq!(
        server.engine.count("p1"),
        Some(1),
        "only the 16-character region counted"
    );
    let regions = get_json(&server, "/v1/petitions/p1/regions").await;
    assert_eq!(
        regions["regions"],
        json!([{"country": "GB", "region": "R".repeat(16), "count": 1}])
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_region_dictionary_refuses_new_regions_only() {
    let server = TestServer::start_with(|config| config.regions_max = 2, |_| {}).await;
    server.register("p1", "{}").await;
    let place = |region: &str| json!({"country": "GB", "region": region});
    assert_eq!(
        sign_from(&server, "p1", "a@example.org", place("E1"))
            .await
            .status,
        201
    );
    assert_eq!(
        sign_from(&server, "p1", "b@example.org", place("E2"))
            .await
            .status,
        201
    );
    let third = sign_from(&server, "p1", "c@example.org", place("E3")).await;
    assert_eq!(
        (third.status, third.code().as_str()),
        (422, "invalid_signature"),
        "{third:?}"
    );
    let message = third.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.starts_with("invalid region:"), "{message}");
    let known = sign_from(&server, "p1", "c@example.org", place("e1")).await;
    assert_eq!(
        known.status, 201,
        "a region already named is taken: {known:?}"
    );
    let other_country = sign_from(
        &server,
        "p1",
        "d@example.org",
        json!({"country": "FR", "region": "E1"}),
    )
    .await;
    assert_eq!(other_country.status, 422, "a region is named per country");
    let regions = get_json(&server, "/v1/petitions/p1/regions").await;
    assert_eq!(
        regions["regions"],
        json!([
            {"country": "GB", "region": "E1", "count": 2},
            {"country": "GB", "region": "E2", "count": 1},
        ])
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameters_are_checked_on_each_route() {
    let server = TestServer::start(|_| {}).await;
    server.register("p1", "{}").await;
    sign_n(
        &server,
        "p1",
        "gb",
        2,
        json!({"country": "GB", "region": "E1"}),
    )
    .await;
    let cases: &[(&str, u16, &str)] = &[
        ("/v1/petitions/p1/countries?limit=0", 400, "limit"),
        ("/v1/petitions/p1/countries?limit=1", 200, ""),
        ("/v1/petitions/p1/countries?limit=250", 200, ""),
        ("/v1/petitions/p1/countries?limit=251", 400, "limit"),
        ("/v1/petitions/p1/countries?limit=x", 400, "limit"),
        ("/v1/petitions/p1/countries?country=GB", 400, "country"),
        ("/v1/petitions/p1/regions?limit=0", 400, "limit"),
        ("/v1/petitions/p1/regions?limit=10000", 200, ""),
        ("/v1/petitions/p1/regions?limit=10001", 400, "limit"),
        ("/v1/petitions/p1/regions?region=E1", 400, "region"),
        ("/v1/petitions/p1/history?resolution=minute", 200, ""),
        ("/v1/petitions/p1/history?resolution=hour", 200, ""),
        ("/v1/petitions/p1/history?resolution=day", 400, "resolution"),
        (
            "/v1/petitions/p1/history?resolution=Minute",
            400,
            "resolution",
        ),
        ("/v1/petitions/p1/history?resolution=", 400, "resolution"),
        ("/v1/petitions/p1/history?limit=5", 400, "limit"),
        ("/v1/petitions?sort=trending&limit=0", 400, "limit"),
        ("/v1/petitions?sort=trending&limit=1000", 200, ""),
        ("/v1/petitions?sort=trending&limit=1001", 400, "limit"),
        ("/v1/petitions?sort=trending&window=1m", 200, ""),
        ("/v1/petitions?sort=trending&window=48h", 200, ""),
        ("/v1/petitions?sort=trending&window=2880m", 200, ""),
        ("/v1/petitions?sort=trending&window=0m", 400, "window"),
        ("/v1/petitions?sort=trending&window=0h", 400, "window"),
        ("/v1/petitions?sort=trending&window=2881m", 400, "window"),
        ("/v1/petitions?sort=trending&window=49h", 400, "window"),
        ("/v1/petitions?sort=trending&window=1d", 400, "window"),
        ("/v1/petitions?sort=trending&window=60", 400, "window"),
        ("/v1/petitions?sort=trending&window=1.5h", 400, "window"),
        ("/v1/petitions?sort=trending&window=+5m", 400, "window"),
        ("/v1/petitions?sort=trending&window=m", 400, "window"),
        ("/v1/petitions?sort=trending&window=", 400, "window"),
        ("/v1/petitions?sort=trending&window=99999m", 400, "window"),
        ("/v1/petitions?window=1h", 400, "window"),
        ("/v1/petitions?sort=count&window=1h", 400, "window"),
        (
            "/v1/petitions?sort=trending&state=awaiting_response",
            400,
            "sort",
        ),
        ("/v1/petitions?sort=hot", 400, "sort"),
        ("/v1/petitions?sort=trending&colour=red", 400, "colour"),
    ];
    for (path, status, field) in cases {
        let reply = get(&server, path).await;
        assert_eq!(reply.status, *status, "{path}: {reply:?}");
        if *status == 400 {
            assert_eq!(reply.code(), "invalid_parameter", "{path}");
            let message = reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(
                message.starts_with(&format!("{field}: ")),
                "{path}: {message}"
            );
        }
    }
    let sort = get(&server, "/v1/petitions?sort=hot").await.json();
    assert_eq!(
        sort["error"]["message"],
        "sort: sort is count, due or trending"
    );
    for path in [
        "/v1/petitions/nope/countries",
        "/v1/petitions/nope/regions",
        "/v1/petitions/nope/regions?country=GB",
        "/v1/petitions/nope/history",
        "/v1/petitions/nope/history?resolution=hour",
    ] {
        let reply = get(&server, path).await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (404, "unknown_petition"),
            "{path}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_countries_follow_signatures_and_invalidations() {
    let server = TestServer::start(|_| {}).await;
    server.register("p1", "{}").await;
    sign_n(&server, "p1", "gb", 2, json!({"country": "GB"})).await;
    let bot = sign_from(&server, "p1", "bot@bots.example", json!({"country": "GB"})).await;
    assert_eq!(bot.status, 201, "{bot:?}");
    sign_n(&server, "p1", "fr", 1, json!({"country": "FR"})).await;

    let first = get(&server, "/v1/petitions/p1/countries").await;
    assert_eq!(first.status, 200);
    let etag = first.header("etag").expect("an ETag").to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(first.header("cache-control"), Some("public, max-age=1"));
    assert_eq!(
        countries_of(&first.json()["countries"]),
        owned(&[("GB", 3), ("FR", 1)])
    );
    // Each worker thread keeps its own rendered answers: read often enough to fill both.
    for _ in 0..20 {
        let again = get(&server, "/v1/petitions/p1/countries").await;
        assert_eq!(
            (again.status, again.header("etag")),
            (200, Some(etag.as_str()))
        );
        assert_eq!(again.body, first.body);
        let fresh = server
            .send(
                Method::GET,
                "/v1/petitions/p1/countries",
                &[("if-none-match", &etag)],
                "",
            )
            .await;
        assert_eq!(fresh.status, 304, "{fresh:?}");
        assert!(fresh.body.is_empty());
        assert_eq!(fresh.header("etag"), Some(etag.as_str()));
        assert_eq!(fresh.header("cache-control"), Some("public, max-age=1"));
    }
    let other = server
        .send(
            Method::GET,
            "/v1/petitions/p1/countries",
            &[("if-none-match", "\"0\", W/\"1\"")],
            "",
        )
        .await;
    assert_eq!(other.status, 200, "another ETag");

    // A new signature: every thread's answer changes.
    sign_n(&server, "p1", "de", 1, json!({"country": "DE"})).await;
    for _ in 0..20 {
        let after = get(&server, "/v1/petitions/p1/countries").await;
        assert_eq!(after.status, 200);
        assert_ne!(after.header("etag"), Some(etag.as_str()));
        assert_eq!(
            countries_of(&after.json()["countries"]),
            owned(&[("GB", 3), ("DE", 1), ("FR", 1)])
        );
        let stale = server
            .send(
                Method::GET,
                "/v1/petitions/p1/countries",
                &[("if-none-match", &etag)],
                "",
            )
            .await;
        assert_eq!(stale.status, 200, "the old ETag is stale");
    }

    // An invalidation takes a GB signature off and a new FR one brings the count back to
    // where it was: the count alone cannot tell the answer changed.
    let job = server
        .invalidate(r#"{"petition":"p1","criteria":{"email_domain":"bots.example"}}"#)
        .await;
    assert_eq!(job.status, 202, "{job:?}");
    completed(&server, job.json()["id"].as_u64().unwrap()).await;
    sign_n(&server, "p1", "fr2", 1, json!({"country": "FR"})).await;
    assert_eq!(server.engine.count("p1"), Some(5));
    for _ in 0..20 {
        let answer = get_json(&server, "/v1/petitions/p1/countries").await;
        assert_eq!(answer["count"], 5);
        assert_eq!(
            countries_of(&answer["countries"]),
            owned(&[("FR", 2), ("GB", 2), ("DE", 1)])
        );
        let view = server.petition("p1").await;
        assert_eq!(
            countries_of(&view["countries"]),
            owned(&[("FR", 2), ("GB", 2), ("DE", 1)])
        );
    }
    server.stop().await;
}

/// A server whose engine reads `clock`.
async fn server_at(clock: &Arc<ManualClock>) -> TestServer {
    let clock = Arc::clone(clock);
    TestServer::start_with(move |config| config.clock = clock, |_| {}).await
}

/// `(start, count)` of each bucket of a history answer.
fn buckets_of(answer: &Value) -> Vec<(String, i64)> {
    answer["buckets"]
        .as_array()
        .unwrap_or_else(|| panic!("no buckets: {answer}"))
        .iter()
        .map(|b| {
            (
                b["start"].as_str().unwrap().to_string(),
                b["count"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn bucket(start: &str, count: i64) -> (String, i64) {
    (start.to_string(), count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_buckets_are_exact_and_move_with_the_minute() {
    let clock = Arc::new(ManualClock::new(T0 + 10_000));
    let server = server_at(&clock).await;
    server.register("p1", "{}").await;
    sign_n(&server, "p1", "a", 2, json!({"country": "GB"})).await;
    let bot = sign_from(&server, "p1", "bot@bots.example", json!({})).await;
    assert_eq!(bot.status, 201, "{bot:?}");
    clock.set(T0 + MINUTE + 59_999);
    sign_n(&server, "p1", "b", 2, json!({})).await;
    clock.set(T0 + 61 * MINUTE);
    sign_n(&server, "p1", "c", 2, json!({})).await;
    clock.set(T0 + 62 * MINUTE + 30_000);
    let job = server
        .invalidate(r#"{"petition":"p1","criteria":{"email_domain":"bots.example"}}"#)
        .await;
    assert_eq!(job.status, 202, "{job:?}");
    completed(&server, job.json()["id"].as_u64().unwrap()).await;

    let minutes = vec![
        bucket("2030-01-01T00:00:00.000Z", 3),
        bucket("2030-01-01T00:01:00.000Z", 2),
        bucket("2030-01-01T01:01:00.000Z", 2),
        bucket("2030-01-01T01:02:00.000Z", -1),
    ];
    let hours = vec![
        bucket("2030-01-01T00:00:00.000Z", 5),
        bucket("2030-01-01T01:00:00.000Z", 1),
    ];
    for _ in 0..20 {
        let answer = get_json(&server, "/v1/petitions/p1/history").await;
        assert_eq!(
            (&answer["petition"], &answer["resolution"]),
            (&json!("p1"), &json!("minute"))
        );
        assert_eq!(buckets_of(&answer), minutes, "the default is by minute");
        let explicit = get_json(&server, "/v1/petitions/p1/history?resolution=minute").await;
        assert_eq!(buckets_of(&explicit), minutes);
        let by_hour = get_json(&server, "/v1/petitions/p1/history?resolution=hour").await;
        assert_eq!(by_hour["resolution"], "hour");
        assert_eq!(buckets_of(&by_hour), hours);
    }
    let total: i64 = hours.iter().map(|(_, n)| n).sum();
    assert_eq!(
        Some(total as u64),
        server.engine.count("p1"),
        "the hours sum to the count"
    );

    // The last millisecond the first minute is in the 48 hours, then the first one it is not:
    // the cached answers must move with the minute although no count changed.
    clock.set(T0 + 48 * 60 * MINUTE - 1);
    let reply = get(&server, "/v1/petitions/p1/history").await;
    let etag = reply.header("etag").unwrap().to_string();
    for _ in 0..20 {
        assert_eq!(
            buckets_of(&get_json(&server, "/v1/petitions/p1/history").await),
            minutes
        );
        let fresh = server
            .send(
                Method::GET,
                "/v1/petitions/p1/history",
                &[("if-none-match", &etag)],
                "",
            )
            .await;
        assert_eq!(fresh.status, 304);
    }
    clock.set(T0 + 48 * 60 * MINUTE);
    for _ in 0..20 {
        let reply = get(&server, "/v1/petitions/p1/history").await;
        assert_eq!(buckets_of(&reply.json()), minutes[1..].to_vec());
        assert_ne!(reply.header("etag"), Some(etag.as_str()));
        let by_hour = get_json(&server, "/v1/petitions/p1/history?resolution=hour").await;
        assert_eq!(
            buckets_of(&by_hour),
            hours,
            "hours cover the petition's life"
        );
    }
    // A new signature shows at once.
    sign_n(&server, "p1", "d", 1, json!({})).await;
    for _ in 0..20 {
        let answer = get_json(&server, "/v1/petitions/p1/history").await;
        let mut expected = minutes[1..].to_vec();
        expected.push(bucket("2030-01-03T00:00:00.000Z", 1));
        assert_eq!(buckets_of(&answer), expected);
    }
    server.register("quiet", "{}").await;
    let quiet = get_json(&server, "/v1/petitions/quiet/history").await;
    assert_eq!(
        quiet,
        json!({"petition": "quiet", "resolution": "minute", "buckets": []})
    );
    server.stop().await;
}

/// `(id, signatures_in_window)` of each petition of a trending answer.
fn trending_of(answer: &Value) -> Vec<(String, i64)> {
    answer["petitions"]
        .as_array()
        .unwrap_or_else(|| panic!("no petitions: {answer}"))
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["signatures_in_window"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn growth(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    list.iter().map(|(id, n)| (id.to_string(), *n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trending_lists_the_largest_growth_in_the_window() {
    let clock = Arc::new(ManualClock::new(T0));
    let server = server_at(&clock).await;
    for id in ["a", "b", "c", "d", "idle"] {
        server.register(id, "{}").await;
    }
    sign_n(&server, "a", "a", 5, json!({"country": "GB"})).await;
    clock.set(T0 + 30 * MINUTE);
    sign_n(&server, "b", "b", 2, json!({})).await;
    sign_n(&server, "c", "c", 2, json!({})).await;
    sign_n(&server, "d", "d", 2, json!({})).await;
    clock.set(T0 + 50 * MINUTE + 30_000);
    sign_n(&server, "c", "c2", 1, json!({})).await;

    let path = |window: &str| format!("/v1/petitions?sort=trending&window={window}");
    let hour = get_json(&server, "/v1/petitions?sort=trending").await;
    assert_eq!(hour["window"], "1h", "the default window");
    assert_eq!(
        trending_of(&hour),
        growth(&[("a", 5), ("c", 3), ("b", 2), ("d", 2)]),
        "most first, ties by id, petitions that did not grow left out"
    );
    assert_eq!(hour["petitions"][0]["count"], 5, "the usual petition JSON");
    assert_eq!(
        countries_of(&hour["petitions"][0]["countries"]),
        owned(&[("GB", 5)])
    );
    let sixty = get_json(&server, &path("60m")).await;
    assert_eq!(sixty["window"], "1h", "60m is written 1h");
    assert_eq!(trending_of(&sixty), trending_of(&hour));
    // 21 whole minutes up to 00:50 start at 00:30; 20 start at 00:31.
    let since_30 = get_json(&server, &path("21m")).await;
    assert_eq!(since_30["window"], "21m");
    assert_eq!(
        trending_of(&since_30),
        growth(&[("c", 3), ("b", 2), ("d", 2)])
    );
    let since_31 = get_json(&server, &path("20m")).await;
    assert_eq!(trending_of(&since_31), growth(&[("c", 1)]));
    let one = get_json(&server, &path("1m")).await;
    assert_eq!(
        trending_of(&one),
        growth(&[("c", 1)]),
        "the current minute counts"
    );
    let two = get_json(&server, &format!("{}&limit=2", path("48h"))).await;
    assert_eq!(two["window"], "48h");
    assert_eq!(trending_of(&two), growth(&[("a", 5), ("c", 3)]));

    // The list is at most trending_refresh (1 s) old: a signature shows once that has passed.
    sign_n(&server, "b", "b2", 2, json!({})).await;
    let cached = get_json(&server, &path("21m")).await;
    assert_eq!(
        trending_of(&cached),
        growth(&[("c", 3), ("b", 2), ("d", 2)])
    );
    clock.advance(Duration::from_millis(1_000));
    let refreshed = get_json(&server, &path("21m")).await;
    assert_eq!(
        trending_of(&refreshed),
        growth(&[("b", 4), ("c", 3), ("d", 2)])
    );

    // An hour later nothing grew in the last hour.
    clock.set(T0 + 111 * MINUTE);
    let later = get_json(&server, &path("1h")).await;
    assert_eq!(trending_of(&later), growth(&[]));
    server.stop().await;
}
