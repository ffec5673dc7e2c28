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
//! `entries × 32` bytes (a shard's part is made on its first signature), whatever the traffic; dropping a live slot forgets signatures, which can
//! only let through one the limit would have refused, never refuse one it would have taken.
//! Two pairs share a slot only if their tags and sets agree (a chance of about 2^-64 per pair).
//!
//! The limits are soft state: not persisted, so for one sustained window after a restart they
//! count from zero.

use std::net::IpAddr;

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

/// Slots per set.
pub const WAYS: usize = 4;
/// Locks over the table.
const SHARDS: usize = 256;
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
#[derive(Clone, Copy, Default)]
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
    shards: Vec<Mutex<Vec<Set>>>,
    /// Each shard's table address once made (0 before): read without its lock, to prefetch.
    bases: Vec<AtomicUsize>,
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
        let sets = sets_per_shard(limits.entries);
        Limiter {
            limits,
            seed: rand::random(),
            sets,
            shards: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            bases: (0..SHARDS).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// The key of a signature from `ip` to petition `petition`.
    #[inline]
    pub fn key(&self, petition: u32, ip: IpAddr) -> Key {
        let v6 = crate::guard::mapped(ip);
        let mut bytes = [0u8; 20];
        bytes[..4].copy_from_slice(&petition.to_le_bytes());
        bytes[4..].copy_from_slice(&v6.octets());
        let hash = xxhash_rust::xxh3::xxh3_128_with_seed(&bytes, self.seed);
        let high = (hash >> 64) as u64;
        Key {
            tag: (hash as u64) | 1,
            shard: (high as usize % SHARDS) as u32,
            set: ((high >> 8) as usize % self.sets) as u32,
        }
    }

    /// Asks the CPU for the first line of the set of `key`, all a new pair needs (a hint;
    /// call it a few signatures ahead).
    #[inline]
    pub fn prefetch(&self, key: Key) {
        let base = self.bases[key.shard as usize].load(Ordering::Relaxed);
        if base == 0 {
            return;
        }
        let set = base.wrapping_add(key.set as usize * std::mem::size_of::<Set>());
        crate::index::prefetch_line(set as *const u8);
    }

    /// Counts a signature from `ip` to petition `petition` at `now_ms`, unless the limits
    /// refuse it.
    #[cfg(test)]
    pub fn take(&self, petition: u32, ip: IpAddr, now_ms: u64) -> Result<(), Limited> {
        self.take_key(self.key(petition, ip), now_ms)
    }

    /// [`Limiter::take`] of a signature whose key is known.
    pub fn take_key(&self, key: Key, now_ms: u64) -> Result<(), Limited> {
        let now = (now_ms / 1_000).max(1) as u32;
        let Key { tag, shard, set } = key;
        let shard = shard as usize;
        let set = set as usize;
        let mut sets = self.shards[shard].lock();
        if sets.is_empty() {
            // A shard's table is made on its first signature: an engine that never sees an
            // address holds none. It is never resized after, so its address stays valid.
            sets.resize(self.sets, Set::default());
            self.bases[shard].store(sets.as_ptr() as usize, Ordering::Relaxed);
        }
        let set = &mut sets[set];
        let way = match set.tags.iter().position(|&t| t == tag) {
            Some(way) => way,
            None => {
                // An empty slot, an idle one, or the one whose newest signature is oldest: all
                // on the first line.
                let idle_before = now.saturating_sub(self.limits.longest());
                let way = (0..WAYS)
                    .position(|w| set.tags[w] == 0 || set.newest[w] <= idle_before)
                    .unwrap_or_else(|| (0..WAYS).min_by_key(|&w| set.newest[w]).unwrap_or(0));
                set.tags[way] = tag;
                set.kept[way] = 0;
                way
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

    /// Bytes the table takes now (the shards made so far).
    pub fn bytes(&self) -> u64 {
        let made = self
            .bases
            .iter()
            .filter(|base| base.load(Ordering::Relaxed) != 0)
            .count();
        (made * self.sets * std::mem::size_of::<Set>()) as u64
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
