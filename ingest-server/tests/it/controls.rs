//! Abuse controls over HTTP: who a change records, lists in effect at once on both signing
//! routes, and what paused and read-only answer.

use hyper::Method;
use sha2::{Digest, Sha256};

use crate::support::{TestServer, ADMIN, INGEST};

/// `admin:` and the first 8 hex digits of the admin key's SHA-256.
fn admin_name() -> String {
    let key = ADMIN.strip_prefix("Bearer ").expect("bearer");
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("admin:{hex}")
}

async fn put_switches(server: &TestServer, body: &str) -> serde_json::Value {
    let reply = server
        .send(
            Method::PUT,
            "/v1/admin/switches",
            &[
                ("authorization", ADMIN),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_record_who_made_them_and_when() {
    let server = TestServer::start(|_| {}).await;
    server.register("p", "{}").await;
    let added = server
        .post_json(
            "/v1/admin/blocks",
            ADMIN,
            r#"{"kind":"email_domain","value":"*.Spam.Test"}"#,
        )
        .await;
    assert_eq!(added.status, 201, "{added:?}");
    let added = added.json();
    assert_eq!(added["value"], "*.spam.test");
    assert_eq!(added["kind"], "email_domain");
    assert_eq!(added["added"]["by"], admin_name().as_str());
    assert!(added["added"]["at"].as_str().expect("at").ends_with('Z'));
    let list = server.get_admin("/v1/admin/blocks").await.json();
    assert_eq!(list["entries"], serde_json::json!([added]));
    let switches = put_switches(&server, r#"{"paused":true}"#).await;
    assert_eq!(switches["paused"], true);
    assert_eq!(switches["read_only"], false);
    assert_eq!(switches["changed"]["by"], admin_name().as_str());
    put_switches(&server, r#"{"paused":false}"#).await;
    let paused = server
        .send(
            Method::POST,
            "/v1/petitions/p/pause",
            &[("authorization", ADMIN)],
            "",
        )
        .await;
    assert_eq!(paused.status, 200);
    assert_eq!(paused.json()["paused"]["by"], admin_name().as_str());
    assert_eq!(
        server.petition("p").await["paused"]["by"],
        admin_name().as_str(),
        "the petition's view shows it at once"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_applies_at_once_to_single_and_batch_signatures() {
    let server = TestServer::start(|_| {}).await;
    server.register("p", "{}").await;
    let batch = |emails: &[&str]| {
        emails
            .iter()
            .map(|e| format!("{{\"petition\":\"p\",\"email\":\"{e}\",\"ip\":\"2001:db8::7\"}}\n"))
            .collect::<String>()
    };
    let ndjson = [
        ("authorization", INGEST),
        ("content-type", "application/x-ndjson"),
    ];
    let reply = server
        .send(
            Method::POST,
            "/v1/signatures:batch",
            &ndjson,
            &batch(&["a@b.org"]),
        )
        .await;
    assert!(
        String::from_utf8_lossy(&reply.body).contains("accepted"),
        "{reply:?}"
    );
    let added = server
        .post_json(
            "/v1/admin/blocks",
            ADMIN,
            r#"{"kind":"ip","value":"2001:db8::/64"}"#,
        )
        .await;
    assert_eq!(added.status, 201);
    let reply = server
        .send(
            Method::POST,
            "/v1/signatures:batch",
            &ndjson,
            &batch(&["c@b.org", "a@b.org"]),
        )
        .await;
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&reply.body)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2, "{reply:?}");
    for line in &lines {
        assert_eq!(line["code"], "blocked", "{line}");
    }
    let single = server
        .post_json(
            "/v1/petitions/p/signatures",
            INGEST,
            r#"{"email":"d@b.org","ip":"2001:db8::1:2"}"#,
        )
        .await;
    assert_eq!(single.status, 403);
    assert_eq!(single.code(), "blocked");
    assert!(single.header("retry-after").is_none());
    assert_eq!(
        server.petition("p").await["count"],
        1,
        "nothing blocked was counted"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_and_read_only_answer_503_with_retry_after_and_reads_go_on() {
    let server = TestServer::start(|_| {}).await;
    server.register("p", "{}").await;
    server.register("q", "{}").await;
    assert_eq!(server.sign("p", "a@b.org").await.status, 201);
    let pause = server
        .send(
            Method::POST,
            "/v1/petitions/q/pause",
            &[("authorization", ADMIN)],
            "",
        )
        .await;
    assert_eq!(pause.status, 200);
    let refused = server.sign("q", "a@b.org").await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (503, "signing_paused")
    );
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        server.sign("p", "b@b.org").await.status,
        201,
        "only q is paused"
    );

    put_switches(&server, r#"{"read_only":true}"#).await;
    let refused = server.sign("p", "c@b.org").await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (503, "read_only")
    );
    assert!(refused.header("retry-after").is_some());
    let refused = server
        .send(
            Method::PUT,
            "/v1/petitions/r",
            &[
                ("authorization", ADMIN),
                ("content-type", "application/json"),
            ],
            "{}",
        )
        .await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (503, "read_only")
    );
    assert_eq!(server.petition("p").await["count"], 2, "reads go on");
    let switches = server.get_admin("/v1/admin/switches").await.json();
    assert_eq!(switches["read_only"], true);

    put_switches(&server, r#"{"read_only":false}"#).await;
    assert_eq!(server.sign("p", "c@b.org").await.status, 201);
    let resumed = server
        .send(
            Method::POST,
            "/v1/petitions/q/resume",
            &[("authorization", ADMIN)],
            "",
        )
        .await;
    assert_eq!(resumed.json()["paused"], serde_json::Value::Null);
    assert_eq!(server.sign("q", "a@b.org").await.status, 201);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_over_its_limit_gets_429_with_retry_after_unless_allowed() {
    let server = TestServer::start(|_| {}).await;
    server.register("p", "{}").await;
    server.register("q", "{}").await;
    let sign = |petition: &'static str, email: &'static str, ip: &'static str| {
        let body = format!(r#"{{"email":"{email}","ip":"{ip}"}}"#);
        let path = format!("/v1/petitions/{petition}/signatures");
        let server = &server;
        async move { server.post_json(&path, INGEST, &body).await }
    };
    assert_eq!(sign("p", "a@b.org", "203.0.113.1").await.status, 201);
    let limited = sign("p", "b@b.org", "203.0.113.1").await;
    assert_eq!(
        (limited.status, limited.code().as_str()),
        (429, "ip_rate_limited")
    );
    let wait: u32 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((59..=60).contains(&wait), "{wait}");
    assert_eq!(
        sign("q", "b@b.org", "203.0.113.1").await.status,
        201,
        "per petition"
    );
    assert_eq!(
        sign("p", "c@b.org", "203.0.113.2").await.status,
        201,
        "per address"
    );
    let allowed = server
        .post_json(
            "/v1/admin/allows",
            ADMIN,
            r#"{"kind":"ip","value":"203.0.113.0/24"}"#,
        )
        .await;
    assert_eq!(allowed.status, 201);
    for email in ["d@b.org", "e@b.org", "f@b.org"] {
        assert_eq!(sign("p", email, "203.0.113.1").await.status, 201);
    }
    assert_eq!(server.petition("p").await["count"], 5);
    server.stop().await;
}

/// Trending sources over HTTP: counts equal to what was sent, the window and limit checked,
/// admin only; a source alert in the feed names its source to an admin key only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_count_what_was_sent_and_alerts_name_them_to_admins_only() {
    let server = TestServer::start_with(
        |config| {
            config.rate_limits = None;
            config.sources = Some(engine::SourcesConfig {
                alert_threshold: Some(3),
                ..engine::SourcesConfig::DEFAULT
            });
        },
        |_| {},
    )
    .await;
    server.register("p", "{}").await;
    let sent = [
        ("a1@Example.org", "203.0.113.7"),
        ("a2@example.org", "203.0.113.7"),
        ("a3@example.org", "203.0.113.8"),
        ("a4@other.example", "2001:db8:5:1::9"),
        ("a1@example.org", "192.0.2.1"),
    ];
    for (n, (email, ip)) in sent.iter().enumerate() {
        let body = format!(r#"{{"email":"{email}","ip":"{ip}"}}"#);
        let reply = server
            .post_json("/v1/petitions/p/signatures", INGEST, &body)
            .await;
        // The last one repeats the first signer: a duplicate, not a source of signatures.
        assert_eq!(reply.status, if n == 4 { 200 } else { 201 }, "{reply:?}");
    }
    let reply = server
        .get_admin("/v1/petitions/p/sources?window=1h&hour=current")
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let top = reply.json();
    assert_eq!(
        (&top["window"], &top["hour"]),
        (&"1h".into(), &"current".into())
    );
    assert_eq!(top["alert_threshold"], 3);
    let list = |kind: &str| -> Vec<(String, u64, u64)> {
        top[kind]
            .as_array()
            .expect("a list")
            .iter()
            .map(|c| {
                (
                    c["source"].as_str().expect("source").to_owned(),
                    c["count"].as_u64().expect("count"),
                    c["error"].as_u64().expect("error"),
                )
            })
            .collect()
    };
    assert_eq!(
        list("ips"),
        [
            ("203.0.113.7".to_owned(), 2, 0),
            ("203.0.113.8".to_owned(), 1, 0),
            ("2001:db8:5:1::9".to_owned(), 1, 0)
        ]
    );
    assert_eq!(
        list("networks"),
        [
            ("203.0.113.0/24".to_owned(), 3, 0),
            ("2001:db8:5::/48".to_owned(), 1, 0)
        ]
    );
    assert_eq!(
        list("email_domains"),
        [
            ("example.org".to_owned(), 3, 0),
            ("other.example".to_owned(), 1, 0)
        ]
    );
    let reply = server.get_admin("/v1/petitions/p/sources?limit=1").await;
    assert_eq!(reply.json()["ips"].as_array().map(Vec::len), Some(1));
    let reply = server
        .get_admin("/v1/petitions/p/sources?hour=previous")
        .await;
    assert_eq!(
        reply.json()["ips"],
        serde_json::json!([]),
        "nothing last hour"
    );
    for (path, auth, status) in [
        ("/v1/petitions/p/sources", INGEST, 403),
        ("/v1/petitions/p/sources", "", 401),
        ("/v1/petitions/p/sources?window=2h", ADMIN, 400),
        ("/v1/petitions/p/sources?hour=next", ADMIN, 400),
        ("/v1/petitions/p/sources?limit=0", ADMIN, 400),
        ("/v1/petitions/p/sources?top=1", ADMIN, 400),
        ("/v1/petitions/nope/sources", ADMIN, 404),
    ] {
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            Vec::new()
        } else {
            vec![("authorization", auth)]
        };
        let reply = server.send(Method::GET, path, &headers, "").await;
        assert_eq!(reply.status, status, "{path}: {reply:?}");
    }
    // The third signature from 203.0.113.0/24 and example.org made one alert each.
    let feed = |auth: &'static str| {
        let server = &server;
        async move {
            let headers: Vec<(&str, &str)> = if auth.is_empty() {
                Vec::new()
            } else {
                vec![("authorization", auth)]
            };
            let reply = server
                .send(Method::GET, "/v1/events?after=0", &headers, "")
                .await;
            assert_eq!(reply.status, 200);
            reply.json()["events"]
                .as_array()
                .expect("events")
                .iter()
                .filter(|e| e["type"] == "source_alert")
                .cloned()
                .collect::<Vec<_>>()
        }
    };
    let admin = feed(ADMIN).await;
    let kinds: Vec<(&str, &str, u64)> = admin
        .iter()
        .map(|e| {
            (
                e["source_kind"].as_str().expect("kind"),
                e["source"].as_str().expect("an admin sees the source"),
                e["count"].as_u64().expect("count"),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("network", "203.0.113.0/24", 3),
            ("email_domain", "example.org", 3)
        ]
    );
    for auth in ["", INGEST] {
        let public = feed(auth).await;
        assert_eq!(public.len(), 2);
        for event in &public {
            assert!(event.get("source").is_none(), "{event}");
            assert_eq!(event["threshold"], 3);
        }
    }
}
