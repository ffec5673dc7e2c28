//! The open loop's schedule: when each request is due. `-R RATE` is a constant rate;
//! `--stages 30s:1000,1m:20000,30s:0` ramps the rate linearly, as k6's ramping-arrival-rate
//! does: each stage goes from the previous stage's target (0 before the first) to its own over
//! its duration, and the run lasts the stages' sum.
//!
//! Rates are in signatures per second; a request carries `batch` of them, so slot `k` (request
//! `k`) is due when the cumulative count of requests the rate has called for reaches `k`. For a
//! linear ramp from `r0` to `r1` requests per second over `d` seconds that count is
//! `r0·t + (r1 − r0)·t²/(2d)` at `t` into the stage, which [`Schedule::offset`] inverts.

use std::time::Duration;

/// Most stages `--stages` takes.
pub const STAGES_MAX: usize = 1000;

/// One stage of `--stages`: ramp to `target_per_s` over `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    /// How long the ramp takes.
    pub duration: Duration,
    /// The rate reached at its end, in signatures per second (0 or more).
    pub target_per_s: f64,
}

/// `--stages` as given: at least one stage, and a rate above 0 somewhere.
#[derive(Debug, Clone, PartialEq)]
pub struct Stages {
    /// The flag's text.
    pub spec: String,
    /// The stages in order.
    pub stages: Vec<Stage>,
}

impl Stages {
    /// Parses `DURATION:RATE,DURATION:RATE,...`, e.g. `30s:1000,1m:20000,30s:0`.
    pub fn parse(text: &str) -> Result<Stages, String> {
        let spec = text.trim();
        if spec.is_empty() {
            return Err(
                "no stages; expected DURATION:RATE,..., e.g. 30s:1000,1m:20000,30s:0".to_owned(),
            );
        }
        let mut stages = Vec::new();
        for entry in spec.split(',') {
            let entry = entry.trim();
            let Some((duration, rate)) = entry.split_once(':') else {
                return Err(format!(
                    "{entry:?}: a stage is DURATION:RATE (e.g. 30s:1000), with a colon"
                ));
            };
            let duration = crate::cli::parse_duration(duration)
                .map_err(|e| format!("{entry:?}: the duration {e}"))?;
            if duration.is_zero() {
                return Err(format!("{entry:?}: a stage must last more than zero"));
            }
            let target_per_s: f64 = rate.trim().parse().map_err(|_| {
                format!("{entry:?}: the rate {rate:?} is not a number of signatures per second")
            })?;
            if !target_per_s.is_finite() || target_per_s < 0.0 {
                return Err(format!(
                    "{entry:?}: the rate must be 0 or more signatures per second, not {rate}"
                ));
            }
            stages.push(Stage {
                duration,
                target_per_s,
            });
        }
        if stages.len() > STAGES_MAX {
            return Err(format!("{} stages; at most {STAGES_MAX}", stages.len()));
        }
        if stages.iter().all(|stage| stage.target_per_s == 0.0) {
            return Err("every stage's rate is 0: the run would send nothing".to_owned());
        }
        Ok(Stages {
            spec: spec.to_owned(),
            stages,
        })
    }

    /// How long the stages last together.
    pub fn duration(&self) -> Duration {
        self.stages.iter().map(|stage| stage.duration).sum()
    }
}

/// One stage in the units [`Schedule`] works in: seconds and requests (built by
/// [`Schedule::stages`]).
#[derive(Debug, Clone, Copy)]
pub struct Ramp {
    /// When it starts, in seconds from the start of the run.
    start_s: f64,
    /// How long it lasts, in seconds.
    duration_s: f64,
    /// Requests per second at its start and at its end.
    from: f64,
    to: f64,
    /// Requests due before it starts.
    before: f64,
}

impl Ramp {
    /// Requests it calls for in all.
    fn requests(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.duration_s
    }

    /// Requests due `t` seconds into it (0 ≤ t ≤ duration).
    fn due_at(&self, t: f64) -> f64 {
        self.from * t + (self.to - self.from) * t * t / (2.0 * self.duration_s)
    }
}

/// When each request of an open loop is due.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// `-R`: one request every `interval_ns`.
    Constant {
        /// Nanoseconds between two due requests.
        interval_ns: f64,
    },
    /// `--stages`.
    Stages {
        /// The stages in requests per second.
        ramps: Vec<Ramp>,
    },
}

impl Schedule {
    /// A constant `rate` of signatures per second, `batch` to a request.
    pub fn constant(rate: f64, batch: u32) -> Schedule {
        Schedule::Constant {
            interval_ns: 1e9 * f64::from(batch) / rate,
        }
    }

    /// The `stages` (in signatures per second), `batch` to a request.
    pub fn stages(stages: &Stages, batch: u32) -> Schedule {
        let mut ramps = Vec::with_capacity(stages.stages.len());
        let (mut start_s, mut from, mut before) = (0.0, 0.0, 0.0);
        for stage in &stages.stages {
            let ramp = Ramp {
                start_s,
                duration_s: stage.duration.as_secs_f64(),
                from,
                to: stage.target_per_s / f64::from(batch),
                before,
            };
            start_s += ramp.duration_s;
            before += ramp.requests();
            from = ramp.to;
            ramps.push(ramp);
        }
        Schedule::Stages { ramps }
    }

    /// When request `k` is due, from the start; None if the schedule ends before.
    pub fn offset(&self, k: u64) -> Option<Duration> {
        let seconds = match self {
            Schedule::Constant { interval_ns } => {
                return Some(Duration::from_nanos((k as f64 * interval_ns) as u64));
            }
            Schedule::Stages { ramps } => {
                let k = k as f64;
                let ramp = ramps
                    .iter()
                    .find(|ramp| k < ramp.before + ramp.requests())?;
                let x = k - ramp.before;
                if x <= 0.0 {
                    ramp.start_s
                } else {
                    // The root of from·t + a·t² = x, a = (to − from)/(2d), in the form that
                    // neither divides by a (0 on a flat stage) nor loses precision.
                    let a = (ramp.to - ramp.from) / (2.0 * ramp.duration_s);
                    let root = (ramp.from * ramp.from + 4.0 * a * x).max(0.0).sqrt();
                    let t = 2.0 * x / (ramp.from + root);
                    ramp.start_s + t.clamp(0.0, ramp.duration_s)
                }
            }
        };
        Some(Duration::from_secs_f64(seconds))
    }

    /// Requests due before `end` (their offset is less than it).
    pub fn due_before(&self, end: Duration) -> u64 {
        let end_s = end.as_secs_f64();
        let estimate = match self {
            Schedule::Constant { interval_ns } => end.as_nanos() as f64 / interval_ns,
            Schedule::Stages { ramps } => match ramps
                .iter()
                .find(|ramp| end_s < ramp.start_s + ramp.duration_s)
            {
                Some(ramp) => ramp.before + ramp.due_at(end_s - ramp.start_s),
                None => ramps.last().map_or(0.0, |r| r.before + r.requests()),
            },
        };
        // The estimate is exact but for rounding; settle it on the offsets themselves.
        let mut due = estimate.ceil().min(u64::MAX as f64) as u64;
        let before = |k: u64| self.offset(k).is_some_and(|offset| offset < end);
        while due > 0 && !before(due - 1) {
            due -= 1;
        }
        while due < u64::MAX && before(due) {
            due += 1;
        }
        due
    }

    /// The rate due over `[from, to)`, in requests per second (`to` after `from`).
    pub fn rate_over(&self, from: Duration, to: Duration) -> f64 {
        let due = self.due_before(to).saturating_sub(self.due_before(from));
        due as f64 / (to - from).as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn stage_specs() {
        let stages = Stages::parse("30s:1000, 1m:20000,30s:0").unwrap();
        assert_eq!(stages.stages.len(), 3);
        assert_eq!(stages.stages[1].duration, Duration::from_secs(60));
        assert_eq!(stages.stages[1].target_per_s, 20000.0);
        assert_eq!(stages.duration(), Duration::from_secs(120));
        let check = |spec: &str, needle: &str| {
            let error = Stages::parse(spec).unwrap_err();
            assert!(error.contains(needle), "{spec}: {error}");
        };
        check("", "no stages");
        check("30s", "with a colon");
        check("30s:100,", "with a colon");
        check("0s:100", "more than zero");
        check("x:100", "the duration");
        check("30s:-5", "0 or more");
        check("30s:fast", "is not a number");
        check("30s:inf", "0 or more");
        check("10s:0,5s:0", "send nothing");
    }

    #[test]
    fn a_constant_rate_is_what_it_was() {
        let schedule = Schedule::constant(4.0, 1);
        let second = Duration::from_secs(1);
        assert_eq!(schedule.offset(3), Some(Duration::from_millis(750)));
        assert_eq!(schedule.due_before(second), 4);
        assert_eq!(schedule.due_before(Duration::from_millis(600)), 3);
        // 3 per second: 0, 333 and 666 ms; a slot at 999.99 ms would also be due.
        assert_eq!(Schedule::constant(3.0, 1).due_before(second), 3);
        assert_eq!(
            Schedule::Constant {
                interval_ns: 333_333_333.0
            }
            .due_before(second),
            4
        );
        // Batches: 100 signatures per second in batches of 10 is 10 requests.
        assert_eq!(Schedule::constant(100.0, 10).due_before(second), 10);
    }

    #[test]
    fn stages_ramp_linearly_from_the_previous_target() {
        // 0 → 100/s over 10 s (500 requests), 100/s flat for 5 s (500), 100 → 0 over 10 s (500).
        let stages = Stages::parse("10s:100,5s:100,10s:0").unwrap();
        let schedule = Schedule::stages(&stages, 1);
        let at = |s: f64| Duration::from_secs_f64(s);
        assert_eq!(schedule.due_before(at(25.0)), 1500);
        assert_eq!(schedule.offset(1500), None);
        assert_eq!(schedule.offset(0), Some(Duration::ZERO));
        // Half-way up the first ramp the rate is 50/s; 125 requests are due by then.
        assert_eq!(schedule.due_before(at(5.0)), 125);
        assert!((schedule.rate_over(at(4.5), at(5.5)) - 50.0).abs() <= 1.0);
        assert!((schedule.rate_over(at(11.0), at(12.0)) - 100.0).abs() <= 1.0);
        assert!((schedule.rate_over(at(20.0), at(21.0)) - 45.0).abs() <= 1.0);
        // Offsets go up, and each one's slot is counted by due_before just after it.
        let mut last = Duration::ZERO;
        for k in 0..1500 {
            let offset = schedule.offset(k).unwrap();
            assert!(offset >= last, "{k}");
            assert!(schedule.due_before(offset + Duration::from_nanos(1)) > k);
            last = offset;
        }
        assert!(last < at(25.0));
        // Batches divide the requests, not the time.
        let batched = Schedule::stages(&stages, 10);
        assert_eq!(batched.due_before(at(25.0)), 150);
        // A stage at 0 sends nothing while it lasts.
        let pause = Schedule::stages(&Stages::parse("2s:0,1s:100").unwrap(), 1);
        assert_eq!(pause.due_before(at(2.0)), 0);
        assert_eq!(pause.due_before(at(3.0)), 50);
        assert!(pause.offset(0).unwrap() >= at(2.0));
    }
}
