//! `--hgrm FILE`: a latency histogram as HdrHistogram's percentile distribution text (the
//! `.hgrm` format of `outputPercentileDistribution`), in milliseconds, which HdrHistogram's own
//! plotter and the tools built on it read.
//!
//! The layout: a header line, an empty line, one row per quantile step (value, quantile,
//! count of values up to it, `1/(1-quantile)`; the last row, at quantile 1, has no fourth
//! column), then three `#[...]` lines with the mean, standard deviation, maximum, total count,
//! and the histogram's buckets and sub-buckets. Values have as many decimals as the histogram
//! has significant digits (3). The quantile steps are the crate's [`Histogram::iter_quantiles`]
//! with [`TICKS_PER_HALF_DISTANCE`] ticks per half distance to 100%, as HdrHistogram uses.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Quantile steps per halving of the distance to 100% (HdrHistogram's default).
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Microseconds (what the histograms hold) per millisecond (what the file says).
const MICROS_PER_MS: f64 = 1000.0;

/// The percentile distribution of `histogram` (in microseconds), in milliseconds.
pub fn percentile_distribution(histogram: &Histogram<u64>) -> String {
    let decimals = usize::from(histogram.sigfig());
    let ms = |us: f64| us / MICROS_PER_MS;
    let mut out = String::new();
    // Writing into a String cannot fail; the results are ignored for that reason.
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !histogram.is_empty() {
        let mut total = 0u64;
        for step in histogram.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += step.count_since_last_iteration();
            let value = ms(step.value_iterated_to() as f64);
            let quantile = step.quantile_iterated_to();
            if quantile < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.decimals$} {quantile:>14.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - quantile)
                );
            } else {
                let _ = writeln!(out, "{value:>12.decimals$} {quantile:>14.12} {total:>10}");
            }
        }
    }
    let (mean, deviation, max) = if histogram.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            ms(histogram.mean()),
            ms(histogram.stdev()),
            ms(histogram.max() as f64),
        )
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:>12.decimals$}, StdDeviation   = {deviation:>12.decimals$}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:>12.decimals$}, Total count    = {:>12}]",
        histogram.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        histogram.buckets(),
        sub_buckets(histogram.sigfig())
    );
    out
}

/// One step of a percentile distribution: a quantile and the latency reached at it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantileValue {
    /// The quantile, 0 to 1.
    pub quantile: f64,
    /// The latency in milliseconds.
    pub ms: f64,
}

/// The percentile distribution of `histogram` (in microseconds) as the `.hgrm` rows have it:
/// one step per quantile of [`Histogram::iter_quantiles`], the last at quantile 1.
pub fn distribution(histogram: &Histogram<u64>) -> Vec<QuantileValue> {
    if histogram.is_empty() {
        return Vec::new();
    }
    histogram
        .iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .map(|step| QuantileValue {
            quantile: step.quantile_iterated_to(),
            ms: step.value_iterated_to() as f64 / MICROS_PER_MS,
        })
        .collect()
}

/// HdrHistogram's sub-buckets per bucket for `sigfig` significant digits: the power of two at
/// or above 2 × 10^sigfig (2048 for 3). The crate keeps the figure private.
fn sub_buckets(sigfig: u8) -> u32 {
    (2 * 10u32.pow(u32::from(sigfig))).next_power_of_two()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn the_format_of_a_known_histogram() {
        let mut histogram = new_histogram();
        // 1..=1000 µs, one each: 0.001 ms to 1 ms.
        for us in 1..=1000 {
            histogram.record(us).unwrap();
        }
        let text = percentile_distribution(&histogram);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        assert_eq!(
            lines[2],
            "       0.001 0.000000000000          1           1.00"
        );
        assert!(lines.contains(&"       0.500 0.500000000000        500           2.00"));
        // (The crate's quantile steps land one value past 0.9 × 1000 here: 1 ulp of rounding.)
        assert!(lines.contains(&"       0.901 0.900000000000        901          10.00"));
        let last_row = lines[lines.len() - 4];
        assert_eq!(last_row, "       1.000 1.000000000000       1000");
        let footer = &lines[lines.len() - 3..];
        assert_eq!(
            footer[0],
            "#[Mean    =        0.500, StdDeviation   =        0.289]"
        );
        assert_eq!(
            footer[1],
            "#[Max     =        1.000, Total count    =         1000]"
        );
        assert_eq!(
            footer[2],
            "#[Buckets =           22, SubBuckets     =         2048]"
        );
    }

    #[test]
    fn an_empty_histogram_has_a_header_and_a_footer() {
        let text = percentile_distribution(&new_histogram());
        assert_eq!(
            text,
            "       Value     Percentile TotalCount 1/(1-Percentile)\n\n\
             #[Mean    =        0.000, StdDeviation   =        0.000]\n\
             #[Max     =        0.000, Total count    =            0]\n\
             #[Buckets =           22, SubBuckets     =         2048]\n"
        );
        assert_eq!(sub_buckets(2), 256);
        assert_eq!(sub_buckets(5), 262_144);
    }
}
