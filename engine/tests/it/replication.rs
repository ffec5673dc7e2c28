//! Replication through a log kept in memory: every write reaches the log first, a follower that
//! applies the log has the owner's state, and an owner fenced by a newer one's mark
//! acknowledges nothing more.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use engine::{
    Config, Durability, Engine, Follower, Outcome, PetitionSpec, ReplicatedLog, Replication,
    ReplicationError, SubmitError,
};

use crate::support::{open, sig};

/// The log: entries at positions 1, 2, ... shared by every writer's handle.
#[derive(Default)]
struct Entries(Mutex<Vec<Vec<u8>>>);

/// One writer's view of the log: where it thinks the log ends, and whether it gave up.
struct Handle {
    entries: Arc<Entries>,
    next: AtomicU64,
    failed: AtomicBool,
}

impl Handle {
    fn new(entries: &Arc<Entries>) -> Arc<Handle> {
        let next = entries.0.lock().expect("lock").len() as u64 + 1;
        Arc::new(Handle {
            entries: Arc::clone(entries),
            next: AtomicU64::new(next),
            failed: AtomicBool::new(false),
        })
    }
}

impl ReplicatedLog for Handle {
    fn next_position(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    fn append(&self, position: u64, entry: &[u8]) -> Result<(), ReplicationError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(ReplicationError::Unavailable("failed before".into()));
        }
        let mut entries = self.entries.0.lock().expect("lock");
        if entries.len() as u64 + 1 != position {
            self.failed.store(true, Ordering::SeqCst);
            return Err(ReplicationError::Fenced(format!(
                "last is {}, not {}",
                entries.len(),
                position - 1
            )));
        }
        entries.push(entry.to_vec());
        self.next.store(position + 1, Ordering::SeqCst);
        Ok(())
    }

    fn fail(&self, _why: &str) {
        self.failed.store(true, Ordering::SeqCst);
    }
}

fn replicated(dir: &std::path::Path, log: &Arc<Handle>) -> Config {
    let mut config = Config::persistent(dir);
    config.durability = Durability::Buffered;
    let log: Arc<dyn ReplicatedLog> = log.clone();
    config.replication = Some(Replication(log));
    config
}

/// Applies the log from the follower's position on.
fn catch_up(follower: &mut Follower, entries: &Entries) {
    let entries = entries.0.lock().expect("lock").clone();
    for (i, entry) in entries
        .iter()
        .enumerate()
        .skip(follower.position() as usize)
    {
        follower.apply(i as u64 + 1, entry).expect("applies");
    }
}

fn signatures(k: usize, n: usize) -> Vec<engine::NewSignature> {
    (0..n)
        .map(|i| {
            let petition = if i % 4 == 0 { "b" } else { "a" };
            let mut s = sig(petition, &format!("{k}-{i}@example.org"));
            s.country = Some(if i % 2 == 0 { "GB" } else { "FR" }.into());
            s
        })
        .collect()
}

/// What a caller can see of an engine: counts, countries, events.
fn view(engine: &Engine) -> String {
    let mut out = String::new();
    for id in ["a", "b", "v"] {
        let info = engine.petition(id).expect("registered");
        out += &format!(
            "{id}: {} pending {} countries {:?}\n",
            info.count,
            info.pending_count,
            engine.countries(id)
        );
    }
    for event in engine.events_after(0, 1000) {
        out += &format!("{event:?}\n");
    }
    out
}

#[test]
fn a_follower_that_applies_the_log_has_the_owners_state() {
    let owner_dir = tempfile::tempdir().expect("temp dir");
    let follower_dir = tempfile::tempdir().expect("temp dir");
    let entries = Arc::new(Entries::default());
    let log = Handle::new(&entries);
    let engine = open(replicated(owner_dir.path(), &log));
    let mut spec = PetitionSpec::new("a");
    spec.thresholds = Some(vec![100, 200]);
    engine.register(spec).expect("registers");
    engine.register(PetitionSpec::new("b")).expect("registers");
    let mut spec = PetitionSpec::new("v");
    spec.validation = Some(engine::Validation::Email);
    engine.register(spec).expect("registers");
    for k in 0..3 {
        for outcome in engine.submit_batch(signatures(k, 120)) {
            assert!(
                matches!(outcome, Ok(Outcome::Accepted { .. })),
                "{outcome:?}"
            );
        }
    }
    // A pending signature, then its validation: two writes of the lifecycle.
    let token = match engine.submit(sig("v", "someone@example.org")) {
        Ok(Outcome::Pending { token }) => token,
        other => panic!("pending expected: {other:?}"),
    };
    engine
        .submit(sig("v", "other@example.org"))
        .expect("pending");
    engine.validate(&token.to_string()).expect("validates");
    let owner_view = view(&engine);
    assert!(owner_view.contains("a: 270"), "{owner_view}");
    engine.close().expect("closes");
    drop(engine);
    let written = entries.0.lock().expect("lock").len();
    assert!(written >= 8, "every write is an entry: {written}");

    let mut follower = Follower::open(follower_dir.path()).expect("opens");
    assert_eq!(follower.position(), 0);
    catch_up(&mut follower, &entries);
    assert_eq!(follower.position(), written as u64);
    follower.close().expect("closes");
    let mut config = Config::persistent(follower_dir.path());
    config.durability = Durability::Buffered;
    let copy = open(config);
    assert_eq!(view(&copy), owner_view);
    let report = copy.verify_store().expect("the copy's store is consistent");
    assert_eq!(report.signatures, 360 + 2, "{report:?}");
    // Every signer is a duplicate on the copy: its index was rebuilt from the log's entries.
    for outcome in copy.submit_batch(signatures(1, 120)) {
        assert!(
            matches!(outcome, Ok(Outcome::Duplicate { .. })),
            "{outcome:?}"
        );
    }
}

#[test]
fn an_owner_fenced_by_a_newer_mark_acknowledges_nothing_more() {
    let old_dir = tempfile::tempdir().expect("temp dir");
    let new_dir = tempfile::tempdir().expect("temp dir");
    let entries = Arc::new(Entries::default());
    let old_log = Handle::new(&entries);
    let old = open(replicated(old_dir.path(), &old_log));
    old.register(PetitionSpec::new("a")).expect("registers");
    old.register(PetitionSpec::new("b")).expect("registers");
    old.register(PetitionSpec::new("v")).expect("registers");
    for outcome in old.submit_batch(signatures(0, 100)) {
        assert!(
            matches!(outcome, Ok(Outcome::Accepted { .. })),
            "{outcome:?}"
        );
    }

    // A new owner catches up and marks its epoch: the old owner's next append is refused.
    let mut follower = Follower::open(new_dir.path()).expect("opens");
    catch_up(&mut follower, &entries);
    let new_log = Handle::new(&entries);
    follower.mark_epoch(new_log.clone(), 2).expect("marks");
    assert_eq!(follower.epoch().expect("reads"), 2);
    follower.close().expect("closes");

    for outcome in old.submit_batch(signatures(1, 50)) {
        assert!(
            matches!(outcome, Err(SubmitError::StorageUnavailable)),
            "a fenced owner refuses: {outcome:?}"
        );
    }
    assert_eq!(old.count("a"), Some(75), "nothing counted after the fence");
    // Its log refuses from now on, recovery probes included.
    assert!(matches!(
        old.submit(sig("a", "late@example.org")),
        Err(SubmitError::StorageUnavailable)
    ));
    let _ = old.close();
    drop(old);

    let new = open(replicated(new_dir.path(), &new_log));
    assert_eq!(new.count("a"), Some(75));
    assert_eq!(new.count("b"), Some(25));
    for outcome in new.submit_batch(signatures(1, 50)) {
        assert!(
            matches!(outcome, Ok(Outcome::Accepted { .. })),
            "{outcome:?}"
        );
    }
    assert_eq!(new.count("a"), Some(75 + 37));
}

#[test]
fn a_follower_refuses_entries_out_of_order_or_not_its_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut follower = Follower::open(dir.path()).expect("opens");
    assert!(matches!(
        follower.apply(2, &[0; 20]),
        Err(engine::ApplyError::OutOfOrder { applied: 0, got: 2 })
    ));
    assert!(matches!(
        follower.apply(1, b"not a batch"),
        Err(engine::ApplyError::NotAnEntry { position: 1 })
    ));
    assert_eq!(follower.position(), 0, "nothing applied");
}

/// What kind of answer a submission got.
fn kind(outcome: &Result<Outcome, SubmitError>) -> String {
    match outcome {
        Ok(Outcome::Accepted { .. }) => "accepted".into(),
        Ok(Outcome::Duplicate { .. }) => "duplicate".into(),
        Ok(Outcome::Pending { .. }) => "pending".into(),
        other => format!("{other:?}"),
    }
}

#[test]
fn a_warm_follower_hands_the_engine_the_index_a_rebuild_would_give() {
    const GRACE: std::time::Duration = std::time::Duration::from_secs(3600);
    let owner_dir = tempfile::tempdir().expect("temp dir");
    let warm_dir = tempfile::tempdir().expect("temp dir");
    let later_dir = tempfile::tempdir().expect("temp dir");
    let cold_dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(engine::ManualClock::starting_now());
    let with_clock = |mut config: Config| {
        config.clock = Arc::clone(&clock) as Arc<dyn engine::Clock>;
        config.pending_grace = GRACE;
        config.sweep_interval = None;
        config.durability = Durability::Buffered;
        config
    };
    let entries = Arc::new(Entries::default());
    let log = Handle::new(&entries);
    let owner = open(with_clock(replicated(owner_dir.path(), &log)));
    owner.register(PetitionSpec::new("a")).expect("registers");
    owner.register(PetitionSpec::new("b")).expect("registers");
    let mut spec = PetitionSpec::new("v");
    spec.validation = Some(engine::Validation::Email);
    owner.register(spec).expect("registers");
    // One follower keeps its index from the first entry; another is cold for the first half
    // and then opened warm, reading the store's fingerprints first.
    let mut warm =
        Follower::open_warm(&with_clock(Config::persistent(warm_dir.path()))).expect("opens warm");
    let mut later = Follower::open(later_dir.path()).expect("opens");
    for outcome in owner.submit_batch(signatures(0, 200)) {
        assert_eq!(kind(&outcome), "accepted");
    }
    let pending = |k: usize| sig("v", &format!("pending-{k}@example.org"));
    for k in 0..6 {
        if k == 3 {
            clock.advance(GRACE / 2);
        }
        assert_eq!(kind(&owner.submit(pending(k))), "pending");
    }
    catch_up(&mut warm, &entries);
    catch_up(&mut later, &entries);
    later.close().expect("closes");
    let mut later =
        Follower::open_warm(&with_clock(Config::persistent(later_dir.path()))).expect("opens warm");
    // Pending signers 0 and 1 expire by the sweep; 2 expires unswept and signs anew, so one
    // batch drops its old signature and stores its new one; 3 to 5 stay pending.
    clock.advance(GRACE / 2);
    assert_eq!(kind(&owner.submit(pending(2))), "pending");
    assert_eq!(owner.sweep_expired(), Ok(2));
    assert_eq!(kind(&owner.submit(pending(0))), "pending");
    for outcome in owner.submit_batch(signatures(1, 100)) {
        assert_eq!(kind(&outcome), "accepted");
    }
    let owner_view = view(&owner);
    owner.close().expect("closes");
    drop(owner);
    catch_up(&mut warm, &entries);
    catch_up(&mut later, &entries);
    let mut cold = Follower::open(cold_dir.path()).expect("opens");
    catch_up(&mut cold, &entries);

    let other = tempfile::tempdir().expect("temp dir");
    assert!(matches!(
        Follower::open_warm(&with_clock(Config::persistent(other.path())))
            .expect("opens warm")
            .into_engine(with_clock(Config::persistent(warm_dir.path()))),
        Err(engine::OpenError::Config(_))
    ));
    // A follower that kept no index hands over its store; the engine reads the index back.
    let cold = cold
        .into_engine(with_clock(Config::persistent(cold_dir.path())))
        .expect("opens");
    cold.wait_ready().expect("ready");
    assert_eq!(cold.stats().recovery_expected, 300 + 5, "read back");
    assert_eq!(view(&cold), owner_view);
    let mut probes = signatures(0, 200);
    probes.extend(signatures(1, 100));
    probes.extend(signatures(2, 50));
    probes.extend((0..8).map(pending));
    let expected: Vec<String> = cold.submit_batch(probes.clone()).iter().map(kind).collect();
    assert_eq!(expected.iter().filter(|k| *k == "accepted").count(), 50);
    for (follower, dir) in [(warm, &warm_dir), (later, &later_dir)] {
        let engine = follower
            .into_engine(with_clock(Config::persistent(dir.path())))
            .expect("opens");
        engine.wait_ready().expect("ready");
        assert_eq!(engine.stats().recovery_expected, 0, "nothing read back");
        assert_eq!(view(&engine), owner_view);
        // The index holds exactly the stored signers that hold their slot.
        engine.verify_store().expect("consistent");
        let answers: Vec<String> = engine
            .submit_batch(probes.clone())
            .iter()
            .map(kind)
            .collect();
        assert_eq!(answers, expected);
        engine
            .verify_store()
            .expect("consistent after more signatures");
    }
}

#[test]
fn a_checkpoint_is_a_store_that_a_follower_goes_on_from() {
    let owner_dir = tempfile::tempdir().expect("temp dir");
    let scratch = tempfile::tempdir().expect("temp dir");
    let checkpoint = scratch.path().join("checkpoint");
    let entries = Arc::new(Entries::default());
    let log = Handle::new(&entries);
    let owner = open(replicated(owner_dir.path(), &log));
    for id in ["a", "b", "v"] {
        owner.register(PetitionSpec::new(id)).expect("registers");
    }
    for outcome in owner.submit_batch(signatures(0, 100)) {
        assert_eq!(kind(&outcome), "accepted");
    }
    let position = owner.checkpoint(&checkpoint).expect("checkpoints");
    assert_eq!(position, entries.0.lock().expect("lock").len() as u64);
    assert!(
        owner.checkpoint(&checkpoint).is_err(),
        "a checkpoint does not overwrite a directory"
    );
    // Writes go on after it; the checkpoint holds those before.
    for outcome in owner.submit_batch(signatures(1, 60)) {
        assert_eq!(kind(&outcome), "accepted");
    }
    let owner_view = view(&owner);
    owner.close().expect("closes");
    drop(owner);

    let mut config = Config::persistent(&checkpoint);
    config.durability = Durability::Buffered;
    let mut follower = Follower::open_warm(&config).expect("opens the checkpoint");
    assert_eq!(follower.position(), position);
    catch_up(&mut follower, &entries);
    let copy = follower.into_engine(config).expect("opens");
    copy.wait_ready().expect("ready");
    assert_eq!(view(&copy), owner_view);
    copy.verify_store().expect("consistent");

    let memory = open(Config::in_memory());
    assert_eq!(
        memory.checkpoint(&scratch.path().join("memory")),
        Err(engine::StoreError::InMemory)
    );
}
