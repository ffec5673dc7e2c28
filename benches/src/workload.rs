//! Deterministic signature workloads: signature `i` of a run is a pure function of the seed and
//! `i`, so threads generate their share without coordination and runs repeat exactly. That holds
//! for its country and region too ([`Workload::with_places`]): a re-send names the place of the
//! signature it repeats.

use std::ops::Range;

use engine::{NewSignature, SignatureRef};

use crate::countries::{Countries, PLACE_BYTES_MAX};

/// How a benchmark produces its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Input {
    /// Each thread generates all of its signatures into one buffer before the clock starts, so
    /// the figure is the engine's alone; costs ~60 bytes of memory per signature, freed before
    /// memory is measured.
    Pregenerated,
    /// Each call's signatures are generated into reused buffers inside the timed loop: no input
    /// held in memory, at ~10% of the in-memory path's time (commit
    /// 5e07df1, 2026-11-29).
    Inline,
}

impl Input {
    /// How the input was produced, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Input::Pregenerated => {
                "generated per thread into one buffer before the clock starts, then submitted \
                 borrowed with Engine::submit_batch_ref, one call's worth at a time"
            }
            Input::Inline => {
                "generated per call into reused buffers inside the timed loop (no allocation \
                 per signature) and submitted borrowed with Engine::submit_batch_ref"
            }
        }
    }
}

/// The longest text [`Workload::fill`] writes for one signature without a place: 'p', a `u32` in
/// decimal, 's', a `u64` in hex and "@example.org".
const TEXT_BYTES_MAX: usize = 1 + 10 + 1 + 16 + 12;

/// Where one signature's text lies in [`Batch::text`]: its petition id, email, country, region
/// and address follow each other from `start`, with these lengths (0: the field is absent).
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    /// Petition id, email, country, region, ip.
    lens: [u8; 5],
}

/// The longest address [`Workload::fill`] writes: a dotted IPv4 address.
const IP_BYTES_MAX: usize = 15;

/// Signatures generated into reused buffers: once warm, filling it allocates nothing.
#[derive(Debug, Default)]
pub struct Batch {
    text: String,
    spans: Vec<Span>,
}

impl Batch {
    /// An empty batch that holds `signatures` of at most `text_bytes` each
    /// ([`Workload::text_bytes_max`]) without growing.
    pub fn with_capacity(signatures: usize, text_bytes: usize) -> Batch {
        Batch {
            text: String::with_capacity(signatures * text_bytes),
            spans: Vec::with_capacity(signatures),
        }
    }

    /// How many signatures the batch holds.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the batch holds no signature.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The signatures, borrowed from the buffers.
    pub fn signatures(&self) -> Vec<SignatureRef<'_>> {
        self.signatures_in(0..self.spans.len())
    }

    /// The signatures at positions `range` of the batch, borrowed from the buffers.
    pub fn signatures_in(&self, range: Range<usize>) -> Vec<SignatureRef<'_>> {
        self.spans[range]
            .iter()
            .map(|&Span { start, lens }| {
                let email = start + usize::from(lens[0]);
                let country = email + usize::from(lens[1]);
                let region = country + usize::from(lens[2]);
                let ip = region + usize::from(lens[3]);
                let end = ip + usize::from(lens[4]);
                SignatureRef {
                    petition: &self.text[start..email],
                    email: &self.text[email..country],
                    country: (lens[2] > 0).then(|| &self.text[country..region]),
                    region: (lens[3] > 0).then(|| &self.text[region..ip]),
                    ip: (lens[4] > 0).then(|| &self.text[ip..end]),
                    ..SignatureRef::default()
                }
            })
            .collect()
    }
}

/// Appends `n` in lower-case hex without leading zeros (as `{:x}`).
fn push_hex(text: &mut String, n: u64) {
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for d in (0..digits).rev() {
        let nibble = ((n >> (d * 4)) & 0xf) as u8;
        text.push(char::from(if nibble < 10 {
            b'0' + nibble
        } else {
            b'a' + nibble - 10
        }));
    }
}

/// Appends `n` in decimal (as `{}`).
fn push_decimal(text: &mut String, n: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    let mut rest = n;
    loop {
        digits[len] = b'0' + (rest % 10) as u8;
        len += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for &digit in digits[..len].iter().rev() {
        text.push(char::from(digit));
    }
}

/// How signatures spread over petitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// Every petition equally likely.
    Uniform,
    /// One petition takes `hot_share` of the traffic, the rest is uniform.
    Viral,
    /// Zipf-like (s = 1): petition k takes about 1/k of the traffic.
    Zipf,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Shape::Uniform => "uniform",
            Shape::Viral => "viral",
            Shape::Zipf => "zipf",
        })
    }
}

impl std::str::FromStr for Shape {
    type Err = String;

    fn from_str(s: &str) -> Result<Shape, String> {
        <Shape as clap::ValueEnum>::from_str(s, true)
    }
}

/// A workload of `signatures` submissions.
#[derive(Debug, Clone)]
pub struct Workload {
    signatures: u64,
    petitions: u32,
    shape: Shape,
    hot_share: f64,
    dup_ratio: f64,
    seed: u64,
    /// The places signatures name (`None`: none names a country).
    countries: Option<Countries>,
    /// The places the hot petition's signatures name, in the viral shape (`None`: those of
    /// `countries`).
    hot_countries: Option<Countries>,
    /// Mixed with a signature's number to choose its place.
    place_key: u64,
    /// Distinct addresses the signatures come from (`None`: they carry none).
    ips: Option<u64>,
}

/// Mixed into the seed for the places, so that a signature's place does not follow its
/// petition or whether it is a re-send.
const PLACE_SALT: u64 = 0x636f_756e_7472_7921;

/// SplitMix64: a fast, well-mixed function of one integer.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

impl Workload {
    /// A workload from benchmark flags.
    pub fn with(
        signatures: u64,
        petitions: u32,
        shape: Shape,
        hot_share: f64,
        dup_ratio: f64,
        seed: u64,
    ) -> Workload {
        Workload {
            signatures,
            petitions: petitions.max(1),
            shape,
            hot_share: hot_share.clamp(0.0, 1.0),
            dup_ratio: dup_ratio.clamp(0.0, 1.0),
            seed,
            countries: None,
            hot_countries: None,
            place_key: mix(seed ^ PLACE_SALT),
            ips: None,
        }
    }

    /// The same workload with signatures from `ips` distinct IPv4 addresses (at most 2^32),
    /// each signature's drawn from a hash of its number, a re-send from its original's.
    pub fn with_ips(mut self, ips: Option<u64>) -> Workload {
        self.ips = ips.map(|n| n.clamp(1, 1 << 32));
        self
    }

    /// The address of original signature `original`, as a number.
    fn ip_of(&self, original: u64) -> Option<u32> {
        let n = self.ips?;
        let index = mix(original ^ self.place_key.rotate_left(17)) % n;
        // An odd multiplier is a bijection of u32: distinct indexes, distinct addresses.
        Some((index as u32).wrapping_mul(0x9e37_79b1))
    }

    /// The same workload with signatures that name a country (and region) drawn from
    /// `countries`, and in the viral shape, those of the hot petition from `hot_countries`
    /// instead (if given). Without either, no signature names a country, as before.
    pub fn with_places(
        mut self,
        countries: Option<Countries>,
        hot_countries: Option<Countries>,
    ) -> Workload {
        self.countries = countries;
        self.hot_countries = hot_countries;
        self
    }

    /// The longest text [`Workload::fill`] writes for one signature.
    pub fn text_bytes_max(&self) -> usize {
        let place = [&self.countries, &self.hot_countries]
            .into_iter()
            .flatten()
            .map(|c| 2 + c.region_bytes_max())
            .max()
            .unwrap_or(0);
        debug_assert!(place <= PLACE_BYTES_MAX);
        let ip = if self.ips.is_some() { IP_BYTES_MAX } else { 0 };
        TEXT_BYTES_MAX + place + ip
    }

    /// The id of petition `n`.
    pub fn petition_id(n: u32) -> String {
        format!("p{n}")
    }

    /// The contiguous share of signature numbers that thread `t` of `threads` submits.
    pub fn thread_range(&self, t: usize, threads: usize) -> Range<u64> {
        let per = self.signatures.div_ceil(threads as u64);
        let start = (per * t as u64).min(self.signatures);
        start..(start + per).min(self.signatures)
    }

    /// The earlier signature `i` re-sends, or `i` itself for a new signer.
    fn resends(&self, i: u64) -> u64 {
        let r = mix(self.seed ^ i.wrapping_mul(0xd6e8_feb8_6659_fd93));
        if i > 0 && unit(r) < self.dup_ratio {
            mix(r) % i
        } else {
            i
        }
    }

    /// The first-sent signature that `i` repeats (following re-sends of re-sends), or `i`.
    fn original(&self, mut i: u64) -> u64 {
        loop {
            let earlier = self.resends(i);
            if earlier == i {
                return i;
            }
            i = earlier;
        }
    }

    /// The petition number of signature `i` (of its original, for a re-send).
    pub fn petition_of(&self, i: u64) -> u32 {
        let r = unit(mix(self
            .seed
            .wrapping_add(i.wrapping_mul(0x2545_f491_4f6c_dd1d))));
        let p = u64::from(self.petitions);
        match self.shape {
            Shape::Uniform => ((r * p as f64) as u64).min(p - 1) as u32,
            Shape::Viral => {
                if p == 1 || r < self.hot_share {
                    0
                } else {
                    let rest = (r - self.hot_share) / (1.0 - self.hot_share);
                    1 + ((rest * (p - 1) as f64) as u64).min(p - 2) as u32
                }
            }
            Shape::Zipf => (((p as f64).powf(r) as u64).clamp(1, p) - 1) as u32,
        }
    }

    /// The country code and region number (0: none) of the original signature `original` to
    /// petition number `petition`; `None` when it names no country.
    #[inline]
    fn place_of(&self, original: u64, petition: u32) -> Option<(&str, u32)> {
        let countries = match &self.hot_countries {
            Some(hot) if petition == 0 && self.shape == Shape::Viral => hot,
            _ => self.countries.as_ref()?,
        };
        let hash = mix(self.place_key ^ original.wrapping_mul(0xa076_1d64_78bd_642f));
        let (index, region) = countries.choose(hash)?;
        Some((countries.countries()[index].code.as_str(), region))
    }

    /// The signer id of the original signature `original`.
    fn signer(&self, original: u64) -> u64 {
        // Multiplying by an odd constant is a bijection on u64: signer ids are unique.
        original.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ self.seed
    }

    /// Signatures `range` into `batch` (replacing what it held): the same signatures as
    /// [`Workload::signatures`], without allocating once the buffers have grown.
    pub fn fill(&self, range: Range<u64>, batch: &mut Batch) {
        batch.text.clear();
        batch.spans.clear();
        for i in range {
            let original = self.original(i);
            let start = batch.text.len();
            let petition = self.petition_of(original);
            batch.text.push('p');
            push_decimal(&mut batch.text, petition);
            let email = batch.text.len();
            batch.text.push('s');
            push_hex(&mut batch.text, self.signer(original));
            batch.text.push_str("@example.org");
            let country = batch.text.len();
            let mut region = country;
            if let Some((code, number)) = self.place_of(original, petition) {
                batch.text.push_str(code);
                region = batch.text.len();
                if number > 0 {
                    batch.text.push('R');
                    push_decimal(&mut batch.text, number);
                }
            }
            let ip = batch.text.len();
            if let Some(address) = self.ip_of(original) {
                for (at, octet) in address.to_be_bytes().into_iter().enumerate() {
                    if at > 0 {
                        batch.text.push('.');
                    }
                    push_decimal(&mut batch.text, u32::from(octet));
                }
            }
            let end = batch.text.len();
            // Each field is at most 29 bytes (TEXT_BYTES_MAX, PLACE_BYTES_MAX, IP_BYTES_MAX).
            batch.spans.push(Span {
                start,
                lens: [
                    (email - start) as u8,
                    (country - email) as u8,
                    (region - country) as u8,
                    (ip - region) as u8,
                    (end - ip) as u8,
                ],
            });
        }
    }

    /// The signature `i`: a new signer, or a re-send of an earlier one.
    pub fn signature(&self, i: u64) -> NewSignature {
        let original = self.original(i);
        let signer = self.signer(original);
        let petition = self.petition_of(original);
        let place = self.place_of(original, petition);
        NewSignature {
            petition: Workload::petition_id(petition),
            email: format!("s{signer:x}@example.org"),
            country: place.map(|(code, _)| code.to_owned()),
            region: place
                .filter(|&(_, region)| region > 0)
                .map(|(_, region)| format!("R{region}")),
            ip: self
                .ip_of(original)
                .map(|ip| std::net::Ipv4Addr::from(ip).to_string()),
            ..NewSignature::default()
        }
    }

    /// Signatures `range`, in order.
    pub fn signatures(&self, range: Range<u64>) -> Vec<NewSignature> {
        range.map(|i| self.signature(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn viral_shape_puts_the_hot_share_on_petition_zero() {
        let w = Workload::with(100_000, 1_000, Shape::Viral, 0.9, 0.0, 7);
        let hot = (0..100_000).filter(|&i| w.petition_of(i) == 0).count();
        assert!((89_000..91_000).contains(&hot), "{hot}");
        assert!((0..100_000).all(|i| w.petition_of(i) < 1_000));
    }

    #[test]
    fn re_sends_repeat_an_earlier_signature() {
        let w = Workload::with(10_000, 10, Shape::Uniform, 0.0, 0.2, 3);
        let resent = (0..10_000u64).filter(|&i| w.resends(i) != i).count();
        assert!((1_700..2_300).contains(&resent), "{resent}");
        for i in 0..10_000 {
            let o = w.original(i);
            assert!(o <= i);
            assert_eq!(w.signature(i), w.signature(o));
        }
    }

    #[test]
    fn filled_batches_hold_the_same_signatures() {
        let w = Workload::with(5_000, 300, Shape::Viral, 0.9, 0.1, 11);
        let mut batch = Batch::default();
        for range in [0..1_000, 4_000..5_000, 0..0] {
            w.fill(range.clone(), &mut batch);
            let borrowed = batch.signatures();
            let owned = w.signatures(range);
            assert_eq!(borrowed.len(), owned.len());
            for (b, o) in borrowed.iter().zip(&owned) {
                assert_eq!(*b, o.as_signature_ref());
            }
        }
        // One batch filled with everything holds the same signatures at the same positions,
        // and the longest signature fits the capacity it reserved.
        let mut all = Batch::with_capacity(5_000, w.text_bytes_max());
        let capacity = all.text.capacity();
        w.fill(0..5_000, &mut all);
        assert_eq!(all.len(), 5_000);
        assert_eq!(all.text.capacity(), capacity);
        w.fill(4_000..5_000, &mut batch);
        assert_eq!(all.signatures_in(4_000..5_000), batch.signatures());
        let longest = Workload::with(1, u32::MAX, Shape::Uniform, 0.0, 0.0, u64::MAX);
        let mut one = Batch::default();
        longest.fill(0..1, &mut one);
        assert!(one.text.len() <= TEXT_BYTES_MAX, "{}", one.text);
        let mut text = String::new();
        for n in [0u64, 1, 15, 16, 255, u64::MAX] {
            text.clear();
            push_hex(&mut text, n);
            assert_eq!(text, format!("{n:x}"));
        }
        for n in [0u32, 9, 10, 12_345, u32::MAX] {
            text.clear();
            push_decimal(&mut text, n);
            assert_eq!(text, n.to_string());
        }
    }

    /// A digest of signatures `range`'s petition ids and emails.
    fn digest(w: &Workload, range: Range<u64>) -> u64 {
        let mut h = 0u64;
        for s in w.signatures(range) {
            let text = s.petition.bytes().chain([b'|']).chain(s.email.bytes());
            for b in text.chain([b'\n']) {
                h = mix(h ^ u64::from(b));
            }
        }
        h
    }

    #[test]
    fn without_countries_the_signatures_are_those_of_before() {
        // Digests of the signatures generated before signatures could name a place (1e99467).
        for (shape, hot, dup, seed, expected) in [
            (Shape::Viral, 0.9, 0.05, 1u64, 0x987f_01be_a900_07dd_u64),
            (Shape::Uniform, 0.0, 0.0, 7, 0xaec8_9572_ae0d_f5db),
            (Shape::Zipf, 0.0, 0.1, 3, 0x99ef_95aa_8962_fb29),
        ] {
            let w = Workload::with(1_000_000, 10_000, shape, hot, dup, seed);
            assert_eq!(digest(&w, 0..20_000), expected, "{shape}");
            let w = w.with_places(None, None);
            assert_eq!(digest(&w, 0..20_000), expected, "{shape}");
            assert_eq!(w.text_bytes_max(), TEXT_BYTES_MAX);
            let mut batch = Batch::default();
            w.fill(0..20_000, &mut batch);
            assert!(batch.signatures().iter().all(|s| *s
                == SignatureRef {
                    petition: s.petition,
                    email: s.email,
                    ..SignatureRef::default()
                }));
        }
        let w = Workload::with(1_000_000, 10_000, Shape::Viral, 0.9, 0.05, 1);
        let first = w.signature(1);
        assert_eq!(
            (first.petition.as_str(), first.email.as_str()),
            ("p0", "s9e3779b97f4a7c14@example.org")
        );
        // A hot mix alone changes the hot petition's signatures only.
        let hot = w
            .clone()
            .with_places(None, Some(Countries::parse("GB:1").unwrap()));
        for i in 0..1_000 {
            let (a, b) = (w.signature(i), hot.signature(i));
            assert_eq!((&a.petition, &a.email), (&b.petition, &b.email));
            assert_eq!(b.country.is_some(), b.petition == "p0");
        }
    }

    /// Addresses: as many distinct ones as asked, a re-send from its original's, the filled
    /// batch and the owned signatures alike, and nothing else changed.
    #[test]
    fn signatures_come_from_the_addresses_asked_for() {
        let plain = Workload::with(50_000, 100, Shape::Uniform, 0.0, 0.2, 9);
        let w = plain.clone().with_ips(Some(1_000));
        let mut batch = Batch::with_capacity(50_000, w.text_bytes_max());
        let capacity = batch.text.capacity();
        w.fill(0..50_000, &mut batch);
        assert_eq!(batch.text.capacity(), capacity, "the longest fits");
        let filled = batch.signatures();
        let mut seen = std::collections::HashSet::new();
        for (i, s) in filled.iter().enumerate() {
            let owned = w.signature(i as u64);
            let ip = s.ip.expect("an address");
            assert_eq!(Some(ip), owned.ip.as_deref());
            assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{ip}");
            assert_eq!(
                (s.petition, s.email),
                (owned.petition.as_str(), owned.email.as_str())
            );
            let before = plain.signature(i as u64);
            assert_eq!(
                (&before.petition, &before.email),
                (&owned.petition, &owned.email)
            );
            seen.insert(ip.to_owned());
        }
        assert!((990..=1_000).contains(&seen.len()), "{}", seen.len());
        // A re-send (the same signer on the same petition) comes from its original's address.
        let mut by_signer = std::collections::HashMap::new();
        for i in 0..50_000u64 {
            let s = w.signature(i);
            let ip = by_signer
                .entry((s.petition, s.email))
                .or_insert(s.ip.clone());
            assert_eq!(*ip, s.ip);
        }
    }

    #[test]
    fn signatures_name_places_as_the_spec_says() {
        let uk = Countries::parse("GB:0.9:650,US:0.04:50,FR:0.02,DE:0.02,IE:0.01").unwrap();
        let w = Workload::with(200_000, 1_000, Shape::Uniform, 0.0, 0.1, 5)
            .with_places(Some(uk.clone()), None);
        let mut batch = Batch::with_capacity(200_000, w.text_bytes_max());
        let capacity = batch.text.capacity();
        w.fill(0..200_000, &mut batch);
        assert_eq!(batch.text.capacity(), capacity, "the longest fits");
        let signatures = batch.signatures();
        let mut by_country = std::collections::HashMap::<Option<&str>, u32>::new();
        let mut gb_regions = std::collections::HashSet::new();
        for s in &signatures {
            *by_country.entry(s.country).or_default() += 1;
            match (s.country, s.region) {
                (Some("GB"), Some(r)) => {
                    let n: u32 = r.strip_prefix('R').unwrap().parse().unwrap();
                    assert!((1..=650).contains(&n), "{r}");
                    gb_regions.insert(n);
                }
                (Some("US"), Some(r)) => {
                    let n: u32 = r.strip_prefix('R').unwrap().parse().unwrap();
                    assert!((1..=50).contains(&n), "{r}");
                }
                (Some(_), None) | (None, None) => {}
                other => panic!("{other:?}"),
            }
        }
        // Expected 180,000, 8,000, 4,000, 4,000, 2,000 and 2,000 without a country.
        let count = |c: Option<&str>| by_country.get(&c).copied().unwrap_or(0);
        assert!(
            (176_000..184_000).contains(&count(Some("GB"))),
            "{by_country:?}"
        );
        assert!(
            (7_200..8_800).contains(&count(Some("US"))),
            "{by_country:?}"
        );
        assert!(
            (3_400..4_600).contains(&count(Some("FR"))),
            "{by_country:?}"
        );
        assert!(
            (3_400..4_600).contains(&count(Some("DE"))),
            "{by_country:?}"
        );
        assert!(
            (1_600..2_400).contains(&count(Some("IE"))),
            "{by_country:?}"
        );
        assert!((1_600..2_400).contains(&count(None)), "{by_country:?}");
        assert_eq!(gb_regions.len(), 650);
        // Signatures do not change with their places, a re-send names its original's place, and
        // the owned and borrowed forms agree.
        let plain = Workload::with(200_000, 1_000, Shape::Uniform, 0.0, 0.1, 5);
        for i in (0..200_000).step_by(97) {
            let owned = w.signature(i);
            assert_eq!(signatures[i as usize], owned.as_signature_ref());
            assert_eq!(owned.email, plain.signature(i).email);
            assert_eq!(owned, w.signature(w.original(i)));
        }
        // Another seed draws other places.
        let other =
            Workload::with(200_000, 1_000, Shape::Uniform, 0.0, 0.1, 6).with_places(Some(uk), None);
        let differ = (0..1_000)
            .filter(|&i| other.signature(i).region != w.signature(i).region)
            .count();
        assert!(differ > 900, "{differ}");
    }

    #[test]
    fn the_hot_petition_has_its_own_mix() {
        let w = Workload::with(100_000, 10_000, Shape::Viral, 0.9, 0.0, 9).with_places(
            Some(Countries::parse("uniform:50").unwrap()),
            Some(Countries::parse("GB:0.9").unwrap()),
        );
        let (mut hot, mut hot_gb, mut rest, mut rest_gb, mut rest_none) = (0, 0, 0, 0, 0);
        let mut rest_countries = std::collections::HashSet::new();
        for s in w.signatures(0..100_000) {
            if s.petition == "p0" {
                hot += 1;
                hot_gb += u32::from(s.country.as_deref() == Some("GB"));
                assert!(s.country.is_none() || s.country.as_deref() == Some("GB"));
            } else {
                rest += 1;
                rest_gb += u32::from(s.country.as_deref() == Some("GB"));
                rest_none += u32::from(s.country.is_none());
                rest_countries.insert(s.country.clone());
            }
            assert!(s.region.is_none());
        }
        // ~90,000 on the hot petition, 90% of them from GB; the rest over 50 countries (~200
        // each from GB) and every one naming a country.
        assert!((89_000..91_000).contains(&hot), "{hot}");
        assert!(
            (hot_gb as f64 / hot as f64 - 0.9).abs() < 0.01,
            "{hot_gb} of {hot}"
        );
        assert_eq!(rest_none, 0);
        assert_eq!(rest_countries.len(), 50);
        assert!((100..300).contains(&rest_gb), "{rest_gb} of {rest}");
        // The hot mix is the viral shape's only.
        let uniform = Workload::with(1_000, 10, Shape::Uniform, 0.0, 0.0, 9)
            .with_places(None, Some(Countries::parse("GB:1").unwrap()));
        assert!(uniform
            .signatures(0..1_000)
            .iter()
            .all(|s| s.country.is_none()));
    }

    #[test]
    fn thread_ranges_cover_everything_once() {
        let w = Workload::with(1_001, 1, Shape::Uniform, 0.0, 0.0, 0);
        let ranges: Vec<_> = (0..3).map(|t| w.thread_range(t, 3)).collect();
        assert_eq!(ranges[0].start, 0);
        assert_eq!(ranges[2].end, 1_001);
        assert_eq!(ranges[0].end, ranges[1].start);
        assert_eq!(ranges[1].end, ranges[2].start);
    }
}
