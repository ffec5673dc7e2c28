//! A petition's counts by place, in as few bytes as its counts allow.
//!
//! Most petitions are small: a few hundred signatures spread over nearly as many places (the
//! UK's 650 constituencies), most places counted once or twice. At eight bytes a place (a `u32`
//! place and a `u32` count) the counts by place were most of the memory a petition took. So a
//! petition's counts start **compact**: ascending by place, in chunks of at most
//! [`CHUNK_ENTRIES`] entries. A chunk is a header (its first place, `u32` little-endian, and the
//! length of its body, one byte) and a body of entries, each the distance from the place before
//! it in the chunk (0 for the first) and the count:
//!
//! | first byte  | then                            | distance     | count    |
//! |-------------|---------------------------------|--------------|----------|
//! | `0dddd ccc` | nothing                         | `dddd`: 0–15 | `ccc`: 1–7 |
//! | `1ddddddd`  | the count (LEB128)              | 0–126        | any      |
//! | `11111111`  | the distance, the count (LEB128) | any         | any      |
//!
//! A place's region ids are dense and handed out in order of first sight, so within a country
//! the distances are small: a petition counted once in each of 170 places takes about 200 bytes.
//! A change finds its chunk by its headers. One change to a chunk is made in place: the entry
//! re-encoded, or one entry inserted or taken out with the next one's distance re-encoded.
//! Several changes, or a new first place, rewrite only that chunk (split when it outgrows
//! [`CHUNK_ENTRIES`]).
//!
//! A petition with many signatures a place (the viral one) turns **wide**: a sorted `Vec` of
//! `place << 32 | count`, changed by binary search or one merge, as fast as the engine's hot
//! path needs. It turns wide only once it has [`WIDE_PER_PLACE`] signatures a place, so then
//! the wide form takes about a byte a signature. It never turns back.

use std::cell::RefCell;

use crate::place::Place;

/// Most entries of one chunk.
const CHUNK_ENTRIES: usize = 32;
/// Entries a chunk gets when its entries must be split (room to grow before the next split).
const SPLIT_ENTRIES: usize = 24;
/// Bytes of a chunk's header: its first place and its body's length.
const HEADER: usize = 5;
/// Most bytes of one entry: the tag and two LEB128 `u32`s.
const ENTRY_MAX: usize = 11;
/// Most bytes of a chunk's body.
const BODY_MAX: usize = u8::MAX as usize;
/// The compact form is never made wide while shorter than this.
const WIDE_FROM: usize = 64;
/// The compact form turns wide once the petition has this many signatures per place.
const WIDE_PER_PLACE: u64 = 8;

/// A petition's counts by place (see the module documentation); no place with a zero count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PlaceCounts {
    Compact {
        bytes: Vec<u8>,
        /// How many places it counts.
        entries: u32,
    },
    Wide(Vec<u64>),
}

impl Default for PlaceCounts {
    fn default() -> PlaceCounts {
        PlaceCounts::Compact {
            bytes: Vec::new(),
            entries: 0,
        }
    }
}

thread_local! {
    /// The chunks a change writes, before they replace the one it changed.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl PlaceCounts {
    /// Adds `deltas` (ascending by place, each place once) to the counts; `signatures` is the
    /// petition's count after them, which decides when the compact form turns wide.
    pub fn add_sorted(&mut self, deltas: &[(Place, i64)], signatures: u64) {
        if deltas.is_empty() {
            return;
        }
        debug_assert!(deltas.windows(2).all(|w| w[0].0 < w[1].0), "sorted, once");
        match self {
            PlaceCounts::Wide(entries) => wide_add_sorted(entries, deltas),
            PlaceCounts::Compact { bytes, entries } => {
                *entries = compact_add_sorted(bytes, *entries, deltas);
                if bytes.len() >= WIDE_FROM && signatures >= WIDE_PER_PLACE * u64::from(*entries) {
                    let wide: Vec<u64> = self
                        .iter()
                        .map(|(place, count)| u64::from(place.0) << 32 | count)
                        .collect();
                    *self = PlaceCounts::Wide(wide);
                }
            }
        }
    }

    /// The count of each place, ascending by place.
    pub fn iter(&self) -> Iter<'_> {
        match self {
            PlaceCounts::Compact { bytes, .. } => Iter::Compact {
                bytes,
                at: 0,
                end: 0,
                prev: 0,
            },
            PlaceCounts::Wide(entries) => Iter::Wide(entries.iter()),
        }
    }

    /// Bytes held (capacity, not length).
    pub fn bytes(&self) -> u64 {
        match self {
            PlaceCounts::Compact { bytes, .. } => bytes.capacity() as u64,
            PlaceCounts::Wide(entries) => entries.capacity() as u64 * 8,
        }
    }

    /// Releases spare capacity.
    pub fn shrink(&mut self) {
        match self {
            PlaceCounts::Compact { bytes, .. } => bytes.shrink_to_fit(),
            PlaceCounts::Wide(entries) => entries.shrink_to_fit(),
        }
    }

    #[cfg(test)]
    pub fn is_wide(&self) -> bool {
        matches!(self, PlaceCounts::Wide(_))
    }
}

/// The entries of [`PlaceCounts::iter`].
pub(crate) enum Iter<'a> {
    Compact {
        bytes: &'a [u8],
        /// The next entry's first byte.
        at: usize,
        /// The end of the current chunk's body.
        end: usize,
        /// The place of the entry before, in this chunk.
        prev: u32,
    },
    Wide(std::slice::Iter<'a, u64>),
}

impl Iterator for Iter<'_> {
    type Item = (Place, u64);

    #[inline]
    fn next(&mut self) -> Option<(Place, u64)> {
        match self {
            Iter::Wide(entries) => entries
                .next()
                .map(|&e| (Place((e >> 32) as u32), e & 0xffff_ffff)),
            Iter::Compact {
                bytes,
                at,
                end,
                prev,
            } => {
                if *at == *end {
                    if *at >= bytes.len() {
                        return None;
                    }
                    let (base, body) = header(bytes, *at);
                    *prev = base;
                    *at += HEADER;
                    *end = *at + body;
                }
                let (distance, count) = read_entry(bytes, at);
                *prev += distance;
                Some((Place(*prev), u64::from(count)))
            }
        }
    }
}

/// The first place and the body length of the chunk at `at`.
#[inline]
fn header(bytes: &[u8], at: usize) -> (u32, usize) {
    let mut base = [0u8; 4];
    base.copy_from_slice(&bytes[at..at + 4]);
    (u32::from_le_bytes(base), usize::from(bytes[at + 4]))
}

#[inline]
fn read_leb(bytes: &[u8], at: &mut usize) -> u32 {
    let mut value = 0u32;
    let mut shift = 0;
    loop {
        let byte = bytes[*at];
        *at += 1;
        value |= u32::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return value;
        }
        shift += 7;
    }
}

/// Reads the entry at `at` (moving past it): its distance and count.
#[inline]
fn read_entry(bytes: &[u8], at: &mut usize) -> (u32, u32) {
    let tag = bytes[*at];
    *at += 1;
    match tag {
        0..=0x7f => (u32::from(tag >> 3), u32::from(tag & 7)),
        0x80..=0xfe => (u32::from(tag & 0x7f), read_leb(bytes, at)),
        0xff => {
            let distance = read_leb(bytes, at);
            (distance, read_leb(bytes, at))
        }
    }
}

fn put_leb(out: &mut [u8; ENTRY_MAX], len: &mut usize, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out[*len] = byte;
            *len += 1;
            return;
        }
        out[*len] = byte | 0x80;
        *len += 1;
    }
}

/// The bytes of one entry.
#[inline]
fn encode_entry(distance: u32, count: u32, out: &mut [u8; ENTRY_MAX]) -> usize {
    debug_assert!(count > 0);
    if distance < 16 && count < 8 {
        out[0] = (distance << 3 | count) as u8;
        return 1;
    }
    let mut len = 1;
    if distance < 0x7f {
        out[0] = 0x80 | distance as u8;
    } else {
        out[0] = 0xff;
        put_leb(out, &mut len, distance);
    }
    put_leb(out, &mut len, count);
    len
}

/// Writes entries as chunks of at most `per_chunk` entries and [`BODY_MAX`] bytes.
struct ChunkWriter<'a> {
    out: &'a mut Vec<u8>,
    per_chunk: usize,
    /// Where the open chunk's header is, and how many entries it has (0: none open).
    header_at: usize,
    entries: usize,
    prev: u32,
}

impl ChunkWriter<'_> {
    #[inline]
    fn push(&mut self, place: u32, count: u32) {
        let mut entry = [0u8; ENTRY_MAX];
        if self.entries > 0 {
            let len = encode_entry(place - self.prev, count, &mut entry);
            let body = self.out.len() - self.header_at - HEADER;
            if self.entries < self.per_chunk && body + len <= BODY_MAX {
                self.out.extend_from_slice(&entry[..len]);
                self.entries += 1;
                self.prev = place;
                return;
            }
            self.close();
        }
        self.header_at = self.out.len();
        self.out.extend_from_slice(&place.to_le_bytes());
        self.out.push(0);
        let len = encode_entry(0, count, &mut entry);
        self.out.extend_from_slice(&entry[..len]);
        self.entries = 1;
        self.prev = place;
    }

    fn close(&mut self) {
        if self.entries > 0 {
            let body = self.out.len() - self.header_at - HEADER;
            debug_assert!(body <= BODY_MAX);
            self.out[self.header_at + 4] = body as u8;
            self.entries = 0;
        }
    }
}

/// Merges the chunk `old` (a header and its body; empty for none) with `deltas` (all of them
/// belong to it) into `out`: no chunk if nothing is left, more than one if it outgrew one.
/// Returns how many entries it had and how many it wrote.
fn merge_chunk(old: &[u8], deltas: &[(Place, i64)], out: &mut Vec<u8>) -> (usize, usize) {
    let mut entries = [(0u32, 0u32); CHUNK_ENTRIES];
    let mut n = 0;
    if !old.is_empty() {
        let (base, body) = header(old, 0);
        let mut at = HEADER;
        let mut place = base;
        while at < HEADER + body {
            let (distance, count) = read_entry(old, &mut at);
            place += distance;
            entries[n] = (place, count);
            n += 1;
        }
    }
    let per_chunk = if n + deltas.len() <= CHUNK_ENTRIES {
        CHUNK_ENTRIES
    } else {
        SPLIT_ENTRIES
    };
    let mut writer = ChunkWriter {
        out,
        per_chunk,
        header_at: 0,
        entries: 0,
        prev: 0,
    };
    let mut written = 0;
    merge_counts(entries[..n].iter().copied(), deltas, |place, count| {
        writer.push(place, count);
        written += 1;
    });
    writer.close();
    (n, written)
}

/// Applies one change to the chunk at `start..end` without decoding the rest of it: a count
/// changed (its entry re-encoded), a place added after the chunk's first (and the next entry's
/// distance re-encoded), or a place other than the first taken out. Returns the change in the
/// number of places, or `None` when the chunk must be rewritten (its first place changes, or it
/// would outgrow its limits).
#[inline]
fn change_in_place(
    bytes: &mut Vec<u8>,
    start: usize,
    end: usize,
    (place, delta): (Place, i64),
) -> Option<i32> {
    let (base, body) = header(bytes, start);
    if place.0 < base || delta == 0 {
        return None;
    }
    let mut entry = [0u8; ENTRY_MAX];
    let mut next = [0u8; ENTRY_MAX];
    let mut at = start + HEADER;
    let mut last: Option<u32> = None;
    let mut entries = 0;
    while at < end {
        let from = at;
        let (distance, count) = read_entry(bytes, &mut at);
        let here = last.unwrap_or(base) + distance;
        if here < place.0 {
            last = Some(here);
            entries += 1;
            continue;
        }
        if here == place.0 {
            let count = i64::from(count) + delta;
            if count > i64::from(u32::MAX) || count < 0 {
                return None;
            }
            if count > 0 {
                let len = encode_entry(distance, count as u32, &mut entry);
                if len == at - from {
                    bytes[from..at].copy_from_slice(&entry[..len]);
                    return Some(0);
                }
                return splice_body(bytes, start, body, from..at, &entry[..len]).then_some(0);
            }
            // Taken out: the next entry (if any) now counts its distance from the one before.
            let last = last?;
            if at == end {
                return splice_body(bytes, start, body, from..at, &[]).then_some(-1);
            }
            let mut to = at;
            let (after, after_count) = read_entry(bytes, &mut to);
            let len = encode_entry(here - last + after, after_count, &mut next);
            return splice_body(bytes, start, body, from..to, &next[..len]).then_some(-1);
        }
        // A new place between `last` and `here`: both entries re-encoded.
        let last = last?;
        if delta < 0 || delta > i64::from(u32::MAX) {
            return None;
        }
        let mut rest = at;
        let mut total = entries + 1;
        while rest < end {
            read_entry(bytes, &mut rest);
            total += 1;
        }
        if total >= CHUNK_ENTRIES {
            return None;
        }
        let len = encode_entry(place.0 - last, delta as u32, &mut entry);
        let len_next = encode_entry(here - place.0, count, &mut next);
        let mut both = [0u8; 2 * ENTRY_MAX];
        both[..len].copy_from_slice(&entry[..len]);
        both[len..len + len_next].copy_from_slice(&next[..len_next]);
        return splice_body(bytes, start, body, from..at, &both[..len + len_next]).then_some(1);
    }
    // After the chunk's last place.
    let last = last?;
    if entries >= CHUNK_ENTRIES || delta < 0 || delta > i64::from(u32::MAX) {
        return None;
    }
    let len = encode_entry(place.0 - last, delta as u32, &mut entry);
    splice_body(bytes, start, body, end..end, &entry[..len]).then_some(1)
}

/// Replaces `range` of the body of the chunk at `start` (of length `body`) by `with`, unless
/// the body would pass [`BODY_MAX`]; whether it did.
fn splice_body(
    bytes: &mut Vec<u8>,
    start: usize,
    body: usize,
    range: std::ops::Range<usize>,
    with: &[u8],
) -> bool {
    let body = body + with.len() - range.len();
    if body > BODY_MAX {
        return false;
    }
    if with.len() > range.len() {
        reserve_a_quarter(bytes, with.len() - range.len());
    }
    bytes.splice(range, with.iter().copied());
    bytes[start + 4] = body as u8;
    true
}

/// Adds sorted `deltas` to the compact form of `entries` places: each chunk they touch is
/// rewritten in place. Returns how many places it counts after.
fn compact_add_sorted(bytes: &mut Vec<u8>, mut entries: u32, deltas: &[(Place, i64)]) -> u32 {
    SCRATCH.with(|scratch| {
        let out = &mut *scratch.borrow_mut();
        let mut at = 0;
        let mut d = 0;
        while d < deltas.len() {
            let place = deltas[d].0 .0;
            // The chunk that takes `place`: the last whose first place is not above it (or
            // the first chunk), and the first place of the chunk after it.
            let (start, end, next) = loop {
                if at >= bytes.len() {
                    break (at, at, None);
                }
                let end = at + HEADER + header(bytes, at).1;
                let next = (end < bytes.len()).then(|| header(bytes, end).0);
                match next {
                    Some(next) if next <= place => at = end,
                    _ => break (at, end, next),
                }
            };
            let taken = match next {
                Some(next) => d + deltas[d..].partition_point(|&(p, _)| p.0 < next),
                None => deltas.len(),
            };
            if taken == d + 1 && start < end {
                if let Some(change) = change_in_place(bytes, start, end, deltas[d]) {
                    entries = entries.wrapping_add_signed(change);
                    at = start;
                    d = taken;
                    continue;
                }
            }
            out.clear();
            let (before, after) = merge_chunk(&bytes[start..end], &deltas[d..taken], out);
            entries = entries + after as u32 - before as u32;
            let grown = (start + out.len() + (bytes.len() - end)).saturating_sub(bytes.len());
            if grown > 0 {
                reserve_a_quarter(bytes, grown);
            }
            bytes.splice(start..end, out.iter().copied());
            at = start + out.len();
            d = taken;
        }
        if out.capacity() > 64 * 1024 {
            *out = Vec::new();
        }
    });
    if bytes.len() * 2 < bytes.capacity() && bytes.capacity() > 64 {
        bytes.shrink_to(bytes.len() + bytes.len() / 4);
    }
    entries
}

/// Makes room for `more` bytes, growing by a quarter rather than doubling: most petitions are
/// small, and their places are most of what their breakdown holds.
fn reserve_a_quarter<T>(entries: &mut Vec<T>, more: usize) {
    let needed = entries.len() + more;
    if needed > entries.capacity() {
        let target = (entries.capacity() + entries.capacity() / 4)
            .max(needed)
            .max(4);
        entries.reserve_exact(target - entries.len());
    }
}

/// Merges counts ascending by place with `deltas` (ascending, each place once) and hands each
/// place whose count is not zero after, ascending, to `emit`: the one merge of both forms.
#[inline]
fn merge_counts(
    old: impl Iterator<Item = (u32, u32)>,
    deltas: &[(Place, i64)],
    mut emit: impl FnMut(u32, u32),
) {
    let mut old = old.peekable();
    let mut deltas = deltas.iter().peekable();
    loop {
        let (place, count) = match (old.peek(), deltas.peek()) {
            (Some(&(a, count)), Some(&&(b, delta))) if a == b.0 => {
                old.next();
                deltas.next();
                (a, i64::from(count) + delta)
            }
            (Some(&(a, count)), Some(&&(b, _))) if a < b.0 => {
                old.next();
                (a, i64::from(count))
            }
            (Some(&(a, count)), None) => {
                old.next();
                (a, i64::from(count))
            }
            (_, Some(&&(b, delta))) => {
                deltas.next();
                (b.0, delta)
            }
            (None, None) => return,
        };
        debug_assert!(
            (0..=i64::from(u32::MAX)).contains(&count),
            "a place's count stays in 0..2^32: {count}"
        );
        if count > 0 {
            emit(place, count.min(i64::from(u32::MAX)) as u32);
        }
    }
}

/// Adds `delta` to the count of `place` in the wide form.
fn wide_add(entries: &mut Vec<u64>, place: Place, delta: i64) {
    if delta == 0 {
        return;
    }
    let key = u64::from(place.0) << 32;
    let at = entries.partition_point(|&e| e < key);
    match entries.get(at) {
        Some(&e) if e >> 32 == key >> 32 => {
            let count = (e & 0xffff_ffff) as i64 + delta;
            debug_assert!(
                (0..=i64::from(u32::MAX)).contains(&count),
                "a place's count stays in 0..2^32: {count}"
            );
            let count = count.clamp(0, i64::from(u32::MAX)) as u64;
            if count == 0 {
                entries.remove(at);
            } else {
                entries[at] = key | count;
            }
        }
        _ => {
            debug_assert!(delta > 0, "a count falls below zero");
            if delta > 0 {
                reserve_a_quarter(entries, 1);
                entries.insert(at, key | delta.min(i64::from(u32::MAX)) as u64);
            }
        }
    }
}

/// Adds sorted deltas to the wide form: one by one when they are few against the places, else
/// in one pass over both lists.
fn wide_add_sorted(entries: &mut Vec<u64>, deltas: &[(Place, i64)]) {
    if deltas.len() < 16 || deltas.len() * 8 < entries.len() {
        for &(place, delta) in deltas {
            wide_add(entries, place, delta);
        }
        return;
    }
    let old = std::mem::take(entries);
    let mut merged = Vec::with_capacity(old.len() + deltas.len());
    let capacity = merged.capacity();
    let old_counts = old.iter().map(|&e| ((e >> 32) as u32, e as u32));
    merge_counts(old_counts, deltas, |place, count| {
        merged.push(u64::from(place) << 32 | u64::from(count));
    });
    if merged.capacity() == capacity && merged.len() * 5 < capacity * 4 {
        merged.shrink_to(merged.len() + merged.len() / 4);
    }
    *entries = merged;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A small deterministic generator (xorshift), so a failure names its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn model_deltas(
        rng: &mut Rng,
        model: &BTreeMap<u32, i64>,
        places: &[u32],
        n: usize,
    ) -> Vec<(Place, i64)> {
        let mut deltas: BTreeMap<u32, i64> = BTreeMap::new();
        for _ in 0..n {
            let place = places[rng.below(places.len() as u64) as usize];
            let have = model.get(&place).copied().unwrap_or(0) + deltas.get(&place).unwrap_or(&0);
            // Mostly additions, large ones now and then, and some removals down to zero.
            let delta = match rng.below(10) {
                0 => -(rng.below(have as u64 + 1) as i64),
                1 => rng.below(100_000) as i64 + 1,
                _ => rng.below(3) as i64 + 1,
            };
            *deltas.entry(place).or_default() += delta;
        }
        deltas
            .into_iter()
            .filter(|&(_, d)| d != 0)
            .map(|(p, d)| (Place(p), d))
            .collect()
    }

    #[test]
    fn compact_and_wide_keep_the_same_counts_as_a_model() {
        let gb = Place::country_number("GB");
        let us = Place::country_number("US");
        let (mut wide, mut most_chunks) = (0, 0);
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            // Places: dense regions of two countries, sparse ones, the extremes.
            let mut places: Vec<u32> = (0..700).map(|r| Place::new(gb, r).0).collect();
            places.extend((0..50).map(|r| Place::new(us, r * 997).0));
            places.extend([0, 1, u32::MAX, u32::MAX - 1, Place::new(676, 0).0]);
            let mut model: BTreeMap<u32, i64> = BTreeMap::new();
            let mut counts = PlaceCounts::default();
            for round in 0..60 {
                let n = if round % 7 == 0 {
                    400
                } else {
                    1 + rng.below(12) as usize
                };
                let deltas = model_deltas(&mut rng, &model, &places, n);
                for &(place, delta) in &deltas {
                    *model.entry(place.0).or_default() += delta;
                }
                model.retain(|_, c| *c != 0);
                let signatures: i64 = model.values().sum();
                // Seeds above 20 never give a hint, so they stay compact.
                let hint = if seed > 20 { 0 } else { signatures as u64 };
                counts.add_sorted(&deltas, hint);
                let got: Vec<(u32, i64)> = counts.iter().map(|(p, c)| (p.0, c as i64)).collect();
                let want: Vec<(u32, i64)> = model.iter().map(|(&p, &c)| (p, c)).collect();
                assert_eq!(got, want, "seed {seed}, round {round}");
                if let PlaceCounts::Compact { bytes, entries } = &counts {
                    most_chunks = most_chunks.max(check_chunks(bytes));
                    assert_eq!(*entries as usize, model.len(), "seed {seed}, round {round}");
                }
            }
            if seed > 20 {
                assert!(!counts.is_wide(), "seed {seed}: no hint, never wide");
            }
            wide += usize::from(counts.is_wide());
        }
        assert!(wide > 0, "some petitions turned wide");
        assert!(most_chunks > 10, "chunks split: at most {most_chunks}");
    }

    /// Every chunk is whole, holds 1..=CHUNK_ENTRIES entries and the chunks ascend; returns
    /// how many there are.
    fn check_chunks(bytes: &[u8]) -> usize {
        let mut chunks = 0;
        let mut at = 0;
        let mut last: Option<u32> = None;
        while at < bytes.len() {
            let (base, body) = header(bytes, at);
            assert!(body > 0, "no empty chunk");
            let end = at + HEADER + body;
            assert!(end <= bytes.len(), "a chunk within the bytes");
            let mut p = HEADER + at;
            let mut place = base;
            let mut n = 0;
            while p < end {
                let (distance, count) = read_entry(bytes, &mut p);
                assert!(count > 0, "no zero count");
                assert!(n == 0 || distance > 0, "ascending within a chunk");
                assert!(n > 0 || distance == 0, "a chunk starts at its base");
                place += distance;
                assert!(last.is_none_or(|l| l < place), "ascending across chunks");
                last = Some(place);
                n += 1;
            }
            assert_eq!(p, end, "entries end with the body");
            assert!((1..=CHUNK_ENTRIES).contains(&n));
            at = end;
            chunks += 1;
        }
        chunks
    }

    #[test]
    fn a_place_counted_once_takes_about_a_byte() {
        let gb = Place::country_number("GB");
        let mut counts = PlaceCounts::default();
        // Every fourth of 650 regions, counted once or twice.
        for r in (0..650u32).step_by(4) {
            let count = 1 + i64::from(r % 8 / 4);
            counts.add_sorted(&[(Place::new(gb, r), count)], 0);
        }
        assert_eq!(counts.iter().count(), 163);
        let PlaceCounts::Compact { bytes, .. } = &counts else {
            panic!("small counts stay compact");
        };
        // One byte an entry and a five-byte header for every 16-32 of them.
        assert!(bytes.len() <= 163 + 11 * HEADER, "{} bytes", bytes.len());
        assert!(counts.bytes() <= 260, "{} bytes held", counts.bytes());
    }

    #[test]
    fn many_signatures_a_place_turn_it_wide_and_it_stays_wide() {
        let gb = Place::country_number("GB");
        let mut counts = PlaceCounts::default();
        let deltas: Vec<(Place, i64)> = (0..600).map(|r| (Place::new(gb, r), 1)).collect();
        counts.add_sorted(&deltas, 600);
        assert!(!counts.is_wide(), "one signature a place: compact");
        let more: Vec<(Place, i64)> = (0..600).map(|r| (Place::new(gb, r), 100)).collect();
        counts.add_sorted(&more, 60_600);
        assert!(counts.is_wide(), "a hundred a place: wide");
        assert!(counts.bytes() <= 60_600, "at most a byte a signature");
        let back: Vec<(Place, i64)> = (0..600).map(|r| (Place::new(gb, r), -100)).collect();
        counts.add_sorted(&back, 600);
        assert!(counts.is_wide());
        assert!(counts.iter().all(|(_, c)| c == 1));
        assert_eq!(counts.iter().count(), 600);
    }

    #[test]
    fn entries_round_trip_at_every_form_boundary() {
        for (distance, count) in [
            (0, 1),
            (15, 7),
            (16, 7),
            (15, 8),
            (126, 1),
            (127, 1),
            (0, u32::MAX),
            (u32::MAX, u32::MAX),
            (1 << 22, 3),
        ] {
            let mut out = [0u8; ENTRY_MAX];
            let len = encode_entry(distance, count, &mut out);
            let mut at = 0;
            assert_eq!(read_entry(&out, &mut at), (distance, count));
            assert_eq!(at, len);
            let short = distance < 16 && count < 8;
            assert_eq!(len == 1, short, "({distance}, {count}) in {len} bytes");
        }
    }
}
