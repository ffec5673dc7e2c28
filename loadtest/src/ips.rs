//! `--ips`, `--abusers`, `--abuse-share`: the source address each signature carries, and the
//! abuse mix that tries the server's limits per (petition, address).
//!
//! As `--countries` does for a country, a signer's address is a function of the run's seed and
//! the signer (its connection and number, as its email has them): one hash decides whether the
//! signer is one of the abusers' (below a cut that is `--abuse-share` of the 53-bit range), a
//! second one which of the group's addresses it signs from (a multiply-shift over the group's
//! size). No allocation on the load path, and a re-sent signer (`--dup-ratio`) comes from the
//! same address as the first time, in every run with the same seed.
//!
//! The two groups live in disjoint networks, so that they cannot share an address and an
//! operator can tell them apart, or block one, by network: the `--ips N` addresses are
//! `10.0.0.1`, `10.0.0.2`, … (N consecutive addresses from [`NORMAL_FIRST`], in
//! [`NORMAL_NETWORK`]), the `--abusers K` addresses `198.18.0.1`, `198.18.0.2`, … (from
//! [`ABUSER_FIRST`], in [`ABUSER_NETWORK`], the range RFC 2544 sets aside for benchmarks).
//!
//! A signature carries its address as `,"ip":"10.0.0.7"` after the other members. Without
//! `--ips` nothing is added, so the requests are byte for byte what they were before.
//!
//! The server answers a signature over its limits with 429 `ip_rate_limited` and one a block
//! list matches with 403 `blocked` ([`crate::outcome::Outcome::IpRateLimited`],
//! [`crate::outcome::Outcome::Blocked`]): final refusals, counted, never retried, never
//! acknowledged. With `--abusers` each connection also counts its signatures' outcomes per group
//! ([`GroupCounts`]), which the report shows side by side.

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::kept::{splitmix64, NUMBER_BITS};
use crate::outcome::Outcome;

/// The first of the `--ips` addresses, `10.0.0.1`.
pub const NORMAL_FIRST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// The network the `--ips` addresses are in.
pub const NORMAL_NETWORK: &str = "10.0.0.0/8";

/// Most `--ips` addresses: `10.0.0.1` to `10.255.255.254`.
pub const IPS_MAX: u32 = (1 << 24) - 2;

/// The first of the `--abusers` addresses, `198.18.0.1`.
pub const ABUSER_FIRST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// The network the `--abusers` addresses are in (RFC 2544's benchmarking range).
pub const ABUSER_NETWORK: &str = "198.18.0.0/15";

/// Most `--abusers` addresses: `198.18.0.1` to `198.19.255.254`.
pub const ABUSERS_MAX: u32 = (1 << 17) - 2;

/// Bits of a signer's hash that choose its group: the top 53, a fraction exact in an `f64`.
const FRACTION_BITS: u32 = 53;

/// The whole range of those bits: a share of 1.
const FRACTION_ONE: u64 = 1 << FRACTION_BITS;

/// Mixed into the seed so that a signer's address follows neither its country
/// ([`crate::countries`]) nor whether its token is kept ([`crate::kept::keep`]), which hash the
/// same seed and signer.
const SALT: u64 = 0x6970_7634_6164_6472;

/// Which group a signer is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// One of the `--abusers` addresses.
    Abuser,
    /// One of the `--ips` addresses: everyone else.
    Other,
}

/// The address a signer signs from: its group and its index in the group's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    /// The group.
    pub group: Group,
    /// From 0 to the group's size, exclusive.
    pub index: u32,
}

impl Source {
    /// The address: the group's first plus the index.
    pub fn address(self) -> Ipv4Addr {
        let first = match self.group {
            Group::Abuser => ABUSER_FIRST,
            Group::Other => NORMAL_FIRST,
        };
        Ipv4Addr::from(u32::from(first) + self.index)
    }
}

/// The abuse mix of `--abusers K --abuse-share F`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Abuse {
    /// K.
    abusers: u32,
    /// F.
    share: f64,
    /// Signers whose hash fraction is below this are the abusers'.
    cut: u64,
}

/// Where signatures come from: `--ips` and, with `--abusers`, the abuse mix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ips {
    normal: u32,
    abuse: Option<Abuse>,
}

impl Ips {
    /// `--ips normal`, and `--abusers K --abuse-share F` as `abuse = Some((K, F))`. Refuses
    /// counts outside 1..=[`IPS_MAX`] and 1..=[`ABUSERS_MAX`] and a share outside (0, 1), with a
    /// sentence naming the flag (the flag parsers refuse them first; this guards other callers).
    pub fn new(normal: u32, abuse: Option<(u32, f64)>) -> Result<Ips, String> {
        if !(1..=IPS_MAX).contains(&normal) {
            return Err(format!(
                "--ips must be from 1 to {IPS_MAX} (the addresses of {NORMAL_NETWORK} but the \
                 first and the last), not {normal}"
            ));
        }
        let abuse = match abuse {
            None => None,
            Some((abusers, share)) => {
                check_abusers(u64::from(abusers)).map_err(|e| format!("--abusers {e}"))?;
                check_abuse_share(share, &share.to_string())
                    .map_err(|e| format!("--abuse-share {e}"))?;
                Some(Abuse {
                    abusers,
                    share,
                    cut: (share * FRACTION_ONE as f64).round() as u64,
                })
            }
        };
        Ok(Ips { normal, abuse })
    }

    /// The addresses of the flags, if `--ips` was given; an error for a combination the flag
    /// parser lets through only when the flags are built by hand (`--abusers` without `--ips`
    /// or without `--abuse-share`, `--abuse-share` without `--abusers`).
    pub fn from_flags(
        ips: Option<u32>,
        abusers: Option<u32>,
        abuse_share: Option<f64>,
    ) -> Result<Option<Ips>, String> {
        match (ips, abusers, abuse_share) {
            (None, None, None) => Ok(None),
            (None, _, _) => Err(
                "--abusers and --abuse-share need --ips N: the addresses everyone else signs from"
                    .to_owned(),
            ),
            (Some(_), Some(_), None) => Err(
                "--abusers needs --abuse-share F: the share of the signatures the abusers send"
                    .to_owned(),
            ),
            (Some(_), None, Some(_)) => Err(
                "--abuse-share needs --abusers K: the number of addresses the abusers send from"
                    .to_owned(),
            ),
            (Some(normal), abusers, share) => Ips::new(normal, abusers.zip(share)).map(Some),
        }
    }

    /// `--ips`.
    pub fn normal(&self) -> u32 {
        self.normal
    }

    /// `--abusers`, if given.
    pub fn abusers(&self) -> Option<u32> {
        self.abuse.map(|a| a.abusers)
    }

    /// `--abuse-share`, if given.
    pub fn abuse_share(&self) -> Option<f64> {
        self.abuse.map(|a| a.share)
    }

    /// The address of signer `number` of `connection` in a run seeded `seed`: a function of
    /// these three alone.
    pub fn source(&self, seed: u64, connection: u32, number: u64) -> Source {
        let signer = (u64::from(connection) << NUMBER_BITS) ^ number;
        let hash = splitmix64(splitmix64(seed ^ SALT) ^ splitmix64(signer));
        let (group, size) = match self.abuse {
            Some(abuse) if hash >> (64 - FRACTION_BITS) < abuse.cut => {
                (Group::Abuser, abuse.abusers)
            }
            _ => (Group::Other, self.normal),
        };
        // A second hash, spread over the group by a 64 × 32-bit multiply (bias below 2^-32).
        let draw = splitmix64(hash ^ SALT);
        let index = ((u128::from(draw) * u128::from(size)) >> 64) as u32;
        Source { group, index }
    }

    /// The group of signer `number` of `connection` (see [`Ips::source`]).
    pub fn group(&self, seed: u64, connection: u32, number: u64) -> Group {
        self.source(seed, connection, number).group
    }

    /// Appends `,"ip":"<address>"` of signer `number` of `connection` to a signature's JSON
    /// object being written. Allocates nothing once `out` has grown.
    pub fn write_member(&self, out: &mut Vec<u8>, seed: u64, connection: u32, number: u64) {
        let address = self.source(seed, connection, number).address();
        out.extend_from_slice(b",\"ip\":\"");
        for (i, octet) in address.octets().into_iter().enumerate() {
            if i > 0 {
                out.push(b'.');
            }
            write_octet(out, octet);
        }
        out.push(b'"');
    }

    /// For people, e.g. `1000 addresses from 10.0.0.1; 10 abusers from 198.18.0.1 send 20% of
    /// the signers`.
    pub fn describe(&self) -> String {
        let normal = format!(
            "{} {} from {NORMAL_FIRST} ({NORMAL_NETWORK})",
            self.normal,
            if self.normal == 1 {
                "address"
            } else {
                "addresses"
            }
        );
        match self.abuse {
            None => normal,
            Some(abuse) => format!(
                "{normal}; {} {} from {ABUSER_FIRST} ({ABUSER_NETWORK}) send {}% of the signers",
                abuse.abusers,
                if abuse.abusers == 1 {
                    "abuser"
                } else {
                    "abusers"
                },
                crate::countries::percent(abuse.share)
            ),
        }
    }
}

/// Writes an octet in decimal.
fn write_octet(out: &mut Vec<u8>, octet: u8) {
    if octet >= 100 {
        out.push(b'0' + octet / 100);
    }
    if octet >= 10 {
        out.push(b'0' + octet / 10 % 10);
    }
    out.push(b'0' + octet % 10);
}

/// Parses `--ips`: a whole number of addresses from 1 to [`IPS_MAX`].
pub fn parse_ips(text: &str) -> Result<u32, String> {
    let n: u64 = text.trim().parse().map_err(|_| {
        format!("{text:?} is not a whole number of addresses; expected e.g. 100000")
    })?;
    match u32::try_from(n) {
        Ok(n) if (1..=IPS_MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be from 1 to {IPS_MAX} (the addresses of {NORMAL_NETWORK} but the first and \
             the last), not {text}"
        )),
    }
}

/// Parses `--abusers`: a whole number of addresses from 1 to [`ABUSERS_MAX`].
pub fn parse_abusers(text: &str) -> Result<u32, String> {
    let n: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of addresses; expected e.g. 10"))?;
    check_abusers(n)
}

/// `--abusers` once a number: from 1 to [`ABUSERS_MAX`].
fn check_abusers(n: u64) -> Result<u32, String> {
    match u32::try_from(n) {
        Ok(0) => Err(
            "must be at least 1: an abuse mix needs an address to send from (leave --abusers \
             out for none)"
                .to_owned(),
        ),
        Ok(n) if n <= ABUSERS_MAX => Ok(n),
        _ => Err(format!(
            "must be from 1 to {ABUSERS_MAX} (the addresses of {ABUSER_NETWORK} but the first \
             and the last), not {n}"
        )),
    }
}

/// Parses `--abuse-share`: more than 0 and less than 1.
pub fn parse_abuse_share(text: &str) -> Result<f64, String> {
    let share: f64 = text.trim().parse().map_err(|_| {
        format!("{text:?} is not a number; expected a share, more than 0 and less than 1, e.g. 0.2")
    })?;
    check_abuse_share(share, text)
}

/// `--abuse-share` once a number (written `text`): more than 0 and less than 1.
fn check_abuse_share(share: f64, text: &str) -> Result<f64, String> {
    if !(share > 0.0 && share < 1.0) {
        return Err(format!(
            "must be more than 0 and less than 1 (the share of the signatures the abusers send; \
             the rest come from the --ips addresses), not {text}"
        ));
    }
    Ok(share)
}

/// One group's signatures by outcome: the report's split with `--abusers`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GroupCounts {
    /// Signatures sent: answered, timed out or lost with their connection.
    pub sent: u64,
    /// Answered 201 accepted, 200 duplicate or 202 pending: the server took the signer (or had
    /// it already).
    pub accepted: u64,
    /// Answered 429 `ip_rate_limited`.
    pub limited: u64,
    /// Answered 403 `blocked`.
    pub blocked: u64,
    /// Anything else: other refusals and errors, timeouts, connection errors.
    pub other: u64,
}

impl GroupCounts {
    /// Counts one signature's outcome.
    pub fn add(&mut self, outcome: &Outcome) {
        self.sent += 1;
        match outcome {
            Outcome::Accepted | Outcome::Duplicate | Outcome::Pending { .. } => {
                self.accepted += 1;
            }
            Outcome::IpRateLimited => self.limited += 1,
            Outcome::Blocked => self.blocked += 1,
            _ => self.other += 1,
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &GroupCounts) {
        self.sent += other.sent;
        self.accepted += other.accepted;
        self.limited += other.limited;
        self.blocked += other.blocked;
        self.other += other.other;
    }
}

/// Signatures by outcome per group, with `--abusers`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GroupSplit {
    /// The abusers' addresses.
    pub abusers: GroupCounts,
    /// The `--ips` addresses: everyone else.
    pub others: GroupCounts,
}

impl GroupSplit {
    /// Counts one signature's outcome in its group.
    pub fn add(&mut self, group: Group, outcome: &Outcome) {
        match group {
            Group::Abuser => self.abusers.add(outcome),
            Group::Other => self.others.add(outcome),
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &GroupSplit) {
        self.abusers.merge(&other.abusers);
        self.others.merge(&other.others);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;

    /// Signers 0..count over 8 connections, as (connection, number).
    fn signers(count: u64) -> impl Iterator<Item = (u32, u64)> {
        (0..count).map(|i| ((i % 8) as u32, i / 8))
    }

    #[test]
    fn a_signer_signs_from_the_same_address_every_time() {
        let ips = Ips::new(1000, Some((5, 0.3))).unwrap();
        let sources = |seed| {
            signers(20_000)
                .map(|(connection, n)| ips.source(seed, connection, n))
                .collect::<Vec<_>>()
        };
        let first = sources(42);
        assert_eq!(first, sources(42));
        assert_ne!(first, sources(43), "another seed, other choices");
        // The bytes written follow the source.
        let mut out = Vec::new();
        for (connection, n) in signers(2000) {
            out.clear();
            ips.write_member(&mut out, 42, connection, n);
            let address = ips.source(42, connection, n).address();
            assert_eq!(
                String::from_utf8(out.clone()).unwrap(),
                format!(",\"ip\":\"{address}\"")
            );
        }
    }

    #[test]
    fn the_addresses_spread_over_n() {
        // 100,000 signers over 1000 addresses: 100 each on average, every one used, none
        // beyond; a binomial's standard deviation is about 10, and the seed is fixed.
        let ips = Ips::new(1000, None).unwrap();
        let mut per_address: HashMap<Ipv4Addr, u64> = HashMap::new();
        for (connection, n) in signers(100_000) {
            let source = ips.source(7, connection, n);
            assert_eq!(source.group, Group::Other);
            assert!(source.index < 1000);
            *per_address.entry(source.address()).or_default() += 1;
        }
        assert_eq!(per_address.len(), 1000);
        let (low, high) = (
            *per_address.values().min().unwrap(),
            *per_address.values().max().unwrap(),
        );
        assert!(low > 55 && high < 145, "{low}..{high}");
        let first = u32::from(NORMAL_FIRST);
        assert!(per_address
            .keys()
            .all(|a| (first..first + 1000).contains(&u32::from(*a))));
        assert!(per_address.contains_key(&Ipv4Addr::new(10, 0, 0, 1)));
        assert!(per_address.contains_key(&Ipv4Addr::new(10, 0, 3, 232)));
        // One address: everyone signs from it.
        let one = Ips::new(1, None).unwrap();
        assert!(
            signers(1000).all(|(c, n)| one.source(3, c, n).address() == Ipv4Addr::new(10, 0, 0, 1))
        );
    }

    #[test]
    fn the_abusers_get_their_share_from_their_own_addresses() {
        for (abusers, share) in [(3, 0.2), (1, 0.5), (50, 0.01), (10, 0.9)] {
            let ips = Ips::new(200, Some((abusers, share))).unwrap();
            let mut sources: HashMap<Group, HashMap<u32, u64>> = HashMap::new();
            for (connection, n) in signers(100_000) {
                let source = ips.source(11, connection, n);
                *sources
                    .entry(source.group)
                    .or_default()
                    .entry(source.index)
                    .or_default() += 1;
            }
            let abused: u64 = sources[&Group::Abuser].values().sum();
            // The standard deviation of the share over 100,000 signers is at most 0.0016:
            // 0.008 is five of them, and the seed is fixed, so this cannot flake.
            let got = abused as f64 / 100_000.0;
            assert!((got - share).abs() < 0.008, "{abusers} {share}: {got}");
            // Every abuser address is used (each has 20 signers or more on average), and only
            // those; likewise everyone else's (50 or more each).
            assert_eq!(sources[&Group::Abuser].len(), abusers as usize);
            assert!(sources[&Group::Abuser].keys().all(|&i| i < abusers));
            assert_eq!(sources[&Group::Other].len(), 200);
            assert!(sources[&Group::Other].keys().all(|&i| i < 200));
        }
    }

    #[test]
    fn the_groups_cannot_share_an_address() {
        let last_normal = Source {
            group: Group::Other,
            index: IPS_MAX - 1,
        };
        let last_abuser = Source {
            group: Group::Abuser,
            index: ABUSERS_MAX - 1,
        };
        assert_eq!(last_normal.address(), Ipv4Addr::new(10, 255, 255, 254));
        assert_eq!(
            Source {
                group: Group::Abuser,
                index: 0
            }
            .address(),
            Ipv4Addr::new(198, 18, 0, 1)
        );
        assert_eq!(last_abuser.address(), Ipv4Addr::new(198, 19, 255, 254));
        // Neither network holds an address of the other.
        let in_normal = |a: Ipv4Addr| a.octets()[0] == 10;
        let in_abusers = |a: Ipv4Addr| u32::from(a) >> 17 == u32::from(ABUSER_FIRST) >> 17;
        for index in [0, 1, 255, 65_535, ABUSERS_MAX - 1] {
            let a = Source {
                group: Group::Abuser,
                index,
            }
            .address();
            assert!(in_abusers(a) && !in_normal(a), "{a}");
        }
        for index in [0, 1, 255, ABUSERS_MAX, IPS_MAX - 1] {
            let a = Source {
                group: Group::Other,
                index,
            }
            .address();
            assert!(in_normal(a) && !in_abusers(a), "{a}");
        }
    }

    #[test]
    fn the_address_does_not_follow_the_country_or_the_kept_tokens() {
        // countries::place and kept::keep hash the same seed and signer: among the signers
        // either picks at 0.5, the abusers' share holds as among all.
        let ips = Ips::new(100, Some((2, 0.5))).unwrap();
        let countries = crate::countries::Countries::parse("GB:0.5,US:0.5").unwrap();
        let share_among = |pick: &dyn Fn(u32, u64) -> bool| {
            let picked: Vec<(u32, u64)> = signers(40_000).filter(|&(c, n)| pick(c, n)).collect();
            picked
                .iter()
                .filter(|&&(c, n)| ips.group(9, c, n) == Group::Abuser)
                .count() as f64
                / picked.len() as f64
        };
        let kept = share_among(&|c, n| crate::kept::keep(9, c, n, 0.5));
        let gb = share_among(&|c, n| countries.place(9, c, n).unwrap().country == "GB");
        assert!((kept - 0.5).abs() < 0.02, "{kept}");
        assert!((gb - 0.5).abs() < 0.02, "{gb}");
    }

    #[test]
    fn octets_are_written_in_decimal() {
        let mut out = Vec::new();
        for octet in [0u8, 7, 9, 10, 99, 100, 199, 200, 255] {
            out.clear();
            write_octet(&mut out, octet);
            assert_eq!(String::from_utf8(out.clone()).unwrap(), octet.to_string());
        }
    }

    #[test]
    fn flags_are_checked() {
        assert_eq!(parse_ips("1"), Ok(1));
        assert_eq!(parse_ips(" 16777214 "), Ok(IPS_MAX));
        for bad in ["0", "16777215", "-1", "1.5", "", "many", "99999999999"] {
            assert!(parse_ips(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_abusers("10"), Ok(10));
        assert_eq!(parse_abusers("131070"), Ok(ABUSERS_MAX));
        assert!(parse_abusers("0").unwrap_err().contains("at least 1"));
        for bad in ["131071", "-1", "x", ""] {
            assert!(parse_abusers(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_abuse_share("0.2"), Ok(0.2));
        assert_eq!(parse_abuse_share("1e-3"), Ok(0.001));
        for bad in ["0", "1", "-0.1", "1.5", "nan", "inf", "", "20%"] {
            assert!(parse_abuse_share(bad).is_err(), "{bad}");
        }
        assert!(Ips::new(0, None).is_err());
        assert!(Ips::new(5, Some((0, 0.5))).is_err());
        assert!(Ips::new(5, Some((1, 1.0))).is_err());
        assert_eq!(Ips::from_flags(None, None, None), Ok(None));
        let needs = |ips, abusers, share, needle: &str| {
            let error = Ips::from_flags(ips, abusers, share).unwrap_err();
            assert!(error.contains(needle), "{error}");
        };
        needs(None, Some(3), Some(0.2), "need --ips N");
        needs(None, None, Some(0.2), "need --ips N");
        needs(Some(10), Some(3), None, "needs --abuse-share F");
        needs(Some(10), None, Some(0.2), "needs --abusers K");
        let ips = Ips::from_flags(Some(10), Some(3), Some(0.2))
            .unwrap()
            .unwrap();
        assert_eq!(
            (ips.normal(), ips.abusers(), ips.abuse_share()),
            (10, Some(3), Some(0.2))
        );
        assert_eq!(
            ips.describe(),
            "10 addresses from 10.0.0.1 (10.0.0.0/8); 3 abusers from 198.18.0.1 \
             (198.18.0.0/15) send 20% of the signers"
        );
        assert_eq!(
            Ips::new(1, None).unwrap().describe(),
            "1 address from 10.0.0.1 (10.0.0.0/8)"
        );
    }

    #[test]
    fn groups_count_what_the_report_splits() {
        let mut split = GroupSplit::default();
        for outcome in [
            Outcome::Accepted,
            Outcome::Duplicate,
            Outcome::IpRateLimited,
            Outcome::IpRateLimited,
            Outcome::Blocked,
            Outcome::Timeout,
            Outcome::RateLimited,
        ] {
            split.add(Group::Abuser, &outcome);
        }
        split.add(Group::Other, &Outcome::Accepted);
        let abusers = GroupCounts {
            sent: 7,
            accepted: 2,
            limited: 2,
            blocked: 1,
            other: 2,
        };
        assert_eq!(split.abusers, abusers);
        assert_eq!(split.others.sent, 1);
        let mut twice = split;
        twice.merge(&split);
        assert_eq!(twice.abusers.limited, 4);
        assert_eq!(twice.others.accepted, 2);
    }
}
