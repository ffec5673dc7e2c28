//! `--countries`: which country (and region) each signature carries, and the server's breakdown
//! of a petition's count by country.
//!
//! The spec is parsed once, when the flags are: each country becomes its share of a 53-bit
//! range and the JSON member its signatures carry (`,"country":"GB"`), built then. On the load
//! path a signer's country is a hash of the run's seed and the signer (its connection and
//! number, as its email has them) looked up in those ranges, and its region, if the country has
//! any, a second hash of the same: no allocation, and a re-sent signer (`--dup-ratio`) carries
//! the same country and region as the first time, in every run with the same seed.
//!
//! The server counts signatures without a country under `ZZ`; its breakdown
//! (`GET /v1/petitions/{id}/countries`) sums to the petition's count read with it, which the
//! report shows and `verify` checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::kept::{splitmix64, NUMBER_BITS};

/// The 249 assigned ISO 3166-1 alpha-2 codes, grouped by first letter: the list the engine
/// checks a signature's country against (`engine/src/country.rs`), repeated here because
/// loadtest speaks HTTP only and does not link the engine.
const ASSIGNED: [&str; 26] = [
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ",
    "BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ",
    "CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ",
    "DE DJ DK DM DO DZ",
    "EC EE EG EH ER ES ET",
    "FI FJ FK FM FO FR",
    "GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY",
    "HK HM HN HR HT HU",
    "ID IE IL IM IN IO IQ IR IS IT",
    "JE JM JO JP",
    "KE KG KH KI KM KN KP KR KW KY KZ",
    "LA LB LC LI LK LR LS LT LU LV LY",
    "MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ",
    "NA NC NE NF NG NI NL NO NP NR NU NZ",
    "OM",
    "PA PE PF PG PH PK PL PM PN PR PS PT PW PY",
    "QA",
    "RE RO RS RU RW",
    "SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ",
    "TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ",
    "UA UG UM US UY UZ",
    "VA VC VE VG VI VN VU",
    "WF WS",
    "",
    "YE YT",
    "ZA ZM ZW",
];

/// How many codes ISO 3166-1 assigns, and so the most countries `uniform:N` can take.
pub const ASSIGNED_COUNT: usize = 249;

/// The countries `uniform:N` takes first, in this order; after them it takes the other assigned
/// codes alphabetically.
const UNIFORM_FIRST: [&str; 66] = [
    "GB", "US", "FR", "DE", "CA", "AU", "IE", "NZ", "ES", "IT", "NL", "BE", "CH", "AT", "SE", "NO",
    "DK", "FI", "PT", "PL", "CZ", "GR", "HU", "RO", "BG", "HR", "SK", "SI", "LT", "LV", "EE", "LU",
    "MT", "CY", "IS", "IN", "PK", "BD", "CN", "JP", "KR", "SG", "MY", "TH", "PH", "ID", "VN", "HK",
    "TW", "AE", "SA", "IL", "TR", "EG", "NG", "KE", "ZA", "GH", "BR", "MX", "AR", "CL", "CO", "PE",
    "UA", "JM",
];

/// Most regions one country may have (`R1` … `R100000`: at most 7 characters, inside the
/// server's 16).
pub const REGIONS_MAX: u32 = 100_000;

/// How far above 1 the shares may add up, for the floating-point error of adding decimals
/// (`0.2 + 0.4 + 0.3 + 0.1` is a little over 1 in binary).
pub const SHARE_SUM_SLACK: f64 = 1e-9;

/// Bits of a signer's hash that choose its country: the top 53, a fraction exact in an `f64`.
const FRACTION_BITS: u32 = 53;

/// The whole range of those bits: a share of 1.
const FRACTION_ONE: u64 = 1 << FRACTION_BITS;

/// Mixed into the seed so that a signer's country does not follow whether
/// [`crate::kept::keep`] keeps its token, which hashes the same seed and signer.
const SALT: u64 = 0x636f_756e_7472_7921;

/// What `--countries` expects, for the messages.
const EXPECTED: &str =
    "expected CODE:SHARE[:REGIONS],... (e.g. GB:0.9:650,US:0.05,FR:0.05) or uniform:N";

/// Whether `code` (upper-case) is one of the [`ASSIGNED_COUNT`] assigned codes.
pub fn is_assigned(code: &str) -> bool {
    let &[first, _] = code.as_bytes() else {
        return false;
    };
    if !first.is_ascii_uppercase() {
        return false;
    }
    ASSIGNED[usize::from(first - b'A')]
        .split(' ')
        .any(|assigned| assigned == code)
}

/// Every assigned code, alphabetically.
pub fn assigned_codes() -> impl Iterator<Item = &'static str> {
    ASSIGNED
        .iter()
        .flat_map(|row| row.split(' ').filter(|code| !code.is_empty()))
}

/// The countries of `uniform:N` for N = 249: [`UNIFORM_FIRST`], then the other assigned codes
/// alphabetically. `uniform:N` takes the first N.
pub fn uniform_order() -> Vec<&'static str> {
    let mut order = UNIFORM_FIRST.to_vec();
    order.extend(assigned_codes().filter(|code| !UNIFORM_FIRST.contains(code)));
    order
}

/// One country of the spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Country {
    /// The code, upper-case.
    pub code: String,
    /// The share of signatures that carry it.
    pub share: f64,
    /// How many regions its signatures are spread over (`R1` … `RN`); 0 for none.
    pub regions: u32,
    /// Signers whose hash fraction is below this (and at or above the previous country's) are
    /// this country's.
    cut: u64,
    /// `,"country":"<code>"`, as the request body carries it.
    member: Vec<u8>,
}

/// A signer's country and region, as [`Countries::place`] chooses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement<'a> {
    /// The country's code.
    pub country: &'a str,
    /// The region's number N (named `RN`), if the country has regions.
    pub region: Option<u32>,
}

/// A parsed `--countries` spec (shared: cloning it copies a pointer).
#[derive(Debug, Clone, PartialEq)]
pub struct Countries(Arc<Spec>);

/// What [`Countries`] holds.
#[derive(Debug, PartialEq)]
struct Spec {
    /// The spec as given.
    spec: String,
    /// `uniform:N`: N.
    uniform: Option<usize>,
    /// In the order of the spec (of [`uniform_order`] for `uniform:N`).
    countries: Vec<Country>,
}

impl Countries {
    /// Parses a spec: `CODE:SHARE[:REGIONS]` entries separated by commas, or `uniform:N` alone.
    /// Every way it can be wrong is refused with a sentence naming the entry.
    pub fn parse(text: &str) -> Result<Countries, String> {
        let spec = text.trim();
        if spec.is_empty() {
            return Err(format!("the spec is empty; {EXPECTED}"));
        }
        let entries: Vec<&str> = spec.split(',').map(str::trim).collect();
        let is_uniform = |entry: &str| {
            entry
                .split(':')
                .next()
                .is_some_and(|word| word.trim().eq_ignore_ascii_case("uniform"))
        };
        if let Some(uniform) = entries.iter().find(|entry| is_uniform(entry)) {
            if entries.len() > 1 {
                return Err(format!(
                    "{uniform:?}: uniform:N stands alone, it cannot be mixed with other entries"
                ));
            }
            return parse_uniform(spec);
        }
        let mut countries: Vec<Country> = Vec::with_capacity(entries.len());
        let mut total = 0.0;
        for (index, entry) in entries.iter().enumerate() {
            if entry.is_empty() {
                return Err(format!(
                    "entry {} of {:?} is empty (a comma too many?); {EXPECTED}",
                    index + 1,
                    spec
                ));
            }
            let (code, share, regions) =
                parse_entry(entry).map_err(|e| format!("{entry:?}: {e}"))?;
            if countries.iter().any(|c| c.code == code) {
                return Err(format!(
                    "{entry:?}: {code} is given twice; give each country once"
                ));
            }
            total += share;
            countries.push(Country {
                member: member_of(&code),
                code,
                share,
                regions,
                cut: 0,
            });
        }
        if total > 1.0 + SHARE_SUM_SLACK {
            return Err(format!(
                "the shares of {spec:?} add up to {total}, more than 1; the rest of the \
                 signatures (1 minus the sum) carry no country"
            ));
        }
        let mut cumulative = 0.0;
        for country in &mut countries {
            cumulative += country.share;
            // Rounding can only lift the sum above 1 by SHARE_SUM_SLACK: cap it at the whole.
            country.cut = ((cumulative * FRACTION_ONE as f64).round() as u64).min(FRACTION_ONE);
        }
        Ok(Countries(Arc::new(Spec {
            spec: spec.to_owned(),
            uniform: None,
            countries,
        })))
    }

    /// The spec as given.
    pub fn spec(&self) -> &str {
        &self.0.spec
    }

    /// The countries, in the order of the spec.
    pub fn countries(&self) -> &[Country] {
        &self.0.countries
    }

    /// The share of signatures that carry no country: 1 minus the shares (0 for `uniform:N`).
    pub fn no_country_share(&self) -> f64 {
        let last = self.countries().last().map_or(0, |c| c.cut);
        (FRACTION_ONE - last) as f64 / FRACTION_ONE as f64
    }

    /// The country (and region) of signer `number` of `connection` in a run seeded `seed`;
    /// `None` when the signer carries no country. A function of these three alone.
    pub fn place(&self, seed: u64, connection: u32, number: u64) -> Option<Placement<'_>> {
        let (country, region) = self.choose(seed, connection, number)?;
        Some(Placement {
            country: &country.code,
            region,
        })
    }

    /// [`Countries::place`], as the country and the region's number.
    fn choose(&self, seed: u64, connection: u32, number: u64) -> Option<(&Country, Option<u32>)> {
        let signer = (u64::from(connection) << NUMBER_BITS) ^ number;
        let hash = splitmix64(splitmix64(seed ^ SALT) ^ splitmix64(signer));
        let fraction = hash >> (64 - FRACTION_BITS);
        let countries = self.countries();
        let country = countries.get(countries.partition_point(|c| c.cut <= fraction))?;
        let region = (country.regions > 0).then(|| {
            // A second hash, spread over 1..=regions by a 64 × 32-bit multiply (bias below
            // 2^-32).
            let draw = splitmix64(hash ^ SALT);
            1 + ((u128::from(draw) * u128::from(country.regions)) >> 64) as u32
        });
        Some((country, region))
    }

    /// Appends the members of signer `number` of `connection` to a signature's JSON object
    /// being written: `,"country":"GB"` and, with regions, `,"region":"R12"`; nothing for a
    /// signer without a country. Allocates nothing once `out` has grown.
    pub fn write_members(&self, out: &mut Vec<u8>, seed: u64, connection: u32, number: u64) {
        let Some((country, region)) = self.choose(seed, connection, number) else {
            return;
        };
        out.extend_from_slice(&country.member);
        if let Some(region) = region {
            out.extend_from_slice(b",\"region\":\"R");
            write_decimal(out, region);
            out.push(b'"');
        }
    }

    /// For people, e.g. `GB 90% (650 regions), US 5%, FR 5%, no country 0%`.
    pub fn describe(&self) -> String {
        const LISTED_MAX: usize = 12;
        if let Some(n) = self.0.uniform {
            let codes: Vec<&str> = self
                .countries()
                .iter()
                .take(LISTED_MAX)
                .map(|c| c.code.as_str())
                .collect();
            let more = if n > LISTED_MAX { ", …" } else { "" };
            return format!(
                "uniform over {n} countries, {:.3}% each: {}{more}",
                100.0 / n as f64,
                codes.join(", ")
            );
        }
        let mut parts: Vec<String> = self
            .countries()
            .iter()
            .map(|c| {
                let regions = match c.regions {
                    0 => String::new(),
                    1 => " (1 region)".to_owned(),
                    n => format!(" ({n} regions)"),
                };
                format!("{} {}%{regions}", c.code, percent(c.share))
            })
            .collect();
        parts.push(format!("no country {}%", percent(self.no_country_share())));
        parts.join(", ")
    }
}

/// A share as a percentage without trailing zeros: `0.05` → `5`, `0.125` → `12.5`.
pub(crate) fn percent(share: f64) -> String {
    let text = format!("{:.4}", share * 100.0);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `uniform:N`.
fn parse_uniform(spec: &str) -> Result<Countries, String> {
    let mut parts = spec.split(':').map(str::trim);
    let _uniform = parts.next();
    let (Some(n), None) = (parts.next(), parts.next()) else {
        return Err(format!(
            "{spec:?}: expected uniform:N, N the number of countries (1 to {ASSIGNED_COUNT})"
        ));
    };
    let n: usize = n.parse().map_err(|_| {
        format!("{spec:?}: {n:?} is not a whole number of countries (1 to {ASSIGNED_COUNT})")
    })?;
    let order = uniform_order();
    if n == 0 || n > order.len() {
        return Err(format!(
            "{spec:?}: uniform:N takes 1 to {} countries (every assigned ISO 3166-1 code), \
             not {n}",
            order.len()
        ));
    }
    let countries = order[..n]
        .iter()
        .enumerate()
        .map(|(index, code)| Country {
            code: (*code).to_owned(),
            share: 1.0 / n as f64,
            regions: 0,
            // Exact: the last cut is the whole range, so every signer has a country.
            cut: ((index as u128 + 1) * u128::from(FRACTION_ONE) / n as u128) as u64,
            member: member_of(code),
        })
        .collect();
    Ok(Countries(Arc::new(Spec {
        spec: spec.to_owned(),
        uniform: Some(n),
        countries,
    })))
}

/// One `CODE:SHARE[:REGIONS]` entry: the code (upper-case), the share, the regions (0: none).
fn parse_entry(entry: &str) -> Result<(String, f64, u32), String> {
    let parts: Vec<&str> = entry.split(':').map(str::trim).collect();
    let (code, share, regions) = match parts.as_slice() {
        [code, share] => (*code, *share, None),
        [code, share, regions] => (*code, *share, Some(*regions)),
        _ => return Err(format!("not CODE:SHARE or CODE:SHARE:REGIONS; {EXPECTED}")),
    };
    let code = parse_code(code)?;
    let share = parse_share(share)?;
    let regions = regions.map_or(Ok(0), parse_regions)?;
    Ok((code, share, regions))
}

/// A country code: two ASCII letters, upper-cased, assigned by ISO 3166-1.
fn parse_code(text: &str) -> Result<String, String> {
    if text.len() != 2 || !text.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!(
            "{text:?} is not a country code: expected two letters, an ISO 3166-1 alpha-2 code \
             such as GB"
        ));
    }
    let code = text.to_ascii_uppercase();
    if code == "UK" {
        return Err(
            "UK is not an ISO 3166-1 code (the server refuses it): the United Kingdom is GB"
                .to_owned(),
        );
    }
    if code == "ZZ" {
        return Err(
            "ZZ is not an assigned code: the server counts signatures without a country under \
             ZZ; leave them the rest of the shares instead"
                .to_owned(),
        );
    }
    if !is_assigned(&code) {
        return Err(format!(
            "{code} is not an assigned ISO 3166-1 alpha-2 code (the server refuses it)"
        ));
    }
    Ok(code)
}

/// A share: more than 0 and at most 1.
fn parse_share(text: &str) -> Result<f64, String> {
    let share: f64 = text
        .parse()
        .map_err(|_| format!("the share {text:?} is not a number; expected e.g. 0.05"))?;
    if !(share > 0.0 && share <= 1.0) {
        return Err(format!(
            "the share {text:?} must be more than 0 and at most 1"
        ));
    }
    Ok(share)
}

/// A number of regions: 1 to [`REGIONS_MAX`].
fn parse_regions(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(regions) if (1..=REGIONS_MAX).contains(&regions) => Ok(regions),
        _ => Err(format!(
            "the regions {text:?} must be a whole number from 1 to {REGIONS_MAX}"
        )),
    }
}

/// `,"country":"<code>"`.
fn member_of(code: &str) -> Vec<u8> {
    format!(",\"country\":\"{code}\"").into_bytes()
}

/// Appends `n` in decimal, without allocating.
fn write_decimal(out: &mut Vec<u8>, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Signatures counted by the run's own answers (accepted, or validated in phase 2), per
/// petition index: where the report reads the breakdown. Connections count into a map of their
/// own and merge it in now and then, as they do their other counts.
#[derive(Debug, Default)]
pub struct Tally {
    counted: Mutex<HashMap<u32, u64>>,
}

impl Tally {
    /// Adds a connection's counts and empties them (keeping their capacity).
    pub fn absorb(&self, counted: &mut HashMap<u32, u64>) {
        if counted.is_empty() {
            return;
        }
        let mut total = self.counted.lock().unwrap_or_else(PoisonError::into_inner);
        for (petition, n) in counted.drain() {
            *total.entry(petition).or_default() += n;
        }
    }

    /// The petition with the most signatures counted, and how many (the lowest index of those
    /// tied); `None` if none was.
    pub fn busiest(&self) -> Option<(u32, u64)> {
        let total = self.counted.lock().unwrap_or_else(PoisonError::into_inner);
        total
            .iter()
            .map(|(&petition, &n)| (petition, n))
            .max_by_key(|&(petition, n)| (n, std::cmp::Reverse(petition)))
    }
}

/// One country of a breakdown, as the server gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountryCount {
    /// The code; `ZZ` for signatures without a country.
    pub country: String,
    /// Signatures counted with it.
    pub count: u64,
}

/// `GET /v1/petitions/{id}/countries`: the count and its breakdown, read at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Breakdown {
    /// The petition's count.
    pub count: u64,
    /// Highest count first.
    pub countries: Vec<CountryCount>,
}

impl Breakdown {
    /// The countries' counts added up (saturating: a server's nonsense must not panic).
    pub fn sum(&self) -> u64 {
        self.countries
            .iter()
            .fold(0u64, |sum, c| sum.saturating_add(c.count))
    }

    /// Whether the countries add up to the count, as the contract says they must.
    pub fn sums_to_count(&self) -> bool {
        self.sum() == self.count
    }
}

/// Reads a petition's breakdown by country (all of it: the server's default limit is every
/// assigned code), retrying as [`Client::get_json`] does. A 404 is an error here: the callers
/// know the petition exists.
pub async fn fetch_breakdown(client: &mut Client, petition: &str) -> Result<Breakdown> {
    let path = format!("/v1/petitions/{petition}/countries");
    match client.get_json(&path, "a breakdown by country").await? {
        Some(breakdown) => Ok(breakdown),
        None => anyhow::bail!(
            "GET {path}: answered 404 (the petition is unknown, or the server has no breakdown \
             by country)"
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(text: &str) -> Countries {
        Countries::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// (code, share, regions) of each country.
    fn summary(countries: &Countries) -> Vec<(String, f64, u32)> {
        countries
            .countries()
            .iter()
            .map(|c| (c.code.clone(), c.share, c.regions))
            .collect()
    }

    #[test]
    fn the_assigned_codes_are_the_249_of_the_standard() {
        let all: Vec<&str> = assigned_codes().collect();
        assert_eq!(all.len(), ASSIGNED_COUNT);
        let mut sorted = all.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, all, "alphabetical, each once");
        for row in ASSIGNED {
            assert!(row
                .split(' ')
                .filter(|c| !c.is_empty())
                .all(|c| c.len() == 2
                    && c.bytes().all(|b| b.is_ascii_uppercase())
                    && c.as_bytes()[0] == row.as_bytes()[0]));
        }
        for code in ["GB", "US", "AX", "SS", "ZW", "BQ"] {
            assert!(is_assigned(code), "{code}");
        }
        for code in ["UK", "EU", "ZZ", "XK", "XA", "AA", "gb", "G", "GBR", ""] {
            assert!(!is_assigned(code), "{code}");
        }
    }

    #[test]
    fn uniform_takes_the_first_list_then_the_rest() {
        let order = uniform_order();
        assert_eq!(order.len(), ASSIGNED_COUNT);
        assert_eq!(&order[..6], ["GB", "US", "FR", "DE", "CA", "AU"]);
        assert!(UNIFORM_FIRST.len() >= 60);
        assert!(UNIFORM_FIRST.iter().all(|code| is_assigned(code)));
        let mut distinct = order.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ASSIGNED_COUNT, "every code once");
    }

    #[test]
    fn good_specs() {
        let c = parse("GB:0.9:650,US:0.05,FR:0.05");
        assert_eq!(
            summary(&c),
            [
                ("GB".to_owned(), 0.9, 650),
                ("US".to_owned(), 0.05, 0),
                ("FR".to_owned(), 0.05, 0)
            ]
        );
        assert_eq!(c.spec(), "GB:0.9:650,US:0.05,FR:0.05");
        assert!(c.no_country_share().abs() < 1e-9);
        assert_eq!(
            c.describe(),
            "GB 90% (650 regions), US 5%, FR 5%, no country 0%"
        );
        // Lower case and spaces are fine; the rest of the shares carries no country.
        let c = parse(" gb : 0.25 : 1 , de:1e-1 ");
        assert_eq!(
            summary(&c),
            [("GB".to_owned(), 0.25, 1), ("DE".to_owned(), 0.1, 0)]
        );
        assert!((c.no_country_share() - 0.65).abs() < 1e-9);
        assert_eq!(summary(&parse("US:1:100000"))[0].2, REGIONS_MAX);
        assert_eq!(parse("FR:1").no_country_share(), 0.0);
    }

    #[test]
    fn uniform_specs() {
        let one = parse("uniform:1");
        assert_eq!(summary(&one), [("GB".to_owned(), 1.0, 0)]);
        let six = parse("UNIFORM:6");
        let codes: Vec<&str> = six.countries().iter().map(|c| c.code.as_str()).collect();
        assert_eq!(codes, ["GB", "US", "FR", "DE", "CA", "AU"]);
        assert!(six.countries().iter().all(|c| c.share == 1.0 / 6.0));
        let all = parse("uniform:249");
        assert_eq!(all.countries().len(), 249);
        assert_eq!(all.no_country_share(), 0.0);
        assert!(all
            .describe()
            .starts_with("uniform over 249 countries, 0.402% each: GB, US"));
        // Every signer gets a country, whatever N.
        for n in [1, 3, 7, 249] {
            let c = parse(&format!("uniform:{n}"));
            assert!((0..2000).all(|i| c.place(3, 0, i).is_some()), "uniform:{n}");
        }
    }

    #[test]
    fn bad_specs_are_refused_naming_the_entry() {
        let check = |text: &str, needles: &[&str]| {
            let error = Countries::parse(text).expect_err(text);
            for needle in needles {
                assert!(
                    error.contains(needle),
                    "{text}: {needle:?} not in {error:?}"
                );
            }
        };
        check("", &["empty", "CODE:SHARE"]);
        check("  ", &["empty"]);
        check("GB:0.5,", &["entry 2", "empty"]);
        check("GB:0.5,,US:0.1", &["entry 2", "empty"]);
        check(",", &["entry 1", "empty"]);
        check("GB", &["\"GB\"", "CODE:SHARE"]);
        check("GB:0.5:10:2", &["\"GB:0.5:10:2\"", "CODE:SHARE"]);
        check("UK:0.5", &["\"UK:0.5\"", "GB"]);
        check("uk:0.5", &["\"uk:0.5\"", "United Kingdom is GB"]);
        check("ZZ:0.1", &["\"ZZ:0.1\"", "without a country"]);
        check("XX:0.1", &["\"XX:0.1\"", "XX is not an assigned"]);
        check("EU:0.1", &["EU is not an assigned"]);
        check("GBR:0.1", &["\"GBR\" is not a country code"]);
        check("G:0.1", &["\"G\" is not a country code"]);
        check("G1:0.1", &["\"G1\" is not a country code"]);
        check("É:0.1", &["is not a country code"]);
        check(":0.1", &["\"\" is not a country code"]);
        check("GB:", &["\"GB:\"", "share \"\" is not a number"]);
        check("GB:abc", &["share \"abc\" is not a number"]);
        check("GB:0", &["\"GB:0\"", "more than 0"]);
        check("GB:-0.1", &["more than 0"]);
        check("GB:1.5", &["at most 1"]);
        check("GB:nan", &["share \"nan\""]);
        check("GB:inf", &["share \"inf\""]);
        check(
            "GB:0.5:0",
            &["\"GB:0.5:0\"", "regions \"0\"", "1 to 100000"],
        );
        check("GB:0.5:100001", &["regions \"100001\""]);
        check("GB:0.5:x", &["regions \"x\""]);
        check("GB:0.5:-3", &["regions \"-3\""]);
        check("GB:0.5:2.5", &["regions \"2.5\""]);
        check("GB:0.5:", &["regions \"\""]);
        check("GB:0.5,gb:0.2", &["\"gb:0.2\"", "GB is given twice"]);
        check("GB:0.6,US:0.5", &["add up to 1.1", "more than 1"]);
        check("uniform:0", &["\"uniform:0\"", "1 to 249", "not 0"]);
        check("uniform:250", &["\"uniform:250\"", "not 250"]);
        check("uniform:x", &["\"x\" is not a whole number"]);
        check("uniform", &["expected uniform:N"]);
        check("uniform:3:10", &["expected uniform:N"]);
        check("uniform:3,GB:0.1", &["stands alone"]);
        check("GB:0.1,uniform:3", &["stands alone"]);
    }

    #[test]
    fn shares_may_pass_1_by_float_error_only() {
        // 0.2 + 0.4 + 0.3 + 0.1 is above 1 in binary floating point: the slack lets it through.
        let shares = [0.2, 0.4, 0.3, 0.1];
        assert!(shares.iter().sum::<f64>() > 1.0);
        let c = parse("GB:0.2,US:0.4,FR:0.3,DE:0.1");
        assert_eq!(c.no_country_share(), 0.0);
        assert!((0..1000).all(|i| c.place(1, 0, i).is_some()));
        parse("GB:0.5,US:0.5000000005");
        assert!(Countries::parse("GB:0.5,US:0.500000002").is_err());
        assert!(Countries::parse("GB:0.5,US:0.5,FR:0.000001").is_err());
    }

    #[test]
    fn a_signer_gets_the_same_country_and_region_every_time() {
        let c = parse("GB:0.5:650,US:0.3:7,FR:0.1");
        let placements = |seed| {
            (0..4u32)
                .flat_map(|connection| (0..500u64).map(move |n| (connection, n)))
                .map(|(connection, n)| {
                    c.place(seed, connection, n)
                        .map(|p| (p.country.to_owned(), p.region))
                })
                .collect::<Vec<_>>()
        };
        let first = placements(42);
        assert_eq!(first, placements(42));
        assert_ne!(first, placements(43), "another seed, other choices");
        // The bytes written follow the placement.
        let mut out = Vec::new();
        for connection in 0..4u32 {
            for n in 0..500u64 {
                out.clear();
                c.write_members(&mut out, 42, connection, n);
                let expected = match c.place(42, connection, n) {
                    None => String::new(),
                    Some(Placement {
                        country,
                        region: None,
                    }) => format!(",\"country\":\"{country}\""),
                    Some(Placement {
                        country,
                        region: Some(r),
                    }) => format!(",\"country\":\"{country}\",\"region\":\"R{r}\""),
                };
                assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);
            }
        }
    }

    /// Draws of signers 0..100,000 (over 8 connections) with seed 2024: per code ("" for none)
    /// how many, and per region of `region_code` how many.
    fn draw(c: &Countries, region_code: &str) -> (HashMap<String, u64>, HashMap<u32, u64>) {
        let mut countries = HashMap::new();
        let mut regions = HashMap::new();
        for i in 0..100_000u64 {
            let placement = c.place(2024, (i % 8) as u32, i / 8);
            let code = placement.map_or("", |p| p.country);
            *countries.entry(code.to_owned()).or_default() += 1;
            if let Some(Placement {
                country,
                region: Some(r),
            }) = placement
            {
                if country == region_code {
                    *regions.entry(r).or_default() += 1;
                }
            }
        }
        (countries, regions)
    }

    #[test]
    fn the_draws_follow_the_shares() {
        let c = parse("GB:0.6:650,US:0.25,FR:0.05,JP:0.001");
        let (countries, regions) = draw(&c, "GB");
        // The binomial's standard deviation is at most 0.0016 of 100,000 draws: 0.008 is five
        // of them, and the seed is fixed, so this cannot flake.
        for (code, share) in [
            ("GB", 0.6),
            ("US", 0.25),
            ("FR", 0.05),
            ("JP", 0.001),
            ("", 0.099),
        ] {
            let got = countries.get(code).copied().unwrap_or(0) as f64 / 100_000.0;
            assert!((got - share).abs() < 0.008, "{code}: {got} for {share}");
        }
        // 60,000 GB signers over 650 regions: about 92 each, every one used, none beyond.
        assert_eq!(regions.len(), 650);
        assert!(regions.keys().all(|r| (1..=650).contains(r)));
        let (low, high) = (
            regions.values().min().unwrap(),
            regions.values().max().unwrap(),
        );
        assert!(*low > 40 && *high < 150, "{low}..{high}");
        // uniform:10: a tenth each.
        let (countries, _) = draw(&parse("uniform:10"), "");
        assert_eq!(countries.len(), 10);
        assert!(countries.values().all(|&n| (9_200..10_800).contains(&n)));
    }

    #[test]
    fn the_country_does_not_follow_the_kept_tokens() {
        // kept::keep hashes the same seed and signer: among the signers it keeps at 0.5, the
        // shares hold as among all.
        let c = parse("GB:0.5,US:0.5");
        let kept: Vec<(u32, u64)> = (0..40_000u64)
            .map(|i| ((i % 4) as u32, i / 4))
            .filter(|&(connection, n)| crate::kept::keep(9, connection, n, 0.5))
            .collect();
        let gb = kept
            .iter()
            .filter(|&&(connection, n)| c.place(9, connection, n).unwrap().country == "GB")
            .count() as f64
            / kept.len() as f64;
        assert!((gb - 0.5).abs() < 0.02, "{gb}");
    }

    #[test]
    fn region_names_fit_the_server() {
        let mut out = Vec::new();
        for n in [1, 9, 10, 650, 99_999, REGIONS_MAX, u32::MAX] {
            out.clear();
            write_decimal(&mut out, n);
            assert_eq!(String::from_utf8(out.clone()).unwrap(), n.to_string());
        }
        assert!(format!("R{REGIONS_MAX}").len() <= 16);
    }

    #[test]
    fn the_tally_finds_the_busiest_petition() {
        let tally = Tally::default();
        assert_eq!(tally.busiest(), None);
        let mut a = HashMap::from([(3, 5), (1, 7)]);
        let mut b = HashMap::from([(3, 2), (0, 1)]);
        tally.absorb(&mut a);
        tally.absorb(&mut b);
        assert!(a.is_empty() && b.is_empty());
        // 1 and 3 tie at 7: the lower index.
        assert_eq!(tally.busiest(), Some((1, 7)));
        tally.absorb(&mut HashMap::from([(3, 1)]));
        assert_eq!(tally.busiest(), Some((3, 8)));
    }

    #[test]
    fn breakdowns_sum() {
        let breakdown: Breakdown = serde_json::from_str(
            r#"{"petition":"p1","count":10,"countries":[{"country":"GB","count":7},{"country":"ZZ","count":3}]}"#,
        )
        .unwrap();
        assert_eq!(breakdown.sum(), 10);
        assert!(breakdown.sums_to_count());
        let short = Breakdown {
            count: 11,
            ..breakdown
        };
        assert!(!short.sums_to_count());
        let silly = Breakdown {
            count: 1,
            countries: vec![
                CountryCount {
                    country: "GB".into(),
                    count: u64::MAX,
                },
                CountryCount {
                    country: "US".into(),
                    count: 5,
                },
            ],
        };
        assert_eq!(silly.sum(), u64::MAX);
    }
}
