//! `engine`: exact, durable petition signature dedup and counting, as a library.
//!
//! One [`Engine`] takes signatures ([`NewSignature`]), decides whether each signer is new to the
//! petition, counts it, persists it to RocksDB in group-committed batches, and answers
//! [`Outcome::Accepted`] only once the signature is durable at the configured [`Durability`].
//!
//! Layout, one noun per module:
//! - `signature`: the input model, validation, the canonical signer identity;
//! - `fingerprint`: keyed 128-bit XXH3 fingerprints of `(petition, signer)`;
//! - `index`: the sharded dedup index of fingerprints (pending / committed);
//! - `petition`: the registry, counts, deadlines, thresholds and milestones;
//! - `record`: the stored layouts of a signature record and of a fingerprint batch;
//! - `store`: RocksDB column families, keys, options and the reads recovery needs;
//! - `writer`: the group-commit writer thread, failure handling and index rebuild;
//! - `engine`: the public handle and admission;
//! - `stats`, `verify`, `config`, `error`.
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

mod config;
mod engine;
mod error;
mod fingerprint;
mod index;
mod petition;
mod record;
mod signature;
mod stats;
mod store;
mod syncer;
mod verify;
mod writer;

pub use crate::config::{Config, Durability, Storage};
pub use crate::engine::{Engine, Outcome, Registered};
pub use crate::error::{FlushError, OpenError, PetitionError, StoreError, SubmitError};
pub use crate::fingerprint::{Fingerprint, Fingerprinter, SECRET_BYTES};
pub use crate::petition::{
    Milestone, PetitionInfo, PetitionSpec, PetitionState, DEFAULT_THRESHOLDS, THRESHOLDS_MAX,
};
pub use crate::signature::{
    canonical_signer, validate_petition_id, AsSignatureRef, InvalidField, NewSignature,
    SignatureRef, SignerPolicy, EMAIL_BYTES_MAX, NAME_BYTES_MAX, PETITION_ID_BYTES_MAX,
    POSTCODE_BYTES_MAX, SOURCE_BYTES_MAX,
};
pub use crate::stats::{HistogramSnapshot, LatencyHistogram, Stats, LATENCY_BOUNDS_SECONDS};
pub use crate::verify::VerifyReport;
