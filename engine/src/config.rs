//! Engine configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
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
    /// Every durability, strongest first.
    pub const ALL: [Durability; 3] = [Durability::Sync, Durability::Buffered, Durability::None];

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
    type Err = ParseDurabilityError;

    /// Parses a name as [`Durability::as_str`] spells it.
    fn from_str(s: &str) -> Result<Durability, ParseDurabilityError> {
        Durability::ALL
            .into_iter()
            .find(|durability| durability.as_str() == s)
            .ok_or_else(|| ParseDurabilityError(s.to_owned()))
    }
}

/// A durability name that is not one of [`Durability::ALL`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown durability {0:?}: expected sync, buffered or none")]
pub struct ParseDurabilityError(pub String);

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
    /// below it (it still grows past it), and its memory (about 16 bytes a signature) is taken
    /// when the engine opens, so that no signature waits for the kernel to fault a page in.
    pub signatures_expected: u64,
    /// The index has `2^index_shard_bits` shards.
    pub index_shard_bits: u32,
    /// Save the dedup index beside the store in the background each time this many more
    /// signatures were stored since the last one saved (0: only at a clean close). An open
    /// after a crash loads it and reads back only the signatures stored after it, so this
    /// bounds that work (about 0.2 s per million on a 2-core machine); each save writes the
    /// whole index (about 16 bytes per signature stored), so a smaller value costs more disk
    /// writes. A save leaves the disk to the log three quarters of the time, so it takes about
    /// four times as long as the disk could write it. Default 50,000,000.
    pub index_snapshot_signatures: u64,
    /// Most signatures admitted but not yet answered. Past it, submissions get
    /// [`crate::SubmitError::Overloaded`] at once: the bound on queued memory.
    pub queue_signatures_max: usize,
    /// Most signatures the writer puts in one write batch (one fsync).
    pub batch_signatures_max: usize,
    /// Where the engine reads the time: deadlines and the expiry of pending signatures.
    pub clock: Arc<dyn Clock>,
    /// How long a pending signature waits for its validation before it expires (7 days).
    pub pending_grace: Duration,
    /// How often the background sweep drops expired pending signatures; `None` runs none (call
    /// [`crate::Engine::sweep_expired`]).
    pub sweep_interval: Option<Duration>,
    /// Most `lifecycle` entries one step of the expiry sweep reads: the bound on the writer's
    /// time per sweep step.
    pub lifecycle_step: usize,
    /// Most signatures one step of an invalidation job reads (off the writer); the writer then
    /// invalidates the matching ones of the step in one batch.
    pub invalidation_step: usize,
    /// Most invalidation jobs running at once.
    pub invalidation_jobs_max: usize,
    /// Most distinct regions the store names (each costs ~60 bytes of memory for good); a
    /// signature naming a new region past it is refused (`region`). At most 4,194,303.
    pub regions_max: u32,
    /// How old a trending list may be before a read computes it again: the bound on how often
    /// trending reads look at the petitions active in their window.
    pub trending_refresh: Duration,
    /// Limits of signatures per (petition, address) ([`RateLimits::UK`] by default); `None`
    /// limits nothing. Only signatures that carry an `ip` are limited.
    pub rate_limits: Option<crate::limit::RateLimits>,
    /// Trending sources per petition and their alerts ([`SourcesConfig::DEFAULT`]: alerts at
    /// 100 an hour); `None` tracks none.
    ///
    /// [`SourcesConfig::DEFAULT`]: crate::SourcesConfig::DEFAULT
    pub sources: Option<crate::sources::SourcesConfig>,
    /// A replicated log every write is appended to before it is made (see
    /// [`crate::ReplicatedLog`]); `None` (the default): the store alone holds the data.
    pub replication: Option<crate::replication::Replication>,
}

/// The default of [`Config::index_snapshot_signatures`].
pub const INDEX_SNAPSHOT_SIGNATURES_DEFAULT: u64 = 50_000_000;

/// Most distinct regions by default.
pub const REGIONS_MAX_DEFAULT: u32 = 1_000_000;

/// The default grace period of a pending signature.
pub const PENDING_GRACE_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);

impl Config {
    /// A memory-only engine: nothing is persisted.
    pub fn in_memory() -> Config {
        Config {
            storage: Storage::Memory,
            durability: Durability::None,
            signer_policy: SignerPolicy::default(),
            signatures_expected: 0,
            index_shard_bits: SHARD_BITS_DEFAULT,
            index_snapshot_signatures: INDEX_SNAPSHOT_SIGNATURES_DEFAULT,
            queue_signatures_max: 262_144,
            batch_signatures_max: 16_384,
            clock: Arc::new(SystemClock),
            pending_grace: PENDING_GRACE_DEFAULT,
            sweep_interval: Some(Duration::from_secs(1)),
            lifecycle_step: 16_384,
            invalidation_step: 65_536,
            invalidation_jobs_max: 4,
            regions_max: REGIONS_MAX_DEFAULT,
            trending_refresh: Duration::from_secs(1),
            rate_limits: Some(crate::limit::RateLimits::UK),
            sources: Some(crate::sources::SourcesConfig::DEFAULT),
            replication: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_names_round_trip_and_others_are_refused() {
        for durability in Durability::ALL {
            assert_eq!(durability.as_str().parse(), Ok(durability));
        }
        let refused = "Sync".parse::<Durability>();
        assert_eq!(refused, Err(ParseDurabilityError("Sync".to_owned())));
        assert_eq!(
            refused.expect_err("refused").to_string(),
            "unknown durability \"Sync\": expected sync, buffered or none"
        );
    }
}
