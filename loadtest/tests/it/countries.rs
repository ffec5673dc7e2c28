//! `--countries`: every signature carries the country and region chosen for its signer (the
//! same on a re-send), the report shows the server's breakdown of the busiest petition (or says
//! why it could not), and `verify` fails when a breakdown does not add up to its count.

use loadtest::countries::Countries;
use loadtest::report::{CountriesReport, Report};
use loadtest::verify::Verdict;

use crate::fake::{FakeServer, Fault, ADMIN_KEY, INGEST_KEY};

const SEED: u64 = 47;
const PETITIONS: u32 = 5;

/// A run and the verification of its ledger.
struct Run {
    report: Report,
    /// Signatures of a known signer that carried another country or region than its first,
    /// during the run (`verify` re-sends signers without theirs: it does not know them).
    placement_changes: u64,
    verdict: Verdict,
}

/// A viral run of `PETITIONS` petitions with `--seed 47`, re-sends and a ledger, plus `extra`,
/// then `verify` of its ledger.
async fn run_then_verify(server: &FakeServer, name: &str, extra: &[&str]) -> Run {
    let dir = crate::scratch(name);
    let ledger = dir.join("ledger.tsv");
    let ledger_text = ledger.to_str().unwrap();
    let url = server.url();
    let seed = SEED.to_string();
    let petitions = PETITIONS.to_string();
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
        &petitions,
        "--seed",
        &seed,
        "--ledger",
        ledger_text,
        "--dup-ratio",
        "0.2",
        "--shape",
        "viral",
        "--ramp",
        "100ms",
    ];
    flags.extend_from_slice(extra);
    let args = crate::run_args(&flags);
    let report = loadtest::run::execute(&args, SEED, false).await.unwrap();
    print!("{}", report.table());
    assert!(report.outcomes.accepted > 200, "{:?}", report.outcomes);
    let placement_changes = server.placement_changes();
    let verdict = crate::verify_ledger(&url, ledger_text, 100).await;
    print!("{}", verdict.render());
    std::fs::remove_dir_all(&dir).unwrap();
    Run {
        report,
        placement_changes,
        verdict,
    }
}

/// Connection and number of `lt<seed>.<connection>.<number>@example.org`.
fn signer_of(email: &str) -> (u32, u64) {
    let local = email.strip_suffix("@example.org").unwrap();
    let mut parts = local.split('.').skip(1);
    let connection = parts.next().unwrap().parse().unwrap();
    let number = parts.next().unwrap().parse().unwrap();
    (connection, number)
}

fn petition(index: u32) -> String {
    loadtest::shape::petition_id(SEED, index)
}

/// The server's own counts by country of a petition, as the report's block lists them.
fn server_countries(server: &FakeServer, index: u32) -> Vec<(String, u64)> {
    server.countries(&petition(index))
}

fn block_countries(block: &CountriesReport) -> Vec<(String, u64)> {
    block
        .countries
        .iter()
        .map(|c| (c.country.clone(), c.count))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signers_carry_their_country_and_the_report_shows_the_busiest_breakdown() {
    let server = FakeServer::start(Fault::None).await;
    let spec = "GB:0.7:20,us:0.2";
    let Run {
        report,
        placement_changes,
        verdict,
    } = run_then_verify(&server, "countries", &["--countries", spec]).await;
    let countries = Countries::parse(spec).unwrap();

    // Every signer the server saw carried what the spec chooses for it, re-sends included.
    let mut seen = std::collections::BTreeSet::new();
    for index in 0..PETITIONS {
        for (email, (country, region)) in server.placements(&petition(index)) {
            let (connection, number) = signer_of(&email);
            let expected = countries.place(SEED, connection, number);
            assert_eq!(country.as_deref(), expected.map(|p| p.country), "{email}");
            assert_eq!(
                region,
                expected.and_then(|p| p.region).map(|r| format!("R{r}")),
                "{email}"
            );
            seen.insert(country);
        }
    }
    assert_eq!(placement_changes, 0, "a re-send changed country");
    assert!(report.outcomes.resends > 0);
    let seen: Vec<Option<&str>> = seen.iter().map(Option::as_deref).collect();
    assert_eq!(seen, [None, Some("GB"), Some("US")]);
    // GB's signers, and only they, carry a region, one of R1..R20.
    let regions: std::collections::BTreeSet<u32> = server
        .placements(&petition(0))
        .into_iter()
        .filter_map(|(email, (country, region))| {
            assert_eq!(
                region.is_some(),
                country.as_deref() == Some("GB"),
                "{email}"
            );
            region
        })
        .map(|r| r.strip_prefix('R').unwrap().parse().unwrap())
        .collect();
    assert!(regions.len() > 10, "{regions:?}");
    assert!(regions.iter().all(|r| (1..=20).contains(r)), "{regions:?}");

    // The report read the hot petition's breakdown, exactly as the server has it.
    let block = report.countries.as_ref().expect("a countries block");
    assert_eq!(block.petition, petition(0));
    assert_eq!(block.spec, spec);
    let count = server.count(&petition(0)).unwrap();
    assert_eq!(block.count, Some(count));
    assert_eq!(block.counted_by_run, count, "no answer was lost");
    assert_eq!(block.sum_matches, Some(true));
    assert_eq!(block.error, None);
    assert_eq!(block_countries(block), server_countries(&server, 0));
    assert_eq!(block.countries[0].country, "GB");
    let table = report.table();
    assert!(
        table.contains(&format!("countries  {} ", petition(0))),
        "{table}"
    );
    assert!(
        table.contains(&format!("sum of 3 countries {count} = count {count}")),
        "{table}"
    );
    assert!(table.contains("ZZ (no country)"), "{table}");
    let json = serde_json::to_value(&report).unwrap();
    let block = &json["countries"];
    assert_eq!(block["petition"], petition(0));
    assert_eq!(block["count"], count);
    assert_eq!(block["sum_matches"], true);
    assert_eq!(block["countries"][0]["country"], "GB");
    assert!(block.get("error").is_none());

    // verify read every petition's breakdown, and they add up.
    assert!(verdict.passed(), "{:?}", verdict.problems);
    assert_eq!(verdict.countries_checked, PETITIONS as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_countries_every_signature_is_gb_and_there_is_no_block() {
    let server = FakeServer::start(Fault::None).await;
    let Run {
        report,
        placement_changes,
        verdict,
    } = run_then_verify(&server, "no-countries", &[]).await;
    assert_eq!(placement_changes, 0);
    assert!(report.countries.is_none());
    assert!(serde_json::to_value(&report)
        .unwrap()
        .get("countries")
        .is_none());
    assert!(!report.table().contains("countries  "));
    for index in 0..PETITIONS {
        let count = server.count(&petition(index)).unwrap();
        let expected = if count > 0 {
            vec![("GB".to_owned(), count)]
        } else {
            Vec::new()
        };
        assert_eq!(server_countries(&server, index), expected);
    }
    assert!(verdict.passed(), "{:?}", verdict.problems);
    assert_eq!(verdict.countries_checked, PETITIONS as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breakdown_short_of_its_count_is_reported_and_fails_verify() {
    let server = FakeServer::start(Fault::CountriesShort).await;
    let Run {
        report, verdict, ..
    } = run_then_verify(&server, "countries-short", &["--countries", "uniform:3"]).await;
    let block = report.countries.as_ref().unwrap();
    let count = server.count(&petition(0)).unwrap();
    assert_eq!(block.count, Some(count));
    assert_eq!(block.sum_matches, Some(false));
    let table = report.table();
    assert!(
        table.contains(&format!(
            "sum of 3 countries {} != count {count}: the breakdown does NOT add up",
            count - 1
        )),
        "{table}"
    );

    assert!(!verdict.passed());
    // Only the breakdowns are wrong: one problem per petition signed, naming both numbers.
    let signed: Vec<u32> = (0..PETITIONS)
        .filter(|&i| server.count(&petition(i)).unwrap() > 0)
        .collect();
    assert_eq!(
        verdict.problems.len(),
        signed.len(),
        "{:?}",
        verdict.problems
    );
    for index in signed {
        let count = server.count(&petition(index)).unwrap();
        let expected = format!(
            "countries: petition {}: the countries add up to {} but the count that came with \
             them is {count} (1 short of it, over ",
            petition(index),
            count - 1
        );
        assert!(
            verdict.problems.iter().any(|p| p.starts_with(&expected)),
            "{expected} not in {:?}",
            verdict.problems
        );
    }
    assert!(verdict.render().contains("verify: FAIL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_the_breakdown_keeps_the_report_and_fails_verify() {
    let server = FakeServer::start(Fault::NoCountries).await;
    let Run {
        report, verdict, ..
    } = run_then_verify(&server, "no-breakdown", &["--countries", "FR:0.5"]).await;
    // The rest of the report is there; the block says what failed.
    assert!(report.outcomes.accepted > 200);
    assert!(report.latency_ms.corrected.count > 0);
    let block = report.countries.as_ref().unwrap();
    assert_eq!(block.petition, petition(0));
    assert_eq!((block.count, block.sum_matches), (None, None));
    assert!(block.countries.is_empty());
    let error = block.error.as_deref().unwrap();
    assert!(
        error.contains(&format!("GET /v1/petitions/{}/countries", petition(0)))
            && error.contains("404"),
        "{error}"
    );
    let table = report.table();
    assert!(
        table.contains("the breakdown could not be read: GET"),
        "{table}"
    );
    assert!(table.contains("accepted (201)"), "{table}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["countries"]["count"], serde_json::Value::Null);
    assert!(json["countries"]["error"].as_str().unwrap().contains("404"));
    assert!(json["outcomes"]["accepted"].as_u64().unwrap() > 200);

    assert!(!verdict.passed());
    assert_eq!(verdict.countries_checked, 0);
    assert!(
        verdict
            .problems
            .iter()
            .all(|p| p.starts_with("countries: petition ")
                && p.contains("could not read the breakdown by country")),
        "{:?}",
        verdict.problems
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validated_signatures_count_toward_the_busiest_petition() {
    let server = FakeServer::start(Fault::None).await;
    let url = server.url();
    let args = crate::run_args(&[
        "--target",
        &url,
        "--api-key",
        INGEST_KEY,
        "--admin-key",
        ADMIN_KEY,
        "-c",
        "2",
        "-z",
        "300ms",
        "--petitions",
        "3",
        "--shape",
        "zipf",
        "--seed",
        "48",
        "--validate-share",
        "1",
        "--countries",
        "DE:0.5:3",
    ]);
    let report = loadtest::run::execute(&args, 48, false).await.unwrap();
    print!("{}", report.table());
    // Phase 1 answers pending only; what the run counted, it counted in phase 2.
    assert_eq!(report.outcomes.accepted, 0);
    let validated = report.validation.as_ref().unwrap().outcomes.validated;
    assert!(validated > 0);
    let block = report.countries.as_ref().unwrap();
    let counts: Vec<u64> = (0..3)
        .map(|i| server.count(&loadtest::shape::petition_id(48, i)).unwrap())
        .collect();
    let busiest = counts.iter().max().unwrap();
    assert_eq!(block.counted_by_run, *busiest);
    assert_eq!(block.count, Some(*busiest));
    assert_eq!(server.count(&block.petition), Some(*busiest), "{counts:?}");
    assert_eq!(block.sum_matches, Some(true));
    assert!(block.countries.iter().any(|c| c.country == "DE"));
}
