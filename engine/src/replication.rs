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

use rocksdb::WriteBatch;

use crate::error::{OpenError, StoreError};
use crate::store::Store;

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
/// entries in order. Close it before an engine opens the same directory.
pub struct Follower {
    store: Store,
    position: u64,
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
        Ok(Follower { store, position })
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
        // The log holds the entries durably: the local write need not be synced, and one that
        // a crash loses is applied again from the store's position.
        self.store.write(batch, crate::Durability::Buffered)?;
        if self.store.log_position()? != position {
            return Err(ApplyError::NotAnEntry { position });
        }
        self.position = position;
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

    /// Syncs what was applied and closes the store.
    pub fn close(self) -> Result<(), StoreError> {
        self.store.flush(true)
    }
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
