//! Crash test: this test binary re-runs itself as a child that ingests with `sync` durability and
//! writes every acknowledgement to a ledger; the parent kill -9s it at random moments (some during
//! recovery), reopens the store and checks every invariant. Cycles: `ENGINE_CRASH_CYCLES`
//! (default 6); replay with the printed `ENGINE_TEST_SEED`.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::{Config, Engine, NewSignature, Outcome, PetitionSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::{open, seed};

const CHILD_ENV: &str = "ENGINE_CRASH_CHILD";
const PETITIONS: u32 = 5;
const THRESHOLDS: [u64; 3] = [50, 400, 3_000];
/// Signer space: small enough that later cycles re-send earlier cycles' signers.
const SIGNERS: u64 = 40_000;

fn petition(n: u32) -> String {
    format!("crash-{n}")
}

/// The child: ingest from four threads until killed, appending each acknowledged
/// `petition email` to the ledger after the engine answered.
fn child(dir: &Path, ledger: &Path, seed: u64) -> ! {
    let engine = Engine::open(Config::persistent(dir)).expect("child opens");
    engine.wait_ready().expect("child recovers");
    let specs = (0..PETITIONS)
        .map(|n| {
            let mut spec = PetitionSpec::new(petition(n));
            spec.thresholds = Some(THRESHOLDS.to_vec());
            spec
        })
        .collect();
    for result in engine.register_many(specs) {
        result.expect("child registers");
    }
    let ledger = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(ledger)
            .expect("ledger opens"),
    ));
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let engine = engine.clone();
            let ledger = Arc::clone(&ledger);
            scope.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ (t << 32));
                loop {
                    let n = rng.random_range(1..64);
                    let batch: Vec<NewSignature> = (0..n)
                        .map(|_| {
                            // Petition 0 is hot, as in a viral spike.
                            let p = if rng.random_bool(0.7) {
                                0
                            } else {
                                rng.random_range(0..PETITIONS)
                            };
                            let s = rng.random_range(0..SIGNERS);
                            NewSignature::new(petition(p), format!("s{s}@example.org"))
                        })
                        .collect();
                    let outcomes = engine.submit_batch(batch.clone());
                    let mut lines = String::new();
                    for (signature, outcome) in batch.iter().zip(outcomes) {
                        if let Ok(Outcome::Accepted { .. } | Outcome::Duplicate { .. }) = outcome {
                            lines
                                .push_str(&format!("{} {}\n", signature.petition, signature.email));
                        }
                    }
                    // One write per batch: a kill leaves whole lines or a torn last line, which
                    // the parent ignores.
                    ledger
                        .lock()
                        .expect("ledger lock")
                        .write_all(lines.as_bytes())
                        .expect("ledger write");
                }
            });
        }
    });
    unreachable!("the child ingests until it is killed")
}

fn read_ledger(path: &Path) -> HashMap<String, HashSet<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut acked: HashMap<String, HashSet<String>> = HashMap::new();
    for line in text.lines() {
        if let Some((petition, email)) = line.split_once(' ') {
            if email.ends_with("@example.org") {
                acked
                    .entry(petition.to_string())
                    .or_default()
                    .insert(email.to_string());
            }
        }
    }
    acked
}

#[test]
fn kill_9_under_load_loses_nothing_acknowledged() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let mut parts = spec.splitn(3, '|');
        let (dir, ledger, seed) = (
            parts.next().expect("dir"),
            parts.next().expect("ledger"),
            parts.next().expect("seed").parse().expect("seed"),
        );
        child(Path::new(dir), Path::new(ledger), seed);
    }
    let seed = seed("crash");
    let cycles: u64 = std::env::var("ENGINE_CRASH_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(6);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let ledger = dir.path().join("ledger");
    let exe = std::env::current_exe().expect("test binary path");
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args([
                "crash::kill_9_under_load_loses_nothing_acknowledged",
                "--exact",
                "--nocapture",
            ])
            .env(
                CHILD_ENV,
                format!(
                    "{}|{}|{}",
                    data.display(),
                    ledger.display(),
                    rng.random::<u64>()
                ),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("child starts");
        // Some kills land during the child's recovery, most under load.
        let lifetime = if rng.random_bool(0.25) {
            rng.random_range(5..60)
        } else {
            rng.random_range(200..1_200)
        };
        std::thread::sleep(Duration::from_millis(lifetime));
        child.kill().expect("kill -9");
        child.wait().expect("child reaped");

        let engine = open(Config::persistent(&data));
        let acked = read_ledger(&ledger);
        let mut acked_total = 0;
        for (petition, emails) in &acked {
            acked_total += emails.len();
            let count = engine
                .count(petition)
                .expect("acknowledged petition exists");
            assert!(
                count >= emails.len() as u64,
                "cycle {cycle}: {petition} counts {count} but {} were acknowledged",
                emails.len()
            );
            // Every acknowledged signer must be known: a re-send is a duplicate.
            let batch = emails
                .iter()
                .map(|e| NewSignature::new(petition.clone(), e.clone()))
                .collect();
            for (email, outcome) in emails.iter().zip(engine.submit_batch(batch)) {
                assert!(
                    matches!(outcome, Ok(Outcome::Duplicate { .. })),
                    "cycle {cycle}: acknowledged {email} on {petition} was lost: {outcome:?}"
                );
            }
        }
        let report = engine
            .verify_store()
            .expect("store consistent after kill -9");
        for n in 0..PETITIONS {
            if let Some(info) = engine.petition(&petition(n)) {
                let want: Vec<u64> = THRESHOLDS
                    .iter()
                    .copied()
                    .filter(|t| *t <= info.count)
                    .collect();
                assert_eq!(
                    info.milestones_reached, want,
                    "cycle {cycle}: milestones of {}",
                    info.id
                );
            }
        }
        eprintln!(
            "crash cycle {cycle}: killed after {lifetime} ms; {acked_total} acknowledged, {} stored, consistent",
            report.signatures
        );
        engine.close().expect("closes");
    }
}
