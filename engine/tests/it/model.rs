//! A seeded model test: random batches, registrations, closes and restarts against a plain
//! `HashMap<petition, HashSet<signer>>`. Replay a failure with the printed seed.

use std::collections::{HashMap, HashSet};

use engine::{Config, Engine, NewSignature, Outcome, PetitionSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::{open, seed};

const PETITIONS: [&str; 6] = ["p0", "p1", "p2", "p3", "p4", "never-registered"];

#[derive(Default)]
struct Model {
    signers: HashMap<String, HashSet<String>>,
    closed: HashSet<String>,
    thresholds: HashMap<String, Vec<u64>>,
}

fn email(rng: &mut StdRng) -> (String, Option<String>) {
    let n = rng.random_range(0..60);
    let canonical = format!("user{n}@example.org");
    let spelled = match rng.random_range(0..4) {
        0 => format!("  User{n}@Example.ORG"),
        1 => format!("USER{n}@EXAMPLE.ORG "),
        _ => canonical.clone(),
    };
    if rng.random_ratio(1, 25) {
        // Invalid: the model expects a rejection and no change.
        return (format!("user{n}-at-example.org"), None);
    }
    (spelled, Some(canonical))
}

fn run(seed: u64, persistent: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = || {
        if persistent {
            Config::persistent(dir.path())
        } else {
            Config::in_memory()
        }
    };
    let mut engine: Engine = open(config());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::default();
    for step in 0..400 {
        match rng.random_range(0..100) {
            0..=9 => {
                let id = PETITIONS[rng.random_range(0..5)];
                let mut spec = PetitionSpec::new(id);
                if rng.random_bool(0.5) {
                    spec.thresholds = Some(vec![3, 10, 25]);
                }
                let existed = model.signers.contains_key(id);
                engine.register(spec.clone()).expect("registers");
                model.signers.entry(id.to_string()).or_default();
                if let Some(thresholds) = spec.thresholds {
                    model.thresholds.insert(id.to_string(), thresholds);
                } else if !existed {
                    model
                        .thresholds
                        .insert(id.to_string(), vec![10_000, 100_000]);
                }
            }
            10..=11 => {
                let id = PETITIONS[rng.random_range(0..PETITIONS.len())];
                let result = engine.close_petition(id);
                assert_eq!(
                    result.is_ok(),
                    model.signers.contains_key(id),
                    "step {step}"
                );
                if result.is_ok() {
                    model.closed.insert(id.to_string());
                }
            }
            12..=14 if persistent => {
                engine.close().expect("closes");
                drop(engine);
                engine = open(config());
                check_counts(&engine, &model, step);
            }
            _ => {
                let n = rng.random_range(1..24);
                let mut batch = Vec::new();
                let mut expected = Vec::new();
                let mut after: HashMap<String, u64> = HashMap::new();
                for _ in 0..n {
                    let id = PETITIONS[rng.random_range(0..PETITIONS.len())];
                    let (spelled, canonical) = email(&mut rng);
                    batch.push(NewSignature::new(id, spelled));
                    let want = match (canonical, model.signers.get_mut(id)) {
                        (None, _) => Err("invalid_signature"),
                        (_, None) => Err("unknown_petition"),
                        (_, Some(_)) if model.closed.contains(id) => Err("petition_closed"),
                        (Some(canonical), Some(signers)) => {
                            if signers.insert(canonical) {
                                Ok(Some(signers.len() as u64))
                            } else {
                                Ok(None)
                            }
                        }
                    };
                    if let Ok(Some(count)) = want {
                        after.insert(id.to_string(), count);
                    }
                    expected.push(want);
                }
                let outcomes = engine.submit_batch(batch);
                assert_eq!(outcomes.len(), expected.len());
                for (i, (got, want)) in outcomes.iter().zip(&expected).enumerate() {
                    match (got, want) {
                        (Ok(Outcome::Accepted { count }), Ok(Some(want))) => {
                            assert_eq!(count, want, "step {step} item {i}: ordinal")
                        }
                        (Ok(Outcome::Duplicate { .. }), Ok(None)) => {}
                        (Err(e), Err(code)) => assert_eq!(e.code(), *code, "step {step} item {i}"),
                        _ => panic!("step {step} item {i}: got {got:?}, want {want:?}"),
                    }
                }
                for (id, count) in after {
                    assert_eq!(engine.count(&id), Some(count), "step {step}: count of {id}");
                }
            }
        }
    }
    check_counts(&engine, &model, 400);
    let report = engine.verify_store().expect("store is consistent");
    let total: usize = model.signers.values().map(HashSet::len).sum();
    assert_eq!(report.signatures, total as u64);
    engine.close().expect("closes");
}

fn check_counts(engine: &Engine, model: &Model, step: usize) {
    for id in PETITIONS {
        let want = model.signers.get(id).map(|s| s.len() as u64);
        assert_eq!(engine.count(id), want, "step {step}: count of {id}");
        if let Some(info) = engine.petition(id) {
            let thresholds = &model.thresholds[id];
            assert_eq!(
                &info.thresholds, thresholds,
                "step {step}: thresholds of {id}"
            );
            // Every milestone reached is a threshold at or below the count. (A threshold added
            // later below the count is not retroactively reached.)
            for reached in &info.milestones_reached {
                assert!(
                    *reached <= info.count,
                    "step {step}: {id} reached {reached}"
                );
            }
        }
    }
}

#[test]
fn random_workload_matches_the_model_persistent() {
    let seed = seed("model persistent");
    for k in 0..3 {
        run(seed.wrapping_add(k), true);
    }
}

#[test]
fn random_workload_matches_the_model_in_memory() {
    let seed = seed("model memory");
    for k in 0..3 {
        run(seed.wrapping_add(k), false);
    }
}
