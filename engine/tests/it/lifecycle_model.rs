//! A seeded model test of the lifecycle: signatures to petitions that validate by email and to
//! one that does not, validations (genuine, forged, repeated, expired), re-submissions, clock
//! moves, expiry sweeps, invalidation jobs (some cancelled at once) and restarts, against a
//! plain model of states, counts and milestones. Replay a failure with the printed seed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{
    Clock, Config, Criteria, Engine, InvalidationError, InvalidationRequest, JobState, ManualClock,
    MilestoneKind, NewSignature, Outcome, PetitionSpec, Resolution, SubmitError, Validation,
    RESUBMITS_MAX,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::{open, seed};

const PETITIONS: [(&str, bool); 3] = [("e0", true), ("e1", true), ("n0", false)];
const THRESHOLDS: [u64; 3] = [2, 5, 9];
const GRACE_MS: u64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Validated,
    Invalidated,
}

#[derive(Debug, Clone)]
struct Signer {
    state: State,
    /// The current token, for a signer of an email petition.
    token: Option<String>,
    expires_at_ms: u64,
    resubmits: u8,
    /// Where it was written: (signing call, petition number, position in the call). A call's
    /// signatures are written in one batch, grouped by petition: the order jobs scan in.
    order: (u64, usize, usize),
    /// The country and region its stored signature names (upper-case, as counted).
    place: Place,
}

/// A signature's country and region, as given and as counted.
type Place = (Option<&'static str>, Option<&'static str>);

/// The places signatures name, as sent (mixed case): the model counts them upper-cased.
const PLACES: [Place; 6] = [
    (Some("GB"), Some("E14000639")),
    (Some("gb"), Some("e14000640")),
    (Some("GB"), None),
    (Some("fr"), None),
    (None, None),
    (Some("US"), Some("us-ca")),
];

fn counted(place: Place) -> (String, Option<String>) {
    (
        place.0.map_or("ZZ".to_owned(), str::to_uppercase),
        place.1.map(str::to_uppercase),
    )
}

#[derive(Debug, Default)]
struct Petition {
    email: bool,
    signers: HashMap<String, Signer>,
    reached: BTreeSet<u64>,
    /// (threshold, kind) in feed order.
    events: Vec<(u64, MilestoneKind)>,
}

impl Petition {
    fn count(&self, state: State) -> u64 {
        self.signers.values().filter(|s| s.state == state).count() as u64
    }

    /// The validated count moved from `before` by one signature.
    fn moved(&mut self, before: u64) {
        let after = self.count(State::Validated);
        for t in THRESHOLDS {
            if after > before && before < t && t <= after && self.reached.insert(t) {
                self.events.push((t, MilestoneKind::ThresholdCrossed));
            }
        }
        for t in THRESHOLDS.iter().rev().copied() {
            if after < before && t > after && self.reached.remove(&t) {
                self.events.push((t, MilestoneKind::ThresholdRegressed));
            }
        }
    }
}

#[derive(Default)]
struct Model {
    petitions: HashMap<&'static str, Petition>,
    /// Every token handed out: its petition and signer, or `None` once its signature expired.
    tokens: HashMap<String, Option<(&'static str, String)>>,
    /// Signing calls so far.
    calls: u64,
}

fn email(n: u32) -> String {
    let domain = match n % 3 {
        0 => "bad",
        _ => "good",
    };
    format!("s{n}@{domain}.example")
}

fn config(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Config {
    let mut config = Config::persistent(dir);
    config.clock = Arc::clone(clock) as Arc<dyn Clock>;
    config.pending_grace = Duration::from_millis(GRACE_MS);
    config.sweep_interval = None;
    config.lifecycle_step = 3;
    config.invalidation_step = 3;
    config
}

fn run(seed: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let mut engine = open(config(dir.path(), &clock));
    let mut model = Model::default();
    for (id, by_email) in PETITIONS {
        let mut spec = PetitionSpec::new(id);
        spec.thresholds = Some(THRESHOLDS.to_vec());
        spec.validation = Some(if by_email {
            Validation::Email
        } else {
            Validation::None
        });
        engine.register(spec).expect("registers");
        model.petitions.insert(
            id,
            Petition {
                email: by_email,
                ..Petition::default()
            },
        );
    }
    let mut rng = StdRng::seed_from_u64(seed);
    for step in 0..300 {
        let now = clock.now_ms();
        match rng.random_range(0..100) {
            0..=44 => sign(&engine, &mut model, &mut rng, now, step),
            45..=69 => validate(&engine, &mut model, &mut rng, now, step),
            70..=79 => clock.advance(Duration::from_millis(rng.random_range(0..700))),
            80..=86 => {
                let want: u64 = model
                    .petitions
                    .values_mut()
                    .map(|p| {
                        let due: Vec<String> = p
                            .signers
                            .iter()
                            .filter(|(_, s)| s.state == State::Pending && now >= s.expires_at_ms)
                            .map(|(e, _)| e.clone())
                            .collect();
                        for signer in &due {
                            let gone = p.signers.remove(signer).expect("due");
                            model.tokens.insert(gone.token.expect("pending"), None);
                        }
                        due.len() as u64
                    })
                    .sum();
                assert_eq!(engine.sweep_expired(), Ok(want), "step {step}: sweep");
            }
            87..=95 => invalidate(&engine, &mut model, &mut rng, step),
            _ => {
                engine.close().expect("closes");
                drop(engine);
                engine = open(config(dir.path(), &clock));
            }
        }
        check(&engine, &model, step);
    }
    engine.verify_store().expect("consistent");
    let feed = engine.milestones_after(0, 10_000);
    for (id, p) in &model.petitions {
        let got: Vec<(u64, MilestoneKind)> = feed
            .iter()
            .filter(|m| m.petition == *id)
            .map(|m| (m.threshold, m.kind))
            .collect();
        assert_eq!(got, p.events, "milestones of {id}");
    }
    engine.close().expect("closes");
}

fn sign(engine: &Engine, model: &mut Model, rng: &mut StdRng, now: u64, step: usize) {
    let n = rng.random_range(1..6);
    let picks: Vec<(&'static str, String, Place)> = (0..n)
        .map(|_| {
            let (id, _) = PETITIONS[rng.random_range(0..PETITIONS.len())];
            let place = PLACES[rng.random_range(0..PLACES.len())];
            (id, email(rng.random_range(0..24)), place)
        })
        .collect();
    let batch = picks
        .iter()
        .map(|(id, email, place)| {
            let mut signature = NewSignature::new(*id, email.to_uppercase());
            signature.country = place.0.map(str::to_owned);
            signature.region = place.1.map(str::to_owned);
            signature
        })
        .collect();
    let outcomes = engine.submit_batch(batch);
    model.calls += 1;
    let call = model.calls;
    for (i, ((id, email, place), got)) in picks.into_iter().zip(outcomes).enumerate() {
        let number = PETITIONS.iter().position(|(p, _)| *p == id).expect("known");
        let at = format!("step {step} item {i}: {email} on {id}");
        let p = model.petitions.get_mut(id).expect("petition");
        let before = p.count(State::Validated);
        let existing = p.signers.get(&email).cloned();
        match existing {
            None => {
                let mut signer = Signer {
                    state: State::Validated,
                    token: None,
                    expires_at_ms: now + GRACE_MS,
                    resubmits: 0,
                    order: (call, number, i),
                    place,
                };
                if p.email {
                    let Ok(Outcome::Pending { token }) = got else {
                        panic!("{at}: want a new pending signature, got {got:?}");
                    };
                    let expires_at_ms = token.expires_at_ms();
                    assert_eq!(expires_at_ms, now + GRACE_MS, "{at}");
                    assert!(
                        !model.tokens.contains_key(token.text().as_str()),
                        "{at}: a new token"
                    );
                    signer.state = State::Pending;
                    signer.token = Some(token.text().as_str().to_owned());
                    model
                        .tokens
                        .insert(token.text().as_str().to_owned(), Some((id, email.clone())));
                    p.signers.insert(email, signer);
                } else {
                    p.signers.insert(email, signer);
                    assert_eq!(got, Ok(Outcome::Accepted { count: before + 1 }), "{at}");
                    p.moved(before);
                }
            }
            Some(signer) if signer.state == State::Pending && now >= signer.expires_at_ms => {
                // Expired unswept: renewed with a new token.
                let Ok(Outcome::Pending { token, .. }) = got else {
                    panic!("{at}: want a renewed pending signature, got {got:?}");
                };
                let old = signer.token.clone().expect("pending");
                assert_ne!(token.text().as_str(), old, "{at}");
                model.tokens.insert(old, None);
                model
                    .tokens
                    .insert(token.text().as_str().to_owned(), Some((id, email.clone())));
                p.signers.insert(
                    email,
                    Signer {
                        token: Some(token.text().as_str().to_owned()),
                        expires_at_ms: now + GRACE_MS,
                        resubmits: 0,
                        order: (call, number, i),
                        place,
                        ..signer
                    },
                );
            }
            Some(signer) if signer.state == State::Pending => {
                if signer.resubmits >= RESUBMITS_MAX {
                    assert_eq!(got, Err(SubmitError::TooManyResubmits), "{at}");
                } else {
                    let Ok(Outcome::Pending { token }) = got else {
                        panic!("{at}: want the same pending signature, got {got:?}");
                    };
                    let expires_at_ms = token.expires_at_ms();
                    assert_eq!(Some(token.text().as_str()), signer.token.as_deref(), "{at}");
                    assert_eq!(expires_at_ms, signer.expires_at_ms, "{at}");
                    p.signers.get_mut(&email).expect("signer").resubmits += 1;
                }
            }
            Some(_) => assert!(
                matches!(got, Ok(Outcome::Duplicate { .. })),
                "{at}: want duplicate, got {got:?}"
            ),
        }
    }
}

fn validate(engine: &Engine, model: &mut Model, rng: &mut StdRng, now: u64, step: usize) {
    let known: Vec<String> = model.tokens.keys().cloned().collect();
    if known.is_empty() {
        return;
    }
    let mut token = known[rng.random_range(0..known.len())].clone();
    let forged = rng.random_ratio(1, 5);
    if forged {
        let at = rng.random_range(0..token.len());
        let flipped = if &token[at..=at] == "0" { "1" } else { "0" };
        token.replace_range(at..=at, flipped);
    }
    let got = engine.validate(&token);
    let at = format!("step {step}: validate {token}");
    let Some(named) = model.tokens.get(&token).cloned() else {
        assert!(forged, "{at}");
        assert_eq!(got, Err(SubmitError::UnknownToken), "{at}");
        return;
    };
    let Some((id, email)) = named else {
        assert_eq!(
            got,
            Err(SubmitError::TokenExpired),
            "{at}: expired and swept"
        );
        return;
    };
    let p = model.petitions.get_mut(id).expect("petition");
    let before = p.count(State::Validated);
    let signer = p.signers.get_mut(&email).expect("a live token's signer");
    assert_eq!(signer.token.as_deref(), Some(token.as_str()), "{at}");
    match signer.state {
        State::Pending if now >= signer.expires_at_ms => {
            assert_eq!(got, Err(SubmitError::TokenExpired), "{at}")
        }
        State::Pending => {
            signer.state = State::Validated;
            assert_eq!(got, Ok(Outcome::Validated { count: before + 1 }), "{at}");
            p.moved(before);
        }
        State::Validated => {
            assert_eq!(got, Ok(Outcome::AlreadyValidated { count: before }), "{at}")
        }
        State::Invalidated => assert_eq!(got, Err(SubmitError::Invalidated), "{at}"),
    }
}

fn invalidate(engine: &Engine, model: &mut Model, rng: &mut StdRng, step: usize) {
    let scope = match rng.random_range(0..4) {
        3 => None,
        n => Some(PETITIONS[n].0),
    };
    let request = InvalidationRequest {
        petition: scope.map(str::to_owned),
        criteria: Criteria {
            email_domain: Some("bad.example".into()),
            ..Criteria::default()
        },
    };
    // The matching signatures in the order a job meets them.
    let mut matching: Vec<((u64, usize, usize), &'static str, String)> = model
        .petitions
        .iter()
        .filter(|(id, _)| scope.is_none_or(|s| s == **id))
        .flat_map(|(id, p)| {
            p.signers
                .iter()
                .filter(|(e, s)| e.ends_with("@bad.example") && s.state != State::Invalidated)
                .map(|(e, s)| (s.order, *id, e.clone()))
        })
        .collect();
    matching.sort_unstable();
    assert_eq!(
        engine.preview_invalidation(&request),
        Ok(matching.len() as u64),
        "step {step}: preview"
    );
    let job = engine.start_invalidation(request).expect("starts");
    let cancel = rng.random_ratio(1, 3);
    if cancel {
        match engine.cancel_invalidation(job.id) {
            Ok(_) | Err(InvalidationError::Finished(_)) => {}
            Err(e) => panic!("step {step}: cancel: {e:?}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let job = engine.invalidation(job.id).expect("exists");
        if job.state != JobState::Running {
            break job;
        }
        assert!(Instant::now() < deadline, "step {step}: job stuck: {job:?}");
        std::thread::sleep(Duration::from_millis(2));
    };
    let done = if job.state == JobState::Completed {
        assert_eq!(job.invalidated, matching.len() as u64, "step {step}");
        matching.len()
    } else {
        assert!(
            cancel && job.state == JobState::Cancelled,
            "step {step}: {job:?}"
        );
        job.invalidated as usize
    };
    // The job invalidated a prefix of the matching signatures, in signing order.
    for (_, id, email) in matching.into_iter().take(done) {
        let p = model.petitions.get_mut(id).expect("petition");
        let before = p.count(State::Validated);
        p.signers.get_mut(&email).expect("signer").state = State::Invalidated;
        p.moved(before);
    }
}

fn check(engine: &Engine, model: &Model, step: usize) {
    for (id, p) in &model.petitions {
        let info = engine.petition(id).expect("registered");
        assert_eq!(
            (info.count, info.pending_count, info.invalidated_count),
            (
                p.count(State::Validated),
                p.count(State::Pending),
                p.count(State::Invalidated)
            ),
            "step {step}: counts of {id}"
        );
        let reached: Vec<u64> = p.reached.iter().copied().collect();
        assert_eq!(
            info.milestones_reached, reached,
            "step {step}: reached of {id}"
        );
        // Counts by country and region: the validated signatures' places, as first signed.
        let mut countries: BTreeMap<String, u64> = BTreeMap::new();
        let mut regions: BTreeMap<(String, String), u64> = BTreeMap::new();
        for signer in p.signers.values().filter(|s| s.state == State::Validated) {
            let (country, region) = counted(signer.place);
            if let Some(region) = region {
                *regions.entry((country.clone(), region)).or_default() += 1;
            }
            *countries.entry(country).or_default() += 1;
        }
        let (count, got) = engine.countries(id).expect("registered");
        assert_eq!(count, info.count, "step {step}: countries' count of {id}");
        let got: BTreeMap<String, u64> = got.into_iter().map(|c| (c.country, c.count)).collect();
        assert_eq!(got, countries, "step {step}: countries of {id}");
        assert_eq!(got.values().sum::<u64>(), count, "step {step}: {id}");
        let got: BTreeMap<(String, String), u64> = engine
            .regions(id, None)
            .expect("no country given")
            .expect("registered")
            .into_iter()
            .map(|r| ((r.country, r.region), r.count))
            .collect();
        assert_eq!(got, regions, "step {step}: regions of {id}");
        let hours: i64 = engine
            .history(id, Resolution::Hour)
            .expect("registered")
            .iter()
            .map(|b| b.count)
            .sum();
        assert_eq!(hours, count as i64, "step {step}: hours of {id}");
    }
}

#[test]
fn lifecycle_workload_matches_the_model() {
    let seed = seed("lifecycle model");
    for k in 0..3 {
        run(seed.wrapping_add(k));
    }
}
