//! Traffic shape: which petition the next signature goes to, and who signs it.
//!
//! Petitions are numbered `0..petitions` and named `lt-<seed>-<i>`; signers are numbered per
//! connection and named `lt<seed>.<connection>.<n>@example.org`, so a run never collides with
//! another run of a different seed, and the ledger can be replayed by name alone.

use std::fmt::Write as _;
use std::time::Duration;

use rand::Rng;

use crate::cli::ShapeKind;

/// The id of petition `index` in a run with `seed`: `lt-<seed>-<index>` (at most 34 characters of
/// `[A-Za-z0-9-]`, inside the server's 64).
pub fn petition_id(seed: u64, index: u32) -> String {
    let mut id = String::new();
    write_petition_id(&mut id, seed, index);
    id
}

/// Appends [`petition_id`] to `out`, without allocating once `out` has grown.
pub fn write_petition_id(out: &mut String, seed: u64, index: u32) {
    // Writing into a String cannot fail.
    let _ = write!(out, "lt-{seed}-{index}");
}

/// Appends the email of signer `number` of `connection` in a run with `seed`.
pub fn write_email(out: &mut String, seed: u64, connection: u32, number: u64) {
    // Writing into a String cannot fail.
    let _ = write!(out, "lt{seed}.{connection}.{number}@example.org");
}

/// Picks the petition of each signature according to the shape.
#[derive(Debug, Clone)]
pub struct Picker {
    kind: ShapeKind,
    petitions: u32,
    /// Viral: the hot petition's share at the start (its uniform share, 1/petitions).
    share_base: f64,
    /// Viral: its share at the end of the ramp.
    share_peak: f64,
    /// Viral: how long the share takes to go from base to peak.
    ramp: Duration,
    /// Zipf: cumulative weights, normalised so the last is 1.
    zipf_cdf: Vec<f64>,
}

impl Picker {
    /// Builds the picker; `ramp` and `hot_share` matter for `Viral` only, `zipf_exponent` for
    /// `Zipf` only.
    pub fn new(
        kind: ShapeKind,
        petitions: u32,
        hot_share: f64,
        ramp: Duration,
        zipf_exponent: f64,
    ) -> Picker {
        assert!(petitions > 0, "at least one petition");
        let zipf_cdf = if kind == ShapeKind::Zipf {
            let mut total = 0.0;
            let mut cdf: Vec<f64> = (0..petitions)
                .map(|i| {
                    total += 1.0 / f64::from(i + 1).powf(zipf_exponent);
                    total
                })
                .collect();
            for value in &mut cdf {
                *value /= total;
            }
            cdf
        } else {
            Vec::new()
        };
        Picker {
            kind,
            petitions,
            share_base: 1.0 / f64::from(petitions),
            share_peak: hot_share,
            ramp,
            zipf_cdf,
        }
    }

    /// The viral petition's share of traffic `elapsed` into the run (linear ramp).
    pub fn hot_share_at(&self, elapsed: Duration) -> f64 {
        if self.ramp.is_zero() || elapsed >= self.ramp {
            return self.share_peak;
        }
        let progress = elapsed.as_secs_f64() / self.ramp.as_secs_f64();
        self.share_base + (self.share_peak - self.share_base) * progress
    }

    /// The petition index of the next signature, `elapsed` into the run.
    pub fn pick<R: Rng>(&self, rng: &mut R, elapsed: Duration) -> u32 {
        match self.kind {
            ShapeKind::Uniform => rng.random_range(0..self.petitions),
            ShapeKind::Zipf => {
                let u: f64 = rng.random();
                let index = self.zipf_cdf.partition_point(|&c| c < u);
                // u < 1 and the last entry is 1 (up to rounding), so the index is in range; clamp
                // against rounding all the same.
                index.min(self.zipf_cdf.len() - 1) as u32
            }
            ShapeKind::Viral => {
                if self.petitions == 1 || rng.random_bool(self.hot_share_at(elapsed)) {
                    0
                } else {
                    rng.random_range(1..self.petitions)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    fn shares(picker: &Picker, elapsed: Duration, draws: u32) -> Vec<f64> {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = vec![0u32; picker.petitions as usize];
        for _ in 0..draws {
            counts[picker.pick(&mut rng, elapsed) as usize] += 1;
        }
        counts
            .into_iter()
            .map(|c| f64::from(c) / f64::from(draws))
            .collect()
    }

    #[test]
    fn viral_ramps_from_base_to_peak() {
        let picker = Picker::new(ShapeKind::Viral, 100, 0.9, Duration::from_secs(10), 1.0);
        assert!((picker.hot_share_at(Duration::ZERO) - 0.01).abs() < 1e-9);
        assert!((picker.hot_share_at(Duration::from_secs(5)) - 0.455).abs() < 1e-9);
        assert!((picker.hot_share_at(Duration::from_secs(60)) - 0.9).abs() < 1e-9);
        let start = shares(&picker, Duration::ZERO, 100_000);
        assert!(start[0] < 0.02, "{}", start[0]);
        let peak = shares(&picker, Duration::from_secs(10), 100_000);
        assert!((peak[0] - 0.9).abs() < 0.01, "{}", peak[0]);
        // The rest is spread over the other 99.
        assert!(peak[1..].iter().all(|&s| s < 0.003));
    }

    #[test]
    fn zipf_is_skewed_and_uniform_is_not() {
        let zipf = shares(
            &Picker::new(ShapeKind::Zipf, 1000, 0.9, Duration::ZERO, 1.0),
            Duration::ZERO,
            200_000,
        );
        // H(1000) ~ 7.49, so petition 0 takes ~13% and petition 9 ~1.3%.
        assert!((zipf[0] - 0.1336).abs() < 0.01, "{}", zipf[0]);
        assert!((zipf[9] - 0.01336).abs() < 0.003, "{}", zipf[9]);
        let uniform = shares(
            &Picker::new(ShapeKind::Uniform, 10, 0.9, Duration::ZERO, 1.0),
            Duration::ZERO,
            100_000,
        );
        assert!(uniform.iter().all(|&s| (s - 0.1).abs() < 0.01));
    }

    #[test]
    fn one_petition_takes_everything() {
        for kind in [ShapeKind::Uniform, ShapeKind::Zipf, ShapeKind::Viral] {
            let picker = Picker::new(kind, 1, 0.5, Duration::ZERO, 1.0);
            assert_eq!(shares(&picker, Duration::ZERO, 100), vec![1.0]);
        }
    }

    #[test]
    fn names() {
        assert_eq!(petition_id(42, 7), "lt-42-7");
        assert!(petition_id(u64::MAX, u32::MAX).len() <= 64);
        let mut email = String::new();
        write_email(&mut email, 42, 3, 99);
        assert_eq!(email, "lt42.3.99@example.org");
    }
}
