//! The owner's lease: the key `owner` in a key-value bucket whose entries expire `lease_ttl`
//! after they were written. A node takes it with a create (which succeeds only if the key is
//! absent, expired or deleted); the revision it got is its epoch. The owner renews it every third
//! of the TTL with an update that expects the revision it last wrote, and counts it lost when an
//! update finds another revision or none succeeded for two thirds of the TTL, before the entry
//! could expire for anyone else. A node that steps down deletes the key if it is still its own,
//! so a standby need not wait out the TTL.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use tokio::sync::watch;

use super::ClusterConfig;

const KEY: &str = "owner";

#[derive(Clone)]
pub(super) struct Lease {
    store: kv::Store,
    ttl: Duration,
    /// What this node writes: its name and HTTP address.
    value: Bytes,
}

/// What a take found.
pub(super) enum Taken {
    /// This node holds the lease at this revision (its epoch).
    Mine(u64),
    /// Another node does: its value.
    Held(String),
}

impl Lease {
    pub async fn open(js: &jetstream::Context, cluster: &ClusterConfig) -> anyhow::Result<Lease> {
        let bucket = cluster.bucket();
        let store = match js.get_key_value(&bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket,
                    history: 1,
                    max_age: cluster.lease_ttl,
                    num_replicas: cluster.replicas,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .context("cannot create or find the lease bucket")?,
        };
        Ok(Lease {
            store,
            ttl: cluster.lease_ttl,
            value: Bytes::from(format!("{} at {}", cluster.node, cluster.advertise)),
        })
    }

    /// Tries to take the lease.
    pub async fn take(&self) -> anyhow::Result<Taken> {
        match self.store.create(KEY, self.value.clone()).await {
            Ok(revision) => Ok(Taken::Mine(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let holder = self.store.get(KEY).await.ok().flatten().unwrap_or_default();
                Ok(Taken::Held(String::from_utf8_lossy(&holder).into_owned()))
            }
            Err(e) => Err(e).context("cannot reach the lease bucket"),
        }
    }

    /// Keeps the lease taken at `revision` until it is lost or released.
    pub fn keep(&self, revision: u64) -> Keeper {
        let (lost_tx, lost) = watch::channel(false);
        let (stop, mut stopped) = watch::channel(false);
        let lease = self.clone();
        let task = tokio::spawn(async move {
            let mut revision = revision;
            let mut renewed = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(lease.ttl / 3);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return revision,
                }
                let update = lease.store.update(KEY, lease.value.clone(), revision);
                match tokio::time::timeout(lease.ttl / 3, update).await {
                    Ok(Ok(next)) => {
                        revision = next;
                        renewed = tokio::time::Instant::now();
                        continue;
                    }
                    Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        tracing::warn!(error = %e, "the lease is another node's now");
                    }
                    Ok(Err(e)) if renewed.elapsed() < lease.ttl * 2 / 3 => {
                        tracing::warn!(error = %e, "could not renew the lease, trying again");
                        continue;
                    }
                    Err(_) if renewed.elapsed() < lease.ttl * 2 / 3 => continue,
                    _ => tracing::warn!("could not renew the lease for two thirds of its TTL"),
                }
                let _ = lost_tx.send(true);
                // Lost: nothing to release.
                return 0;
            }
        });
        Keeper {
            lease: self.clone(),
            lost,
            stop,
            task: Some(task),
        }
    }
}

/// A held lease, renewed in the background.
pub(super) struct Keeper {
    lease: Lease,
    lost: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<u64>>,
}

impl Keeper {
    /// Completes when the lease is lost.
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|lost| *lost).await;
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Stops renewing and deletes the key if it is still this node's.
    pub async fn release(mut self) {
        let _ = self.stop.send(true);
        let Some(task) = self.task.take() else {
            return;
        };
        let Ok(revision) = task.await else {
            return;
        };
        if revision == 0 {
            return;
        }
        let delete = self.lease.store.delete_expect_revision(KEY, Some(revision));
        match tokio::time::timeout(Duration::from_secs(2), delete).await {
            Ok(Ok(())) => tracing::info!("lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the lease"),
            Err(_) => tracing::warn!("could not release the lease in time"),
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
