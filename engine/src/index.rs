//! The dedup index: which `(petition, signer)` fingerprints have been accepted.
//!
//! Layout. The index is split into `2^shard_bits` shards chosen by the top bits of the
//! fingerprint (so a hot petition's signers spread over every shard), each a `Mutex` around one
//! open-addressing table. A table is an array of 64-byte buckets (one cache line each) holding
//! five 96-bit keys, a pending bit per slot and an overflow count. The shard bits are implicit, so
//! an entry remembers 96 + `shard_bits` (12 by default: 108) bits of the fingerprint in 12.8 bytes
//! of bucket space.
//!
//! Probing. A key's home bucket comes from its bits; an insert that finds the home bucket full
//! walks to the next bucket and bumps the overflow count of every full bucket it passes. A lookup
//! stops at the first bucket whose overflow count is zero, so a miss usually costs one cache line,
//! and a removal (rollback of a failed write) decrements the counts it passed: no tombstones.
//!
//! Growth. A shard grows by 1.25× when it passes 90% load. Shards are small (a 100 M index has
//! ~24,000 entries a shard), so a resize stalls one shard for a fraction of a millisecond, and
//! shards fill evenly, so the memory overhead stays near the load factor's.
//!
//! Prefetch. Admission fingerprints a whole batch first and then inserts it, asking the index to
//! prefetch the home bucket of the fingerprint a few places ahead, so the cache
//! misses of several inserts overlap instead of being paid one after another. The bucket address
//! comes from a per-shard hint (base address and bucket count, 16 bytes a shard, read without the
//! lock); a hint that is stale because the shard just grew only wastes that one prefetch.
//!
//! Pending. An entry is inserted *pending* when a signature is admitted and made *committed* once
//! its write is durable (or removed if the write failed). A second submission that meets a pending
//! entry must wait for that outcome before it may say "duplicate".

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::fingerprint::Fingerprint;

/// How many inserts ahead admission (and the commit) prefetches the index: enough to overlap
/// several DRAM misses, few enough that the prefetched lines are still in L1 when their insert
/// comes.
pub(crate) const PREFETCH_DISTANCE: usize = 16;

const SLOTS_PER_BUCKET: usize = 5;
/// Grow a shard when its entries exceed this share of its slots.
const LOAD_MAX_PERCENT: usize = 90;
/// Pre-sizing aims at this load, leaving headroom for the uneven fill of shards (at 100 M entries
/// a shard holds ~24,400 ± 160).
const LOAD_PRESIZE_PERCENT: usize = 85;
/// A shard grows to `old * 5 / 4` buckets.
const GROWTH_NUMERATOR: usize = 5;
const GROWTH_DENOMINATOR: usize = 4;
const BUCKETS_MIN: usize = 4;
/// Default number of shard bits: 4,096 shards.
pub const SHARD_BITS_DEFAULT: u32 = 12;

type Key = [u32; 3];
const EMPTY: Key = [0; 3];

#[derive(Clone, Copy, bytemuck::Zeroable, bytemuck::Pod)]
#[repr(C, align(64))]
struct Bucket {
    keys: [Key; SLOTS_PER_BUCKET],
    /// Entries whose home bucket is at or before this one but which live after it. Saturates and
    /// then sticks at `u16::MAX`, which only makes lookups walk a little further.
    overflow: u16,
    /// Bit `i` set: slot `i` holds a pending (not yet durable) entry.
    pending: u8,
    _pad: u8,
}

const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

impl Bucket {
    const EMPTY: Bucket = Bucket {
        keys: [EMPTY; SLOTS_PER_BUCKET],
        overflow: 0,
        pending: 0,
        _pad: 0,
    };

    /// Holds a key or is passed over by one: not all zero.
    fn is_used(&self) -> bool {
        self.overflow != 0 || self.keys.iter().any(|key| *key != EMPTY)
    }
}

/// The state of a fingerprint in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presence {
    Absent,
    Pending,
    Committed,
}

/// What an insert found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insert {
    /// The fingerprint was absent and is now present.
    Inserted,
    /// The fingerprint was already present (pending or committed); nothing changed.
    Present(Presence),
}

/// Tables of at least this many bytes get their own memory mapping (see [`Buckets`]).
const MAPPED_BYTES_MIN: usize = 64 << 10;

/// A zeroed anonymous mapping for `len` values of `T`, advised to use transparent huge pages
/// (only advice: without them a table works the same, a little slower). Out of address space or
/// memory it fails as a `Vec` would.
pub(crate) fn huge_page_map<T>(len: usize) -> memmap2::MmapMut {
    let Ok(map) = memmap2::MmapMut::map_anon(len * std::mem::size_of::<T>()) else {
        let layout = std::alloc::Layout::array::<T>(len).unwrap_or(std::alloc::Layout::new::<T>());
        std::alloc::handle_alloc_error(layout);
    };
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    map
}

/// A table's bucket array. A large one lives in its own anonymous memory mapping, advised to use
/// transparent huge pages: at 100 M entries the index is 1.5 GB of random accesses, and with 4 KiB
/// pages nearly every one of them also misses the TLB, which made the bucket prefetch the hottest
/// instruction of admission. The kernel merges neighbouring mappings with the same advice, so
/// 2 MiB pages span the small per-shard tables too. The mapping arrives zeroed, which is
/// [`Bucket::EMPTY`], so a new table costs no initialising pass either. Small tables stay on the
/// heap so that an engine with few signatures does not hold a page per shard.
enum Buckets {
    Heap(Vec<Bucket>),
    Mapped(memmap2::MmapMut),
}

impl Buckets {
    fn empty(buckets: usize) -> Buckets {
        let bytes = buckets * std::mem::size_of::<Bucket>();
        if bytes < MAPPED_BYTES_MIN {
            return Buckets::Heap(vec![Bucket::EMPTY; buckets]);
        }
        Buckets::Mapped(huge_page_map::<Bucket>(buckets))
    }

    /// Faults a mapped table in now rather than page by page under its first inserts: a
    /// gigabyte takes 0.3-0.9 s to fault in on a KVM guest, and each fault would be taken under
    /// a shard lock with acknowledgements waiting behind it. Called once every shard's table is
    /// made, when the kernel has merged their mappings: populated one by one as they are made,
    /// each mapping was smaller than a huge page and got none (0 kB of `AnonHugePages` against
    /// 286 MiB for a 20 M index). Only advice: before Linux 5.14 the pages fault in as they are
    /// first written.
    fn populate(&self) {
        #[cfg(target_os = "linux")]
        if let Buckets::Mapped(map) = self {
            let _ = map.advise(memmap2::Advice::PopulateWrite);
        }
    }
}

impl std::ops::Deref for Buckets {
    type Target = [Bucket];

    #[inline]
    fn deref(&self) -> &[Bucket] {
        match self {
            Buckets::Heap(v) => v,
            // A mapping is page-aligned and a whole number of buckets long, so the cast cannot
            // fail.
            Buckets::Mapped(m) => bytemuck::cast_slice(m),
        }
    }
}

impl std::ops::DerefMut for Buckets {
    #[inline]
    fn deref_mut(&mut self) -> &mut [Bucket] {
        match self {
            Buckets::Heap(v) => v,
            Buckets::Mapped(m) => bytemuck::cast_slice_mut(m),
        }
    }
}

struct Table {
    buckets: Buckets,
    len: usize,
}

#[inline]
fn split(fp: Fingerprint, shard_bits: u32) -> (usize, Key, u64) {
    let bits = fp.0;
    let shard = if shard_bits == 0 {
        0
    } else {
        (bits >> (128 - shard_bits)) as usize
    };
    let mut key = [bits as u32, (bits >> 32) as u32, (bits >> 64) as u32];
    if key == EMPTY {
        // All-zero marks an empty slot. Folding this one key onto another costs nothing
        // measurable (2^-96) and keeps the table free of extra state.
        key[0] = 1;
    }
    (shard, key, position_hash(key))
}

#[inline]
fn position_hash(key: Key) -> u64 {
    (u64::from(key[2]) << 32) | u64::from(key[1])
}

impl Table {
    fn with_buckets(buckets: usize) -> Table {
        Table {
            buckets: Buckets::empty(buckets.max(BUCKETS_MIN)),
            len: 0,
        }
    }

    #[inline]
    fn home(&self, position: u64) -> usize {
        // Lemire's fast range reduction: any bucket count works, no power of two needed.
        ((u128::from(position) * self.buckets.len() as u128) >> 64) as usize
    }

    #[inline]
    fn next(&self, bucket: usize) -> usize {
        if bucket + 1 == self.buckets.len() {
            0
        } else {
            bucket + 1
        }
    }

    /// Finds `key`: its bucket and slot.
    #[inline]
    fn find(&self, key: Key, position: u64) -> Option<(usize, usize)> {
        let mut b = self.home(position);
        loop {
            let bucket = &self.buckets[b];
            for (s, slot) in bucket.keys.iter().enumerate() {
                if *slot == key {
                    return Some((b, s));
                }
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = self.next(b);
        }
    }

    fn presence(&self, key: Key, position: u64) -> Presence {
        match self.find(key, position) {
            None => Presence::Absent,
            Some((b, s)) if self.buckets[b].pending & (1 << s) != 0 => Presence::Pending,
            Some(_) => Presence::Committed,
        }
    }

    fn insert(&mut self, key: Key, position: u64, pending: bool) -> Insert {
        let presence = self.presence(key, position);
        if presence != Presence::Absent {
            return Insert::Present(presence);
        }
        if (self.len + 1) * 100 > self.buckets.len() * SLOTS_PER_BUCKET * LOAD_MAX_PERCENT {
            let grown = self.buckets.len() * GROWTH_NUMERATOR / GROWTH_DENOMINATOR + 1;
            self.resize(grown);
        }
        self.place(key, position, pending);
        self.len += 1;
        Insert::Inserted
    }

    /// Puts a key known to be absent into the first free slot from its home bucket on.
    fn place(&mut self, key: Key, position: u64, pending: bool) {
        let mut b = self.home(position);
        loop {
            let bucket = &mut self.buckets[b];
            if let Some(s) = bucket.keys.iter().position(|slot| *slot == EMPTY) {
                bucket.keys[s] = key;
                if pending {
                    bucket.pending |= 1 << s;
                }
                return;
            }
            bucket.overflow = bucket.overflow.saturating_add(1);
            b = self.next(b);
        }
    }

    fn resize(&mut self, buckets: usize) {
        let old = std::mem::replace(&mut self.buckets, Buckets::empty(buckets));
        for bucket in old.iter() {
            for (s, key) in bucket.keys.iter().enumerate() {
                if *key != EMPTY {
                    self.place(*key, position_hash(*key), bucket.pending & (1 << s) != 0);
                }
            }
        }
    }

    fn commit(&mut self, key: Key, position: u64) -> bool {
        match self.find(key, position) {
            Some((b, s)) => {
                let was_pending = self.buckets[b].pending & (1 << s) != 0;
                self.buckets[b].pending &= !(1 << s);
                was_pending
            }
            None => false,
        }
    }

    fn remove(&mut self, key: Key, position: u64) -> bool {
        let Some((found, s)) = self.find(key, position) else {
            return false;
        };
        self.buckets[found].keys[s] = EMPTY;
        self.buckets[found].pending &= !(1 << s);
        let mut b = self.home(position);
        while b != found {
            let overflow = &mut self.buckets[b].overflow;
            if *overflow != u16::MAX {
                *overflow -= 1;
            }
            b = self.next(b);
        }
        self.len -= 1;
        true
    }

    fn bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Bucket>()
    }
}

#[repr(align(128))]
struct Shard {
    table: Mutex<Table>,
}

/// Where a shard's buckets are, for prefetching only: never dereferenced, and written under the
/// shard lock whenever the table is (re)allocated.
#[derive(Default)]
struct Hint {
    base: AtomicUsize,
    buckets: AtomicUsize,
}

impl Hint {
    fn publish(&self, table: &Table) {
        self.base
            .store(table.buckets.as_ptr() as usize, Ordering::Relaxed);
        self.buckets.store(table.buckets.len(), Ordering::Relaxed);
    }
}

/// Asks the CPU to bring the cache line at `address` into every cache level. A hint only.
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn prefetch_line(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch instruction only hints the cache: it never faults and never reads or
    // writes memory as far as the program can tell, whatever the address (stale, freed or
    // unmapped), so any pointer is fine. The intrinsic needs SSE, which every x86_64 CPU has
    // (it is in the target's baseline features).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// The sharded dedup index. Every method takes one shard lock for a few hundred nanoseconds at
/// most and never holds it across I/O.
pub(crate) struct Index {
    shards: Box<[Shard]>,
    hints: Box<[Hint]>,
    shard_bits: u32,
}

impl Index {
    /// An index with `2^shard_bits` shards, pre-sized for `capacity` entries.
    pub fn new(shard_bits: u32, capacity: u64) -> Index {
        assert!(shard_bits <= 20, "shard_bits {shard_bits} is out of range");
        let shards = 1usize << shard_bits;
        let buckets = Self::buckets_for(capacity, shards);
        let hints: Box<[Hint]> = (0..shards).map(|_| Hint::default()).collect();
        let shards = (0..shards)
            .map(|s| {
                let table = Table::with_buckets(buckets);
                hints[s].publish(&table);
                Shard {
                    table: Mutex::new(table),
                }
            })
            .collect();
        let index = Index {
            shards,
            hints,
            shard_bits,
        };
        index.populate();
        index
    }

    /// Faults every shard's mapped table in (see [`Buckets::populate`]).
    fn populate(&self) {
        for shard in self.shards.iter() {
            shard.table.lock().buckets.populate();
        }
    }

    fn buckets_for(capacity: u64, shards: usize) -> usize {
        let per_shard = capacity.div_ceil(shards as u64) as usize;
        (per_shard * 100).div_ceil(SLOTS_PER_BUCKET * LOAD_PRESIZE_PERCENT)
    }

    /// Grows every shard so that `capacity` entries in all fit without a resize, and faults
    /// the grown tables in (after all of them are made, as in [`Index::new`]).
    pub fn reserve(&self, capacity: u64) {
        let buckets = Self::buckets_for(capacity, self.shards.len());
        let mut grown = false;
        for (shard, hint) in self.shards.iter().zip(self.hints.iter()) {
            let mut table = shard.table.lock();
            if table.buckets.len() < buckets {
                table.resize(buckets);
                hint.publish(&table);
                grown = true;
            }
        }
        if grown {
            self.populate();
        }
    }

    #[inline]
    fn locate(&self, fp: Fingerprint) -> (&Mutex<Table>, Key, u64) {
        let (shard, key, position) = split(fp, self.shard_bits);
        (&self.shards[shard].table, key, position)
    }

    /// Starts bringing into cache the home bucket of `fp`, the cache line an insert misses on.
    /// Call it a few inserts ahead; it changes nothing. (Prefetching the shard's lock line as
    /// well measured no better: the 512 KiB of shard headers mostly stay in L2.)
    #[inline]
    pub fn prefetch(&self, fp: Fingerprint) {
        let (shard, _, position) = split(fp, self.shard_bits);
        let hint = &self.hints[shard];
        let base = hint.base.load(Ordering::Relaxed);
        let buckets = hint.buckets.load(Ordering::Relaxed);
        let home = ((u128::from(position) * buckets as u128) >> 64) as usize;
        prefetch_line(
            base.wrapping_add(home.wrapping_mul(std::mem::size_of::<Bucket>())) as *const u8,
        );
    }

    /// `fps` in order, each one's home bucket prefetched [`PREFETCH_DISTANCE`] fingerprints
    /// before its turn: for a loop that inserts or commits each in turn.
    pub fn prefetching<'a, I>(&'a self, fps: I) -> impl Iterator<Item = Fingerprint> + 'a
    where
        I: Iterator<Item = Fingerprint> + Clone + 'a,
    {
        let mut ahead = fps.clone();
        for fp in ahead.by_ref().take(PREFETCH_DISTANCE) {
            self.prefetch(fp);
        }
        fps.inspect(move |_| {
            if let Some(next) = ahead.next() {
                self.prefetch(next);
            }
        })
    }

    /// Inserts `fp` unless present, as pending or committed.
    #[inline]
    pub fn insert(&self, fp: Fingerprint, pending: bool) -> Insert {
        let (shard, key, position) = split(fp, self.shard_bits);
        let mut table = self.shards[shard].table.lock();
        let buckets = table.buckets.len();
        let inserted = table.insert(key, position, pending);
        if table.buckets.len() != buckets {
            self.hints[shard].publish(&table);
        }
        inserted
    }

    /// The state of `fp`.
    pub fn presence(&self, fp: Fingerprint) -> Presence {
        let (table, key, position) = self.locate(fp);
        table.lock().presence(key, position)
    }

    /// Marks a pending `fp` committed; returns whether it was pending.
    pub fn commit(&self, fp: Fingerprint) -> bool {
        let (table, key, position) = self.locate(fp);
        table.lock().commit(key, position)
    }

    /// Removes `fp`; returns whether it was present.
    pub fn remove(&self, fp: Fingerprint) -> bool {
        let (table, key, position) = self.locate(fp);
        table.lock().remove(key, position)
    }

    /// Writes every shard to `out`: the shard bits, then each shard's bucket count, entry count
    /// and number of buckets in use, and each bucket in use (neither empty nor passed over) as
    /// its position (u32) and its 64 bytes as in memory; integers little-endian. A pre-sized,
    /// mostly empty index writes little.
    ///
    /// Pending entries are left out: their writes are not durable yet. So an index that
    /// signatures are being admitted to may be written: each shard is copied under its lock
    /// (one shard's table of memory, for a moment) and written from the copy, and holds the
    /// entries committed when it was copied. A slot emptied this way leaves the overflow counts
    /// it passed one too high, which only makes lookups walk a little further.
    pub fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        out.write_all(&self.shard_bits.to_le_bytes())?;
        let mut copy: Vec<Bucket> = Vec::new();
        let mut bytes: Vec<u8> = Vec::new();
        for shard in self.shards.iter() {
            let len = {
                let table = shard.table.lock();
                copy.clear();
                copy.extend_from_slice(&table.buckets);
                table.len
            };
            let mut left_out = 0;
            for bucket in copy.iter_mut().filter(|bucket| bucket.pending != 0) {
                for s in 0..SLOTS_PER_BUCKET {
                    if bucket.pending & (1 << s) != 0 {
                        bucket.keys[s] = EMPTY;
                        left_out += 1;
                    }
                }
                bucket.pending = 0;
            }
            let used = copy.iter().filter(|b| b.is_used()).count();
            // One write per shard: the bytes are hashed on their way out, best in large runs.
            bytes.clear();
            bytes.extend_from_slice(&(copy.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&((len - left_out) as u64).to_le_bytes());
            bytes.extend_from_slice(&(used as u64).to_le_bytes());
            for (position, bucket) in copy.iter().enumerate() {
                if bucket.is_used() {
                    bytes.extend_from_slice(&(position as u32).to_le_bytes());
                    bytes.extend_from_slice(bytemuck::bytes_of(bucket));
                }
            }
            out.write_all(&bytes)?;
        }
        Ok(())
    }

    /// Reads an index that [`Index::write_to`] wrote, of at most `capacity` entries (a shard
    /// may have twice the buckets an index pre-sized for them would have, which bounds what a
    /// corrupt bucket count allocates). `InvalidData` if it is not such an index.
    pub fn read_from(input: &mut impl std::io::Read, capacity: u64) -> std::io::Result<Index> {
        let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        let mut word = [0u8; 8];
        let mut bits = [0u8; 4];
        input.read_exact(&mut bits)?;
        let shard_bits = u32::from_le_bytes(bits);
        if shard_bits > 20 {
            return Err(invalid("shard bits out of range"));
        }
        let count = 1usize << shard_bits;
        let mut shards = Vec::with_capacity(count);
        let hints: Box<[Hint]> = (0..count).map(|_| Hint::default()).collect();
        let buckets_max = 2 * Self::buckets_for(capacity, count).max(BUCKETS_MIN) as u64;
        // A bucket in use as written: its position (u32) and its bytes.
        const USED_BYTES: usize = 4 + std::mem::size_of::<Bucket>();
        let mut bytes: Vec<u8> = Vec::new();
        // Every shard's table, made before any is written: only mappings made one after another
        // merge into one that 2 MiB pages can span (see `Buckets::populate`); each filled as it
        // was made, the index loaded on 4 KiB pages. A saved index's shards all have the first
        // one's bucket count unless one grew on its own, which gets a table of its own.
        let mut made: Vec<Buckets> = Vec::new();
        for hint in hints.iter() {
            input.read_exact(&mut word)?;
            let buckets = u64::from_le_bytes(word);
            input.read_exact(&mut word)?;
            let len = u64::from_le_bytes(word);
            if !(BUCKETS_MIN as u64..=buckets_max).contains(&buckets) {
                return Err(invalid("bucket count out of range"));
            }
            if len > buckets * SLOTS_PER_BUCKET as u64 {
                return Err(invalid("entry count out of range"));
            }
            input.read_exact(&mut word)?;
            let used = u64::from_le_bytes(word);
            if used > buckets || buckets > u64::from(u32::MAX) {
                return Err(invalid("bucket count out of range"));
            }
            if shards.is_empty() {
                made = (0..count)
                    .map(|_| Buckets::empty(buckets as usize))
                    .collect();
            }
            let mut table = Table {
                buckets: made
                    .pop_if(|made| made.len() == buckets as usize)
                    .unwrap_or_else(|| Buckets::empty(buckets as usize)),
                len: len as usize,
            };
            // One read per shard, as it was written.
            bytes.clear();
            bytes.resize(used as usize * USED_BYTES, 0);
            input.read_exact(&mut bytes)?;
            for entry in bytes.chunks_exact(USED_BYTES) {
                let (position, stored) = entry.split_at(4);
                let position = u32::from_le_bytes(position.try_into().expect("4 bytes"));
                let bucket = table
                    .buckets
                    .get_mut(position as usize)
                    .ok_or_else(|| invalid("bucket position out of range"))?;
                bytemuck::bytes_of_mut(bucket).copy_from_slice(stored);
                if bucket.pending != 0 {
                    return Err(invalid("a pending entry"));
                }
            }
            hint.publish(&table);
            shards.push(Shard {
                table: Mutex::new(table),
            });
        }
        Ok(Index {
            shards: shards.into_boxed_slice(),
            hints,
            shard_bits,
        })
    }

    /// The number of shard bits.
    pub fn shard_bits(&self) -> u32 {
        self.shard_bits
    }

    /// Takes every shard's table from `other`, which has as many shards, shard by shard.
    pub fn replace_with(&self, other: Index) {
        assert_eq!(
            self.shard_bits, other.shard_bits,
            "indexes of another shape"
        );
        for ((shard, hint), theirs) in self
            .shards
            .iter()
            .zip(self.hints.iter())
            .zip(other.shards.into_vec())
        {
            let mut table = shard.table.lock();
            *table = theirs.table.into_inner();
            hint.publish(&table);
        }
    }

    /// Entries and bytes held, summed over the shards (takes each shard lock in turn).
    pub fn usage(&self) -> (u64, u64) {
        let mut entries = 0u64;
        let mut bytes = (self.shards.len()
            * (std::mem::size_of::<Shard>() + std::mem::size_of::<Hint>()))
            as u64;
        for shard in self.shards.iter() {
            let table = shard.table.lock();
            entries += table.len as u64;
            bytes += table.bytes() as u64;
        }
        (entries, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn fp(n: u64) -> Fingerprint {
        // Spread test keys over all 128 bits, as real fingerprints are.
        Fingerprint(xxhash_rust::xxh3::xxh3_128(&n.to_le_bytes()))
    }

    #[test]
    fn insert_commit_remove_against_a_model() {
        // Small shards and few buckets force overflow chains, wrap-around and many resizes.
        let index = check_against_model(2, 5_000);
        assert!(index
            .shards
            .iter()
            .all(|shard| matches!(shard.table.lock().buckets, Buckets::Heap(_))));
    }

    #[test]
    fn mapped_tables_behave_like_heap_ones() {
        // One shard of ~30,000 entries grows from the heap into its own mapping.
        let index = check_against_model(0, 60_000);
        assert!(matches!(
            index.shards[0].table.lock().buckets,
            Buckets::Mapped(_)
        ));
    }

    fn check_against_model(shard_bits: u32, keys: u64) -> Index {
        let index = Index::new(shard_bits, 0);
        let mut model: HashMap<u64, Presence> = HashMap::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..200_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let n = state % keys;
            let expected = *model.get(&n).unwrap_or(&Presence::Absent);
            match state >> 60 {
                0..=7 => {
                    let pending = state & 1 == 0;
                    let got = index.insert(fp(n), pending);
                    if expected == Presence::Absent {
                        assert_eq!(got, Insert::Inserted, "step {step}");
                        let now = if pending {
                            Presence::Pending
                        } else {
                            Presence::Committed
                        };
                        model.insert(n, now);
                    } else {
                        assert_eq!(got, Insert::Present(expected), "step {step}");
                    }
                }
                8..=10 => {
                    let was_pending = index.commit(fp(n));
                    assert_eq!(was_pending, expected == Presence::Pending, "step {step}");
                    if expected != Presence::Absent {
                        model.insert(n, Presence::Committed);
                    }
                }
                11..=13 => {
                    assert_eq!(
                        index.remove(fp(n)),
                        expected != Presence::Absent,
                        "step {step}"
                    );
                    model.remove(&n);
                }
                _ => assert_eq!(index.presence(fp(n)), expected, "step {step}"),
            }
        }
        for (n, presence) in &model {
            assert_eq!(index.presence(fp(*n)), *presence);
        }
        assert_eq!(index.usage().0, model.len() as u64);
        index
    }

    #[test]
    fn presized_index_stays_within_sixteen_bytes_per_entry() {
        let entries = 200_000u64;
        let index = Index::new(6, entries);
        let before = index.usage().1;
        for n in 0..entries {
            assert_eq!(index.insert(fp(n), false), Insert::Inserted);
        }
        let (len, bytes) = index.usage();
        assert_eq!(len, entries);
        assert_eq!(bytes, before, "a pre-sized index must not resize");
        let per_entry = bytes as f64 / entries as f64;
        assert!(per_entry <= 16.0, "{per_entry} bytes per entry");
    }

    /// The resident bytes of the memory mapping that holds `address`, from `/proc/self/smaps`.
    #[cfg(target_os = "linux")]
    fn resident_bytes_of_mapping(address: usize) -> u64 {
        smaps_bytes(address, "Rss:")
    }

    /// The bytes a line of `/proc/self/smaps` (`field`, e.g. `Rss:`) gives for the memory
    /// mapping that holds `address`.
    #[cfg(target_os = "linux")]
    fn smaps_bytes(address: usize, field: &str) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read smaps");
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().unwrap_or("");
            if let Some((start, end)) = range.split_once('-') {
                if let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                ) {
                    inside = (start..end).contains(&address);
                    continue;
                }
            }
            if let (true, Some(kb)) = (inside, line.strip_prefix(field)) {
                let kb = kb.trim().trim_end_matches("kB").trim();
                return kb.parse::<u64>().expect("a smaps line in kB") * 1024;
            }
        }
        panic!("no mapping holds {address:#x}");
    }

    /// An index read back from its file lies on 2 MiB pages where the kernel gives them to
    /// mappings advised so: its shards' tables, each smaller than a huge page, are all made
    /// before any is written. Written as each was made, they held 0 kB of `AnonHugePages`.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_index_read_back_lies_on_huge_pages() {
        // 16 shards of about 1 MiB (like a 400 M index's 1.5 MB), one table in each mapping.
        let entries = 1_000_000u64;
        let index = Index::new(4, entries);
        for n in 0..entries {
            index.insert(fp(n), false);
        }
        let mut file = Vec::new();
        index.write_to(&mut file).expect("writes");
        drop(index);
        let loaded = Index::read_from(&mut file.as_slice(), entries).expect("reads");
        assert_eq!(loaded.usage().0, entries);
        for n in (0..entries).step_by(997) {
            assert_eq!(loaded.presence(fp(n)), Presence::Committed);
        }
        let first = loaded.shards[0].table.lock();
        assert!(matches!(first.buckets, Buckets::Mapped(_)));
        assert!(
            first.bytes() < 2 << 20,
            "{} bytes: a shard is smaller than a huge page",
            first.bytes()
        );
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
        // Where the kernel has transparent huge pages for advised mappings; elsewhere the read
        // back above is all there is to check.
        if thp.is_ok_and(|thp| thp.contains("[always]") || thp.contains("[madvise]")) {
            let huge = smaps_bytes(first.buckets.as_ptr() as usize, "AnonHugePages:");
            assert!(
                huge >= 2 << 20,
                "{huge} bytes of the loaded index on huge pages"
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_mapped_table_is_resident_when_it_is_made_not_at_its_first_inserts() {
        // One shard pre-sized for 400,000 entries: a mapping of about 6 MB, of which nothing has
        // been written yet.
        let index = Index::new(0, 400_000);
        let table = index.shards[0].table.lock();
        assert!(matches!(table.buckets, Buckets::Mapped(_)));
        let bytes = table.bytes() as u64;
        let resident = resident_bytes_of_mapping(table.buckets.as_ptr() as usize);
        // The kernel may merge the mapping with a neighbour, so it can hold more than the table.
        assert!(
            resident >= bytes,
            "{resident} of the table's {bytes} bytes are resident before any insert"
        );
    }

    #[test]
    fn zero_fingerprint_is_a_normal_key() {
        let index = Index::new(0, 0);
        assert_eq!(index.insert(Fingerprint(0), false), Insert::Inserted);
        assert_eq!(index.presence(Fingerprint(0)), Presence::Committed);
        assert_eq!(
            index.insert(Fingerprint(0), false),
            Insert::Present(Presence::Committed)
        );
    }
}
