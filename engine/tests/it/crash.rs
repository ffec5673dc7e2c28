//! Crash test: this test binary re-runs itself as a child that ingests with `sync` durability and
//! writes every acknowledgement to a ledger; the parent kill -9s it at random moments (some during
//! recovery), reopens the store and checks every invariant. Beside the signatures to petitions
//! counted at once, the child signs a petition that validates by email, validates some of its
//! tokens, lets others expire (a short grace, swept every 20 ms) and runs invalidation jobs on
//! it: after every kill the parent checks counts and states against the store
//! (`verify_store`), the milestone feed (crossed and regressed in turn), and every token the
//! ledger saw. Cycles: `ENGINE_CRASH_CYCLES` (default 6); replay with the printed
//! `ENGINE_TEST_SEED`.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::{
    Config, Criteria, Engine, InvalidationRequest, NewSignature, Outcome, PetitionSpec,
    SubmitError, Validation,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::{open, seed};

const CHILD_ENV: &str = "ENGINE_CRASH_CHILD";
const PETITIONS: u32 = 5;
const THRESHOLDS: [u64; 3] = [50, 400, 3_000];
/// Signer space: small enough that later cycles re-send earlier cycles' signers.
const SIGNERS: u64 = 40_000;

/// The petition that validates by email.
const EMAIL_PETITION: &str = "crash-email";
const EMAIL_THRESHOLDS: [u64; 3] = [5, 20, 60];
/// Grace of a pending signature in the child: short, so that expiries happen under load.
const GRACE: Duration = Duration::from_millis(400);

/// The country and region signer `s` signs from (a function of the signer, so the parent can
/// tell from the ledger where each acknowledged signature counts).
fn place(s: u64) -> (Option<&'static str>, Option<&'static str>) {
    match s % 5 {
        0 => (Some("GB"), Some("E14000639")),
        1 => (Some("GB"), Some("E14000640")),
        2 => (Some("FR"), None),
        3 => (None, None),
        _ => (Some("US"), Some("US-CA")),
    }
}

/// A signature of signer `s` (`email` is `<letter><s>@...`) with its place.
fn placed(petition: &str, email: String) -> NewSignature {
    let s: u64 = email[1..email.find('@').unwrap_or(1)].parse().unwrap_or(0);
    let (country, region) = place(s);
    let mut signature = NewSignature::new(petition, email);
    signature.country = country.map(str::to_owned);
    signature.region = region.map(str::to_owned);
    signature
}

fn petition(n: u32) -> String {
    format!("crash-{n}")
}

fn config(dir: &Path) -> Config {
    let mut config = Config::persistent(dir);
    config.pending_grace = GRACE;
    config.sweep_interval = Some(Duration::from_millis(20));
    config.lifecycle_step = 64;
    config.invalidation_step = 64;
    // The index is saved every few thousand signatures, so that kills land during saves and
    // during the loads of saved indexes too. Pre-sized, it is a table of 15 MB that each save
    // copies and scans: long enough for the parent to catch one under way.
    config.index_snapshot_signatures = 2_000;
    config.signatures_expected = 1_000_000;
    config
}

/// The child: ingest from four threads until killed, appending each acknowledged
/// `petition email` to the ledger after the engine answered.
fn child(dir: &Path, ledger: &Path, seed: u64) -> ! {
    let engine = Engine::open(config(dir)).expect("child opens");
    engine.wait_ready().expect("child recovers");
    let mut specs: Vec<PetitionSpec> = (0..PETITIONS)
        .map(|n| {
            let mut spec = PetitionSpec::new(petition(n));
            spec.thresholds = Some(THRESHOLDS.to_vec());
            spec
        })
        .collect();
    let mut email = PetitionSpec::new(EMAIL_PETITION);
    email.thresholds = Some(EMAIL_THRESHOLDS.to_vec());
    email.validation = Some(Validation::Email);
    specs.push(email);
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
        let lifecycle_engine = engine.clone();
        let lifecycle_ledger = Arc::clone(&ledger);
        scope.spawn(move || lifecycle(&lifecycle_engine, &lifecycle_ledger, seed));
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
                            placed(&petition(p), format!("s{s}@example.org"))
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

/// The child's lifecycle thread: signs the email petition (a quarter of its signers from
/// `bad.example`), validates some tokens at once and some later, re-signs some signers, and
/// every so often starts an invalidation of `bad.example`. Ledger lines: `P token email` for a
/// pending answer, `V token email` for a validated (or already validated) one.
fn lifecycle(engine: &Engine, ledger: &Mutex<std::fs::File>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x11fe);
    let mut tokens: Vec<(String, String)> = Vec::new();
    let mut rounds_since_job = 0u32;
    loop {
        rounds_since_job += 1;
        let mut lines = String::new();
        let n = rng.random_range(1..16);
        let batch: Vec<NewSignature> = (0..n)
            .map(|_| {
                let s = rng.random_range(0..20_000);
                let domain = if s % 4 == 0 { "bad" } else { "good" };
                placed(EMAIL_PETITION, format!("e{s}@{domain}.example"))
            })
            .collect();
        for (signature, outcome) in batch.iter().zip(engine.submit_batch(batch.clone())) {
            if let Ok(Outcome::Pending { token, .. }) = outcome {
                lines.push_str(&format!("P {token} {}\n", signature.email));
                tokens.push((token.to_string(), signature.email.clone()));
            }
        }
        // Validate about two thirds of what was handed out, some twice.
        for _ in 0..n {
            if tokens.is_empty() || rng.random_bool(0.3) {
                continue;
            }
            let (token, email) = &tokens[rng.random_range(0..tokens.len())];
            if let Ok(Outcome::Validated { .. } | Outcome::AlreadyValidated { .. }) =
                engine.validate(token)
            {
                lines.push_str(&format!("V {token} {email}\n"));
            }
        }
        if tokens.len() > 4_000 {
            tokens.drain(..2_000);
        }
        if rounds_since_job == 40 {
            rounds_since_job = 0;
            let request = InvalidationRequest {
                petition: Some(EMAIL_PETITION.into()),
                criteria: Criteria {
                    email_domain: Some("bad.example".into()),
                    ..Criteria::default()
                },
            };
            // Too many running is fine: one of them covers these signatures.
            let _ = engine.start_invalidation(request);
        }
        ledger
            .lock()
            .expect("ledger lock")
            .write_all(lines.as_bytes())
            .expect("ledger write");
    }
}

/// The lifecycle lines of the ledger: every token handed out (with its email), and the tokens
/// acknowledged validated.
type Tokens = (HashMap<String, String>, HashSet<String>);

fn read_tokens(path: &Path) -> Tokens {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut handed, mut validated) = (HashMap::new(), HashSet::new());
    for line in text.lines() {
        let mut parts = line.split(' ');
        let (Some(kind), Some(token), Some(email), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if token.len() != engine::TOKEN_CHARS || !email.ends_with(".example") {
            continue;
        }
        match kind {
            "P" => {
                handed.insert(token.to_owned(), email.to_owned());
            }
            "V" => {
                validated.insert(token.to_owned());
            }
            _ => {}
        }
    }
    (handed, validated)
}

/// Every token the ledger saw still names its signature: a validated one answers already
/// validated (or invalidated, if its signer is from `bad.example`); any other answers one of
/// the states a signature can be in, never unknown.
fn check_tokens(engine: &Engine, tokens: &Tokens, cycle: u64) {
    let (handed, validated) = tokens;
    for token in validated {
        let bad = handed
            .get(token)
            .is_some_and(|e| e.ends_with("@bad.example"));
        match engine.validate(token) {
            Ok(Outcome::AlreadyValidated { .. }) => {}
            Err(SubmitError::Invalidated) if bad => {}
            other => panic!("cycle {cycle}: validated token {token} now answers {other:?}"),
        }
    }
    for (token, email) in handed {
        match engine.validate(token) {
            Ok(Outcome::Validated { .. } | Outcome::AlreadyValidated { .. })
            | Err(SubmitError::TokenExpired) => {}
            Err(SubmitError::Invalidated) if email.ends_with("@bad.example") => {}
            other => panic!("cycle {cycle}: token of {email} answers {other:?}"),
        }
    }
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
    let mut kills_during_saves = 0;
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
        let started = std::time::Instant::now();
        // Some kills land during the child's recovery (which loads the saved index), one in
        // four as soon as an index save is seen under way, the others at random under load.
        if cycle % 4 == 3 {
            std::thread::sleep(Duration::from_millis(rng.random_range(5..60)));
        } else if cycle % 4 == 1 {
            std::thread::sleep(Duration::from_millis(200));
            let temporary = data.join("index.tmp");
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !temporary.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        } else {
            std::thread::sleep(Duration::from_millis(rng.random_range(200..1_200)));
        };
        let lifetime = started.elapsed().as_millis();
        child.kill().expect("kill -9");
        child.wait().expect("child reaped");
        let during_save = data.join("index.tmp").exists();
        kills_during_saves += u64::from(during_save);

        let engine = open(config(&data));
        // From the second cycle on there is always a saved index (the last clean close left
        // one): it must be this store's and check out against it.
        let index_from = engine.stats().recovery_index_from;
        if cycle > 0 {
            assert!(
                index_from.is_some(),
                "cycle {cycle}: the saved index was not used"
            );
        }
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
            // Every acknowledged signer counts where it signed from: at least the acknowledged
            // ones in each country and region, and the countries sum to the count.
            let mut countries: HashMap<&str, u64> = HashMap::new();
            let mut regions: HashMap<&str, u64> = HashMap::new();
            for email in emails {
                let (country, region) =
                    place(email[1..email.find('@').unwrap_or(1)].parse().unwrap_or(0));
                *countries.entry(country.unwrap_or("ZZ")).or_default() += 1;
                if let Some(region) = region {
                    *regions.entry(region).or_default() += 1;
                }
            }
            let (total, stored) = engine.countries(petition).expect("exists");
            assert_eq!(total, count, "cycle {cycle}: {petition}");
            assert_eq!(stored.iter().map(|c| c.count).sum::<u64>(), count);
            for (country, acked) in countries {
                let n = stored
                    .iter()
                    .find(|c| c.country == country)
                    .map_or(0, |c| c.count);
                assert!(
                    n >= acked,
                    "cycle {cycle}: {petition} counts {n} in {country}, {acked} acknowledged"
                );
            }
            let stored = engine
                .regions(petition, None)
                .expect("valid")
                .expect("exists");
            for (region, acked) in regions {
                let n = stored
                    .iter()
                    .find(|r| r.region == region)
                    .map_or(0, |r| r.count);
                assert!(
                    n >= acked,
                    "cycle {cycle}: {petition} counts {n} in {region}, {acked} acknowledged"
                );
            }
            // Every acknowledged signer must be known: a re-send is a duplicate.
            let batch = emails.iter().map(|e| placed(petition, e.clone())).collect();
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
        let tokens = read_tokens(&ledger);
        check_tokens(&engine, &tokens, cycle);
        engine
            .verify_store()
            .expect("store consistent after the token checks");
        let ids = (0..PETITIONS)
            .map(petition)
            .chain([EMAIL_PETITION.to_owned()]);
        for id in ids {
            if let Some(info) = engine.petition(&id) {
                let thresholds: &[u64] = if id == EMAIL_PETITION {
                    &EMAIL_THRESHOLDS
                } else {
                    &THRESHOLDS
                };
                // Thresholds were fixed at registration: exactly those at or below the count
                // stand reached, whatever crossed and regressed before.
                let want: Vec<u64> = thresholds
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
            "crash cycle {cycle}: killed after {lifetime} ms{}; index loaded from mark {index_from:?}; {acked_total} acknowledged, {} stored, {} tokens ({} validated), email petition {:?}, consistent",
            if during_save { " during an index save" } else { "" },
            report.signatures,
            tokens.0.len(),
            tokens.1.len(),
            engine.petition(EMAIL_PETITION).map(|p| (p.count, p.pending_count, p.invalidated_count)),
        );
        engine.close().expect("closes");
    }
    if cycles >= 2 {
        assert!(
            kills_during_saves > 0,
            "no kill landed during an index save"
        );
    }
}

const SAVE_CHILD_ENV: &str = "ENGINE_INDEX_SAVE_CHILD";
const SAVE_EVERY: u64 = 2_000;

/// The engine of `a_kill_after_an_index_save_reads_back_only_what_followed`: petitions `a` and
/// `e` (validation by email, a grace of one hour), the index saved every [`SAVE_EVERY`]
/// signatures, no sweep but the one the child calls.
fn save_config(dir: &Path, clock: Arc<engine::ManualClock>) -> Config {
    let mut config = Config::persistent(dir);
    config.clock = clock;
    config.pending_grace = Duration::from_secs(3600);
    config.sweep_interval = None;
    config.index_snapshot_signatures = SAVE_EVERY;
    config
}

/// The child: signs 300 pending signers to `e` and 1,700 to `a`, waits for the index to be
/// saved at mark 2,000, then lets the 300 expire: signers 0–99 sign again before the sweep
/// (their old signatures drop in the same batch), the sweep drops 100–299, and 200–249 sign
/// again after it. Then 400 more to `a`. It writes the mark to `done` and waits to be killed.
fn save_child(dir: &Path, done: &Path) -> ! {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis() as u64;
    let clock = Arc::new(engine::ManualClock::new(now));
    let engine = Engine::open(save_config(dir, Arc::clone(&clock))).expect("child opens");
    engine.wait_ready().expect("child recovers");
    let mut email = PetitionSpec::new("e");
    email.validation = Some(Validation::Email);
    for spec in [PetitionSpec::new("a"), email] {
        engine.register(spec).expect("child registers");
    }
    let sign = |petition: &str, range: std::ops::Range<u64>| {
        let batch = range
            .map(|s| NewSignature::new(petition, format!("s{s}@example.org")))
            .collect();
        for outcome in engine.submit_batch(batch) {
            assert!(
                matches!(
                    outcome,
                    Ok(Outcome::Accepted { .. } | Outcome::Pending { .. })
                ),
                "{outcome:?}"
            );
        }
    };
    sign("e", 0..300);
    sign("a", 0..1_700);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while engine.stats().index_saved_from != Some(2_000) {
        assert!(std::time::Instant::now() < deadline, "no index saved");
        std::thread::sleep(Duration::from_millis(10));
    }
    clock.advance(Duration::from_secs(7200));
    sign("e", 0..100);
    assert_eq!(engine.sweep_expired().expect("sweeps"), 200);
    sign("e", 200..250);
    sign("a", 1_700..2_100);
    let stats = engine.stats();
    // Whole or not at all for the parent, which reads it while this runs.
    let written = done.with_extension("tmp");
    std::fs::write(
        &written,
        format!(
            "{} {}",
            stats.index_saved_from.expect("saved"),
            stats.index_saves_total
        ),
    )
    .expect("writes done");
    std::fs::rename(&written, done).expect("renames done");
    loop {
        std::thread::park();
    }
}

#[test]
fn a_kill_after_an_index_save_reads_back_only_what_followed() {
    if let Ok(spec) = std::env::var(SAVE_CHILD_ENV) {
        let (dir, done) = spec.split_once('|').expect("dir|done");
        save_child(Path::new(dir), Path::new(done));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let done = dir.path().join("done");
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "crash::a_kill_after_an_index_save_reads_back_only_what_followed",
            "--exact",
            "--nocapture",
        ])
        .env(
            SAVE_CHILD_ENV,
            format!("{}|{}", data.display(), done.display()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("child starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let written = loop {
        if let Ok(text) = std::fs::read_to_string(&done) {
            if !text.is_empty() {
                break text;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the child stopped: {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the child never got done"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().expect("kill -9");
    child.wait().expect("child reaped");
    assert_eq!(written, "2000 1", "one index saved, at mark 2,000");

    let clock = Arc::new(engine::ManualClock::new(0));
    let engine = open(save_config(&data, clock));
    let stats = engine.stats();
    // Signatures 2,000 on: 100 re-signed before the sweep, 50 after it, 400 to `a`.
    assert_eq!(
        (stats.recovery_index_from, stats.recovery_expected),
        (Some(2_000), 550),
        "the saved index, and only what followed it read back"
    );
    engine.verify_store().expect("the index is the store's");
    assert_eq!(engine.count("a"), Some(2_100));
    let e = engine.petition("e").expect("exists");
    assert_eq!(e.pending_count, 150, "0–99 and 200–249 pending again");
    // The swept signers that did not sign again have their slots back (each a new pending
    // signature); the others hold theirs (a re-submission of a pending one adds nothing).
    let again: Vec<NewSignature> = (0..300)
        .map(|s| NewSignature::new("e", format!("s{s}@example.org")))
        .collect();
    for (s, outcome) in engine.submit_batch(again).into_iter().enumerate() {
        assert!(
            matches!(outcome, Ok(Outcome::Pending { .. })),
            "signer {s} of e: {outcome:?}"
        );
    }
    let e = engine.petition("e").expect("exists");
    assert_eq!(e.pending_count, 300, "150 freed slots taken again");
    let a: Vec<NewSignature> = (0..2_100)
        .map(|s| NewSignature::new("a", format!("s{s}@example.org")))
        .collect();
    for outcome in engine.submit_batch(a) {
        assert!(
            matches!(outcome, Ok(Outcome::Duplicate { .. })),
            "{outcome:?}"
        );
    }
    engine
        .verify_store()
        .expect("consistent after signing again");
}
