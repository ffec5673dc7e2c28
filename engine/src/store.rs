//! The RocksDB store: key layout, options, and the reads recovery needs. The values of the
//! `signatures` and `fingerprints` column families are laid out in `record.rs`.
//!
//! Column families and keys (all integers big-endian, so key order is numeric order):
//!
//! | column family  | key                     | value                                           |
//! |----------------|-------------------------|-------------------------------------------------|
//! | `meta`         | name                    | format version, fingerprint secret, signer policy, signer rules |
//! | `petitions`    | petition number (u32)   | [`PetitionMeta`], versioned                      |
//! | `counts`       | petition number (u32)   | count (u64)                                     |
//! | `signatures`   | signature sequence (u64)| the signature record, versioned                 |
//! | `fingerprints` | first sequence of batch | the batch's fingerprints, in order (`record.rs`) |
//! | `milestones`   | event sequence (u64)    | an event: petition number, threshold, time, kind, what the kind adds (`event.rs`) |
//! | `lifecycle`    | signature sequence (u64)| a pending signature as written (`lifecycle.rs`) |
//! | `transitions`  | transition sequence (u64)| a signature's sequence and new state, when     |
//! | `pending_signers` | fingerprint (16 bytes) | a pending signature's sequence, expiry, re-submissions |
//! | `by_petition`  | petition, first sequence of a batch | the petition's sequences in that batch |
//! | `removed`      | signature sequence (u64)| nothing: this signature no longer holds its signer's slot |
//! | `jobs`         | job id (u64)            | an invalidation job (`invalidation.rs`)          |
//! | `webhooks`     | name                    | a webhook and its cursor (`webhook.rs`)          |
//! | `breakdowns`   | petition (u32)          | its counts by place and its history: entries (kind u8: 0 place, 1 minute, 2 hour; id u32 BE; change i64 LE), merged by adding the changes of equal entries |
//! | `regions`      | region id (u32)         | the region's country (2 letters) and text        |
//! | `guards`       | `e` + entry id (u64), `s`, `n`, `p` + petition (u32) | a block or allow list entry, the switches, the last entry id, a petition's pause (`guard.rs`) |
//!
//! A count is three u64s: validated, pending and invalidated signatures (a store of format 2
//! holds the validated count alone).
//! Signatures are keyed by a global sequence the single writer hands out, so every write is an
//! append at the end of the key space: memtable flushes produce SSTs that never overlap older
//! ones and leveled compaction moves them down without rewriting them. Bytes written per signature
//! stay near WAL + one flush. A key of (petition, signer) would be random within each petition and
//! make every flush overlap every level (see ARCHITECTURE.md).
//!
//! The `fingerprints` column family duplicates the fingerprint of every signature
//! ([`Fingerprint::BYTES`](crate::Fingerprint::BYTES), 16 bytes) so that recovery rebuilds the index by reading ~16 bytes per
//! signature instead of whole records.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, Options,
    WriteBatch, WriteOptions, DB,
};

use crate::config::Durability;
use crate::error::StoreError;
use crate::event::{self, NewEvent};
use crate::fingerprint::Fingerprint;
use crate::fingerprint::SECRET_BYTES;
use crate::guard::{self, ListEntry, Switches};
use crate::lifecycle::{self, LifecycleEntry, PendingSigner, Transition, Validation};
use crate::petition::{Counts, PetitionMeta, RESPONSE_DUE_DAYS_DEFAULT};
use crate::place::{Place, RegionKey, Resolution, MINUTES_KEPT};
use crate::record::{self, decode_u32, decode_u64, Reader, Record};
use crate::replication::ReplicatedLog;
use crate::signature::SignerPolicy;
use crate::webhook::Webhook;

/// On-disk format version, stored in `meta`; a store with another version is refused, except
/// versions 1 and 2, which are upgraded once at open. Version 2 came with signer rules 2 (see
/// [`SIGNER_RULES`]), so that a build from before them, which accepts only version 1, refuses a
/// store written under the new rules instead of adding signers by the old. Version 3 came with
/// the signature lifecycle (pending signatures, invalidation): a build of version 2 would count
/// pending signatures and miss invalidations, so it must refuse such a store. Upgrading a
/// version 2 store writes its petition index (`by_petition`) from one scan of its records.
/// Version 4 came with the events feed (events other than milestones, response tracking,
/// webhooks): a build of version 3 would refuse those events as corrupt. Upgrading a version 3
/// store changes nothing but the version.
pub const FORMAT_VERSION: u8 = 5;
/// The format version before counts by place and the history.
pub(crate) const FORMAT_VERSION_4: u8 = 4;
/// The format version before signer rules were recorded.
const FORMAT_VERSION_1: u8 = 1;
/// The format version before the signature lifecycle.
const FORMAT_VERSION_2: u8 = 2;
/// The format version before the events feed.
pub(crate) const FORMAT_VERSION_3: u8 = 3;
const PETITION_VERSION_1: u8 = 1;
/// Petition version 2 adds the validation mode.
const PETITION_VERSION_2: u8 = 2;
/// Petition version 3 adds the response threshold and the days a response has.
const PETITION_VERSION: u8 = 3;

pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_PETITIONS: &str = "petitions";
pub(crate) const CF_COUNTS: &str = "counts";
pub(crate) const CF_SIGNATURES: &str = "signatures";
pub(crate) const CF_FINGERPRINTS: &str = "fingerprints";
pub(crate) const CF_MILESTONES: &str = "milestones";
pub(crate) const CF_LIFECYCLE: &str = "lifecycle";
pub(crate) const CF_PENDING_SIGNERS: &str = "pending_signers";
pub(crate) const CF_BY_PETITION: &str = "by_petition";
pub(crate) const CF_REMOVED: &str = "removed";
pub(crate) const CF_JOBS: &str = "jobs";
pub(crate) const CF_TRANSITIONS: &str = "transitions";
pub(crate) const CF_WEBHOOKS: &str = "webhooks";
pub(crate) const CF_BREAKDOWNS: &str = "breakdowns";
pub(crate) const CF_REGIONS: &str = "regions";
pub(crate) const CF_GUARDS: &str = "guards";
const COLUMN_FAMILIES: [&str; 16] = [
    CF_META,
    CF_PETITIONS,
    CF_COUNTS,
    CF_SIGNATURES,
    CF_FINGERPRINTS,
    CF_MILESTONES,
    CF_LIFECYCLE,
    CF_PENDING_SIGNERS,
    CF_BY_PETITION,
    CF_REMOVED,
    CF_JOBS,
    CF_TRANSITIONS,
    CF_WEBHOOKS,
    CF_BREAKDOWNS,
    CF_REGIONS,
    CF_GUARDS,
];

/// What the `guards` column family holds.
#[derive(Default)]
pub(crate) struct LoadedGuards {
    pub entries: Vec<ListEntry>,
    pub switches: Option<Switches>,
    pub paused: Vec<(u32, guard::Change)>,
    pub last_id: u64,
}

/// One stored entry of a petition's breakdown.
pub(crate) enum Stored {
    /// Its count at a place.
    Place(Place, i64),
    /// The change of its count in a bucket (its number at the resolution).
    Bucket(Resolution, u32, i64),
}

/// Kinds of the entries of a `breakdowns` value.
const ENTRY_PLACE: u8 = 0;
const ENTRY_MINUTE: u8 = 1;
const ENTRY_HOUR: u8 = 2;
/// Bytes of one entry: kind, id (place, minute or hour number), change.
const ENTRY_BYTES: usize = 13;

/// A petition's changes as one `breakdowns` operand (or value), built by a batch.
#[derive(Default)]
pub(crate) struct Entries(Vec<u8>);

impl Entries {
    fn push(&mut self, kind: u8, id: u32, change: i64) {
        self.0.push(kind);
        self.0.extend_from_slice(&id.to_be_bytes());
        self.0.extend_from_slice(&change.to_le_bytes());
    }

    /// The change of the count at `place`.
    pub fn place(&mut self, place: Place, change: i64) {
        self.push(ENTRY_PLACE, place.0, change);
    }

    /// The change of the count at `at_ms`, in its minute and its hour.
    pub fn history(&mut self, at_ms: u64, change: i64) {
        for resolution in [Resolution::Minute, Resolution::Hour] {
            let kind = match resolution {
                Resolution::Minute => ENTRY_MINUTE,
                Resolution::Hour => ENTRY_HOUR,
            };
            self.push(kind, (at_ms / resolution.millis()) as u32, change);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Empties it, keeping its buffer for the next operand.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// The entries of a `breakdowns` value or operand; `None` if its length is not a whole number
/// of entries.
fn entries(bytes: &[u8]) -> Option<impl Iterator<Item = (u8, u32, i64)> + '_> {
    if !bytes.chunks_exact(ENTRY_BYTES).remainder().is_empty() {
        return None;
    }
    Some(bytes.chunks_exact(ENTRY_BYTES).map(|e| {
        let mut id = [0u8; 4];
        id.copy_from_slice(&e[1..5]);
        let mut change = [0u8; 8];
        change.copy_from_slice(&e[5..]);
        (e[0], u32::from_be_bytes(id), i64::from_le_bytes(change))
    }))
}

/// The merge of `breakdowns`: the entries of the value and every operand, equal ones (same
/// kind and id) added up, those that come to zero dropped, and minutes more than 48 hours
/// before the newest one dropped (a petition's value keeps its places, its hours and its last
/// 48 hours of minutes). A malformed operand fails the merge, and so the read.
fn merge_entries(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    let mut all: Vec<(u8, u32, i64)> = Vec::new();
    if let Some(bytes) = existing {
        all.extend(entries(bytes)?);
    }
    for operand in operands {
        all.extend(entries(operand)?);
    }
    all.sort_unstable_by_key(|&(kind, id, _)| (kind, id));
    let newest_minute = all
        .iter()
        .filter(|e| e.0 == ENTRY_MINUTE)
        .map(|e| e.1)
        .max()
        .unwrap_or(0);
    let mut out = Entries::default();
    let mut at = 0;
    while at < all.len() {
        let (kind, id, mut change) = all[at];
        at += 1;
        while at < all.len() && (all[at].0, all[at].1) == (kind, id) {
            change = change.wrapping_add(all[at].2);
            at += 1;
        }
        let old_minute = kind == ENTRY_MINUTE && id + MINUTES_KEPT <= newest_minute;
        if change != 0 && !old_minute {
            out.push(kind, id, change);
        }
    }
    Some(out.0)
}

const META_FORMAT: &[u8] = b"format";
const META_SECRET: &[u8] = b"secret";
const META_POLICY: &[u8] = b"signer_policy";
const META_RULES: &[u8] = b"signer_rules";
/// With a replicated log: the position of the log entry the store's last write was (u64).
const META_LOG_POSITION: &[u8] = b"log_position";
/// With a replicated log: the epoch of the newest owner whose mark was written (u64).
const META_LOG_EPOCH: &[u8] = b"log_epoch";
/// The sequence the expiry sweep goes on from (u64): every `lifecycle` entry before it is not
/// pending.
pub(crate) const META_SWEEP_CURSOR: &[u8] = b"sweep_cursor";

/// The version of the rules that derive a signer from an email (`canonical_signer`), kept in
/// `meta`: 1 (a store without the key) lower-cased only; 2 added the Unicode rules (invisible
/// characters refused, NFC local parts, `xn--` domains), which change the signer, hence the
/// fingerprint, of some non-ASCII emails.
pub(crate) const SIGNER_RULES: u8 = 2;

/// Memtable size of the `signatures` column family. Large memtables mean fewer, larger L0 files.
const SIGNATURES_MEMTABLE_BYTES: usize = 128 << 20;
/// Memtable size of the `fingerprints` column family (16 bytes a signature).
const FINGERPRINTS_MEMTABLE_BYTES: usize = 32 << 20;
/// Cap on live WAL bytes: past it RocksDB flushes the small column families so old WAL files can go.
const WAL_BYTES_MAX: u64 = 1 << 30;

/// What `meta` holds.
pub(crate) struct Meta {
    pub secret: [u8; SECRET_BYTES],
    pub policy: SignerPolicy,
    /// The signer rules the stored fingerprints were derived by ([`SIGNER_RULES`] on a new
    /// store).
    pub rules: u8,
    /// The store's format version ([`FORMAT_VERSION`] on a new store).
    pub format: u8,
}

/// Whether files in `dir` (created if missing) can be opened for direct I/O. Some filesystems
/// refuse `O_DIRECT` (tmpfs before Linux 6.6, for one); RocksDB then writes through the page
/// cache as usual.
fn direct_io_works(dir: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        if std::fs::create_dir_all(dir).is_err() {
            return false;
        }
        let probe = dir.join(".direct-io-probe");
        let works = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)
            .is_ok();
        let _ = std::fs::remove_file(&probe);
        works
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}

pub(crate) struct Store {
    db: DB,
    path: PathBuf,
    /// The replicated log every write is appended to first, if any. Its lock also keeps the
    /// appends and the local writes in one order.
    log: parking_lot::Mutex<Option<Arc<dyn ReplicatedLog>>>,
}

fn db_options(direct_io: bool) -> Options {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    // Two cores: one background job for flushes, one for compaction.
    options.set_max_background_jobs(2);
    options.set_max_total_wal_size(WAL_BYTES_MAX);
    // Smooth writeback so a memtable flush does not stall on one huge fsync.
    options.set_bytes_per_sync(1 << 20);
    // Flushes and compactions write past the page cache. Buffered, a 128 MiB flush left dirty
    // pages whose writeback the WAL's fdatasync then waited behind (ext4 orders data before
    // its journal commit): with it, p99 ack latency at half load fell from ~10.5 ms to ~3.3 ms
    // in 3 of 3 alternating pairs (commit 69bfb18, 2026-11-29).
    options.set_use_direct_io_for_flush_and_compaction(direct_io);
    // One writer thread writes every batch, so concurrent memtable inserts bring nothing; the
    // vector memtable of `by_petition` needs them off.
    options.set_allow_concurrent_memtable_write(false);
    options
}

fn cf_options(name: &str) -> Options {
    let mut options = Options::default();
    match name {
        CF_SIGNATURES => {
            options.set_write_buffer_size(SIGNATURES_MEMTABLE_BYTES);
            options.set_max_write_buffer_number(4);
            options.set_target_file_size_base(128 << 20);
            options.set_max_bytes_for_level_base(512 << 20);
            options.set_compression_type(DBCompressionType::Lz4);
        }
        CF_BY_PETITION => {
            // One entry per petition per batch, at scattered keys (every petition a batch
            // touches): in a skip list each insert walked it from the top, 16% of the writer's
            // time in P2 (100,000 petitions). A vector memtable appends, and sorts when it is
            // flushed or read: a job or a preview reads a petition's runs once
            // (`Store::petition_runs`).
            options.set_write_buffer_size(32 << 20);
            options.set_max_write_buffer_number(4);
            options.set_compression_type(DBCompressionType::None);
            options.set_memtable_factory(rocksdb::MemtableFactory::Vector);
            let mut table = rocksdb::BlockBasedOptions::default();
            table.set_bloom_filter(10.0, false);
            options.set_block_based_table_factory(&table);
        }
        CF_BREAKDOWNS => {
            // Changes merged by addition: no read before a write (the UK site's `GB` row was
            // its hot spot), one operand per petition per batch, at scattered keys, so a vector
            // memtable (see `by_petition`). Read only at open and by `verify`.
            options.set_write_buffer_size(32 << 20);
            options.set_max_write_buffer_number(4);
            options.set_compression_type(DBCompressionType::None);
            options.set_memtable_factory(rocksdb::MemtableFactory::Vector);
            options.set_merge_operator_associative("breakdown_entries", merge_entries);
        }
        CF_LIFECYCLE | CF_PENDING_SIGNERS | CF_REMOVED | CF_TRANSITIONS => {
            // Small values, read by key: bloom filters spare the reads of keys not there.
            options.set_write_buffer_size(32 << 20);
            options.set_max_write_buffer_number(4);
            options.set_compression_type(DBCompressionType::None);
            let mut table = rocksdb::BlockBasedOptions::default();
            table.set_bloom_filter(10.0, false);
            options.set_block_based_table_factory(&table);
        }
        CF_FINGERPRINTS => {
            // Keyed hashes do not compress.
            options.set_write_buffer_size(FINGERPRINTS_MEMTABLE_BYTES);
            options.set_max_write_buffer_number(4);
            options.set_target_file_size_base(64 << 20);
            options.set_compression_type(DBCompressionType::None);
        }
        _ => {
            options.set_write_buffer_size(4 << 20);
            options.set_compression_type(DBCompressionType::None);
        }
    }
    options
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let descriptors = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name)));
        let direct_io = direct_io_works(path);
        let mut options = db_options(direct_io);
        // Flushes and compactions run at a lower CPU priority (RocksDB's process-wide default
        // thread pools), so on two cores they take the CPU the writer and callers leave rather
        // than delay an acknowledgement: p99 ack latency at half load was lower in 3 of 3
        // alternating pairs, and sustained throughput did not change (commit 5943730,
        // 2026-11-29).
        let mut env = rocksdb::Env::new()?;
        env.lower_thread_pool_cpu_priority();
        env.lower_high_priority_thread_pool_cpu_priority();
        options.set_env(&env);
        let db = DB::open_cf_descriptors(&options, path, descriptors)?;
        Ok(Store {
            db,
            path: path.to_owned(),
            log: parking_lot::Mutex::new(None),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn cf(&self, name: &str) -> &ColumnFamily {
        // Every name in COLUMN_FAMILIES is opened (and created if missing) by `open`.
        self.db
            .cf_handle(name)
            .expect("column family opened by Store::open")
    }

    /// Reads `meta`, writing it first (synced) on a new store.
    pub fn load_or_init_meta(&self, fresh: &Meta) -> Result<Meta, StoreError> {
        let cf = self.cf(CF_META);
        match self.db.get_cf(cf, META_FORMAT)? {
            None => {
                let mut batch = WriteBatch::default();
                batch.put_cf(cf, META_FORMAT, [FORMAT_VERSION]);
                batch.put_cf(cf, META_SECRET, fresh.secret);
                batch.put_cf(cf, META_POLICY, [fresh.policy.to_byte()]);
                batch.put_cf(cf, META_RULES, [SIGNER_RULES]);
                self.write(batch, Durability::Sync)?;
                Ok(Meta {
                    secret: fresh.secret,
                    policy: fresh.policy,
                    rules: SIGNER_RULES,
                    format: FORMAT_VERSION,
                })
            }
            Some(format) => {
                let format = match format.as_slice() {
                    [FORMAT_VERSION] => FORMAT_VERSION,
                    [FORMAT_VERSION_4] => FORMAT_VERSION_4,
                    [FORMAT_VERSION_3] => FORMAT_VERSION_3,
                    [FORMAT_VERSION_2] => FORMAT_VERSION_2,
                    [FORMAT_VERSION_1] => FORMAT_VERSION_1,
                    _ => {
                        return Err(StoreError::Corrupt {
                            what: "format version",
                        })
                    }
                };
                let secret = self
                    .db
                    .get_cf(cf, META_SECRET)?
                    .and_then(|s| <[u8; SECRET_BYTES]>::try_from(s.as_slice()).ok())
                    .ok_or(StoreError::Corrupt {
                        what: "fingerprint secret",
                    })?;
                let policy = match self.db.get_cf(cf, META_POLICY)?.as_deref() {
                    Some([byte]) => SignerPolicy::from_byte(*byte),
                    _ => {
                        return Err(StoreError::Corrupt {
                            what: "signer policy",
                        })
                    }
                };
                // A version 1 store may have been written by a build that knew no signer rules,
                // whatever its `signer_rules` key says: its rules are 1.
                let rules = match (format, self.db.get_cf(cf, META_RULES)?.as_deref()) {
                    (FORMAT_VERSION_1, _) => 1,
                    (_, Some([rules])) => *rules,
                    _ => {
                        return Err(StoreError::Corrupt {
                            what: "signer rules",
                        })
                    }
                };
                Ok(Meta {
                    secret,
                    policy,
                    rules,
                    format,
                })
            }
        }
    }

    /// Records that the stored fingerprints follow the current [`SIGNER_RULES`] and the store
    /// has the current format, which older builds refuse (synced).
    pub fn set_current_format(&self) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_META);
        batch.put_cf(cf, META_RULES, [SIGNER_RULES]);
        batch.put_cf(cf, META_FORMAT, [FORMAT_VERSION]);
        self.write(batch, Durability::Sync)
    }

    /// Writes the petition index of every stored signature (the upgrade from format 2, whose
    /// batches wrote none), from one scan of the records in sequence order. Entries cover
    /// aligned ranges of 65,536 sequences, disjoint and in order like a batch's, so readers need
    /// not know which they are. Returns how many records hold an email that is not all ASCII
    /// (see [`SIGNER_RULES`]).
    pub fn write_petition_index(&self) -> Result<u64, StoreError> {
        const CHUNK: u64 = 1 << 16;
        let cf = self.cf(CF_BY_PETITION);
        let mut pending: std::collections::BTreeMap<u32, Vec<u8>> = Default::default();
        let mut chunk = 0u64;
        let mut non_ascii = 0u64;
        let mut batch = WriteBatch::default();
        let mut result = Ok(());
        self.scan_signatures(|seq, record| {
            if !record.email.is_ascii() {
                non_ascii += 1;
            }
            let this = seq / CHUNK * CHUNK;
            if this != chunk {
                for (petition, runs) in std::mem::take(&mut pending) {
                    batch.put_cf(cf, lifecycle::by_petition_key(petition, chunk), runs);
                }
                if batch.len() >= 4096 {
                    result = result
                        .clone()
                        .and_then(|()| self.write(std::mem::take(&mut batch), Durability::Sync));
                }
                chunk = this;
            }
            lifecycle::push_run(pending.entry(record.petition).or_default(), chunk, seq);
        })?;
        result?;
        for (petition, runs) in pending {
            batch.put_cf(cf, lifecycle::by_petition_key(petition, chunk), runs);
        }
        self.write(batch, Durability::Sync)?;
        Ok(non_ascii)
    }

    /// Writes the counts by place and the history of every petition from one scan of the
    /// records (the upgrade from format 4 and older, which kept neither): each counted
    /// signature at its country (records of those formats name no region), in the minute and
    /// hour it was received. Its states come from the `lifecycle` entries and `transitions`.
    pub fn write_places(&self) -> Result<(), StoreError> {
        let mut states: std::collections::HashMap<u64, lifecycle::SignatureState> =
            Default::default();
        self.all_lifecycle(|seq, _| {
            states.insert(seq, lifecycle::SignatureState::Pending);
        })?;
        self.all_transitions(|t| {
            states.insert(t.seq, t.state);
        })?;
        // (petition, kind, id) → count.
        let mut counted: std::collections::BTreeMap<(u32, u8, u32), i64> = Default::default();
        self.scan_signatures(|seq, record| {
            let validated = states
                .get(&seq)
                .is_none_or(|s| *s == lifecycle::SignatureState::Validated);
            if validated {
                let at = record.received_at_ms;
                let place = Place::of_country(record.country);
                for key in [
                    (record.petition, ENTRY_PLACE, place.0),
                    (
                        record.petition,
                        ENTRY_MINUTE,
                        (at / Resolution::Minute.millis()) as u32,
                    ),
                    (
                        record.petition,
                        ENTRY_HOUR,
                        (at / Resolution::Hour.millis()) as u32,
                    ),
                ] {
                    *counted.entry(key).or_default() += 1;
                }
            }
        })?;
        let mut batch = WriteBatch::default();
        let mut current: Option<(u32, Entries)> = None;
        for ((petition, kind, id), count) in counted {
            if current.as_ref().is_some_and(|(p, _)| *p != petition) {
                if let Some((p, value)) = current.take() {
                    batch.put_cf(self.cf(CF_BREAKDOWNS), p.to_be_bytes(), value.bytes());
                }
                if batch.len() >= 4_096 {
                    self.write(std::mem::take(&mut batch), Durability::Sync)?;
                }
            }
            current
                .get_or_insert_with(|| (petition, Entries::default()))
                .1
                .push(kind, id, count);
        }
        if let Some((p, value)) = current {
            batch.put_cf(self.cf(CF_BREAKDOWNS), p.to_be_bytes(), value.bytes());
        }
        self.write(batch, Durability::Sync)
    }

    /// Makes the store look as a build from before the signer rules left it: format version 1,
    /// no `signer_rules` key (tests only).
    #[cfg(test)]
    pub fn forget_signer_rules(&self) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_META);
        batch.delete_cf(cf, META_RULES);
        batch.put_cf(cf, META_FORMAT, [FORMAT_VERSION_1]);
        self.write(batch, Durability::Sync)
    }

    /// Makes the store look as a build of format 4 left it: no counts by place, no history
    /// (tests only; for a store whose records name no region).
    #[cfg(test)]
    pub fn make_format_4(&self) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), META_FORMAT, [FORMAT_VERSION_4]);
        for cf in [CF_BREAKDOWNS, CF_REGIONS] {
            for entry in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
                batch.delete_cf(self.cf(cf), entry?.0);
            }
        }
        self.write(batch, Durability::Sync)
    }

    /// Makes the store look as a build of format 2 left it: no petition index, counts of the
    /// validated signatures alone, petitions and milestones in their old encodings (tests only;
    /// for a store without pending or invalidated signatures).
    #[cfg(test)]
    pub fn make_format_2(&self) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), META_FORMAT, [FORMAT_VERSION_2]);
        for entry in self
            .db
            .iterator_cf(self.cf(CF_BY_PETITION), IteratorMode::Start)
        {
            batch.delete_cf(self.cf(CF_BY_PETITION), entry?.0);
        }
        for (num, counts) in self.load_counts()? {
            batch.put_cf(
                self.cf(CF_COUNTS),
                num.to_be_bytes(),
                counts.validated.to_be_bytes(),
            );
        }
        for entry in self
            .db
            .iterator_cf(self.cf(CF_PETITIONS), IteratorMode::Start)
        {
            let (key, value) = entry?;
            // Version 3 ends with the validation byte, then 12 bytes of response settings.
            let mut old = value[..value.len() - 13].to_vec();
            old[0] = PETITION_VERSION_1;
            batch.put_cf(self.cf(CF_PETITIONS), key, old);
        }
        // Format 2 knew threshold crossings alone, 20 bytes each, numbered without gaps.
        let mut seq = 1u64;
        for entry in self
            .db
            .iterator_cf(self.cf(CF_MILESTONES), IteratorMode::Start)
        {
            let (key, value) = entry?;
            batch.delete_cf(self.cf(CF_MILESTONES), key);
            if value.len() == 21 && value[20] == 0 {
                batch.put_cf(self.cf(CF_MILESTONES), seq.to_be_bytes(), &value[..20]);
                seq += 1;
            }
        }
        self.write(batch, Durability::Sync)
    }

    /// The format version in `meta` (tests only).
    #[cfg(test)]
    pub fn format_version(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_META), META_FORMAT)?)
    }

    pub fn write(&self, mut batch: WriteBatch, durability: Durability) -> Result<(), StoreError> {
        let mut options = WriteOptions::default();
        match durability {
            Durability::Sync => options.set_sync(true),
            Durability::Buffered => options.set_sync(false),
            Durability::None => options.disable_wal(true),
        }
        let log = self.log.lock();
        let Some(log) = log.as_ref() else {
            self.db.write_opt(batch, &options)?;
            return Ok(());
        };
        // The entry carries its own position, so whoever applies it knows where it stands.
        let position = log.next_position();
        batch.put_cf(self.cf(CF_META), META_LOG_POSITION, position.to_be_bytes());
        log.append(position, batch.data())
            .map_err(|e| StoreError::Replication(e.to_string()))?;
        if let Err(e) = self.db.write_opt(batch, &options) {
            // The log has an entry this store lacks: it must be rebuilt from the log.
            log.fail("the local write after an append failed");
            return Err(e.into());
        }
        Ok(())
    }

    /// Appends every later write to `log` before making it.
    pub fn attach_log(&self, log: Arc<dyn ReplicatedLog>) {
        *self.log.lock() = Some(log);
    }

    /// Writes locally only from now on.
    pub fn detach_log(&self) {
        *self.log.lock() = None;
    }

    /// The log position of the last write (0: none, or no replicated log).
    pub fn log_position(&self) -> Result<u64, StoreError> {
        self.meta_u64(META_LOG_POSITION)
    }

    /// Makes a checkpoint of the store in `dir`, which must not exist and must be on the same
    /// filesystem: a database of its own that shares the store's SST files by hard link. The
    /// checkpoint is then opened, its write-ahead log flushed into SST files and closed, so that
    /// its SST files and `MANIFEST` alone hold it (its `*.log` files are not needed to copy it).
    /// Returns the log position it holds: the writes a checkpoint holds are those up to there.
    pub fn checkpoint(&self, dir: &Path) -> Result<u64, StoreError> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        let copy = Store::open(dir)?;
        copy.flush(true)?;
        copy.log_position()
    }

    /// The epoch of the newest owner's mark (0: none).
    pub fn log_epoch(&self) -> Result<u64, StoreError> {
        self.meta_u64(META_LOG_EPOCH)
    }

    /// Puts the mark of an owner's epoch into `batch`.
    pub fn put_epoch(&self, batch: &mut WriteBatch, epoch: u64) {
        batch.put_cf(self.cf(CF_META), META_LOG_EPOCH, epoch.to_be_bytes());
    }

    fn meta_u64(&self, key: &[u8]) -> Result<u64, StoreError> {
        match self.db.get_cf(self.cf(CF_META), key)? {
            None => Ok(0),
            Some(value) => value
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    what: "log position",
                }),
        }
    }

    /// Makes everything written so far durable: WAL synced, and memtables flushed (the latter
    /// matters for `Durability::None`, which writes no WAL). Safe to call while another thread
    /// writes: every write that returned before the call is covered.
    pub fn flush(&self, memtables: bool) -> Result<(), StoreError> {
        self.db.flush_wal(true)?;
        if memtables {
            for name in COLUMN_FAMILIES {
                self.db.flush_cf(self.cf(name))?;
            }
        }
        Ok(())
    }

    /// Merges every petition's `breakdowns` operands into one value. Each batch adds one
    /// operand per petition it touched, and until compaction merges them an open reading the
    /// breakdowns merges them all as it reads (44% of `open`'s samples after a clean close with
    /// 500,000 petitions); a clean close does this instead.
    pub fn compact_breakdowns(&self) {
        self.db
            .compact_range_cf(self.cf(CF_BREAKDOWNS), None::<&[u8]>, None::<&[u8]>);
    }

    /// Files in level 0 of the `breakdowns` column family (each can hold an operand of every
    /// petition).
    #[cfg(test)]
    pub fn breakdown_level0_files(&self) -> u64 {
        self.db
            .property_int_value_cf(self.cf(CF_BREAKDOWNS), "rocksdb.num-files-at-level0")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    pub fn load_petitions(&self) -> Result<Vec<(u32, PetitionMeta)>, StoreError> {
        let mut petitions = Vec::new();
        for entry in self
            .db
            .iterator_cf(self.cf(CF_PETITIONS), IteratorMode::Start)
        {
            let (key, value) = entry?;
            petitions.push((decode_u32(&key, "petition key")?, decode_petition(&value)?));
        }
        Ok(petitions)
    }

    pub fn load_counts(&self) -> Result<Vec<(u32, Counts)>, StoreError> {
        let mut counts = Vec::new();
        for entry in self.db.iterator_cf(self.cf(CF_COUNTS), IteratorMode::Start) {
            let (key, value) = entry?;
            counts.push((decode_u32(&key, "count key")?, Counts::decode(&value)?));
        }
        Ok(counts)
    }

    /// Every stored region, by id (ascending).
    pub fn load_regions(&self) -> Result<Vec<(u32, RegionKey)>, StoreError> {
        let mut regions = Vec::new();
        for entry in self
            .db
            .iterator_cf(self.cf(CF_REGIONS), IteratorMode::Start)
        {
            let (key, value) = entry?;
            let id = decode_u32(&key, "region key")?;
            let region = RegionKey::decode(&value).ok_or(StoreError::Corrupt { what: "region" })?;
            regions.push((id, region));
        }
        Ok(regions)
    }

    /// Calls `each` with every petition's stored entries, petition by petition (ascending), each
    /// petition's places ascending: its counts by place, its hours, and its minutes from minute
    /// `minutes_from` on.
    pub fn scan_breakdowns(
        &self,
        minutes_from: u32,
        mut each: impl FnMut(u32, Stored),
    ) -> Result<(), StoreError> {
        for entry in self
            .db
            .iterator_cf(self.cf(CF_BREAKDOWNS), IteratorMode::Start)
        {
            let (key, value) = entry?;
            let petition = decode_u32(&key, "breakdown key")?;
            let corrupt = StoreError::Corrupt { what: "breakdown" };
            for (kind, id, change) in entries(&value).ok_or(corrupt.clone())? {
                let stored = match kind {
                    ENTRY_PLACE => Stored::Place(Place(id), change),
                    ENTRY_MINUTE if id < minutes_from => continue,
                    ENTRY_MINUTE => Stored::Bucket(Resolution::Minute, id, change),
                    ENTRY_HOUR => Stored::Bucket(Resolution::Hour, id, change),
                    _ => return Err(corrupt),
                };
                each(petition, stored);
            }
        }
        Ok(())
    }

    /// Events with sequence ≥ `from`, in order, at most `limit`.
    pub fn load_events(&self, from: u64, limit: usize) -> Result<Vec<(u64, NewEvent)>, StoreError> {
        let mut events = Vec::new();
        let start = from.to_be_bytes();
        let mode = IteratorMode::From(&start, Direction::Forward);
        for entry in self
            .db
            .iterator_cf(self.cf(CF_MILESTONES), mode)
            .take(limit)
        {
            let (key, value) = entry?;
            let seq = decode_u64(&key, "event key")?;
            events.push((seq, event::decode(&value)?));
        }
        Ok(events)
    }

    /// The lists, the switches (if ever set) and the paused petitions, as stored.
    pub fn load_guards(&self) -> Result<LoadedGuards, StoreError> {
        let mut loaded = LoadedGuards::default();
        for entry in self.db.iterator_cf(self.cf(CF_GUARDS), IteratorMode::Start) {
            let (key, value) = entry?;
            match (key.first(), key.get(1..)) {
                (Some(&guard::KEY_ENTRY), Some(id)) => {
                    let id = decode_u64(id, "list entry key")?;
                    loaded.entries.push(ListEntry::decode(id, &value)?);
                }
                (Some(&guard::KEY_LAST_ID), Some([])) => {
                    let bytes: [u8; 8] =
                        value.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                            what: "last list entry id",
                        })?;
                    loaded.last_id = u64::from_le_bytes(bytes);
                }
                (Some(&guard::KEY_SWITCHES), Some([])) => {
                    loaded.switches = Some(Switches::decode(&value)?);
                }
                (Some(&guard::KEY_PAUSED), Some(num)) => {
                    let num: [u8; 4] = num
                        .try_into()
                        .map_err(|_| StoreError::Corrupt { what: "pause key" })?;
                    loaded
                        .paused
                        .push((u32::from_be_bytes(num), guard::decode_pause(&value)?));
                }
                _ => return Err(StoreError::Corrupt { what: "guard key" }),
            }
        }
        Ok(loaded)
    }

    /// Every webhook.
    pub fn load_webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        let mut hooks = Vec::new();
        for entry in self
            .db
            .iterator_cf(self.cf(CF_WEBHOOKS), IteratorMode::Start)
        {
            let (_, value) = entry?;
            hooks.push(Webhook::decode(&value)?);
        }
        Ok(hooks)
    }

    /// The `pending_signers` entries of `fps`, in the same order.
    pub fn pending_signers(
        &self,
        fps: &[Fingerprint],
    ) -> Result<Vec<Option<PendingSigner>>, StoreError> {
        let cf = self.cf(CF_PENDING_SIGNERS);
        let keys: Vec<[u8; Fingerprint::BYTES]> = fps.iter().map(|fp| fp.to_bytes()).collect();
        self.db
            .batched_multi_get_cf(cf, &keys, false)
            .into_iter()
            .map(|value| match value? {
                None => Ok(None),
                Some(bytes) => PendingSigner::decode(&bytes).map(Some),
            })
            .collect()
    }

    /// Calls `each` with the stored record of every sequence in `seqs` (ascending) that still
    /// has one; expired signatures have none. A batch writes each petition's records in one run
    /// (`writer::by_petition`), so one seek serves a run and the rest are steps to the next key:
    /// a fifth of the time of a point lookup per record.
    pub fn records(
        &self,
        seqs: &[u64],
        mut each: impl FnMut(u64, Record<'_>),
    ) -> Result<(), StoreError> {
        let mut iter = self.db.raw_iterator_cf(self.cf(CF_SIGNATURES));
        let mut at: Option<u64> = None;
        for &seq in seqs {
            match at {
                Some(key) if key == seq => {}
                // A few keys ahead: step there.
                Some(key) if key < seq && seq - key <= 8 => {
                    while iter.valid() && at.is_some_and(|k| k < seq) {
                        iter.next();
                        at = iter
                            .key()
                            .map(|k| decode_u64(k, "signature key"))
                            .transpose()?;
                    }
                }
                _ => {
                    iter.seek(seq.to_be_bytes());
                    at = iter
                        .key()
                        .map(|k| decode_u64(k, "signature key"))
                        .transpose()?;
                }
            }
            if at != Some(seq) {
                iter.status()?;
                continue;
            }
            if let Some(value) = iter.value() {
                each(seq, record::decode(value)?);
            }
            iter.next();
            at = iter
                .key()
                .map(|k| decode_u64(k, "signature key"))
                .transpose()?;
        }
        iter.status()?;
        Ok(())
    }

    /// Petition `petition`'s sequences below `upto`, as ascending runs `(start, len)`, from its
    /// petition index: one iterator, so the index's vector memtable is sorted once per call.
    pub fn petition_runs(&self, petition: u32, upto: u64) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut iter = self.db.raw_iterator_cf(self.cf(CF_BY_PETITION));
        iter.seek(lifecycle::by_petition_key(petition, 0));
        while iter.valid() {
            let (Some(key), Some(value)) = (iter.key(), iter.value()) else {
                break;
            };
            if key.len() != 12 {
                return Err(StoreError::Corrupt {
                    what: "petition index key",
                });
            }
            if key[..4] != petition.to_be_bytes() {
                break;
            }
            let first = decode_u64(&key[4..], "petition index key")?;
            if first >= upto {
                break;
            }
            for (start, len) in lifecycle::run_pairs(first, value)? {
                let len = len.min(upto.saturating_sub(start));
                match runs.last_mut() {
                    Some(last) if last.0 + last.1 == start => last.1 += len,
                    _ if len > 0 => runs.push((start, len)),
                    _ => {}
                }
            }
            iter.next();
        }
        iter.status()?;
        Ok(runs)
    }

    /// Up to `limit` stored records from sequence `from` (inclusive) to `upto` (exclusive), in
    /// order: the scan of an invalidation that names no petition.
    pub fn records_from(
        &self,
        from: u64,
        upto: u64,
        limit: usize,
        mut each: impl FnMut(u64, Record<'_>),
    ) -> Result<Option<u64>, StoreError> {
        let start = from.to_be_bytes();
        let mode = IteratorMode::From(&start, Direction::Forward);
        for (read, entry) in self
            .db
            .iterator_cf(self.cf(CF_SIGNATURES), mode)
            .enumerate()
        {
            let (key, value) = entry?;
            let seq = decode_u64(&key, "signature key")?;
            if seq >= upto {
                return Ok(None);
            }
            if read == limit {
                return Ok(Some(seq));
            }
            each(seq, record::decode(&value)?);
        }
        Ok(None)
    }

    /// Calls `each` with up to `limit` `lifecycle` entries from sequence `from` on, in order;
    /// `each` returns false to stop.
    pub fn scan_lifecycle(
        &self,
        from: u64,
        limit: usize,
        mut each: impl FnMut(u64, LifecycleEntry) -> bool,
    ) -> Result<(), StoreError> {
        let start = from.to_be_bytes();
        let mode = IteratorMode::From(&start, Direction::Forward);
        for entry in self.db.iterator_cf(self.cf(CF_LIFECYCLE), mode).take(limit) {
            let (key, value) = entry?;
            if !each(
                decode_u64(&key, "lifecycle key")?,
                LifecycleEntry::decode(&value)?,
            ) {
                break;
            }
        }
        Ok(())
    }

    /// Calls `each` with every `lifecycle` entry, in sequence order (verification).
    pub fn all_lifecycle(
        &self,
        mut each: impl FnMut(u64, LifecycleEntry),
    ) -> Result<(), StoreError> {
        for entry in self
            .db
            .iterator_cf(self.cf(CF_LIFECYCLE), IteratorMode::Start)
        {
            let (key, value) = entry?;
            each(
                decode_u64(&key, "lifecycle key")?,
                LifecycleEntry::decode(&value)?,
            );
        }
        Ok(())
    }

    /// Calls `each` with every pending signer (verification).
    pub fn all_pending_signers(
        &self,
        mut each: impl FnMut(Fingerprint, PendingSigner),
    ) -> Result<(), StoreError> {
        for entry in self
            .db
            .iterator_cf(self.cf(CF_PENDING_SIGNERS), IteratorMode::Start)
        {
            let (key, value) = entry?;
            let fp = <[u8; Fingerprint::BYTES]>::try_from(&key[..]).map_err(|_| {
                StoreError::Corrupt {
                    what: "pending signer key",
                }
            })?;
            each(Fingerprint::from_bytes(fp), PendingSigner::decode(&value)?);
        }
        Ok(())
    }

    /// Calls `each` with every transition, in order; returns the key after the last.
    pub fn all_transitions(&self, mut each: impl FnMut(Transition)) -> Result<u64, StoreError> {
        let mut next = 0;
        for entry in self
            .db
            .iterator_cf(self.cf(CF_TRANSITIONS), IteratorMode::Start)
        {
            let (key, value) = entry?;
            next = decode_u64(&key, "transition key")? + 1;
            each(Transition::decode(&value)?);
        }
        Ok(next)
    }

    /// The sequences of signatures that no longer hold their signer's slot, ascending.
    pub fn load_removed(&self) -> Result<Vec<u64>, StoreError> {
        let mut removed = Vec::new();
        for entry in self
            .db
            .iterator_cf(self.cf(CF_REMOVED), IteratorMode::Start)
        {
            let (key, _) = entry?;
            removed.push(decode_u64(&key, "removed key")?);
        }
        Ok(removed)
    }

    /// The sequences of signatures whose removal was written at or after `from`, a signature
    /// sequence (the sequence the next stored signature took when the removal was written; 0
    /// for removals written before stores kept it), ascending.
    pub fn removed_since(&self, from: u64) -> Result<Vec<u64>, StoreError> {
        let mut removed = Vec::new();
        for entry in self
            .db
            .iterator_cf(self.cf(CF_REMOVED), IteratorMode::Start)
        {
            let (key, value) = entry?;
            let at = match value.len() {
                0 => 0,
                _ => decode_u64(&value, "removed value")?,
            };
            if at >= from {
                removed.push(decode_u64(&key, "removed key")?);
            }
        }
        Ok(removed)
    }

    /// Whether the signature `seq` no longer holds its signer's slot.
    pub fn is_removed(&self, seq: u64) -> Result<bool, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_REMOVED), seq.to_be_bytes())?
            .is_some())
    }

    /// Every stored invalidation job: (id, encoded job).
    pub fn load_jobs(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut jobs = Vec::new();
        for entry in self.db.iterator_cf(self.cf(CF_JOBS), IteratorMode::Start) {
            let (key, value) = entry?;
            jobs.push((decode_u64(&key, "job key")?, value.to_vec()));
        }
        Ok(jobs)
    }

    /// The expiry sweep's cursor (0 on a store that never swept).
    pub fn sweep_cursor(&self) -> Result<u64, StoreError> {
        match self.db.get_cf(self.cf(CF_META), META_SWEEP_CURSOR)? {
            None => Ok(0),
            Some(bytes) => decode_u64(&bytes, "sweep cursor"),
        }
    }

    /// The next free signature sequence: one past the last fingerprint batch.
    pub fn next_signature_seq(&self) -> Result<u64, StoreError> {
        let mut last = self
            .db
            .iterator_cf(self.cf(CF_FINGERPRINTS), IteratorMode::End);
        match last.next() {
            None => Ok(0),
            Some(entry) => {
                let (key, value) = entry?;
                let first = decode_u64(&key, "fingerprint key")?;
                Ok(first + record::fingerprints_in(&value)?)
            }
        }
    }

    /// The fingerprint of signature `seq`, from the batch that holds it (`None`: not stored).
    pub fn fingerprint_at(&self, seq: u64) -> Result<Option<Fingerprint>, StoreError> {
        let key = seq.to_be_bytes();
        let mode = IteratorMode::From(&key, Direction::Reverse);
        let Some(entry) = self.db.iterator_cf(self.cf(CF_FINGERPRINTS), mode).next() else {
            return Ok(None);
        };
        let (key, value) = entry?;
        let first = decode_u64(&key, "fingerprint key")?;
        record::fingerprints_in(&value)?;
        let offset = usize::try_from(seq - first).unwrap_or(usize::MAX);
        let fp = record::fingerprints(&value).nth(offset);
        Ok(fp)
    }

    /// Calls `each` with every fingerprint batch whose first sequence is ≥ `from`, in order.
    pub fn scan_fingerprints(
        &self,
        from: u64,
        mut each: impl FnMut(u64, &[u8]),
    ) -> Result<(), StoreError> {
        let start = from.to_be_bytes();
        let mode = IteratorMode::From(&start, Direction::Forward);
        for entry in self.db.iterator_cf(self.cf(CF_FINGERPRINTS), mode) {
            let (key, value) = entry?;
            record::fingerprints_in(&value)?;
            each(decode_u64(&key, "fingerprint key")?, &value);
        }
        Ok(())
    }

    /// Reads the files of `fingerprints` that hold batches from sequence `from` on, in key
    /// order, so that the page cache has them when a read-back from `from` follows: flushes and
    /// compactions write past the page cache, so after a crash they are on the disk only.
    /// Returns the bytes read. Only a hint: a file gone meanwhile, or an error, reads nothing.
    pub fn warm_fingerprints(&self, from: u64) -> u64 {
        let Ok(mut files) = self.db.live_files() else {
            return 0;
        };
        let from = from.to_be_bytes();
        files.retain(|file| {
            file.column_family_name == CF_FINGERPRINTS
                && file.end_key.as_deref().is_none_or(|end| end >= &from[..])
        });
        files.sort_unstable_by(|a, b| a.start_key.cmp(&b.start_key));
        let mut buffer = vec![0u8; 1 << 20];
        let mut read = 0u64;
        for file in files {
            let path = self.path.join(file.name.trim_start_matches('/'));
            let Ok(mut file) = std::fs::File::open(path) else {
                continue;
            };
            while let Ok(n @ 1..) = std::io::Read::read(&mut file, &mut buffer) {
                read += n as u64;
            }
        }
        read
    }

    /// Calls `each` with every signature record, in sequence order.
    pub fn scan_signatures(&self, mut each: impl FnMut(u64, Record<'_>)) -> Result<(), StoreError> {
        for entry in self
            .db
            .iterator_cf(self.cf(CF_SIGNATURES), IteratorMode::Start)
        {
            let (key, value) = entry?;
            let seq = decode_u64(&key, "signature key")?;
            each(seq, record::decode(&value)?);
        }
        Ok(())
    }
}

const NONE_MS: u64 = u64::MAX;

pub(crate) fn encode_petition(meta: &PetitionMeta) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + meta.id.len() + 25 + 8 * meta.thresholds.len());
    out.push(PETITION_VERSION);
    // Ids are at most 64 bytes and thresholds at most 32 (checked at registration).
    out.push(meta.id.len() as u8);
    out.extend_from_slice(meta.id.as_bytes());
    out.extend_from_slice(&meta.created_at_ms.to_be_bytes());
    out.extend_from_slice(&meta.deadline_ms.unwrap_or(NONE_MS).to_be_bytes());
    out.extend_from_slice(&meta.closed_at_ms.unwrap_or(NONE_MS).to_be_bytes());
    out.push(meta.thresholds.len() as u8);
    for t in &meta.thresholds {
        out.extend_from_slice(&t.to_be_bytes());
    }
    out.push(meta.validation.to_byte());
    out.extend_from_slice(&meta.response_threshold.unwrap_or(NONE_MS).to_be_bytes());
    out.extend_from_slice(&meta.response_due_days.to_be_bytes());
    out
}

fn optional_ms(ms: u64) -> Option<u64> {
    (ms != NONE_MS).then_some(ms)
}

pub(crate) fn decode_petition(bytes: &[u8]) -> Result<PetitionMeta, StoreError> {
    let mut r = Reader::new(bytes, "petition");
    let version = r.u8()?;
    if !matches!(
        version,
        PETITION_VERSION | PETITION_VERSION_2 | PETITION_VERSION_1
    ) {
        return Err(StoreError::Corrupt { what: "petition" });
    }
    let id_len = usize::from(r.u8()?);
    let id = r.str(id_len)?.to_owned();
    let created_at_ms = r.u64()?;
    let deadline_ms = optional_ms(r.u64()?);
    let closed_at_ms = optional_ms(r.u64()?);
    let n = usize::from(r.u8()?);
    let thresholds = (0..n).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
    let validation = if version == PETITION_VERSION_1 {
        Validation::None
    } else {
        Validation::from_byte(r.u8()?).ok_or(StoreError::Corrupt { what: "petition" })?
    };
    let (response_threshold, response_due_days) = if version == PETITION_VERSION {
        (optional_ms(r.u64()?), r.u32()?)
    } else {
        (None, RESPONSE_DUE_DAYS_DEFAULT)
    };
    r.finish()?;
    Ok(PetitionMeta {
        id,
        created_at_ms,
        deadline_ms,
        closed_at_ms,
        thresholds,
        validation,
        response_threshold,
        response_due_days,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(bytes: &[u8]) -> Vec<(u8, u32, i64)> {
        entries(bytes).expect("whole entries").collect()
    }

    #[test]
    fn breakdown_entries_merge_by_adding_and_forget_old_minutes() {
        let gb = Place::new(Place::country_number("GB"), 3);
        let mut a = Entries::default();
        a.place(gb, 2);
        a.place(Place::NONE, 1);
        a.history(60_000 * 100, 3);
        let mut b = Entries::default();
        b.place(gb, -2);
        b.history(60_000 * (100 + u64::from(MINUTES_KEPT)), 1);
        let merged = merge_all(&[a.bytes(), b.bytes()]);
        assert_eq!(
            decoded(&merged),
            vec![
                (ENTRY_PLACE, Place::NONE.0, 1),
                // Minute 100 is 48 hours before the newest: gone. Its hour stays.
                (ENTRY_MINUTE, 100 + MINUTES_KEPT, 1),
                (ENTRY_HOUR, 1, 3),
                (ENTRY_HOUR, (100 + MINUTES_KEPT) / 60, 1),
            ],
            "gb came to zero and is dropped"
        );
        assert!(entries(&merged[1..]).is_none(), "not whole entries");
    }

    #[test]
    fn warming_reads_the_fingerprint_files_from_a_mark_on() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("opens");
        // Two files: batches of 1,000 signatures at sequences 0 and 1,000, each flushed.
        for first in [0u64, 1_000] {
            let mut batch = WriteBatch::default();
            let fingerprints: Vec<u8> = (0..16_000u32).map(|i| (i * 7 + 13) as u8).collect();
            batch.put_cf(store.cf(CF_FINGERPRINTS), first.to_be_bytes(), fingerprints);
            store.write(batch, Durability::Sync).expect("writes");
            store.flush(true).expect("flushes");
        }
        let mut sizes: Vec<u64> = std::fs::read_dir(dir.path())
            .expect("lists")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "sst"))
            .map(|path| std::fs::metadata(path).expect("metadata").len())
            .collect();
        sizes.sort_unstable();
        assert_eq!(sizes.len(), 2, "one file a flush");
        assert_eq!(store.warm_fingerprints(0), sizes.iter().sum::<u64>());
        let second = store.warm_fingerprints(1_000);
        assert!(
            sizes.contains(&second),
            "{second} bytes: the second file only"
        );
        assert_eq!(
            store.warm_fingerprints(1_001),
            0,
            "nothing from 1,001 on: the file ends at 1,000"
        );
    }

    /// What RocksDB's merge gives for `operands` over no value (the operator on a real store).
    fn merge_all(operands: &[&[u8]]) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("opens");
        let mut batch = WriteBatch::default();
        for operand in operands {
            batch.merge_cf(store.cf(CF_BREAKDOWNS), 7u32.to_be_bytes(), operand);
        }
        store.write(batch, Durability::Sync).expect("writes");
        store
            .db
            .get_cf(store.cf(CF_BREAKDOWNS), 7u32.to_be_bytes())
            .expect("reads")
            .expect("merged")
    }

    #[test]
    fn direct_io_probe_leaves_nothing_behind_and_fails_cleanly() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        // The answer depends on the filesystem; either way the directory exists and stays empty.
        let _ = direct_io_works(&data);
        assert_eq!(std::fs::read_dir(&data).expect("created").count(), 0);
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").expect("write");
        assert!(!direct_io_works(&file.join("data")), "a path under a file");
    }

    #[test]
    fn petitions_round_trip() {
        let meta = PetitionMeta {
            id: "revoke-article-50".into(),
            created_at_ms: 1,
            deadline_ms: Some(2),
            closed_at_ms: None,
            thresholds: vec![10_000, 100_000],
            validation: Validation::Email,
            response_threshold: Some(10_000),
            response_due_days: 30,
        };
        let bytes = encode_petition(&meta);
        assert_eq!(decode_petition(&bytes).expect("decodes"), meta);
        assert!(decode_petition(&bytes[..bytes.len() - 1]).is_err());
    }
}
