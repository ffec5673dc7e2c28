//! The binary's flags: bad input gets a clear error and a non-zero exit.

use std::process::{Command, Output};

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .env_remove("LOADTEST_TARGET")
        .env_remove("LOADTEST_API_KEY")
        .env_remove("LOADTEST_ADMIN_KEY")
        .output()
        .unwrap()
}

/// Runs with `args`, expects exit code `code` and `needle` in stderr.
fn check(args: &[&str], code: i32, needle: &str) {
    let output = loadtest(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in:\n{stderr}"
    );
}

/// A port with nothing listening: bind, note the port, close.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    let t = "http://127.0.0.1:9";
    check(&[], 2, "Usage");
    check(&["run", "--api-key", "k"], 2, "--target");
    check(
        &["run", "--target", "https://127.0.0.1", "--api-key", "k"],
        2,
        "https is not supported",
    );
    check(
        &["run", "--target", "127.0.0.1:80", "--api-key", "k"],
        2,
        "missing scheme",
    );
    check(
        &["run", "--target", t, "--api-key", "k", "-z", "abc"],
        2,
        "not a duration",
    );
    check(
        &["run", "--target", t, "--api-key", "k", "-z", "0s"],
        2,
        "more than zero",
    );
    check(
        &["run", "--target", t, "--api-key", "k", "-R", "0"],
        2,
        "positive",
    );
    check(
        &["run", "--target", t, "--api-key", "k", "--hot-share", "1.5"],
        2,
        "between 0 and 1",
    );
    check(
        &["run", "--target", t, "--api-key", "k", "--dup-ratio=-0.1"],
        2,
        "between 0 and 1",
    );
    check(
        &["run", "--target", t, "--api-key", "k", "-c", "0"],
        2,
        "0 is not in 1..=100000",
    );
    check(
        &["run", "--target", t, "--api-key", "k", "--shape", "spiky"],
        2,
        "possible values: uniform, zipf, viral",
    );
    check(
        &["run", "--target", t, "--get", "--batch", "5"],
        2,
        "cannot be used with",
    );
    check(&["verify", "--target", t, "--ledger", "x"], 2, "--api-key");
}

#[test]
fn bad_criteria_are_refused_with_a_reason() {
    let run = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec!["run", "--target", "http://127.0.0.1:9"];
        args.extend_from_slice(extra);
        args
    };
    check(&run(&["--max-p99", "10"]), 2, "\"10\" has no unit");
    check(&run(&["--max-p99", "0ms"]), 2, "must be more than zero");
    check(&run(&["--max-p99", "fast"]), 2, "--max-p99");
    check(&run(&["--max-p99", "2h"]), 2, "has no unit");
    check(
        &run(&["--max-error-rate", "5"]),
        2,
        "(for 5 percent, write 5%)",
    );
    check(
        &run(&["--max-error-rate", "150%"]),
        2,
        "a percentage must be from 0% to 100%, not 150%",
    );
    check(
        &run(&["--max-error-rate", "few"]),
        2,
        "expected a percentage (0.1%) or a fraction (0.001)",
    );
    let help = loadtest(&["run", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in ["--max-p99 <LATENCY>", "--max-error-rate <RATE>", "exit 3"] {
        assert!(help.contains(needle), "{needle:?} not in {help}");
    }
}

#[test]
fn bad_stages_are_refused_with_a_reason() {
    let run = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec!["run", "--target", "http://127.0.0.1:9"];
        args.extend_from_slice(extra);
        args
    };
    check(&run(&["--stages", ""]), 2, "no stages");
    check(&run(&["--stages", "30s"]), 2, "a stage is DURATION:RATE");
    check(&run(&["--stages", "0s:10"]), 2, "must last more than zero");
    check(
        &run(&["--stages", "5s:-1"]),
        2,
        "0 or more signatures per second",
    );
    check(&run(&["--stages", "5s:0"]), 2, "the run would send nothing");
    for (flag, value) in [("-z", "5s"), ("-R", "100"), ("--validate-share", "0.5")] {
        check(
            &run(&["--stages", "5s:10", flag, value]),
            2,
            "cannot be used with",
        );
    }
    let help = loadtest(&["run", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "--stages <STAGES>",
        "30s:1000,1m:20000,30s:0",
        "--timeline <FILE>",
        "--hgrm <FILE>",
    ] {
        assert!(help.contains(needle), "{needle:?} not in {help}");
    }
}

#[test]
fn bad_validate_shares_are_refused_with_a_reason() {
    let run = ["run", "--target", "http://127.0.0.1:9", "--api-key", "k"];
    let check_share = |share: &str, needle: &str| {
        let flag = format!("--validate-share={share}");
        let args: Vec<&str> = run.iter().copied().chain([flag.as_str()]).collect();
        check(&args, 2, needle);
        check(&args, 2, "--validate-share");
    };
    for share in ["0", "-0.5", "1.5", "nan", "inf", "1e9"] {
        check_share(share, "must be more than 0 and at most 1");
    }
    for share in ["", "half", "30%"] {
        check_share(share, "is not a number");
    }
    check(
        &[
            "run",
            "--target",
            "http://127.0.0.1:9",
            "--get",
            "--validate-share",
            "0.5",
        ],
        2,
        "cannot be used with",
    );
    // The help says what it is for.
    let help = loadtest(&["run", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--validate-share <F>") && help.contains("validation\":\"email"),
        "{help}"
    );
}

#[test]
fn bad_event_flags_are_refused_with_a_reason() {
    let t = "http://127.0.0.1:9";
    let run = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec!["run", "--target", "http://127.0.0.1:9", "--api-key", "k"];
        args.extend_from_slice(extra);
        args
    };
    check(
        &run(&["--sse-readers", "20001"]),
        2,
        "20001 is not in 0..=20000",
    );
    check(&run(&["--sse-readers=-1"]), 2, "--sse-readers");
    check(&run(&["--threshold-step", "0"]), 2, "must be at least 1");
    check(
        &run(&["--threshold-step", "576460752303423488"]),
        2,
        "32 times it must fit in 64 bits",
    );
    check(
        &run(&["--threshold-step", "1k"]),
        2,
        "is not a whole number of signatures",
    );
    for flag in [
        &["--sse-readers", "1"][..],
        &["--webhook"],
        &["--threshold-step", "10"],
    ] {
        let mut args = vec!["run", "--target", t, "--get"];
        args.extend_from_slice(flag);
        check(&args, 2, "cannot be used with");
    }
    // The help says what they are for.
    let help = loadtest(&["run", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "--threshold-step <K>",
        "--sse-readers <N>",
        "/v1/events/stream",
        "--webhook",
        "--webhook-allow-networks 127.0.0.0/8",
    ] {
        assert!(help.contains(needle), "{needle:?} not in {help}");
    }
}

#[test]
fn bad_country_specs_are_refused_with_a_reason() {
    let t = "http://127.0.0.1:9";
    let countries = |spec: &str, needle: &str| {
        check(
            &["run", "--target", t, "--api-key", "k", "--countries", spec],
            2,
            needle,
        );
    };
    countries("UK:0.5", "the United Kingdom is GB");
    countries("GB:0.6,US:0.5", "add up to 1.1, more than 1");
    countries("GB:0.5,FR:x", "\"FR:x\": the share \"x\" is not a number");
    countries(
        "GB:0.5:0",
        "regions \"0\" must be a whole number from 1 to 100000",
    );
    countries("uniform:250", "not 250");
    countries("GB:0.5,GB:0.1", "GB is given twice");
    check(
        &["run", "--target", t, "--get", "--countries", "GB:1"],
        2,
        "cannot be used with",
    );
}

#[test]
fn bad_address_flags_are_refused_with_a_reason() {
    let t = "http://127.0.0.1:9";
    let run = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec!["run", "--target", t, "--api-key", "k"];
        args.extend_from_slice(extra);
        args
    };
    // Each flag's own values.
    check(&run(&["--ips", "0"]), 2, "must be from 1 to 16777214");
    check(&run(&["--ips", "16777215"]), 2, "not 16777215");
    check(
        &run(&["--ips", "many"]),
        2,
        "is not a whole number of addresses",
    );
    let mix = |abusers: &'static str, share: &'static str| {
        run(&["--ips", "100", "--abusers", abusers, "--abuse-share", share])
    };
    check(&mix("0", "0.2"), 2, "must be at least 1");
    check(&mix("131071", "0.2"), 2, "must be from 1 to 131070");
    for share in ["0", "1", "1.5", "nan"] {
        check(&mix("3", share), 2, "must be more than 0 and less than 1");
    }
    check(
        &run(&["--ips", "100", "--abusers", "3", "--abuse-share=-0.1"]),
        2,
        "must be more than 0 and less than 1",
    );
    check(&mix("3", "20%"), 2, "is not a number");
    // The flags that go together.
    check(
        &run(&["--abusers", "3", "--abuse-share", "0.2"]),
        2,
        "the following required arguments were not provided:\n  --ips <N>",
    );
    check(
        &run(&["--ips", "100", "--abusers", "3"]),
        2,
        "the following required arguments were not provided:\n  --abuse-share <F>",
    );
    check(
        &run(&["--ips", "100", "--abuse-share", "0.2"]),
        2,
        "the following required arguments were not provided:\n  --abusers <K>",
    );
    check(
        &["run", "--target", t, "--get", "--ips", "10"],
        2,
        "cannot be used with",
    );
    // The help says what they are for.
    let help = loadtest(&["run", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "--ips <N>",
        "--abusers <K>",
        "--abuse-share <F>",
        "10.0.0.1",
        "198.18.0.0/15",
        "ip_rate_limited",
        "Needs --ips and --abuse-share",
    ] {
        assert!(help.contains(needle), "{needle:?} not in {help}");
    }
}

#[test]
fn operating_errors_exit_1_with_a_reason() {
    let dir = crate::scratch("cli");
    let missing = dir.join("missing.tsv");
    check(
        &[
            "verify",
            "--target",
            "http://127.0.0.1:9",
            "--ledger",
            missing.to_str().unwrap(),
            "--no-resend",
        ],
        1,
        "opening ledger",
    );
    let garbled = dir.join("garbled.tsv");
    std::fs::write(&garbled, "# ok\np\te\taccepted\t-\np\te\tmaybe\t-\n").unwrap();
    check(
        &[
            "verify",
            "--target",
            "http://127.0.0.1:9",
            "--ledger",
            garbled.to_str().unwrap(),
            "--no-resend",
        ],
        1,
        "garbled.tsv:3: not a ledger line",
    );
    // Nothing listening: registration fails and says where it tried.
    check(
        &[
            "run",
            "--target",
            &closed_port(),
            "--api-key",
            "k",
            "-z",
            "1s",
            "--no-progress",
        ],
        1,
        "registering petition",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_with_an_ingest_key_says_to_pass_an_admin_key() {
    let server = crate::fake::FakeServer::start(crate::fake::Fault::None).await;
    let url = server.url();
    let output = tokio::task::spawn_blocking(move || {
        loadtest(&[
            "run",
            "--target",
            &url,
            "--api-key",
            crate::fake::INGEST_KEY,
            "-z",
            "1s",
            "--no-progress",
        ])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("403 forbidden"), "{stderr}");
    assert!(stderr.contains("--admin-key"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_and_writes_json() {
    let server = crate::fake::FakeServer::start(crate::fake::Fault::None).await;
    let dir = crate::scratch("json");
    let json = dir.join("report.json");
    let (url, json_path) = (server.url(), json.to_str().unwrap().to_owned());
    let output = tokio::task::spawn_blocking(move || {
        loadtest(&[
            "run",
            "--target",
            &url,
            "--api-key",
            crate::fake::ADMIN_KEY,
            "-z",
            "300ms",
            "-R",
            "200",
            "-c",
            "2",
            "--petitions",
            "2",
            "--seed",
            "3",
            "--json",
            &json_path,
            "--no-progress",
        ])
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("achieved") && table.contains("p99.9"),
        "{table}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["schema"], "loadtest.report.v1");
    assert_eq!(report["mode"], "open");
    assert_eq!(report["rate"]["target_per_s"], 200.0);
    assert_eq!(report["outcomes"]["accepted"], 60);
    assert!(report["latency_ms"]["corrected"]["p99_9"].is_number());
    assert_eq!(server.petition_ids(), vec!["lt-3-0", "lt-3-1"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_to_stdout_leaves_stdout_pure_json() {
    let server = crate::fake::FakeServer::start(crate::fake::Fault::None).await;
    let url = server.url();
    let output = tokio::task::spawn_blocking(move || {
        loadtest(&[
            "run",
            "--target",
            &url,
            "--api-key",
            crate::fake::ADMIN_KEY,
            "-z",
            "300ms",
            "-R",
            "200",
            "-c",
            "2",
            "--petitions",
            "2",
            "--seed",
            "4",
            "--durability-check",
            "--json",
            "-",
            "--no-progress",
        ])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{stdout}"));
    assert_eq!(report["schema"], "loadtest.report.v1");
    assert_eq!(report["outcomes"]["accepted"], 60);
    assert!(
        stderr.contains("achieved") && stderr.contains("p99.9"),
        "the table goes to stderr instead:\n{stderr}"
    );
}
