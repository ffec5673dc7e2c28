//! What operators rely on: metrics that `promtool` accepts, in the format the scraper asks
//! for; request ids; JSON and access logs; and a shutdown delay that a load balancer can
//! follow without a refused connection.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;

use crate::support::{
    exited_and_stored, ready_with_petition, start_binary, start_binary_live, tool, wait_for_line,
    Conn, KillOnPanic, TestServer, INGEST,
};

const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
     application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_come_in_the_format_asked_for() {
    let server = TestServer::start(|_| {}).await;
    assert_eq!(server.register("m", "{}").await.status, 201);
    assert_eq!(server.sign("m", "a@example.org").await.status, 201);

    // Without Accept (curl, promtool): the text format 0.0.4.
    let text = server.send(Method::GET, "/metrics", &[], "").await;
    assert_eq!(text.status, 200);
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let body = String::from_utf8(text.body.to_vec()).unwrap();
    for expected in [
        "# TYPE ingest_signatures_total counter\n",
        "ingest_signatures_total{outcome=\"accepted\"} 1\n",
        "# TYPE ingest_build_info gauge\n",
        "ingest_build_info{version=\"",
        "ingest_http_request_duration_seconds_bucket{le=\"+Inf\",route=\"sign\"} 1\n",
        "ingest_http_request_duration_seconds_count{route=\"petition_put\"} 1\n",
        "# TYPE process_cpu_seconds_total counter\n",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(
            body.contains(expected),
            "{expected:?} missing from:\n{body}"
        );
    }
    assert!(!body.contains("# EOF") && !body.contains("# UNIT"));

    // Prometheus's own Accept: OpenMetrics.
    let openmetrics = server
        .send(
            Method::GET,
            "/metrics",
            &[("accept", PROMETHEUS_ACCEPT)],
            "",
        )
        .await;
    assert_eq!(
        openmetrics.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let om = String::from_utf8(openmetrics.body.to_vec()).unwrap();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE ingest_signatures counter\n"));
    assert!(om.contains("# TYPE ingest_build info\n"));
    server.stop().await;

    let Some(promtool) = tool(
        "metrics_pass_promtool_and_come_in_the_format_asked_for",
        &["promtool"],
        "PROMTOOL",
        "apt-get install prometheus",
    ) else {
        return;
    };
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check metrics: {said}");
    assert_eq!(said.trim(), "", "promtool's lint findings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_or_made() {
    let server = TestServer::start(|_| {}).await;
    let given = server
        .send(Method::GET, "/livez", &[("x-request-id", "lb-7f3a:42")], "")
        .await;
    assert_eq!(given.header("x-request-id"), Some("lb-7f3a:42"));

    let is_made = |id: Option<&str>| {
        id.is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let first = server.send(Method::GET, "/v1/nothing-here", &[], "").await;
    let second = server.send(Method::GET, "/livez", &[], "").await;
    assert_eq!(first.status, 404);
    assert!(is_made(first.header("x-request-id")), "{first:?}");
    assert!(is_made(second.header("x-request-id")), "{second:?}");
    assert_ne!(first.header("x-request-id"), second.header("x-request-id"));

    // Unusable ids are replaced: too long, or with a space.
    let long = "x".repeat(129);
    for bad in [long.as_str(), "has space"] {
        let reply = server
            .send(Method::GET, "/livez", &[("x-request-id", bad)], "")
            .await;
        assert!(is_made(reply.header("x-request-id")), "{bad}: {reply:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr, logs) = start_binary(dir.path(), &["--log-format", "json", "--access-log"]);
    let _kill = KillOnPanic(child.id());
    let mut conn = Conn::open(addr).await;
    let reply = conn
        .send(
            Method::GET,
            "/v1/petitions/none",
            &[("x-request-id", "trace-1")],
            "",
        )
        .await;
    assert_eq!(reply.status, 404);
    drop(conn);
    stop(child);
    let logs = logs.join().unwrap();
    let lines: Vec<serde_json::Value> = logs
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let access = lines
        .iter()
        .find(|line| line["target"] == "access" && line["request_id"] == "trace-1")
        .unwrap_or_else(|| panic!("no access line: {logs:#?}"));
    assert_eq!(access["level"], "INFO");
    assert_eq!(access["method"], "GET");
    assert_eq!(access["path"], "/v1/petitions/none");
    assert_eq!(access["route"], "petition_get");
    assert_eq!(access["status"], 404);
    assert!(access["micros"].as_u64().is_some(), "{access}");
    assert!(lines.iter().any(|line| line["listen"] == addr.to_string()));
}

/// SIGTERM, and waits for the exit: it must be clean.
fn stop(mut child: std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
}

/// With `--shutdown-delay`, a SIGTERM under load turns `/readyz` to 503 and closes each
/// connection after its answer, while new connections are still taken: clients that
/// reconnect see no refused connection and no failed request, and every acknowledged
/// signature is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delay_refuses_no_connection_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr, logs) = start_binary(dir.path(), &["--shutdown-delay", "4s"]);
    let _kill = KillOnPanic(child.id());
    ready_with_petition(addr, "p").await;

    // Load: 8 workers signing distinct signers; a worker opens a new connection whenever an
    // answer says `Connection: close`. They stop 2 s after the signal, within the delay.
    let signalled = Arc::new(AtomicBool::new(false));
    let stop_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut workers = Vec::new();
    for worker in 0..8 {
        let (signalled, stop_at) = (signalled.clone(), stop_at.clone());
        workers.push(tokio::spawn(async move {
            let (mut acked, mut closes_after_signal) = (Vec::new(), 0u32);
            let mut conn = Conn::try_open(addr).await.expect("connects before SIGTERM");
            for n in 0.. {
                if stop_at
                    .lock()
                    .unwrap()
                    .is_some_and(|at| Instant::now() >= at)
                {
                    break;
                }
                let email = format!("w{worker}-{n}@example.org");
                let reply = conn
                    .try_send(
                        Method::POST,
                        "/v1/petitions/p/signatures",
                        &[
                            ("authorization", INGEST),
                            ("content-type", "application/json"),
                        ],
                        format!(r#"{{"email":"{email}"}}"#),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("request failed (signalled: {signalled:?}): {e}"));
                assert_eq!(reply.status, 201, "{reply:?}");
                acked.push(email);
                if reply.header("connection") == Some("close") {
                    assert!(signalled.load(Ordering::Acquire), "closed before SIGTERM");
                    closes_after_signal += 1;
                    conn = Conn::try_open(addr)
                        .await
                        .unwrap_or_else(|e| panic!("connection refused during the delay: {e}"));
                }
            }
            (acked, closes_after_signal)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    signalled.store(true, Ordering::Release);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    *stop_at.lock().unwrap() = Some(Instant::now() + Duration::from_secs(2));

    // /readyz, on new connections: 503 `draining` once the signal is handled.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut probe = Conn::try_open(addr)
            .await
            .unwrap_or_else(|e| panic!("connection refused during the delay: {e}"));
        let ready = probe.send(Method::GET, "/readyz", &[], "").await;
        if ready.status == 503 {
            assert_eq!(ready.code(), "draining");
            assert_eq!(ready.header("connection"), Some("close"));
            break;
        }
        assert!(Instant::now() < deadline, "/readyz still {ready:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut acked = Vec::new();
    let mut closes = 0;
    for worker in workers {
        let (worker_acked, worker_closes) = worker.await.unwrap();
        acked.extend(worker_acked);
        closes += worker_closes;
    }
    assert!(closes >= 8, "every worker was told to close: {closes}");
    let count = exited_and_stored(child, logs, "shutting down", dir.path(), "p", &acked).await;
    assert_eq!(count, acked.len() as u64);
}

/// The store failing and coming back are logged as they happen, at error and info level: the
/// data dir on a small tmpfs (needs root, as CI runs; another user is told the test is skipped
/// and why) filled by batches until writes fail, then given room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_failing_and_recovering_are_logged() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .and_then(|uid| uid.parse::<u32>().ok());
    if let Some(uid) = uid.filter(|&uid| uid != 0) {
        eprintln!(
            "skipped: storage_failing_and_recovering_are_logged needs root to mount a tmpfs and \
             runs as uid {uid} (CI runs it as root)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("tmpfs");
    std::fs::create_dir(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=100m", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs needs root");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    // Ballast: freed later to make room again.
    let ballast = mount.join("ballast");
    std::fs::write(&ballast, vec![1u8; 64 << 20]).unwrap();

    let (child, addr, logs, lines) = start_binary_live(&mount.join("data"), &[]);
    let _kill = KillOnPanic(child.id());
    ready_with_petition(addr, "p").await;
    let mut conn = Conn::open(addr).await;
    let name = "n".repeat(200);
    let mut failing = false;
    for k in 0..200 {
        let body: Vec<String> = (0..2_000)
            .map(|i| format!(r#"{{"petition":"p","email":"{k}.{i}@example.org","name":"{name}"}}"#))
            .collect();
        let reply = conn
            .send(
                Method::POST,
                "/v1/signatures:batch",
                &[
                    ("authorization", INGEST),
                    ("content-type", "application/x-ndjson"),
                ],
                body.join("\n"),
            )
            .await;
        if reply.status == 503
            || String::from_utf8_lossy(&reply.body).contains("storage_unavailable")
        {
            failing = true;
            break;
        }
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    assert!(failing, "the tmpfs never filled up");
    let line = wait_for_line(
        &lines,
        &["ERROR", "storage failing"],
        Duration::from_secs(10),
    );
    assert!(line.contains("errors="), "{line}");

    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = conn
            .send(
                Method::POST,
                "/v1/petitions/p/signatures",
                &[
                    ("authorization", INGEST),
                    ("content-type", "application/json"),
                ],
                r#"{"email":"after@example.org"}"#,
            )
            .await;
        if reply.status == 201 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ingestion did not resume: {reply:?}"
        );
        // Polling a state change with a bound: the engine retries on its own.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_line(
        &lines,
        &["INFO", "storage healthy again"],
        Duration::from_secs(10),
    );
    drop(conn);
    stop(child);
    drop(logs.join().unwrap());
}
