//! Error types of the public API.

use crate::signature::InvalidField;

/// Why [`crate::Engine::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The store could not be opened or read.
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    /// The store was created with another signer policy.
    #[error("the store was created with signer policy {stored:?}, not {configured:?}")]
    PolicyMismatch {
        /// Policy in the store.
        stored: crate::SignerPolicy,
        /// Policy in the configuration.
        configured: crate::SignerPolicy,
    },
    /// The store's signers were derived by other signer rules than this build's, and it holds
    /// signers the change may affect (or it comes from a newer build).
    #[error(
        "the store's signers were derived by signer rules {stored}, this build uses {current}, \
         and {non_ascii} stored emails are not ASCII, whose signers the change may alter: open \
         it with the build that wrote it, or re-ingest its signatures into a new store"
    )]
    SignerRules {
        /// The rules in the store.
        stored: u8,
        /// This build's rules.
        current: u8,
        /// Stored emails that are not all ASCII (0 when the store is from a newer build).
        non_ascii: u64,
    },
    /// A configuration field is out of range.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// The data directory could not be created, or a thread could not be started.
    #[error("cannot {what}: {error}")]
    Io {
        /// What failed, as "cannot ...".
        what: &'static str,
        /// The operating system's error.
        error: std::io::Error,
    },
}

/// Why the engine never became ready (see [`crate::Engine::wait_ready`]).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// Rebuilding the dedup index from the store failed.
    #[error("rebuilding the index failed: {0}")]
    Rebuild(StoreError),
}

/// Why [`crate::Engine::verify_store`] found no consistent store.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The store disagrees with itself or with memory: one line per problem, at most 20.
    #[error("{}", .problems.join("\n"))]
    Inconsistent {
        /// What is wrong, one problem each.
        problems: Vec<String>,
    },
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine is shut down.
    #[error("the engine is shut down")]
    ShutDown,
}

/// Why one signature was not accepted or found duplicate.
///
/// `Duplicate` is not here: it is an [`crate::Outcome`], not an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// A field failed validation. Not retryable.
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// No petition has this id. Not retryable.
    #[error("unknown petition")]
    UnknownPetition,
    /// The petition is closed or past its deadline. Not retryable.
    #[error("petition is closed")]
    PetitionClosed,
    /// Too many signatures are queued; retry shortly.
    #[error("engine overloaded, retry later")]
    Overloaded,
    /// The store failed to persist; nothing was acknowledged. Retry shortly.
    #[error("storage unavailable, retry later")]
    StorageUnavailable,
    /// The index is still being rebuilt after open; retry shortly.
    #[error("engine is recovering, retry later")]
    Recovering,
    /// The engine is closing or closed.
    #[error("engine is shutting down")]
    ShuttingDown,
    /// A validation token that is not 72 lower-case hex digits. Not retryable.
    #[error("malformed validation token")]
    MalformedToken,
    /// A validation token this store did not issue (altered, invented, or another store's).
    /// Not retryable.
    #[error("unknown validation token")]
    UnknownToken,
    /// The token's pending signature expired unvalidated. Not retryable: sign again.
    #[error("the validation token has expired")]
    TokenExpired,
    /// The token's signature was invalidated. Not retryable.
    #[error("the signature was invalidated")]
    Invalidated,
    /// The pending signer signed again more than [`crate::RESUBMITS_MAX`] times. Not
    /// retryable until the signature is validated or expires.
    #[error("too many re-submissions of a pending signature")]
    TooManyResubmits,
    /// Validation by email needs a persistent engine. Not retryable.
    #[error("validation by email needs a persistent engine")]
    Unsupported,
    /// The signer's address, email domain or email is on a block list. Not retryable.
    #[error("blocked")]
    Blocked,
    /// Signing is paused, everywhere or for this petition. Retry once it is resumed.
    #[error("signing is paused")]
    SigningPaused,
    /// The engine is read-only: it takes no change. Retry once it is writable again.
    #[error("the engine is read-only")]
    ReadOnly,
    /// Too many signatures to this petition from this address in a window; retry after
    /// `retry_after_s` seconds.
    #[error("too many signatures to this petition from this address: retry in {retry_after_s} s")]
    RateLimited {
        /// Seconds until the address may sign this petition again.
        retry_after_s: u32,
    },
}

impl SubmitError {
    /// A stable snake_case code for APIs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            SubmitError::Invalid(_) => "invalid_signature",
            SubmitError::UnknownPetition => "unknown_petition",
            SubmitError::PetitionClosed => "petition_closed",
            SubmitError::Overloaded => "overloaded",
            SubmitError::StorageUnavailable => "storage_unavailable",
            SubmitError::Recovering => "recovering",
            SubmitError::ShuttingDown => "shutting_down",
            SubmitError::MalformedToken => "malformed_token",
            SubmitError::UnknownToken => "unknown_token",
            SubmitError::TokenExpired => "token_expired",
            SubmitError::Invalidated => "invalidated",
            SubmitError::TooManyResubmits => "too_many_resubmissions",
            SubmitError::Unsupported => "unsupported",
            SubmitError::Blocked => "blocked",
            SubmitError::SigningPaused => "signing_paused",
            SubmitError::ReadOnly => "read_only",
            SubmitError::RateLimited { .. } => "ip_rate_limited",
        }
    }

    /// Whether the same submission may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SubmitError::Overloaded
                | SubmitError::StorageUnavailable
                | SubmitError::Recovering
                | SubmitError::ShuttingDown
        )
    }
}

/// Why a petition operation (register, update, close) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PetitionError {
    /// A field failed validation.
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// No petition has this id.
    #[error("unknown petition")]
    UnknownPetition,
    /// The engine holds the most petitions it can number.
    #[error("too many petitions")]
    TooMany,
    /// The store failed to persist; nothing changed. Retry shortly.
    #[error("storage unavailable, retry later")]
    StorageUnavailable,
    /// The engine is closing or closed.
    #[error("engine is shutting down")]
    ShuttingDown,
    /// Validation by email needs a persistent engine.
    #[error("validation by email needs a persistent engine")]
    Unsupported,
    /// The engine is read-only: it takes no change.
    #[error("the engine is read-only")]
    ReadOnly,
}

/// Why a webhook change failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A field failed validation.
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// No webhook has this name.
    #[error("unknown webhook")]
    UnknownWebhook,
    /// The engine keeps as many webhooks as it may.
    #[error("at most {0} webhooks")]
    TooMany(usize),
    /// The store failed to persist; nothing changed. Retry shortly.
    #[error("storage unavailable, retry later")]
    StorageUnavailable,
    /// The engine is closing or closed.
    #[error("engine is shutting down")]
    ShuttingDown,
}

/// Why an invalidation (preview, start, cancel) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidationError {
    /// A criterion failed validation.
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// No petition has this id.
    #[error("unknown petition")]
    UnknownPetition,
    /// No invalidation job has this id.
    #[error("unknown invalidation job")]
    UnknownJob,
    /// The job has finished (completed, cancelled or failed): there is nothing to cancel.
    #[error("the invalidation job has finished ({0})")]
    Finished(&'static str),
    /// As many jobs as allowed are running; retry once one has finished.
    #[error("{0} invalidation jobs are running already")]
    TooManyJobs(usize),
    /// The store failed; nothing changed. Retry shortly.
    #[error("storage unavailable, retry later")]
    StorageUnavailable,
    /// Invalidation needs a persistent engine.
    #[error("invalidation needs a persistent engine")]
    Unsupported,
    /// The engine is closing or closed.
    #[error("engine is shutting down")]
    ShuttingDown,
    /// The engine is read-only: it starts no invalidation.
    #[error("the engine is read-only")]
    ReadOnly,
}

impl InvalidationError {
    /// A stable snake_case code for APIs.
    pub fn code(&self) -> &'static str {
        match self {
            InvalidationError::Invalid(_) => "invalid_criteria",
            InvalidationError::UnknownPetition => "unknown_petition",
            InvalidationError::UnknownJob => "not_found",
            InvalidationError::Finished(_) => "job_finished",
            InvalidationError::TooManyJobs(_) => "too_many_jobs",
            InvalidationError::StorageUnavailable => "storage_unavailable",
            InvalidationError::Unsupported => "unsupported",
            InvalidationError::ShuttingDown => "shutting_down",
            InvalidationError::ReadOnly => "read_only",
        }
    }
}

/// Why `flush` or `close` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The store failed to persist.
    #[error("storage unavailable")]
    StorageUnavailable,
    /// The engine is already closed.
    #[error("engine is shut down")]
    ShutDown,
}

/// The store's error: RocksDB's message, a corrupt record, or a store still failing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// RocksDB failed (I/O error, disk full, ...).
    #[error("rocksdb: {0}")]
    Rocks(String),
    /// A stored value did not decode.
    #[error("corrupt {what} in the store")]
    Corrupt {
        /// What failed to decode.
        what: &'static str,
    },
    /// An earlier write or sync failed and the store is not recovered yet: nothing is tried.
    #[error("the store is failing")]
    Failing,
    /// The replicated log did not take the write (see `ReplicatedLog`): it was not made.
    #[error("replication: {0}")]
    Replication(String),
    /// The engine keeps everything in memory: there is no store to read or copy.
    #[error("the engine keeps no store (in memory)")]
    InMemory,
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> StoreError {
        StoreError::Rocks(e.into_string())
    }
}
