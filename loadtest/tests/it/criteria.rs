//! Pass criteria (`--max-p99`, `--max-error-rate`) and their exit code, and runs without a key
//! against a server with keys off (and against one that wants a key).

use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::fake::{Controls, FakeServer, Fault, ADMIN_KEY};

/// Runs the binary with `args` on a blocking thread (the fake server runs on this runtime).
async fn loadtest(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
            .args(&args)
            .env_remove("LOADTEST_TARGET")
            .env_remove("LOADTEST_API_KEY")
            .env_remove("LOADTEST_ADMIN_KEY")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// `loadtest run` against `url`, 200/s for 300 ms over 2 connections, JSON to `json`, then
/// `extra`.
fn run(url: &str, seed: u32, json: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--target",
        url,
        "-z",
        "300ms",
        "-R",
        "200",
        "-c",
        "2",
        "-t",
        "1",
        "--petitions",
        "2",
        "--no-progress",
        "--seed",
        &seed.to_string(),
        "--json",
        json.to_str().unwrap(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_meets_its_criteria_exits_0_and_one_that_does_not_exits_3() {
    let dir = crate::scratch("criteria");
    let fast = FakeServer::start(Fault::None).await;
    // Every signature waits 20 ms: a p99 of at most 5 ms cannot be met.
    let slow = FakeServer::start(Fault::Slow {
        each: Duration::from_millis(20),
    })
    .await;
    // Signing paused: every signature is a 503, an error.
    let paused = FakeServer::start_with(
        Fault::None,
        Controls {
            paused: true,
            ..Controls::default()
        },
    )
    .await;
    let key = ["--api-key", ADMIN_KEY];
    let both = ["--max-p99", "1s", "--max-error-rate", "0.1%"];
    let (passing, too_slow, erring) = tokio::join!(
        loadtest(run(
            &fast.url(),
            61,
            &dir.join("pass.json"),
            &[&key[..], &both[..]].concat()
        )),
        loadtest(run(
            &slow.url(),
            62,
            &dir.join("slow.json"),
            &[&key[..], &["--max-p99", "5ms", "--max-error-rate", "0"]].concat()
        )),
        loadtest(run(
            &paused.url(),
            63,
            &dir.join("errors.json"),
            &[&key[..], &["--max-error-rate", "0.5"]].concat()
        )),
    );

    let stderr = String::from_utf8_lossy(&passing.stderr);
    let stdout = String::from_utf8_lossy(&passing.stdout);
    assert_eq!(passing.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("criteria   all passed"), "{stdout}");
    let report = read_json(&dir.join("pass.json"));
    let criteria = &report["criteria"];
    assert_eq!(criteria["passed"], true, "{criteria}");
    assert_eq!(criteria["checks"][0]["name"], "p99_ms");
    assert_eq!(criteria["checks"][0]["flag"], "--max-p99 1000ms");
    assert_eq!(criteria["checks"][0]["limit"], 1000.0);
    assert_eq!(
        criteria["checks"][0]["measured"],
        report["latency_ms"]["corrected"]["p99"]
    );
    assert_eq!(criteria["checks"][1]["name"], "error_rate");
    assert_eq!(criteria["checks"][1]["limit"], 0.001);
    assert_eq!(criteria["checks"][1]["measured"], 0.0);
    assert_eq!(criteria["checks"][1]["basis"], "0 errors of 60 attempts");

    // Too slow: exit 3, and the full report is still printed and written.
    let stderr = String::from_utf8_lossy(&too_slow.stderr);
    let stdout = String::from_utf8_lossy(&too_slow.stdout);
    assert_eq!(too_slow.status.code(), Some(3), "{stderr}");
    assert!(stdout.contains("criteria   FAILED (exit 3)"), "{stdout}");
    assert!(stdout.contains("p99.9") && stdout.contains("accepted (201)"));
    assert!(
        stderr.contains("loadtest: --max-p99 5ms failed: measured"),
        "{stderr}"
    );
    let report = read_json(&dir.join("slow.json"));
    // (2 connections at 20 ms a signature keep up with 100 of the 200 per second.)
    assert!(
        report["outcomes"]["accepted"].as_u64().unwrap() >= 20,
        "{report}"
    );
    let criteria = &report["criteria"];
    assert_eq!(criteria["passed"], false);
    assert_eq!(criteria["checks"][0]["passed"], false);
    assert!(criteria["checks"][0]["measured"].as_f64().unwrap() >= 20.0);
    // The error rate (0 of 60) still passed, and says so.
    assert_eq!(criteria["checks"][1]["passed"], true);

    // Half the signatures may fail, and all did: exit 3.
    let stderr = String::from_utf8_lossy(&erring.stderr);
    assert_eq!(erring.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("--max-error-rate 50% failed: measured 100% (60 errors of 60 attempts)"),
        "{stderr}"
    );
    let report = read_json(&dir.join("errors.json"));
    assert_eq!(report["criteria"]["checks"][0]["measured"], 1.0);
    assert_eq!(report["outcomes"]["unavailable"]["signing_paused"], 60);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_no_authorization_is_sent_and_a_401_says_a_key_is_needed() {
    let dir = crate::scratch("nokey");
    let open = FakeServer::start_with(
        Fault::None,
        Controls {
            open: true,
            ..Controls::default()
        },
    )
    .await;
    let keyed = FakeServer::start(Fault::None).await;
    let (on_open, registering, signing) = tokio::join!(
        loadtest(run(&open.url(), 64, &dir.join("open.json"), &[])),
        loadtest(run(&keyed.url(), 65, &dir.join("reg.json"), &[])),
        loadtest(run(
            &keyed.url(),
            66,
            &dir.join("sign.json"),
            &["--no-register", "--max-error-rate", "0"]
        )),
    );

    // Keys off: registered and signed, and not one request carried Authorization.
    let stderr = String::from_utf8_lossy(&on_open.stderr);
    assert_eq!(on_open.status.code(), Some(0), "{stderr}");
    assert_eq!(
        read_json(&dir.join("open.json"))["outcomes"]["accepted"],
        60
    );
    assert_eq!(open.petition_ids(), ["lt-64-0", "lt-64-1"]);
    assert!(open.requests() >= 62, "{}", open.requests());
    assert_eq!(open.authorized_requests(), 0);

    // A server that wants a key: registration says so, and nothing is sent.
    let stderr = String::from_utf8_lossy(&registering.stderr);
    assert_eq!(registering.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("server answered 401 unauthorized (the server wants a key and none was given: pass --admin-key"),
        "{stderr}"
    );
    // Without registration the signatures get the 401: counted, and the run says why.
    let stderr = String::from_utf8_lossy(&signing.stderr);
    assert_eq!(signing.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(
            "the server answered 401 unauthorized to 60 signatures: it needs a key; pass --api-key"
        ),
        "{stderr}"
    );
    let report = read_json(&dir.join("sign.json"));
    assert_eq!(report["outcomes"]["rejected"]["unauthorized"], 60);
    assert_eq!(keyed.authorized_requests(), 0);
    assert!(keyed.petition_ids().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
