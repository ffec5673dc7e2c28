//! The signature lifecycle through the library: pending signatures and their tokens,
//! validation, re-submission, expiry (on an injected clock) and invalidation jobs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{
    Clock, Config, Criteria, Engine, InvalidationError, InvalidationJob, InvalidationRequest,
    JobState, ManualClock, MilestoneKind, NewSignature, Outcome, PetitionSpec, SubmitError, Token,
    Validation, RESUBMITS_MAX,
};

use crate::support::open;

const GRACE: Duration = Duration::from_secs(3600);

/// A persistent engine on a manual clock, with no background sweep.
fn config(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Config {
    let mut config = Config::persistent(dir);
    config.clock = Arc::clone(clock) as Arc<dyn Clock>;
    config.pending_grace = GRACE;
    config.sweep_interval = None;
    config
}

fn email_petition(engine: &Engine, id: &str, thresholds: Vec<u64>) {
    let mut spec = PetitionSpec::new(id);
    spec.validation = Some(Validation::Email);
    spec.thresholds = Some(thresholds);
    engine.register(spec).expect("registers");
}

fn pending(outcome: Result<Outcome, SubmitError>) -> (Token, u64) {
    match outcome {
        Ok(Outcome::Pending { token }) => (token, token.expires_at_ms()),
        other => panic!("expected pending, got {other:?}"),
    }
}

fn sign(engine: &Engine, petition: &str, email: &str) -> Result<Outcome, SubmitError> {
    engine.submit(NewSignature::new(petition, email))
}

/// Polls a job until it is no longer running, with a deadline.
fn finished(engine: &Engine, id: u64) -> InvalidationJob {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = engine.invalidation(id).expect("the job exists");
        if job.state != JobState::Running {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} still running: {job:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_pending_signature_counts_once_validated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(config(dir.path(), &clock));
    email_petition(&engine, "p", vec![1]);
    let (token, expires_at_ms) = pending(sign(&engine, "p", "ada@example.org"));
    assert_eq!(expires_at_ms, clock.now_ms() + GRACE.as_millis() as u64);
    let info = engine.petition("p").expect("exists");
    assert_eq!(
        (info.count, info.pending_count),
        (0, 1),
        "pending is not counted"
    );
    assert!(engine.milestones_after(0, 10).is_empty());

    // The same signer again: the same token, at most RESUBMITS_MAX times.
    for _ in 0..RESUBMITS_MAX {
        assert_eq!(
            pending(sign(&engine, "p", " ADA@example.org")),
            (token, expires_at_ms)
        );
    }
    assert_eq!(
        sign(&engine, "p", "ada@example.org"),
        Err(SubmitError::TooManyResubmits)
    );

    assert_eq!(
        engine.validate(token.text().as_str()),
        Ok(Outcome::Validated { count: 1 })
    );
    assert_eq!(
        engine.validate(token.text().as_str()),
        Ok(Outcome::AlreadyValidated { count: 1 })
    );
    let info = engine.petition("p").expect("exists");
    assert_eq!((info.count, info.pending_count), (1, 0));
    let milestones = engine.milestones_after(0, 10);
    assert_eq!(milestones.len(), 1, "the validation crossed the threshold");
    assert_eq!(milestones[0].kind, MilestoneKind::ThresholdCrossed);
    // A validated signer signing again is a duplicate.
    assert_eq!(
        sign(&engine, "p", "ada@example.org"),
        Ok(Outcome::Duplicate { count: 1 })
    );
    engine.verify_store().expect("consistent");

    // All of it survives a restart.
    engine.close().expect("closes");
    drop(engine);
    let engine = open(config(dir.path(), &clock));
    assert_eq!(
        engine.validate(token.text().as_str()),
        Ok(Outcome::AlreadyValidated { count: 1 })
    );
    assert_eq!(engine.milestones_after(0, 10).len(), 1);
    engine.verify_store().expect("consistent after restart");
}

#[test]
fn forged_tokens_validate_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(config(dir.path(), &clock));
    email_petition(&engine, "p", vec![100]);
    email_petition(&engine, "q", vec![100]);
    let (token, _) = pending(sign(&engine, "p", "ada@example.org"));
    let token = token.text().as_str().to_owned();

    let other_dir = tempfile::tempdir().expect("temp dir");
    let other = open(config(other_dir.path(), &clock));
    email_petition(&other, "p", vec![100]);
    let (foreign, _) = pending(sign(&other, "p", "ada@example.org"));

    let mut corpus: Vec<(String, SubmitError)> = vec![
        (
            foreign.text().as_str().to_owned(),
            SubmitError::UnknownToken,
        ),
        (String::new(), SubmitError::MalformedToken),
        (token[..71].to_owned(), SubmitError::MalformedToken),
        (format!("{token}0"), SubmitError::MalformedToken),
        (token.to_uppercase(), SubmitError::MalformedToken),
        ("z".repeat(72), SubmitError::MalformedToken),
    ];
    // Every bit of the token flipped in turn (as hex digits).
    for at in 0..token.len() {
        let mut forged = token.clone().into_bytes();
        let digit = u8::from_str_radix(&token[at..=at], 16).expect("hex");
        forged[at] = b"0123456789abcdef"[usize::from(digit ^ 1)];
        corpus.push((
            String::from_utf8(forged).expect("ascii"),
            SubmitError::UnknownToken,
        ));
    }
    // Random tokens.
    for n in 0..64u64 {
        let random: String = (0..72)
            .map(|i| b"0123456789abcdef"[((n * 7919 + i * 104_729) % 16) as usize] as char)
            .collect();
        corpus.push((random, SubmitError::UnknownToken));
    }
    // Another petition's signature, named with this token's tag.
    let (q_token, _) = pending(sign(&engine, "q", "bob@example.org"));
    let mut spliced = q_token.text().as_str().to_owned();
    spliced.replace_range(40.., &token[40..]);
    corpus.push((spliced, SubmitError::UnknownToken));

    for (forged, want) in &corpus {
        assert_eq!(engine.validate(forged), Err(want.clone()), "{forged:?}");
    }
    for id in ["p", "q"] {
        let info = engine.petition(id).expect("exists");
        assert_eq!((info.count, info.pending_count), (0, 1), "{id}");
    }
    // The genuine ones still work.
    assert_eq!(engine.validate(&token), Ok(Outcome::Validated { count: 1 }));
    assert_eq!(
        engine.validate(q_token.text().as_str()),
        Ok(Outcome::Validated { count: 1 })
    );
    engine.verify_store().expect("consistent");
}

#[test]
fn thirty_two_threads_validating_one_token_count_it_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(config(dir.path(), &clock));
    email_petition(&engine, "p", vec![100]);
    for round in 0..5 {
        let (token, _) = pending(sign(&engine, "p", &format!("signer{round}@example.org")));
        let barrier = std::sync::Barrier::new(32);
        let outcomes: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..32)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        engine.validate(token.text().as_str())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("validator"))
                .collect()
        });
        let validated = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(Outcome::Validated { .. })))
            .count();
        let again = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(Outcome::AlreadyValidated { .. })))
            .count();
        assert_eq!((validated, again), (1, 31), "round {round}: {outcomes:?}");
        assert_eq!(engine.count("p"), Some(round + 1));
    }
    engine.verify_store().expect("consistent");
}

#[test]
fn pending_signatures_expire_after_the_grace_period() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(config(dir.path(), &clock));
    email_petition(&engine, "p", vec![100]);
    let (old, _) = pending(sign(&engine, "p", "ada@example.org"));
    let (kept, _) = pending(sign(&engine, "p", "bob@example.org"));
    assert_eq!(
        engine.validate(kept.text().as_str()),
        Ok(Outcome::Validated { count: 1 })
    );

    // One millisecond before the grace ends nothing expires.
    clock.advance(GRACE - Duration::from_millis(1));
    assert_eq!(engine.sweep_expired(), Ok(0));
    assert_eq!(engine.petition("p").expect("exists").pending_count, 1);
    clock.advance(Duration::from_millis(1));
    // Expired before any sweep: the token is refused.
    assert_eq!(
        engine.validate(old.text().as_str()),
        Err(SubmitError::TokenExpired)
    );
    assert_eq!(engine.sweep_expired(), Ok(1));
    assert_eq!(engine.sweep_expired(), Ok(0), "nothing twice");
    let info = engine.petition("p").expect("exists");
    assert_eq!((info.count, info.pending_count), (1, 0));
    assert_eq!(
        engine.validate(old.text().as_str()),
        Err(SubmitError::TokenExpired)
    );
    engine.verify_store().expect("consistent after the sweep");

    // The slot is free: the signer signs anew and gets a new token.
    let (new, _) = pending(sign(&engine, "p", "ada@example.org"));
    assert_ne!(new, old);
    assert_eq!(
        engine.validate(new.text().as_str()),
        Ok(Outcome::Validated { count: 2 })
    );
    engine.verify_store().expect("consistent");

    // Across a restart the expired signature stays out of the index.
    engine.close().expect("closes");
    drop(engine);
    let engine = open(config(dir.path(), &clock));
    assert_eq!(
        sign(&engine, "p", "ada@example.org"),
        Ok(Outcome::Duplicate { count: 2 })
    );
    assert_eq!(
        engine.validate(old.text().as_str()),
        Err(SubmitError::TokenExpired)
    );
    engine.verify_store().expect("consistent after restart");
}

#[test]
fn a_signer_whose_pending_signature_expired_unswept_signs_anew() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(config(dir.path(), &clock));
    email_petition(&engine, "p", vec![100]);
    let (old, _) = pending(sign(&engine, "p", "ada@example.org"));
    clock.advance(GRACE);
    let (new, expires) = pending(sign(&engine, "p", "ada@example.org"));
    assert_ne!(new, old);
    assert_eq!(expires, clock.now_ms() + GRACE.as_millis() as u64);
    assert_eq!(engine.petition("p").expect("exists").pending_count, 1);
    assert_eq!(
        engine.validate(old.text().as_str()),
        Err(SubmitError::TokenExpired)
    );
    assert_eq!(engine.sweep_expired(), Ok(0), "already expired");
    engine.verify_store().expect("consistent");
    engine.close().expect("closes");
    drop(engine);
    let engine = open(config(dir.path(), &clock));
    assert_eq!(
        engine.validate(new.text().as_str()),
        Ok(Outcome::Validated { count: 1 })
    );
    engine.verify_store().expect("consistent after restart");
}

#[test]
fn a_closed_petitions_tokens_do_not_validate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(config(dir.path(), &clock));
    email_petition(&engine, "p", vec![100]);
    let (token, _) = pending(sign(&engine, "p", "ada@example.org"));
    engine.close_petition("p").expect("closes");
    assert_eq!(
        engine.validate(token.text().as_str()),
        Err(SubmitError::PetitionClosed)
    );
    assert_eq!(engine.count("p"), Some(0));
}

fn by_domain(petition: Option<&str>, domain: &str) -> InvalidationRequest {
    InvalidationRequest {
        petition: petition.map(str::to_owned),
        criteria: Criteria {
            email_domain: Some(domain.into()),
            ..Criteria::default()
        },
    }
}

#[test]
fn invalidation_lowers_counts_exactly_and_regresses_thresholds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(config(dir.path(), &clock));
    email_petition(&engine, "p", vec![3]);
    let mut spec = PetitionSpec::new("n");
    spec.thresholds = Some(vec![2]);
    engine.register(spec).expect("registers");
    // p: three validated (two from bad.example), one pending from bad.example, one good pending.
    let mut tokens = Vec::new();
    for email in [
        "a@bad.example",
        "b@bad.example",
        "c@good.example",
        "d@bad.example",
        "e@good.example",
    ] {
        tokens.push(pending(sign(&engine, "p", email)).0);
    }
    for token in &tokens[..3] {
        assert!(matches!(
            engine.validate(token.text().as_str()),
            Ok(Outcome::Validated { .. })
        ));
    }
    // n: validated at once.
    for email in ["a@bad.example", "x@good.example"] {
        assert!(matches!(
            sign(&engine, "n", email),
            Ok(Outcome::Accepted { .. })
        ));
    }
    assert_eq!(
        engine.milestones_after(0, 10).len(),
        2,
        "p crossed 3, n crossed 2"
    );

    assert_eq!(
        engine.preview_invalidation(&by_domain(Some("p"), "bad.example")),
        Ok(3)
    );
    assert_eq!(
        engine.preview_invalidation(&by_domain(None, "bad.example")),
        Ok(4)
    );
    assert_eq!(
        engine.preview_invalidation(&by_domain(Some("p"), "none.example")),
        Ok(0)
    );
    assert_eq!(
        engine.preview_invalidation(&by_domain(Some("nope"), "bad.example")),
        Err(InvalidationError::UnknownPetition)
    );
    assert!(matches!(
        engine.preview_invalidation(&InvalidationRequest::default()),
        Err(InvalidationError::Invalid(_))
    ));
    // A preview changes nothing.
    assert_eq!(engine.count("p"), Some(3));

    let job = engine
        .start_invalidation(by_domain(None, "bad.example"))
        .expect("starts");
    let job = finished(&engine, job.id);
    assert_eq!(job.state, JobState::Completed);
    assert_eq!((job.matched, job.invalidated), (4, 4));
    assert_eq!(job.progress(), 1.0);
    let p = engine.petition("p").expect("exists");
    assert_eq!((p.count, p.pending_count, p.invalidated_count), (1, 1, 3));
    assert!(p.milestones_reached.is_empty(), "3 regressed");
    let n = engine.petition("n").expect("exists");
    assert_eq!((n.count, n.invalidated_count), (1, 1));
    // Crossings first (with their petitions' responses falling due between them in the
    // events feed), then the regressions.
    let milestones = engine.milestones_after(0, 10);
    let mut regressed: Vec<_> = milestones
        .iter()
        .skip(2)
        .map(|m| (m.petition.as_str(), m.threshold, m.kind))
        .collect();
    regressed.sort_unstable_by_key(|m| m.0);
    assert_eq!(
        regressed,
        [
            ("n", 2, MilestoneKind::ThresholdRegressed),
            ("p", 3, MilestoneKind::ThresholdRegressed)
        ]
    );
    // Invalidated signers are duplicates; their tokens say invalidated.
    assert_eq!(
        sign(&engine, "p", "a@bad.example"),
        Ok(Outcome::Duplicate { count: 1 })
    );
    assert_eq!(
        sign(&engine, "n", "a@bad.example"),
        Ok(Outcome::Duplicate { count: 1 })
    );
    assert_eq!(
        engine.validate(tokens[3].text().as_str()),
        Err(SubmitError::Invalidated)
    );
    assert_eq!(
        engine.validate(tokens[0].text().as_str()),
        Err(SubmitError::Invalidated)
    );
    // Nothing left to match; a finished job cannot be cancelled.
    assert_eq!(
        engine.preview_invalidation(&by_domain(None, "bad.example")),
        Ok(0)
    );
    assert_eq!(
        engine.cancel_invalidation(job.id),
        Err(InvalidationError::Finished("completed"))
    );
    assert_eq!(
        engine.cancel_invalidation(99),
        Err(InvalidationError::UnknownJob)
    );

    // Re-crossing records threshold_crossed again, once.
    for email in ["f@good.example", "g@good.example"] {
        let (token, _) = pending(sign(&engine, "p", email));
        engine.validate(token.text().as_str()).expect("validates");
    }
    let last = engine.milestones_after(0, 10).split_off(4);
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(
        (last[0].threshold, last[0].kind),
        (3, MilestoneKind::ThresholdCrossed)
    );
    engine.verify_store().expect("consistent");

    // Restart: counts, reached thresholds, the feed and the job are as they were.
    let before = (
        engine.petition("p"),
        engine.petition("n"),
        engine.milestones_after(0, 10),
    );
    engine.close().expect("closes");
    drop(engine);
    let engine = open(config(dir.path(), &clock));
    assert_eq!(
        (
            engine.petition("p"),
            engine.petition("n"),
            engine.milestones_after(0, 10)
        ),
        before
    );
    assert_eq!(
        engine.invalidation(job.id).expect("kept").state,
        JobState::Completed
    );
    engine.verify_store().expect("consistent after restart");
}

#[test]
fn a_cancelled_job_stops_and_what_it_did_stays_exact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::starting_now());
    let mut config = config(dir.path(), &clock);
    config.invalidation_step = 1;
    let engine = open(config.clone());
    engine.register(PetitionSpec::new("n")).expect("registers");
    let batch = (0..3000)
        .map(|i| NewSignature::new("n", format!("s{i}@bad.example")))
        .collect();
    assert!(engine.submit_batch(batch).iter().all(|o| o.is_ok()));
    let job = engine
        .start_invalidation(by_domain(Some("n"), "bad.example"))
        .expect("starts");
    assert_eq!(job.total, 3000);
    let cancelled = engine.cancel_invalidation(job.id);
    let job = finished(&engine, job.id);
    match cancelled {
        Ok(_) => assert_eq!(job.state, JobState::Cancelled),
        // It may have finished first on a fast machine.
        Err(InvalidationError::Finished(_)) => assert_eq!(job.state, JobState::Completed),
        Err(e) => panic!("{e:?}"),
    }
    // Ingestion went on during the job.
    assert!(matches!(
        sign(&engine, "n", "late@good.example"),
        Ok(Outcome::Accepted { .. })
    ));
    let info = engine.petition("n").expect("exists");
    assert_eq!(info.invalidated_count, job.invalidated);
    assert_eq!(info.count, 3001 - job.invalidated);
    // Nothing runs on after the cancel.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(engine.invalidation(job.id).expect("exists"), job);
    engine.verify_store().expect("consistent");
    engine.close().expect("closes");
    drop(engine);
    let engine = open(config);
    assert_eq!(engine.invalidation(job.id).expect("kept"), job);
    assert_eq!(
        engine.petition("n").expect("exists").count,
        3001 - job.invalidated
    );
}

#[test]
fn a_running_job_resumes_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::starting_now());
    let mut config = config(dir.path(), &clock);
    config.invalidation_step = 7;
    let engine = open(config.clone());
    engine.register(PetitionSpec::new("n")).expect("registers");
    let batch = (0..2000)
        .map(|i| NewSignature::new("n", format!("s{i}@{}.example", i % 2)))
        .collect();
    assert!(engine.submit_batch(batch).iter().all(|o| o.is_ok()));
    let job = engine
        .start_invalidation(by_domain(Some("n"), "1.example"))
        .expect("starts");
    // Close at once, most likely mid-job.
    engine.close().expect("closes");
    drop(engine);
    let engine = open(config);
    let job = finished(&engine, job.id);
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.invalidated, 1000);
    assert_eq!(engine.count("n"), Some(1000));
    engine.verify_store().expect("consistent");
}

#[test]
fn memory_engines_refuse_email_validation() {
    let engine = Engine::open(Config::in_memory()).expect("opens");
    let mut spec = PetitionSpec::new("p");
    spec.validation = Some(Validation::Email);
    assert_eq!(
        engine.register(spec),
        Err(engine::PetitionError::Unsupported)
    );
    assert_eq!(
        engine.validate(&"0".repeat(72)),
        Err(SubmitError::Unsupported)
    );
    assert_eq!(
        engine.preview_invalidation(&by_domain(None, "x.example")),
        Err(InvalidationError::Unsupported)
    );
}

#[test]
fn lifecycle_bounds_must_be_positive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases: [fn(&mut Config); 4] = [
        |c| c.lifecycle_step = 0,
        |c| c.invalidation_step = 0,
        |c| c.invalidation_jobs_max = 0,
        |c| c.pending_grace = Duration::ZERO,
    ];
    for (i, change) in cases.iter().enumerate() {
        let mut config = Config::persistent(dir.path());
        change(&mut config);
        match Engine::open(config) {
            Err(engine::OpenError::Config(_)) => {}
            other => panic!("case {i}: {:?}", other.map(|_| ())),
        }
    }
}
