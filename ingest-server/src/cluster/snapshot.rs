//! Snapshots: checkpoints of the owner's store kept in a JetStream object store, so that the
//! log's stream stays bounded and a node whose store is behind the stream's first entry starts
//! from the latest snapshot plus the stream's tail.
//!
//! The owner looks every [`CHECK_EVERY`] at the stream. Once it holds `--snapshot-bytes` or more
//! and has entries after the latest snapshot, the owner takes one: [`engine::Engine::checkpoint`]
//! into `<data dir>.checkpoint` (hard links; the checkpoint holds the writes up to a log
//! position, all in its SST files and `MANIFEST`), then into the bucket `<name>_snapshots`
//! without its write-ahead log files:
//! - each SST file that is a hard link to one of the store's as `<epoch>/<file>`, unless the
//!   latest snapshot names that object already: an SST file never changes and its number is
//!   never reused in a store, so a snapshot uploads only what was flushed or compacted since the
//!   last one of the same owner;
//! - every other file as `<position>/<file>`;
//! - last the manifest [`MANIFEST`] (JSON: the position, the epoch, each file's object).
//!
//! Then it purges the stream's entries up to the previous snapshot's position (one interval
//! stays for standbys that lag a little) and deletes the objects the new manifest does not name.
//! So the stream holds at most about twice `--snapshot-bytes` (the entries since the previous
//! snapshot, and those appended while a snapshot is taken), and the bucket one checkpoint.
//!
//! A standby whose position is before the stream's first entry cannot follow it: it downloads
//! the latest snapshot into `<data dir>.restore`, checks that it opens at the manifest's
//! position, and puts it in place of its data directory ([`restore`]).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, object_store};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;

use super::{ClusterConfig, ClusterStatus};

/// The object naming the latest snapshot.
pub(super) const MANIFEST: &str = "latest";

/// How often the owner looks at the stream's size.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(2);

/// What a snapshot holds: the log position its store is at, the epoch of the owner that took
/// it, and each file of the checkpoint with the object that holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Manifest {
    pub position: u64,
    pub epoch: u64,
    pub files: Vec<SnapshotFile>,
}

/// One file of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SnapshotFile {
    /// Its name in the checkpoint's directory.
    pub name: String,
    /// The object that holds it.
    pub object: String,
}

/// Finds (or creates) the snapshots' bucket, with the log's replicas, on file storage.
pub(super) async fn bucket(
    js: &jetstream::Context,
    cluster: &ClusterConfig,
) -> anyhow::Result<object_store::ObjectStore> {
    match js.get_object_store(cluster.snapshots()).await {
        Ok(bucket) => Ok(bucket),
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: cluster.snapshots(),
                num_replicas: cluster.replicas,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .context("cannot create the snapshots' bucket"),
    }
}

/// The latest snapshot's manifest, if a snapshot was taken.
pub(super) async fn latest(bucket: &object_store::ObjectStore) -> anyhow::Result<Option<Manifest>> {
    let mut object = match bucket.get(MANIFEST).await {
        Ok(object) => object,
        Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("cannot read the latest snapshot's manifest"),
    };
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .context("cannot read the latest snapshot's manifest")?;
    let manifest = serde_json::from_slice(&bytes).context("the snapshot manifest is not valid")?;
    Ok(Some(manifest))
}

/// Takes snapshots while the node owns (until the task is dropped): every [`CHECK_EVERY`], one
/// if the stream holds `bytes` or more with entries after the latest snapshot. A failed
/// snapshot is logged and tried again at the next look.
pub(super) async fn keep(
    engine: engine::Engine,
    bucket: object_store::ObjectStore,
    stream: jetstream::stream::Stream,
    data_dir: PathBuf,
    epoch: u64,
    bytes: u64,
    status: Arc<ClusterStatus>,
) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let info = match stream.get_info().await {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(error = %e, "snapshots: cannot read the stream's size");
                continue;
            }
        };
        if info.state.bytes < bytes {
            continue;
        }
        let taken = status.snapshot_position.load(Ordering::Relaxed);
        if taken != 0 && taken >= info.state.last_sequence {
            continue;
        }
        let started = std::time::Instant::now();
        match take(&engine, &bucket, &stream, &data_dir, epoch).await {
            Ok(taken) => {
                status
                    .snapshot_position
                    .store(taken.manifest.position, Ordering::Relaxed);
                tracing::info!(
                    position = taken.manifest.position,
                    files = taken.manifest.files.len(),
                    uploaded_files = taken.uploaded_files,
                    uploaded_bytes = taken.uploaded_bytes,
                    checkpoint_s = format!("{:.3}", taken.checkpoint.as_secs_f64()),
                    total_s = format!("{:.3}", started.elapsed().as_secs_f64()),
                    stream_bytes_before = info.state.bytes,
                    "snapshot taken"
                );
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), "snapshot failed"),
        }
    }
}

/// What taking a snapshot did.
struct Taken {
    manifest: Manifest,
    /// How long the checkpoint took (RocksDB's, and its flush).
    checkpoint: Duration,
    uploaded_files: usize,
    uploaded_bytes: u64,
}

/// Takes one snapshot (see the module's text).
async fn take(
    engine: &engine::Engine,
    bucket: &object_store::ObjectStore,
    stream: &jetstream::stream::Stream,
    data_dir: &Path,
    epoch: u64,
) -> anyhow::Result<Taken> {
    let dir = beside(data_dir, "checkpoint");
    remove_dir(&dir).await?;
    let checkpointing = engine.clone();
    let target = dir.clone();
    let started = std::time::Instant::now();
    let position = tokio::task::spawn_blocking(move || checkpointing.checkpoint(&target))
        .await
        .context("checkpoint")?
        .context("cannot checkpoint the store")?;
    let checkpoint = started.elapsed();
    let (mut uploaded_files, mut uploaded_bytes) = (0, 0);
    let previous = latest(bucket).await?;
    let uploaded: HashSet<String> = previous
        .iter()
        .flat_map(|manifest| manifest.files.iter().map(|file| file.object.clone()))
        .collect();
    let mut files = Vec::new();
    let mut entries = tokio::fs::read_dir(&dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry
            .file_name()
            .into_string()
            .map_err(|name| anyhow::anyhow!("a checkpoint file named {name:?}"))?;
        // The checkpoint's write-ahead log was flushed into its SST files, and RocksDB's
        // info log is not data.
        if name.ends_with(".log") || name.starts_with("LOG") {
            continue;
        }
        // An SST file still linked from the store is one of the store's own: RocksDB never
        // reuses a file number within a store, so the same name in the same epoch is the same
        // file, uploaded once. Any other (the checkpoint's own flush made it, or the store has
        // dropped it since) is this snapshot's.
        let metadata = entry.metadata().await?;
        let shared = metadata.nlink() > 1;
        let object = if name.ends_with(".sst") && shared {
            format!("{epoch}/{name}")
        } else {
            format!("{position}/{name}")
        };
        if !uploaded.contains(&object) {
            let mut file = tokio::fs::File::open(entry.path()).await?;
            bucket
                .put(object.as_str(), &mut file)
                .await
                .with_context(|| format!("cannot upload {object}"))?;
            uploaded_files += 1;
            uploaded_bytes += metadata.len();
        }
        files.push(SnapshotFile { name, object });
    }
    let manifest = Manifest {
        position,
        epoch,
        files,
    };
    let text = serde_json::to_vec(&manifest)?;
    bucket
        .put(MANIFEST, &mut text.as_slice())
        .await
        .context("cannot write the snapshot's manifest")?;
    remove_dir(&dir).await?;
    // Entries up to the previous snapshot are only needed by a node that restores anyway.
    if let Some(previous) = &previous {
        stream
            .purge()
            .sequence(previous.position + 1)
            .await
            .context("cannot purge the stream")?;
    }
    let named: HashSet<&str> = manifest
        .files
        .iter()
        .map(|file| file.object.as_str())
        .chain([MANIFEST])
        .collect();
    let mut stale = Vec::new();
    let mut objects = bucket.list().await.context("cannot list the snapshots")?;
    while let Some(info) = objects.next().await {
        let info = info.context("cannot list the snapshots")?;
        if !named.contains(info.name.as_str()) {
            stale.push(info.name);
        }
    }
    for name in stale {
        bucket
            .delete(&name)
            .await
            .with_context(|| format!("cannot delete {name}"))?;
    }
    Ok(Taken {
        manifest,
        checkpoint,
        uploaded_files,
        uploaded_bytes,
    })
}

/// Replaces the store in `data_dir` with the latest snapshot, which must reach the entry before
/// `first` (the stream's first): a node then follows the stream from there. Returns its position.
pub(super) async fn restore(
    bucket: &object_store::ObjectStore,
    data_dir: &Path,
    first: u64,
) -> anyhow::Result<u64> {
    let manifest = latest(bucket)
        .await?
        .context("the stream was purged but there is no snapshot")?;
    anyhow::ensure!(
        manifest.position + 1 >= first,
        "the latest snapshot (position {}) is older than the stream's first entry ({first})",
        manifest.position
    );
    let dir = beside(data_dir, "restore");
    remove_dir(&dir).await?;
    tokio::fs::create_dir_all(&dir).await?;
    for file in &manifest.files {
        let mut object = bucket
            .get(&file.object)
            .await
            .with_context(|| format!("cannot download {}", file.object))?;
        let mut out = tokio::fs::File::create(dir.join(&file.name)).await?;
        tokio::io::copy(&mut object, &mut out)
            .await
            .with_context(|| format!("cannot download {}", file.object))?;
        out.sync_all().await?;
    }
    let opened = dir.clone();
    let position = tokio::task::spawn_blocking(move || {
        engine::Follower::open(&opened).map(|follower| {
            let position = follower.position();
            let _ = follower.close();
            position
        })
    })
    .await
    .context("opening the snapshot")?
    .context("the snapshot does not open")?;
    anyhow::ensure!(
        position == manifest.position,
        "the snapshot opens at position {position}, its manifest says {}",
        manifest.position
    );
    let old = beside(data_dir, "replaced");
    remove_dir(&old).await?;
    if tokio::fs::try_exists(data_dir).await? {
        tokio::fs::rename(data_dir, &old).await?;
    }
    tokio::fs::rename(&dir, data_dir).await?;
    remove_dir(&old).await?;
    Ok(position)
}

/// `<dir>.<suffix>`, beside `dir` (on the same filesystem, as hard links need).
fn beside(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

async fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    match tokio::fs::remove_dir_all(dir).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}
