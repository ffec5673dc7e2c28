//! Concurrent submissions: exactly one acceptance per signer, exact counts on a hot petition,
//! milestones once.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use engine::{Config, Engine, Outcome, PetitionSpec};

use crate::support::{open, register, sig};

fn engines() -> Vec<(&'static str, Engine, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let persistent = open(Config::persistent(dir.path()));
    let memory = open(Config::in_memory());
    vec![
        ("persistent", persistent, Some(dir)),
        ("memory", memory, None),
    ]
}

#[test]
fn identical_simultaneous_submissions_accept_exactly_one() {
    const THREADS: usize = 12;
    for (name, engine, _dir) in engines() {
        register(&engine, &["hot"]);
        for round in 0..30 {
            let barrier = Arc::new(Barrier::new(THREADS));
            let outcomes: Vec<_> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..THREADS)
                    .map(|t| {
                        let barrier = Arc::clone(&barrier);
                        let engine = engine.clone();
                        scope.spawn(move || {
                            // Vary the spelling: the canonical signer is the same.
                            let email = if t % 2 == 0 {
                                format!("Signer{round}@Example.org")
                            } else {
                                format!(" signer{round}@example.org ")
                            };
                            barrier.wait();
                            engine.submit(sig("hot", &email))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("thread"))
                    .collect()
            });
            let accepted = outcomes
                .iter()
                .filter(|o| matches!(o, Ok(Outcome::Accepted { .. })))
                .count();
            let duplicates = outcomes
                .iter()
                .filter(|o| matches!(o, Ok(Outcome::Duplicate { .. })))
                .count();
            assert_eq!(accepted, 1, "{name} round {round}: {outcomes:?}");
            assert_eq!(
                duplicates,
                THREADS - 1,
                "{name} round {round}: {outcomes:?}"
            );
            assert_eq!(engine.count("hot"), Some(round + 1), "{name} round {round}");
        }
        engine.verify_store().expect("store is consistent");
    }
}

#[test]
fn disjoint_signers_on_one_hot_petition_count_exactly() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 3_000;
    for (name, engine, _dir) in engines() {
        register(&engine, &["hot"]);
        let ordinals: Vec<u64> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let engine = engine.clone();
                    scope.spawn(move || {
                        let mut ordinals = Vec::new();
                        for chunk in (0..PER_THREAD).collect::<Vec<_>>().chunks(1 + t * 17) {
                            let batch = chunk
                                .iter()
                                .map(|i| sig("hot", &format!("t{t}-{i}@example.org")))
                                .collect();
                            for outcome in engine.submit_batch(batch) {
                                match outcome {
                                    Ok(Outcome::Accepted { count }) => ordinals.push(count),
                                    other => panic!("{name}: unexpected {other:?}"),
                                }
                            }
                        }
                        ordinals
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("thread"))
                .collect()
        });
        let total = (THREADS * PER_THREAD) as u64;
        assert_eq!(engine.count("hot"), Some(total), "{name}");
        // Every accepted signature got its own ordinal: 1..=total, each once.
        let unique: HashSet<u64> = ordinals.iter().copied().collect();
        assert_eq!(
            unique.len(),
            ordinals.len(),
            "{name}: an ordinal was given twice"
        );
        assert_eq!(unique, (1..=total).collect(), "{name}");
        let stats = engine.stats();
        assert_eq!(stats.accepted_total, total, "{name}");
        assert_eq!(stats.index_entries, total, "{name}");
        engine.verify_store().expect("store is consistent");
    }
}

#[test]
fn a_milestone_fires_once_when_crossed_concurrently() {
    const THREADS: usize = 4;
    for (name, engine, _dir) in engines() {
        let mut spec = PetitionSpec::new("viral");
        spec.thresholds = Some(vec![100, 1_000, 1_001, 5_000]);
        engine.register(spec).expect("registers");
        register(&engine, &["quiet"]);
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let engine = engine.clone();
                scope.spawn(move || {
                    for k in 0..100 {
                        let batch = (0..7)
                            .map(|i| sig("viral", &format!("{t}.{k}.{i}@example.org")))
                            .collect();
                        for outcome in engine.submit_batch(batch) {
                            assert!(matches!(outcome, Ok(Outcome::Accepted { .. })));
                        }
                    }
                });
            }
        });
        assert_eq!(engine.count("viral"), Some(2_800), "{name}");
        let milestones = engine.milestones_after(0, 100);
        let thresholds: Vec<u64> = milestones.iter().map(|m| m.threshold).collect();
        let mut sorted = thresholds.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![100, 1_000, 1_001], "{name}: {milestones:?}");
        assert!(milestones.iter().all(|m| m.petition == "viral"));
        // The feed also holds the source alert of example.org (100 signatures in the hour).
        let seqs: Vec<u64> = milestones.iter().map(|m| m.seq).collect();
        assert!(seqs.is_sorted(), "{name}: the milestones are in order");
        let feed: Vec<u64> = engine.events_after(0, 100).iter().map(|e| e.seq).collect();
        assert_eq!(
            feed,
            (1..=4).collect::<Vec<u64>>(),
            "{name}: the feed is gapless and ordered"
        );
        assert_eq!(
            engine.milestones_after(seqs[1], 100).len(),
            1,
            "{name}: resumable"
        );
        let info = engine.petition("viral").expect("exists");
        assert_eq!(info.milestones_reached, vec![100, 1_000, 1_001], "{name}");
        assert!(engine
            .petition("quiet")
            .expect("exists")
            .milestones_reached
            .is_empty());
        engine.verify_store().expect("store is consistent");
    }
}
