//! Restarts: nothing acknowledged is lost, re-sends are duplicates, counts and milestones
//! survive, at every durability level.

use engine::{Config, Durability, Engine, Outcome, PetitionSpec, SignerPolicy, SubmitError};

use crate::support::{open, register, sig};

fn persistent(dir: &std::path::Path, durability: Durability) -> Config {
    let mut config = Config::persistent(dir);
    config.durability = durability;
    config
}

#[test]
fn restart_then_resend_everything_gives_duplicates_and_same_counts() {
    for durability in [Durability::Sync, Durability::Buffered, Durability::None] {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = open(persistent(dir.path(), durability));
        let mut spec = PetitionSpec::new("a");
        spec.thresholds = Some(vec![50, 150]);
        engine.register(spec).expect("registers");
        register(&engine, &["b"]);
        let batch = |k: usize| -> Vec<_> {
            (0..100)
                .map(|i| {
                    sig(
                        if i % 3 == 0 { "b" } else { "a" },
                        &format!("{k}-{i}@example.org"),
                    )
                })
                .collect()
        };
        for k in 0..3 {
            for outcome in engine.submit_batch(batch(k)) {
                assert!(
                    matches!(outcome, Ok(Outcome::Accepted { .. })),
                    "{durability}: {outcome:?}"
                );
            }
        }
        let (a, b) = (engine.count("a"), engine.count("b"));
        assert_eq!((a, b), (Some(198), Some(102)), "{durability}");
        engine.close().expect("closes");
        drop(engine);

        let engine = open(persistent(dir.path(), durability));
        assert_eq!(
            (engine.count("a"), engine.count("b")),
            (a, b),
            "{durability}: counts survive"
        );
        for k in 0..3 {
            for outcome in engine.submit_batch(batch(k)) {
                assert!(
                    matches!(outcome, Ok(Outcome::Duplicate { .. })),
                    "{durability}: {outcome:?}"
                );
            }
        }
        assert_eq!(
            (engine.count("a"), engine.count("b")),
            (a, b),
            "{durability}: unchanged"
        );
        let milestones = engine.milestones_after(0, 10);
        let reached: Vec<_> = milestones
            .iter()
            .map(|m| (m.petition.as_str(), m.threshold))
            .collect();
        assert_eq!(reached, vec![("a", 50), ("a", 150)], "{durability}");
        let report = engine.verify_store().expect("consistent");
        assert_eq!(report.signatures, 300);
        assert_eq!(report.milestones, 2);
        engine.close().expect("closes");
    }
}

#[test]
fn closed_petitions_and_deadlines_refuse_signatures_across_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = open(persistent(dir.path(), Durability::Sync));
    register(&engine, &["open", "to-close"]);
    let mut expired = PetitionSpec::new("expired");
    expired.deadline_ms = Some(1);
    engine.register(expired).expect("registers");
    assert_eq!(
        engine.submit(sig("to-close", "a@example.org")),
        Ok(Outcome::Accepted { count: 1 })
    );
    let info = engine.close_petition("to-close").expect("closes");
    assert_eq!(info.state, engine::PetitionState::Closed);
    assert_eq!(
        engine.submit(sig("to-close", "b@example.org")),
        Err(SubmitError::PetitionClosed)
    );
    assert_eq!(
        engine.submit(sig("expired", "b@example.org")),
        Err(SubmitError::PetitionClosed)
    );
    assert_eq!(
        engine.close_petition("nope"),
        Err(engine::PetitionError::UnknownPetition)
    );
    engine.close().expect("closes");
    drop(engine);

    let engine = open(persistent(dir.path(), Durability::Sync));
    assert_eq!(
        engine.submit(sig("to-close", "b@example.org")),
        Err(SubmitError::PetitionClosed)
    );
    assert_eq!(
        engine.petition("expired").expect("exists").state,
        engine::PetitionState::Expired
    );
    assert_eq!(
        engine.submit(sig("open", "b@example.org")),
        Ok(Outcome::Accepted { count: 1 })
    );
    assert_eq!(engine.count("to-close"), Some(1));
    engine.close().expect("closes");
}

#[test]
fn closed_engine_refuses_and_reopen_with_another_policy_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = open(persistent(dir.path(), Durability::Sync));
    register(&engine, &["p"]);
    let other = engine.clone();
    engine.close().expect("closes");
    assert_eq!(
        other.submit(sig("p", "a@example.org")),
        Err(SubmitError::ShuttingDown)
    );
    engine.close().expect("closing twice is a no-op");
    drop((engine, other));

    let mut config = persistent(dir.path(), Durability::Sync);
    config.signer_policy = SignerPolicy {
        strip_plus_tags: true,
        gmail_dots: false,
    };
    match Engine::open(config) {
        Err(engine::OpenError::PolicyMismatch { .. }) => {}
        other => panic!("expected a policy mismatch, got {other:?}"),
    }
}

#[test]
fn async_submissions_work_without_blocking_the_runtime() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = open(persistent(dir.path(), Durability::Sync));
    register(&engine, &["p"]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // Many submissions in flight on one thread: only possible if none blocks it.
        let futures: Vec<_> = (0..200)
            .map(|i| engine.submit_async(sig("p", &format!("{}@example.org", i % 150))))
            .collect();
        let mut accepted = 0;
        for future in futures {
            if let Ok(Outcome::Accepted { .. }) = future.await {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 150);
        let batch = engine
            .submit_batch_async(vec![sig("p", "new@example.org"), sig("p", "1@example.org")])
            .await;
        assert_eq!(batch[0], Ok(Outcome::Accepted { count: 151 }));
        // A duplicate met at admission carries the count as it was then.
        assert_eq!(batch[1], Ok(Outcome::Duplicate { count: 150 }));
    });
    assert_eq!(engine.count("p"), Some(151));
    engine.close().expect("closes");
}

#[test]
fn the_queue_bound_refuses_with_overloaded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = persistent(dir.path(), Durability::Sync);
    config.queue_signatures_max = 4;
    let engine = open(config);
    register(&engine, &["p"]);
    // One batch over the bound is let through when nothing is queued...
    let outcomes = engine.submit_batch(
        (0..10)
            .map(|i| sig("p", &format!("{i}@example.org")))
            .collect(),
    );
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, Ok(Outcome::Accepted { .. }))));
    // ...but with many submitters some are refused, fast, and nothing refused is counted.
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let engine = engine.clone();
                scope.spawn(move || {
                    (0..50)
                        .flat_map(|k| {
                            engine.submit_batch(
                                (0..3)
                                    .map(|i| sig("p", &format!("{t}.{k}.{i}@example.org")))
                                    .collect(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    let accepted = results
        .iter()
        .filter(|r| matches!(r, Ok(Outcome::Accepted { .. })))
        .count();
    let overloaded = results
        .iter()
        .filter(|r| **r == Err(SubmitError::Overloaded))
        .count();
    assert_eq!(
        accepted + overloaded,
        results.len(),
        "only accepted or overloaded"
    );
    assert_eq!(engine.count("p"), Some(10 + accepted as u64));
    assert_eq!(engine.stats().overloaded_total, overloaded as u64);
    assert_eq!(engine.stats().queue_signatures, 0, "nothing left in flight");
    engine.verify_store().expect("consistent");
    engine.close().expect("closes");
}

#[test]
fn invalid_input_changes_nothing() {
    let engine = open(Config::in_memory());
    register(&engine, &["p"]);
    let mut bad = sig("p", "a@example.org");
    bad.country = Some("Narnia".into());
    let outcomes = engine.submit_batch(vec![
        bad,
        sig("p", ""),
        sig("bad id", "a@example.org"),
        sig(&"x".repeat(65), "a@example.org"),
        sig("p", &format!("{}@example.org", "a".repeat(300))),
    ]);
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Err(SubmitError::Invalid(_))),
            "{outcome:?}"
        );
    }
    assert_eq!(engine.count("p"), Some(0));
    assert_eq!(engine.stats().rejected_total, 5);
    assert_eq!(engine.submit_batch(Vec::new()), Vec::new());
}

/// Disk full: the data dir on a small tmpfs (needs root, as CI runs). Writes fail → retryable
/// errors and no false acknowledgement; freeing space → ingestion resumes; nothing acknowledged is
/// lost.
#[test]
fn disk_full_refuses_then_recovers_without_losing_acknowledged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mount = dir.path().join("tmpfs");
    std::fs::create_dir(&mount).expect("mount point");
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=160m", "tmpfs"])
        .arg(&mount)
        .status()
        .expect("mount runs");
    assert!(
        status.success(),
        "mounting a tmpfs needs root (CI runs as root)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mount.clone());
    // Ballast: freed later to make room again.
    let ballast = mount.join("ballast");
    std::fs::write(&ballast, vec![1u8; 64 << 20]).expect("ballast");

    let engine = open(persistent(&mount.join("data"), Durability::Sync));
    register(&engine, &["p"]);
    let name = "n".repeat(200);
    let mut acked = Vec::new();
    let mut refused = 0;
    for k in 0..2_000 {
        let batch = (0..500)
            .map(|i| {
                let mut s = sig("p", &format!("{k}.{i}@example.org"));
                s.name = Some(name.clone());
                s
            })
            .collect::<Vec<_>>();
        let emails: Vec<String> = batch.iter().map(|s| s.email.clone()).collect();
        for (email, outcome) in emails.into_iter().zip(engine.submit_batch(batch)) {
            match outcome {
                Ok(Outcome::Accepted { .. }) => acked.push(email),
                Err(e) => {
                    assert!(e.is_retryable(), "disk full must be retryable: {e:?}");
                    refused += 1;
                }
                Ok(other) => panic!("unexpected {other:?}"),
            }
        }
        if refused > 0 {
            break;
        }
    }
    assert!(refused > 0, "the tmpfs never filled up");
    assert!(!engine.stats().storage_healthy);
    assert_eq!(
        engine.count("p"),
        Some(acked.len() as u64),
        "no false acknowledgement"
    );

    std::fs::remove_file(&ballast).expect("free space");
    let mut resumed = false;
    for _ in 0..200 {
        // Polling a state change with a bound, not hiding a race: recovery retries on its own.
        std::thread::sleep(std::time::Duration::from_millis(50));
        if let Ok(Outcome::Accepted { .. }) = engine.submit(sig("p", "after@example.org")) {
            resumed = true;
            break;
        }
    }
    assert!(resumed, "ingestion did not resume after space was freed");
    let resend = acked.iter().map(|e| sig("p", e)).collect();
    for outcome in engine.submit_batch(resend) {
        assert!(
            matches!(outcome, Ok(Outcome::Duplicate { .. })),
            "lost: {outcome:?}"
        );
    }
    assert_eq!(engine.count("p"), Some(acked.len() as u64 + 1));
    engine.verify_store().expect("consistent");
    engine.close().expect("closes");
}
