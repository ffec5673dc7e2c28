//! What a run writes for people and plotters to look at: `--hgrm` (HdrHistogram's percentile
//! distribution), `--timeline` (one NDJSON line per second) and `loadtest plot`.

use serde_json::Value;

use crate::fake::{FakeServer, Fault, ADMIN_KEY};

/// `loadtest run` against `url` with the admin key, one load thread, then `extra`.
fn run_flags(url: &str, extra: &[&str]) -> loadtest::cli::RunArgs {
    let mut args = vec![
        "--target",
        url,
        "--api-key",
        ADMIN_KEY,
        "--petitions",
        "2",
        "-t",
        "1",
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    crate::run_args(&args)
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The number after `name =` in a `.hgrm` footer line.
fn footer_field(line: &str, name: &str) -> f64 {
    let rest = &line[line
        .find(name)
        .unwrap_or_else(|| panic!("{name} in {line}"))
        + name.len()..];
    let rest = rest.trim_start().strip_prefix('=').unwrap().trim_start();
    let end = rest.find([',', ']']).unwrap();
    rest[..end].trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hgrm_file_is_hdrhistograms_percentile_distribution() {
    let server = FakeServer::start(Fault::None).await;
    let dir = crate::scratch("hgrm");
    let (hgrm, json) = (dir.join("run.hgrm"), dir.join("run.json"));
    let args = run_flags(
        &server.url(),
        &[
            "-R",
            "400",
            "-c",
            "4",
            "-z",
            "500ms",
            "--seed",
            "71",
            "--hgrm",
            hgrm.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
    );
    loadtest::run_command(args, false).await.unwrap();
    let report = read_json(&json);
    let corrected = &report["latency_ms"]["corrected"];
    assert_eq!(corrected["count"], 200);

    let text = std::fs::read_to_string(&hgrm).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "       Value     Percentile TotalCount 1/(1-Percentile)"
    );
    assert_eq!(lines[1], "");
    let rows: Vec<Vec<f64>> = lines[2..]
        .iter()
        .take_while(|line| !line.starts_with('#'))
        .map(|line| {
            line.split_whitespace()
                .map(|field| field.parse().unwrap())
                .collect()
        })
        .collect();
    assert!(rows.len() >= 20, "{text}");
    let (last, body) = rows.split_last().unwrap();
    for row in body {
        assert_eq!(row.len(), 4, "{row:?}");
        let expected = 1.0 / (1.0 - row[1]);
        assert!(
            (row[3] - expected).abs() <= 0.01 + expected * 1e-6,
            "{row:?}"
        );
    }
    for pair in rows.windows(2) {
        for column in 0..3 {
            assert!(pair[0][column] <= pair[1][column], "{pair:?} not monotone");
        }
    }
    assert_eq!(rows[0][1], 0.0);
    assert_eq!(last.len(), 3, "the last row has no 1/(1-Percentile)");
    assert_eq!(last[1], 1.0);
    assert_eq!(last[2], 200.0);
    assert_eq!(last[0], corrected["max"].as_f64().unwrap());

    let footer = &lines[2 + rows.len()..];
    assert_eq!(footer.len(), 3, "{text}");
    assert_eq!(footer_field(footer[1], "Total count"), 200.0);
    assert_eq!(footer_field(footer[1], "Max"), last[0]);
    let mean = footer_field(footer[0], "Mean");
    assert!(
        (mean - corrected["mean"].as_f64().unwrap()).abs() <= 0.001,
        "{mean} vs {corrected}"
    );
    assert!(footer_field(footer[0], "StdDeviation") >= 0.0);
    assert_eq!(footer_field(footer[2], "Buckets"), 22.0);
    assert_eq!(footer_field(footer[2], "SubBuckets"), 2048.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_show_in_the_timelines_target_and_achieved_rates() {
    let server = FakeServer::start(Fault::None).await;
    let dir = crate::scratch("stages");
    let (timeline, json) = (dir.join("run.ndjson"), dir.join("run.json"));
    // Up from 0 to 300/s over a second, 300/s for a second, down to 0 over a second: 150, 300
    // and 150 due in the three seconds, 600 in all.
    let args = run_flags(
        &server.url(),
        &[
            "--stages",
            "1s:300,1s:300,1s:0",
            "-c",
            "8",
            "--seed",
            "72",
            "--timeline",
            timeline.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
    );
    loadtest::run_command(args, false).await.unwrap();
    let report = read_json(&json);
    assert_eq!(report["mode"], "open");
    assert_eq!(report["duration_s"], 3.0);
    assert_eq!(report["rate"]["target_per_s"], Value::Null);
    assert_eq!(report["stages"][1]["target_per_s"], 300.0);
    let outcomes = &report["outcomes"];
    assert_eq!(outcomes["accepted"], 600, "{outcomes}");
    assert_eq!(outcomes["not_sent"], 0);

    // The file is the report's rows, one line each.
    let rows: Vec<Value> = std::fs::read_to_string(&timeline)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(Value::Array(rows.clone()), report["timeline"]);
    // Three seconds, and a short fourth for the last answers if they came after 3 s.
    assert!(rows.len() == 3 || rows.len() == 4, "{rows:?}");
    assert!(report["elapsed_s"].as_f64().unwrap() > 2.5);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["second"], i);
    }
    let number = |row: &Value, field: &str| row[field].as_f64().unwrap();
    for (i, (row, expected)) in rows.iter().zip([150.0, 300.0, 150.0]).enumerate() {
        // The last second ends with the last answer, soon after the last slot of the ramp
        // down (due at about 2.92 s).
        let span = number(row, "span_s");
        assert!(span == 1.0 || (i == 2 && span > 0.5), "{row}");
        let due = number(row, "target_per_s") * span;
        assert!((due - expected).abs() <= 2.0, "due {due}: {row}");
        // Sent on schedule (a send late by a timer tick may land in the next second).
        let sent = number(row, "sent");
        assert!(
            (sent - expected).abs() <= expected * 0.1,
            "sent {sent}: {row}"
        );
        let answered = number(row, "achieved_per_s") * span;
        assert!(
            (answered - expected).abs() <= expected * 0.1,
            "answered {answered}: {row}"
        );
        assert_eq!(row["errors"], 0);
        assert_eq!(row["outcomes"]["taken"], row["answered"]);
        let latency = &row["latency_ms"];
        assert!(latency["count"].as_u64().unwrap() > 0);
        assert!(number(latency, "p50") <= number(latency, "p90"));
        assert!(number(latency, "p90") <= number(latency, "p99"));
        assert!(number(latency, "p99") <= number(latency, "max"));
    }
    if let Some(last) = rows.get(3) {
        assert!(number(last, "span_s") < 1.0);
        assert_eq!(number(last, "target_per_s"), 0.0);
    }
    // Every send and answer is in exactly one row.
    let sum = |field: &str| rows.iter().map(|r| r[field].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("sent"), 600);
    assert_eq!(sum("answered"), 600);
    assert!(report.get("timeline_late").is_none());
    let answered_requests: u64 = rows
        .iter()
        .map(|r| r["latency_ms"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(answered_requests, 600);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The `points` of the polyline of `series` in `html`, as (x, y) pairs.
fn series_points(html: &str, series: &str) -> Vec<(f64, f64)> {
    let marker = format!("data-series=\"{series}\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {series} series"));
    let rest = &html[at..];
    let start = rest.find("points=\"").unwrap() + "points=\"".len();
    let end = start + rest[start..].find('"').unwrap();
    rest[start..end]
        .split_whitespace()
        .map(|pair| {
            let (x, y) = pair.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plot_draws_a_self_contained_page_from_the_json_report() {
    let server = FakeServer::start(Fault::None).await;
    let dir = crate::scratch("plot");
    let json = dir.join("run.json");
    let args = run_flags(
        &server.url(),
        &[
            "-R",
            "300",
            "-c",
            "4",
            "-z",
            "2s",
            "--seed",
            "73",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    loadtest::run_command(args, false).await.unwrap();
    let report = read_json(&json);
    let rows = report["timeline"].as_array().unwrap().len();
    assert!(rows >= 2, "{report}");

    let binary = env!("CARGO_BIN_EXE_loadtest");
    let (json_path, html) = (json.clone(), dir.join("out.html"));
    let html_path = html.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary)
            .arg("plot")
            .arg(&json_path)
            .arg("-o")
            .arg(&html_path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.trim_end().ends_with("</html>"));
    // Self-contained: nothing to fetch, no script at all.
    for needle in ["src=", "href=", "<script", "<link", "@import", "url("] {
        assert!(!page.contains(needle), "{needle} in the page");
    }
    assert_eq!(page.matches("<svg").count(), 3);
    assert_eq!(page.matches("</svg>").count(), 3);
    // The series are there, one point per second that had answers, inside the chart.
    for series in ["p50", "p90", "p99", "achieved", "target", "distribution"] {
        let points = series_points(&page, series);
        assert!(!points.is_empty(), "{series}");
        for (x, y) in &points {
            assert!(
                (0.0..=860.0).contains(x) && (0.0..=300.0).contains(y),
                "{series}: {x},{y}"
            );
        }
    }
    assert_eq!(series_points(&page, "p99").len(), rows);
    assert_eq!(series_points(&page, "achieved").len(), rows);
    let distribution = series_points(&page, "distribution");
    assert_eq!(
        distribution.len(),
        report["latency_distribution_ms"].as_array().unwrap().len()
    );
    // Left to right, and latency never goes down with the percentile (y grows downwards).
    for pair in distribution.windows(2) {
        assert!(pair[0].0 <= pair[1].0 && pair[0].1 >= pair[1].1, "{pair:?}");
    }
    for tick in ["90%", "99%", "99.9%"] {
        assert!(page.contains(&format!(">{tick}</text>")), "{tick}");
    }
    assert!(page.contains(&format!("<title>loadtest: {}</title>", server.url())));

    // Text from the report is escaped; a report without a timeline, or not a report, is
    // refused.
    let mut hostile = report.clone();
    hostile["target"] = Value::from("http://x/<script>alert(\"&\")</script>");
    let page = loadtest::plot::page(&hostile.to_string()).unwrap();
    assert!(!page.contains("<script"), "{page}");
    assert!(page.contains("http://x/&lt;script&gt;alert(&quot;&amp;&quot;)&lt;/script&gt;"));
    let mut old = report.clone();
    old.as_object_mut().unwrap().remove("timeline");
    let error = format!("{:#}", loadtest::plot::page(&old.to_string()).unwrap_err());
    assert!(error.contains("no timeline"), "{error}");
    let output = std::process::Command::new(binary)
        .args(["plot", dir.join("missing.json").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("reading"));
    std::fs::remove_dir_all(&dir).unwrap();
}
