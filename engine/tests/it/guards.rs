//! Abuse controls through the library: block lists refuse and count nothing, the allow list
//! exempts from the limits per (petition, address), switches and a petition's pause stop what
//! they say and nothing else, and lists and switches are durable across a reopen.

use std::sync::Arc;
use std::time::Duration;

use engine::{
    Clock, Config, Criteria, Engine, EntryKind, EntrySpec, GuardError, InvalidationError,
    InvalidationRequest, ListName, ManualClock, NewSignature, Outcome, PetitionError, PetitionSpec,
    RateLimits, SubmitError, Validation, Window,
};

use crate::support::{open, register};

const BY: &str = "admin:0123abcd";

fn entry(list: ListName, kind: EntryKind, value: &str) -> EntrySpec {
    EntrySpec {
        list,
        kind,
        value: value.to_owned(),
        by: BY.to_owned(),
    }
}

fn block(engine: &Engine, kind: EntryKind, value: &str) -> u64 {
    engine
        .add_list_entry(entry(ListName::Block, kind, value))
        .expect("listed")
        .id
}

fn from(petition: &str, email: &str, ip: &str) -> NewSignature {
    let mut signature = NewSignature::new(petition, email);
    signature.ip = Some(ip.to_owned());
    signature
}

fn accepted(outcome: Result<Outcome, SubmitError>) -> bool {
    matches!(outcome, Ok(Outcome::Accepted { .. }))
}

/// A blocked signature is refused, stored nowhere and counted nowhere; the same signer is
/// taken once the entry is removed (it holds no slot).
fn blocks_refuse_and_count_nothing(engine: &Engine) {
    register(engine, &["p"]);
    let net = block(engine, EntryKind::Ip, "198.51.100.0/24");
    let v6 = block(engine, EntryKind::Ip, "2001:db8:bad::/48");
    block(engine, EntryKind::EmailDomain, "*.spam.test");
    block(engine, EntryKind::Email, "Bot@Example.org");
    let refused = [
        from("p", "a@example.org", "198.51.100.77"),
        from("p", "b@example.org", "::ffff:198.51.100.1"),
        from("p", "c@example.org", "2001:db8:bad:1::9"),
        from("p", "d@x.spam.test", "192.0.2.1"),
        NewSignature::new("p", "BOT@example.org"),
    ];
    for outcome in engine.submit_batch(refused.to_vec()) {
        assert_eq!(outcome, Err(SubmitError::Blocked));
    }
    assert!(accepted(engine.submit(from(
        "p",
        "e@example.org",
        "198.51.101.1"
    ))));
    assert!(accepted(
        engine.submit(NewSignature::new("p", "d@spam.test"))
    ));
    assert_eq!(engine.count("p"), Some(2));
    assert_eq!(engine.petition("p").expect("p").countries[0].count, 2);
    engine.remove_list_entry(net).expect("removed");
    engine.remove_list_entry(v6).expect("removed");
    assert!(accepted(engine.submit(from(
        "p",
        "a@example.org",
        "198.51.100.77"
    ))));
    assert!(accepted(engine.submit(from(
        "p",
        "c@example.org",
        "2001:db8:bad:1::9"
    ))));
    assert_eq!(engine.count("p"), Some(4));
}

#[test]
fn blocks_refuse_and_count_nothing_in_memory_and_persistent() {
    let engine = Engine::open(Config::in_memory()).expect("opens");
    blocks_refuse_and_count_nothing(&engine);
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = open(Config::persistent(dir.path().join("data")));
    blocks_refuse_and_count_nothing(&engine);
    engine.verify_store().expect("consistent");
}

#[test]
fn lists_refuse_bad_and_repeated_entries_and_never_reuse_ids() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data");
    let engine = open(Config::persistent(&path));
    let first = block(&engine, EntryKind::Ip, "192.0.2.7");
    assert_eq!(
        engine
            .add_list_entry(entry(ListName::Block, EntryKind::Ip, "::ffff:192.0.2.7"))
            .expect_err("refused"),
        GuardError::Listed(first),
        "the mapped form is the same address"
    );
    for bad in [
        entry(ListName::Block, EntryKind::Ip, "192.0.2.0/40"),
        entry(ListName::Block, EntryKind::EmailDomain, "*"),
        entry(ListName::Allow, EntryKind::EmailDomain, "example.org"),
        EntrySpec {
            by: String::new(),
            ..entry(ListName::Block, EntryKind::Email, "a@b.org")
        },
    ] {
        assert!(
            matches!(
                engine.add_list_entry(bad.clone()),
                Err(GuardError::Invalid { .. })
            ),
            "{bad:?}"
        );
    }
    let allowed = engine
        .add_list_entry(entry(ListName::Allow, EntryKind::Ip, "10.1.0.0/16"))
        .expect("allowed");
    assert!(engine.is_allowed("10.1.200.3".parse().expect("ip")));
    assert!(!engine.is_allowed("10.2.0.1".parse().expect("ip")));
    assert_eq!(engine.list_entries(ListName::Block).len(), 1);
    assert_eq!(engine.list_entries(ListName::Allow), vec![allowed.clone()]);
    // The highest id removed, then a reopen: the next entry still gets a new id.
    engine.remove_list_entry(allowed.id).expect("removed");
    assert_eq!(
        engine.remove_list_entry(allowed.id),
        Err(GuardError::UnknownEntry)
    );
    engine.close().expect("closes");
    let engine = open(Config::persistent(&path));
    assert!(!engine.is_allowed("10.1.200.3".parse().expect("ip")));
    let next = block(&engine, EntryKind::Email, "x@y.org");
    assert!(next > allowed.id, "{next} after {}", allowed.id);
}

#[test]
fn lists_switches_and_pauses_survive_a_reopen_with_who_and_when() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data");
    let engine = open(Config::persistent(&path));
    register(&engine, &["p", "q"]);
    let listed = engine
        .add_list_entry(entry(ListName::Block, EntryKind::EmailDomain, "Spam.Test"))
        .expect("listed");
    assert_eq!(listed.value, "spam.test");
    assert_eq!(listed.added.by, BY);
    let switches = engine.set_switches(true, false, BY).expect("set");
    let paused = engine
        .pause_petition("q", "admin:feedf00d")
        .expect("paused");
    assert_eq!(
        paused.paused.as_ref().map(|c| c.by.as_str()),
        Some("admin:feedf00d")
    );
    engine.close().expect("closes");

    let engine = open(Config::persistent(&path));
    assert_eq!(engine.list_entries(ListName::Block), vec![listed]);
    assert_eq!(engine.switches(), switches);
    assert_eq!(
        engine.petition("q").expect("q").paused,
        paused.paused,
        "who paused it and when, as it was"
    );
    assert_eq!(engine.petition("p").expect("p").paused, None);
    assert_eq!(
        engine.submit(NewSignature::new("p", "a@example.org")),
        Err(SubmitError::SigningPaused)
    );
    engine.set_switches(false, false, BY).expect("set");
    assert!(accepted(
        engine.submit(NewSignature::new("p", "a@example.org"))
    ));
    assert_eq!(
        engine.submit(NewSignature::new("q", "a@example.org")),
        Err(SubmitError::SigningPaused),
        "q is paused by itself"
    );
    assert_eq!(
        engine.submit(NewSignature::new("p", "b@spam.test")),
        Err(SubmitError::Blocked)
    );
    let resumed = engine.resume_petition("q").expect("resumed");
    assert_eq!(resumed.paused, None);
    assert!(accepted(
        engine.submit(NewSignature::new("q", "a@example.org"))
    ));
    engine.close().expect("closes");
    let engine = open(Config::persistent(&path));
    assert_eq!(engine.petition("q").expect("q").paused, None);
    assert_eq!(engine.count("q"), Some(1));
    assert_eq!(
        engine.pause_petition("nope", BY).expect_err("refused"),
        GuardError::UnknownPetition
    );
}

/// A paused petition refuses signatures, not validations of its pending ones; read-only refuses
/// every change and reads go on.
#[test]
fn a_pause_lets_validations_through_and_read_only_stops_every_change() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = open(Config::persistent(dir.path().join("data")));
    let mut spec = PetitionSpec::new("e");
    spec.validation = Some(Validation::Email);
    engine.register(spec).expect("registers");
    let token = match engine.submit(NewSignature::new("e", "v@example.org")) {
        Ok(Outcome::Pending { token }) => token,
        other => panic!("expected pending, got {other:?}"),
    };
    engine.pause_petition("e", BY).expect("paused");
    assert_eq!(
        engine.submit(NewSignature::new("e", "w@example.org")),
        Err(SubmitError::SigningPaused)
    );
    assert!(matches!(
        engine.validate(token.text().as_str()),
        Ok(Outcome::Validated { count: 1 })
    ));
    engine.resume_petition("e").expect("resumed");

    engine.set_switches(false, true, BY).expect("read-only");
    assert_eq!(
        engine.submit(NewSignature::new("e", "x@example.org")),
        Err(SubmitError::ReadOnly)
    );
    assert_eq!(
        engine.validate(token.text().as_str()),
        Err(SubmitError::ReadOnly)
    );
    assert_eq!(
        engine
            .register(PetitionSpec::new("new"))
            .expect_err("refused"),
        PetitionError::ReadOnly
    );
    assert_eq!(
        engine.close_petition("e").expect_err("refused"),
        PetitionError::ReadOnly
    );
    assert_eq!(
        engine
            .respond("e", "An answer.", None)
            .expect_err("refused"),
        PetitionError::ReadOnly
    );
    let request = InvalidationRequest {
        petition: Some("e".into()),
        criteria: Criteria {
            email_domain: Some("example.org".into()),
            ..Criteria::default()
        },
    };
    assert_eq!(
        engine.start_invalidation(request).expect_err("refused"),
        InvalidationError::ReadOnly
    );
    // Reads go on, and so do the switches.
    assert_eq!(engine.count("e"), Some(1));
    assert!(engine.petition("e").is_some());
    engine.set_switches(false, false, BY).expect("writable");
    assert!(engine.register(PetitionSpec::new("new")).is_ok());
    engine.verify_store().expect("consistent");
}

fn limited(outcome: Result<Outcome, SubmitError>) -> Option<u32> {
    match outcome {
        Err(SubmitError::RateLimited { retry_after_s }) => Some(retry_after_s),
        _ => None,
    }
}

/// The UK defaults through the engine, on its clock: per (petition, address), duplicates
/// counted, refusals not, the allow list exempt, and signatures without an address untouched.
#[test]
fn rate_limits_count_per_petition_and_address_on_the_engine_clock() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let mut config = Config::in_memory();
    config.clock = Arc::clone(&clock) as Arc<dyn Clock>;
    config.sweep_interval = None;
    let engine = Engine::open(config).expect("opens");
    register(&engine, &["p", "q"]);
    assert_eq!(engine.rate_limits(), Some(RateLimits::UK));
    let ip = "203.0.113.5";
    assert!(accepted(engine.submit(from("p", "a@example.org", ip))));
    assert_eq!(
        limited(engine.submit(from("p", "b@example.org", ip))),
        Some(60)
    );
    assert!(
        limited(engine.submit(from("p", "a@example.org", ip))).is_some(),
        "a duplicate from the address counts against it as well"
    );
    assert!(
        accepted(engine.submit(from("q", "b@example.org", ip))),
        "per petition"
    );
    assert!(accepted(engine.submit(from(
        "p",
        "b@example.org",
        "203.0.113.6"
    ))));
    assert!(accepted(
        engine.submit(NewSignature::new("p", "c@example.org"))
    ));
    clock.advance(Duration::from_secs(59));
    assert_eq!(
        limited(engine.submit(from("p", "d@example.org", ip))),
        Some(1)
    );
    clock.advance(Duration::from_secs(1));
    assert!(accepted(engine.submit(from("p", "d@example.org", ip))));
    // A minute apart, the address keeps signing.
    for (at, email) in ["e", "f", "g"].iter().enumerate() {
        clock.advance(Duration::from_secs(60));
        assert!(
            accepted(engine.submit(from("p", &format!("{email}@example.org"), ip))),
            "{at}"
        );
    }
    clock.advance(Duration::from_secs(59));
    assert_eq!(
        limited(engine.submit(from("p", "h@example.org", ip))),
        Some(1)
    );
    // The allow list beats the limit, for that network only.
    engine
        .add_list_entry(entry(ListName::Allow, EntryKind::Ip, "203.0.113.0/29"))
        .expect("allowed");
    for i in 0..10 {
        assert!(accepted(engine.submit(from(
            "p",
            &format!("lib{i}@example.org"),
            ip
        ))));
    }
    assert!(accepted(engine.submit(from(
        "p",
        "x@example.org",
        "203.0.113.9"
    ))));
    assert!(limited(engine.submit(from("p", "y@example.org", "203.0.113.9"))).is_some());
}

#[test]
fn rate_limits_can_be_set_or_turned_off() {
    let mut config = Config::in_memory();
    config.rate_limits = None;
    let engine = Engine::open(config).expect("opens");
    register(&engine, &["p"]);
    for i in 0..20 {
        assert!(accepted(engine.submit(from(
            "p",
            &format!("{i}@example.org"),
            "192.0.2.1"
        ))));
    }
    let mut config = Config::in_memory();
    config.rate_limits = Some(RateLimits {
        burst: Window {
            count: 3,
            seconds: 10,
        },
        ..RateLimits::UK
    });
    let engine = Engine::open(config).expect("opens");
    register(&engine, &["p"]);
    let outcomes: Vec<_> = (0..4)
        .map(|i| engine.submit(from("p", &format!("{i}@example.org"), "192.0.2.1")))
        .collect();
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 3);
    assert!(limited(outcomes[3].clone()).is_some());
    let mut config = Config::in_memory();
    config.rate_limits = Some(RateLimits {
        entries: 10,
        ..RateLimits::UK
    });
    assert!(
        Engine::open(config).is_err(),
        "too small a table is refused at open"
    );
}

/// Within one call: the first signature of each address is taken, the rest refused, and the
/// claims and records of the taken ones stay matched (the store verifies).
#[test]
fn a_batch_takes_the_first_of_each_address_and_stores_exactly_those() {
    let dir = tempfile::tempdir().expect("temp dir");
    for config in [
        Config::in_memory(),
        Config::persistent(dir.path().join("data")),
    ] {
        let engine = open(config);
        register(&engine, &["p"]);
        let batch = vec![
            from("p", "a@example.org", "192.0.2.1"),
            from("p", "b@example.org", "192.0.2.2"),
            from("p", "c@example.org", "192.0.2.1"),
            NewSignature::new("p", "d@example.org"),
            from("p", "e@example.org", "::ffff:192.0.2.1"),
            from("p", "f@example.org", "192.0.2.2"),
            from("p", "g@example.org", "2001:db8::1"),
        ];
        let outcomes = engine.submit_batch(batch);
        let taken: Vec<bool> = outcomes.iter().map(|o| o.is_ok()).collect();
        assert_eq!(
            taken,
            [true, true, false, true, false, false, true],
            "{outcomes:?}"
        );
        assert_eq!(engine.count("p"), Some(4));
        // The refused ones hold no slot: with the limits lifted by the allow list they sign.
        engine
            .add_list_entry(entry(ListName::Allow, EntryKind::Ip, "192.0.2.0/24"))
            .expect("allowed");
        for email in ["c", "e", "f"] {
            assert!(accepted(engine.submit(from(
                "p",
                &format!("{email}@example.org"),
                "192.0.2.1"
            ))));
        }
        assert_eq!(engine.count("p"), Some(7));
        if engine.stats().persistent {
            engine.verify_store().expect("consistent");
        }
    }
}
