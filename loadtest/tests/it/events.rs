//! `--sse-readers`, `--webhook` and `--threshold-step` against the fake server's events: every
//! crossing acknowledged is seen by every reader and delivered once, with latencies measured
//! from the acknowledgement; a lagged reader is counted and the crossings it missed are seen by
//! some readers only; a reader refused with 503 fails the run before the load.

use loadtest::report::{EventsReport, Report};

use crate::fake::{FakeServer, Fault, ADMIN_KEY, DEFAULT_THRESHOLDS, EVENT_DELAY, INGEST_KEY};

/// Runs `--seed seed --petitions petitions -c 2 -t 1` plus `extra` against `server`.
async fn run(
    server: &FakeServer,
    seed: u64,
    petitions: u32,
    extra: &[&str],
) -> anyhow::Result<Report> {
    let url = server.url();
    let seed_text = seed.to_string();
    let petitions_text = petitions.to_string();
    let mut flags = vec![
        "--target",
        &url,
        "--api-key",
        INGEST_KEY,
        "--admin-key",
        ADMIN_KEY,
        "--petitions",
        &petitions_text,
        "--seed",
        &seed_text,
        "-c",
        "2",
        "-t",
        "1",
    ];
    flags.extend_from_slice(extra);
    let args = crate::run_args(&flags);
    let report = loadtest::run::execute(&args, seed, false).await?;
    print!("{}", report.table());
    Ok(report)
}

/// The crossings the server's counts say happened, over the run's petitions.
fn crossed(server: &FakeServer, seed: u64, petitions: u32) -> u64 {
    (0..petitions)
        .map(|i| server.crossed(&format!("lt-{seed}-{i}")) as u64)
        .sum()
}

/// The latencies are measured, and bounded: the fake publishes [`EVENT_DELAY`] after the
/// crossing, so most events come well after their acknowledgement, and all within the wait.
fn check_latency(name: &str, p: &loadtest::report::Percentiles, count: u64) {
    assert_eq!(p.count, count, "{name}: {p:?}");
    let delay_ms = EVENT_DELAY.as_secs_f64() * 1000.0;
    assert!(p.p50 >= delay_ms / 4.0, "{name}: p50 {p:?}");
    assert!(p.max < 3000.0, "{name}: max {p:?}");
    assert!(
        p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.max,
        "{name}: {p:?}"
    );
}

fn events(report: &Report) -> &EventsReport {
    report.events.as_ref().expect("an events report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_and_a_webhook_see_every_crossing_of_a_batch_load() {
    let server = FakeServer::start(Fault::None).await;
    let report = run(
        &server,
        41,
        2,
        &[
            "-z",
            "400ms",
            "--batch",
            "10",
            "--threshold-step",
            "10",
            "--sse-readers",
            "4",
            "--webhook",
        ],
    )
    .await
    .unwrap();
    let crossings = crossed(&server, 41, 2);
    assert!(crossings >= 4, "too few crossings to tell: {crossings}");
    let e = events(&report);
    assert_eq!(e.threshold_step, Some(10));
    assert_eq!(e.thresholds.len(), 32);
    assert_eq!(e.thresholds[31], 320);
    assert_eq!(e.crossings_acknowledged, crossings);
    assert_eq!(e.acknowledged_twice, 0);

    let sse = e.sse.as_ref().expect("SSE readers");
    assert_eq!(server.readers_opened(), 4);
    assert_eq!(sse.readers, 4);
    assert_eq!(sse.seen_by_every_reader, crossings, "{sse:?}");
    assert_eq!(
        (sse.seen_by_some_readers, sse.seen_by_no_reader),
        (0, 0),
        "{sse:?}"
    );
    assert_eq!(
        (sse.not_acknowledged, sse.malformed, sse.out_of_order),
        (0, 0, 0),
        "{sse:?}"
    );
    assert_eq!((sse.disconnected_lagged, sse.disconnected_error), (0, 0));
    check_latency("SSE every reader", &sse.latency_ms, crossings);
    check_latency("SSE first reader", &sse.first_reader_latency_ms, crossings);
    assert!(sse.first_reader_latency_ms.p50 <= sse.latency_ms.p50);

    let hook = e.webhook.as_ref().expect("a webhook");
    assert_eq!(hook.name, "loadtest-41");
    assert_eq!(hook.delivered, crossings, "{hook:?}");
    assert_eq!(
        (
            hook.not_delivered,
            hook.not_acknowledged,
            hook.repeated,
            hook.malformed
        ),
        (0, 0, 0, 0),
        "{hook:?}"
    );
    assert!(hook.deleted);
    check_latency("webhook", &hook.latency_ms, crossings);
    assert!(server.webhooks().is_empty(), "the webhook was deleted");
    let statuses = server.delivery_statuses();
    assert_eq!(statuses.len() as u64, crossings);
    assert!(statuses.iter().all(|&s| s == 204), "{statuses:?}");

    let table = report.table();
    assert!(table.contains("SSE seen by every reader"), "{table}");
    assert!(table.contains("webhook delivered"), "{table}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["events"]["crossings_acknowledged"], crossings);
    assert_eq!(json["events"]["sse"]["seen_by_every_reader"], crossings);
    assert_eq!(json["events"]["webhook"]["delivered"], crossings);
    assert!(json["events"]["sse"]["latency_ms"]["p99"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validations_cross_the_servers_own_thresholds() {
    // No --threshold-step: the thresholds are read back from the server (the fake's defaults),
    // and with email validation it is the validations' counts that cross them.
    let server = FakeServer::start(Fault::None).await;
    let report = run(
        &server,
        42,
        1,
        &["-z", "300ms", "--validate-share", "1", "--sse-readers", "2"],
    )
    .await
    .unwrap();
    let crossings = crossed(&server, 42, 1);
    assert!(crossings >= 1, "no threshold crossed");
    let e = events(&report);
    assert_eq!(e.threshold_step, None);
    assert_eq!(e.thresholds, DEFAULT_THRESHOLDS.to_vec());
    assert_eq!(e.crossings_acknowledged, crossings);
    let sse = e.sse.as_ref().expect("SSE readers");
    assert_eq!(sse.seen_by_every_reader, crossings, "{sse:?}");
    check_latency("SSE every reader", &sse.latency_ms, crossings);
    assert!(e.webhook.is_none());
    assert!(report.validation.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagged_reader_is_counted_and_what_it_missed_is_seen_by_some_readers() {
    let server = FakeServer::start(Fault::LagFirstReader).await;
    let report = run(
        &server,
        43,
        1,
        &["-z", "300ms", "--threshold-step", "5", "--sse-readers", "3"],
    )
    .await
    .unwrap();
    let crossings = crossed(&server, 43, 1);
    assert!(crossings >= 3, "too few crossings to tell: {crossings}");
    let sse = events(&report).sse.as_ref().expect("SSE readers");
    assert_eq!(sse.disconnected_lagged, 1, "{sse:?}");
    assert_eq!(sse.disconnected_error, 0, "{sse:?}");
    // The lagging reader got the first event only.
    assert_eq!(sse.seen_by_every_reader, 1, "{sse:?}");
    assert_eq!(sse.seen_by_some_readers, crossings - 1, "{sse:?}");
    assert_eq!(sse.seen_by_no_reader, 0, "{sse:?}");
    assert_eq!(sse.latency_ms.count, 1);
    assert_eq!(sse.first_reader_latency_ms.count, crossings);
    assert!(report.table().contains("SSE readers disconnected (lagged)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_refused_with_503_fails_the_run_before_the_load() {
    let server = FakeServer::start(Fault::SseReadersMax { max: 2 }).await;
    let error = run(&server, 44, 2, &["-z", "300ms", "--sse-readers", "3"])
        .await
        .expect_err("the run must fail");
    let message = format!("{error:#}");
    for needle in [
        "opening 3 SSE readers",
        "of 3",
        "/v1/events/stream answered 503 too_many_readers",
        "more readers than the server allows",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    // Nothing was signed.
    assert_eq!(server.count("lt-44-0"), Some(0));
    assert_eq!(server.count("lt-44-1"), Some(0));
}
