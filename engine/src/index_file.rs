//! The dedup index saved beside the store, so that an open loads it and reads back only the
//! signatures stored after it instead of every stored fingerprint.
//!
//! It is written at a clean close, and in the background while the engine runs each time
//! `Config::index_snapshot_signatures` more signatures were stored (see
//! `engine::run_index_snapshots`), so that an open after kill -9 reads back at most about that
//! many.
//!
//! What a saved index holds is named by its *mark* `from`, a signature sequence: every
//! signature below `from` was durable and its entry committed before the index was copied, and
//! every removal (an expiry) written before the writer reached `from` had taken its entry out.
//! Entries of later signatures and later removals may or may not be in it, but no entry that
//! was not durable is (pending entries are left out, [`Index::write_to`]). An open brings it up
//! to the store (`writer::catch_up_index`): it takes out the signatures whose removal was
//! written at or after `from`, then puts in every stored signature from `from` on that was not
//! removed. The file also names its store: the fingerprint of signature `from - 1`, which the
//! store must hold, and `through`, the mark when the copy was finished, which the store must
//! have reached (a store restored from an older copy has not).
//!
//! Layout, integers little-endian: the magic `PETIDX02`, `from` (u64), the sample fingerprint
//! (16 bytes, zero when `from` is 0), the index ([`Index::write_to`]), `through` (u64), and an
//! xxh3-64 of everything before it. It is written to `index.tmp` (synced every
//! [`SYNC_BYTES`] on the way, so a large one never leaves gigabytes of dirty pages for one
//! sync to push out in front of the log's; and, saved under ingest, idle after each synced
//! chunk: see [`Pace`]), synced, and renamed over `index`; a write that is
//! stopped or fails removes its temporary file. The file stays after it is loaded: it is good
//! for every later state of the same store.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::Xxh3;

use crate::error::StoreError;
use crate::fingerprint::Fingerprint;
use crate::index::Index;
use crate::store::Store;

const MAGIC: &[u8; 8] = b"PETIDX02";
const NAME: &str = "index";
const TEMPORARY: &str = "index.tmp";
/// A file being written is synced every this many bytes.
const SYNC_BYTES: u64 = 8 << 20;
/// A paced save idles this many times as long as a chunk took to write and sync.
const IDLE_PER_BUSY: u32 = 3;
/// The longest a paced save idles after one chunk, so that a stop is seen soon.
const IDLE_MAX: Duration = Duration::from_millis(250);

/// How a save shares the disk with the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// As fast as the disk takes it: the save of a clean close, with nothing waiting.
    Full,
    /// The background save, under ingest: after each synced chunk it idles three times as long
    /// as the chunk took to write and sync, so the log's syncs meet at most one chunk's
    /// writeback and have the disk to themselves at least three quarters of the time. Unpaced,
    /// the save of a 1.6 GB index at 100 M signatures held a half-load run's acknowledgements
    /// up for seconds (BENCHMARKS P7).
    Shared,
}

/// Whether an index file is saved in `dir`.
pub(crate) fn exists(dir: &Path) -> bool {
    dir.join(NAME).is_file()
}

/// An index read back from its file, with the mark it was saved at.
pub(crate) struct Saved {
    pub index: Index,
    /// Every signature below it is in the index (see the module docs).
    pub from: u64,
    sample: Option<Fingerprint>,
    through: u64,
}

impl Saved {
    /// Whether the index was saved for `store`: the store holds the sample fingerprint as
    /// signature `from - 1`, and has stored at least `through` signatures.
    pub fn belongs_to(&self, store: &Store) -> Result<bool, StoreError> {
        if store.next_signature_seq()? < self.through {
            return Ok(false);
        }
        Ok(sample(store, self.from)? == self.sample)
    }
}

/// What names the store of an index saved at mark `from`: the fingerprint of its signature
/// `from - 1` (none when `from` is 0).
pub(crate) fn sample(store: &Store, from: u64) -> Result<Option<Fingerprint>, StoreError> {
    match from.checked_sub(1) {
        Some(last) => store.fingerprint_at(last),
        None => Ok(None),
    }
}

/// Saves `index`, at rest (every signature below `from` in it and nothing after), beside
/// `store`: the save of a clean close. Returns whether it was saved; a failure only costs the
/// next open its reading back.
pub(crate) fn save_at_rest(store: &Store, index: &Index, from: u64) -> bool {
    let Ok(sample) = sample(store, from) else {
        return false;
    };
    matches!(
        save(
            store.path(),
            index,
            from,
            sample,
            || from,
            &|| false,
            Pace::Full
        ),
        Ok(true)
    )
}

/// Writes `index` as the index of the store in `dir` at mark `from`, whose signature `from - 1`
/// has the fingerprint `sample`; `through` gives the mark once the index is written. Stops
/// (returning `false`, nothing left behind) as soon as `stop` says so, checked at least every
/// megabyte.
pub(crate) fn save(
    dir: &Path,
    index: &Index,
    from: u64,
    sample: Option<Fingerprint>,
    through: impl FnOnce() -> u64,
    stop: &dyn Fn() -> bool,
    pace: Pace,
) -> std::io::Result<bool> {
    let temporary = dir.join(TEMPORARY);
    let saved = write(dir, &temporary, index, (from, sample, through), stop, pace);
    let saved = match saved {
        Err(_) if stop() => Ok(false),
        saved => saved,
    };
    if !matches!(saved, Ok(true)) {
        // A disk that filled up gets its space back.
        let _ = std::fs::remove_file(&temporary);
    }
    saved
}

fn write(
    dir: &Path,
    temporary: &Path,
    index: &Index,
    (from, sample, through): (u64, Option<Fingerprint>, impl FnOnce() -> u64),
    stop: &dyn Fn() -> bool,
    pace: Pace,
) -> std::io::Result<bool> {
    let file = Syncing {
        file: File::create(temporary)?,
        unsynced: 0,
        stop,
        pace,
        chunk_started: Instant::now(),
    };
    let mut out = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Xxh3::new(),
    };
    out.write_all(MAGIC)?;
    out.write_all(&from.to_le_bytes())?;
    out.write_all(&sample.map_or([0; Fingerprint::BYTES], Fingerprint::to_bytes))?;
    index.write_to(&mut out)?;
    out.write_all(&through().to_le_bytes())?;
    let sum = out.hasher.digest();
    let mut file = out.inner.into_inner().map_err(|e| e.into_error())?.file;
    file.write_all(&sum.to_le_bytes())?;
    file.sync_all()?;
    if stop() {
        return Ok(false);
    }
    std::fs::rename(temporary, dir.join(NAME))?;
    File::open(dir)?.sync_all()?;
    Ok(true)
}

/// The index saved for the store in `dir`, if there is one with `shard_bits` shard bits, sized
/// for at most `capacity` entries or twice its mark, whichever is more, that reads back whole.
/// Whether it is this store's is [`Saved::belongs_to`]'s to say. A temporary file left by a
/// write that was cut short is removed.
pub(crate) fn load(dir: &Path, shard_bits: u32, capacity: u64) -> Option<Saved> {
    remove_temporary(dir);
    read_saved(dir, shard_bits, capacity)
}

/// [`load`] without removing the temporary file: for a process that does not hold the store's
/// lock yet, and so may not touch a save another process is writing.
pub(crate) fn read_saved(dir: &Path, shard_bits: u32, capacity: u64) -> Option<Saved> {
    let file = File::open(dir.join(NAME)).ok()?;
    read(file, shard_bits, capacity)
}

/// Removes the temporary file left by a write that was cut short.
pub(crate) fn remove_temporary(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(TEMPORARY));
}

/// The mark of the index saved in `dir`, from its header alone (the file is not checked).
pub(crate) fn saved_mark(dir: &Path) -> Option<u64> {
    let mut header = [0u8; 16];
    File::open(dir.join(NAME))
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    mark(&header)
}

/// The mark a file's first 16 bytes name: the magic, then `from`; `None` without the magic.
fn mark(header: &[u8]) -> Option<u64> {
    if header.get(..8)? != MAGIC {
        return None;
    }
    Some(u64::from_le_bytes(header.get(8..16)?.try_into().ok()?))
}

fn read(file: File, shard_bits: u32, capacity: u64) -> Option<Saved> {
    let mut input = Hashing {
        inner: BufReader::with_capacity(1 << 20, file),
        hasher: Xxh3::new(),
    };
    let mut header = [0u8; 16 + Fingerprint::BYTES];
    input.read_exact(&mut header).ok()?;
    let from = mark(&header)?;
    let sample = <[u8; Fingerprint::BYTES]>::try_from(&header[16..])
        .ok()
        .map(Fingerprint::from_bytes)
        .filter(|_| from > 0);
    // The bound only keeps a corrupt bucket count from mapping absurd memory: twice the mark
    // leaves room for the entries stored while the copy was made, and for shards that grew.
    let index = Index::read_from(&mut input, capacity.max(from.saturating_mul(2))).ok()?;
    let mut word = [0u8; 8];
    input.read_exact(&mut word).ok()?;
    let through = u64::from_le_bytes(word);
    let sum = input.hasher.digest();
    input.inner.read_exact(&mut word).ok()?;
    let mut rest = [0u8; 1];
    let whole = matches!(input.inner.read(&mut rest), Ok(0));
    (whole
        && u64::from_le_bytes(word) == sum
        && index.shard_bits() == shard_bits
        && through >= from)
        .then_some(Saved {
            index,
            from,
            sample,
            through,
        })
}

/// The file under the writer: syncs every [`SYNC_BYTES`] (then idles, if paced), and fails
/// every write once `stop` says so.
struct Syncing<'a> {
    file: File,
    unsynced: u64,
    stop: &'a dyn Fn() -> bool,
    pace: Pace,
    chunk_started: Instant,
}

impl Write for Syncing<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if (self.stop)() {
            return Err(std::io::Error::other("stopped"));
        }
        let written = self.file.write(bytes)?;
        self.unsynced += written as u64;
        if self.unsynced >= SYNC_BYTES {
            self.file.sync_data()?;
            self.unsynced = 0;
            if self.pace == Pace::Shared {
                std::thread::sleep((self.chunk_started.elapsed() * IDLE_PER_BUSY).min(IDLE_MAX));
            }
            self.chunk_started = Instant::now();
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A reader or writer that hashes the bytes passing through it.
struct Hashing<T> {
    inner: T,
    hasher: Xxh3,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, bytes: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(bytes)?;
        self.hasher.update(&bytes[..read]);
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Presence;

    fn fp(i: u64) -> Fingerprint {
        Fingerprint(xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()))
    }

    fn filled(n: u64) -> Index {
        let index = Index::new(4, n);
        for i in 0..n {
            index.insert(fp(i), false);
        }
        index
    }

    fn go_on() -> bool {
        false
    }

    fn save_at(dir: &Path, index: &Index, from: u64) -> bool {
        save(
            dir,
            index,
            from,
            Some(fp(from)),
            || from + 7,
            &go_on,
            Pace::Full,
        )
        .expect("saves")
    }

    #[test]
    fn a_save_paced_over_several_synced_chunks_reads_back_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        // About 24 MB: two synced chunks and more, with an idle after each.
        let index = filled(1_500_000);
        let saved = save(dir.path(), &index, 5, None, || 5, &go_on, Pace::Shared);
        assert!(saved.expect("saves"));
        let bytes = std::fs::metadata(dir.path().join(NAME))
            .expect("saved")
            .len();
        assert!(
            bytes > 2 * SYNC_BYTES,
            "{bytes} bytes: more than two chunks"
        );
        let loaded = load(dir.path(), 4, 1_500_000).expect("loads");
        assert_eq!((loaded.from, loaded.index.usage().0), (5, 1_500_000));
        for i in (0..1_500_000).step_by(997) {
            assert_eq!(loaded.index.presence(fp(i)), Presence::Committed);
        }
    }

    #[test]
    fn an_index_read_back_has_every_entry_and_no_other_and_its_mark() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = filled(5_000);
        assert!(save_at(dir.path(), &index, 42));
        let saved = load(dir.path(), 4, 5_000).expect("loads");
        assert_eq!(saved.index.usage(), index.usage());
        for i in 0..5_000 {
            assert_eq!(saved.index.presence(fp(i)), Presence::Committed);
        }
        assert_eq!(saved.index.presence(fp(5_000)), Presence::Absent);
        assert_eq!(
            (saved.from, saved.sample, saved.through),
            (42, Some(fp(42)), 49)
        );
        assert!(dir.path().join(NAME).exists(), "kept once loaded");
        assert_eq!(saved_mark(dir.path()), Some(42));
        assert_eq!(saved_mark(&dir.path().join("elsewhere")), None);
        let empty = save(
            dir.path(),
            &Index::new(4, 0),
            0,
            None,
            || 0,
            &go_on,
            Pace::Full,
        );
        assert!(empty.expect("saves"));
        let saved = load(dir.path(), 4, 5_000).expect("loads");
        assert_eq!((saved.from, saved.sample), (0, None));
    }

    #[test]
    fn pending_entries_are_left_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = filled(2_000);
        for i in 2_000..2_100 {
            index.insert(fp(i), true);
        }
        assert!(save_at(dir.path(), &index, 1));
        let saved = load(dir.path(), 4, 5_000).expect("loads");
        assert_eq!(saved.index.usage().0, 2_000);
        for i in 0..2_100 {
            let want = if i < 2_000 {
                Presence::Committed
            } else {
                Presence::Absent
            };
            assert_eq!(saved.index.presence(fp(i)), want, "{i}");
        }
        // The loaded index takes those signers again and finds the others.
        for i in 0..2_100 {
            let inserted = saved.index.insert(fp(i), false) == crate::index::Insert::Inserted;
            assert_eq!(inserted, i >= 2_000, "{i}");
        }
        assert_eq!(
            index.presence(fp(2_000)),
            Presence::Pending,
            "the index written is unchanged"
        );
    }

    #[test]
    fn another_shard_count_or_a_changed_byte_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = filled(1_000);
        assert!(save_at(dir.path(), &index, 42));
        assert!(load(dir.path(), 5, 5_000).is_none());
        let path = dir.path().join(NAME);
        let bytes = std::fs::read(&path).expect("reads");
        let mut changed = bytes.clone();
        let middle = changed.len() / 2;
        changed[middle] ^= 1;
        std::fs::write(&path, &changed).expect("writes");
        assert!(load(dir.path(), 4, 5_000).is_none());
        // Cut short, or with bytes after the sum.
        std::fs::write(&path, &bytes[..bytes.len() - 1]).expect("writes");
        assert!(load(dir.path(), 4, 5_000).is_none());
        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(&path, &longer).expect("writes");
        assert!(load(dir.path(), 4, 5_000).is_none());
        std::fs::write(&path, &bytes).expect("writes");
        assert!(
            load(dir.path(), 4, 5_000).is_some(),
            "the file as written loads"
        );
    }

    #[test]
    fn a_stopped_write_leaves_the_last_file_and_no_temporary() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(save_at(dir.path(), &filled(100), 3));
        // Stopped at once, and stopped after the first megabyte.
        let big = filled(200_000);
        let calls = std::cell::Cell::new(0);
        let later = || {
            calls.set(calls.get() + 1);
            calls.get() > 1
        };
        for stop in [&(|| true) as &dyn Fn() -> bool, &later] {
            let saved = save(dir.path(), &big, 9, None, || 9, stop, Pace::Shared).expect("runs");
            assert!(!saved);
            assert!(!dir.path().join(TEMPORARY).exists());
            let kept = load(dir.path(), 4, 5_000).expect("the last file stays");
            assert_eq!((kept.from, kept.index.usage().0), (3, 100));
        }
        assert!(calls.get() > 1, "the write was under way when stopped");
        // One left by a kill is removed by the next load.
        std::fs::write(dir.path().join(TEMPORARY), b"cut short").expect("writes");
        assert!(load(dir.path(), 4, 5_000).is_some());
        assert!(!dir.path().join(TEMPORARY).exists());
    }
}
