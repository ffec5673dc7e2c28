//! Trending sources: the addresses, networks (/24 for IPv4, /48 for IPv6) and email domains
//! that sign a petition most in each clock hour, and a `source_alert` event when one reaches
//! the alert threshold (the UK petitions site logs a source at 100 signatures an hour, counted
//! per clock hour).
//!
//! What counts: each new signer, when admission claims it (a duplicate adds nothing, a refused
//! signature neither), in the clock hour of the engine's clock. The current hour and the one
//! before are kept.
//!
//! Counting: per petition and hour, one table per kind of source, updated once per call under
//! the petition's lock, a run of signers from one source (a viral petition's `gmail.com`, a
//! script's address) with one update. A table is a Space-Saving summary in sets of [`WAYS`]
//! slots: a source takes its own slot, else an empty one of its set, else the slot with the
//! fewest signatures, whose count it takes over as its `error`. Counts only grow within an
//! hour, so a source's true count lies in `[count - error, count]`. A set is two cache lines:
//! the 64-bit tags of its slots (a seeded hash of the source), then their counts and errors; a
//! source's address or domain is read only when a slot is taken or shown. Two sources of a
//! petition share a slot only if their tags agree (a chance of about 2^-64 per pair).
//!
//! Size: a table starts with one set. Rather than give a new source a slot holding a quarter of
//! the alert threshold or more (25 without alerts), it doubles, up to [`TABLE_SLOTS_MAX`] slots,
//! while the engine's slot budget lasts; the empty slots of a set split off start at the count
//! of the last slot taken from the old set, so counts stay at or above the truth (and exact if
//! no slot in use was ever taken). While the budget lasts, a source
//! keeps its slot once it holds a quarter of the threshold, and each time it lost its slot
//! before, the next one it took held at least what it lost: in all it loses fewer than a
//! quarter of the threshold. So its alert comes when its true count reaches the threshold, or
//! at the latest 1.25 times it. A petition with few sources keeps a small table (its working
//! set stays in the cache); one with a million one-off addresses in an hour grows to what it
//! needs.
//!
//! Alerts: when a source's lower bound (`count - error`) reaches the threshold, admission puts
//! one `source_alert` in the writer's job with the signatures that raised it, and the writer
//! numbers and stores it in their batch (no write of its own): one per (petition, source, clock
//! hour). The sources alerted in the hour are remembered per petition, and after a restart they
//! are read back from the feed. A batch the store fails to write takes its alerts with it, and
//! they are not raised again in that hour: at most once if the store fails.
//!
//! Memory: [`SLOT_BYTES`] per slot (an email domain's name lies on the heap besides), at most
//! `slots` (the budget) plus one set per kind and hour of each petition signed in the last two
//! hours; the sweep drops the tables of petitions with no signature in them. The counts are
//! soft state: not persisted, so after a restart they start from zero.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::admission::same_bytes;
use crate::index::PREFETCH_DISTANCE;
use crate::petition::Petition;

/// One clock hour.
pub const HOUR_MS: u64 = 3_600_000;
/// Slots per set.
pub const WAYS: usize = 8;
/// Most slots of one table (one kind of source of one petition in one hour).
pub const TABLE_SLOTS_MAX: usize = 16_384;
/// Bytes of one slot: its tag, count, error and source (an address's 16 bytes; a domain's
/// pointer and the domain beside).
pub const SLOT_BYTES: usize = 32;

/// What trending sources track, and when they alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcesConfig {
    /// A source with this many signatures to one petition in an hour makes a `source_alert`;
    /// `None`: no alerts.
    pub alert_threshold: Option<u64>,
    /// The slot budget over all petitions (about [`SLOT_BYTES`] each): tables grow past their
    /// first set only while it lasts.
    pub slots: usize,
}

impl SourcesConfig {
    /// Alerts at 100 an hour (the UK site's logging threshold), a million slots (32 MB).
    pub const DEFAULT: SourcesConfig = SourcesConfig {
        alert_threshold: Some(100),
        slots: 1 << 20,
    };

    /// Checks the settings: a threshold of 1 to 2^32 - 1, a budget of 1,024 to 2^30 slots.
    pub fn check(&self) -> Result<(), &'static str> {
        if self
            .alert_threshold
            .is_some_and(|t| t == 0 || t > u64::from(u32::MAX))
        {
            return Err("the source alert threshold is 1 to 4294967295 signatures an hour");
        }
        if !(1024..=1 << 30).contains(&self.slots) {
            return Err("the source slots are 1024 to 1073741824");
        }
        Ok(())
    }
}

/// The kinds of source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// One address (an IPv4-mapped IPv6 address is its IPv4 address).
    Ip,
    /// An IPv4 /24 or an IPv6 /48.
    Network,
    /// The domain of the signer's email, lower-cased.
    EmailDomain,
}

impl SourceKind {
    /// Every kind, in the order of their stored codes.
    pub const ALL: [SourceKind; 3] = [SourceKind::Ip, SourceKind::Network, SourceKind::EmailDomain];

    /// `ip`, `network` or `email_domain`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Ip => "ip",
            SourceKind::Network => "network",
            SourceKind::EmailDomain => "email_domain",
        }
    }

    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_code(code: u8) -> Option<SourceKind> {
        SourceKind::ALL.get(usize::from(code)).copied()
    }
}

/// One source: its kind and how it is written (`203.0.113.7`, `203.0.113.0/24`,
/// `2001:db8:1::/48`, `example.org`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    pub kind: SourceKind,
    pub value: String,
}

/// A source's signatures in an hour: the true count lies in `[count - error, count]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCount {
    pub source: Source,
    pub count: u64,
    pub error: u64,
}

/// Which clock hour a read asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceHour {
    /// The hour the engine's clock is in (so far).
    Current,
    /// The hour before it (complete).
    Previous,
}

/// The top sources of a petition in one clock hour, each list highest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopSources {
    /// The start of the hour (Unix milliseconds).
    pub hour_start_ms: u64,
    /// The engine's clock when read.
    pub at_ms: u64,
    pub ips: Vec<SourceCount>,
    pub networks: Vec<SourceCount>,
    pub email_domains: Vec<SourceCount>,
}

/// Why trending sources could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourcesError {
    #[error("unknown petition")]
    UnknownPetition,
    #[error("trending sources are off")]
    Off,
}

/// One set of a table: the tags of its slots (0: empty) on one cache line, their counts and
/// errors on the next. An empty slot's count is the set's floor (see [`Table::double`]).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Set {
    tags: [u64; WAYS],
    counts: [u32; WAYS],
    errors: [u32; WAYS],
}

/// One kind of source of one petition in one hour.
struct Table {
    sets: Vec<Set>,
    /// Each slot's source: an address (or network) as the 128 bits of its IPv6 form, or an
    /// email domain.
    keys: Keys,
}

enum Keys {
    Addresses(Vec<u128>),
    Domains(Vec<Option<Box<str>>>),
}

/// What one signature brings to a table: its tag and its source (the address, or the domain
/// as written; lower-cased when a slot takes it).
#[derive(Clone, Copy)]
struct Seen<'a> {
    tag: u64,
    address: u128,
    domain: &'a str,
}

impl Table {
    fn new(kind: SourceKind) -> Table {
        Table {
            sets: vec![Set::default()],
            keys: match kind {
                SourceKind::EmailDomain => Keys::Domains(vec![None; WAYS]),
                _ => Keys::Addresses(vec![0; WAYS]),
            },
        }
    }

    fn slots(&self) -> usize {
        self.sets.len() * WAYS
    }

    fn set_of(&self, tag: u64) -> usize {
        // The low bits pick the set; the tag's top bits would do as well.
        (tag >> 7) as usize & (self.sets.len() - 1)
    }

    /// Counts `n` signatures of `seen`; returns its slot (set, way). Before a slot holding
    /// `grow_at` signatures or more is taken, `grow` is asked for room for more slots.
    fn add(
        &mut self,
        seen: &Seen<'_>,
        n: u32,
        grow_at: u32,
        grow: &mut dyn FnMut(usize) -> bool,
    ) -> (usize, usize) {
        loop {
            let s = self.set_of(seen.tag);
            let set = &mut self.sets[s];
            if let Some(way) = set.tags.iter().position(|&t| t == seen.tag) {
                set.counts[way] = set.counts[way].saturating_add(n);
                return (s, way);
            }
            let way = match set.tags.iter().position(|&t| t == 0) {
                Some(empty) => empty,
                None => {
                    let fewest = set.counts.iter().min().copied().unwrap_or(0);
                    let way = set.counts.iter().position(|&c| c == fewest).unwrap_or(0);
                    let slots = self.slots();
                    if fewest >= grow_at && slots < TABLE_SLOTS_MAX && grow(slots) {
                        self.double();
                        continue;
                    }
                    way
                }
            };
            let set = &mut self.sets[s];
            // An empty slot's count is its set's floor (0 in a table never doubled).
            let error = set.counts[way];
            set.tags[way] = seen.tag;
            set.errors[way] = error;
            set.counts[way] = error.saturating_add(n);
            let at = s * WAYS + way;
            match &mut self.keys {
                Keys::Addresses(keys) => keys[at] = seen.address,
                Keys::Domains(names) => {
                    names[at] = Some(seen.domain.to_ascii_lowercase().into_boxed_str())
                }
            }
            return (s, way);
        }
    }

    /// Asks the CPU for the set of `tag` and its sources (a hint).
    fn prefetch(&self, tag: u64) {
        let s = self.set_of(tag);
        let set: *const Set = &self.sets[s];
        crate::index::prefetch_line(set.cast());
        crate::index::prefetch_line(set.cast::<u8>().wrapping_add(64));
        if let Keys::Addresses(keys) = &self.keys {
            // The set's eight addresses: two lines.
            let key: *const u128 = &keys[s * WAYS];
            crate::index::prefetch_line(key.cast());
            crate::index::prefetch_line(key.cast::<u8>().wrapping_add(64));
        }
    }

    /// Twice the sets: each set splits in two by one more bit of its tags, so a new set takes
    /// at most the old one's slots.
    fn double(&mut self) {
        let old = std::mem::take(&mut self.sets);
        let len = old.len() * 2;
        self.sets = vec![Set::default(); len];
        let mut keys = match &mut self.keys {
            Keys::Addresses(keys) => Keys::Addresses(std::mem::replace(keys, vec![0; len * WAYS])),
            Keys::Domains(names) => Keys::Domains(std::mem::replace(names, vec![None; len * WAYS])),
        };
        for (s, set) in old.iter().enumerate() {
            for way in 0..WAYS {
                let tag = set.tags[way];
                if tag == 0 {
                    continue;
                }
                let to = self.set_of(tag);
                let free = self.sets[to].tags.iter().position(|&t| t == 0);
                let Some(to_way) = free else { continue };
                let target = &mut self.sets[to];
                target.tags[to_way] = tag;
                target.counts[to_way] = set.counts[way];
                target.errors[to_way] = set.errors[way];
                let (from, at) = (s * WAYS + way, to * WAYS + to_way);
                match (&mut self.keys, &mut keys) {
                    (Keys::Addresses(new), Keys::Addresses(old)) => new[at] = old[from],
                    (Keys::Domains(new), Keys::Domains(old)) => new[at] = old[from].take(),
                    _ => {}
                }
            }
        }
        // A source missing from a new set may have been dropped from the old one with as many
        // signatures as the last slot taken from it held: the old set's floor, the largest of
        // its errors (each was the count of the slot its source took) and of its empty slots'
        // counts. The new set's empty slots start there, so a source that takes one takes it
        // as its error, and no count falls below the truth.
        for (s, set) in old.iter().enumerate() {
            let floor = (0..WAYS)
                .map(|way| {
                    if set.tags[way] == 0 {
                        set.counts[way]
                    } else {
                        set.errors[way]
                    }
                })
                .max()
                .unwrap_or(0);
            for child in [s, s + old.len()] {
                let target = &mut self.sets[child];
                for way in 0..WAYS {
                    if target.tags[way] == 0 {
                        target.counts[way] = floor;
                    }
                }
            }
        }
    }

    /// The sources counted, highest first, at most `limit`.
    fn top(&self, kind: SourceKind, limit: usize) -> Vec<SourceCount> {
        let mut live: Vec<(u32, u32, usize)> = Vec::new();
        for (s, set) in self.sets.iter().enumerate() {
            for way in 0..WAYS {
                if set.tags[way] != 0 {
                    live.push((set.counts[way], set.errors[way], s * WAYS + way));
                }
            }
        }
        live.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        live.truncate(limit);
        live.into_iter()
            .map(|(count, error, at)| SourceCount {
                source: Source {
                    kind,
                    value: self.value(kind, at),
                },
                count: u64::from(count),
                error: u64::from(error),
            })
            .collect()
    }

    fn value(&self, kind: SourceKind, at: usize) -> String {
        match &self.keys {
            Keys::Addresses(keys) => {
                let addr = addr_of(keys[at]);
                match kind {
                    SourceKind::Network => {
                        let prefix = if addr.is_ipv4() { 24 } else { 48 };
                        format!("{addr}/{prefix}")
                    }
                    _ => addr.to_string(),
                }
            }
            Keys::Domains(names) => names[at].as_deref().unwrap_or("").to_owned(),
        }
    }
}

/// A petition's tables for one clock hour, and the sources alerted in it.
struct Hour {
    hour: u64,
    tables: [Table; 3],
    alerted: HashSet<(SourceKind, u64)>,
}

impl Hour {
    fn new(hour: u64) -> Hour {
        Hour {
            hour,
            tables: SourceKind::ALL.map(Table::new),
            alerted: HashSet::new(),
        }
    }

    fn slots(&self) -> usize {
        self.tables.iter().map(Table::slots).sum()
    }
}

/// A petition's trending sources: the current hour and the one before (kept in its
/// [`Petition`], made on its first signature with a source).
pub(crate) struct PetitionSources {
    current: Hour,
    previous: Option<Hour>,
}

/// A source that reached the alert threshold: for the writer to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Alert {
    pub petition: u32,
    pub source: Source,
    /// Its lower bound in the hour when it reached the threshold.
    pub count: u64,
    pub threshold: u64,
}

/// One claimed signature's sources: its address and its email.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Signer<'s> {
    pub ip: Option<IpAddr>,
    pub email: &'s str,
}

/// Trending sources: the settings, the hash seed, and the petitions that have tables.
pub(crate) struct Sources {
    config: SourcesConfig,
    seed: [u64; 2],
    /// The petitions whose tables are made, for the sweep.
    active: Mutex<Vec<Arc<Petition>>>,
    /// Slots in every table.
    used: AtomicUsize,
    /// The hour of the last sweep: tables fall idle only when an hour ends.
    swept: AtomicU64,
    /// A table grows (budget permitting) rather than give a new source a slot holding this many
    /// signatures or more: a quarter of the alert threshold (of 100 without alerts).
    grow_at: u32,
}

impl Sources {
    pub fn new(config: SourcesConfig) -> Sources {
        Sources {
            config,
            seed: [rand::random(), rand::random()],
            active: Mutex::default(),
            used: AtomicUsize::new(0),
            swept: AtomicU64::new(0),
            grow_at: u32::try_from(config.alert_threshold.unwrap_or(100) / 4)
                .unwrap_or(u32::MAX)
                .max(1),
        }
    }

    pub fn config(&self) -> SourcesConfig {
        self.config
    }

    /// Bytes of every table's slots.
    pub fn bytes(&self) -> u64 {
        (self.used.load(Ordering::Relaxed) * SLOT_BYTES) as u64
    }

    /// A source's tag: never 0 (an empty slot).
    fn tag(&self, kind: SourceKind, key: u128) -> u64 {
        let h =
            ((key >> 64) as u64 ^ self.seed[0] ^ kind as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let h = (h ^ key as u64 ^ self.seed[1]).wrapping_mul(0xd6e8_feb8_6659_fd93);
        (h ^ (h >> 29)) | 1
    }

    /// An address and its network, as sources.
    fn ip_seen(&self, ip: IpAddr) -> [Seen<'static>; 2] {
        let bits = u128::from(crate::guard::mapped(ip));
        let net = if crate::guard::unmap(ip).is_ipv4() {
            bits & !0xff
        } else {
            bits & !((1u128 << 80) - 1)
        };
        [(SourceKind::Ip, bits), (SourceKind::Network, net)].map(|(kind, address)| Seen {
            tag: self.tag(kind, address),
            address,
            domain: "",
        })
    }

    /// An email's domain as a source (the tag is of its lower-cased form).
    fn domain_seen<'s>(&self, email: &'s str) -> Option<Seen<'s>> {
        let domain = domain_of(email)?;
        let mut lower = [0u8; 256];
        let lower = lower.get_mut(..domain.len()).filter(|d| !d.is_empty())?;
        lower.copy_from_slice(domain.as_bytes());
        lower.make_ascii_lowercase();
        let hash = xxhash_rust::xxh3::xxh3_128_with_seed(lower, self.seed[0]);
        Some(Seen {
            tag: self.tag(SourceKind::EmailDomain, hash),
            address: 0,
            domain,
        })
    }

    /// Counts the claimed signers of one call to `petition`; returns the sources that reached
    /// the alert threshold.
    pub fn record(
        &self,
        petition: &Arc<Petition>,
        signers: &[&Signer<'_>],
        now_ms: u64,
    ) -> Vec<Alert> {
        let hour = now_ms / HOUR_MS;
        let mut alerts = Vec::new();
        let mut held = petition.sources.lock();
        let Some(current) = self.hour_of(&mut held, petition, hour) else {
            return alerts;
        };
        let num = petition.num;
        // The sets of the addresses a few signers ahead are asked of the CPU early: a viral
        // petition's tables outgrow the cache, and one-off addresses miss it. Each signer's
        // address and network are hashed once, when prefetched, and kept in a ring until used.
        let mut ahead: [Option<[Seen<'static>; 2]>; PREFETCH_DISTANCE] = [None; PREFETCH_DISTANCE];
        let look_ahead = |current: &Hour, signer: Option<&&Signer<'_>>| {
            let seen = signer.and_then(|s| s.ip).map(|ip| self.ip_seen(ip));
            if let Some([ip, net]) = &seen {
                current.tables[SourceKind::Ip as usize].prefetch(ip.tag);
                current.tables[SourceKind::Network as usize].prefetch(net.tag);
            }
            seen
        };
        for (at, signer) in signers.iter().take(PREFETCH_DISTANCE).enumerate() {
            ahead[at] = look_ahead(current, Some(signer));
        }
        // Per kind: the source of the current run and its length.
        let mut runs: [Option<(Seen<'_>, u32)>; 3] = [None, None, None];
        for (at, signer) in signers.iter().enumerate() {
            let slot = at % PREFETCH_DISTANCE;
            let seen = ahead[slot].take();
            ahead[slot] = look_ahead(current, signers.get(at + PREFETCH_DISTANCE));
            if let Some([ip, net]) = seen {
                for (kind, seen) in [(SourceKind::Ip, ip), (SourceKind::Network, net)] {
                    match &mut runs[kind as usize] {
                        Some((run, n)) if run.tag == seen.tag => *n += 1,
                        run => {
                            if let Some((seen, n)) = run.replace((seen, 1)) {
                                self.add(current, kind, &seen, n, num, &mut alerts);
                            }
                        }
                    }
                }
            }
            match &mut runs[SourceKind::EmailDomain as usize] {
                Some((run, n)) if has_domain(signer.email, run.domain) => *n += 1,
                run => {
                    if let Some(seen) = self.domain_seen(signer.email) {
                        if let Some((seen, n)) = run.replace((seen, 1)) {
                            self.add(current, SourceKind::EmailDomain, &seen, n, num, &mut alerts);
                        }
                    }
                }
            }
        }
        for kind in SourceKind::ALL {
            if let Some((seen, n)) = runs[kind as usize].take() {
                self.add(current, kind, &seen, n, num, &mut alerts);
            }
        }
        alerts
    }

    /// The tables of `petition` for `hour` (`held`: under its lock), made on first sight; the
    /// current hour becomes the previous one when the clock enters the next. `None` for an
    /// hour before the previous one (the clock went back).
    fn hour_of<'t>(
        &self,
        held: &'t mut Option<Box<PetitionSources>>,
        petition: &Arc<Petition>,
        hour: u64,
    ) -> Option<&'t mut Hour> {
        let sources = held.get_or_insert_with(|| {
            self.active.lock().push(Arc::clone(petition));
            self.used.fetch_add(3 * WAYS, Ordering::Relaxed);
            Box::new(PetitionSources {
                current: Hour::new(hour),
                previous: None,
            })
        });
        if sources.current.hour < hour {
            self.used.fetch_add(3 * WAYS, Ordering::Relaxed);
            let ended = std::mem::replace(&mut sources.current, Hour::new(hour));
            let mut freed = sources.previous.take().map_or(0, |h| h.slots());
            if ended.hour + 1 == hour {
                sources.previous = Some(ended);
            } else {
                freed += ended.slots();
            }
            self.used.fetch_sub(freed, Ordering::Relaxed);
        }
        if sources.current.hour == hour {
            return Some(&mut sources.current);
        }
        // A call that read the clock just before the hour ended, counted after another
        // moved the tables on: its signers still count in their hour.
        sources.previous.as_mut().filter(|p| p.hour == hour)
    }

    /// Counts `n` signatures of one source; an alert if it reached the threshold.
    fn add(
        &self,
        current: &mut Hour,
        kind: SourceKind,
        seen: &Seen<'_>,
        n: u32,
        petition: u32,
        alerts: &mut Vec<Alert>,
    ) {
        let mut grow = |len: usize| {
            self.used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                    (used + len <= self.config.slots).then_some(used + len)
                })
                .is_ok()
        };
        let table = &mut current.tables[kind as usize];
        let (s, way) = table.add(seen, n, self.grow_at, &mut grow);
        let Some(threshold) = self.config.alert_threshold else {
            return;
        };
        let set = &table.sets[s];
        let lower = u64::from(set.counts[way] - set.errors[way]);
        // The lower bound grew by `n` in this add (from 0 in a slot just taken): only a
        // source crossing the threshold now asks the hour's alerted set, not every later run.
        let crossed = lower >= threshold && lower.saturating_sub(u64::from(n)) < threshold;
        if crossed && current.alerted.insert((kind, seen.tag)) {
            alerts.push(Alert {
                petition,
                source: Source {
                    kind,
                    value: table.value(kind, s * WAYS + way),
                },
                count: lower,
                threshold,
            });
        }
    }

    /// Notes an alert recorded in the feed (at recovery, or once written): no second one for
    /// that source and petition in its clock hour.
    pub fn note_alert(&self, petition: &Arc<Petition>, source: &Source, at_ms: u64, now_ms: u64) {
        let hour = at_ms / HOUR_MS;
        if hour != now_ms / HOUR_MS {
            return;
        }
        let Some(tag) = self.tag_of(source) else {
            return;
        };
        let mut held = petition.sources.lock();
        if let Some(current) = self.hour_of(&mut held, petition, hour) {
            current.alerted.insert((source.kind, tag));
        }
    }

    fn tag_of(&self, source: &Source) -> Option<u64> {
        let [ip, net] = match source.kind {
            SourceKind::EmailDomain => {
                return self
                    .domain_seen(&format!("@{}", source.value))
                    .map(|seen| seen.tag)
            }
            SourceKind::Ip => self.ip_seen(source.value.parse().ok()?),
            SourceKind::Network => self.ip_seen(source.value.split_once('/')?.0.parse().ok()?),
        };
        Some(if source.kind == SourceKind::Ip {
            ip.tag
        } else {
            net.tag
        })
    }

    /// The top `limit` sources of each kind of `petition` in the hour `which`.
    pub fn top(
        &self,
        petition: &Petition,
        which: SourceHour,
        limit: usize,
        now_ms: u64,
    ) -> TopSources {
        let hour = match which {
            SourceHour::Current => Some(now_ms / HOUR_MS),
            // None before the clock's first hour ended: an empty answer.
            SourceHour::Previous => (now_ms / HOUR_MS).checked_sub(1),
        };
        let mut top = TopSources {
            hour_start_ms: hour.unwrap_or(0) * HOUR_MS,
            at_ms: now_ms,
            ips: Vec::new(),
            networks: Vec::new(),
            email_domains: Vec::new(),
        };
        let held = petition.sources.lock();
        let found = held.as_ref().and_then(|sources| {
            [Some(&sources.current), sources.previous.as_ref()]
                .into_iter()
                .flatten()
                .find(|h| Some(h.hour) == hour)
        });
        if let Some(found) = found {
            let [ips, networks, domains] = &found.tables;
            top.ips = ips.top(SourceKind::Ip, limit);
            top.networks = networks.top(SourceKind::Network, limit);
            top.email_domains = domains.top(SourceKind::EmailDomain, limit);
        }
        top
    }

    /// Drops the tables of hours before the previous one, and of petitions left with none;
    /// returns their slots to the budget. Once per hour: does nothing if the last sweep was in
    /// the same hour.
    pub fn sweep(&self, now_ms: u64) {
        let hour = now_ms / HOUR_MS;
        if self.swept.swap(hour, Ordering::Relaxed) == hour {
            return;
        }
        // Taken out of the list, so that no petition's lock is waited for under the list's
        // (admission takes the list's under a petition's, to add one).
        let taken = std::mem::take(&mut *self.active.lock());
        let kept: Vec<Arc<Petition>> = taken
            .into_iter()
            .filter(|petition| {
                let mut held = petition.sources.lock();
                let Some(sources) = held.as_mut() else {
                    return false;
                };
                if sources.previous.as_ref().is_some_and(|p| p.hour + 1 < hour) {
                    let freed = sources.previous.take().map_or(0, |p| p.slots());
                    self.used.fetch_sub(freed, Ordering::Relaxed);
                }
                if sources.current.hour + 1 < hour {
                    self.used
                        .fetch_sub(sources.current.slots(), Ordering::Relaxed);
                    *held = None;
                    return false;
                }
                true
            })
            .collect();
        self.active.lock().extend(kept);
    }
}

/// The domain of an email (validated, so trimmed and holding an '@').
#[inline]
fn domain_of(email: &str) -> Option<&str> {
    let at = memchr::memrchr(b'@', email.as_bytes())?;
    email.get(at + 1..)
}

/// Whether `email` (validated: its domain holds no '@') ends with '@' and `domain`, compared
/// without a search for the '@' (nor a call into `bcmp`: [`same_bytes`]).
#[inline]
fn has_domain(email: &str, domain: &str) -> bool {
    let (email, domain) = (email.as_bytes(), domain.as_bytes());
    email.len() > domain.len()
        && email[email.len() - domain.len() - 1] == b'@'
        && same_bytes(&email[email.len() - domain.len()..], domain)
}

/// The address of a source key: IPv4 for an IPv4-mapped one.
fn addr_of(key: u128) -> IpAddr {
    crate::guard::unmap(IpAddr::V6(Ipv6Addr::from(key)))
}
