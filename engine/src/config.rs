//! Engine configuration.

use std::path::PathBuf;

use crate::index::SHARD_BITS_DEFAULT;
use crate::signature::SignerPolicy;

/// When an `Accepted` answer may be given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// After the write-ahead log is fsync'd: survives power loss. The default.
    #[default]
    Sync,
    /// After the write-ahead log is handed to the OS: survives a process crash, not power loss.
    Buffered,
    /// No write-ahead log at all: a crash loses everything since the last memtable flush.
    /// For benchmarks only.
    None,
}

impl Durability {
    /// Lower-case name, as flags and logs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Buffered => "buffered",
            Durability::None => "none",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Durability, String> {
        match s {
            "sync" => Ok(Durability::Sync),
            "buffered" => Ok(Durability::Buffered),
            "none" => Ok(Durability::None),
            other => Err(format!(
                "unknown durability {other:?}: expected sync, buffered or none"
            )),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the engine keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Nothing is persisted: dedup and counting only, for benchmarks and tests of the core.
    Memory,
    /// A RocksDB database in this directory (created if missing).
    Directory(PathBuf),
}

/// Everything [`crate::Engine::open`] needs. Start from [`Config::in_memory`] or
/// [`Config::persistent`] and change fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where data lives.
    pub storage: Storage,
    /// When an `Accepted` answer may be given (persistent storage only).
    pub durability: Durability,
    /// Opt-in provider rules for the signer identity. Fixed when a store is created: opening a
    /// store with a different policy is an error, since stored fingerprints depend on it.
    pub signer_policy: SignerPolicy,
    /// Expected number of stored signatures. The index is pre-sized for it so it never resizes
    /// below it; it still grows past it.
    pub signatures_expected: u64,
    /// The index has `2^index_shard_bits` shards.
    pub index_shard_bits: u32,
    /// Most signatures admitted but not yet answered. Past it, submissions get
    /// [`crate::SubmitError::Overloaded`] at once: the bound on queued memory.
    pub queue_signatures_max: usize,
    /// Most signatures the writer puts in one write batch (one fsync).
    pub batch_signatures_max: usize,
}

impl Config {
    /// A memory-only engine: nothing is persisted.
    pub fn in_memory() -> Config {
        Config {
            storage: Storage::Memory,
            durability: Durability::None,
            signer_policy: SignerPolicy::default(),
            signatures_expected: 0,
            index_shard_bits: SHARD_BITS_DEFAULT,
            queue_signatures_max: 262_144,
            batch_signatures_max: 16_384,
        }
    }

    /// A persistent engine in `directory` with `sync` durability.
    pub fn persistent(directory: impl Into<PathBuf>) -> Config {
        Config {
            storage: Storage::Directory(directory.into()),
            durability: Durability::Sync,
            ..Config::in_memory()
        }
    }
}
