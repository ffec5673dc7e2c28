//! Trending sources through the library: counts against an exact count kept by the test, the
//! stated error bound when a petition's table is full, clock hours on the engine's clock, and
//! `source_alert` exactly once per (petition, source, clock hour), also across a reopen.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use engine::{
    Clock, Config, Engine, EventData, ManualClock, NewSignature, Outcome, Source, SourceHour,
    SourceKind, SourcesConfig, SourcesError, SubmitError, SOURCE_SLOT_BYTES,
};
use rand::{Rng, SeedableRng};

use crate::support::{open, register, seed};

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);
/// The top of an hour on the engine's clock.
const T0: u64 = 1_764_489_600_000;

fn from(petition: &str, email: &str, ip: &str) -> NewSignature {
    let mut signature = NewSignature::new(petition, email);
    signature.ip = Some(ip.to_owned());
    signature
}

/// An engine on a manual clock at `T0`, without the limits per address (the tests send many
/// signatures from one address) or the background thread.
fn config(base: Config, clock: &Arc<ManualClock>, sources: SourcesConfig) -> Config {
    let mut config = base;
    config.clock = Arc::clone(clock) as Arc<dyn Clock>;
    config.sweep_interval = None;
    config.rate_limits = None;
    config.sources = Some(sources);
    config
}

/// A random address of 10.0.0.0/8.
fn random_v4(rng: &mut impl Rng) -> String {
    let [a, b, c]: [u8; 3] = rng.random();
    format!("10.{a}.{b}.{c}")
}

fn counts(list: &[engine::SourceCount]) -> HashMap<String, (u64, u64)> {
    list.iter()
        .map(|c| (c.source.value.clone(), (c.count, c.error)))
        .collect()
}

/// Source alerts in the feed: (kind, value, count).
fn alerts(engine: &Engine) -> Vec<(SourceKind, String, u64)> {
    engine
        .events_after(0, 10_000)
        .into_iter()
        .filter_map(|e| match e.data {
            EventData::SourceAlert { source, count, .. } => {
                Some((source.kind, source.value, count))
            }
            _ => None,
        })
        .collect()
}

/// Random signatures from a few hundred addresses, networks and domains: every source is
/// counted exactly (error 0), highest first, and duplicates and refusals add nothing.
fn counts_are_exact_while_the_tables_hold_every_source(engine: &Engine) {
    register(engine, &["p", "q"]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed("sources-exact"));
    let mut ips: HashMap<String, u64> = HashMap::new();
    let mut nets: HashMap<String, u64> = HashMap::new();
    let mut domains: HashMap<String, u64> = HashMap::new();
    let mut batch = Vec::new();
    let mut first = String::new();
    for n in 0..3_000u32 {
        let (ip, net) = if rng.random_bool(0.8) {
            let (c, d) = (rng.random_range(0..4u8), rng.random_range(0..50u8));
            (format!("198.51.{c}.{d}"), format!("198.51.{c}.0/24"))
        } else {
            let (c, d) = (rng.random_range(1..4u16), rng.random_range(1..30u16));
            (
                format!("2001:db8:{c:x}:9::{d:x}"),
                format!("2001:db8:{c:x}::/48"),
            )
        };
        let domain = format!("d{}.example", rng.random_range(0..40u8));
        // Mixed case: a domain is counted lower-cased.
        let email = if n % 2 == 0 {
            format!("s{n}@{domain}")
        } else {
            format!("s{n}@{}", domain.to_uppercase())
        };
        if n == 0 {
            first = email.clone();
        }
        *ips.entry(ip.clone()).or_default() += 1;
        *nets.entry(net).or_default() += 1;
        *domains.entry(domain).or_default() += 1;
        batch.push(from("p", &email, &ip));
        if batch.len() == 97 {
            for outcome in engine.submit_batch(std::mem::take(&mut batch)) {
                assert!(
                    matches!(outcome, Ok(Outcome::Accepted { .. })),
                    "{outcome:?}"
                );
            }
        }
    }
    for outcome in engine.submit_batch(batch) {
        assert!(matches!(outcome, Ok(Outcome::Accepted { .. })));
    }
    // A duplicate and a refused signature are not sources of signatures.
    assert!(matches!(
        engine.submit(from("p", &first, "192.0.2.1")),
        Ok(Outcome::Duplicate { .. })
    ));
    assert!(matches!(
        engine.submit(from("p", "bad", "192.0.2.1")),
        Err(SubmitError::Invalid(_))
    ));
    let top = engine
        .sources("p", SourceHour::Current, usize::MAX)
        .expect("reads");
    for (name, list, exact) in [
        ("ips", &top.ips, &ips),
        ("networks", &top.networks, &nets),
        ("domains", &top.email_domains, &domains),
    ] {
        let expected: HashMap<String, (u64, u64)> =
            exact.iter().map(|(k, &n)| (k.clone(), (n, 0))).collect();
        assert_eq!(counts(list), expected, "{name}");
        assert!(
            list.windows(2).all(|w| w[0].count >= w[1].count),
            "{name} highest first"
        );
    }
    let top3 = engine.sources("p", SourceHour::Current, 3).expect("reads");
    assert_eq!(top3.email_domains.len(), 3);
    assert_eq!(top3.email_domains[..], top.email_domains[..3]);
    let other = engine.sources("q", SourceHour::Current, 10).expect("reads");
    assert!(other.ips.is_empty() && other.networks.is_empty() && other.email_domains.is_empty());
    assert_eq!(
        engine.sources("nope", SourceHour::Current, 10),
        Err(SourcesError::UnknownPetition)
    );
}

#[test]
fn counts_are_exact_in_memory_and_persistent() {
    // A threshold of 4: tables grow rather than give away a slot holding one signature, so
    // while the budget lasts no count carries an error.
    let sources = SourcesConfig {
        alert_threshold: Some(4),
        ..SourcesConfig::DEFAULT
    };
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::open(config(Config::in_memory(), &clock, sources)).expect("opens");
    counts_are_exact_while_the_tables_hold_every_source(&engine);
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(config(
        Config::persistent(dir.path().join("data")),
        &clock,
        sources,
    ));
    counts_are_exact_while_the_tables_hold_every_source(&engine);
}

/// The smallest budget and 20,000 one-off addresses around three heavy ones: the table cannot
/// hold every address, so errors appear, but every count reported brackets the true count
/// (`count - error <= true <= count`) and the heavy addresses are all there.
#[test]
fn a_full_table_keeps_its_error_bound_and_the_heavy_sources() {
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::open(config(
        Config::in_memory(),
        &clock,
        SourcesConfig {
            alert_threshold: None,
            slots: 1024,
        },
    ))
    .expect("opens");
    register(&engine, &["p"]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed("sources-bound"));
    let heavy = ["203.0.113.1", "203.0.113.2", "2001:db8:1::1"];
    let mut exact: HashMap<String, u64> = HashMap::new();
    let mut batch = Vec::new();
    for n in 0..26_000u32 {
        let ip = if n % 10 < 3 {
            heavy[(n % 10) as usize].to_owned()
        } else {
            random_v4(&mut rng)
        };
        *exact.entry(ip.clone()).or_default() += 1;
        batch.push(from("p", &format!("s{n}@example.org"), &ip));
        if batch.len() == 512 {
            engine.submit_batch(std::mem::take(&mut batch));
        }
    }
    engine.submit_batch(batch);
    let top = engine
        .sources("p", SourceHour::Current, 100)
        .expect("reads");
    assert!(
        top.ips.iter().any(|c| c.error > 0),
        "the table was full: some counts carry an error"
    );
    for c in &top.ips {
        let truth = exact[&c.source.value];
        assert!(
            c.count - c.error <= truth && truth <= c.count,
            "{}: true {truth} outside [{} - {}, {}]",
            c.source.value,
            c.count,
            c.error,
            c.count
        );
    }
    for ip in heavy {
        let c = top
            .ips
            .iter()
            .find(|c| c.source.value == ip)
            .unwrap_or_else(|| panic!("{ip} is among the top"));
        assert!(c.count - c.error >= 2_000, "{ip}: {c:?}");
    }
    let stats = engine.stats();
    assert!(
        stats.source_bytes <= ((1024 + 3 * 8) * SOURCE_SLOT_BYTES) as u64,
        "{} bytes within the budget",
        stats.source_bytes
    );
}

/// The default threshold (100) and 60,000 one-off addresses around one that sends 130: every
/// count brackets the truth, and the address alerts once, by the time it has sent 125 (it
/// loses fewer than 25 signatures to evictions).
#[test]
fn counts_bracket_the_truth_and_the_abuser_alerts_by_a_quarter_over() {
    let clock = Arc::new(ManualClock::new(T0));
    let engine =
        Engine::open(config(Config::in_memory(), &clock, SourcesConfig::DEFAULT)).expect("opens");
    register(&engine, &["p"]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed("sources-quarter"));
    let abuser = "203.0.113.66";
    let mut exact: HashMap<String, u64> = HashMap::new();
    let mut batch = Vec::new();
    let mut alerted_at = None;
    for n in 0..60_130u32 {
        let ip = if n % 462 == 0 {
            abuser.to_owned()
        } else {
            random_v4(&mut rng)
        };
        *exact.entry(ip.clone()).or_default() += 1;
        batch.push(from("p", &format!("s{n}@example.org"), &ip));
        if batch.len() == 64 || ip == abuser {
            engine.submit_batch(std::mem::take(&mut batch));
            let ip_alerts = alerts(&engine)
                .into_iter()
                .filter(|a| a.0 == SourceKind::Ip)
                .count();
            if ip_alerts > 0 && alerted_at.is_none() {
                alerted_at = Some(exact[abuser]);
            }
        }
    }
    engine.submit_batch(batch);
    let ip_alerts: Vec<_> = alerts(&engine)
        .into_iter()
        .filter(|a| a.0 == SourceKind::Ip)
        .collect();
    assert_eq!(ip_alerts.len(), 1, "{ip_alerts:?}");
    assert_eq!(ip_alerts[0].1, abuser);
    assert!(ip_alerts[0].2 >= 100);
    let at = alerted_at.expect("alerted");
    assert!((100..=125).contains(&at), "alerted when it had sent {at}");
    let top = engine
        .sources("p", SourceHour::Current, 100)
        .expect("reads");
    assert_eq!(top.ips[0].source.value, abuser);
    for c in &top.ips {
        let truth = exact[&c.source.value];
        assert!(
            c.count - c.error <= truth && truth <= c.count,
            "{c:?}: {truth}"
        );
    }
}

/// Counts are per clock hour of the engine's clock: the current hour and the one before are
/// kept, older ones dropped, and the sweep returns the slots of petitions left with none.
#[test]
fn hours_roll_over_on_the_engine_clock() {
    let clock = Arc::new(ManualClock::new(T0 + 5 * 60_000));
    let engine = Engine::open(config(
        Config::in_memory(),
        &clock,
        SourcesConfig {
            alert_threshold: None,
            ..SourcesConfig::DEFAULT
        },
    ))
    .expect("opens");
    register(&engine, &["p"]);
    let ip = "192.0.2.7";
    let mut n = 0;
    let mut sign = |k: u32| {
        for _ in 0..k {
            n += 1;
            let outcome = engine.submit(from("p", &format!("s{n}@example.org"), ip));
            assert!(matches!(outcome, Ok(Outcome::Accepted { .. })));
        }
    };
    let count = |hour: SourceHour| {
        let top = engine.sources("p", hour, 10).expect("reads");
        top.ips.first().map_or(0, |c| c.count)
    };
    let both = || (count(SourceHour::Current), count(SourceHour::Previous));
    sign(3);
    clock.advance(MINUTE * 50); // T0 + 55 min
    sign(4);
    assert_eq!(both(), (7, 0));
    let top = engine.sources("p", SourceHour::Current, 10).expect("reads");
    assert_eq!(top.hour_start_ms, T0);
    clock.advance(MINUTE * 6); // T0 + 61 min: the next hour
    assert_eq!(both(), (0, 7));
    sign(2);
    assert_eq!(both(), (2, 7));
    // A call that read the clock just before the hour ended counts in that hour.
    clock.set(T0 + 59 * 60_000);
    sign(1);
    clock.set(T0 + 61 * 60_000);
    assert_eq!(both(), (2, 8));
    let top = engine
        .sources("p", SourceHour::Previous, 10)
        .expect("reads");
    assert_eq!(top.hour_start_ms, T0);
    clock.advance(HOUR); // T0 + 2 h 1 min
    assert_eq!(both(), (0, 2));
    engine.sweep_sources();
    assert!(engine.stats().source_bytes > 0, "the previous hour is kept");
    clock.advance(HOUR); // T0 + 3 h 1 min
    assert_eq!(both(), (0, 0));
    engine.sweep_sources();
    assert_eq!(
        engine.stats().source_bytes,
        0,
        "the idle petition was swept"
    );
    sign(1);
    assert_eq!(count(SourceHour::Current), 1);
}

/// One alert per (petition, source, clock hour): at the threshold, not again in that hour,
/// again in the next hour once the source reaches the threshold there, and per petition.
fn alerts_once_per_source_and_hour(engine: &Engine, clock: &ManualClock) {
    register(engine, &["p", "q"]);
    let mut n = 0;
    let mut sign = |petition: &str, k: u32, ip: &str, domain: &str| {
        for _ in 0..k {
            n += 1;
            let outcome = engine.submit(from(petition, &format!("s{n}@{domain}"), ip));
            assert!(
                matches!(outcome, Ok(Outcome::Accepted { .. })),
                "{outcome:?}"
            );
        }
    };
    sign("p", 4, "198.51.100.1", "a.example");
    sign("p", 3, "198.51.100.2", "b.example");
    let wait = || {
        // Persistent mode: the writer stores alerts after admission; flush waits for it.
        let _ = engine.flush();
    };
    wait();
    let got = alerts(engine);
    assert_eq!(
        got,
        vec![(SourceKind::Network, "198.51.100.0/24".to_owned(), 5)],
        "the network alerted once, at 5"
    );
    sign("p", 10, "198.51.100.1", "a.example");
    sign("q", 5, "198.51.100.1", "c.example");
    wait();
    let got = alerts(engine);
    assert_eq!(
        got[1..],
        [
            (SourceKind::Ip, "198.51.100.1".to_owned(), 5),
            (SourceKind::EmailDomain, "a.example".to_owned(), 5),
            (SourceKind::Ip, "198.51.100.1".to_owned(), 5),
            (SourceKind::Network, "198.51.100.0/24".to_owned(), 5),
            (SourceKind::EmailDomain, "c.example".to_owned(), 5),
        ],
        "once each, per petition"
    );
    let by_petition: Vec<String> = engine
        .events_after(0, 100)
        .into_iter()
        .filter(|e| e.kind() == engine::EventKind::SourceAlert)
        .map(|e| e.petition)
        .collect();
    assert_eq!(by_petition, ["p", "p", "p", "q", "q", "q"]);
    // The next clock hour (6 minutes on): counting starts again, and the address alerts again
    // at its fifth signature, once.
    clock.advance(MINUTE * 6);
    sign("p", 4, "198.51.100.1", "a.example");
    wait();
    assert_eq!(alerts(engine).len(), 6);
    sign("p", 3, "198.51.100.1", "a.example");
    wait();
    let got = alerts(engine);
    assert_eq!(got.len(), 9, "{got:?}");
    assert_eq!(
        got[6..],
        [
            (SourceKind::Ip, "198.51.100.1".to_owned(), 5),
            (SourceKind::Network, "198.51.100.0/24".to_owned(), 5),
            (SourceKind::EmailDomain, "a.example".to_owned(), 5),
        ]
    );
}

#[test]
fn alerts_come_once_per_source_and_hour_in_memory_and_persistent() {
    let sources = SourcesConfig {
        alert_threshold: Some(5),
        ..SourcesConfig::DEFAULT
    };
    // 55 minutes into the hour.
    let start = T0 + 55 * 60_000;
    let clock = Arc::new(ManualClock::new(start));
    let engine = Engine::open(config(Config::in_memory(), &clock, sources)).expect("opens");
    alerts_once_per_source_and_hour(&engine, &clock);
    let clock = Arc::new(ManualClock::new(start));
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(config(
        Config::persistent(dir.path().join("data")),
        &clock,
        sources,
    ));
    alerts_once_per_source_and_hour(&engine, &clock);
}

/// Counts start from zero after a reopen, but an alert recorded this clock hour is not made
/// again: the engine reads the hour's alerts back from the feed.
#[test]
fn an_alert_is_not_repeated_in_its_hour_after_a_reopen() {
    let sources = SourcesConfig {
        alert_threshold: Some(5),
        ..SourcesConfig::DEFAULT
    };
    let clock = Arc::new(ManualClock::new(T0 + 60_000));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data");
    let engine = open(config(Config::persistent(&path), &clock, sources));
    register(&engine, &["p"]);
    let batch = |from_n: u32, domain: &str, ip: &str| -> Vec<NewSignature> {
        (from_n..from_n + 5)
            .map(|n| from("p", &format!("s{n}@{domain}"), ip))
            .collect()
    };
    engine.submit_batch(batch(0, "a.example", "192.0.2.1"));
    engine.flush().expect("flushes");
    assert_eq!(alerts(&engine).len(), 3, "address, network, domain");
    drop(engine);
    let engine = open(config(Config::persistent(&path), &clock, sources));
    let top = engine.sources("p", SourceHour::Current, 10).expect("reads");
    assert!(top.ips.is_empty(), "counts are soft state");
    // Five more from the same address and domain: no new alert this hour.
    engine.submit_batch(batch(5, "a.example", "192.0.2.1"));
    engine.flush().expect("flushes");
    assert_eq!(alerts(&engine).len(), 3);
    // Another source in the same hour still alerts.
    engine.submit_batch(batch(10, "b.example", "192.0.2.1"));
    engine.flush().expect("flushes");
    assert_eq!(
        alerts(&engine)[3..],
        [(SourceKind::EmailDomain, "b.example".to_owned(), 5)]
    );
    // The next hour: the same sources alert again once they reach 5 there.
    clock.set(T0 + 3_600_000);
    drop(engine);
    let engine = open(config(Config::persistent(&path), &clock, sources));
    engine.submit_batch(batch(15, "a.example", "192.0.2.1"));
    engine.flush().expect("flushes");
    let got = alerts(&engine);
    assert_eq!(got.len(), 7, "{got:?}");
    assert!(got[4..].contains(&(SourceKind::Ip, "192.0.2.1".to_owned(), 5)));
    let source = Source {
        kind: SourceKind::EmailDomain,
        value: "a.example".to_owned(),
    };
    assert!(got[4..].contains(&(source.kind, source.value, 5)));
}

/// The previous hour before the clock's first hour ended is empty, not a wrapped hour.
#[test]
fn the_previous_hour_of_the_first_hour_is_empty() {
    let clock = Arc::new(ManualClock::new(1_000));
    let engine =
        Engine::open(config(Config::in_memory(), &clock, SourcesConfig::DEFAULT)).expect("opens");
    register(&engine, &["p"]);
    assert!(matches!(
        engine.submit(from("p", "a@example.org", "192.0.2.1")),
        Ok(Outcome::Accepted { .. })
    ));
    let previous = engine
        .sources("p", SourceHour::Previous, 10)
        .expect("reads");
    assert_eq!(previous.hour_start_ms, 0);
    assert!(previous.ips.is_empty());
    let current = engine.sources("p", SourceHour::Current, 10).expect("reads");
    assert_eq!(current.ips.len(), 1);
}

#[test]
fn sources_can_be_turned_off_and_bad_settings_are_refused() {
    let mut config = Config::in_memory();
    config.sources = None;
    let engine = Engine::open(config).expect("opens");
    register(&engine, &["p"]);
    assert_eq!(engine.sources_config(), None);
    assert_eq!(
        engine.sources("p", SourceHour::Current, 10),
        Err(SourcesError::Off)
    );
    for bad in [
        SourcesConfig {
            alert_threshold: Some(0),
            ..SourcesConfig::DEFAULT
        },
        SourcesConfig {
            slots: 1023,
            ..SourcesConfig::DEFAULT
        },
    ] {
        let mut config = Config::in_memory();
        config.sources = Some(bad);
        assert!(Engine::open(config).is_err(), "{bad:?}");
    }
}
