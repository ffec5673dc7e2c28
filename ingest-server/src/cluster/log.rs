//! The replicated log on a JetStream stream.
//!
//! An entry at position `p` is published to the log's subject with `Nats-Expected-Last-Sequence:
//! p - 1`, so the stream takes it only where this writer expects the stream to end: after a new
//! owner's epoch mark it refuses every append of the old one. Each entry's `Nats-Msg-Id` is
//! `<epoch>.<position>`, so a publish repeated after a lost acknowledgement is recognised as a
//! duplicate and answered with the original's sequence. An append is retried like that until the
//! deadline; after it, or after any refusal, the log fails for good (see
//! [`engine::ReplicatedLog::fail`]) and the owner steps down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind};
use bytes::Bytes;
use engine::{ReplicatedLog as _, ReplicationError};
use tokio::sync::watch;

use super::ClusterStatus;

/// How long an append is retried before the log gives up.
const APPEND_DEADLINE: Duration = Duration::from_secs(5);

pub struct NatsLog {
    js: jetstream::Context,
    subject: String,
    runtime: tokio::runtime::Handle,
    epoch: u64,
    next: AtomicU64,
    failed: watch::Sender<Option<String>>,
    status: Arc<ClusterStatus>,
}

impl NatsLog {
    /// A writer whose next entry goes at `next` (the stream's last sequence plus one).
    pub(super) fn new(
        js: jetstream::Context,
        subject: String,
        epoch: u64,
        next: u64,
        status: Arc<ClusterStatus>,
    ) -> Arc<NatsLog> {
        Arc::new(NatsLog {
            js,
            subject,
            runtime: tokio::runtime::Handle::current(),
            epoch,
            next: AtomicU64::new(next),
            failed: watch::Sender::new(None),
            status,
        })
    }

    /// The position of the last entry appended (or caught up to).
    pub fn position(&self) -> u64 {
        self.next.load(Ordering::Acquire) - 1
    }

    /// Says why the log failed, once it has.
    pub(super) fn failures(&self) -> watch::Receiver<Option<String>> {
        self.failed.subscribe()
    }

    fn is_failed(&self) -> bool {
        self.failed.borrow().is_some()
    }

    fn refuse(&self, error: ReplicationError) -> Result<(), ReplicationError> {
        self.fail(&error.to_string());
        Err(error)
    }
}

impl engine::ReplicatedLog for NatsLog {
    fn next_position(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    fn append(&self, position: u64, entry: &[u8]) -> Result<(), ReplicationError> {
        if self.is_failed() {
            return Err(ReplicationError::Unavailable(
                "the log failed earlier: this node no longer writes".into(),
            ));
        }
        let payload = Bytes::copy_from_slice(entry);
        let id = format!("{}.{position}", self.epoch);
        let deadline = Instant::now() + APPEND_DEADLINE;
        loop {
            let publish = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .message_id(&id)
                .expected_last_sequence(position - 1);
            let left = deadline.saturating_duration_since(Instant::now());
            // The timer is made inside: it needs the runtime's context, which the engine's
            // writer thread has only within `block_on`.
            let attempt = self.runtime.block_on(async {
                tokio::time::timeout(left, async {
                    self.js
                        .send_publish(self.subject.clone(), publish)
                        .await?
                        .await
                })
                .await
            });
            match attempt {
                Ok(Ok(ack)) if ack.sequence == position => {
                    self.next.store(position + 1, Ordering::Release);
                    self.status.position.store(position, Ordering::Relaxed);
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    self.status.applied_at_ms.store(now, Ordering::Relaxed);
                    return Ok(());
                }
                Ok(Ok(ack)) => {
                    return self.refuse(ReplicationError::Fenced(format!(
                        "the stream put entry {position} at {}",
                        ack.sequence
                    )))
                }
                Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    return self.refuse(ReplicationError::Fenced(e.to_string()))
                }
                Ok(Err(e)) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, position, "append failed, trying again");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(Err(e)) => return self.refuse(ReplicationError::Unavailable(e.to_string())),
                Err(_) => {
                    return self.refuse(ReplicationError::Unavailable(format!(
                        "no acknowledgement within {APPEND_DEADLINE:?}"
                    )))
                }
            }
        }
    }

    fn fail(&self, why: &str) {
        self.failed.send_if_modified(|failed| {
            if failed.is_some() {
                return false;
            }
            tracing::warn!(why, "the replicated log refuses every later append");
            *failed = Some(why.to_owned());
            true
        });
    }
}
