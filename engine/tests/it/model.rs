//! A seeded model test: random batches, registrations, closes and restarts against a plain
//! `HashMap<petition, HashSet<signer>>`. Replay a failure with the printed seed.

use std::collections::{BTreeMap, HashMap, HashSet};

use engine::{Config, Engine, NewSignature, Outcome, PetitionSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::{open, seed};

const PETITIONS: [&str; 6] = ["p0", "p1", "p2", "p3", "p4", "never-registered"];

/// A signature's country and region as sent; `None` for the model when they are invalid.
type Place = (Option<&'static str>, Option<&'static str>);

const PLACES: [Place; 7] = [
    (Some("GB"), Some("E14000639")),
    (Some("gb"), Some("e14000640")),
    (Some("GB"), None),
    (Some("fr"), None),
    (None, None),
    (Some("US"), Some("US-CA")),
    (Some("DE"), Some("BY")),
];

/// Invalid places: the signature is refused.
const BAD_PLACES: [Place; 3] = [
    (None, Some("E1")),
    (Some("GB"), Some("E1 4")),
    (Some("UK"), None),
];

#[derive(Default)]
struct Model {
    signers: HashMap<String, HashSet<String>>,
    /// Per petition, (country, region) counted → signatures.
    places: HashMap<String, HashMap<(String, Option<String>), u64>>,
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
                    let (spelled, mut canonical) = email(&mut rng);
                    let place = if rng.random_ratio(1, 30) {
                        canonical = None;
                        BAD_PLACES[rng.random_range(0..BAD_PLACES.len())]
                    } else {
                        PLACES[rng.random_range(0..PLACES.len())]
                    };
                    let mut signature = NewSignature::new(id, spelled);
                    signature.country = place.0.map(str::to_owned);
                    signature.region = place.1.map(str::to_owned);
                    batch.push(signature);
                    let want = match (canonical, model.signers.get_mut(id)) {
                        (None, _) => Err("invalid_signature"),
                        (_, None) => Err("unknown_petition"),
                        (_, Some(_)) if model.closed.contains(id) => Err("petition_closed"),
                        (Some(canonical), Some(signers)) => {
                            if signers.insert(canonical) {
                                let counted = (
                                    place.0.map_or("ZZ".to_owned(), str::to_uppercase),
                                    place.1.map(str::to_uppercase),
                                );
                                *model
                                    .places
                                    .entry(id.to_string())
                                    .or_default()
                                    .entry(counted)
                                    .or_default() += 1;
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
            let places = model.places.get(id).cloned().unwrap_or_default();
            let mut countries: BTreeMap<String, u64> = BTreeMap::new();
            let mut regions: BTreeMap<(String, String), u64> = BTreeMap::new();
            for ((country, region), n) in places {
                *countries.entry(country.clone()).or_default() += n;
                if let Some(region) = region {
                    *regions.entry((country, region)).or_default() += n;
                }
            }
            let (count, got) = engine.countries(id).expect("registered");
            assert_eq!(count, info.count, "step {step}: {id}");
            let got: BTreeMap<String, u64> =
                got.into_iter().map(|c| (c.country, c.count)).collect();
            assert_eq!(got, countries, "step {step}: countries of {id}");
            let mut top: Vec<(u64, String)> =
                countries.iter().map(|(c, n)| (*n, c.clone())).collect();
            top.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            let shown: Vec<(u64, String)> = info
                .countries
                .iter()
                .map(|c| (c.count, c.country.clone()))
                .collect();
            assert_eq!(
                shown, top,
                "step {step}: the petition's top countries of {id}"
            );
            for country in ["GB", "US", "FR"] {
                let got: BTreeMap<(String, String), u64> = engine
                    .regions(id, Some(country))
                    .expect("a country")
                    .expect("registered")
                    .into_iter()
                    .map(|r| ((r.country, r.region), r.count))
                    .collect();
                let want: BTreeMap<(String, String), u64> = regions
                    .iter()
                    .filter(|((c, _), _)| c == country)
                    .map(|(k, n)| (k.clone(), *n))
                    .collect();
                assert_eq!(got, want, "step {step}: regions of {id} in {country}");
            }
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
