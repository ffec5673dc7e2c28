//! Stalls in an open-loop run: which calls were slow, when, and what else happened then.
//!
//! A p99.9 says how bad the tail is; it does not say why. Each load thread keeps the calls that
//! took at least a threshold ([`SlowCalls`]), the wake-lateness sampler keeps its late wake-ups,
//! and after the run [`stalls`] groups slow calls that are close in time into stalls. For a
//! durable run, [`rocksdb_jobs`] reads what RocksDB wrote to its `LOG` meanwhile (memtable
//! switches, which start a new WAL file, flushes, compactions, write stalls), so that each stall
//! can be put beside the background work that overlapped it ([`explain`]).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// At most this many slow calls are kept per thread: a run that is slow throughout says so in
/// its histogram, and the list stays bounded.
pub const SLOW_CALLS_MAX: usize = 100_000;

/// Slow calls closer than this belong to one stall.
pub const STALL_GAP: Duration = Duration::from_millis(100);

/// A call that took at least the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowCall {
    /// When it was due, µs after the run's epoch.
    pub due_us: u64,
    /// From due to acknowledged, µs.
    pub latency_us: u64,
    /// From the call to its return, µs: the part spent inside the system under test.
    pub call_us: u64,
}

/// One thread's slow calls.
#[derive(Debug)]
pub struct SlowCalls {
    epoch: Instant,
    threshold_us: u64,
    calls: Vec<SlowCall>,
    dropped: u64,
}

impl SlowCalls {
    /// Keeps calls of at least `threshold` (zero keeps none), timed from `epoch`.
    pub fn new(epoch: Instant, threshold: Duration) -> SlowCalls {
        SlowCalls {
            epoch,
            threshold_us: threshold.as_micros() as u64,
            calls: Vec::new(),
            dropped: 0,
        }
    }

    /// Notes a call due at `due` that took `latency_us` in all and `call_us` inside the system.
    #[inline]
    pub fn note(&mut self, due: Instant, latency_us: u64, call_us: u64) {
        if self.threshold_us == 0 || latency_us < self.threshold_us {
            return;
        }
        if self.calls.len() == SLOW_CALLS_MAX {
            self.dropped += 1;
            return;
        }
        self.calls.push(SlowCall {
            due_us: due.saturating_duration_since(self.epoch).as_micros() as u64,
            latency_us,
            call_us,
        });
    }

    /// Slow calls past [`SLOW_CALLS_MAX`], counted but not kept.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The calls kept.
    pub fn into_calls(self) -> Vec<SlowCall> {
        self.calls
    }
}

/// Slow calls close in time: from the first one's due time to the last one's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// µs after the epoch.
    pub start_us: u64,
    /// µs after the epoch.
    pub end_us: u64,
    /// Slow calls in it.
    pub calls: u64,
    /// The slowest call's latency, µs.
    pub worst_latency_us: u64,
    /// The longest time a call spent inside the system under test, µs.
    pub worst_call_us: u64,
}

/// Groups `calls` (any order) into stalls: a call that falls due within [`STALL_GAP`] of the
/// previous stall's end joins it.
pub fn stalls(mut calls: Vec<SlowCall>) -> Vec<Stall> {
    calls.sort_unstable_by_key(|c| c.due_us);
    let gap = STALL_GAP.as_micros() as u64;
    let mut out: Vec<Stall> = Vec::new();
    for call in calls {
        let end = call.due_us + call.latency_us;
        match out.last_mut() {
            Some(stall) if call.due_us <= stall.end_us + gap => {
                stall.end_us = stall.end_us.max(end);
                stall.calls += 1;
                stall.worst_latency_us = stall.worst_latency_us.max(call.latency_us);
                stall.worst_call_us = stall.worst_call_us.max(call.call_us);
            }
            _ => out.push(Stall {
                start_us: call.due_us,
                end_us: end,
                calls: 1,
                worst_latency_us: call.latency_us,
                worst_call_us: call.call_us,
            }),
        }
    }
    out
}

/// What kind of background work RocksDB did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// A memtable switch: the memtable becomes immutable and a new WAL file is created.
    WalSwitch,
    /// A memtable flushed to an SST file.
    Flush,
    /// A compaction.
    Compaction,
    /// RocksDB delayed or stopped writes itself ("Stalling writes", "Stopping writes").
    WriteStall,
}

impl JobKind {
    /// The word for it in a report.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::WalSwitch => "wal_switch",
            JobKind::Flush => "flush",
            JobKind::Compaction => "compaction",
            JobKind::WriteStall => "write_stall",
        }
    }
}

/// One piece of background work, in µs since the Unix epoch (an instant has `start == end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    /// What it was.
    pub kind: JobKind,
    /// When it began.
    pub start_unix_us: u64,
    /// When it ended (its start if the log never says).
    pub end_unix_us: u64,
}

/// Reads RocksDB's info log (`LOG` and any `LOG.old.*`) in `dir` and returns the jobs it
/// records, flushes and compactions paired by their job number.
pub fn rocksdb_jobs(dir: &Path) -> std::io::Result<Vec<Job>> {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "LOG" || name.starts_with("LOG.old.") {
            text.push_str(&std::fs::read_to_string(&path)?);
            text.push('\n');
        }
    }
    Ok(parse_rocksdb_log(&text))
}

/// The jobs in the text of a RocksDB info log (see [`rocksdb_jobs`]). RocksDB stamps its lines
/// in local time; its event lines also carry Unix microseconds, and the first of them gives the
/// offset for the rest (rounded to a quarter hour).
pub fn parse_rocksdb_log(text: &str) -> Vec<Job> {
    let utc_offset_s = text
        .lines()
        .find_map(|line| {
            let stamped = line_time_us(line, 0)?;
            let (_, json) = line.split_once("EVENT_LOG_v1 ")?;
            let event: serde_json::Value = serde_json::from_str(json).ok()?;
            let unix = event["time_micros"].as_u64()?;
            let offset_s = (stamped as i64 - unix as i64) as f64 / 1e6;
            Some((offset_s / 900.0).round() as i64 * 900)
        })
        .unwrap_or(0);
    let mut jobs = Vec::new();
    // (kind, job number, start) of flushes and compactions begun and not yet seen to finish.
    let mut open: Vec<(JobKind, u64, u64)> = Vec::new();
    for line in text.lines() {
        let Some(at) = line_time_us(line, utc_offset_s) else {
            continue;
        };
        if line.contains("New memtable created with log file") {
            jobs.push(Job::instant(JobKind::WalSwitch, at));
        } else if line.contains("Stalling writes") || line.contains("Stopping writes") {
            jobs.push(Job::instant(JobKind::WriteStall, at));
        } else if let Some(event) = line.split_once("EVENT_LOG_v1 ").map(|(_, json)| json) {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(event) else {
                continue;
            };
            let name = event["event"].as_str().unwrap_or("");
            let job = event["job"].as_u64().unwrap_or(u64::MAX);
            let at = event["time_micros"].as_u64().unwrap_or(at);
            let kind = match name {
                "flush_started" | "flush_finished" => JobKind::Flush,
                "compaction_started" | "compaction_finished" => JobKind::Compaction,
                _ => continue,
            };
            if name.ends_with("_started") {
                open.push((kind, job, at));
            } else if let Some(i) = open.iter().position(|&(k, j, _)| k == kind && j == job) {
                let (_, _, start) = open.swap_remove(i);
                jobs.push(Job {
                    kind,
                    start_unix_us: start,
                    end_unix_us: at,
                });
            }
        }
    }
    jobs.extend(
        open.into_iter()
            .map(|(kind, _, start)| Job::instant(kind, start)),
    );
    jobs.sort_unstable_by_key(|j| j.start_unix_us);
    jobs
}

impl Job {
    fn instant(kind: JobKind, at: u64) -> Job {
        Job {
            kind,
            start_unix_us: at,
            end_unix_us: at,
        }
    }
}

/// `YYYY/MM/DD-HH:MM:SS.ffffff` at the start of a RocksDB log line, as µs since the Unix epoch.
fn line_time_us(line: &str, utc_offset_s: i64) -> Option<u64> {
    let stamp = line.get(..26)?;
    let number = |range: std::ops::Range<usize>| stamp.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let micros = number(20..26)?;
    let separators = [
        (4, b'/'),
        (7, b'/'),
        (10, b'-'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ];
    if separators.iter().any(|&(i, c)| stamp.as_bytes()[i] != c) {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second;
    u64::try_from((seconds - utc_offset_s) * 1_000_000 + micros).ok()
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The background work that overlapped a stall, and how the stall is best explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    /// The stall.
    pub stall: Stall,
    /// Kinds of job running during it, each once, in the order of [`JobKind`].
    pub overlapping: Vec<JobKind>,
    /// The latest wake-up of a sleeping thread during it, µs late (0: none was late by the
    /// sampler's threshold).
    pub wake_late_us: u64,
}

impl Explained {
    /// One word for the likeliest cause: RocksDB's own write stall, then a WAL switch, a flush,
    /// a compaction, then the scheduler (a sleeping thread woke late meanwhile), else unknown.
    pub fn cause(&self) -> &'static str {
        for kind in [
            JobKind::WriteStall,
            JobKind::WalSwitch,
            JobKind::Flush,
            JobKind::Compaction,
        ] {
            if self.overlapping.contains(&kind) {
                return kind.as_str();
            }
        }
        if self.wake_late_us > 0 {
            "scheduler"
        } else {
            "unknown"
        }
    }
}

/// Puts each stall beside the jobs that overlapped it and the late wake-ups that overran into it.
/// `epoch_unix_us` is the run's epoch on the Unix clock; `late_wakes` are `(µs after the epoch
/// when the 1 ms sleep began, µs late)`. A job counts if it ran within the stall or ended at most [`STALL_GAP`] before it.
pub fn explain(
    stalls: &[Stall],
    jobs: &[Job],
    late_wakes: &[(u64, u64)],
    epoch_unix_us: u64,
) -> Vec<Explained> {
    let gap = STALL_GAP.as_micros() as u64;
    stalls
        .iter()
        .map(|stall| {
            let (start, end) = (epoch_unix_us + stall.start_us, epoch_unix_us + stall.end_us);
            let overlapping: Vec<JobKind> = [
                JobKind::WalSwitch,
                JobKind::Flush,
                JobKind::Compaction,
                JobKind::WriteStall,
            ]
            .into_iter()
            .filter(|&kind| {
                jobs.iter().any(|j| {
                    j.kind == kind && j.start_unix_us <= end && j.end_unix_us + gap >= start
                })
            })
            .collect();
            // A wake-up counts if its sleep overran into the stall: it began before the stall
            // ended and woke (1 ms + late after it began) after the stall began.
            let wake_late_us = late_wakes
                .iter()
                .filter(|&&(at, late)| at <= stall.end_us && at + 1_000 + late >= stall.start_us)
                .map(|&(_, late)| late)
                .max()
                .unwrap_or(0);
            Explained {
                stall: stall.clone(),
                overlapping,
                wake_late_us,
            }
        })
        .collect()
}

/// The Unix time of `epoch`, in µs; read it right after taking `epoch`, so that a later step of the
/// wall clock does not move it.
pub fn unix_us_of(epoch: Instant) -> u64 {
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (now_unix.saturating_sub(epoch.elapsed())).as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(due_ms: u64, latency_ms: u64) -> SlowCall {
        SlowCall {
            due_us: due_ms * 1_000,
            latency_us: latency_ms * 1_000,
            call_us: latency_ms * 500,
        }
    }

    #[test]
    fn slow_calls_group_into_stalls_by_gap() {
        let grouped = stalls(vec![call(1_000, 30), call(5_000, 12), call(1_010, 40)]);
        assert_eq!(grouped.len(), 2);
        assert_eq!(grouped[0].start_us, 1_000_000);
        assert_eq!(grouped[0].end_us, 1_050_000);
        assert_eq!(grouped[0].calls, 2);
        assert_eq!(grouped[0].worst_latency_us, 40_000);
        assert_eq!(grouped[1].calls, 1);
        // 100 ms after the first stall's end still joins it; 101 ms does not.
        assert_eq!(stalls(vec![call(0, 10), call(110, 10)]).len(), 1);
        assert_eq!(stalls(vec![call(0, 10), call(111, 10)]).len(), 2);
    }

    #[test]
    fn only_calls_over_the_threshold_are_kept() {
        let epoch = Instant::now();
        let mut slow = SlowCalls::new(epoch, Duration::from_millis(10));
        slow.note(epoch + Duration::from_millis(5), 9_999, 10);
        slow.note(epoch + Duration::from_millis(7), 10_000, 9_000);
        let kept = slow.into_calls();
        assert_eq!(
            kept,
            vec![SlowCall {
                due_us: 7_000,
                latency_us: 10_000,
                call_us: 9_000
            }]
        );
        let mut none = SlowCalls::new(epoch, Duration::ZERO);
        none.note(epoch, 1_000_000, 1);
        assert!(none.into_calls().is_empty());
    }

    #[test]
    fn log_times_read_as_unix_microseconds() {
        // 2026-11-29T23:45:12.345678Z is 1795995912.345678 s after the Unix epoch.
        let line = "2026/11/29-23:45:12.345678 7f0 [db/flush_job.cc:1] x";
        assert_eq!(line_time_us(line, 0), Some(1_795_995_912_345_678));
        assert_eq!(line_time_us(line, 3_600), Some(1_795_992_312_345_678));
        assert_eq!(line_time_us("2026-11-29 23:45:12.345678 nope", 0), None);
        assert_eq!(line_time_us("short", 0), None);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    const LOG: &str = "\
2026/11/29-23:45:12.000000 1 [db/db_impl_write.cc:1] [default] New memtable created with log file: #12. Immutable memtables: 0.
2026/11/29-23:45:12.000100 2 EVENT_LOG_v1 {\"time_micros\": 1795995912000100, \"job\": 4, \"event\": \"flush_started\"}
2026/11/29-23:45:12.500000 2 EVENT_LOG_v1 {\"time_micros\": 1795995912500000, \"job\": 4, \"event\": \"flush_finished\"}
2026/11/29-23:45:13.000000 3 EVENT_LOG_v1 {\"time_micros\": 1795995913000000, \"job\": 5, \"event\": \"compaction_started\"}
2026/11/29-23:45:14.000000 1 [WARN] [db/column_family.cc:1] [default] Stalling writes because we have 20 level-0 files
2026/11/29-23:45:15.000000 3 EVENT_LOG_v1 {\"time_micros\": 1795995915000000, \"job\": 5, \"event\": \"compaction_finished\"}
not a log line
";

    #[test]
    fn rocksdb_log_yields_paired_jobs() {
        let jobs = parse_rocksdb_log(LOG);
        let base = 1_795_995_912_000_000;
        assert_eq!(
            jobs,
            vec![
                Job::instant(JobKind::WalSwitch, base),
                Job {
                    kind: JobKind::Flush,
                    start_unix_us: base + 100,
                    end_unix_us: base + 500_000
                },
                Job {
                    kind: JobKind::Compaction,
                    start_unix_us: base + 1_000_000,
                    end_unix_us: base + 3_000_000
                },
                Job::instant(JobKind::WriteStall, base + 2_000_000),
            ]
        );
    }

    #[test]
    fn local_time_stamps_are_corrected_by_the_event_lines() {
        // The same log written one hour east of UTC: every stamp reads an hour later.
        let east = LOG.replace("2026/11/29-23:45:", "2026/11/30-00:45:");
        assert_eq!(parse_rocksdb_log(&east), parse_rocksdb_log(LOG));
    }

    #[test]
    fn stalls_are_put_beside_what_overlapped_them() {
        let base = 1_795_995_912_000_000;
        let jobs = parse_rocksdb_log(LOG);
        let epoch_unix_us = base - 10_000_000;
        let stall = |start_s: f64, ms: u64| Stall {
            start_us: (start_s * 1e6) as u64,
            end_us: (start_s * 1e6) as u64 + ms * 1_000,
            calls: 1,
            worst_latency_us: ms * 1_000,
            worst_call_us: ms * 1_000,
        };
        let found = explain(
            &[
                stall(10.2, 20),
                stall(11.5, 20),
                stall(12.0, 20),
                stall(20.0, 20),
                stall(30.0, 20),
            ],
            &jobs,
            // The first sleep began 6 ms before the 20 s stall and woke 8 ms late, inside it.
            &[(19_994_000, 8_000), (29_000_000, 500)],
            epoch_unix_us,
        );
        let causes: Vec<_> = found.iter().map(Explained::cause).collect();
        assert_eq!(
            causes,
            ["flush", "compaction", "write_stall", "scheduler", "unknown"]
        );
        assert_eq!(found[0].overlapping, vec![JobKind::Flush]);
        assert_eq!(found[3].wake_late_us, 8_000);
    }
}
