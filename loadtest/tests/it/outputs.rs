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
