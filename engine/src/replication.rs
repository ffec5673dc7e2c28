//! Replication: the store's writes as entries of a log that another system keeps on a quorum.
//!
//! With a [`ReplicatedLog`] in [`crate::Config::replication`], every write the store makes (each
//! group commit, registration, validation, list change, webhook cursor: every `WriteBatch`) is
//! first appended to the log at the position the log gives it, with that position written into
//! the same batch, and is written to RocksDB only once the log has acknowledged it. Callers are
//! answered after the local write as before, so nothing is acknowledged that the log does not
//! hold. The local store is then a materialisation of the log: a [`Follower`] applies the same
//! entries, in order, to a store of its own, and an engine opened on that store has the same
//! state. Which positions were applied is in the store itself (`meta`), so a follower or an
//! owner that restarts goes on from where its store is.
//!
//! The log decides what a position is and fences writers: an implementation appends an entry
//! only if the log's last position is the one before it, so an old owner that a new one has
//! fenced (by appending an entry of its own, [`Follower::mark_epoch`]) fails its next append
//! and acknowledges nothing more. Once an append has failed, or the local write after a
//! successful append has, the local store may no longer be the log's prefix: the store tells
//! the log ([`ReplicatedLog::fail`]), which refuses every later append, and the embedder
//! rebuilds the store as a follower before writing again.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{WriteBatch, WriteBatchIteratorCf};

use crate::config::{Config, Storage};
use crate::engine::Engine;
use crate::error::{OpenError, StoreError};
use crate::index::{Index, Insert};
use crate::record;
use crate::store::{Store, CF_FINGERPRINTS, CF_REMOVED};

/// Why an append failed. Either way nothing may be acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicationError {
    /// The log holds an entry at this position already: another writer has appended. This
    /// writer is fenced for good.
    #[error("fenced: the log is past this writer's position ({0})")]
    Fenced(String),
    /// The log did not acknowledge in time, or refused for another reason; the entry may or may
    /// not be in the log.
    #[error("the replicated log did not take the entry: {0}")]
    Unavailable(String),
}

/// A replicated log the store appends its writes to before making them. Implementations
/// serialise nothing themselves: the store calls `next_position` and `append` under one lock.
pub trait ReplicatedLog: Send + Sync {
    /// The position the next entry gets: the log's last position plus one, as the writer
    /// knows it.
    fn next_position(&self) -> u64;

    /// Appends `entry` at `position`, returning once the log has it durably, or an error. It
    /// must fail, never append, if the log's last position is not `position - 1`.
    fn append(&self, position: u64, entry: &[u8]) -> Result<(), ReplicationError>;

    /// Says the local store cannot follow the log any more (an append's outcome is unknown,
    /// or the local write after it failed): every later append must fail.
    fn fail(&self, why: &str);
}

/// A log in a `Config`: shared with the embedder, shown by name only.
#[derive(Clone)]
pub struct Replication(pub Arc<dyn ReplicatedLog>);

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replication(..)")
    }
}

/// Why an entry could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The entry is not a batch of this store's kind, or does not carry the position it was
    /// applied at: the log is not this store's.
    #[error("the entry at position {position} is not a store batch for that position")]
    NotAnEntry {
        /// Where it was read.
        position: u64,
    },
    /// Entries must be applied in order, without gaps.
    #[error("entry {got} applied after {applied}")]
    OutOfOrder {
        /// The last position applied.
        applied: u64,
        /// The position offered.
        got: u64,
    },
}

/// A store kept as a copy of the log: opened without writing anything, it applies the log's
/// entries in order. Close it before an engine opens the same directory, or open the engine
/// through it ([`Follower::into_engine`]).
///
/// A follower opened with [`Follower::open_warm`] also keeps the dedup index as the owner's
/// engine has it: each entry's fingerprints go in as it is applied, and each signature the
/// entry marks removed (an expiry) comes out. An engine opened from it is ready at once instead
/// of reading every stored fingerprint back, which is most of a takeover's time.
pub struct Follower {
    store: Store,
    position: u64,
    warm: Option<Warm>,
}

/// A follower's dedup index, and how to find what changes it in a batch.
struct Warm {
    index: Index,
    /// The ids that this store's batches give the `fingerprints` and `removed` column
    /// families (the log's entries are the owner's batches, whose store was created alike).
    fingerprints_cf: u32,
    removed_cf: u32,
}

/// What a follower hands an engine: its open store, and the index it kept if it was warm.
pub(crate) struct Handover {
    pub store: Store,
    pub index: Option<Index>,
}

impl Follower {
    /// Opens (or creates, empty) the store in `path`. A store that was an owner's goes on
    /// from its last position.
    pub fn open(path: &Path) -> Result<Follower, OpenError> {
        std::fs::create_dir_all(path).map_err(|error| OpenError::Io {
            what: "create the data directory",
            error,
        })?;
        let store = Store::open(path)?;
        let position = store.log_position()?;
        Ok(Follower {
            store,
            position,
            warm: None,
        })
    }

    /// Opens (or creates, empty) the store of `config`, which must be a directory, as a
    /// follower that keeps the dedup index (sized and sharded as `config` says): it first
    /// loads the index saved at the store's last clean close if the store is unchanged since,
    /// or reads the store's fingerprints into it, as an engine's open would.
    pub fn open_warm(config: &Config) -> Result<Follower, OpenError> {
        let Storage::Directory(path) = &config.storage else {
            return Err(OpenError::Config(
                "a follower keeps its store in a directory",
            ));
        };
        crate::engine::check_config(config)?;
        let mut follower = Follower::open(path)?;
        // The index saved beside the store and brought up to it, or read back from the store.
        let saved = crate::index_file::load(
            path,
            config.index_shard_bits,
            config
                .signatures_expected
                .max(follower.store.next_signature_seq()?),
        );
        let index = match saved {
            Some(saved) if saved.belongs_to(&follower.store)? => {
                crate::writer::catch_up_index(&follower.store, &saved.index, saved.from, &|_| {})?;
                saved.index
            }
            _ => {
                let index = Index::new(config.index_shard_bits, config.signatures_expected);
                crate::writer::load_index(&follower.store, &index, &|_| {})?;
                index
            }
        };
        let (fingerprints_cf, removed_cf) = column_family_ids(&follower.store);
        follower.warm = Some(Warm {
            index,
            fingerprints_cf,
            removed_cf,
        });
        Ok(follower)
    }

    /// Opens an engine of `config` on the follower's store (with the log in
    /// `config.replication`), handing it the open store rather than closing and reopening it.
    /// A follower opened with [`Follower::open_warm`] hands over its index too, so the engine is
    /// ready as soon as it has read the signatures' states. `config` must name the follower's
    /// directory.
    pub fn into_engine(self, config: Config) -> Result<Engine, OpenError> {
        if config.storage != Storage::Directory(self.store.path().to_owned()) {
            return Err(OpenError::Config(
                "the engine must open the follower's own directory",
            ));
        }
        Engine::open_with(
            config,
            Some(Handover {
                store: self.store,
                index: self.warm.map(|warm| warm.index),
            }),
        )
    }

    /// The position of the last entry applied (0: none).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The epoch of the newest owner whose mark was applied (0: none).
    pub fn epoch(&self) -> Result<u64, StoreError> {
        self.store.log_epoch()
    }

    /// Applies the entry at `position`, which must follow the last one applied (a store that
    /// started empty takes the log from position 1).
    pub fn apply(&mut self, position: u64, entry: &[u8]) -> Result<(), ApplyError> {
        if position != self.position + 1 {
            return Err(ApplyError::OutOfOrder {
                applied: self.position,
                got: position,
            });
        }
        let batch = checked_batch(entry).ok_or(ApplyError::NotAnEntry { position })?;
        let changes = self.warm.as_ref().map(|warm| warm.changes(&batch));
        // The log holds the entries durably: the local write need not be synced, and one that
        // a crash loses is applied again from the store's position.
        self.store.write(batch, crate::Durability::Buffered)?;
        if self.store.log_position()? != position {
            return Err(ApplyError::NotAnEntry { position });
        }
        self.position = position;
        if let (Some(warm), Some(changes)) = (&self.warm, changes) {
            warm.apply(&self.store, changes)?;
        }
        Ok(())
    }

    /// Appends an entry that marks `epoch` through `log` and applies it: once the log has it,
    /// every writer whose next position was at or before it is fenced.
    pub fn mark_epoch(
        &mut self,
        log: Arc<dyn ReplicatedLog>,
        epoch: u64,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        self.store.put_epoch(&mut batch, epoch);
        self.store.attach_log(log);
        let result = self.store.write(batch, crate::Durability::Sync);
        self.store.detach_log();
        result?;
        self.position = self.store.log_position()?;
        Ok(())
    }

    /// Syncs what was applied and closes the store; a warm follower saves its index beside it,
    /// for the next open (its own or an engine's) to load.
    pub fn close(self) -> Result<(), StoreError> {
        self.store.flush(true)?;
        self.store.compact_breakdowns();
        if let Some(warm) = &self.warm {
            // A failure only costs the next open its rebuild.
            let from = self.store.next_signature_seq()?;
            crate::index_file::save_at_rest(&self.store, &warm.index, from);
        }
        Ok(())
    }
}

impl Warm {
    /// What `batch` changes in the index: the fingerprint batches it stores, and the
    /// signatures it marks removed.
    fn changes(&self, batch: &WriteBatch) -> Changes {
        let mut changes = Changes {
            fingerprints_cf: self.fingerprints_cf,
            removed_cf: self.removed_cf,
            stored: Vec::new(),
            removed: Vec::new(),
            malformed: false,
        };
        batch.iterate_cf(&mut changes);
        changes
    }

    /// Takes the removed signatures' fingerprints out, then puts the stored ones in: a batch
    /// may drop an expired signature and store its signer's new one. The entry was written
    /// already; the removed signatures are of earlier entries, whose fingerprints the store has.
    fn apply(&self, store: &Store, changes: Changes) -> Result<(), StoreError> {
        let corrupt = |what| Err(StoreError::Corrupt { what });
        if changes.malformed {
            return corrupt("a log entry's fingerprints or removals");
        }
        for &seq in &changes.removed {
            match store.fingerprint_at(seq)? {
                Some(fp) if self.index.remove(fp) => {}
                _ => return corrupt("the log (a removed signature was not held)"),
            }
        }
        for fingerprints in &changes.stored {
            // Each insert misses the cache on its home bucket: asked for a few ahead, as
            // admission does.
            for fp in self.index.prefetching(record::fingerprints(fingerprints)) {
                if self.index.insert(fp, false) != Insert::Inserted {
                    return corrupt("the log (a signer is stored twice)");
                }
            }
        }
        Ok(())
    }
}

/// What one batch changes in a follower's index.
struct Changes {
    fingerprints_cf: u32,
    removed_cf: u32,
    /// Each fingerprint batch stored, as written.
    stored: Vec<Vec<u8>>,
    /// The signatures marked removed.
    removed: Vec<u64>,
    /// A key or value of either column family that is not as the engine writes it.
    malformed: bool,
}

impl WriteBatchIteratorCf for Changes {
    fn put_cf(&mut self, cf_id: u32, key: &[u8], value: &[u8]) {
        if cf_id == self.fingerprints_cf {
            self.malformed |= key.len() != 8 || record::fingerprints_in(value).is_err();
            self.stored.push(value.to_vec());
        } else if cf_id == self.removed_cf {
            match <[u8; 8]>::try_from(key) {
                Ok(key) => self.removed.push(u64::from_be_bytes(key)),
                Err(_) => self.malformed = true,
            }
        }
    }

    fn delete_cf(&mut self, cf_id: u32, _key: &[u8]) {
        // The engine never deletes a fingerprint batch or a removal.
        self.malformed |= cf_id == self.fingerprints_cf || cf_id == self.removed_cf;
    }

    fn merge_cf(&mut self, cf_id: u32, _key: &[u8], _value: &[u8]) {
        self.malformed |= cf_id == self.fingerprints_cf || cf_id == self.removed_cf;
    }
}

/// The ids that batches of `store` give the `fingerprints` and `removed` column families:
/// read back from a batch that puts into each (never written).
fn column_family_ids(store: &Store) -> (u32, u32) {
    struct Ids(Vec<u32>);
    impl WriteBatchIteratorCf for Ids {
        fn put_cf(&mut self, cf_id: u32, _key: &[u8], _value: &[u8]) {
            self.0.push(cf_id);
        }
        fn delete_cf(&mut self, _cf_id: u32, _key: &[u8]) {}
        fn merge_cf(&mut self, _cf_id: u32, _key: &[u8], _value: &[u8]) {}
    }
    let mut probe = WriteBatch::default();
    probe.put_cf(store.cf(CF_FINGERPRINTS), b"", b"");
    probe.put_cf(store.cf(CF_REMOVED), b"", b"");
    let mut ids = Ids(Vec::with_capacity(2));
    probe.iterate_cf(&mut ids);
    (ids.0[0], ids.0[1])
}

/// `entry` as a batch, if it looks like one: RocksDB's batch format starts with a 12-byte
/// header (sequence and count); a shorter entry would make RocksDB fail on it later.
fn checked_batch(entry: &[u8]) -> Option<WriteBatch> {
    if entry.len() < 12 {
        return None;
    }
    let batch = WriteBatch::from_data(entry);
    (!batch.is_empty()).then_some(batch)
}
