//! `engine`: exact, durable petition signature dedup and counting, as a library.
//!
//! One [`Engine`] takes signatures ([`NewSignature`]), decides whether each signer is new to the
//! petition, counts it, persists it to RocksDB in group-committed batches, and answers
//! [`Outcome::Accepted`] only once the signature is durable at the configured [`Durability`].
//!
//! Layout, one noun per module. The ingest path:
//! - `signature`: the input model, validation, the canonical signer identity;
//! - `country`: the assigned ISO 3166-1 alpha-2 codes a `country` must be one of;
//! - `fingerprint`: keyed 128-bit XXH3 fingerprints of `(petition, signer)`;
//! - `index`: the sharded dedup index of fingerprints (pending / committed);
//! - `admission`: one call's three passes: resolve and validate, claim in the index, count or
//!   hand over to the writer;
//! - `job`: what goes to the writer and comes back: jobs, items, callers, answers, [`Outcome`].
//!
//! The lifecycle (pending → validated, invalidated, expired):
//! - `lifecycle`: states, their stored entries, the petition index's runs, invalidation
//!   [`Criteria`];
//! - `states`: every signature's state, two bits a sequence, in memory;
//! - `token`: validation tokens (HMAC-SHA256 under a key from the store's secret);
//! - `invalidation`: invalidation jobs, their records and the scan of one step.
//!
//! The durable path:
//! - `record`: the stored layouts of a signature record and of a fingerprint batch;
//! - `store`: RocksDB column families, keys, options and the reads recovery needs;
//! - `index_file`: the dedup index saved beside the store at a clean close, loaded at the next
//!   open instead of a rebuild if the store is unchanged;
//! - `writer`: the group-commit writer thread (`writer/commit`: one group's batch, write and
//!   publish; `writer/syncer`: the sync stage; `writer/recovery`: index rebuild and failed-store
//!   recovery; `writer/lifecycle`: the expiry sweep, invalidation steps and job changes);
//! - `replication`: the [`ReplicatedLog`] every store write is appended to first, if there is
//!   one, and the [`Follower`] that applies it to a store of its own (and keeps the index);
//! - `health`: the health flag, storage error count and last storage error;
//! - `verify`: the full consistency check of the store.
//!
//! The domain, the handle and its state:
//! - `petition`: the registry, counts, deadlines, thresholds and milestones;
//! - `place`: a signature's country and region as one number, the regions' dictionary, and
//!   each petition's counts by place and history of its count (minutes, hours), and which
//!   petitions changed count in each recent minute (trending);
//! - `event`: the events feed (thresholds, closes, responses due and recorded), its stored
//!   form, the newest events in memory, subscriptions, and each petition's response tracking;
//! - `webhook`: webhook registrations and their durable cursors (delivery is the embedder's);
//! - `engine`: the public [`Engine`] handle: open, submit, register, flush, close;
//! - `shared`: the state the handle, admission, the writer and recovery share, changed through
//!   its methods;
//! - `config`, `error`, `stats`, `clock`.
//!
//! The engine installs no logger and no global state; it never panics on input.
//!
//! ```
//! use engine::{Config, Engine, NewSignature, Outcome, PetitionSpec};
//!
//! let engine = Engine::open(Config::in_memory()).unwrap();
//! engine.register(PetitionSpec::new("p1")).unwrap();
//! let outcomes = engine.submit_batch(vec![
//!     NewSignature::new("p1", "a@example.org"),
//!     NewSignature::new("p1", "A@EXAMPLE.ORG"),
//!     NewSignature::new("nope", "a@example.org"),
//! ]);
//! assert_eq!(outcomes[0], Ok(Outcome::Accepted { count: 1 }));
//! assert_eq!(outcomes[1], Ok(Outcome::Duplicate { count: 1 }));
//! assert_eq!(outcomes[2], Err(engine::SubmitError::UnknownPetition));
//! ```

mod admission;
mod clock;
mod config;
mod country;
mod engine;
mod error;
mod event;
mod fingerprint;
mod guard;
mod health;
mod index;
mod index_file;
mod invalidation;
mod job;
mod lifecycle;
mod limit;
mod petition;
mod place;
mod place_counts;
mod record;
mod replication;
mod shared;
mod signature;
mod sources;
mod states;
mod stats;
mod store;
mod token;
mod verify;
mod webhook;
mod writer;

pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::config::{
    Config, Durability, ParseDurabilityError, Storage, INDEX_SNAPSHOT_SIGNATURES_DEFAULT,
    PENDING_GRACE_DEFAULT, REGIONS_MAX_DEFAULT,
};
pub use crate::country::is_assigned as is_country_code;
pub use crate::engine::{Engine, Registered, ResponseStats};
pub use crate::error::{
    FlushError, InvalidationError, OpenError, PetitionError, RecoveryError, StoreError,
    SubmitError, VerifyError, WebhookError,
};
pub use crate::event::{
    CloseReason, Event, EventData, EventKind, Response, Subscription, RESPONSE_SUMMARY_BYTES_MAX,
    RESPONSE_URL_BYTES_MAX,
};
pub use crate::fingerprint::{Fingerprint, Fingerprinter, SECRET_BYTES};
pub use crate::guard::{
    Change, EntryKind, EntrySpec, GuardError, ListEntry, ListName, Switches, BY_BYTES_MAX,
    LIST_ENTRIES_MAX, LIST_VALUE_BYTES_MAX,
};
pub use crate::invalidation::{InvalidationJob, InvalidationRequest, JobState};
pub use crate::job::Outcome;
pub use crate::lifecycle::{Criteria, SignatureState, Validation, RESUBMITS_MAX};
pub use crate::limit::{RateLimits, Window, WINDOW_COUNT_MAX, WINDOW_SECONDS_MAX};
pub use crate::petition::{
    Milestone, MilestoneKind, PetitionInfo, PetitionSpec, PetitionState, DEFAULT_THRESHOLDS,
    RESPONSE_DUE_DAYS_DEFAULT, RESPONSE_DUE_DAYS_MAX, THRESHOLDS_MAX, TOP_COUNTRIES,
};
pub use crate::place::{
    Bucket, CountryCount, RegionCount, Resolution, MINUTES_KEPT, NO_COUNTRY, REGIONS_LIMIT,
};
pub use crate::replication::{ApplyError, Follower, ReplicatedLog, Replication, ReplicationError};
pub use crate::signature::{
    canonical_signer, validate_petition_id, AsSignatureRef, InvalidField, NewSignature, Op,
    SignatureRef, SignerPolicy, EMAIL_BYTES_MAX, NAME_BYTES_MAX, PETITION_ID_BYTES_MAX,
    POSTCODE_BYTES_MAX, REGION_BYTES_MAX, SOURCE_BYTES_MAX,
};
pub use crate::sources::{
    Source, SourceCount, SourceHour, SourceKind, SourcesConfig, SourcesError, TopSources,
    HOUR_MS as SOURCE_HOUR_MS, SLOT_BYTES as SOURCE_SLOT_BYTES, TABLE_SLOTS_MAX,
};
pub use crate::stats::{HistogramSnapshot, LatencyHistogram, Stats, LATENCY_BOUNDS_SECONDS};
pub use crate::token::{Token, TokenText, TOKEN_CHARS};
pub use crate::verify::VerifyReport;
pub use crate::webhook::{
    Webhook, WebhookSpec, WEBHOOKS_MAX, WEBHOOK_NAME_BYTES_MAX, WEBHOOK_SECRET_BYTES_MAX,
    WEBHOOK_URL_BYTES_MAX,
};
