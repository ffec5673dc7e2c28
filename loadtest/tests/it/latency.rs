//! The coordinated-omission self-test: a server that stalls for 1 s in the middle of a
//! constant-rate run. The corrected latencies (from the intended send time) must show the stall;
//! the uncorrected ones (from the actual send time, what a closed-loop tool measures) hide it.

use std::time::Duration;

use loadtest::cli::RunArgs;

use crate::fake::{FakeServer, Fault, ADMIN_KEY, INGEST_KEY};

/// An open-loop run against `server`: `-R rate -c connections -z duration` over 4 petitions,
/// one load thread.
fn open_loop(
    server: &FakeServer,
    rate: &str,
    connections: &str,
    duration: &str,
    seed: &str,
) -> RunArgs {
    crate::run_args(&[
        "--target",
        &server.url(),
        "--api-key",
        INGEST_KEY,
        "--admin-key",
        ADMIN_KEY,
        "-R",
        rate,
        "-c",
        connections,
        "-z",
        duration,
        "--petitions",
        "4",
        "--seed",
        seed,
        "-t",
        "1",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_corrected_latency_only() {
    // 400/s for 3 s = 1200 requests; the 400th (about 1 s in) freezes the server for 1 s.
    let server = FakeServer::start(Fault::Stall {
        nth: 400 + 4, // + the registration of 4 petitions
        pause: Duration::from_secs(1),
    })
    .await;
    let args = open_loop(&server, "400", "4", "3s", "11");
    let report = loadtest::run::execute(&args, 11, false).await.unwrap();
    print!("{}", report.table());

    // Open loop: every due slot was sent and answered, stall or not.
    assert_eq!(report.outcomes.answered, 1200);
    assert_eq!(report.outcomes.accepted, 1200);
    let corrected = &report.latency_ms.corrected;
    let uncorrected = &report.latency_ms.uncorrected;
    // About a third of the requests were due during the stall, waiting up to a second.
    assert!(corrected.max >= 950.0, "corrected max {}", corrected.max);
    assert!(corrected.p99 >= 800.0, "corrected p99 {}", corrected.p99);
    assert!(corrected.p90 >= 300.0, "corrected p90 {}", corrected.p90);
    // Measured from the actual send, only the 4 requests in flight saw the stall: under 1%.
    assert!(
        uncorrected.max >= 900.0,
        "uncorrected max {}",
        uncorrected.max
    );
    assert!(
        uncorrected.p99 < 200.0,
        "uncorrected p99 {} hides the stall",
        uncorrected.p99
    );
    // The rate was held: the backlog was sent as soon as the server woke up.
    let achieved = report.rate.achieved_per_s;
    assert!(
        (achieved - 400.0).abs() < 400.0 * 0.05,
        "achieved {achieved}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_without_a_stall_is_fast_and_counts_everything() {
    let server = FakeServer::start(Fault::None).await;
    let args = crate::run_args(&[
        "--target",
        &server.url(),
        "--api-key",
        ADMIN_KEY,
        "-c",
        "8",
        "-z",
        "500ms",
        "--petitions",
        "3",
        "--seed",
        "12",
        "--shape",
        "zipf",
        "-t",
        "2",
    ]);
    let report = loadtest::run::execute(&args, 12, false).await.unwrap();
    assert_eq!(report.mode, "closed");
    assert!(report.outcomes.accepted > 100, "{:?}", report.outcomes);
    assert_eq!(report.outcomes.accepted, report.outcomes.answered);
    // Every accepted signature is counted by the server, over the three petitions.
    let counted: u64 = (0..3)
        .map(|i| server.count(&format!("lt-12-{i}")).unwrap())
        .sum();
    assert_eq!(counted, report.outcomes.accepted);
    // Closed loop: both views are the same measurement.
    assert_eq!(report.latency_ms.corrected, report.latency_ms.uncorrected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_duration_bounds_an_open_loop_run_far_above_capacity() {
    // 2 connections against 50 ms per request: about 40/s, asked for 400/s over 1 s.
    let server = FakeServer::start(Fault::Slow {
        each: Duration::from_millis(50),
    })
    .await;
    let args = open_loop(&server, "400", "2", "1s", "12");
    let started = std::time::Instant::now();
    let report = loadtest::run::execute(&args, 12, false).await.unwrap();
    let took = started.elapsed();
    print!("{}", report.table());
    // Sending the backlog would take 400 / 40 = 10 s; the run ends at -z plus the answers
    // outstanding.
    assert!(took < Duration::from_secs(3), "the run took {took:?}");
    let o = &report.outcomes;
    assert_eq!(
        o.answered + o.timeouts + o.connection_errors + o.not_sent,
        400,
        "every planned signature is answered, failed or reported as not sent"
    );
    assert!(o.not_sent >= 300, "not sent: {}", o.not_sent);
    assert!(o.accepted >= 10, "accepted: {}", o.accepted);
    assert!(report.table().contains("not sent"));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["outcomes"]["not_sent"], o.not_sent);
}
