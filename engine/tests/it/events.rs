//! The events feed through the library: thresholds, closes (by an administrator and by
//! deadline), response tracking on an injected clock, the live subscription, webhooks and their
//! cursors, all across restarts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{
    Clock, CloseReason, Config, Criteria, Engine, EventData, EventKind, InvalidationRequest,
    JobState, ManualClock, NewSignature, PetitionError, PetitionSpec, WebhookError, WebhookSpec,
    WEBHOOKS_MAX,
};

use crate::support::open;

const DAY_MS: u64 = 86_400_000;

fn config(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Config {
    let mut config = Config::persistent(dir);
    config.clock = Arc::clone(clock) as Arc<dyn Clock>;
    config.sweep_interval = None;
    config
}

fn petition(engine: &Engine, id: &str, thresholds: Vec<u64>, due_days: Option<u32>) {
    let mut spec = PetitionSpec::new(id);
    spec.thresholds = Some(thresholds);
    spec.response_due_days = due_days;
    engine.register(spec).expect("registers");
}

fn sign(engine: &Engine, petition: &str, from: usize, to: usize) {
    let batch = (from..to)
        .map(|i| NewSignature::new(petition, format!("s{i}@example.org")))
        .collect();
    for outcome in engine.submit_batch(batch) {
        outcome.expect("accepted");
    }
}

/// Each event as (kind, petition, threshold-or-0), in feed order, checking the sequences.
fn feed(engine: &Engine) -> Vec<(EventKind, String, u64)> {
    let events = engine.events_after(0, 10_000);
    for (at, e) in events.iter().enumerate() {
        assert_eq!(e.seq, at as u64 + 1, "sequences from 1 without gaps");
    }
    events
        .into_iter()
        .map(|e| {
            let n = match e.data {
                EventData::ThresholdCrossed { threshold }
                | EventData::ThresholdRegressed { threshold }
                | EventData::ResponseDue { threshold, .. } => threshold,
                _ => 0,
            };
            (e.kind(), e.petition, n)
        })
        .collect()
}

fn ev(kind: EventKind, petition: &str, n: u64) -> (EventKind, String, u64) {
    (kind, petition.to_owned(), n)
}

#[test]
fn crossings_make_events_and_a_response_falls_due() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(config(dir.path(), &clock));
    petition(&engine, "p", vec![3, 6], Some(2));
    let t0 = clock.now_ms();
    sign(&engine, "p", 0, 7);
    use EventKind::*;
    assert_eq!(
        feed(&engine),
        [
            ev(ThresholdCrossed, "p", 3),
            ev(ThresholdCrossed, "p", 6),
            ev(ResponseDue, "p", 6)
        ]
    );
    let due = engine.events_after(2, 1).remove(0);
    assert_eq!(
        due.data,
        EventData::ResponseDue {
            threshold: 6,
            due_at_ms: t0 + 2 * DAY_MS
        }
    );
    // The milestone view is the threshold events, with the same sequences.
    let milestones: Vec<u64> = engine
        .milestones_after(0, 10)
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(milestones, [1, 2]);
    let info = engine.petition("p").expect("exists");
    assert!(info.awaiting_response && !info.overdue);
    assert_eq!(info.response_threshold, Some(6));
    assert_eq!(info.response_due_at_ms, Some(t0 + 2 * DAY_MS));
    assert_eq!(engine.response_stats().awaiting, 1);

    clock.advance(Duration::from_millis(2 * DAY_MS));
    let info = engine.petition("p").expect("exists");
    assert!(info.overdue, "due time reached");
    assert_eq!(engine.response_stats().overdue, 1);
    assert_eq!(engine.awaiting_response(10)[0].id, "p");

    clock.advance(Duration::from_secs(60));
    let answered = engine
        .respond("p", "We will debate it.", Some("https://example.org/r/1"))
        .expect("responds");
    assert!(!answered.awaiting_response && !answered.overdue);
    assert_eq!(
        answered.response.as_ref().map(|r| r.summary.as_str()),
        Some("We will debate it.")
    );
    assert!(engine.awaiting_response(10).is_empty());
    let stats = engine.response_stats();
    assert_eq!((stats.awaiting, stats.overdue), (0, 0));
    assert_eq!(stats.times_to_respond_ms, [2 * DAY_MS + 60_000]);
    assert_eq!(feed(&engine).last(), Some(&ev(Responded, "p", 0)));
    engine.verify_store().expect("consistent");
    let before = engine.events_after(0, 100);
    engine.close().expect("closes");

    // Recovery replays the feed: the same events, the same tracking, and numbering goes on.
    let engine = open(config(dir.path(), &clock));
    assert_eq!(engine.events_after(0, 100), before);
    let info = engine.petition("p").expect("exists");
    assert!(info.response.is_some() && !info.awaiting_response);
    assert_eq!(info.milestones_reached, [3, 6]);
    assert_eq!(
        engine.response_stats().times_to_respond_ms,
        [2 * DAY_MS + 60_000]
    );
    engine.close_petition("p").expect("closes");
    assert_eq!(engine.last_event_seq(), 5);
    engine.verify_store().expect("consistent");
}

#[test]
fn bad_responses_change_nothing() {
    let engine = Engine::open(Config::in_memory()).expect("opens");
    petition(&engine, "p", vec![1], None);
    for (summary, url) in [
        ("", None),
        ("ok", Some("ftp://example.org")),
        ("ok", Some("https://exa mple.org")),
    ] {
        assert!(
            matches!(
                engine.respond("p", summary, url),
                Err(PetitionError::Invalid(_))
            ),
            "{summary:?} {url:?}"
        );
    }
    assert_eq!(
        engine.respond("nope", "ok", None),
        Err(PetitionError::UnknownPetition)
    );
    assert_eq!(engine.last_event_seq(), 0);
    let mut spec = PetitionSpec::new("q");
    spec.response_due_days = Some(0);
    assert!(engine.register(spec).is_err());
}

#[test]
fn a_deadline_close_is_recorded_once_and_an_admin_close_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(config(dir.path(), &clock));
    let deadline = clock.now_ms() + 1_000;
    let mut spec = PetitionSpec::new("d");
    spec.deadline_ms = Some(deadline);
    engine.register(spec).expect("registers");
    engine.register(PetitionSpec::new("a")).expect("registers");
    assert_eq!(engine.record_deadlines(), Ok(0), "not yet");
    clock.advance(Duration::from_secs(2));
    assert_eq!(engine.record_deadlines(), Ok(1));
    assert_eq!(engine.record_deadlines(), Ok(0), "once per deadline");
    // Closing it now changes its state but records no second close.
    engine.close_petition("d").expect("closes");
    engine.close_petition("a").expect("closes");
    engine.close_petition("a").expect("a no-op");
    let events = engine.events_after(0, 10);
    let closes: Vec<(String, EventData, u64)> = events
        .into_iter()
        .map(|e| (e.petition, e.data, e.at_ms))
        .collect();
    assert_eq!(closes.len(), 2, "{closes:?}");
    assert_eq!(
        closes[0],
        (
            "d".into(),
            EventData::PetitionClosed {
                reason: CloseReason::Deadline
            },
            deadline
        )
    );
    assert_eq!(closes[1].0, "a");
    engine.close().expect("closes");
    let engine = open(config(dir.path(), &clock));
    assert_eq!(
        engine.record_deadlines(),
        Ok(0),
        "recorded before the restart"
    );
    // A new deadline (the petition reopened, then passed again) is recorded again.
    let mut spec = PetitionSpec::new("e");
    spec.deadline_ms = Some(clock.now_ms() + 10);
    engine.register(spec.clone()).expect("registers");
    clock.advance(Duration::from_secs(1));
    assert_eq!(engine.record_deadlines(), Ok(1));
    spec.deadline_ms = Some(clock.now_ms() + 10);
    engine.register(spec).expect("extends");
    assert_eq!(engine.record_deadlines(), Ok(0), "open again");
    clock.advance(Duration::from_secs(1));
    assert_eq!(engine.record_deadlines(), Ok(1));
    engine.verify_store().expect("consistent");
}

#[test]
fn in_memory_a_passed_deadline_is_recorded_by_the_background_thread() {
    let clock = Arc::new(ManualClock::starting_now());
    let mut config = Config::in_memory();
    config.clock = Arc::clone(&clock) as Arc<dyn Clock>;
    config.sweep_interval = Some(Duration::from_millis(5));
    let engine = Engine::open(config).expect("opens");
    let mut spec = PetitionSpec::new("d");
    spec.deadline_ms = Some(clock.now_ms() + 1_000);
    engine.register(spec).expect("registers");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(engine.last_event_seq(), 0, "not yet");
    clock.advance(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.last_event_seq() == 0 {
        assert!(Instant::now() < deadline, "no close recorded");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    let events = engine.events_after(0, 10);
    assert_eq!(events.len(), 1, "once: {events:?}");
    assert_eq!(
        events[0].data,
        EventData::PetitionClosed {
            reason: CloseReason::Deadline
        }
    );
    engine.close().expect("closes");
}

#[test]
fn lowering_the_response_threshold_below_the_count_makes_the_response_due() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(config(dir.path(), &clock));
    petition(&engine, "p", vec![1000], Some(3));
    sign(&engine, "p", 0, 20);
    assert!(!engine.petition("p").expect("exists").awaiting_response);
    let mut spec = PetitionSpec::new("p");
    spec.response_threshold = Some(10);
    engine.register(spec.clone()).expect("updates");
    let info = engine.petition("p").expect("exists");
    assert!(info.awaiting_response, "10 is below the count of 20");
    assert_eq!(info.response_due_at_ms, Some(clock.now_ms() + 3 * DAY_MS));
    engine.register(spec).expect("the same again");
    let kinds: Vec<EventKind> = engine
        .events_after(0, 10)
        .iter()
        .map(|e| e.kind())
        .collect();
    assert_eq!(kinds, [EventKind::ResponseDue], "once");
    engine.verify_store().expect("consistent");
}

#[test]
fn a_webhook_registered_again_after_a_delete_gets_a_new_revision() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = open(Config::persistent(dir.path()));
    let spec = WebhookSpec {
        name: "h".into(),
        url: "http://hooks.example/".into(),
        events: vec![],
        secret: "s".into(),
        after: Some(0),
    };
    let (first, _) = engine.put_webhook(spec.clone()).expect("registers");
    engine.delete_webhook("h").expect("deletes");
    let (second, created) = engine.put_webhook(spec.clone()).expect("registers");
    assert!(created);
    assert!(second.revision > first.revision);
    engine
        .set_webhook_cursor("h", first.revision, 7)
        .expect("ignored");
    assert_eq!(engine.webhook("h").map(|h| h.cursor), Some(0));
    engine.close().expect("closes");
    drop(engine);
    let engine = open(Config::persistent(dir.path()));
    let (third, _) = engine.put_webhook(spec).expect("replaces");
    assert!(third.revision > second.revision, "after a restart too");
}

#[test]
fn an_invalidation_below_the_response_threshold_ends_the_wait_until_crossed_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(config(dir.path(), &clock));
    petition(&engine, "p", vec![4], None);
    sign(&engine, "p", 0, 3);
    engine
        .submit(NewSignature::new("p", "x@bad.example"))
        .expect("accepted");
    assert!(engine.petition("p").expect("exists").awaiting_response);
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
        assert!(Instant::now() < deadline, "job still running");
        std::thread::sleep(Duration::from_millis(5));
    }
    let info = engine.petition("p").expect("exists");
    assert_eq!(info.count, 3);
    assert!(!info.awaiting_response, "fell back below its threshold");
    sign(&engine, "p", 3, 4);
    use EventKind::*;
    assert_eq!(
        feed(&engine),
        [
            ev(ThresholdCrossed, "p", 4),
            ev(ResponseDue, "p", 4),
            ev(ThresholdRegressed, "p", 4),
            ev(ThresholdCrossed, "p", 4),
            ev(ResponseDue, "p", 4),
        ]
    );
    assert!(engine.petition("p").expect("exists").awaiting_response);
    engine.verify_store().expect("consistent");
}

#[test]
fn a_subscription_sees_events_as_they_happen() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Without trending sources: the 100th signature from one email domain would add an alert.
    let mut config = Config::persistent(dir.path());
    config.sources = None;
    let engine = open(config);
    petition(&engine, "p", (1..=20).map(|t| t * 5).collect(), None);
    let mut subscription = engine.subscribe(0);
    assert_eq!(subscription.next_timeout(Duration::from_millis(10)), None);
    let mut watch = engine.watch_events();
    let signer = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            for i in 0..100 {
                sign(&engine, "p", i, i + 1);
            }
        })
    };
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 21 {
        assert!(Instant::now() < deadline, "saw only {seen:?}");
        if let Some(event) = subscription.next_timeout(Duration::from_millis(100)) {
            seen.push(event.seq);
        }
    }
    signer.join().expect("signer");
    assert_eq!(seen, (1..=21).collect::<Vec<u64>>(), "20 crossings, 1 due");
    assert_eq!(subscription.position(), 21);
    assert!(watch.has_changed().expect("open"));
    assert_eq!(*watch.borrow_and_update(), 21);
    // A subscription from the middle resumes after it.
    let rest: Vec<u64> = engine.subscribe(15).take(6).map(|e| e.seq).collect();
    assert_eq!(rest, [16, 17, 18, 19, 20, 21]);
    engine.close().expect("closes");
    assert_eq!(subscription.next(), None, "ends when the engine closes");
}

#[test]
fn webhooks_and_their_cursors_survive_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = open(Config::persistent(dir.path()));
    petition(&engine, "p", vec![1, 2], None);
    sign(&engine, "p", 0, 1);
    let spec = WebhookSpec {
        name: "responders".into(),
        url: "http://hooks.example/petitions".into(),
        events: vec![EventKind::ResponseDue, EventKind::Responded],
        secret: "whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0".into(),
        after: None,
    };
    let (hook, created) = engine.put_webhook(spec.clone()).expect("registers");
    assert!(created);
    assert_eq!(
        (hook.cursor, hook.revision),
        (1, 1),
        "starts after the newest event"
    );
    engine
        .set_webhook_cursor("responders", 1, 3)
        .expect("moves");
    engine
        .set_webhook_cursor("responders", 1, 2)
        .expect("a cursor behind is ignored");
    let (replaced, created) = engine
        .put_webhook(WebhookSpec {
            url: "http://hooks.example/v2".into(),
            ..spec.clone()
        })
        .expect("replaces");
    assert!(!created);
    assert_eq!(
        (replaced.cursor, replaced.revision),
        (3, 2),
        "a replacement keeps the cursor"
    );
    // Replaying: a replacement with `after` moves the cursor back, and a deliverer still
    // running for the replaced revision cannot move it forward again.
    let (replay, _) = engine
        .put_webhook(WebhookSpec {
            url: "http://hooks.example/v2".into(),
            after: Some(0),
            ..spec.clone()
        })
        .expect("replaces");
    assert_eq!((replay.cursor, replay.revision), (0, 3));
    engine
        .set_webhook_cursor("responders", 2, 5)
        .expect("a replaced revision's cursor is ignored");
    assert_eq!(engine.webhook("responders").map(|h| h.cursor), Some(0));
    engine
        .set_webhook_cursor("responders", 3, 3)
        .expect("moves");
    assert_eq!(
        engine.set_webhook_cursor("nope", 1, 1),
        Err(WebhookError::UnknownWebhook)
    );
    assert!(matches!(
        engine.put_webhook(WebhookSpec {
            name: "bad name".into(),
            ..spec.clone()
        }),
        Err(WebhookError::Invalid(_))
    ));
    engine
        .put_webhook(WebhookSpec {
            name: "gone".into(),
            after: Some(0),
            ..spec.clone()
        })
        .expect("registers");
    engine.delete_webhook("gone").expect("deletes");
    assert_eq!(
        engine.delete_webhook("gone"),
        Err(WebhookError::UnknownWebhook)
    );
    engine.close().expect("closes");

    let engine = open(Config::persistent(dir.path()));
    let hooks = engine.webhooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].url, "http://hooks.example/v2");
    assert_eq!(hooks[0].cursor, 3);
    assert_eq!(hooks[0].events, spec.events);
    assert!(engine.webhook("gone").is_none());
    for i in 1..WEBHOOKS_MAX {
        engine
            .put_webhook(WebhookSpec {
                name: format!("h{i}"),
                ..spec.clone()
            })
            .expect("registers");
    }
    assert_eq!(
        engine.put_webhook(WebhookSpec {
            name: "one-too-many".into(),
            ..spec
        }),
        Err(WebhookError::TooMany(WEBHOOKS_MAX))
    );
}

/// The child's side of the test below: set by the parent.
const NONE_CHILD_DIR: &str = "EVENTS_TEST_NONE_CHILD_DIR";

/// Under durability `none`, signature batches skip the log while a response's batch is synced:
/// the signatures' events (crossings, a response due) must not be lost behind a response that
/// survives, which would leave a gap in the feed. The child aborts right after the response.
#[test]
fn a_crash_under_durability_none_leaves_no_gap_in_the_feed() {
    if let Ok(dir) = std::env::var(NONE_CHILD_DIR) {
        let mut config = Config::persistent(std::path::Path::new(&dir));
        config.durability = engine::Durability::None;
        let engine = open(config);
        petition(&engine, "p", vec![1, 2], None);
        sign(&engine, "p", 0, 2);
        engine.respond("p", "Answered.", None).expect("responds");
        std::process::abort();
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "events::a_crash_under_durability_none_leaves_no_gap_in_the_feed",
            "--exact",
        ])
        .env(NONE_CHILD_DIR, dir.path())
        .status()
        .expect("the child runs");
    assert!(!status.success(), "the child aborts: {status}");
    let engine = open(Config::persistent(dir.path()));
    use EventKind::*;
    assert_eq!(
        feed(&engine),
        [
            ev(ThresholdCrossed, "p", 1),
            ev(ThresholdCrossed, "p", 2),
            ev(ResponseDue, "p", 2),
            ev(Responded, "p", 0),
        ]
    );
    engine.verify_store().expect("consistent");
}
