//! The ack ledger and `verify`: pass against a correct server, fail against one that loses an
//! acknowledged signature or counts one twice.

use loadtest::verify::Verdict;

use crate::fake::{FakeServer, Fault, ADMIN_KEY, INGEST_KEY};

/// Runs a load with a ledger against `server`, then verifies it.
async fn run_then_verify(server: &FakeServer, name: &str, extra: &[&str]) -> Verdict {
    let dir = crate::scratch(name);
    let ledger = dir.join("ledger.tsv");
    let ledger_text = ledger.to_str().unwrap();
    let url = server.url();
    let mut flags = vec![
        "--target",
        &url,
        "--api-key",
        INGEST_KEY,
        "--admin-key",
        ADMIN_KEY,
        "-c",
        "4",
        "-R",
        "2000",
        "-z",
        "600ms",
        "--petitions",
        "5",
        "--seed",
        "21",
        "--ledger",
        ledger_text,
        "--dup-ratio",
        "0.3",
        "--shape",
        "viral",
        "--ramp",
        "300ms",
    ];
    flags.extend_from_slice(extra);
    let args = crate::run_args(&flags);
    let report = loadtest::run::execute(&args, 21, false).await.unwrap();
    assert!(report.outcomes.accepted > 200, "{:?}", report.outcomes);
    assert!(
        report.outcomes.duplicate > 50,
        "re-sends answered duplicate: {:?}",
        report.outcomes
    );

    // The ledger has one line per signature answered, plus its header.
    let lines = std::fs::read_to_string(&ledger).unwrap();
    assert!(lines.starts_with(loadtest::ledger::HEADER));
    let signatures =
        report.outcomes.answered + report.outcomes.timeouts + report.outcomes.connection_errors;
    assert_eq!(lines.lines().count() as u64, signatures + 1);

    let verdict = crate::verify_ledger(&url, ledger_text, 200).await;
    print!("{}", verdict.render());
    std::fs::remove_dir_all(&dir).unwrap();
    verdict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_against_a_correct_server() {
    let server = FakeServer::start(Fault::None).await;
    let verdict = run_then_verify(&server, "correct", &[]).await;
    assert!(verdict.passed(), "{:?}", verdict.problems);
    assert_eq!(verdict.petitions, 5);
    assert_eq!(verdict.indeterminate, 0);
    assert_eq!(verdict.counted, verdict.acknowledged);
    assert_eq!(verdict.resent, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_for_batches_too() {
    let server = FakeServer::start(Fault::None).await;
    let verdict = run_then_verify(&server, "batch", &["--batch", "20"]).await;
    assert!(verdict.passed(), "{:?}", verdict.problems);
    assert_eq!(verdict.counted, verdict.acknowledged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_fails_when_an_acknowledged_signature_is_lost() {
    let server = FakeServer::start(Fault::LoseAck { nth: 100 }).await;
    let verdict = run_then_verify(&server, "lose", &[]).await;
    assert!(!verdict.passed());
    // Either the count is one short, or a `--dup-ratio` re-send of the lost signer was accepted
    // a second time (which also brings the count back up).
    assert!(
        verdict.problems.iter().any(|p| {
            (p.starts_with("lost: petition") && p.contains("1 missing"))
                || p.starts_with("accepted twice: petition")
        }),
        "{:?}",
        verdict.problems
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_fails_when_a_signature_is_counted_twice() {
    let server = FakeServer::start(Fault::DoubleCount { nth: 100 }).await;
    let verdict = run_then_verify(&server, "double", &[]).await;
    assert!(!verdict.passed());
    assert!(
        verdict
            .problems
            .iter()
            .any(|p| p.starts_with("over-counted: petition")),
        "{:?}",
        verdict.problems
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reads_the_ledger_not_the_run() {
    // A hand-written ledger: a signer the server never saw, claimed as accepted.
    let server = FakeServer::start(Fault::None).await;
    let url = server.url();
    let args = crate::run_args(&[
        "--target",
        &url,
        "--api-key",
        ADMIN_KEY,
        "-R",
        "100",
        "-z",
        "100ms",
        "-c",
        "1",
        "--petitions",
        "1",
        "--seed",
        "5",
    ]);
    loadtest::run::execute(&args, 5, false).await.unwrap();
    let dir = crate::scratch("handwritten");
    let ledger = dir.join("ledger.tsv");
    std::fs::write(&ledger, "lt-5-0\tnobody@example.org\taccepted\t-\n").unwrap();
    let verdict = loadtest::verify::verify(&crate::verify_args(&[
        "--target",
        &url,
        "--ledger",
        ledger.to_str().unwrap(),
        "--api-key",
        INGEST_KEY,
    ]))
    .await
    .unwrap();
    // The server counts 10 signers the ledger does not know, and had never seen `nobody`.
    assert!(!verdict.passed());
    assert!(
        verdict
            .problems
            .iter()
            .any(|p| p.starts_with("over-counted")),
        "{:?}",
        verdict.problems
    );
    assert!(
        verdict
            .problems
            .iter()
            .any(|p| p.contains("nobody@example.org was accepted again")),
        "{:?}",
        verdict.problems
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_check_flag_verifies_after_the_run() {
    let server = FakeServer::start(Fault::None).await;
    let args = crate::run_args(&[
        "--target",
        &server.url(),
        "--api-key",
        ADMIN_KEY,
        "-R",
        "500",
        "-z",
        "300ms",
        "-c",
        "2",
        "--petitions",
        "2",
        "--seed",
        "6",
        "--durability-check",
        "--no-progress",
    ]);
    assert_eq!(
        loadtest::run_command(args, false).await.unwrap(),
        loadtest::RunStatus::Passed
    );

    let lossy = FakeServer::start(Fault::LoseAck { nth: 10 }).await;
    let args = crate::run_args(&[
        "--target",
        &lossy.url(),
        "--api-key",
        ADMIN_KEY,
        "-R",
        "500",
        "-z",
        "300ms",
        "-c",
        "2",
        "--petitions",
        "2",
        "--seed",
        "7",
        "--durability-check",
        "--no-progress",
    ]);
    assert_eq!(
        loadtest::run_command(args, false).await.unwrap(),
        loadtest::RunStatus::DurabilityFailed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_never_answered_is_a_timeout_and_indeterminate() {
    // The 50th request after the 2 registrations hangs forever.
    let server = FakeServer::start(Fault::Hang { nth: 52 }).await;
    let dir = crate::scratch("hang");
    let ledger = dir.join("ledger.tsv");
    let url = server.url();
    let args = crate::run_args(&[
        "--target",
        &url,
        "--api-key",
        ADMIN_KEY,
        "-R",
        "200",
        "-z",
        "1s",
        "-c",
        "2",
        "--petitions",
        "2",
        "--seed",
        "8",
        "--timeout",
        "300ms",
        "--ledger",
        ledger.to_str().unwrap(),
    ]);
    let report = loadtest::run::execute(&args, 8, false).await.unwrap();
    assert_eq!(report.outcomes.timeouts, 1, "{:?}", report.outcomes);
    assert_eq!(report.outcomes.accepted, 199, "{:?}", report.outcomes);
    let text = std::fs::read_to_string(&ledger).unwrap();
    let indeterminate: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\tindeterminate\t"))
        .collect();
    assert_eq!(indeterminate.len(), 1, "{indeterminate:?}");
    assert!(indeterminate[0].ends_with("\ttimeout"));
    // The hung signature was never counted, which the indeterminate class allows.
    let verdict = loadtest::verify::verify(&crate::verify_args(&[
        "--target",
        &url,
        "--ledger",
        ledger.to_str().unwrap(),
        "--api-key",
        INGEST_KEY,
    ]))
    .await
    .unwrap();
    assert!(verdict.passed(), "{:?}", verdict.problems);
    assert_eq!((verdict.acknowledged, verdict.indeterminate), (199, 1));
    std::fs::remove_dir_all(&dir).unwrap();
}
