//! Webhook delivery: one task per registered webhook, posting its events in feed order, each
//! until the receiver answers 2xx, and moving the webhook's durable cursor in the engine after
//! each.
//!
//! At least once, in order: an event's cursor moves only after the receiver confirmed it, so a
//! crash (kill -9 included) loses nothing. The cursor is written by a companion task, the
//! newest value each time the last write is done, so that a delivery never waits for the
//! engine's writer; a crash sends again the event in flight and the few confirmed since the
//! last cursor write (one write takes well under a millisecond of the writer's time). A failed attempt (an error status, a timeout, a refused or dropped connection) is
//! retried after a capped exponential backoff (`webhooks::client::backoff`: 1 s, 2 s, 4 s, …,
//! at most 5 minutes), and the events behind it wait: order per webhook is kept.
//!
//! Requests are signed as the Standard Webhooks specification says: `webhook-id` (`evt_` and
//! the event's sequence, the same on every attempt), `webhook-timestamp` (the attempt's Unix
//! seconds), `webhook-signature` (`v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`).
//! The body is `{"type","timestamp","data"}`, `data` being the event as the feed shows it.
//!
//! Each task's state (last attempt, last error, failures in a row, …) lives here, in memory;
//! `GET /v1/webhooks/{name}` shows it beside the durable cursor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use engine::{Engine, Event, Webhook};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::events::EventJson;
use crate::response::rfc3339;
use crate::webhooks::client::{self, DeliveryError, Endpoint};
use crate::webhooks::guard::{self, AllowedNetworks, Target};
use crate::webhooks::signing::WebhookSecret;

/// Events read from the engine per step.
const PAGE: usize = 64;

/// A webhook's confirmed cursor, shared by its delivery task and its cursor writer.
struct Cursor {
    confirmed: AtomicU64,
    moved: tokio::sync::Notify,
    /// Set when the delivery task ends (or is aborted): the writer writes once more and ends.
    done: std::sync::atomic::AtomicBool,
}

/// Marks the cursor done when the delivery task's future is dropped, however it ends.
struct Ending(Arc<Cursor>);

impl Drop for Ending {
    fn drop(&mut self) {
        self.0.done.store(true, Ordering::Release);
        self.0.moved.notify_one();
    }
}

/// What a webhook's delivery task shows.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct DeliveryState {
    /// `idle` (nothing to send), `delivering`, `retrying` (the last attempt failed) or
    /// `stopped` (the URL or secret cannot be used).
    pub state: &'static str,
    pub last_attempt_at: Option<String>,
    pub last_success_at: Option<String>,
    /// The status the receiver last answered, if it answered.
    pub last_status: Option<u16>,
    /// The error of the last failed attempt (kept after a later success: see its time).
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Failed attempts in a row (0 after a success).
    pub failures: u32,
    /// When the next attempt is due, while retrying.
    pub next_attempt_at: Option<String>,
    /// Events delivered since the server started.
    pub delivered: u64,
}

/// The delivery tasks and their states.
pub(crate) struct Deliveries {
    engine: Engine,
    allow: AllowedNetworks,
    timeout: Duration,
    retry_first: Duration,
    states: Mutex<HashMap<String, DeliveryState>>,
    /// Running tasks by name, with the registration each was started for.
    tasks: Mutex<HashMap<String, (Webhook, JoinHandle<()>)>>,
    /// Woken when a webhook is registered, replaced or deleted.
    changed: tokio::sync::Notify,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries")
            .field("tasks", &self.tasks.lock().len())
            .finish_non_exhaustive()
    }
}

impl Deliveries {
    pub fn new(
        engine: Engine,
        allow: AllowedNetworks,
        timeout: Duration,
        retry_first: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Deliveries {
        Deliveries {
            engine,
            allow,
            timeout,
            retry_first,
            states: Mutex::new(HashMap::new()),
            tasks: Mutex::new(HashMap::new()),
            changed: tokio::sync::Notify::new(),
            stop,
        }
    }

    pub fn allowed(&self) -> &AllowedNetworks {
        &self.allow
    }

    /// The delivery state of webhook `name`.
    pub fn state(&self, name: &str) -> DeliveryState {
        self.states
            .lock()
            .get(name)
            .cloned()
            .unwrap_or(DeliveryState {
                state: "idle",
                ..DeliveryState::default()
            })
    }

    /// Says that registrations changed: the supervisor starts, restarts or stops tasks.
    pub fn changed(&self) {
        self.changed.notify_one();
    }

    /// Keeps one task per webhook, restarting a task whose registration changed, until the
    /// server stops.
    pub async fn supervise(self: Arc<Self>) {
        let mut stop = self.stop.clone();
        loop {
            self.reconcile();
            tokio::select! {
                () = self.changed.notified() => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        // The tasks see the stop too: each saves its cursor and ends.
        let tasks: Vec<JoinHandle<()>> = self.tasks.lock().drain().map(|(_, (_, t))| t).collect();
        for task in tasks {
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!("a webhook task did not stop within 5 s");
            }
        }
    }

    fn reconcile(self: &Arc<Self>) {
        let hooks: HashMap<String, Webhook> = self
            .engine
            .webhooks()
            .into_iter()
            .map(|h| (h.name.clone(), h))
            .collect();
        let mut tasks = self.tasks.lock();
        tasks.retain(|name, (started_for, task)| {
            // A replacement (a new revision) restarts the task from the stored cursor.
            let same = hooks
                .get(name)
                .is_some_and(|h| h.revision == started_for.revision);
            if !same || task.is_finished() {
                task.abort();
            }
            same && !task.is_finished()
        });
        self.states
            .lock()
            .retain(|name, _| hooks.contains_key(name));
        for (name, hook) in hooks {
            if tasks.contains_key(&name) {
                continue;
            }
            let task = tokio::spawn(Arc::clone(self).deliver(hook.clone()));
            tasks.insert(name, (hook, task));
        }
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut DeliveryState)) {
        let mut states = self.states.lock();
        let state = states.entry(name.to_owned()).or_default();
        change(state);
    }

    /// One webhook's task: delivers every wanted event after its cursor, in order.
    async fn deliver(self: Arc<Self>, hook: Webhook) {
        let name = hook.name.clone();
        let prepared = WebhookSecret::parse(&hook.secret)
            .map_err(|e| e.to_string())
            .and_then(|secret| {
                let target = guard::check_url(&hook.url, &self.allow).map_err(|e| e.to_string())?;
                Ok((secret, target))
            });
        let (secret, target) = match prepared {
            Ok(prepared) => prepared,
            Err(why) => {
                self.update(&name, |s| {
                    s.state = "stopped";
                    s.last_error = Some(why);
                });
                return;
            }
        };
        let saved = Arc::new(Cursor {
            confirmed: AtomicU64::new(hook.cursor),
            moved: tokio::sync::Notify::new(),
            done: std::sync::atomic::AtomicBool::new(false),
        });
        let saver = tokio::spawn(Arc::clone(&self).save_cursors(
            name.clone(),
            hook.revision,
            Arc::clone(&saved),
        ));
        let ending = Ending(Arc::clone(&saved));
        self.send_events(&hook, &secret, &target, &saved).await;
        drop(ending);
        let _ = saver.await;
    }

    /// Delivers the wanted events after the cursor, in order, until the server stops.
    async fn send_events(
        &self,
        hook: &Webhook,
        secret: &WebhookSecret,
        target: &Target,
        saved: &Cursor,
    ) {
        let name = &hook.name;
        let mut watch = self.engine.watch_events();
        let mut stop = self.stop.clone();
        let mut cursor = hook.cursor;
        let mut endpoint = Endpoint::default();
        loop {
            let engine = self.engine.clone();
            let from = cursor;
            let page = tokio::task::spawn_blocking(move || engine.events_after(from, PAGE))
                .await
                .unwrap_or_default();
            if page.is_empty() {
                self.update(name, |s| {
                    if s.failures == 0 {
                        s.state = "idle";
                    }
                });
                tokio::select! {
                    changed = watch.changed() => if changed.is_err() { return },
                    _ = stop.changed() => return,
                }
                continue;
            }
            for event in page {
                if hook.wants(event.kind())
                    && !self
                        .post_until_delivered(
                            name,
                            secret,
                            target,
                            &event,
                            &mut endpoint,
                            &mut stop,
                        )
                        .await
                {
                    return;
                }
                cursor = event.seq;
                saved.confirmed.store(cursor, Ordering::Release);
                saved.moved.notify_one();
            }
        }
    }

    /// Writes the webhook's confirmed cursor whenever it moved, the newest value each time,
    /// until its delivery task ends or the server stops (after one last write).
    async fn save_cursors(self: Arc<Self>, name: String, revision: u64, cursor: Arc<Cursor>) {
        let mut written = cursor.confirmed.load(Ordering::Acquire);
        let mut stop = self.stop.clone();
        loop {
            let stopping = tokio::select! {
                () = cursor.moved.notified() => false,
                _ = stop.changed() => true,
            };
            let confirmed = cursor.confirmed.load(Ordering::Acquire);
            if confirmed > written {
                let engine = self.engine.clone();
                let hook = name.clone();
                let saved = tokio::task::spawn_blocking(move || {
                    engine.set_webhook_cursor(&hook, revision, confirmed)
                })
                .await;
                match saved {
                    Ok(Ok(())) => written = confirmed,
                    // Deleted meanwhile, or the store is failing: a restart resumes from the
                    // last cursor written and sends again what came after.
                    Ok(Err(e)) => tracing::debug!(error = %e, "webhook cursor not saved"),
                    Err(_) => return,
                }
            }
            if stopping || *stop.borrow() || cursor.done.load(Ordering::Acquire) {
                return;
            }
        }
    }

    /// Posts one event until the receiver answers 2xx; false if the server stops first.
    async fn post_until_delivered(
        &self,
        name: &str,
        secret: &WebhookSecret,
        target: &Target,
        event: &Event,
        endpoint: &mut Endpoint,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> bool {
        let id = format!("evt_{}", event.seq);
        let body = Bytes::from(payload(event));
        loop {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let timestamp = now.as_secs();
            let headers = [
                ("webhook-id", id.clone()),
                ("webhook-timestamp", timestamp.to_string()),
                ("webhook-signature", secret.sign(&id, timestamp, &body)),
            ];
            self.update(name, |s| {
                s.state = "delivering";
                s.last_attempt_at = Some(rfc3339(now.as_millis() as u64));
            });
            let result = tokio::select! {
                result = endpoint.post(target, &self.allow, &headers, body.clone(), self.timeout) => result,
                _ = stop.changed() => return false,
            };
            let failures = match &result {
                Ok(status) if (200..300).contains(status) => {
                    self.update(name, |s| {
                        s.last_status = Some(*status);
                        s.last_success_at = s.last_attempt_at.clone();
                        s.failures = 0;
                        s.next_attempt_at = None;
                        s.delivered += 1;
                    });
                    return true;
                }
                Ok(status) => self.failed(
                    name,
                    Some(*status),
                    format!("the receiver answered {status}"),
                ),
                Err(e) => self.failed(name, None, describe(e)),
            };
            let wait = client::backoff_from(self.retry_first, failures);
            self.update(name, |s| {
                s.next_attempt_at = Some(rfc3339(now.as_millis() as u64 + wait.as_millis() as u64))
            });
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return false,
            }
        }
    }

    /// Records a failed attempt; returns the failures in a row.
    fn failed(&self, name: &str, status: Option<u16>, why: String) -> u32 {
        let mut failures = 0;
        self.update(name, |s| {
            s.state = "retrying";
            s.last_status = status;
            s.last_error = Some(why);
            s.last_error_at = s.last_attempt_at.clone();
            s.failures += 1;
            failures = s.failures;
        });
        failures
    }
}

/// The body of a delivery: `{"type","timestamp","data"}`, as the Standard Webhooks
/// specification suggests.
pub(crate) fn payload(event: &Event) -> String {
    #[derive(Serialize)]
    struct Payload<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        timestamp: String,
        data: EventJson<'a>,
    }
    serde_json::to_string(&Payload {
        kind: event.kind().as_str(),
        timestamp: rfc3339(event.at_ms),
        data: EventJson::new(event, true),
    })
    .unwrap_or_default()
}

fn describe(e: &DeliveryError) -> String {
    e.to_string()
}
