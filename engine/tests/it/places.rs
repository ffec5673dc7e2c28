//! Counts by place, the history and trending, under an injected clock: signatures land in the
//! minutes and hours they were counted in, across a restart; an invalidation takes its bucket
//! down; trending is right at the edges of its window and at most `trending_refresh` old; a
//! full dictionary of regions refuses a new one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{
    Bucket, Config, Criteria, Engine, InvalidationRequest, JobState, ManualClock, NewSignature,
    Resolution, SubmitError,
};

use crate::support::{open, register};

/// 2026-11-30T10:00:00Z, a whole hour.
const T0: u64 = 1_796_032_800_000;
const MINUTE: u64 = 60_000;
const HOUR: u64 = 3_600_000;

fn signed(
    petition: &str,
    email: String,
    country: Option<&str>,
    region: Option<&str>,
) -> NewSignature {
    let mut signature = NewSignature::new(petition, email);
    signature.country = country.map(str::to_owned);
    signature.region = region.map(str::to_owned);
    signature
}

fn sign(engine: &Engine, petition: &str, from: u32, n: u32, domain: &str) {
    let batch = (from..from + n)
        .map(|i| signed(petition, format!("s{i}@{domain}"), Some("GB"), Some("E1")))
        .collect();
    for outcome in engine.submit_batch(batch) {
        assert!(outcome.is_ok(), "{outcome:?}");
    }
}

fn buckets(engine: &Engine, petition: &str, resolution: Resolution) -> Vec<(u64, i64)> {
    engine
        .history(petition, resolution)
        .expect("registered")
        .into_iter()
        .map(|Bucket { start_ms, count }| (start_ms, count))
        .collect()
}

#[test]
fn history_lands_in_the_right_minutes_and_hours_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::new(T0 + 30_000));
    let config = || {
        let mut config = Config::persistent(dir.path());
        config.clock = clock.clone();
        config.sweep_interval = None;
        config
    };
    let engine = open(config());
    register(&engine, &["p"]);
    sign(&engine, "p", 0, 3, "bad.example");
    clock.set(T0 + 90_000);
    sign(&engine, "p", 3, 2, "good.example");
    clock.set(T0 + HOUR + 10_000);
    sign(&engine, "p", 5, 1, "good.example");
    engine.close().expect("closes");
    drop(engine);

    let engine = open(config());
    sign(&engine, "p", 6, 1, "good.example");
    let minutes = vec![(T0, 3), (T0 + MINUTE, 2), (T0 + HOUR, 2)];
    assert_eq!(buckets(&engine, "p", Resolution::Minute), minutes);
    assert_eq!(
        buckets(&engine, "p", Resolution::Hour),
        vec![(T0, 5), (T0 + HOUR, 2)]
    );

    // An invalidation of the three first, two minutes later: the count's change is in the
    // minute it happened.
    clock.set(T0 + HOUR + 2 * MINUTE);
    let job = engine
        .start_invalidation(InvalidationRequest {
            petition: Some("p".into()),
            criteria: Criteria {
                email_domain: Some("bad.example".into()),
                ..Criteria::default()
            },
        })
        .expect("starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.invalidation(job.id).expect("exists").state == JobState::Running {
        assert!(Instant::now() < deadline, "the job finishes");
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut minutes = minutes;
    minutes.push((T0 + HOUR + 2 * MINUTE, -3));
    assert_eq!(buckets(&engine, "p", Resolution::Minute), minutes);
    assert_eq!(
        buckets(&engine, "p", Resolution::Hour),
        vec![(T0, 5), (T0 + HOUR, -1)]
    );
    assert_eq!(engine.count("p"), Some(4));
    let (count, countries) = engine.countries("p").expect("registered");
    assert_eq!((count, countries[0].count), (4, 4));
    engine.verify_store().expect("consistent");
    engine.close().expect("closes");
    drop(engine);

    // The same after a restart; 48 hours after its last change, the minutes are gone and the
    // hours stay.
    let engine = open(config());
    assert_eq!(buckets(&engine, "p", Resolution::Minute), minutes);
    clock.set(T0 + 49 * HOUR + 3 * MINUTE);
    assert_eq!(buckets(&engine, "p", Resolution::Minute), vec![]);
    assert_eq!(
        buckets(&engine, "p", Resolution::Hour),
        vec![(T0, 5), (T0 + HOUR, -1)]
    );
    engine.verify_store().expect("consistent");
    engine.close().expect("closes");
}

fn ids(engine: &Engine, window: u32) -> Vec<(String, i64)> {
    engine
        .trending(window, 10)
        .into_iter()
        .map(|(info, n)| (info.id, n))
        .collect()
}

#[test]
fn trending_is_right_at_the_edges_of_its_window() {
    let clock = Arc::new(ManualClock::new(T0));
    let mut config = Config::in_memory();
    config.clock = clock.clone();
    config.trending_refresh = Duration::ZERO;
    let engine = open(config);
    register(&engine, &["a", "b", "c", "quiet"]);
    sign(&engine, "a", 0, 3, "x.example");
    clock.set(T0 + 30 * MINUTE);
    sign(&engine, "b", 0, 2, "x.example");
    clock.set(T0 + 59 * MINUTE);
    sign(&engine, "c", 0, 1, "x.example");
    let abc = vec![("a".into(), 3), ("b".into(), 2), ("c".into(), 1)];
    assert_eq!(ids(&engine, 60), abc);
    clock.set(T0 + 60 * MINUTE - 1);
    assert_eq!(ids(&engine, 60), abc, "the last millisecond of a's minute");
    assert_eq!(
        ids(&engine, 30),
        vec![("b".into(), 2), ("c".into(), 1)],
        "b signed 29 minutes before"
    );
    clock.set(T0 + 60 * MINUTE);
    assert_eq!(
        ids(&engine, 60),
        vec![("b".into(), 2), ("c".into(), 1)],
        "a's minute left the hour"
    );
    assert_eq!(ids(&engine, 30), vec![("c".into(), 1)]);
    assert_eq!(ids(&engine, 1), vec![], "nothing this minute");
    // Ties by id.
    sign(&engine, "quiet", 0, 2, "x.example");
    assert_eq!(
        ids(&engine, 60),
        vec![("b".into(), 2), ("quiet".into(), 2), ("c".into(), 1)]
    );
    assert_eq!(engine.trending(60, 1).len(), 1, "limit");
}

#[test]
fn a_trending_list_is_computed_at_most_once_per_refresh() {
    let clock = Arc::new(ManualClock::new(T0));
    let mut config = Config::in_memory();
    config.clock = clock.clone();
    config.trending_refresh = Duration::from_secs(10);
    let engine = open(config);
    register(&engine, &["a", "b"]);
    sign(&engine, "a", 0, 1, "x.example");
    assert_eq!(ids(&engine, 60), vec![("a".into(), 1)]);
    sign(&engine, "b", 0, 2, "x.example");
    clock.set(T0 + 9_999);
    assert_eq!(
        ids(&engine, 60),
        vec![("a".into(), 1)],
        "the list of 10 s ago"
    );
    clock.set(T0 + 10_000);
    assert_eq!(ids(&engine, 60), vec![("b".into(), 2), ("a".into(), 1)]);
}

#[test]
fn a_full_dictionary_of_regions_refuses_a_new_region_and_nothing_else() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = || {
        let mut config = Config::persistent(dir.path());
        config.regions_max = 2;
        config
    };
    let engine = open(config());
    register(&engine, &["p"]);
    let outcomes = engine.submit_batch(vec![
        signed("p", "a@x.example".into(), Some("GB"), Some("E1")),
        signed("p", "b@x.example".into(), Some("FR"), Some("E1")),
        signed("p", "c@x.example".into(), Some("GB"), Some("E2")),
        signed("p", "d@x.example".into(), Some("GB"), Some("e1")),
        signed("p", "e@x.example".into(), Some("GB"), None),
    ]);
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
    match &outcomes[2] {
        Err(SubmitError::Invalid(field)) => assert_eq!(field.field, "region"),
        other => panic!("want a refusal of the region, got {other:?}"),
    }
    assert!(outcomes[3].is_ok() && outcomes[4].is_ok(), "{outcomes:?}");
    assert_eq!(engine.count("p"), Some(4));
    engine.close().expect("closes");
    drop(engine);
    // The dictionary survives a restart with its ids.
    let engine = open(config());
    let mut regions: Vec<(String, String, u64)> = engine
        .regions("p", None)
        .expect("valid")
        .expect("registered")
        .into_iter()
        .map(|r| (r.country, r.region, r.count))
        .collect();
    regions.sort();
    assert_eq!(
        regions,
        vec![("FR".into(), "E1".into(), 1), ("GB".into(), "E1".into(), 2)]
    );
    assert!(engine.regions("p", Some("UK")).is_err(), "not a code");
    engine.verify_store().expect("consistent");
    engine.close().expect("closes");
}

#[test]
fn trending_reads_in_a_storm_see_ordered_lists_while_signatures_come_in() {
    let mut config = Config::in_memory();
    config.clock = Arc::new(ManualClock::new(T0));
    // Every read finds the list old: readers compute it, or take the last one while another
    // computes.
    config.trending_refresh = Duration::ZERO;
    let engine = open(config);
    let petitions: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
    for id in &petitions {
        engine
            .register(engine::PetitionSpec::new(id.as_str()))
            .expect("registers");
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for round in 0..200u32 {
                let batch = petitions
                    .iter()
                    .enumerate()
                    .flat_map(|(i, id)| {
                        (0..i as u32 % 5 + 1)
                            .map(move |k| signed(id, format!("r{round}k{k}@x.example"), None, None))
                    })
                    .collect();
                for outcome in engine.submit_batch(batch) {
                    assert!(outcome.is_ok(), "{outcome:?}");
                }
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        for _ in 0..4 {
            scope.spawn(|| {
                let mut reads = 0u32;
                while !done.load(std::sync::atomic::Ordering::Acquire) || reads < 100 {
                    let list = engine.trending(60, 20);
                    assert!(
                        list.windows(2).all(|w| w[0].1 >= w[1].1),
                        "most first: {list:?}"
                    );
                    reads += 1;
                }
            });
        }
    });
    // Settled: every petition's growth in the hour is its count.
    let list = engine.trending(60, 20);
    assert_eq!(list.len(), 20);
    for (info, growth) in list {
        assert_eq!(growth as u64, info.count, "{}", info.id);
    }
}
