//! Limits of signatures per (petition, address): a burst window and a sustained window, each
//! "at most N signatures in any P seconds" (the UK petitions site's defaults: 1 in 60 s and 5
//! in 300 s), in bounded memory whatever the number of addresses.
//!
//! A signature counts when it reaches the limit: valid, for an open petition, not blocked, from
//! an address not on the allow list. Duplicates count too (a script re-sending one signer is
//! limited like one sending many); a refused signature does not.
//!
//! The table is fixed-size: `entries` slots in sets of [`WAYS`], sharded under 256 locks. A
//! slot holds a 64-bit tag of its (petition, address) under a per-process seed and the times
//! (whole seconds) of its newest signatures, newest first. A set is two cache lines: the tags,
//! newest times and counts of its four slots on the first, their older times on the second; a
//! pair seen for the first time reads and writes the first line only. A new pair takes
//! an empty slot of its set, else one idle for the longest window (it holds nothing that could
//! refuse a signature), else the one whose newest signature is oldest. So memory is at most
//! `entries × 32` bytes (mapped when the limiter is made, held as it is written), whatever the
//! traffic; dropping a live slot forgets signatures, which can only let through one the limit
//! would have refused, never refuse one it would have taken. Two pairs share a slot only if
//! their tags and sets agree (a chance of about 2^-63 per pair).
//!
//! A call's signatures are taken together ([`Limiter::take_all`]): a big call shard by shard,
//! each shard's lock taken once for all its signatures. Taken one by one, the lock's two
//! atomic instructions were most of the limits' cost.
//!
//! The limits are soft state: not persisted, so for one sustained window after a restart they
//! count from zero.

use std::net::IpAddr;

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, MutexGuard};

/// How many keys ahead a set is prefetched: 8 measured 1.027 of 16 (the index's distance) in
/// P1 with limits on, and 4 0.985 of 8.
const PREFETCH_DISTANCE: usize = 8;

/// Slots per set.
pub const WAYS: usize = 4;
/// Locks over the table: 2^SHARD_BITS.
const SHARD_BITS: u32 = 8;
const SHARDS: usize = 1 << SHARD_BITS;
/// Keys in a call from which [`Limiter::take_all`] sorts them by shard: below it, locking
/// each key's shard costs less than the sort.
const GROUP_FROM: usize = 32;
/// Most signatures a window may allow (the times a slot keeps).
pub const WINDOW_COUNT_MAX: u32 = 5;
/// The longest window.
pub const WINDOW_SECONDS_MAX: u32 = 86_400;
/// Bytes of one slot: its tag and times.
pub const SLOT_BYTES: usize = 32;

/// "At most `count` signatures in any `seconds` seconds."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub count: u32,
    pub seconds: u32,
}

/// The limits per (petition, address), and the room they keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub burst: Window,
    pub sustained: Window,
    /// Slots in the table (rounded up to whole sets in every shard): the (petition, address)
    /// pairs remembered at once.
    pub entries: usize,
}

impl RateLimits {
    /// The UK petitions site's defaults: 1 signature in 60 s and 5 in 300 s per (petition,
    /// address), with room for a million pairs (32 MB).
    pub const UK: RateLimits = RateLimits {
        burst: Window {
            count: 1,
            seconds: 60,
        },
        sustained: Window {
            count: 5,
            seconds: 300,
        },
        entries: 1_000_000,
    };

    /// Parses the windows as flags give them: `BURST/SECONDS,SUSTAINED/SECONDS` (e.g.
    /// `1/60,5/300`), or `off` (`None`); each window checked as [`RateLimits::check`] does.
    pub fn parse_windows(text: &str) -> Result<Option<(Window, Window)>, String> {
        if text == "off" {
            return Ok(None);
        }
        let window = |part: &str| -> Result<Window, String> {
            let (count, seconds) = part
                .split_once('/')
                .ok_or_else(|| format!("{part:?} is not COUNT/SECONDS"))?;
            let window = Window {
                count: count
                    .trim()
                    .parse()
                    .map_err(|_| format!("{count:?} is not a count"))?,
                seconds: seconds
                    .trim()
                    .parse()
                    .map_err(|_| format!("{seconds:?} is not a number of seconds"))?,
            };
            if !(1..=WINDOW_COUNT_MAX).contains(&window.count)
                || !(1..=WINDOW_SECONDS_MAX).contains(&window.seconds)
            {
                return Err(format!(
                    "{part:?}: a window allows 1 to {WINDOW_COUNT_MAX} signatures in 1 to \
                     {WINDOW_SECONDS_MAX} seconds"
                ));
            }
            Ok(window)
        };
        let (burst, sustained) = text
            .split_once(',')
            .ok_or("BURST/SECONDS,SUSTAINED/SECONDS (e.g. 1/60,5/300), or off")?;
        Ok(Some((window(burst)?, window(sustained)?)))
    }

    /// Checks the limits; the message names what is wrong.
    pub fn check(&self) -> Result<(), &'static str> {
        for w in [self.burst, self.sustained] {
            if !(1..=WINDOW_COUNT_MAX).contains(&w.count) {
                return Err("rate limits: a window allows 1 to 5 signatures");
            }
            if !(1..=WINDOW_SECONDS_MAX).contains(&w.seconds) {
                return Err("rate limits: a window is 1 to 86,400 seconds");
            }
        }
        if !(1_000..=1 << 30).contains(&self.entries) {
            return Err("rate limits: 1,000 to 2^30 entries");
        }
        Ok(())
    }

    /// Bytes the table takes.
    pub fn bytes(&self) -> u64 {
        (sets_per_shard(self.entries) * SHARDS * WAYS * SLOT_BYTES) as u64
    }

    fn longest(&self) -> u32 {
        self.burst.seconds.max(self.sustained.seconds)
    }
}

fn sets_per_shard(entries: usize) -> usize {
    entries.div_ceil(SHARDS * WAYS).max(1)
}

/// A set of slots, on two cache lines. Per slot: the tag of its pair (0: empty), the time of
/// its newest signature, how many times it keeps (at most [`WINDOW_COUNT_MAX`]), and on the
/// second line the older times, newest first.
#[derive(Clone, Copy, bytemuck::Zeroable, bytemuck::Pod)]
#[repr(C, align(64))]
struct Set {
    tags: [u64; WAYS],
    newest: [u32; WAYS],
    kept: [u32; WAYS],
    older: [[u32; WINDOW_COUNT_MAX as usize - 1]; WAYS],
}

impl Set {
    /// The `k`-th newest time of slot `way` (0: the newest), or 0 if it keeps fewer.
    fn time(&self, way: usize, k: usize) -> u32 {
        if k >= self.kept[way] as usize {
            0
        } else if k == 0 {
            self.newest[way]
        } else {
            self.older[way][k - 1]
        }
    }

    /// Records a signature at `now` in slot `way`.
    fn push(&mut self, way: usize, now: u32) {
        let kept = self.kept[way] as usize;
        if kept > 0 {
            let older = &mut self.older[way];
            older.copy_within(..WINDOW_COUNT_MAX as usize - 2, 1);
            older[0] = self.newest[way];
        }
        self.newest[way] = now;
        self.kept[way] = (kept + 1).min(WINDOW_COUNT_MAX as usize) as u32;
    }
}

/// A signature the limit refuses, and when the pair may sign again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limited {
    pub retry_after_s: u32,
}

pub(crate) struct Limiter {
    limits: RateLimits,
    seed: u64,
    sets: usize,
    shards: Vec<Mutex<Table>>,
    /// Each shard's table address: read without its lock, to prefetch.
    bases: Vec<usize>,
    /// Whether each shard has taken a signature.
    used: Vec<AtomicBool>,
}

/// A shard's sets, in an anonymous memory mapping advised to use transparent huge pages. The
/// whole table is random accesses over 32 MB by default, some 8,000 pages of 4 KiB, far more
/// than the TLB holds; on huge pages P1 with limits on ran 1.018 times as fast (7 pairs). The
/// shards' mappings are made one after another when the limiter is, so the kernel merges them
/// and 2 MiB pages span them. A mapping arrives zeroed, which is an empty set, and holds memory
/// only where it is written.
struct Table(memmap2::MmapMut);

impl Table {
    fn new(sets: usize) -> Table {
        Table(crate::index::huge_page_map::<Set>(sets))
    }
}

impl std::ops::Deref for Table {
    type Target = [Set];

    #[inline]
    fn deref(&self) -> &[Set] {
        // A mapping is page-aligned and a whole number of sets long, so the cast cannot fail.
        bytemuck::cast_slice(&self.0)
    }
}

impl std::ops::DerefMut for Table {
    #[inline]
    fn deref_mut(&mut self) -> &mut [Set] {
        bytemuck::cast_slice_mut(&mut self.0)
    }
}

/// Where a (petition, address) pair lives in the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    tag: u64,
    shard: u32,
    set: u32,
}

impl Limiter {
    pub fn new(limits: RateLimits) -> Limiter {
        Limiter::with_seed(limits, rand::random())
    }

    fn with_seed(limits: RateLimits, seed: u64) -> Limiter {
        let sets = sets_per_shard(limits.entries);
        let shards: Vec<Mutex<Table>> = (0..SHARDS).map(|_| Mutex::new(Table::new(sets))).collect();
        Limiter {
            limits,
            seed,
            sets,
            bases: shards.iter().map(|t| t.lock().as_ptr() as usize).collect(),
            shards,
            used: (0..SHARDS).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// The key of a signature from `ip` to petition `petition`: a seeded 64-bit XXH3 of the
    /// petition and the address (an IPv4 address and its mapped IPv6 form are one address),
    /// whose top bits name the shard, the 32 below them the set, and the whole the tag.
    #[inline]
    pub fn key(&self, petition: u32, ip: IpAddr) -> Key {
        let hash = match crate::guard::unmap(ip) {
            IpAddr::V4(v4) => {
                let pair = (u64::from(petition) << 32) | u64::from(u32::from(v4));
                xxhash_rust::xxh3::xxh3_64_with_seed(&pair.to_le_bytes(), self.seed)
            }
            IpAddr::V6(v6) => {
                let mut bytes = [0u8; 20];
                bytes[..4].copy_from_slice(&petition.to_le_bytes());
                bytes[4..].copy_from_slice(&v6.octets());
                xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, self.seed)
            }
        };
        // The set by multiply and shift rather than a division: `sets` is no power of two.
        let set = (((hash >> (32 - SHARD_BITS)) & 0xffff_ffff) * self.sets as u64) >> 32;
        Key {
            tag: hash | 1,
            shard: (hash >> (64 - SHARD_BITS)) as u32,
            set: set as u32,
        }
    }

    /// Asks the CPU for the first line of the set of `key`, all a new pair needs (a hint;
    /// call it a few signatures ahead).
    #[inline]
    pub fn prefetch(&self, key: Key) {
        let base = self.bases[key.shard as usize];
        let set = base.wrapping_add(key.set as usize * std::mem::size_of::<Set>());
        crate::index::prefetch_line(set as *const u8);
    }

    /// Counts a signature from `ip` to petition `petition` at `now_ms`, unless the limits
    /// refuse it.
    #[cfg(test)]
    pub fn take(&self, petition: u32, ip: IpAddr, now_ms: u64) -> Result<(), Limited> {
        match self.take_all(&[(0, self.key(petition, ip))], now_ms).pop() {
            Some((_, limited)) => Err(limited),
            None => Ok(()),
        }
    }

    /// Counts each signature of `keys` (its input index and key, in input order) against the
    /// limits, and returns those refused, in input order. A few are taken one by one, each
    /// under its shard's lock; a call of many shard by shard, each shard's lock once for all
    /// its keys (a counting sort by shard keeps each pair's signatures in input order, so the
    /// answers are those of one by one). Each set is prefetched [`PREFETCH_DISTANCE`] keys
    /// ahead.
    pub fn take_all(&self, keys: &[(usize, Key)], now_ms: u64) -> Vec<(usize, Limited)> {
        let mut refused = Vec::new();
        if keys.len() < GROUP_FROM {
            for &(_, key) in keys.iter().take(PREFETCH_DISTANCE) {
                self.prefetch(key);
            }
            for (at, &(index, key)) in keys.iter().enumerate() {
                if let Some(&(_, ahead)) = keys.get(at + PREFETCH_DISTANCE) {
                    self.prefetch(ahead);
                }
                let mut sets = self.shard(key.shard as usize);
                if let Err(limited) = self.take_in(&mut sets, key, now_ms) {
                    refused.push((index, limited));
                }
            }
            return refused;
        }
        let mut starts = [0u32; SHARDS + 1];
        for (_, key) in keys {
            starts[key.shard as usize + 1] += 1;
        }
        for shard in 0..SHARDS {
            starts[shard + 1] += starts[shard];
        }
        // The keys' places in `keys`, by shard.
        let mut order = vec![0u32; keys.len()];
        let mut next = starts;
        for (at, (_, key)) in keys.iter().enumerate() {
            let slot = &mut next[key.shard as usize];
            order[*slot as usize] = at as u32;
            *slot += 1;
        }
        for &at in order.iter().take(PREFETCH_DISTANCE) {
            self.prefetch(keys[at as usize].1);
        }
        for shard in 0..SHARDS {
            let (from, to) = (starts[shard] as usize, starts[shard + 1] as usize);
            if from == to {
                continue;
            }
            let mut sets = self.shard(shard);
            for at in from..to {
                if let Some(&ahead) = order.get(at + PREFETCH_DISTANCE) {
                    self.prefetch(keys[ahead as usize].1);
                }
                let (index, key) = keys[order[at] as usize];
                if let Err(limited) = self.take_in(&mut sets, key, now_ms) {
                    refused.push((index, limited));
                }
            }
        }
        refused.sort_unstable_by_key(|&(index, _)| index);
        refused
    }

    /// A shard's table, locked.
    fn shard(&self, shard: usize) -> MutexGuard<'_, Table> {
        if !self.used[shard].load(Ordering::Relaxed) {
            self.used[shard].store(true, Ordering::Relaxed);
        }
        self.shards[shard].lock()
    }

    /// Takes a signature of `key` in its shard's table, `sets`.
    #[inline]
    fn take_in(&self, sets: &mut [Set], key: Key, now_ms: u64) -> Result<(), Limited> {
        let now = (now_ms / 1_000).max(1) as u32;
        let set = &mut sets[key.set as usize];
        let tag = key.tag;
        let way = match set.tags.iter().position(|&t| t == tag) {
            Some(way) => way,
            None => {
                // An empty slot, an idle one, or the one whose newest signature is oldest: all
                // on the first line.
                let idle_before = now.saturating_sub(self.limits.longest());
                let way = (0..WAYS)
                    .position(|w| set.tags[w] == 0 || set.newest[w] <= idle_before)
                    .unwrap_or_else(|| (0..WAYS).min_by_key(|&w| set.newest[w]).unwrap_or(0));
                // A new pair has nothing in its windows: it is taken.
                set.tags[way] = tag;
                set.newest[way] = now;
                set.kept[way] = 1;
                return Ok(());
            }
        };
        let mut retry_after_s = 0;
        for window in [self.limits.burst, self.limits.sustained] {
            // The signatures in the window now: the last `count` kept, newer than
            // `now - seconds`. If there are `count` of them, the oldest must leave first.
            let oldest = set.time(way, window.count as usize - 1);
            if oldest != 0 && now - oldest.min(now) < window.seconds {
                retry_after_s = retry_after_s.max(oldest + window.seconds - now);
            }
        }
        if retry_after_s > 0 {
            return Err(Limited { retry_after_s });
        }
        set.push(way, now);
        Ok(())
    }

    /// Pairs remembered now (slots in use and not idle at `now_ms`).
    #[cfg(test)]
    pub fn live(&self, now_ms: u64) -> usize {
        let idle_before = ((now_ms / 1_000) as u32).saturating_sub(self.limits.longest());
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .lock()
                    .iter()
                    .map(|set| {
                        (0..WAYS)
                            .filter(|&w| set.tags[w] != 0 && set.newest[w] > idle_before)
                            .count()
                    })
                    .sum::<usize>()
            })
            .sum()
    }

    pub fn limits(&self) -> RateLimits {
        self.limits
    }

    /// Bytes the table takes now: the shards that have taken a signature (a shard's mapping
    /// holds no memory before).
    pub fn bytes(&self) -> u64 {
        let used = self
            .used
            .iter()
            .filter(|used| used.load(Ordering::Relaxed))
            .count();
        (used * self.sets * std::mem::size_of::<Set>()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000;
    const T0: u64 = 1_700_000_000 * S;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn small() -> Limiter {
        Limiter::new(RateLimits {
            entries: 1_000,
            ..RateLimits::UK
        })
    }

    #[test]
    fn the_burst_window_at_its_edges() {
        let limiter = small();
        let a = ip("192.0.2.1");
        assert_eq!(limiter.take(1, a, T0), Ok(()));
        // 1 in 60 s: at 59.999 s still limited, at 60 s free.
        assert_eq!(
            limiter.take(1, a, T0 + 59_999),
            Err(Limited { retry_after_s: 1 })
        );
        assert_eq!(
            limiter.take(1, a, T0 + 10 * S),
            Err(Limited { retry_after_s: 50 })
        );
        assert_eq!(limiter.take(1, a, T0 + 60 * S), Ok(()));
        // Refused signatures did not count: the next is free 60 s after the last taken.
        assert_eq!(limiter.take(1, a, T0 + 120 * S), Ok(()));
    }

    /// With the UK defaults one in 60 s never makes six in 300 s; a wider burst shows the
    /// sustained window refusing what the burst would take.
    #[test]
    fn the_sustained_window_at_its_edges() {
        let limiter = Limiter::new(RateLimits {
            burst: Window {
                count: 2,
                seconds: 60,
            },
            sustained: Window {
                count: 3,
                seconds: 300,
            },
            entries: 1_000,
        });
        let a = ip("2001:db8::1");
        assert_eq!(limiter.take(1, a, T0), Ok(()));
        assert_eq!(limiter.take(1, a, T0 + S), Ok(()));
        assert_eq!(
            limiter.take(1, a, T0 + 2 * S),
            Err(Limited { retry_after_s: 58 })
        );
        assert_eq!(limiter.take(1, a, T0 + 60 * S), Ok(()));
        // Burst: the two newest are 1 s and 60 s, so 61 s is free of it; sustained: three
        // since 0 s, so the fourth waits until 300 s.
        assert_eq!(
            limiter.take(1, a, T0 + 61 * S),
            Err(Limited { retry_after_s: 239 })
        );
        assert_eq!(
            limiter.take(1, a, T0 + 299 * S + 999),
            Err(Limited { retry_after_s: 1 })
        );
        assert_eq!(limiter.take(1, a, T0 + 300 * S), Ok(()));
    }

    #[test]
    fn pairs_are_per_petition_and_per_address_v4_and_v6() {
        let limiter = small();
        let v4 = ip("198.51.100.7");
        let v6 = ip("2001:db8::7");
        assert_eq!(limiter.take(1, v4, T0), Ok(()));
        assert!(limiter.take(1, v4, T0 + S).is_err());
        assert!(
            limiter.take(1, ip("::ffff:198.51.100.7"), T0 + S).is_err(),
            "the mapped form is the same address"
        );
        assert_eq!(limiter.take(2, v4, T0 + S), Ok(()), "another petition");
        assert_eq!(limiter.take(1, ip("198.51.100.8"), T0 + S), Ok(()));
        assert_eq!(limiter.take(1, v6, T0 + S), Ok(()));
        assert!(limiter.take(1, v6, T0 + 2 * S).is_err());
        assert_eq!(limiter.take(1, ip("2001:db8::8"), T0 + 2 * S), Ok(()));
    }

    /// A million addresses through a table of a thousand slots: memory stays the table's, idle
    /// slots are reused, and no address is ever refused on its first signature.
    #[test]
    fn memory_is_bounded_and_eviction_never_refuses_a_new_signer() {
        assert_eq!(std::mem::size_of::<Set>(), 2 * 64, "two cache lines");
        assert_eq!(std::mem::size_of::<Set>(), WAYS * SLOT_BYTES);
        let limiter = small();
        let bytes = limiter.limits().bytes();
        assert!(bytes <= 2_048 * SLOT_BYTES as u64, "{bytes}");
        for i in 0u32..1_000_000 {
            let ip = IpAddr::from(i.wrapping_mul(2_654_435_761).to_be_bytes());
            let at = T0 + u64::from(i) / 1_000 * S;
            assert_eq!(limiter.take(7, ip, at), Ok(()), "{ip} at {i}");
        }
        // Every shard was made, at the stated size, and every slot holds a pair of the last
        // 300 s: the table is full and no larger, whatever the million addresses.
        assert_eq!(limiter.bytes(), limiter.limits().bytes());
        let live = limiter.live(T0 + 999 * S);
        assert_eq!(live, SHARDS * WAYS * sets_per_shard(1_000));
        // The last second's addresses are remembered (a second is 1,000 of them, well within
        // the table): each is refused a second signature.
        let last = 999_999u32.wrapping_mul(2_654_435_761);
        assert!(limiter
            .take(7, IpAddr::from(last.to_be_bytes()), T0 + 999 * S)
            .is_err());
    }

    /// A call's signatures taken together, sorted by shard for the big calls, give each the
    /// answer it gets taken alone in input order: a set's signatures keep their order, so even
    /// its evictions are the same.
    #[test]
    fn a_call_taken_at_once_answers_as_its_signatures_one_by_one() {
        let seed = 0x5eed;
        let together = Limiter::with_seed(RateLimits::UK, seed);
        let alone = Limiter::with_seed(RateLimits::UK, seed);
        let small = RateLimits {
            entries: 1_000,
            ..RateLimits::UK
        };
        let (small_together, small_alone) = (
            Limiter::with_seed(small, seed),
            Limiter::with_seed(small, seed),
        );
        let mut rng = 0x1234_5678_u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let (mut refused, mut evicted_refusals) = (0, 0);
        let mut at = T0;
        for size in [1, 5, 31, 32, 33, 100, 1_000, 4_000, 2, 700] {
            let pairs: Vec<(u32, IpAddr)> = (0..size)
                .map(|_| {
                    let address = next(3_000) as u32;
                    let ip = if address.is_multiple_of(3) {
                        IpAddr::from((u128::from(address) | 0x2001_0db8 << 96).to_be_bytes())
                    } else {
                        IpAddr::from(address.to_be_bytes())
                    };
                    (next(3) as u32, ip)
                })
                .collect();
            for (big, one) in [(&together, &alone), (&small_together, &small_alone)] {
                let keys: Vec<(usize, Key)> = pairs
                    .iter()
                    .enumerate()
                    .map(|(index, &(petition, ip))| (index, big.key(petition, ip)))
                    .collect();
                let got = big.take_all(&keys, at);
                let want: Vec<(usize, Limited)> = pairs
                    .iter()
                    .enumerate()
                    .filter_map(|(index, &(petition, ip))| {
                        one.take(petition, ip, at)
                            .err()
                            .map(|limited| (index, limited))
                    })
                    .collect();
                assert_eq!(got, want, "a call of {size} at {at}");
                if std::ptr::eq(big, &together) {
                    refused += got.len();
                } else {
                    evicted_refusals += want.len();
                }
            }
            at += 20 * S;
        }
        // Both paths ran on calls that refuse, with a table roomy enough to remember every
        // pair and with one that evicts.
        assert!(refused > 1_000, "{refused}");
        assert!(
            evicted_refusals > 0 && evicted_refusals < refused,
            "{evicted_refusals}"
        );
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(RateLimits::UK.check(), Ok(()));
        for bad in [
            RateLimits {
                burst: Window {
                    count: 0,
                    seconds: 60,
                },
                ..RateLimits::UK
            },
            RateLimits {
                sustained: Window {
                    count: 6,
                    seconds: 300,
                },
                ..RateLimits::UK
            },
            RateLimits {
                sustained: Window {
                    count: 5,
                    seconds: 0,
                },
                ..RateLimits::UK
            },
            RateLimits {
                entries: 10,
                ..RateLimits::UK
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
