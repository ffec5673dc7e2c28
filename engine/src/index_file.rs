//! The dedup index saved beside the store at a clean close, so that the next open loads it
//! instead of reading every stored fingerprint back.
//!
//! The file (`index` in the store's directory) names the store's state it belongs to: RocksDB's
//! latest sequence number when it was written, after the store's last write. Every write to the
//! store raises that number, so a file whose number is not the store's at the next open belongs
//! to another state (the store was written after it, or it is not this store's) and is not used.
//! A crash after later writes that lost them all brings the store back to that state exactly,
//! so the file is right for it then too.
//!
//! Layout, integers little-endian: the magic `PETIDX01`, the sequence number (u64), the index
//! ([`Index::write_to`]: shard bits, then each shard's bucket count, entry count and the buckets
//! in use with their positions), and an xxh3-64 of everything before it. It is written to `index.tmp`, synced, and renamed; an
//! open that finds it removes it, used or not (it is good until the next write only).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use crate::index::Index;

const MAGIC: &[u8; 8] = b"PETIDX01";
const NAME: &str = "index";
const TEMPORARY: &str = "index.tmp";

/// Writes `index` as the index of the store in `dir` at RocksDB sequence `sequence`. Returns
/// whether it was written (not if an entry is pending: the index is not at rest).
pub(crate) fn save(dir: &Path, index: &Index, sequence: u64) -> std::io::Result<bool> {
    let temporary = dir.join(TEMPORARY);
    let saved = write(dir, &temporary, index, sequence);
    if !matches!(saved, Ok(true)) {
        // A disk that filled up gets its space back.
        let _ = std::fs::remove_file(&temporary);
    }
    saved
}

fn write(dir: &Path, temporary: &Path, index: &Index, sequence: u64) -> std::io::Result<bool> {
    let file = File::create(temporary)?;
    let mut out = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Xxh3::new(),
    };
    out.write_all(MAGIC)?;
    out.write_all(&sequence.to_le_bytes())?;
    if !index.write_to(&mut out)? {
        return Ok(false);
    }
    let sum = out.hasher.digest();
    let mut file = out.inner.into_inner().map_err(|e| e.into_error())?;
    file.write_all(&sum.to_le_bytes())?;
    file.sync_all()?;
    std::fs::rename(temporary, dir.join(NAME))?;
    File::open(dir)?.sync_all()?;
    Ok(true)
}

/// The index saved for the store in `dir` if it was saved at RocksDB sequence `sequence` with
/// `shard_bits` shard bits, holds at most `capacity` entries and reads back whole; the file is
/// removed either way.
pub(crate) fn load(dir: &Path, sequence: u64, shard_bits: u32, capacity: u64) -> Option<Index> {
    let path = dir.join(NAME);
    let file = File::open(&path).ok()?;
    let loaded = read(file, sequence, shard_bits, capacity);
    let _ = std::fs::remove_file(&path);
    loaded
}

fn read(file: File, sequence: u64, shard_bits: u32, capacity: u64) -> Option<Index> {
    let mut input = Hashing {
        inner: BufReader::with_capacity(1 << 20, file),
        hasher: Xxh3::new(),
    };
    let mut header = [0u8; 16];
    input.read_exact(&mut header).ok()?;
    if &header[..8] != MAGIC || header[8..] != sequence.to_le_bytes() {
        return None;
    }
    let index = Index::read_from(&mut input, capacity).ok()?;
    let sum = input.hasher.digest();
    let mut trailer = [0u8; 8];
    input.inner.read_exact(&mut trailer).ok()?;
    let mut rest = [0u8; 1];
    let whole = matches!(input.inner.read(&mut rest), Ok(0));
    (whole && u64::from_le_bytes(trailer) == sum && index.shard_bits() == shard_bits)
        .then_some(index)
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
    use crate::fingerprint::Fingerprint;
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

    #[test]
    fn an_index_read_back_has_every_entry_and_no_other() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = filled(5_000);
        assert!(save(dir.path(), &index, 42).expect("saves"));
        let loaded = load(dir.path(), 42, 4, 5_000).expect("loads");
        assert_eq!(loaded.usage(), index.usage());
        for i in 0..5_000 {
            assert_eq!(loaded.presence(fp(i)), Presence::Committed);
        }
        assert_eq!(loaded.presence(fp(5_000)), Presence::Absent, "nothing else");
        assert!(!dir.path().join(NAME).exists(), "removed once loaded");
    }

    #[test]
    fn another_sequence_shard_count_or_a_changed_byte_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = filled(1_000);
        for (sequence, bits) in [(41, 4), (42, 5)] {
            assert!(save(dir.path(), &index, 42).expect("saves"));
            assert!(load(dir.path(), sequence, bits, 5_000).is_none());
            assert!(!dir.path().join(NAME).exists(), "removed anyway");
        }
        assert!(save(dir.path(), &index, 42).expect("saves"));
        let path = dir.path().join(NAME);
        let mut bytes = std::fs::read(&path).expect("reads");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&path, &bytes).expect("writes");
        assert!(load(dir.path(), 42, 4, 5_000).is_none());
        // Cut short, or with bytes after the sum.
        assert!(save(dir.path(), &index, 42).expect("saves"));
        let bytes = std::fs::read(&path).expect("reads");
        std::fs::write(&path, &bytes[..bytes.len() - 1]).expect("writes");
        assert!(load(dir.path(), 42, 4, 5_000).is_none());
        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(&path, &longer).expect("writes");
        assert!(load(dir.path(), 42, 4, 5_000).is_none());
        std::fs::write(&path, &bytes).expect("writes");
        assert!(
            load(dir.path(), 42, 4, 5_000).is_some(),
            "the file as written loads"
        );
    }

    #[test]
    fn an_index_with_a_pending_entry_is_not_saved() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = filled(100);
        index.insert(fp(1_000), true);
        assert!(!save(dir.path(), &index, 1).expect("runs"));
        assert!(!dir.path().join(NAME).exists());
        assert!(!dir.path().join(TEMPORARY).exists());
    }
}
