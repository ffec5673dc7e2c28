//! The OpenAPI document and the running server must agree: the same routes, and every answer
//! the server gives has a documented status and exactly the documented fields.

use std::collections::BTreeSet;

use hyper::Method;
use ingest_server::{OPENAPI_JSON, ROUTES};
use serde_json::Value;

use crate::support::{Reply, TestServer, ADMIN, INGEST};

fn resolve<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    while let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        let path = reference.strip_prefix("#/").expect("local $ref");
        node = path.split('/').fold(root, |at, key| &at[key]);
        assert!(!node.is_null(), "dangling $ref {reference}");
    }
    node
}

/// Checks `value` against a (small subset of) JSON Schema: types, nullable, enum, required,
/// string patterns of the form `^[...]{n}$`, number bounds, and no properties beyond those
/// listed when `additionalProperties` is false.
fn validate(root: &Value, schema: &Value, value: &Value, at: &str) {
    let schema = resolve(root, schema);
    if value.is_null() {
        assert_eq!(
            schema["nullable"],
            Value::Bool(true),
            "{at}: null where not nullable"
        );
        return;
    }
    if let Some(options) = schema["enum"].as_array() {
        assert!(options.contains(value), "{at}: {value} not in {options:?}");
    }
    match schema["type"].as_str() {
        Some("object") => {
            let object = value
                .as_object()
                .unwrap_or_else(|| panic!("{at}: not an object: {value}"));
            let properties = schema["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap();
                assert!(
                    object.contains_key(name),
                    "{at}: documented field {name} missing in {value}"
                );
            }
            for (name, field) in object {
                match properties.get(name) {
                    Some(field_schema) => {
                        validate(root, field_schema, field, &format!("{at}.{name}"))
                    }
                    None => assert!(
                        schema["additionalProperties"] != Value::Bool(false),
                        "{at}: field {name} is not documented"
                    ),
                }
            }
        }
        Some("array") => {
            let items = value
                .as_array()
                .unwrap_or_else(|| panic!("{at}: not an array"));
            for (n, item) in items.iter().enumerate() {
                validate(root, &schema["items"], item, &format!("{at}[{n}]"));
            }
        }
        Some("string") => {
            let text = value
                .as_str()
                .unwrap_or_else(|| panic!("{at}: not a string: {value}"));
            if let Some(pattern) = schema["pattern"].as_str() {
                check_pattern(pattern, text, at);
            }
        }
        Some("integer") => assert!(
            value.is_u64() || value.is_i64(),
            "{at}: not an integer: {value}"
        ),
        Some("number") => {
            let number = value
                .as_f64()
                .unwrap_or_else(|| panic!("{at}: not a number: {value}"));
            if let Some(minimum) = schema["minimum"].as_f64() {
                assert!(number >= minimum, "{at}: {number} < {minimum}");
            }
            if let Some(maximum) = schema["maximum"].as_f64() {
                assert!(number <= maximum, "{at}: {number} > {maximum}");
            }
        }
        Some("boolean") => assert!(value.is_boolean(), "{at}: not a boolean: {value}"),
        Some(other) => panic!("{at}: schema type {other} not handled by this test"),
        None => {}
    }
}

/// Checks `text` against the one pattern shape the document's answers use, `^[chars]{n}$`
/// (the pending token); other patterns (on requests only) are not checked.
fn check_pattern(pattern: &str, text: &str, at: &str) {
    let Some(rest) = pattern.strip_prefix("^[") else {
        return;
    };
    let Some((class, count)) = rest.split_once("]{") else {
        return;
    };
    let Some(count) = count
        .strip_suffix("}$")
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return;
    };
    let allowed = |c: char| {
        let class: Vec<char> = class.chars().collect();
        class.chunks(3).any(|range| match range {
            [low, '-', high] => (*low..=*high).contains(&c),
            _ => range.contains(&c),
        })
    };
    assert_eq!(
        text.chars().count(),
        count,
        "{at}: {text} against {pattern}"
    );
    assert!(text.chars().all(allowed), "{at}: {text} against {pattern}");
}

/// Checks one answer against the document: documented status, documented body.
fn check(root: &Value, method: &str, template: &str, reply: &Reply) {
    let operation = &root["paths"][template][method.to_ascii_lowercase()];
    assert!(
        !operation.is_null(),
        "{method} {template} is not documented"
    );
    let documented = &operation["responses"][reply.status.to_string()];
    assert!(
        !documented.is_null(),
        "{method} {template} answered undocumented {}",
        reply.status
    );
    let documented = resolve(root, documented);
    let Some(content) = documented["content"].as_object() else {
        assert!(
            reply.body.is_empty(),
            "{method} {template} {}: undocumented body",
            reply.status
        );
        return;
    };
    let content_type = reply.header("content-type").unwrap_or("");
    let essence = content_type.split(';').next().unwrap().trim();
    let media = content.get(essence).unwrap_or_else(|| {
        panic!(
            "{method} {template} {}: content type {essence} not documented",
            reply.status
        )
    });
    let schema = &media["schema"];
    let at = format!("{method} {template} {}", reply.status);
    match essence {
        "application/json" => validate(root, schema, &reply.json(), &at),
        "application/x-ndjson" => {
            for line in String::from_utf8_lossy(&reply.body).lines() {
                validate(root, schema, &serde_json::from_str(line).unwrap(), &at);
            }
        }
        _ => assert!(!reply.body.is_empty()),
    }
}

/// Sends requests whose bodies come from earlier answers, checks each answer against the
/// document and notes its route as exercised.
struct Lifecycle<'a> {
    server: &'a TestServer,
    root: &'a Value,
    exercised: &'a mut BTreeSet<(String, String)>,
}

impl Lifecycle<'_> {
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        template: &str,
        auth: &str,
        body: &str,
    ) -> Reply {
        let content_type = if template == "/v1/signatures:batch" {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        let mut headers = vec![("content-type", content_type)];
        if !auth.is_empty() {
            headers.push(("authorization", auth));
        }
        let reply = self.server.send(method.clone(), path, &headers, body).await;
        check(self.root, method.as_str(), template, &reply);
        self.exercised
            .insert((method.to_string(), template.to_string()));
        reply
    }
}

#[test]
fn document_lists_exactly_the_server_routes() {
    let root: Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON");
    assert!(root["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, item) in root["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, served,
        "routes in the document vs routes the server matches"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_document() {
    let root: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    let server = TestServer::start(|_| {}).await;
    let json = ("content-type", "application/json");
    let ndjson = ("content-type", "application/x-ndjson");
    type Call<'a> = (
        Method,
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        &'a str,
        u16,
    );
    let calls: Vec<Call> = vec![
        (Method::PUT, "/v1/petitions/p", "/v1/petitions/{id}", vec![("authorization", ADMIN), json], r#"{"thresholds":[1]}"#, 201),
        (Method::PUT, "/v1/petitions/p", "/v1/petitions/{id}", vec![("authorization", ADMIN), json], r#"{"deadline":"2099-01-01T00:00:00Z"}"#, 200),
        (Method::PUT, "/v1/petitions/p", "/v1/petitions/{id}", vec![("authorization", INGEST), json], "{}", 403),
        (Method::PUT, "/v1/petitions/q", "/v1/petitions/{id}", vec![("authorization", ADMIN), json], r#"{"thresholds":[0]}"#, 422),
        (Method::PUT, "/v1/petitions/q", "/v1/petitions/{id}", vec![("authorization", ADMIN), json], r#"{"validation":"sometimes"}"#, 422),
        (Method::PUT, "/v1/petitions/e", "/v1/petitions/{id}", vec![("authorization", ADMIN), json], r#"{"validation":"email","thresholds":[1]}"#, 201),
        (Method::POST, "/v1/petitions/p/signatures", "/v1/petitions/{id}/signatures", vec![("authorization", INGEST), json], r#"{"email":"a@b.org","name":"A","postcode":"SW1A 1AA","country":"GB","region":"E14000639","ip":"192.0.2.1"}"#, 201),
        (Method::POST, "/v1/petitions/p/signatures", "/v1/petitions/{id}/signatures", vec![("authorization", INGEST), json], r#"{"email":"r@b.org","region":"E14000639"}"#, 422),
        (Method::POST, "/v1/petitions/p/signatures", "/v1/petitions/{id}/signatures", vec![("authorization", INGEST), json], r#"{"email":"a@b.org"}"#, 200),
        (Method::POST, "/v1/petitions/p/signatures", "/v1/petitions/{id}/signatures", vec![("authorization", INGEST), json], r#"{"email":"bad"}"#, 422),
        (Method::POST, "/v1/petitions/p/signatures", "/v1/petitions/{id}/signatures", vec![json], r#"{"email":"c@b.org"}"#, 401),
        (Method::POST, "/v1/petitions/x/signatures", "/v1/petitions/{id}/signatures", vec![("authorization", INGEST), json], r#"{"email":"c@b.org"}"#, 404),
        (Method::POST, "/v1/signatures:batch", "/v1/signatures:batch", vec![("authorization", INGEST), ndjson], "{\"petition\":\"p\",\"email\":\"d@b.org\"}\n{\"petition\":\"p\",\"email\":\"d@b.org\"}\nnope\n", 200),
        (Method::GET, "/v1/petitions/p", "/v1/petitions/{id}", vec![], "", 200),
        (Method::GET, "/v1/petitions/x", "/v1/petitions/{id}", vec![], "", 404),
        (Method::GET, "/v1/petitions?sort=count&limit=5", "/v1/petitions", vec![], "", 200),
        (Method::GET, "/v1/petitions?limit=5000", "/v1/petitions", vec![], "", 400),
        (Method::GET, "/v1/petitions?sort=trending&window=15m&limit=5", "/v1/petitions", vec![], "", 200),
        (Method::GET, "/v1/petitions?sort=trending&window=3d", "/v1/petitions", vec![], "", 400),
        (Method::GET, "/v1/petitions/p/countries", "/v1/petitions/{id}/countries", vec![], "", 200),
        (Method::GET, "/v1/petitions/p/countries?limit=0", "/v1/petitions/{id}/countries", vec![], "", 400),
        (Method::GET, "/v1/petitions/x/countries", "/v1/petitions/{id}/countries", vec![], "", 404),
        (Method::GET, "/v1/petitions/p/regions", "/v1/petitions/{id}/regions", vec![], "", 200),
        (Method::GET, "/v1/petitions/p/regions?country=gb&limit=1", "/v1/petitions/{id}/regions", vec![], "", 200),
        (Method::GET, "/v1/petitions/p/regions?country=UK", "/v1/petitions/{id}/regions", vec![], "", 400),
        (Method::GET, "/v1/petitions/x/regions", "/v1/petitions/{id}/regions", vec![], "", 404),
        (Method::GET, "/v1/petitions/p/history", "/v1/petitions/{id}/history", vec![], "", 200),
        (Method::GET, "/v1/petitions/p/history?resolution=hour", "/v1/petitions/{id}/history", vec![], "", 200),
        (Method::GET, "/v1/petitions/p/history?resolution=day", "/v1/petitions/{id}/history", vec![], "", 400),
        (Method::GET, "/v1/petitions/x/history", "/v1/petitions/{id}/history", vec![], "", 404),
        (Method::GET, "/v1/milestones?after=0", "/v1/milestones", vec![], "", 200),
        (Method::POST, "/v1/petitions/p/close", "/v1/petitions/{id}/close", vec![("authorization", ADMIN)], "", 200),
        (Method::POST, "/v1/petitions/x/close", "/v1/petitions/{id}/close", vec![("authorization", ADMIN)], "", 404),
        (Method::GET, "/metrics", "/metrics", vec![], "", 200),
        (Method::GET, "/livez", "/livez", vec![], "", 200),
        (Method::GET, "/readyz", "/readyz", vec![], "", 200),
        (Method::GET, "/openapi.json", "/openapi.json", vec![], "", 200),
    ];
    let mut exercised = BTreeSet::new();
    for (method, path, template, headers, body, status) in calls {
        let reply = server.send(method.clone(), path, &headers, body).await;
        assert_eq!(reply.status, status, "{method} {path}: {reply:?}");
        check(&root, method.as_str(), template, &reply);
        exercised.insert((method.to_string(), template.to_string()));
    }
    let milestones = server
        .send(Method::GET, "/v1/milestones", &[], "")
        .await
        .json();
    assert_eq!(
        milestones["milestones"].as_array().unwrap().len(),
        1,
        "the first signature crossed 1"
    );
    // The lifecycle: calls whose bodies depend on earlier answers (tokens, job ids).
    let mut lifecycle = Lifecycle {
        server: &server,
        root: &root,
        exercised: &mut exercised,
    };
    let sign = "/v1/petitions/{id}/signatures";
    let pending = lifecycle
        .call(
            Method::POST,
            "/v1/petitions/e/signatures",
            sign,
            INGEST,
            r#"{"email":"v@b.org"}"#,
        )
        .await;
    assert_eq!(pending.status, 202, "{pending:?}");
    let token = pending.json()["token"].as_str().unwrap().to_string();
    let validations = "/v1/validations";
    let token_body = serde_json::json!({ "token": token }).to_string();
    let forged = serde_json::json!({ "token": "0".repeat(72) }).to_string();
    for (body, status) in [
        (token_body.as_str(), 200),
        (token_body.as_str(), 200),
        (r#"{"token":"abc"}"#, 422),
        ("{", 400),
        (forged.as_str(), 404),
    ] {
        let reply = lifecycle
            .call(Method::POST, validations, validations, INGEST, body)
            .await;
        assert_eq!(reply.status, status, "{body}: {reply:?}");
    }
    let refused = lifecycle
        .call(Method::POST, validations, validations, "", &token_body)
        .await;
    assert_eq!(refused.status, 401);
    let batch = "/v1/signatures:batch";
    let lines = format!(
        "{}\n{}\n{}\n",
        serde_json::json!({"validate": token}),
        serde_json::json!({"petition": "e", "email": "w@b.org"}),
        serde_json::json!({"validate": "x"}),
    );
    let reply = lifecycle
        .call(Method::POST, batch, batch, INGEST, &lines)
        .await;
    assert_eq!(reply.status, 200);
    let invalidations = "/v1/invalidations";
    for (auth, body, status) in [
        (
            ADMIN,
            r#"{"petition":"e","criteria":{"email_domain":"b.org"},"dry_run":true}"#,
            200,
        ),
        (ADMIN, r#"{"criteria":{"ip":"10.0.0.0/33"}}"#, 422),
        (
            ADMIN,
            r#"{"petition":"x","criteria":{"email_domain":"b.org"}}"#,
            404,
        ),
        (ADMIN, "{", 400),
        (INGEST, "{}", 403),
        (
            ADMIN,
            r#"{"petition":"e","criteria":{"email_domain":"b.org","received_after":"2001-01-01T00:00:00Z"}}"#,
            202,
        ),
    ] {
        let reply = lifecycle
            .call(Method::POST, invalidations, invalidations, auth, body)
            .await;
        assert_eq!(reply.status, status, "{body}: {reply:?}");
    }
    let job = server.finished_job(1).await;
    assert_eq!(
        job["invalidated"], 2,
        "v@b.org validated, w@b.org pending: {job}"
    );
    let one = "/v1/invalidations/{id}";
    let cancel = "/v1/invalidations/{id}/cancel";
    for (method, path, template, auth, status) in [
        (Method::GET, "/v1/invalidations/1", one, ADMIN, 200),
        (Method::GET, "/v1/invalidations/9", one, ADMIN, 404),
        (Method::GET, "/v1/invalidations/1", one, INGEST, 403),
        (Method::GET, invalidations, invalidations, ADMIN, 200),
        (Method::GET, invalidations, invalidations, "", 401),
        (
            Method::POST,
            "/v1/invalidations/1/cancel",
            cancel,
            ADMIN,
            409,
        ),
        (
            Method::POST,
            "/v1/invalidations/9/cancel",
            cancel,
            ADMIN,
            404,
        ),
    ] {
        let reply = lifecycle.call(method, path, template, auth, "").await;
        assert_eq!(reply.status, status, "{path}: {reply:?}");
    }
    let feed = lifecycle
        .call(Method::GET, "/v1/milestones", "/v1/milestones", "", "")
        .await
        .json();
    let types: Vec<&str> = feed["milestones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "threshold_crossed",
            "threshold_crossed",
            "threshold_regressed"
        ],
        "p crossed 1; e crossed 1 when v@b.org was validated, then fell back below it"
    );
    let view = lifecycle
        .call(Method::GET, "/v1/petitions/e", "/v1/petitions/{id}", "", "")
        .await
        .json();
    assert_eq!(
        (
            &view["count"],
            &view["pending_count"],
            &view["invalidated_count"]
        ),
        (&Value::from(0), &Value::from(0), &Value::from(2))
    );

    // Responses, the events feed, webhooks.
    let respond = "/v1/petitions/{id}/response";
    for (path, auth, body, status) in [
        (
            "/v1/petitions/p/response",
            ADMIN,
            r#"{"summary":"We will debate it.","url":"https://example.org/r/1"}"#,
            200,
        ),
        ("/v1/petitions/p/response", ADMIN, r#"{"summary":" "}"#, 422),
        ("/v1/petitions/p/response", ADMIN, "{", 400),
        ("/v1/petitions/x/response", ADMIN, r#"{"summary":"s"}"#, 404),
        (
            "/v1/petitions/p/response",
            INGEST,
            r#"{"summary":"s"}"#,
            403,
        ),
    ] {
        let reply = lifecycle.call(Method::PUT, path, respond, auth, body).await;
        assert_eq!(reply.status, status, "{path} {body}: {reply:?}");
    }
    let list = "/v1/petitions";
    for (path, status) in [
        ("/v1/petitions?state=awaiting_response&sort=due", 200),
        ("/v1/petitions?sort=due", 400),
        ("/v1/petitions?state=open", 400),
    ] {
        let reply = lifecycle.call(Method::GET, path, list, "", "").await;
        assert_eq!(reply.status, status, "{path}: {reply:?}");
    }
    let events = "/v1/events";
    let feed = lifecycle
        .call(Method::GET, "/v1/events?after=0&limit=1000", events, "", "")
        .await;
    assert_eq!(feed.status, 200);
    let types: Vec<String> = feed.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert!(
        types.contains(&"response_due".to_string())
            && types.contains(&"petition_closed".to_string())
            && types.last().map(String::as_str) == Some("responded"),
        "{types:?}"
    );
    let bad = lifecycle
        .call(Method::GET, "/v1/events?limit=0", events, "", "")
        .await;
    assert_eq!(bad.status, 400);
    let bad = lifecycle
        .call(
            Method::GET,
            "/v1/events/stream?after=x",
            "/v1/events/stream",
            "",
            "",
        )
        .await;
    assert_eq!(bad.status, 400);
    let hook = "/v1/webhooks/{id}";
    for (method, path, auth, body, status) in [
        (
            Method::PUT,
            "/v1/webhooks/h1",
            ADMIN,
            r#"{"url":"http://hooks.example.invalid/p","events":["responded"]}"#,
            201,
        ),
        (
            Method::PUT,
            "/v1/webhooks/h1",
            ADMIN,
            r#"{"url":"http://hooks.example.invalid/q"}"#,
            200,
        ),
        (
            Method::PUT,
            "/v1/webhooks/h2",
            ADMIN,
            r#"{"url":"http://127.0.0.1:9/p"}"#,
            422,
        ),
        (
            Method::PUT,
            "/v1/webhooks/h2",
            ADMIN,
            r#"{"url":"http://hooks.example.invalid/","events":["nope"]}"#,
            422,
        ),
        (Method::PUT, "/v1/webhooks/h2", ADMIN, "{", 400),
        (Method::PUT, "/v1/webhooks/h2", INGEST, "{}", 403),
        (Method::GET, "/v1/webhooks/h1", ADMIN, "", 200),
        (Method::GET, "/v1/webhooks/h2", ADMIN, "", 404),
        (Method::DELETE, "/v1/webhooks/h1", ADMIN, "", 204),
        (Method::DELETE, "/v1/webhooks/h1", ADMIN, "", 404),
        (Method::DELETE, "/v1/webhooks/h1", "", "", 401),
    ] {
        let reply = lifecycle.call(method, path, hook, auth, body).await;
        assert_eq!(reply.status, status, "{path} {body}: {reply:?}");
    }
    let hooks = lifecycle
        .call(Method::GET, "/v1/webhooks", "/v1/webhooks", ADMIN, "")
        .await;
    assert_eq!(hooks.status, 200);

    // Abuse controls: the lists, the switches, a petition's pause, and what they refuse.
    let put = "/v1/petitions/{id}";
    let reply = lifecycle
        .call(Method::PUT, "/v1/petitions/g", put, ADMIN, "{}")
        .await;
    assert_eq!(reply.status, 201);
    let (blocks, block) = ("/v1/admin/blocks", "/v1/admin/blocks/{id}");
    let (allows, allow) = ("/v1/admin/allows", "/v1/admin/allows/{id}");
    let switches = "/v1/admin/switches";
    let (pause, resume) = ("/v1/petitions/{id}/pause", "/v1/petitions/{id}/resume");
    let sources = "/v1/petitions/{id}/sources";
    let from_blocked = r#"{"email":"s1@b.org","ip":"198.51.100.20"}"#;
    let from_elsewhere = r#"{"email":"s2@b.org","ip":"192.0.2.20"}"#;
    for (method, path, template, auth, body, status) in [
        (
            Method::POST,
            blocks,
            blocks,
            ADMIN,
            r#"{"kind":"ip","value":"198.51.100.0/24"}"#,
            201,
        ),
        (
            Method::POST,
            blocks,
            blocks,
            ADMIN,
            r#"{"kind":"ip","value":"198.51.100.9/24"}"#,
            409,
        ),
        (
            Method::POST,
            blocks,
            blocks,
            ADMIN,
            r#"{"kind":"ip","value":"nope"}"#,
            422,
        ),
        (
            Method::POST,
            blocks,
            blocks,
            ADMIN,
            r#"{"kind":"phone","value":"1"}"#,
            422,
        ),
        (Method::POST, blocks, blocks, ADMIN, "{", 400),
        (Method::POST, blocks, blocks, INGEST, "{}", 403),
        (Method::GET, blocks, blocks, ADMIN, "", 200),
        (Method::GET, blocks, blocks, "", "", 401),
        (
            Method::POST,
            "/v1/petitions/g/signatures",
            sign,
            INGEST,
            from_blocked,
            403,
        ),
        (
            Method::POST,
            "/v1/petitions/g/signatures",
            sign,
            INGEST,
            from_elsewhere,
            201,
        ),
        (
            Method::POST,
            allows,
            allows,
            ADMIN,
            r#"{"kind":"ip","value":"2001:db8::/48"}"#,
            201,
        ),
        (
            Method::POST,
            allows,
            allows,
            ADMIN,
            r#"{"kind":"email","value":"a@b.org"}"#,
            422,
        ),
        (Method::GET, allows, allows, ADMIN, "", 200),
        (Method::DELETE, "/v1/admin/allows/1", allow, ADMIN, "", 404),
        (Method::DELETE, "/v1/admin/allows/2", allow, ADMIN, "", 200),
        (Method::DELETE, "/v1/admin/allows/2", allow, ADMIN, "", 404),
        (Method::DELETE, "/v1/admin/blocks/1", block, INGEST, "", 403),
        (Method::DELETE, "/v1/admin/blocks/1", block, ADMIN, "", 200),
        (Method::DELETE, "/v1/admin/blocks/x", block, ADMIN, "", 404),
        (
            Method::POST,
            "/v1/petitions/g/signatures",
            sign,
            INGEST,
            from_blocked,
            201,
        ),
        (Method::GET, switches, switches, ADMIN, "", 200),
        (
            Method::PUT,
            switches,
            switches,
            ADMIN,
            r#"{"paused":true}"#,
            200,
        ),
        (
            Method::POST,
            "/v1/petitions/g/signatures",
            sign,
            INGEST,
            r#"{"email":"s3@b.org"}"#,
            503,
        ),
        (
            Method::PUT,
            switches,
            switches,
            ADMIN,
            r#"{"paused":"yes"}"#,
            422,
        ),
        (
            Method::PUT,
            switches,
            switches,
            ADMIN,
            r#"{"paused":false,"read_only":true}"#,
            200,
        ),
        (Method::PUT, "/v1/petitions/g", put, ADMIN, "{}", 503),
        (
            Method::PUT,
            switches,
            switches,
            ADMIN,
            r#"{"read_only":false}"#,
            200,
        ),
        (Method::POST, "/v1/petitions/g/pause", pause, ADMIN, "", 200),
        (
            Method::POST,
            "/v1/petitions/g/signatures",
            sign,
            INGEST,
            r#"{"email":"s3@b.org"}"#,
            503,
        ),
        (Method::POST, "/v1/petitions/x/pause", pause, ADMIN, "", 404),
        (
            Method::POST,
            "/v1/petitions/g/resume",
            resume,
            INGEST,
            "",
            403,
        ),
        (
            Method::POST,
            "/v1/petitions/g/resume",
            resume,
            ADMIN,
            "",
            200,
        ),
        (
            Method::POST,
            "/v1/petitions/g/signatures",
            sign,
            INGEST,
            r#"{"email":"s3@b.org"}"#,
            201,
        ),
        (
            Method::GET,
            "/v1/petitions/g/sources?window=1h&hour=previous&limit=5",
            sources,
            ADMIN,
            "",
            200,
        ),
        (
            Method::GET,
            "/v1/petitions/g/sources",
            sources,
            INGEST,
            "",
            403,
        ),
        (Method::GET, "/v1/petitions/g/sources", sources, "", "", 401),
        (
            Method::GET,
            "/v1/petitions/g/sources?window=15m",
            sources,
            ADMIN,
            "",
            400,
        ),
        (
            Method::GET,
            "/v1/petitions/g/sources?limit=101",
            sources,
            ADMIN,
            "",
            400,
        ),
        (
            Method::GET,
            "/v1/petitions/x/sources",
            sources,
            ADMIN,
            "",
            404,
        ),
        (Method::GET, "/console", "/console", "", "", 200),
        (Method::GET, "/", "/", "", "", 307),
    ] {
        let reply = lifecycle.call(method, path, template, auth, body).await;
        assert_eq!(reply.status, status, "{path} {body}: {reply:?}");
        if template == "/" {
            assert_eq!(reply.header("location"), Some("/console"));
        }
    }

    let all: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(exercised, all, "every route is exercised");
    let served: Value = server
        .send(Method::GET, "/openapi.json", &[], "")
        .await
        .json();
    assert_eq!(served, root);
    server.stop().await;
}
