//! Where signatures come from and when they were counted: a signature's country and region as
//! one [`Place`], the dictionary of regions, and each petition's [`Breakdown`] (counts by place,
//! and the history of its count by minute and by hour).
//!
//! A place is a `u32`: the country's number (its two letters in base 26, plus one; 0 when the
//! signature names no country) in the top 10 bits, and the region's id (0 for none) in the low
//! 22. Region ids are dense, handed out on first sight and kept in the store's `regions` column
//! family, so a place is the same number after a restart and can travel in a validation token.
//!
//! A breakdown is changed only with its petition's count, under one lock (by the publisher of a
//! batch, or by admission in memory mode), so a reader sees countries that sum to the count it
//! reads with them. The count of each place is a `u32`: more signatures of one petition than any
//! country has people.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};

use parking_lot::{Mutex, RwLock};

use crate::place_counts::PlaceCounts;
use crate::signature::REGION_BYTES_MAX;

/// Bits of a place that hold the region id.
const REGION_BITS: u32 = 22;
const REGION_MASK: u32 = (1 << REGION_BITS) - 1;
/// Most distinct regions a store can name (ids are 22 bits, 0 is none).
pub const REGIONS_LIMIT: u32 = REGION_MASK;
/// The country key of signatures that name none.
pub const NO_COUNTRY: &str = "ZZ";

/// A signature's country and region, as one number (see the module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Place(pub u32);

impl Place {
    /// No country, no region.
    pub const NONE: Place = Place(0);

    /// The number of a validated country code (two ASCII letters, either case): 1–676.
    #[inline]
    pub fn country_number(code: &str) -> u32 {
        let &[a, b] = code.as_bytes() else { return 0 };
        let letter = |c: u8| u32::from(c.to_ascii_uppercase().wrapping_sub(b'A')).min(25);
        letter(a) * 26 + letter(b) + 1
    }

    /// The place of a country number and a region id.
    #[inline]
    pub fn new(country: u32, region: u32) -> Place {
        debug_assert!(country <= 676 && region <= REGION_MASK);
        Place(country << REGION_BITS | region)
    }

    /// The place of a country alone (`None`: no country).
    #[inline]
    pub fn of_country(code: Option<&str>) -> Place {
        code.map_or(Place::NONE, |code| {
            Place::new(Place::country_number(code), 0)
        })
    }

    pub fn country(self) -> u32 {
        self.0 >> REGION_BITS
    }

    pub fn region(self) -> u32 {
        self.0 & REGION_MASK
    }

    /// The country's two letters (`ZZ` for none).
    pub fn country_code(self) -> [u8; 2] {
        country_code(self.country())
    }
}

/// The two letters of country number `number` (`ZZ` for 0).
pub(crate) fn country_code(number: u32) -> [u8; 2] {
    if number == 0 || number > 676 {
        return *b"ZZ";
    }
    let n = number - 1;
    [b'A' + (n / 26) as u8, b'A' + (n % 26) as u8]
}

/// Signatures of one petition from one country.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountryCount {
    /// ISO 3166-1 alpha-2 code; `ZZ` for signatures that name none.
    pub country: String,
    /// Its signatures counted.
    pub count: u64,
}

impl CountryCount {
    pub(crate) fn new(number: u32, count: u64) -> CountryCount {
        let code = country_code(number);
        CountryCount {
            country: String::from_utf8_lossy(&code).into_owned(),
            count,
        }
    }
}

/// Signatures of one petition from one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionCount {
    /// The region's country (ISO 3166-1 alpha-2).
    pub country: String,
    /// The region, upper-case.
    pub region: String,
    /// Its signatures counted.
    pub count: u64,
}

/// A region as the dictionary keys it: its country's number and its upper-case text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RegionKey {
    pub country: u16,
    len: u8,
    text: [u8; REGION_BYTES_MAX],
}

impl RegionKey {
    /// The key of a validated region (at most 16 ASCII bytes) in country number `country`.
    pub fn new(country: u32, region: &str) -> RegionKey {
        let mut text = [0u8; REGION_BYTES_MAX];
        let len = region.len().min(REGION_BYTES_MAX);
        for (to, from) in text.iter_mut().zip(&region.as_bytes()[..len]) {
            *to = from.to_ascii_uppercase();
        }
        RegionKey {
            country: country as u16,
            len: len as u8,
            text,
        }
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or("")
    }

    /// The stored form (a `regions` value): the country's two letters, then the text.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = country_code(u32::from(self.country)).to_vec();
        out.extend_from_slice(self.text().as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<RegionKey> {
        let (code, text) = (bytes.get(..2)?, bytes.get(2..)?);
        let code = std::str::from_utf8(code).ok()?;
        let text = std::str::from_utf8(text).ok()?;
        let valid = crate::country::is_assigned(code)
            && (1..=REGION_BYTES_MAX).contains(&text.len())
            && crate::signature::is_region_text(text);
        valid.then(|| RegionKey::new(Place::country_number(code), text))
    }
}

impl Hash for RegionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut bytes = [0u8; 3 + REGION_BYTES_MAX];
        bytes[..2].copy_from_slice(&self.country.to_le_bytes());
        bytes[2] = self.len;
        bytes[3..].copy_from_slice(&self.text);
        state.write(&bytes);
    }
}

/// XXH3 under a seed drawn per dictionary: regions are caller input, so a fixed hash would let a
/// caller choose colliding ones.
#[derive(Clone)]
struct SeededXxh3(u64);

struct Xxh3Hasher {
    seed: u64,
    hash: u64,
}

impl Hasher for Xxh3Hasher {
    fn finish(&self) -> u64 {
        self.hash
    }

    fn write(&mut self, bytes: &[u8]) {
        self.hash = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.seed ^ self.hash);
    }
}

impl BuildHasher for SeededXxh3 {
    type Hasher = Xxh3Hasher;

    fn build_hasher(&self) -> Xxh3Hasher {
        Xxh3Hasher {
            seed: self.0,
            hash: 0,
        }
    }
}

struct RegionTable {
    ids: HashMap<RegionKey, u32, SeededXxh3>,
    /// By id − 1.
    keys: Vec<RegionKey>,
}

/// The regions named so far, each with its id. Ids are handed out in order from 1; the writer
/// stores the ones it has not stored yet with its next batch.
pub(crate) struct Regions {
    table: RwLock<RegionTable>,
    max: u32,
}

/// The dictionary is full: a new region cannot be named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RegionsFull;

/// The dictionary under its read lock, for a call's lookups.
pub(crate) struct RegionsRead<'a> {
    table: parking_lot::RwLockReadGuard<'a, RegionTable>,
}

impl RegionsRead<'_> {
    #[inline]
    pub fn find(&self, key: &RegionKey) -> Option<u32> {
        self.table.ids.get(key).copied()
    }
}

impl Regions {
    /// An empty dictionary that names at most `max` regions (at most [`REGIONS_LIMIT`]).
    pub fn new(max: u32) -> Regions {
        Regions {
            table: RwLock::new(RegionTable {
                ids: HashMap::with_hasher(SeededXxh3(rand::random())),
                keys: Vec::new(),
            }),
            max: max.min(REGIONS_LIMIT),
        }
    }

    pub fn read(&self) -> RegionsRead<'_> {
        RegionsRead {
            table: self.table.read(),
        }
    }

    /// The id of `key`, handed out now if it is new.
    pub fn intern(&self, key: RegionKey) -> Result<u32, RegionsFull> {
        if let Some(id) = self.table.read().ids.get(&key) {
            return Ok(*id);
        }
        let mut table = self.table.write();
        if let Some(id) = table.ids.get(&key) {
            return Ok(*id);
        }
        let id = table.keys.len() as u32 + 1;
        if id > self.max {
            return Err(RegionsFull);
        }
        table.keys.push(key);
        table.ids.insert(key, id);
        Ok(id)
    }

    /// Puts a stored region back under its stored id (recovery). Ids must come in order.
    pub fn restore(&self, id: u32, key: RegionKey) -> bool {
        let mut table = self.table.write();
        if id != table.keys.len() as u32 + 1 || table.ids.contains_key(&key) {
            return false;
        }
        table.keys.push(key);
        table.ids.insert(key, id);
        true
    }

    /// The region with id `id`.
    pub fn key(&self, id: u32) -> Option<RegionKey> {
        let index = id.checked_sub(1)? as usize;
        self.table.read().keys.get(index).copied()
    }

    /// How many regions are named.
    pub fn len(&self) -> u32 {
        self.table.read().keys.len() as u32
    }

    /// The regions with ids in `from..`, with their ids (what the writer has not stored yet).
    pub fn since(&self, from: u32) -> Vec<(u32, RegionKey)> {
        let table = self.table.read();
        let start = from.saturating_sub(1) as usize;
        table
            .keys
            .get(start..)
            .unwrap_or(&[])
            .iter()
            .enumerate()
            .map(|(at, key)| ((start + at) as u32 + 1, *key))
            .collect()
    }

    /// Bytes the dictionary holds (an estimate: its entries and table).
    pub fn bytes(&self) -> u64 {
        let table = self.table.read();
        let entry = std::mem::size_of::<RegionKey>() as u64;
        table.keys.capacity() as u64 * entry + table.ids.capacity() as u64 * (entry + 5)
    }
}

/// The place of a stored signature: its country, and its region's id (named now if the
/// dictionary does not hold it; a full dictionary leaves the region out).
pub(crate) fn place_of_record(regions: &Regions, record: &crate::record::Record<'_>) -> Place {
    record_place(record, |key| regions.intern(key).ok()).unwrap_or_else(|country| country)
}

/// The place of a stored signature, its region's id given by `id_of`; `Err` with the place of
/// its country alone when `id_of` gives none.
pub(crate) fn record_place(
    record: &crate::record::Record<'_>,
    id_of: impl FnOnce(RegionKey) -> Option<u32>,
) -> Result<Place, Place> {
    let place = Place::of_country(record.country);
    match record.region {
        Some(region) if place != Place::NONE => id_of(RegionKey::new(place.country(), region))
            .map(|id| Place::new(place.country(), id))
            .ok_or(place),
        _ => Ok(place),
    }
}

/// Minutes of history kept by minute.
pub const MINUTES_KEPT: u32 = 48 * 60;
const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;

/// A resolution of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Per minute, the last 48 hours.
    Minute,
    /// Per hour, the petition's life.
    Hour,
}

impl Resolution {
    /// The name the HTTP API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Minute => "minute",
            Resolution::Hour => "hour",
        }
    }

    /// `minute` or `hour`.
    pub fn parse(text: &str) -> Option<Resolution> {
        match text {
            "minute" => Some(Resolution::Minute),
            "hour" => Some(Resolution::Hour),
            _ => None,
        }
    }

    pub(crate) fn millis(self) -> u64 {
        match self {
            Resolution::Minute => MINUTE_MS,
            Resolution::Hour => HOUR_MS,
        }
    }
}

/// One bucket of a petition's history: how its count changed in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// When the bucket starts (Unix milliseconds, a whole minute or hour).
    pub start_ms: u64,
    /// Signatures counted in it (accepted or validated), less those invalidated in it.
    pub count: i64,
}

/// A petition's counts by place and the history of its count.
#[derive(Debug, Default)]
pub(crate) struct Breakdown {
    /// Counts by place, ascending by place; no zero counts.
    places: PlaceCounts,
    /// Minute number and change, ascending; the last [`MINUTES_KEPT`] minutes.
    minutes: VecDeque<(u32, i32)>,
    /// Hour number and change, ascending.
    hours: Vec<(u32, i64)>,
}

impl Breakdown {
    /// Adds `delta` to the count of `place` (a petition of `signatures` after it).
    #[cfg(test)]
    pub fn add_place(&mut self, place: Place, delta: i64, signatures: u64) {
        if delta != 0 {
            self.places.add_sorted(&[(place, delta)], signatures);
        }
    }

    /// Adds deltas sorted by place (each place once) to a petition that has `signatures`
    /// after them.
    pub fn add_places_sorted(&mut self, deltas: &[(Place, i64)], signatures: u64) {
        self.places.add_sorted(deltas, signatures);
    }

    /// The count of each place, ascending by place.
    pub fn places(&self) -> impl Iterator<Item = (Place, u64)> + '_ {
        self.places.iter()
    }

    /// Counts by country number, ascending.
    pub fn countries(&self) -> Vec<(u32, u64)> {
        let mut out: Vec<(u32, u64)> = Vec::new();
        for (place, count) in self.places() {
            match out.last_mut() {
                Some((country, sum)) if *country == place.country() => *sum += count,
                _ => out.push((place.country(), count)),
            }
        }
        out
    }

    /// Adds `delta` to the history at `at_ms`.
    pub fn add_history(&mut self, at_ms: u64, delta: i64) {
        if delta == 0 {
            return;
        }
        let minute = (at_ms / MINUTE_MS) as u32;
        let hour = (at_ms / HOUR_MS) as u32;
        add_sorted_deque(&mut self.minutes, minute, delta as i32);
        let oldest = minute.saturating_sub(MINUTES_KEPT - 1);
        while self.minutes.front().is_some_and(|&(m, _)| m < oldest) {
            self.minutes.pop_front();
        }
        match self.hours.last_mut() {
            Some((h, sum)) if *h == hour => *sum += delta,
            Some((h, _)) if *h < hour => push_grown(&mut self.hours, (hour, delta)),
            None => push_grown(&mut self.hours, (hour, delta)),
            Some(_) => {
                // The clock went back: find the hour.
                let at = self.hours.partition_point(|&(h, _)| h < hour);
                match self.hours.get_mut(at) {
                    Some((h, sum)) if *h == hour => *sum += delta,
                    _ => self.hours.insert(at, (hour, delta)),
                }
            }
        }
    }

    /// Puts a stored bucket back (recovery): minutes older than the last 48 hours before `now_ms`
    /// are left out.
    pub fn restore_bucket(&mut self, resolution: Resolution, index: u32, count: i64, now_ms: u64) {
        if count == 0 {
            return;
        }
        match resolution {
            Resolution::Minute => {
                let now = (now_ms / MINUTE_MS) as u32;
                if index + MINUTES_KEPT > now {
                    add_sorted_deque(&mut self.minutes, index, count as i32);
                }
            }
            Resolution::Hour => {
                let at = self.hours.partition_point(|&(h, _)| h < index);
                match self.hours.get_mut(at) {
                    Some((h, sum)) if *h == index => *sum += count,
                    _ => self.hours.insert(at, (index, count)),
                }
            }
        }
    }

    /// The buckets at `resolution` as of `now_ms`: every hour, or the minutes of the last 48
    /// hours; empty buckets left out.
    pub fn history(&self, resolution: Resolution, now_ms: u64) -> Vec<Bucket> {
        let millis = resolution.millis();
        match resolution {
            Resolution::Minute => {
                let now = (now_ms / MINUTE_MS) as u32;
                self.minutes
                    .iter()
                    .filter(|&&(m, c)| m + MINUTES_KEPT > now && c != 0)
                    .map(|&(m, c)| Bucket {
                        start_ms: u64::from(m) * millis,
                        count: i64::from(c),
                    })
                    .collect()
            }
            Resolution::Hour => self
                .hours
                .iter()
                .filter(|&&(_, c)| c != 0)
                .map(|&(h, c)| Bucket {
                    start_ms: u64::from(h) * millis,
                    count: c,
                })
                .collect(),
        }
    }

    /// The change of the count in the `minutes` whole minutes up to and including the one of
    /// `now_ms`.
    pub fn window(&self, minutes: u32, now_ms: u64) -> i64 {
        let now = (now_ms / MINUTE_MS) as u32;
        let from = (now + 1).saturating_sub(minutes);
        self.minutes
            .iter()
            .rev()
            .take_while(|&&(m, _)| m >= from)
            .filter(|&&(m, _)| m <= now)
            .map(|&(_, c)| i64::from(c))
            .sum()
    }

    /// The newest minute with a change, if any.
    pub fn newest_minute(&self) -> Option<u32> {
        self.minutes.back().map(|&(minute, _)| minute)
    }

    /// Sum of the hours (every change of the count since the history began).
    pub fn hours_total(&self) -> i64 {
        self.hours.iter().map(|&(_, c)| c).sum()
    }

    /// Bytes held (capacity, not length), for memory accounting.
    pub fn bytes(&self) -> u64 {
        self.places.bytes() + (self.minutes.capacity() * 8 + self.hours.capacity() * 16) as u64
    }

    /// Releases spare capacity (after a recovery filled it).
    pub fn shrink(&mut self) {
        self.places.shrink();
        self.minutes.shrink_to_fit();
        self.hours.shrink_to_fit();
    }
}

/// Pushes `entry`, growing by a quarter (most petitions have a few hours).
fn push_grown<T>(entries: &mut Vec<T>, entry: T) {
    if entries.len() == entries.capacity() {
        entries.reserve_exact((entries.len() / 4).max(1));
    }
    entries.push(entry);
}

fn add_sorted_deque(deque: &mut VecDeque<(u32, i32)>, index: u32, delta: i32) {
    let newest = deque.back().map(|&(m, _)| m);
    match newest {
        Some(m) if m == index => {
            if let Some((_, sum)) = deque.back_mut() {
                *sum += delta;
            }
        }
        Some(m) if m > index => {
            let at = deque.partition_point(|&(m, _)| m < index);
            match deque.get_mut(at) {
                Some((m, sum)) if *m == index => *sum += delta,
                _ => deque.insert(at, (index, delta)),
            }
        }
        _ => {
            // Most petitions have a few minutes: grow by a quarter, not double.
            if deque.len() == deque.capacity() {
                deque.reserve_exact((deque.len() / 4).max(1));
            }
            deque.push_back((index, delta));
        }
    }
}

/// Which petitions changed count in each of the last 48 hours' minutes: trending looks only at
/// these, never at every petition.
#[derive(Default)]
pub(crate) struct Recent {
    minutes: Mutex<VecDeque<(u32, Vec<u32>)>>,
}

impl Recent {
    /// Notes that petition `num` changed count at `at_ms` (the caller calls this once per
    /// petition per minute: when the minute of its last change moves).
    pub fn note(&self, num: u32, at_ms: u64) {
        let minute = (at_ms / MINUTE_MS) as u32;
        let mut minutes = self.minutes.lock();
        match minutes.back_mut() {
            Some((m, nums)) if *m == minute => nums.push(num),
            Some((m, _)) if *m > minute => {
                let at = minutes.partition_point(|&(m, _)| m < minute);
                match minutes.get_mut(at) {
                    Some((m, nums)) if *m == minute => nums.push(num),
                    _ => minutes.insert(at, (minute, vec![num])),
                }
            }
            _ => minutes.push_back((minute, vec![num])),
        }
        let oldest = minute.saturating_sub(MINUTES_KEPT - 1);
        while minutes.front().is_some_and(|&(m, _)| m < oldest) {
            minutes.pop_front();
        }
    }

    /// The petitions that changed count in the `window` minutes up to the one of `now_ms`, each
    /// once.
    pub fn since(&self, window: u32, now_ms: u64) -> Vec<u32> {
        let now = (now_ms / MINUTE_MS) as u32;
        let from = (now + 1).saturating_sub(window);
        let mut nums: Vec<u32> = self
            .minutes
            .lock()
            .iter()
            .filter(|&&(m, _)| m >= from && m <= now)
            .flat_map(|(_, nums)| nums.iter().copied())
            .collect();
        nums.sort_unstable();
        nums.dedup();
        nums
    }

    pub fn clear(&self) {
        self.minutes.lock().clear();
    }

    pub fn bytes(&self) -> u64 {
        self.minutes
            .lock()
            .iter()
            .map(|(_, nums)| 8 + nums.capacity() as u64 * 4 + 24)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_pack_country_and_region() {
        assert_eq!(Place::country_number("AA"), 1);
        assert_eq!(Place::country_number("gb"), Place::country_number("GB"));
        assert_eq!(Place::country_number("ZZ"), 676);
        let gb = Place::country_number("GB");
        assert_eq!(&country_code(gb), b"GB");
        assert_eq!(&country_code(0), b"ZZ");
        let place = Place::new(gb, 650);
        assert_eq!((place.country(), place.region()), (gb, 650));
        assert_eq!(Place::new(gb, 0), Place::of_country(Some("GB")));
        assert_eq!(Place::of_country(None), Place::NONE);
        assert_eq!(&Place::NONE.country_code(), b"ZZ");
    }

    #[test]
    fn regions_get_dense_ids_and_the_dictionary_is_bounded() {
        let regions = Regions::new(2);
        let gb = Place::country_number("GB");
        let a = regions.intern(RegionKey::new(gb, "e1")).expect("room");
        assert_eq!(a, 1);
        assert_eq!(
            regions.intern(RegionKey::new(gb, "E1")),
            Ok(1),
            "upper-cased"
        );
        let us = Place::country_number("US");
        assert_eq!(
            regions.intern(RegionKey::new(us, "E1")),
            Ok(2),
            "per country"
        );
        assert_eq!(regions.intern(RegionKey::new(us, "E2")), Err(RegionsFull));
        assert_eq!(
            regions.key(2).map(|k| k.text().to_owned()),
            Some("E1".into())
        );
        assert_eq!(regions.since(2).len(), 1);
        let key = regions.key(1).expect("named");
        assert_eq!(RegionKey::decode(&key.encode()), Some(key));
        assert_eq!(RegionKey::decode(b"UKE1"), None, "not an assigned code");
        assert_eq!(RegionKey::decode(b"GB"), None, "no text");
        let restored = Regions::new(10);
        assert!(restored.restore(1, key));
        assert!(!restored.restore(3, key), "out of order");
        assert!(!restored.restore(2, key), "twice");
    }

    #[test]
    fn places_add_and_merge_alike() {
        let gb = Place::country_number("GB");
        let fr = Place::country_number("FR");
        let mut one = Breakdown::default();
        let mut merged = Breakdown::default();
        let mut deltas: Vec<(Place, i64)> = (0..40)
            .map(|r| {
                (
                    Place::new(if r % 3 == 0 { fr } else { gb }, r),
                    1 + i64::from(r),
                )
            })
            .collect();
        deltas.sort_unstable();
        for &(place, delta) in &deltas {
            one.add_place(place, delta, 0);
        }
        merged.add_places_sorted(&deltas, 0);
        assert!(one.places().eq(merged.places()));
        // Take some back to zero: they disappear.
        let back: Vec<(Place, i64)> = deltas.iter().step_by(2).map(|&(p, d)| (p, -d)).collect();
        for &(place, delta) in &back {
            one.add_place(place, delta, 0);
        }
        merged.add_places_sorted(&back, 0);
        assert!(one.places().eq(merged.places()));
        assert_eq!(one.places().count(), 20);
        let countries = one.countries();
        assert_eq!(countries.len(), 2);
        let total: u64 = countries.iter().map(|&(_, c)| c).sum();
        let want: i64 = deltas.iter().skip(1).step_by(2).map(|&(_, d)| d).sum();
        assert_eq!(total as i64, want);
    }

    #[test]
    fn history_buckets_by_minute_and_hour_and_forgets_old_minutes() {
        let mut b = Breakdown::default();
        let t0 = 1_700_000_000_000 / HOUR_MS * HOUR_MS;
        b.add_history(t0, 3);
        b.add_history(t0 + 59_999, 2);
        b.add_history(t0 + 60_000, 1);
        b.add_history(t0 + HOUR_MS, -1);
        let minutes = b.history(Resolution::Minute, t0 + HOUR_MS);
        assert_eq!(
            minutes,
            vec![
                Bucket {
                    start_ms: t0,
                    count: 5
                },
                Bucket {
                    start_ms: t0 + 60_000,
                    count: 1
                },
                Bucket {
                    start_ms: t0 + HOUR_MS,
                    count: -1
                },
            ]
        );
        let hours = b.history(Resolution::Hour, t0 + HOUR_MS);
        assert_eq!(
            hours,
            vec![
                Bucket {
                    start_ms: t0,
                    count: 6
                },
                Bucket {
                    start_ms: t0 + HOUR_MS,
                    count: -1
                },
            ]
        );
        assert_eq!(b.hours_total(), 5);
        // The window: whole minutes up to the current one.
        assert_eq!(b.window(1, t0 + 60_000), 1);
        assert_eq!(b.window(2, t0 + 60_000), 6);
        assert_eq!(b.window(60, t0 + HOUR_MS - 1), 6);
        assert_eq!(b.window(60, t0 + HOUR_MS), 0, "t0's minutes left the hour");
        // 48 hours after the last of them, the minutes are gone and the hours stay.
        let later = t0 + 49 * HOUR_MS;
        assert_eq!(b.history(Resolution::Minute, later - 1).len(), 1);
        assert!(b.history(Resolution::Minute, later).is_empty());
        b.add_history(later, 1);
        assert_eq!(b.minutes.len(), 1, "old minutes dropped");
        assert_eq!(b.history(Resolution::Hour, later).len(), 3);
    }

    #[test]
    fn recent_lists_petitions_by_minute() {
        let recent = Recent::default();
        let t0 = 1_700_000_000_000 / MINUTE_MS * MINUTE_MS;
        recent.note(1, t0);
        recent.note(2, t0 + MINUTE_MS);
        recent.note(1, t0 + MINUTE_MS);
        assert_eq!(recent.since(1, t0 + MINUTE_MS), vec![1, 2]);
        assert_eq!(recent.since(1, t0), vec![1]);
        assert_eq!(recent.since(60, t0 + 60 * MINUTE_MS), vec![1, 2]);
        assert_eq!(recent.since(60, t0 + 61 * MINUTE_MS), Vec::<u32>::new());
    }
}
