//! `--countries SPEC`: which country, and which region of it, each generated signature names.
//!
//! A spec is `CODE:SHARE[:REGIONS]` entries separated by commas (`GB:0.9:650,US:0.05:50,FR:0.05`)
//! or `uniform:N` alone. A country takes SHARE of the signatures; the rest (1 minus the sum of the
//! shares) name no country. With REGIONS, that country's signatures name a region `R1` … `RN`,
//! each equally likely. `uniform:N` spreads the signatures equally over the first N countries of
//! [`UNIFORM_FIRST`] (then the other assigned codes, alphabetically), all of them naming one.
//!
//! The spec is parsed once; each country becomes its share of a 53-bit range. Choosing a
//! signature's country is then a search of those ranges with a hash of the seed and the
//! signature's number, and its region a second hash: no allocation, and a pure function of the
//! seed and the number (see [`crate::workload`]).

use std::sync::Arc;

/// The countries `uniform:N` takes first, in this order (the same order as loadtest's
/// `--countries uniform:N`); after them it takes the other assigned codes alphabetically.
pub const UNIFORM_FIRST: [&str; 66] = [
    "GB", "US", "FR", "DE", "CA", "AU", "IE", "NZ", "ES", "IT", "NL", "BE", "CH", "AT", "SE", "NO",
    "DK", "FI", "PT", "PL", "CZ", "GR", "HU", "RO", "BG", "HR", "SK", "SI", "LT", "LV", "EE", "LU",
    "MT", "CY", "IS", "IN", "PK", "BD", "CN", "JP", "KR", "SG", "MY", "TH", "PH", "ID", "VN", "HK",
    "TW", "AE", "SA", "IL", "TR", "EG", "NG", "KE", "ZA", "GH", "BR", "MX", "AR", "CL", "CO", "PE",
    "UA", "JM",
];

/// How many codes ISO 3166-1 assigns: the most countries `uniform:N` can take.
pub const ASSIGNED_COUNT: usize = 249;

/// Most regions one country may have: `R1` … `R1000000` (at most 8 characters, inside the
/// engine's 16).
pub const REGIONS_MAX: u32 = 1_000_000;

/// Longest text of one place: a country code and the longest region name.
pub const PLACE_BYTES_MAX: usize = 2 + 1 + 7;

/// How far above 1 the shares may add up, for the error of adding decimals in binary
/// (`0.2 + 0.4 + 0.3 + 0.1` is a little over 1).
pub const SHARE_SUM_SLACK: f64 = 1e-9;

/// Bits of a hash that choose a country: a fraction exact in an `f64`.
const FRACTION_BITS: u32 = 53;
const FRACTION_ONE: u64 = 1 << FRACTION_BITS;

/// Mixed into the hash of the region, so that it does not follow the country's draw.
const REGION_SALT: u64 = 0x7265_6769_6f6e_2121;

/// What a spec looks like, for the messages.
const EXPECTED: &str =
    "expected CODE:SHARE[:REGIONS],... (e.g. GB:0.9:650,US:0.05:50,FR:0.05) or uniform:N";

/// One country of a spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Country {
    /// The code, upper-case.
    pub code: String,
    /// The share of signatures that name it.
    pub share: f64,
    /// How many regions its signatures are spread over (`R1` … `RN`); 0 for none.
    pub regions: u32,
    /// Hashes whose fraction is below this (and at or above the previous country's) are this
    /// country's.
    cut: u64,
}

/// A parsed spec (cloning it copies a pointer).
#[derive(Debug, Clone, PartialEq)]
pub struct Countries(Arc<Spec>);

#[derive(Debug, PartialEq)]
struct Spec {
    /// The spec as given.
    text: String,
    /// `uniform:N`: N.
    uniform: Option<usize>,
    countries: Vec<Country>,
}

/// The countries of `uniform:249`, in order: [`UNIFORM_FIRST`], then the other assigned codes
/// alphabetically (the engine's list of assigned codes).
pub fn uniform_order() -> Vec<String> {
    let mut order: Vec<String> = UNIFORM_FIRST.iter().map(|c| (*c).to_owned()).collect();
    for a in b'A'..=b'Z' {
        for b in b'A'..=b'Z' {
            let code = String::from_utf8(vec![a, b]).expect("ASCII");
            if engine::is_country_code(&code) && !UNIFORM_FIRST.contains(&code.as_str()) {
                order.push(code);
            }
        }
    }
    order
}

impl Countries {
    /// Parses a spec; every way it can be wrong is refused with a sentence naming the entry.
    pub fn parse(text: &str) -> Result<Countries, String> {
        let spec = text.trim();
        if spec.is_empty() {
            return Err(format!("the spec is empty; {EXPECTED}"));
        }
        let entries: Vec<&str> = spec.split(',').map(str::trim).collect();
        let uniform = entries.iter().find(|entry| {
            entry
                .split(':')
                .next()
                .is_some_and(|word| word.trim().eq_ignore_ascii_case("uniform"))
        });
        if let Some(uniform) = uniform {
            if entries.len() > 1 {
                return Err(format!(
                    "{uniform:?}: uniform:N stands alone, it cannot be mixed with other entries"
                ));
            }
            return parse_uniform(spec);
        }
        let mut countries: Vec<Country> = Vec::with_capacity(entries.len());
        let mut total = 0.0;
        let mut regions_total = 0u64;
        for (index, entry) in entries.iter().enumerate() {
            if entry.is_empty() {
                return Err(format!(
                    "entry {} of {spec:?} is empty (a comma too many?); {EXPECTED}",
                    index + 1
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
            regions_total += u64::from(regions);
            countries.push(Country {
                code,
                share,
                regions,
                cut: 0,
            });
        }
        if total > 1.0 + SHARE_SUM_SLACK {
            return Err(format!(
                "the shares of {spec:?} add up to {total}, more than 1; the rest of the \
                 signatures (1 minus the sum) name no country"
            ));
        }
        if regions_total > u64::from(engine::REGIONS_MAX_DEFAULT) {
            return Err(format!(
                "the regions of {spec:?} add up to {regions_total}, more than the engine names \
                 by default ({})",
                engine::REGIONS_MAX_DEFAULT
            ));
        }
        let mut cumulative = 0.0;
        for country in &mut countries {
            cumulative += country.share;
            // Rounding can only lift the sum above 1 by the slack: cap it at the whole.
            country.cut = ((cumulative * FRACTION_ONE as f64).round() as u64).min(FRACTION_ONE);
        }
        Ok(Countries(Arc::new(Spec {
            text: spec.to_owned(),
            uniform: None,
            countries,
        })))
    }

    /// The spec as given.
    pub fn spec(&self) -> &str {
        &self.0.text
    }

    /// The countries, in the order of the spec.
    pub fn countries(&self) -> &[Country] {
        &self.0.countries
    }

    /// The share of signatures that name no country: 1 minus the shares (0 for `uniform:N`).
    pub fn no_country_share(&self) -> f64 {
        let last = self.countries().last().map_or(0, |c| c.cut);
        (FRACTION_ONE - last) as f64 / FRACTION_ONE as f64
    }

    /// The most bytes the region names take (`R` and the digits of the largest number), 0
    /// without regions.
    pub fn region_bytes_max(&self) -> usize {
        self.countries()
            .iter()
            .map(|c| c.regions)
            .max()
            .filter(|&n| n > 0)
            .map_or(0, |n| 1 + n.to_string().len())
    }

    /// The country (its index in [`Countries::countries`]) and region number (0 for none) that
    /// the well-mixed 64-bit `hash` chooses; `None` for no country.
    #[inline]
    pub fn choose(&self, hash: u64) -> Option<(usize, u32)> {
        let fraction = hash >> (64 - FRACTION_BITS);
        let countries = self.countries();
        let index = countries.partition_point(|c| c.cut <= fraction);
        let country = countries.get(index)?;
        let region = if country.regions == 0 {
            0
        } else {
            // A second hash, spread over 1..=regions by a 64 × 32-bit multiply.
            let draw = crate::workload::mix(hash ^ REGION_SALT);
            1 + ((u128::from(draw) * u128::from(country.regions)) >> 64) as u32
        };
        Some((index, region))
    }

    /// For people: `GB 90% (650 regions), US 5%, FR 5%, no country 0%`.
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
fn percent(share: f64) -> String {
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
        format!("{spec:?}: N must be a whole number of countries, 1 to {ASSIGNED_COUNT}")
    })?;
    if !(1..=ASSIGNED_COUNT).contains(&n) {
        return Err(format!(
            "{spec:?}: N must be 1 to {ASSIGNED_COUNT} (the assigned ISO 3166-1 codes)"
        ));
    }
    let countries = uniform_order()
        .into_iter()
        .take(n)
        .enumerate()
        .map(|(k, code)| Country {
            code,
            share: 1.0 / n as f64,
            regions: 0,
            // Exact thirds and the like: the last cut is the whole range.
            cut: (((k as u128 + 1) * u128::from(FRACTION_ONE)) / n as u128) as u64,
        })
        .collect();
    Ok(Countries(Arc::new(Spec {
        text: spec.to_owned(),
        uniform: Some(n),
        countries,
    })))
}

/// `CODE:SHARE[:REGIONS]`: the code upper-cased, the share, the regions (0 for none).
fn parse_entry(entry: &str) -> Result<(String, f64, u32), String> {
    let parts: Vec<&str> = entry.split(':').map(str::trim).collect();
    let (code, share, regions) = match parts.as_slice() {
        [code, share] => (*code, *share, None),
        [code, share, regions] => (*code, *share, Some(*regions)),
        _ => return Err(EXPECTED.to_owned()),
    };
    let code = code.to_ascii_uppercase();
    if code == "UK" {
        return Err("UK is not an ISO 3166-1 code: the United Kingdom is GB".to_owned());
    }
    if !engine::is_country_code(&code) {
        return Err(format!(
            "{code:?} is not an assigned ISO 3166-1 alpha-2 code (such as GB, US, FR)"
        ));
    }
    let share: f64 = share
        .parse()
        .map_err(|_| format!("the share {share:?} is not a number (a fraction in (0, 1])"))?;
    if !(share > 0.0 && share <= 1.0) {
        return Err(format!("the share {share} must be in (0, 1]"));
    }
    let regions = match regions {
        None => 0,
        Some(text) => {
            let n: u32 = text.parse().map_err(|_| {
                format!("the regions {text:?} must be a whole number, 1 to {REGIONS_MAX}")
            })?;
            if !(1..=REGIONS_MAX).contains(&n) {
                return Err(format!("the regions {n} must be 1 to {REGIONS_MAX}"));
            }
            n
        }
    };
    Ok((code, share, regions))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn refused(spec: &str) -> String {
        Countries::parse(spec).expect_err(spec)
    }

    #[test]
    fn specs_parse() {
        let c = Countries::parse(" gb:0.9:650, US:0.05:50 ,FR:0.05").unwrap();
        let codes: Vec<(&str, f64, u32)> = c
            .countries()
            .iter()
            .map(|c| (c.code.as_str(), c.share, c.regions))
            .collect();
        assert_eq!(codes, [("GB", 0.9, 650), ("US", 0.05, 50), ("FR", 0.05, 0)]);
        assert!(c.no_country_share() < 1e-9);
        assert_eq!(c.region_bytes_max(), 4);
        assert_eq!(
            c.describe(),
            "GB 90% (650 regions), US 5% (50 regions), FR 5%, no country 0%"
        );
        // Shares that add up to a little over 1 in binary are accepted.
        Countries::parse("GB:0.2,US:0.4,FR:0.3,DE:0.1").unwrap();
        let some = Countries::parse("IE:0.25").unwrap();
        assert!((some.no_country_share() - 0.75).abs() < 1e-9);
        assert_eq!(some.region_bytes_max(), 0);
        assert_eq!(some.describe(), "IE 25%, no country 75%");
        let max = Countries::parse("GB:1:1000000").unwrap();
        assert_eq!(max.region_bytes_max(), 8);
        assert!(max.region_bytes_max() + 2 <= PLACE_BYTES_MAX);
    }

    #[test]
    fn uniform_takes_real_codes() {
        let order = uniform_order();
        assert_eq!(order.len(), ASSIGNED_COUNT);
        let mut sorted = order.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ASSIGNED_COUNT, "no code twice");
        assert!(order.iter().all(|c| engine::is_country_code(c)));
        let c = Countries::parse("uniform:50").unwrap();
        assert_eq!(c.countries().len(), 50);
        assert_eq!(c.countries()[0].code, "GB");
        assert_eq!(c.countries().last().unwrap().cut, FRACTION_ONE);
        assert_eq!(c.no_country_share(), 0.0);
        assert!(c
            .describe()
            .starts_with("uniform over 50 countries, 2.000% each: GB, US"));
        assert_eq!(
            Countries::parse("UNIFORM:249").unwrap().countries().len(),
            249
        );
        let three = Countries::parse("uniform:3").unwrap();
        assert_eq!(three.choose(u64::MAX).map(|(i, _)| i), Some(2));
        assert_eq!(three.choose(0), Some((0, 0)));
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        assert!(refused("UK:0.9").contains("GB"), "{}", refused("UK:0.9"));
        assert!(refused("uk:0.9").contains("GB"));
        assert!(refused("GB:0.5,FR:0.1,GB:0.1").contains("twice"));
        assert!(refused("GB:0.5,gb:0.1").contains("twice"));
        assert!(refused("ZZ:0.5").contains("not an assigned"));
        assert!(refused("EU:0.5").contains("not an assigned"));
        assert!(refused("GBR:0.5").contains("not an assigned"));
        assert!(refused("GB:x").contains("not a number"));
        assert!(refused("GB:").contains("not a number"));
        for share in ["0", "-0.1", "1.5", "NaN", "inf"] {
            assert!(
                refused(&format!("GB:{share}")).contains("(0, 1]"),
                "{share}: {}",
                refused(&format!("GB:{share}"))
            );
        }
        assert!(refused("GB:0.9:0").contains("regions"));
        assert!(refused("GB:0.9:-3").contains("regions"));
        assert!(refused("GB:0.9:1.5").contains("regions"));
        assert!(refused("GB:0.9:1000001").contains("regions"));
        assert!(refused("GB:0.5:700000,US:0.5:700000").contains("regions"));
        assert!(refused("GB:0.9:650:1").contains("expected"));
        assert!(refused("GB").contains("expected"));
        assert!(refused("GB:0.6,US:0.5").contains("more than 1"));
        assert!(refused("GB:0.9,").contains("empty"));
        assert!(refused("  ").contains("empty"));
        assert!(refused("uniform:0").contains("1 to 249"));
        assert!(refused("uniform:250").contains("1 to 249"));
        assert!(refused("uniform:x").contains("whole number"));
        assert!(refused("uniform").contains("expected uniform:N"));
        assert!(refused("uniform:5:1").contains("expected uniform:N"));
        assert!(refused("uniform:5,GB:0.5").contains("stands alone"));
    }

    #[test]
    fn choices_follow_the_shares() {
        let c = Countries::parse("GB:0.9:650,US:0.05:50,FR:0.03").unwrap();
        let n = 200_000u64;
        let mut by_country = [0u32; 4];
        let mut gb_regions = vec![0u32; 651];
        for i in 0..n {
            match c.choose(crate::workload::mix(i)) {
                Some((0, region)) => {
                    by_country[0] += 1;
                    gb_regions[region as usize] += 1;
                }
                Some((1, region)) => {
                    by_country[1] += 1;
                    assert!((1..=50).contains(&region), "{region}");
                }
                Some((2, region)) => {
                    by_country[2] += 1;
                    assert_eq!(region, 0);
                }
                Some(other) => panic!("{other:?}"),
                None => by_country[3] += 1,
            }
        }
        // Expected 180,000, 10,000, 6,000, 4,000; the bounds are many standard deviations wide.
        assert!(
            (176_000..184_000).contains(&by_country[0]),
            "{by_country:?}"
        );
        assert!((9_000..11_000).contains(&by_country[1]), "{by_country:?}");
        assert!((5_200..6_800).contains(&by_country[2]), "{by_country:?}");
        assert!((3_400..4_600).contains(&by_country[3]), "{by_country:?}");
        // 650 regions of ~277 each, every one named.
        assert_eq!(gb_regions[0], 0);
        let (least, most) = gb_regions[1..]
            .iter()
            .fold((u32::MAX, 0), |(lo, hi), &k| (lo.min(k), hi.max(k)));
        assert!(least >= 150 && most <= 420, "{least}..{most}");
    }
}
