//! Pass criteria, as k6 has thresholds: `--max-p99 10ms` and `--max-error-rate 0.1%`.
//!
//! A run with criteria still measures and reports everything; the criteria only judge the
//! figures the report already holds, after the load, and the binary then exits
//! [`EXIT_CRITERIA_FAILED`] if one failed. They judge phase 1 (the signatures, or the GETs of
//! `--get`): phase 2 of `--validate-share` has its own figures in the report and is not judged.
//!
//! - **p99** is the report's corrected p99 (`latency_ms.corrected.p99`: from the intended send
//!   time with `-R` or `--stages`, from the send otherwise), over the HTTP requests answered.
//! - **Error rate** is `errors / attempts`, where errors are what the progress line counts as
//!   errors ([`Counts::errors`]): every answer but the signature lifecycle's (201, 200, 202) and
//!   the abuse controls' final refusals (429 `ip_rate_limited`, 403 `blocked`), so 4xx
//!   rejections, the per-key 429 `rate_limited`, 503s and other 5xx, answers outside the
//!   contract, timeouts, connection errors and failed connects; attempts are the signatures (or
//!   GETs) sent (answered, timed out or lost with their connection) plus the failed connects
//!   (each one counts once). Signatures an open loop never sent (`not_sent`) are in neither.
//!
//! A criterion with nothing to judge (no request answered, nothing attempted) fails: a run that
//! measured nothing has not shown that it met anything.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::stats::Counts;

/// The exit code of a run whose report is complete but which failed a pass criterion (1 is an
/// operating error or a failed `--durability-check`, 2 a usage error).
pub const EXIT_CRITERIA_FAILED: u8 = 3;

/// The criteria a run was given.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Criteria {
    /// `--max-p99`.
    pub max_p99: Option<Duration>,
    /// `--max-error-rate`, as a fraction.
    pub max_error_rate: Option<f64>,
}

/// How each criterion fared, for the table and the JSON report (`criteria`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CriteriaReport {
    /// Whether every criterion passed.
    pub passed: bool,
    /// One per criterion given, in the order p99, error rate.
    pub checks: Vec<Check>,
}

/// One criterion and what the run measured for it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    /// `p99_ms` or `error_rate`.
    pub name: &'static str,
    /// The flag as it reads in canonical form, e.g. `--max-p99 10ms`.
    pub flag: String,
    /// The most allowed: milliseconds for `p99_ms`, a fraction for `error_rate`.
    pub limit: f64,
    /// What the run measured, in the same unit; null when there was nothing to measure.
    pub measured: Option<f64>,
    /// `measured <= limit`.
    pub passed: bool,
    /// What the figure was measured over, e.g. `12 errors of 10000 attempts`.
    pub basis: String,
}

impl Criteria {
    /// Whether no criterion was given.
    pub fn is_empty(&self) -> bool {
        self.max_p99.is_none() && self.max_error_rate.is_none()
    }

    /// Judges a run's corrected `p99_ms` over `answered_requests`, and its `counts`. None when no
    /// criterion was given.
    pub fn check(
        &self,
        p99_ms: f64,
        answered_requests: u64,
        counts: &Counts,
    ) -> Option<CriteriaReport> {
        if self.is_empty() {
            return None;
        }
        let mut checks = Vec::new();
        if let Some(max) = self.max_p99 {
            let limit = max.as_secs_f64() * 1000.0;
            let measured = (answered_requests > 0).then_some(p99_ms);
            checks.push(Check {
                name: "p99_ms",
                flag: format!("--max-p99 {}", format_ms(limit)),
                limit,
                measured,
                passed: measured.is_some_and(|p99| p99 <= limit),
                basis: if answered_requests > 0 {
                    format!("corrected latency of {answered_requests} requests answered")
                } else {
                    "no request was answered".to_owned()
                },
            });
        }
        if let Some(limit) = self.max_error_rate {
            let (errors, attempts) = error_rate_terms(counts);
            let measured = (attempts > 0).then(|| errors as f64 / attempts as f64);
            checks.push(Check {
                name: "error_rate",
                flag: format!("--max-error-rate {}", format_percent(limit)),
                limit,
                measured,
                passed: measured.is_some_and(|rate| rate <= limit),
                basis: if attempts > 0 {
                    format!("{errors} errors of {attempts} attempts")
                } else {
                    "nothing was attempted".to_owned()
                },
            });
        }
        Some(CriteriaReport {
            passed: checks.iter().all(|check| check.passed),
            checks,
        })
    }
}

/// The error rate's numerator and denominator (see the module docs).
pub fn error_rate_terms(counts: &Counts) -> (u64, u64) {
    let attempts =
        counts.answered + counts.timeouts + counts.connection_errors + counts.connect_failures;
    (counts.errors(), attempts)
}

impl CriteriaReport {
    /// The criteria's part of the table.
    pub fn table(&self, out: &mut String) {
        let verdict = if self.passed {
            "all passed".to_owned()
        } else {
            format!("FAILED (exit {EXIT_CRITERIA_FAILED})")
        };
        // Writing into a String cannot fail.
        let _ = writeln!(out, "\ncriteria   {verdict}");
        for check in &self.checks {
            let label = if check.is_latency() {
                "p99 latency"
            } else {
                "error rate"
            };
            let measured = check.measured.map(|value| check.show(value));
            let limit = check.show(check.limit);
            let _ = writeln!(
                out,
                "  {label:<14}{:>12}  at most {limit:<10}{:<8}({})",
                measured.as_deref().unwrap_or("-"),
                if check.passed { "passed" } else { "FAILED" },
                check.basis
            );
        }
    }

    /// One line per failed criterion, for stderr.
    pub fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|check| !check.passed)
            .map(|check| {
                let measured = match check.measured {
                    None => "nothing measured".to_owned(),
                    Some(value) => format!("measured {}", check.show(value)),
                };
                format!("{} failed: {measured} ({})", check.flag, check.basis)
            })
            .collect()
    }
}

impl Check {
    fn is_latency(&self) -> bool {
        self.name == "p99_ms"
    }

    /// A value in this check's unit, for people: milliseconds or a percentage.
    fn show(&self, value: f64) -> String {
        if self.is_latency() {
            format_ms(value)
        } else {
            format_percent(value)
        }
    }
}

/// Milliseconds for people: `10ms`, `2.5ms`, `0.25ms`.
fn format_ms(ms: f64) -> String {
    let text = format!("{ms:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}ms")
}

/// A fraction as a percentage for people: `0.1%`, `0.0123%`, `5%`.
fn format_percent(fraction: f64) -> String {
    let text = format!("{:.4}", fraction * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// Parses `--max-p99`: a positive number with a unit, `us` (or `µs`), `ms` or `s`: `10ms`,
/// `2.5ms`, `500us`, `1s`. A bare number is refused, since seconds and milliseconds are both
/// plausible.
pub fn parse_latency_limit(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale_us) = if let Some(number) = text.strip_suffix("ms") {
        (number, 1e3)
    } else if let Some(number) = text.strip_suffix("us").or_else(|| text.strip_suffix("µs")) {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1e6)
    } else {
        return Err(format!(
            "{text:?} has no unit; give a latency with one, e.g. 10ms, 2.5ms, 500us or 1s"
        ));
    };
    let value: f64 = number.trim().parse().map_err(|_| {
        format!("{text:?} is not a latency; expected a number and a unit, e.g. 10ms, 500us, 1s")
    })?;
    let us = value * scale_us;
    if !us.is_finite() || us <= 0.0 {
        return Err(format!("must be more than zero, not {text}"));
    }
    if us > crate::stats::LATENCY_MAX_US as f64 {
        return Err(format!(
            "{text} is more than the hour the latency histograms hold"
        ));
    }
    Ok(Duration::from_nanos((us * 1e3).round() as u64))
}

/// Parses `--max-error-rate`: a percentage (`0.1%`, from 0% to 100%) or a plain fraction
/// (`0.001`, from 0 to 1).
pub fn parse_error_rate(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let (number, percent) = match text.strip_suffix('%') {
        Some(number) => (number.trim(), true),
        None => (text, false),
    };
    let value: f64 = number.parse().map_err(|_| {
        format!("{text:?} is not an error rate; expected a percentage (0.1%) or a fraction (0.001)")
    })?;
    if percent {
        if !(0.0..=100.0).contains(&value) {
            return Err(format!("a percentage must be from 0% to 100%, not {text}"));
        }
        return Ok(value / 100.0);
    }
    if !(0.0..=1.0).contains(&value) {
        let hint = if value > 1.0 && value <= 100.0 {
            format!(" (for {value} percent, write {value}%)")
        } else {
            String::new()
        };
        return Err(format!("a fraction must be from 0 to 1, not {text}{hint}"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::outcome::Outcome;

    #[test]
    fn latency_limits() {
        let check = |text: &str, expected: Option<u64>| {
            assert_eq!(
                parse_latency_limit(text).ok().map(|d| d.as_micros() as u64),
                expected,
                "{text}"
            );
        };
        check("10ms", Some(10_000));
        check("2.5ms", Some(2_500));
        check(" 500us ", Some(500));
        check("500µs", Some(500));
        check("1s", Some(1_000_000));
        check("0.5s", Some(500_000));
        for bad in [
            "10", "", "ms", "0ms", "-1ms", "nanms", "infs", "2h", "10 m", "3601s",
        ] {
            assert!(parse_latency_limit(bad).is_err(), "{bad}");
        }
        assert!(parse_latency_limit("10").unwrap_err().contains("no unit"));
    }

    #[test]
    fn error_rates() {
        let check = |text: &str, expected: Option<f64>| {
            assert_eq!(parse_error_rate(text).ok(), expected, "{text}");
        };
        check("0.1%", Some(0.001));
        check("0.001", Some(0.001));
        check("0", Some(0.0));
        check("0%", Some(0.0));
        check("100%", Some(1.0));
        check("1", Some(1.0));
        for bad in ["", "%", "abc", "-1%", "150%", "-0.1", "2", "nan", "0.1 %%"] {
            assert!(parse_error_rate(bad).is_err(), "{bad}");
        }
        assert!(parse_error_rate("5").unwrap_err().contains("write 5%"));
    }

    fn counts(outcomes: &[(Outcome, u64)], connect_failures: u64) -> Counts {
        let mut counts = Counts::default();
        for (outcome, n) in outcomes {
            for _ in 0..*n {
                counts.add(outcome);
            }
        }
        counts.connect_failures = connect_failures;
        counts
    }

    #[test]
    fn what_the_error_rate_counts() {
        let c = counts(
            &[
                (Outcome::Accepted, 900),
                (Outcome::Duplicate, 10),
                (Outcome::IpRateLimited, 50),
                (Outcome::Blocked, 20),
                (Outcome::RateLimited, 5),
                (Outcome::Rejected("invalid_signature".into()), 4),
                (Outcome::Unavailable("overloaded".into()), 3),
                (Outcome::ServerError(500), 2),
                (Outcome::Timeout, 1),
                (Outcome::ConnectionError, 4),
            ],
            1,
        );
        // 429 rate_limited, 4xx, 503, 5xx, timeouts, connection errors and failed connects are
        // errors; the abuse controls' refusals are not.
        assert_eq!(error_rate_terms(&c), (20, 1000));
    }

    #[test]
    fn criteria_pass_fail_and_nothing_measured() {
        let c = counts(&[(Outcome::Accepted, 999), (Outcome::Timeout, 1)], 0);
        let both = Criteria {
            max_p99: Some(Duration::from_millis(10)),
            max_error_rate: Some(0.001),
        };
        assert_eq!(Criteria::default().check(1.0, 10, &c), None);
        let report = both.check(9.5, 999, &c).unwrap();
        assert!(report.passed, "{report:?}");
        assert_eq!(report.checks[0].flag, "--max-p99 10ms");
        assert_eq!(report.checks[1].flag, "--max-error-rate 0.1%");
        assert_eq!(report.checks[1].measured, Some(0.001));
        assert_eq!(report.checks[1].basis, "1 errors of 1000 attempts");

        let report = both.check(10.5, 999, &c).unwrap();
        assert!(!report.passed);
        assert!(!report.checks[0].passed && report.checks[1].passed);
        assert_eq!(
            report.failures(),
            ["--max-p99 10ms failed: measured 10.5ms (corrected latency of 999 requests answered)"]
        );
        let mut table = String::new();
        report.table(&mut table);
        assert!(table.contains("criteria   FAILED (exit 3)"), "{table}");
        assert!(
            table.contains("  p99 latency         10.5ms  at most 10ms      FAILED"),
            "{table}"
        );

        let stricter = Criteria {
            max_p99: None,
            max_error_rate: Some(0.0),
        };
        assert!(!stricter.check(1.0, 999, &c).unwrap().passed);

        // Nothing answered, nothing attempted: both fail.
        let report = both.check(0.0, 0, &Counts::default()).unwrap();
        assert!(!report.passed);
        assert!(report
            .checks
            .iter()
            .all(|c| c.measured.is_none() && !c.passed));
    }
}
