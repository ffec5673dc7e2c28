//! Deterministic signature workloads: signature `i` of a run is a pure function of the seed and
//! `i`, so threads generate their share without coordination and runs repeat exactly.

use std::ops::Range;

use engine::{NewSignature, SignatureRef};

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

/// The longest text [`Workload::fill`] writes for one signature: 'p', a `u32` in decimal, 's',
/// a `u64` in hex and "@example.org".
const TEXT_BYTES_MAX: usize = 1 + 10 + 1 + 16 + 12;

/// Signatures generated into reused buffers: once warm, filling it allocates nothing.
#[derive(Debug, Default)]
pub struct Batch {
    text: String,
    /// Per signature: where its petition id starts, where its email starts, where it ends.
    spans: Vec<[usize; 3]>,
}

impl Batch {
    /// An empty batch that holds `signatures` without growing.
    pub fn with_capacity(signatures: usize) -> Batch {
        Batch {
            text: String::with_capacity(signatures * TEXT_BYTES_MAX),
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
            .map(|&[petition, email, end]| SignatureRef {
                petition: &self.text[petition..email],
                email: &self.text[email..end],
                ..SignatureRef::default()
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
}

/// SplitMix64: a fast, well-mixed function of one integer.
fn mix(mut z: u64) -> u64 {
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
        }
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
            let petition = batch.text.len();
            batch.text.push('p');
            push_decimal(&mut batch.text, self.petition_of(original));
            let email = batch.text.len();
            batch.text.push('s');
            push_hex(&mut batch.text, self.signer(original));
            batch.text.push_str("@example.org");
            batch.spans.push([petition, email, batch.text.len()]);
        }
    }

    /// The signature `i`: a new signer, or a re-send of an earlier one.
    pub fn signature(&self, i: u64) -> NewSignature {
        let original = self.original(i);
        let signer = self.signer(original);
        NewSignature {
            petition: Workload::petition_id(self.petition_of(original)),
            email: format!("s{signer:x}@example.org"),
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
        let mut all = Batch::with_capacity(5_000);
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
