//! `--validate-share`: the two-phase load (sign, then validate the kept tokens) against the fake
//! server's lifecycle model, and `verify` on the ledgers it writes: it passes on a correct
//! server and fails on one that counts a validation twice, loses one, or forgets a pending
//! signer; expiry and old ledgers do not make it fail.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use loadtest::ledger::{self, HEADER, HEADER_V1};
use loadtest::outcome::LedgerClass;
use loadtest::report::Report;
use loadtest::verify::Verdict;

use crate::fake::{FakeServer, Fault, ADMIN_KEY, INGEST_KEY};

const SEED: u64 = 31;

/// A two-phase run and its verification.
struct Run {
    report: Report,
    /// The ledger.
    text: String,
    /// The tokens the server was asked to validate before `verify` re-validated its sample.
    requested: Vec<String>,
    /// Signers pending on the server after the run.
    pending: u64,
    verdict: Verdict,
}

/// Runs `--petitions 5 --seed 31 --validate-share <share>` with a ledger plus `extra` against
/// `server`, then verifies the ledger (re-sending a sample of 100).
async fn run_then_verify(server: &FakeServer, name: &str, share: &str, extra: &[&str]) -> Run {
    let dir = crate::scratch(name);
    let ledger_path = dir.join("ledger.tsv");
    let ledger_text = ledger_path.to_str().unwrap();
    let url = server.url();
    let seed = SEED.to_string();
    let mut flags = vec![
        "--target",
        &url,
        "--api-key",
        INGEST_KEY,
        "--admin-key",
        ADMIN_KEY,
        "--petitions",
        "5",
        "--seed",
        &seed,
        "--ledger",
        ledger_text,
        "--validate-share",
        share,
    ];
    flags.extend_from_slice(extra);
    let args = crate::run_args(&flags);
    let report = loadtest::run::execute(&args, SEED, false).await.unwrap();
    print!("{}", report.table());
    let text = std::fs::read_to_string(&ledger_path).unwrap();
    let requested = server.validation_requests();
    let pending = server.pending_total() as u64;
    let verdict = verify(&url, &ledger_path).await;
    print!("{}", verdict.render());
    std::fs::remove_dir_all(&dir).unwrap();
    Run {
        report,
        text,
        requested,
        pending,
        verdict,
    }
}

async fn verify(url: &str, ledger: &Path) -> Verdict {
    crate::verify_ledger(url, ledger.to_str().unwrap(), 100).await
}

/// The ledger's lines as (petition, email, class, token).
fn lines(text: &str) -> Vec<(String, String, LedgerClass, Option<String>)> {
    text.lines()
        .filter_map(|line| ledger::parse_line(line).unwrap())
        .map(|e| {
            (
                e.petition.to_owned(),
                e.email.to_owned(),
                e.class,
                e.token.map(|t| t.to_string()),
            )
        })
        .collect()
}

/// Connection and number of `lt<seed>.<connection>.<number>@example.org`.
fn signer_of(email: &str) -> (u32, u64) {
    let local = email.strip_suffix("@example.org").unwrap();
    let mut parts = local.split('.').skip(1);
    let connection = parts.next().unwrap().parse().unwrap();
    let number = parts.next().unwrap().parse().unwrap();
    (connection, number)
}

/// The tokens the keep rule picks among the signers the ledger saw pending (each signer's
/// first pending line: its answer as a new signer), and how many such signers there are.
fn tokens_to_keep(text: &str, share: f64) -> (HashSet<String>, u64) {
    let mut seen = HashSet::new();
    let mut keep = HashSet::new();
    for (_, email, class, token) in lines(text) {
        if class != LedgerClass::Pending || !seen.insert(email.clone()) {
            continue;
        }
        let (connection, number) = signer_of(&email);
        if loadtest::kept::keep(SEED, connection, number, share) {
            keep.insert(token.unwrap());
        }
    }
    (keep, seen.len() as u64)
}

/// The tokens of the ledger's lines of `class`.
fn tokens_of(text: &str, class: LedgerClass) -> Vec<String> {
    lines(text)
        .into_iter()
        .filter(|line| line.2 == class)
        .map(|line| line.3.unwrap())
        .collect()
}

/// Everything a correct two-phase run must show.
fn check_a_correct_run(server: &FakeServer, run: &Run, share: f64) {
    let (report, text) = (&run.report, run.text.as_str());
    let o = &report.outcomes;
    let v = report.validation.as_ref().expect("a phase 2 report");
    assert_eq!(o.accepted, 0, "email petitions answer pending: {o:?}");
    assert!(o.pending > 300, "{o:?}");
    assert!(server.validates_by_email(&format!("lt-{SEED}-0")));

    // Phase 1 keeps about `share` of the new pending signers...
    assert!(v.candidates > 300, "{v:?}");
    let kept_share = v.kept as f64 / v.candidates as f64;
    assert!(
        (kept_share - share).abs() < 0.06,
        "kept {} of {} candidates at share {share}",
        v.kept,
        v.candidates
    );
    // ... exactly those the seeded rule picks, which phase 2 validates once each.
    let (expected, candidates) = tokens_to_keep(text, share);
    assert_eq!(candidates, v.candidates);
    assert_eq!(expected.len() as u64, v.kept);
    assert_eq!(
        run.requested.len() as u64,
        v.kept,
        "each kept token is sent once"
    );
    let requested: HashSet<String> = run.requested.iter().cloned().collect();
    assert_eq!(requested, expected);
    let validated = tokens_of(text, LedgerClass::Validated);
    assert_eq!(validated.into_iter().collect::<HashSet<_>>(), expected);

    let p2 = &v.outcomes;
    assert_eq!(
        (p2.sent, p2.validated, p2.already_validated, p2.not_sent),
        (v.kept, v.kept, 0, 0),
        "{p2:?}"
    );
    assert!(
        p2.rejected.is_empty() && p2.unavailable.is_empty(),
        "{p2:?}"
    );
    assert_eq!(v.latency_ms.corrected.count, p2.requests);
    assert!(v.rate.achieved_per_s > 0.0);
    // Every signer not validated is still pending.
    assert_eq!(run.pending, v.candidates - v.kept);

    // The report shows phase 2 separately, in the table and in the JSON.
    let table = report.table();
    assert!(
        table.contains("phase 2") && table.contains("validated (200)"),
        "{table}"
    );
    let json = serde_json::to_value(report).unwrap();
    assert_eq!(json["outcomes"]["pending"], o.pending);
    assert_eq!(json["validation"]["share"], share);
    assert_eq!(json["validation"]["kept"], v.kept);
    assert_eq!(json["validation"]["outcomes"]["validated"], v.kept);
    assert_eq!(json["validation"]["outcomes"]["already_validated"], 0);
    assert!(json["validation"]["latency_ms"]["corrected"]["p99"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_keeps_the_share_and_validates_exactly_the_kept_tokens() {
    let server = FakeServer::start(Fault::None).await;
    let run = run_then_verify(
        &server,
        "validate-open",
        "0.3",
        &["-c", "4", "-R", "2000", "-z", "600ms", "--dup-ratio", "0.2"],
    )
    .await;
    check_a_correct_run(&server, &run, 0.3);
    let (report, text, verdict) = (run.report, run.text, run.verdict);
    // Pending signers were re-sent (about a fifth of what phase 1 managed to send).
    assert!(report.outcomes.resends > 20, "{:?}", report.outcomes);
    // Re-sent pending signers got their token back: one token per signer in the ledger.
    let mut tokens: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for (_, email, class, token) in lines(&text) {
        if class == LedgerClass::Pending {
            tokens.entry(email).or_default().insert(token.unwrap());
        }
    }
    assert!(tokens.values().all(|t| t.len() == 1));

    assert!(verdict.passed(), "{:?}", verdict.problems);
    let v = report.validation.as_ref().unwrap();
    assert_eq!(verdict.indeterminate, 0);
    assert_eq!(verdict.validated, v.kept);
    // Exact: with nothing in doubt, the server counts the validated signers, no more.
    assert_eq!(verdict.counted, v.kept);
    assert_eq!(verdict.pending_counted, v.candidates - v.kept);
    assert_eq!(verdict.pending_signers, v.candidates - v.kept);
    assert!(
        verdict.revalidated > 0,
        "validated tokens in the sample are re-validated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_batches_validate_in_batch_lines() {
    let server = FakeServer::start(Fault::None).await;
    let run = run_then_verify(
        &server,
        "validate-batch",
        "0.5",
        &["-c", "4", "-z", "400ms", "--batch", "20", "-t", "2"],
    )
    .await;
    check_a_correct_run(&server, &run, 0.5);
    let (report, verdict) = (run.report, run.verdict);
    assert_eq!(report.mode, "closed");
    let v = report.validation.as_ref().unwrap();
    // 20 validation lines per request, the last one with what is left.
    assert_eq!(v.outcomes.requests, v.kept.div_ceil(20));
    assert!(verdict.passed(), "{:?}", verdict.problems);
    assert_eq!(verdict.counted, v.kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_fails_when_a_validation_is_counted_twice() {
    let server = FakeServer::start(Fault::DoubleCountValidation { nth: 20 }).await;
    let verdict = run_then_verify(
        &server,
        "validate-double",
        "0.5",
        &["-c", "4", "-R", "1000", "-z", "400ms"],
    )
    .await
    .verdict;
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
async fn verify_fails_when_a_validation_is_lost() {
    let server = FakeServer::start(Fault::LoseValidation { nth: 20 }).await;
    let verdict = run_then_verify(
        &server,
        "validate-lose",
        "0.5",
        &["-c", "4", "-R", "1000", "-z", "400ms"],
    )
    .await
    .verdict;
    assert!(!verdict.passed());
    assert!(
        verdict
            .problems
            .iter()
            .any(|p| p.starts_with("lost: petition") && p.contains("(1 missing)")),
        "{:?}",
        verdict.problems
    );
    // The lost signer is still pending on the server, one more than can be.
    assert!(
        verdict
            .problems
            .iter()
            .any(|p| p.starts_with("pending over-counted: petition")),
        "{:?}",
        verdict.problems
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_fails_when_a_pending_signer_is_forgotten() {
    let server = FakeServer::start(Fault::ForgetPending { nth: 30 }).await;
    let Run {
        report, verdict, ..
    } = run_then_verify(
        &server,
        "validate-forget",
        "0.2",
        &["-c", "4", "-R", "1000", "-z", "400ms"],
    )
    .await;
    assert!(!verdict.passed());
    // Answered pending, never validated (or its validation refused as unknown_token, which
    // leaves it pending as far as the contract goes), yet not pending on the server.
    assert!(
        verdict
            .problems
            .iter()
            .any(|p| p.starts_with("pending lost: petition") && p.contains("(1 missing)")),
        "{:?}",
        verdict.problems
    );
    let v = report.validation.unwrap();
    assert!(
        v.outcomes
            .rejected
            .get("unknown_token")
            .copied()
            .unwrap_or(0)
            <= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_refused_and_do_not_fail_verify() {
    let server = FakeServer::start(Fault::ExpiredTokens).await;
    let Run {
        report,
        text,
        verdict,
        ..
    } = run_then_verify(
        &server,
        "validate-expired",
        "0.5",
        &["-c", "4", "-R", "1000", "-z", "400ms"],
    )
    .await;
    let v = report.validation.as_ref().unwrap();
    assert!(v.kept > 50, "{v:?}");
    assert_eq!(v.outcomes.validated, 0);
    assert_eq!(v.outcomes.rejected.get("token_expired"), Some(&v.kept));
    assert!(report.table().contains("rejected token_expired"));
    assert_eq!(
        tokens_of(&text, LedgerClass::ValidationFailed).len() as u64,
        v.kept
    );
    // Every pending token had expired, so pending_count 0 is allowed: the tokens refused as
    // expired do not bind it, nor do the others, which may have expired.
    assert!(verdict.passed(), "{:?}", verdict.problems);
    assert_eq!(verdict.pending_counted, 0);
    assert_eq!(verdict.pending_signers, v.candidates);
    assert_eq!(verdict.possibly_expired, v.candidates - v.kept);
    assert_eq!(verdict.counted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_duration_bounds_phase_two() {
    // 2 connections against 50 ms per validation: at most about 40 a second, while phase 1
    // keeps up to 400 tokens (-R 400 for 1 s, all kept) to validate at -R 400.
    let server = FakeServer::start(Fault::SlowValidations {
        each: Duration::from_millis(50),
    })
    .await;
    let Run {
        report,
        text,
        verdict,
        ..
    } = run_then_verify(
        &server,
        "validate-slow",
        "1",
        &["-R", "400", "-z", "1s", "-c", "2"],
    )
    .await;
    let v = report.validation.as_ref().unwrap();
    // Share 1 and no re-sends: every pending answer is kept.
    assert_eq!(v.kept, report.outcomes.pending, "{v:?}");
    assert!(v.kept >= 200, "{v:?}");
    // Validating them all would take 5 s or more; phase 2 ends at -z plus the answers
    // outstanding, having sent what 2 connections at 50 ms each manage in 1 s.
    assert!(v.elapsed_s < 2.0, "phase 2 took {} s", v.elapsed_s);
    assert!(v.outcomes.sent <= 2 * (1000 / 50 + 1), "{v:?}");
    assert!(v.outcomes.validated > 0, "{v:?}");
    assert_eq!(v.outcomes.sent + v.outcomes.not_sent, v.kept);
    assert!(report.table().contains("not sent (-z or Ctrl-C first)"));
    // Only what was sent is in the ledger, and what was not sent is still pending.
    assert_eq!(
        tokens_of(&text, LedgerClass::Validated).len() as u64,
        v.outcomes.validated
    );
    assert!(verdict.passed(), "{:?}", verdict.problems);
    assert_eq!(verdict.pending_counted, v.kept - v.outcomes.validated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_check_covers_validations() {
    let flags = |url: &str, seed: &'static str| {
        crate::run_args(&[
            "--target",
            url,
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
            seed,
            "--validate-share",
            "0.5",
            "--durability-check",
            "--no-progress",
        ])
    };
    let server = FakeServer::start(Fault::None).await;
    assert_eq!(
        loadtest::run_command(flags(&server.url(), "32"), false)
            .await
            .unwrap(),
        loadtest::RunStatus::Passed
    );
    let lossy = FakeServer::start(Fault::LoseValidation { nth: 5 }).await;
    assert_eq!(
        loadtest::run_command(flags(&lossy.url(), "33"), false)
            .await
            .unwrap(),
        loadtest::RunStatus::DurabilityFailed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_ledgers_still_verify() {
    // A server from before the lifecycle and a ledger as the loadtest of then wrote it.
    let server = FakeServer::start(Fault::OldServer).await;
    let dir = crate::scratch("old-ledger");
    let ledger_path = dir.join("ledger.tsv");
    let url = server.url();
    let args = crate::run_args(&[
        "--target",
        &url,
        "--api-key",
        ADMIN_KEY,
        "-R",
        "1000",
        "-z",
        "300ms",
        "-c",
        "2",
        "--petitions",
        "3",
        "--seed",
        "34",
        "--dup-ratio",
        "0.2",
        "--ledger",
        ledger_path.to_str().unwrap(),
    ]);
    let report = loadtest::run::execute(&args, 34, false).await.unwrap();
    assert!(report.validation.is_none());
    assert!(serde_json::to_value(&report)
        .unwrap()
        .get("validation")
        .is_none());
    let text = std::fs::read_to_string(&ledger_path).unwrap();
    let v1 = text.replacen(HEADER, HEADER_V1, 1);
    assert!(v1.starts_with(HEADER_V1) && v1 != text);
    std::fs::write(&ledger_path, &v1).unwrap();
    let verdict = verify(&url, &ledger_path).await;
    assert!(verdict.passed(), "{:?}", verdict.problems);
    assert_eq!(verdict.counted, report.outcomes.accepted);
    assert_eq!((verdict.pending_counted, verdict.validated), (0, 0));

    // The README's v1 example, word for word, reads.
    let example = format!(
        "{HEADER_V1}\nlt-42-0\tlt42.3.17@example.org\taccepted\t-\n\
         lt-42-0\tlt42.3.9@example.org\tduplicate\t-\n\
         lt-42-5\tlt42.1.9@example.org\tfailed\tinvalid_signature\n\
         lt-42-5\tlt42.0.3@example.org\tindeterminate\ttimeout\n"
    );
    std::fs::write(&ledger_path, example).unwrap();
    let mut classes = Vec::new();
    let entries = ledger::read(&ledger_path, |e| classes.push(e.class)).unwrap();
    assert_eq!(entries, 4);
    assert_eq!(
        classes,
        vec![
            LedgerClass::Accepted,
            LedgerClass::Duplicate,
            LedgerClass::Failed,
            LedgerClass::Indeterminate
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
