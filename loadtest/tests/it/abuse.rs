//! `--ips`, `--abusers`, `--abuse-share` against the fake's abuse controls: every signer signs
//! from the address chosen for it (the same on a re-send), the abusers send their share, a 429
//! `ip_rate_limited` or 403 `blocked` is counted, never retried or re-sent, and `verify` does not
//! take it for a lost signature; the report splits the outcomes by group, matching what the
//! server answered each group's addresses.

use std::collections::HashMap;

use loadtest::ips::{Group, Ips, ABUSER_FIRST};
use loadtest::report::Report;
use loadtest::verify::Verdict;

use crate::fake::{AddressAnswers, Controls, FakeServer, Fault, ADMIN_KEY, INGEST_KEY};

/// A run, and what the server saw of it before `verify` re-sent anything.
struct Run {
    report: Report,
    /// The ledger's lines, header included.
    ledger: String,
    /// Signatures received per (petition, signer).
    receipts: HashMap<(String, String), u32>,
    /// Each (petition, signer) and its address as first sent.
    addresses: Vec<((String, String), Option<String>)>,
    /// What the server answered per address.
    answers: HashMap<Option<String>, AddressAnswers>,
    /// Signatures of a known signer that came from another address than its first.
    address_changes: u64,
    verdict: Verdict,
}

/// Runs `-c 4 --petitions 5 --seed <seed>` with a ledger and `extra` against `server`, then
/// `verify` of its ledger.
async fn run_then_verify(server: &FakeServer, name: &str, seed: u64, extra: &[&str]) -> Run {
    let dir = crate::scratch(name);
    let ledger = dir.join("ledger.tsv");
    let ledger_text = ledger.to_str().unwrap();
    let url = server.url();
    let seed_text = seed.to_string();
    let mut flags = vec![
        "--target",
        &url,
        "--api-key",
        INGEST_KEY,
        "--admin-key",
        ADMIN_KEY,
        "-c",
        "4",
        "--petitions",
        "5",
        "--seed",
        &seed_text,
        "--ledger",
        ledger_text,
    ];
    flags.extend_from_slice(extra);
    let args = crate::run_args(&flags);
    let report = loadtest::run::execute(&args, seed, false).await.unwrap();
    print!("{}", report.table());
    let receipts = server.receipts();
    let addresses = server.addresses();
    let answers = server.answers_by_address();
    // (verify re-sends signers without their address: it does not know them.)
    let address_changes = server.address_changes();
    let verdict = crate::verify_ledger(&url, ledger_text, 100).await;
    print!("{}", verdict.render());
    let ledger = std::fs::read_to_string(&ledger).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    Run {
        report,
        ledger,
        receipts,
        addresses,
        answers,
        address_changes,
        verdict,
    }
}

/// Signatures sent: answered, timed out or lost with their connection.
fn sent(report: &Report) -> u64 {
    let o = &report.outcomes;
    o.answered + o.timeouts + o.connection_errors
}

/// Connection and number of `lt<seed>.<connection>.<number>@example.org`.
fn signer_of(email: &str) -> (u32, u64) {
    let local = email.strip_suffix("@example.org").unwrap();
    let mut parts = local.split('.').skip(1);
    let connection = parts.next().unwrap().parse().unwrap();
    let number = parts.next().unwrap().parse().unwrap();
    (connection, number)
}

/// The fake's answers summed per group: an address in the abusers' network is theirs.
fn answers_by_group(
    answers: &HashMap<Option<String>, AddressAnswers>,
) -> HashMap<Group, AddressAnswers> {
    let mut groups: HashMap<Group, AddressAnswers> = HashMap::new();
    for (address, a) in answers {
        let address: std::net::Ipv4Addr = address
            .as_deref()
            .expect("every signature carries an address")
            .parse()
            .unwrap();
        let group = if u32::from(address) >> 17 == u32::from(ABUSER_FIRST) >> 17 {
            Group::Abuser
        } else {
            assert_eq!(address.octets()[0], 10, "{address}");
            Group::Other
        };
        let sum = groups.entry(group).or_default();
        sum.taken += a.taken;
        sum.limited += a.limited;
        sum.blocked += a.blocked;
        sum.other += a.other;
    }
    groups
}

/// An outcome row of the table.
fn row(name: &str, n: u64) -> String {
    format!("  {name:<34}{n:>12}")
}

/// Ledger lines (header aside) with this outcome and detail.
fn ledger_lines(ledger: &str, outcome_and_detail: &str) -> u64 {
    ledger
        .lines()
        .filter(|line| line.ends_with(&format!("\t{outcome_and_detail}")))
        .count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusers_are_limited_and_everyone_else_is_accepted() {
    // At most 2 signatures per (petition, address): 3 abusers on 5 petitions get at most 30
    // through, while a million addresses leave room for every other signer (three of ~1000
    // signers on one pair: odds below 1 in 10^5).
    let server = FakeServer::start_with(
        Fault::None,
        Controls {
            ip_limit: Some(2),
            ..Controls::default()
        },
    )
    .await;
    let seed = 51;
    let run = run_then_verify(
        &server,
        "abusers-limited",
        seed,
        &[
            "-R",
            "2000",
            "-z",
            "600ms",
            "--ips",
            "1000000",
            "--abusers",
            "3",
            "--abuse-share",
            "0.25",
        ],
    )
    .await;
    let report = &run.report;
    let o = &report.outcomes;
    let ips = report.ips.as_ref().expect("an ips block");
    let groups = ips.groups.expect("a split by group");
    let (abusers, others) = (groups.abusers, groups.others);
    let total = sent(report);
    assert!(total > 800, "{o:?}");
    assert_eq!(abusers.sent + others.sent, total);

    // The abusers sent their share: 0.25 of about 1200 signers has a standard deviation of
    // 0.0125, and 0.07 is more than five of them.
    let share = abusers.sent as f64 / total as f64;
    assert!((share - 0.25).abs() < 0.07, "{share}");

    // The report's split is exactly what the server answered each group's addresses.
    let server_groups = answers_by_group(&run.answers);
    let (abused, spared) = (server_groups[&Group::Abuser], server_groups[&Group::Other]);
    assert_eq!(
        (abusers.accepted, abusers.limited, abusers.blocked),
        (abused.taken, abused.limited, abused.blocked)
    );
    assert_eq!(
        (others.accepted, others.limited, others.blocked),
        (spared.taken, spared.limited, spared.blocked)
    );
    assert_eq!(o.ip_rate_limited, abused.limited + spared.limited);
    // The abusers were limited, everyone else accepted.
    assert!(abusers.accepted <= 30, "{abusers:?}");
    assert_eq!(
        abusers.limited,
        abusers.sent - abusers.accepted,
        "{abusers:?}"
    );
    assert!(abusers.limited > 100, "{abusers:?}");
    assert_eq!(others.accepted, others.sent, "{others:?}");
    // Refusals of the abuse controls are not errors of the server.
    assert_eq!(o.errors(), 0, "{o:?}");
    assert_eq!(o.rate_limited, 0);

    // Every signer carried the address chosen for it; the three abusers' and many others.
    let chooser = Ips::new(1_000_000, Some((3, 0.25))).unwrap();
    let mut abuser_addresses = std::collections::BTreeSet::new();
    for ((_, email), address) in &run.addresses {
        let (connection, number) = signer_of(email);
        let source = chooser.source(seed, connection, number);
        assert_eq!(
            address.as_deref(),
            Some(source.address().to_string().as_str()),
            "{email}"
        );
        if source.group == Group::Abuser {
            abuser_addresses.insert(source.address());
        }
    }
    assert_eq!(abuser_addresses.len(), 3, "{abuser_addresses:?}");
    assert_eq!(run.address_changes, 0);

    // The ledger says failed ip_rate_limited for each, and verify finds nothing lost.
    assert_eq!(
        ledger_lines(&run.ledger, "failed\tip_rate_limited"),
        o.ip_rate_limited
    );
    assert!(run.verdict.passed(), "{:?}", run.verdict.problems);
    assert_eq!(run.verdict.acknowledged, o.accepted);
    assert_eq!(run.verdict.indeterminate, 0);

    // The table and the JSON show it.
    let table = report.table();
    for needle in [
        "sources    1000000 addresses from 10.0.0.1; 3 abusers from 198.18.0.1 sending 25% of \
         the signers",
        &row("ip rate limited (429)", o.ip_rate_limited),
        &format!("  {:<20}{:>12}", "abusers", abusers.sent),
        &format!("  {:<20}{:>12}", "everyone else", others.sent),
    ] {
        assert!(table.contains(needle), "{needle:?} not in\n{table}");
    }
    let json = serde_json::to_value(report).unwrap();
    assert_eq!(json["outcomes"]["ip_rate_limited"], o.ip_rate_limited);
    assert_eq!(json["ips"]["groups"]["abusers"]["limited"], abusers.limited);
    assert_eq!(json["ips"]["groups"]["others"]["accepted"], others.accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_signer_is_sent_once_never_retried_or_re_sent() {
    // Everyone signs from 10.0.0.1, and the server takes one signature per petition from it:
    // the first signer of each petition is accepted, every other signature limited, the
    // accepted signers' re-sends (a duplicate counts toward the limit) too.
    let server = FakeServer::start_with(
        Fault::None,
        Controls {
            ip_limit: Some(1),
            ..Controls::default()
        },
    )
    .await;
    let run = run_then_verify(
        &server,
        "limited-once",
        52,
        &[
            "-R",
            "1000",
            "-z",
            "400ms",
            "--ips",
            "1",
            "--dup-ratio",
            "0.5",
        ],
    )
    .await;
    let o = &run.report.outcomes;
    let total = sent(&run.report);
    assert!(total > 200, "{o:?}");
    assert_eq!(o.accepted, 5, "one per petition: {o:?}");
    assert_eq!(o.duplicate, 0, "{o:?}");
    assert_eq!(o.ip_rate_limited, total - 5, "{o:?}");
    assert!(o.resends > 0, "the accepted signers were re-sent: {o:?}");
    assert_eq!(o.errors(), 0, "{o:?}");
    assert!(run.report.ips.as_ref().unwrap().groups.is_none());

    // What the server received: each signature once, the accepted signers' re-sends aside.
    let received: u64 = run.receipts.values().map(|&n| u64::from(n)).sum();
    assert_eq!(received, total);
    assert!(run
        .addresses
        .iter()
        .all(|(_, address)| address.as_deref() == Some("10.0.0.1")));
    let accepted: Vec<&(String, String)> = run
        .receipts
        .keys()
        .filter(|(petition, email)| {
            run.ledger
                .contains(&format!("{petition}\t{email}\taccepted\t"))
        })
        .collect();
    assert_eq!(accepted.len(), 5);
    for (key, &n) in &run.receipts {
        if !accepted.contains(&key) {
            assert_eq!(n, 1, "{key:?}: a limited signer was sent again");
        }
    }
    let resent: u64 = accepted
        .iter()
        .map(|key| u64::from(run.receipts[key] - 1))
        .sum();
    assert_eq!(resent, o.resends);

    // The ledger: five accepted, the rest failed ip_rate_limited; verify: nothing lost.
    assert_eq!(
        ledger_lines(&run.ledger, "failed\tip_rate_limited"),
        total - 5
    );
    assert!(run.verdict.passed(), "{:?}", run.verdict.problems);
    assert_eq!(run.verdict.acknowledged, 5);
    assert_eq!(run.verdict.indeterminate, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_abusers_are_counted_per_batch_line_and_not_retried() {
    // The abusers' network is on the block list; nothing is limited.
    let server = FakeServer::start_with(
        Fault::None,
        Controls {
            blocked_prefixes: vec!["198.18."],
            ..Controls::default()
        },
    )
    .await;
    let run = run_then_verify(
        &server,
        "blocked",
        53,
        &[
            "-R",
            "3000",
            "-z",
            "400ms",
            "--batch",
            "10",
            "--ips",
            "500",
            "--abusers",
            "2",
            "--abuse-share",
            "0.3",
            "--dup-ratio",
            "0.2",
        ],
    )
    .await;
    let o = &run.report.outcomes;
    let groups = run.report.ips.as_ref().unwrap().groups.unwrap();
    let (abusers, others) = (groups.abusers, groups.others);
    assert!(abusers.sent > 50, "{abusers:?}");
    assert_eq!(abusers.blocked, abusers.sent, "{abusers:?}");
    assert_eq!(others.accepted, others.sent, "{others:?}");
    assert_eq!(o.blocked, abusers.blocked);
    assert_eq!(o.ip_rate_limited, 0);
    assert!(o.duplicate > 0, "everyone else's re-sends: {o:?}");
    assert_eq!(
        run.address_changes, 0,
        "a re-send came from another address"
    );
    assert_eq!(o.errors(), 0, "{o:?}");
    let server_groups = answers_by_group(&run.answers);
    assert_eq!(server_groups[&Group::Abuser].blocked, abusers.blocked);
    assert_eq!(server_groups[&Group::Other].taken, others.accepted);

    // A blocked signer is never acknowledged, so never re-sent, and never retried.
    for ((petition, email), address) in &run.addresses {
        if address.as_deref().is_some_and(|a| a.starts_with("198.18.")) {
            let key = (petition.clone(), email.clone());
            assert_eq!(run.receipts[&key], 1, "{key:?}");
        }
    }
    assert_eq!(ledger_lines(&run.ledger, "failed\tblocked"), o.blocked);
    assert!(run.verdict.passed(), "{:?}", run.verdict.problems);
    assert_eq!(run.verdict.acknowledged, o.accepted);
    let table = run.report.table();
    assert!(table.contains(&row("blocked (403)", o.blocked)), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_paused_is_counted_as_unavailable_and_refused_in_the_ledger() {
    let server = FakeServer::start_with(
        Fault::None,
        Controls {
            paused: true,
            ..Controls::default()
        },
    )
    .await;
    let run = run_then_verify(
        &server,
        "paused",
        54,
        &["-R", "1000", "-z", "300ms", "--ips", "10"],
    )
    .await;
    let o = &run.report.outcomes;
    let total = sent(&run.report);
    assert!(total > 100, "{o:?}");
    assert_eq!(o.unavailable.get("signing_paused"), Some(&total), "{o:?}");
    assert_eq!(o.accepted + o.ip_rate_limited + o.blocked, 0);
    // A 503 is an error in the progress line: nothing gets in while signing is paused.
    assert_eq!(o.errors(), total);
    assert!(run.receipts.values().all(|&n| n == 1), "never retried");
    // The server took nothing: refused, not in doubt, in the ledger; verify passes.
    assert_eq!(ledger_lines(&run.ledger, "failed\tsigning_paused"), total);
    assert!(run.verdict.passed(), "{:?}", run.verdict.problems);
    assert_eq!(
        (run.verdict.acknowledged, run.verdict.indeterminate),
        (0, 0)
    );
    assert!(run
        .report
        .table()
        .contains(&row("unavailable (503) signing_paused", total)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ips_no_signature_carries_an_address() {
    let server = FakeServer::start_with(
        Fault::None,
        Controls {
            ip_limit: Some(1),
            ..Controls::default()
        },
    )
    .await;
    let run = run_then_verify(
        &server,
        "no-ips",
        55,
        &["-R", "1000", "-z", "200ms", "--dup-ratio", "0.3"],
    )
    .await;
    assert!(!run.addresses.is_empty());
    assert!(
        run.addresses.iter().all(|(_, address)| address.is_none()),
        "an address was sent"
    );
    // Without addresses the limits do not apply: nothing limited, re-sends are duplicates.
    let o = &run.report.outcomes;
    assert_eq!((o.ip_rate_limited, o.blocked), (0, 0));
    assert!(o.duplicate > 0, "{o:?}");
    assert!(run.report.ips.is_none());
    assert!(serde_json::to_value(&run.report)
        .unwrap()
        .get("ips")
        .is_none());
    assert!(!run.report.table().contains("sources "));
    assert!(run.verdict.passed(), "{:?}", run.verdict.problems);
}
