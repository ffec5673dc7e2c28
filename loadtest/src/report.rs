//! The final report: one struct, rendered as a table for people and as JSON (`--json`) for
//! scripts. The JSON schema is documented in `loadtest/README.md`; its `schema` field names the
//! version and changes whenever a field changes meaning.

use std::fmt::Write as _;
use std::time::Duration;

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::{RunArgs, ShapeKind};
use crate::countries::{Breakdown, CountryCount};
use crate::criteria::CriteriaReport;
use crate::hgrm::QuantileValue;
use crate::ips::{GroupCounts, GroupSplit, Ips, ABUSER_FIRST, NORMAL_FIRST};
use crate::kept::KeptSet;
use crate::run::{self, Endpoint};
use crate::stats::{Counts, Stats};
use crate::timeline::TimelineRow;

/// Version of the JSON report.
pub const SCHEMA: &str = "loadtest.report.v1";

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// `--target`.
    pub target: String,
    /// `open` (with `-R`) or `closed`.
    pub mode: &'static str,
    /// `single`, `batch` or `get`.
    pub endpoint: &'static str,
    /// Signatures per request (1 unless `--batch`).
    pub batch_size: u32,
    /// `-c`.
    pub connections: u32,
    /// The seed used (given or drawn).
    pub seed: u64,
    /// The traffic shape.
    pub shape: ShapeReport,
    /// `--dup-ratio`.
    pub dup_ratio: f64,
    /// `-z` in seconds.
    pub duration_s: f64,
    /// Seconds from the first send to the last answer.
    pub elapsed_s: f64,
    /// Target and achieved rates.
    pub rate: RateReport,
    /// Latency per request in milliseconds.
    pub latency_ms: LatencyReport,
    /// Counts by outcome.
    pub outcomes: Counts,
    /// Phase 2 (`--validate-share`): the validations of the tokens kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationReport>,
    /// `--sse-readers`, `--webhook`: threshold crossings and how long their events took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<EventsReport>,
    /// `--countries`: the server's breakdown by country of the busiest petition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub countries: Option<CountriesReport>,
    /// `--ips`: where the signatures came from and, with `--abusers`, the outcomes per group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ips: Option<IpsReport>,
    /// `--stages`: the open loop's stages (then `rate.target_per_s` is null).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<StageReport>>,
    /// Phase 1, second by second (the same rows as `--timeline`).
    pub timeline: Vec<TimelineRow>,
    /// Answers (and failed connects) that came after their second of the timeline was closed:
    /// in the totals, in no row.
    #[serde(skip_serializing_if = "is_zero")]
    pub timeline_late: u64,
    /// The corrected latencies' percentile distribution, for `loadtest plot`: HdrHistogram's
    /// quantile steps (as in `--hgrm`).
    pub latency_distribution_ms: Vec<QuantileValue>,
    /// `--max-p99`, `--max-error-rate`: how the run fared against its pass criteria.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub criteria: Option<CriteriaReport>,
    /// The corrected latencies of phase 1 in microseconds, whole: what `--hgrm` writes.
    #[serde(skip)]
    pub histogram: Histogram<u64>,
}

/// With `--ips`: the addresses signatures came from and, with `--abusers`, what each group's
/// signatures got, so that an operator can see the abusers limited and everyone else accepted.
#[derive(Debug, Clone, Serialize)]
pub struct IpsReport {
    /// `--ips`: the addresses everyone else signs from, from `first`.
    pub addresses: u32,
    /// The first of them, `10.0.0.1`.
    pub first: String,
    /// `--abusers`: the abusers' addresses, from `abusers_first`; null without.
    pub abusers: Option<u32>,
    /// The first of them, `198.18.0.1`; null without `--abusers`.
    pub abusers_first: Option<String>,
    /// `--abuse-share`: the share of the signers that are the abusers'; null without.
    pub abuse_share: Option<f64>,
    /// With `--abusers`: the signatures' outcomes per group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<GroupSplit>,
}

impl IpsReport {
    /// The block of a run with `ips`, from its counts.
    pub fn new(ips: &Ips, counts: &Counts) -> IpsReport {
        let abusers = ips.abusers();
        IpsReport {
            addresses: ips.normal(),
            first: NORMAL_FIRST.to_string(),
            abusers,
            abusers_first: abusers.map(|_| ABUSER_FIRST.to_string()),
            abuse_share: ips.abuse_share(),
            groups: abusers.map(|_| counts.groups),
        }
    }
}

/// One stage of `--stages`.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// How long it ramps.
    pub duration_s: f64,
    /// The rate it ramps to, in signatures per second (from the previous stage's, 0 first).
    pub target_per_s: f64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Countries shown in the table (the JSON has them all).
pub const COUNTRIES_SHOWN_MAX: usize = 10;

/// With `--countries`: the breakdown by country the server gave, after the load, for the
/// petition the run's answers counted the most signatures on.
#[derive(Debug, Clone, Serialize)]
pub struct CountriesReport {
    /// `--countries` as given.
    pub spec: String,
    /// The petition's id.
    pub petition: String,
    /// Signatures the run's answers said were counted on it (accepted, or validated).
    pub counted_by_run: u64,
    /// The count the breakdown came with; null if it could not be read.
    pub count: Option<u64>,
    /// Every country of the breakdown (`ZZ`: no country), highest count first, as the server
    /// gave them; empty if it could not be read.
    pub countries: Vec<CountryCount>,
    /// Whether the countries add up to `count`, as the contract says; null if it could not be
    /// read.
    pub sum_matches: Option<bool>,
    /// Why the breakdown could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CountriesReport {
    /// The block for `petition`, from what reading its breakdown gave.
    pub fn new(
        spec: &str,
        petition: String,
        counted_by_run: u64,
        breakdown: anyhow::Result<Breakdown>,
    ) -> CountriesReport {
        let mut report = CountriesReport {
            spec: spec.to_owned(),
            petition,
            counted_by_run,
            count: None,
            countries: Vec::new(),
            sum_matches: None,
            error: None,
        };
        match breakdown {
            Ok(breakdown) => {
                report.count = Some(breakdown.count);
                report.sum_matches = Some(breakdown.sums_to_count());
                report.countries = breakdown.countries;
            }
            Err(error) => report.error = Some(format!("{error:#}")),
        }
        report
    }
}

/// Threshold crossings the load acknowledged, and how long their events took to reach the SSE
/// readers and the webhook receiver. Latencies run from the instant the acknowledging answer
/// was parsed to the instant the event was received, 0 when the event came first.
#[derive(Debug, Clone, Serialize)]
pub struct EventsReport {
    /// `--threshold-step`; null when the petitions have the server's thresholds.
    pub threshold_step: Option<u64>,
    /// Each petition's thresholds.
    pub thresholds: Vec<u64>,
    /// Crossings acknowledged: (petition, threshold) pairs whose threshold an accepted (or
    /// validated) answer's count equalled.
    pub crossings_acknowledged: u64,
    /// Crossings more than one answer acknowledged (counted once above, at the earliest).
    pub acknowledged_twice: u64,
    /// `--sse-readers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sse: Option<SseReport>,
    /// `--webhook`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookReport>,
}

/// The SSE readers' view of the crossings acknowledged.
#[derive(Debug, Clone, Serialize)]
pub struct SseReport {
    /// `--sse-readers`: streams opened before the load.
    pub readers: u32,
    /// Crossings whose `threshold_crossed` event reached every reader.
    pub seen_by_every_reader: u64,
    /// Crossings whose event reached some readers, not all.
    pub seen_by_some_readers: u64,
    /// Crossings whose event reached no reader.
    pub seen_by_no_reader: u64,
    /// Crossings of the run's petitions whose event came but that no answer acknowledged (the
    /// answer was lost, or the threshold is not one the run knows of).
    pub not_acknowledged: u64,
    /// `threshold_crossed` events without a numeric id or a petition and threshold.
    pub malformed: u64,
    /// Events, per reader, whose id was not above the last one of the same stream (out of
    /// order or repeated); not counted as seen.
    pub out_of_order: u64,
    /// Readers whose stream ended with `event: lagged` before the run closed it.
    pub disconnected_lagged: u64,
    /// Readers whose stream failed or ended otherwise before the run closed it.
    pub disconnected_error: u64,
    /// From acknowledgement to the event reaching every reader (the last receipt), over the
    /// crossings seen by every reader.
    pub latency_ms: Percentiles,
    /// From acknowledgement to the event reaching its first reader, over the crossings seen by
    /// any.
    pub first_reader_latency_ms: Percentiles,
}

/// The webhook receiver's view of the crossings acknowledged.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookReport {
    /// The webhook's name, `loadtest-<seed>`.
    pub name: String,
    /// Crossings delivered (at least once).
    pub delivered: u64,
    /// Crossings never delivered.
    pub not_delivered: u64,
    /// Crossings of the run's petitions delivered but never acknowledged.
    pub not_acknowledged: u64,
    /// Deliveries beyond the first of a crossing (retries).
    pub repeated: u64,
    /// Deliveries outside the contract (headers or body).
    pub malformed: u64,
    /// Whether the webhook was deleted at the end.
    pub deleted: bool,
    /// From acknowledgement to the first delivery, over the crossings delivered.
    pub latency_ms: Percentiles,
}

/// Phase 2 of a run with `--validate-share`: the kept tokens validated.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationReport {
    /// `--validate-share`.
    pub share: f64,
    /// Pending answers to new signers in phase 1: each kept with probability `share`.
    pub candidates: u64,
    /// Tokens kept, to be validated.
    pub kept: u64,
    /// Tokens the share chose that were not kept, the run having kept its bound already.
    pub not_kept_over_bound: u64,
    /// Seconds from the first due validation to the last answer (0 if none was sent).
    pub elapsed_s: f64,
    /// Target and achieved rates, in validations.
    pub rate: RateReport,
    /// Latency per request in milliseconds.
    pub latency_ms: LatencyReport,
    /// Counts by outcome, in validations.
    pub outcomes: ValidationCounts,
}

/// Phase 2's outcomes, per validation (a batch of 100 lines counts 100).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ValidationCounts {
    /// HTTP requests answered.
    pub requests: u64,
    /// Validations sent: answered, timed out or lost with their connection.
    pub sent: u64,
    /// Validations answered with any status.
    pub answered: u64,
    /// `200 validated`: counted now.
    pub validated: u64,
    /// `200 already_validated`.
    pub already_validated: u64,
    /// 4xx other than 429 (`unknown_token`, `malformed_token`, `token_expired`,
    /// `petition_closed`, `invalidated`, ...), by error code.
    pub rejected: BTreeMap<String, u64>,
    /// 429.
    pub rate_limited: u64,
    /// 503 and retryable batch-line errors, by code.
    pub unavailable: BTreeMap<String, u64>,
    /// Other 5xx, by status.
    pub server_errors: BTreeMap<u16, u64>,
    /// Answers outside the contract.
    pub bad_responses: u64,
    /// No answer within `--timeout`.
    pub timeouts: u64,
    /// The connection failed with the request outstanding.
    pub connection_errors: u64,
    /// Failed attempts to connect (nothing sent).
    pub connect_failures: u64,
    /// Kept tokens never sent: the phase was bounded by `-z` or stopped by Ctrl-C first.
    pub not_sent: u64,
}

/// Phase 2's refusals by code: the 4xx but 429 `rate_limited`, and with them the abuse
/// controls' `ip_rate_limited` and `blocked`, should a server answer a validation so (the
/// signature counts keep those apart; the validation counts have no fields of their own for
/// them).
fn validation_rejected(c: &Counts) -> BTreeMap<String, u64> {
    let mut rejected = c.rejected.clone();
    for (code, n) in [
        (crate::outcome::IP_RATE_LIMITED, c.ip_rate_limited),
        (crate::outcome::BLOCKED, c.blocked),
    ] {
        if n > 0 {
            *rejected.entry(code.to_owned()).or_default() += n;
        }
    }
    rejected
}

impl ValidationReport {
    /// Builds the report of phase 2 from what phase 1 `kept` (its `count` tokens, now handed
    /// over) and what phase 2 measured.
    pub fn new(
        args: &RunArgs,
        share: f64,
        kept: &KeptSet,
        count: u64,
        elapsed: Duration,
        stats: &Stats,
    ) -> ValidationReport {
        let c = &stats.counts;
        let sent = c.answered + c.timeouts + c.connection_errors;
        let seconds = elapsed.as_secs_f64();
        let per_second = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        ValidationReport {
            share,
            candidates: kept.candidates,
            kept: count,
            not_kept_over_bound: kept.over_bound,
            elapsed_s: seconds,
            rate: RateReport {
                target_per_s: args.rate,
                achieved_per_s: per_second(c.answered),
                requests_per_s: per_second(c.requests),
            },
            latency_ms: LatencyReport {
                corrected: Percentiles::of(&stats.corrected),
                uncorrected: Percentiles::of(&stats.uncorrected),
            },
            outcomes: ValidationCounts {
                requests: c.requests,
                sent,
                answered: c.answered,
                validated: c.validated,
                already_validated: c.already_validated,
                rejected: validation_rejected(c),
                rate_limited: c.rate_limited,
                unavailable: c.unavailable.clone(),
                server_errors: c.server_errors.clone(),
                bad_responses: c.bad_responses,
                timeouts: c.timeouts,
                connection_errors: c.connection_errors,
                connect_failures: c.connect_failures,
                not_sent: count.saturating_sub(sent),
            },
        }
    }
}

/// The traffic shape as run.
#[derive(Debug, Clone, Serialize)]
pub struct ShapeReport {
    /// `uniform`, `zipf` or `viral`.
    pub kind: &'static str,
    /// `--petitions`.
    pub petitions: u32,
    /// Viral: id of the hot petition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hot_petition: Option<String>,
    /// Viral: its share at the peak.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hot_share: Option<f64>,
    /// Viral: seconds to reach the peak.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramp_s: Option<f64>,
    /// Zipf: the exponent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zipf_exponent: Option<f64>,
}

/// Rates per second.
#[derive(Debug, Clone, Serialize)]
pub struct RateReport {
    /// `-R` (signatures per second), null in closed loop.
    pub target_per_s: Option<f64>,
    /// Signatures (or GETs) answered with any HTTP status, per second of `elapsed_s`.
    pub achieved_per_s: f64,
    /// HTTP requests answered per second of `elapsed_s`.
    pub requests_per_s: f64,
}

/// Two views of the same requests.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    /// From the intended send time (open loop) or the send time (closed loop): the truth.
    pub corrected: Percentiles,
    /// From the actual send time: what a tool with coordinated omission shows.
    pub uncorrected: Percentiles,
}

/// Percentiles in milliseconds of requests answered (timeouts and connection errors are counted
/// in `outcomes`, not here).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    /// Requests measured.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Highest.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of a histogram in microseconds.
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        if histogram.is_empty() {
            return Percentiles {
                count: 0,
                mean: 0.0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p99_9: 0.0,
                max: 0.0,
            };
        }
        Percentiles {
            count: histogram.len(),
            mean: histogram.mean() / 1000.0,
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p99_9: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

impl Report {
    /// Builds the report of a finished run.
    pub fn new(
        args: &RunArgs,
        seed: u64,
        endpoint: Endpoint,
        elapsed: Duration,
        stats: &Stats,
    ) -> Report {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let viral = args.shape == ShapeKind::Viral;
        Report {
            schema: SCHEMA,
            target: args.target.url.clone(),
            mode: if args.rate.is_some() || args.stages.is_some() {
                "open"
            } else {
                "closed"
            },
            endpoint: match endpoint {
                Endpoint::Get => "get",
                Endpoint::Single => "single",
                Endpoint::Batch(_) => "batch",
            },
            batch_size: endpoint.size(),
            connections: args.connections,
            seed,
            shape: ShapeReport {
                kind: match args.shape {
                    ShapeKind::Uniform => "uniform",
                    ShapeKind::Zipf => "zipf",
                    ShapeKind::Viral => "viral",
                },
                petitions: args.petitions,
                hot_petition: viral.then(|| crate::shape::petition_id(seed, 0)),
                hot_share: viral.then_some(args.hot_share),
                ramp_s: viral.then(|| run::ramp_of(args).as_secs_f64()),
                zipf_exponent: (args.shape == ShapeKind::Zipf).then_some(args.zipf_exponent),
            },
            dup_ratio: args.dup_ratio,
            duration_s: args.duration.as_secs_f64(),
            elapsed_s: seconds,
            rate: RateReport {
                target_per_s: args.rate,
                achieved_per_s: stats.counts.answered as f64 / seconds,
                requests_per_s: stats.counts.requests as f64 / seconds,
            },
            latency_ms: LatencyReport {
                corrected: Percentiles::of(&stats.corrected),
                uncorrected: Percentiles::of(&stats.uncorrected),
            },
            outcomes: stats.counts.clone(),
            validation: None,
            events: None,
            countries: None,
            ips: None,
            criteria: None,
            stages: args.stages.as_ref().map(|stages| {
                stages
                    .stages
                    .iter()
                    .map(|stage| StageReport {
                        duration_s: stage.duration.as_secs_f64(),
                        target_per_s: stage.target_per_s,
                    })
                    .collect()
            }),
            timeline: Vec::new(),
            timeline_late: 0,
            latency_distribution_ms: crate::hgrm::distribution(&stats.corrected),
            histogram: stats.corrected.clone(),
        }
    }

    /// The report as a table for a terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; the results are ignored below for that reason.
        let _ = writeln!(
            out,
            "target     {}  ({} loop, {} endpoint{}, {} connections, seed {})",
            self.target,
            self.mode,
            self.endpoint,
            if self.batch_size > 1 {
                format!(" x{}", self.batch_size)
            } else {
                String::new()
            },
            self.connections,
            self.seed
        );
        let unit = if self.endpoint == "get" {
            "requests"
        } else {
            "signatures"
        };
        let target = match (&self.stages, self.rate.target_per_s) {
            (Some(stages), _) => {
                let stages: Vec<String> = stages
                    .iter()
                    .map(|s| format!("{}s:{}", s.duration_s, s.target_per_s))
                    .collect();
                format!("stages {}", stages.join(","))
            }
            (None, Some(rate)) => format!("{rate:.1}/s"),
            (None, None) => "max (closed loop)".to_owned(),
        };
        let _ = writeln!(
            out,
            "rate       target {target}   achieved {:.1} {unit}/s ({:.1} requests/s) over {:.2}s",
            self.rate.achieved_per_s, self.rate.requests_per_s, self.elapsed_s
        );
        self.latency_table(&mut out, &self.latency_ms);
        let o = &self.outcomes;
        let _ = writeln!(out, "\noutcomes ({unit})");
        let mut row = |name: &str, n: u64| {
            let _ = writeln!(out, "  {name:<34}{n:>12}");
        };
        if self.endpoint == "get" {
            row("ok (2xx)", o.ok);
        } else {
            row("accepted (201)", o.accepted);
            row("duplicate (200)", o.duplicate);
            if o.pending > 0 || self.validation.is_some() {
                row("pending (202)", o.pending);
            }
        }
        for (code, n) in &o.rejected {
            row(&format!("rejected {code}"), *n);
        }
        row("rate limited (429)", o.rate_limited);
        if self.endpoint != "get" || o.ip_rate_limited > 0 {
            row("ip rate limited (429)", o.ip_rate_limited);
        }
        if self.endpoint != "get" || o.blocked > 0 {
            row("blocked (403)", o.blocked);
        }
        if o.unavailable.is_empty() {
            row("unavailable (503)", 0);
        }
        for (code, n) in &o.unavailable {
            row(&format!("unavailable (503) {code}"), *n);
        }
        for (status, n) in &o.server_errors {
            row(&format!("server error {status}"), *n);
        }
        if o.bad_responses > 0 {
            row("bad responses", o.bad_responses);
        }
        row("timeouts", o.timeouts);
        row("connection errors", o.connection_errors);
        if o.connect_failures > 0 {
            row("failed connects (nothing sent)", o.connect_failures);
        }
        if o.resends > 0 {
            row("of which re-sent signers", o.resends);
        }
        if self.mode == "open" {
            row("not sent (due, no free connection)", o.not_sent);
        }
        if let Some(validation) = &self.validation {
            self.validation_table(&mut out, validation);
        }
        if let Some(events) = &self.events {
            events_table(&mut out, events);
        }
        if let Some(countries) = &self.countries {
            countries_table(&mut out, countries);
        }
        if let Some(ips) = &self.ips {
            ips_table(&mut out, ips);
        }
        if let Some(criteria) = &self.criteria {
            criteria.table(&mut out);
        }
        out
    }

    /// The latency rows of one phase.
    fn latency_table(&self, out: &mut String, latency: &LatencyReport) {
        let _ = writeln!(
            out,
            "\nlatency            p50       p90       p99     p99.9       max      mean     count"
        );
        let corrected_label = if self.mode == "open" {
            "corrected"
        } else {
            "measured"
        };
        for (label, p) in [
            (corrected_label, &latency.corrected),
            ("uncorrected", &latency.uncorrected),
        ] {
            if label == "uncorrected" && self.mode != "open" {
                continue;
            }
            let _ = writeln!(
                out,
                "{label:<13}{:>9}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
                ms(p.p50),
                ms(p.p90),
                ms(p.p99),
                ms(p.p99_9),
                ms(p.max),
                ms(p.mean),
                p.count
            );
        }
        if self.mode == "open" {
            let _ = writeln!(
                out,
                "             (corrected: from the intended send time; uncorrected: from the actual send)"
            );
        }
    }

    /// Phase 2's part of the table.
    fn validation_table(&self, out: &mut String, v: &ValidationReport) {
        let _ = writeln!(
            out,
            "\nphase 2    validating {} kept tokens: {:.1}% of {} pending new signers \
             (--validate-share {})",
            v.kept,
            if v.candidates > 0 {
                100.0 * v.kept as f64 / v.candidates as f64
            } else {
                0.0
            },
            v.candidates,
            v.share
        );
        let target = v
            .rate
            .target_per_s
            .map_or_else(|| "max (closed loop)".to_owned(), |r| format!("{r:.1}/s"));
        let _ = writeln!(
            out,
            "rate       target {target}   achieved {:.1} validations/s ({:.1} requests/s) over {:.2}s",
            v.rate.achieved_per_s, v.rate.requests_per_s, v.elapsed_s
        );
        self.latency_table(out, &v.latency_ms);
        let o = &v.outcomes;
        let _ = writeln!(out, "\noutcomes (validations)");
        let mut row = |name: &str, n: u64| {
            let _ = writeln!(out, "  {name:<34}{n:>12}");
        };
        row("sent", o.sent);
        row("validated (200)", o.validated);
        row("already validated (200)", o.already_validated);
        for (code, n) in &o.rejected {
            row(&format!("rejected {code}"), *n);
        }
        row("rate limited (429)", o.rate_limited);
        for (code, n) in &o.unavailable {
            row(&format!("unavailable (503) {code}"), *n);
        }
        for (status, n) in &o.server_errors {
            row(&format!("server error {status}"), *n);
        }
        if o.bad_responses > 0 {
            row("bad responses", o.bad_responses);
        }
        row("timeouts", o.timeouts);
        row("connection errors", o.connection_errors);
        if o.connect_failures > 0 {
            row("failed connects (nothing sent)", o.connect_failures);
        }
        row("not sent (-z or Ctrl-C first)", o.not_sent);
        if v.not_kept_over_bound > 0 {
            row("chosen, not kept (over the bound)", v.not_kept_over_bound);
        }
    }
}

/// The events' part of the table.
fn events_table(out: &mut String, e: &EventsReport) {
    let thresholds = match (e.threshold_step, e.thresholds.as_slice()) {
        (Some(step), [.., last]) => {
            format!("every {step} signatures up to {last} (--threshold-step)")
        }
        (_, list) => format!("{list:?} (the server's)"),
    };
    let _ = writeln!(out, "\nevents     thresholds {thresholds}");
    let mut row = |name: &str, n: u64| {
        let _ = writeln!(out, "  {name:<34}{n:>12}");
    };
    row("crossings acknowledged", e.crossings_acknowledged);
    if e.acknowledged_twice > 0 {
        row("acknowledged twice", e.acknowledged_twice);
    }
    if let Some(sse) = &e.sse {
        row("SSE readers", u64::from(sse.readers));
        row("SSE seen by every reader", sse.seen_by_every_reader);
        row(
            "SSE seen by some readers, not all",
            sse.seen_by_some_readers,
        );
        row("SSE seen by no reader", sse.seen_by_no_reader);
        row("SSE events not acknowledged", sse.not_acknowledged);
        if sse.malformed > 0 {
            row("SSE malformed events", sse.malformed);
        }
        if sse.out_of_order > 0 {
            row("SSE events out of order", sse.out_of_order);
        }
        row("SSE readers disconnected (lagged)", sse.disconnected_lagged);
        row("SSE readers disconnected (error)", sse.disconnected_error);
    }
    if let Some(hook) = &e.webhook {
        row("webhook delivered", hook.delivered);
        row("webhook not delivered", hook.not_delivered);
        row("webhook not acknowledged", hook.not_acknowledged);
        row("webhook repeated deliveries", hook.repeated);
        if hook.malformed > 0 {
            row("webhook malformed deliveries", hook.malformed);
        }
    }
    let _ = writeln!(
        out,
        "\nevent latency        p50       p90       p99     p99.9       max      mean     count"
    );
    let mut latency = |label: &str, p: &Percentiles| {
        let _ = writeln!(
            out,
            "{label:<15}{:>9}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            ms(p.p50),
            ms(p.p90),
            ms(p.p99),
            ms(p.p99_9),
            ms(p.max),
            ms(p.mean),
            p.count
        );
    };
    if let Some(sse) = &e.sse {
        latency("SSE all", &sse.latency_ms);
        latency("SSE first", &sse.first_reader_latency_ms);
    }
    if let Some(hook) = &e.webhook {
        latency("webhook", &hook.latency_ms);
    }
    let _ = writeln!(
        out,
        "             (from parsing the answer that acknowledged the crossing to its event \
         reaching\n              every reader (all), the first reader (first), the webhook \
         receiver; 0 if the event came first)"
    );
    if let Some(hook) = e.webhook.as_ref().filter(|hook| !hook.deleted) {
        let _ = writeln!(
            out,
            "             webhook {} was NOT deleted: delete it by hand",
            hook.name
        );
    }
}

/// The addresses' part of the table: where the signatures came from and, with `--abusers`, a
/// row per group.
fn ips_table(out: &mut String, ips: &IpsReport) {
    let plural = |n: u32, one: &str, many: &str| {
        if n == 1 {
            format!("{n} {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let mut line = format!(
        "\nsources    {} from {}",
        plural(ips.addresses, "address", "addresses"),
        ips.first
    );
    if let (Some(abusers), Some(first), Some(share)) =
        (ips.abusers, &ips.abusers_first, ips.abuse_share)
    {
        let _ = write!(
            line,
            "; {} from {first} sending {}% of the signers",
            plural(abusers, "abuser", "abusers"),
            crate::countries::percent(share)
        );
    }
    let _ = writeln!(out, "{line}");
    let Some(groups) = &ips.groups else {
        return;
    };
    let sent = groups.abusers.sent + groups.others.sent;
    let _ = writeln!(
        out,
        "  {:<20}{:>12}{:>8}{:>12}{:>12}{:>12}{:>12}",
        "signatures by group", "sent", "share", "accepted", "limited", "blocked", "other"
    );
    let mut row = |name: &str, g: &GroupCounts| {
        let share = if sent > 0 {
            100.0 * g.sent as f64 / sent as f64
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "  {name:<20}{:>12}{:>7.1}%{:>12}{:>12}{:>12}{:>12}",
            g.sent, share, g.accepted, g.limited, g.blocked, g.other
        );
    };
    row("abusers", &groups.abusers);
    row("everyone else", &groups.others);
    let _ = writeln!(
        out,
        "             (accepted: 201, 200 duplicate or 202 pending; limited: 429 ip_rate_limited; \
         blocked: 403)"
    );
}

/// The countries' part of the table: the top [`COUNTRIES_SHOWN_MAX`] with their share of the
/// count, the rest summed up, and whether they add up to the count.
fn countries_table(out: &mut String, c: &CountriesReport) {
    let _ = writeln!(
        out,
        "\ncountries  {} (the most signatures counted by this run: {}), --countries {}",
        c.petition, c.counted_by_run, c.spec
    );
    let Some(count) = c.count else {
        let _ = writeln!(
            out,
            "  the breakdown could not be read: {}",
            c.error.as_deref().unwrap_or("no reason given")
        );
        return;
    };
    let share = |n: u64| {
        if count > 0 {
            100.0 * n as f64 / count as f64
        } else {
            0.0
        }
    };
    for entry in c.countries.iter().take(COUNTRIES_SHOWN_MAX) {
        let name = if entry.country == "ZZ" {
            "ZZ (no country)".to_owned()
        } else {
            entry.country.clone()
        };
        let _ = writeln!(
            out,
            "  {name:<34}{:>12}{:>9.2}%",
            entry.count,
            share(entry.count)
        );
    }
    let rest = &c.countries[c.countries.len().min(COUNTRIES_SHOWN_MAX)..];
    if !rest.is_empty() {
        let n = rest.iter().fold(0u64, |sum, e| sum.saturating_add(e.count));
        let name = format!("{} more countries", rest.len());
        let _ = writeln!(out, "  {name:<34}{n:>12}{:>9.2}%", share(n));
    }
    let sum = c
        .countries
        .iter()
        .fold(0u64, |sum, e| sum.saturating_add(e.count));
    let verdict = if c.sum_matches == Some(true) {
        format!("= count {count}")
    } else {
        format!("!= count {count}: the breakdown does NOT add up to the count")
    };
    let _ = writeln!(
        out,
        "  sum of {} countries {sum} {verdict}",
        c.countries.len()
    );
}

fn ms(value: f64) -> String {
    format!("{value:.2}ms")
}

/// A latency for the progress line, e.g. `1.23ms` or `1.50s`.
pub fn format_latency(latency: Duration) -> String {
    let ms = latency.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.2}s", ms / 1000.0)
    } else {
        format!("{ms:.2}ms")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::ips::Group;
    use crate::outcome::Outcome;

    fn run_args(extra: &[&str]) -> RunArgs {
        let mut args = vec![
            "loadtest",
            "run",
            "--target",
            "http://127.0.0.1:9",
            "--api-key",
            "k",
        ];
        args.extend_from_slice(extra);
        match Cli::try_parse_from(args).unwrap().command {
            Command::Run(args) => args,
            Command::Verify(_) | Command::Plot(_) => unreachable!(),
        }
    }

    /// A report of `outcomes`, each counted in its group when `ips` has abusers.
    fn report(extra: &[&str], outcomes: &[(Group, Outcome, u64)]) -> Report {
        let args = run_args(extra);
        let ips = Ips::from_flags(args.ips, args.abusers, args.abuse_share).unwrap();
        let mut stats = Stats::default();
        for (group, outcome, n) in outcomes {
            for _ in 0..*n {
                stats.counts.add(outcome);
                if ips.is_some_and(|ips| ips.abusers().is_some()) {
                    stats.counts.groups.add(*group, outcome);
                }
            }
        }
        let mut report = Report::new(&args, 5, Endpoint::Single, Duration::from_secs(1), &stats);
        report.ips = ips.map(|ips| IpsReport::new(&ips, &stats.counts));
        report
    }

    #[test]
    fn the_table_counts_the_abuse_controls_and_splits_by_group() {
        let report = report(
            &["--ips", "1000", "--abusers", "3", "--abuse-share", "0.2"],
            &[
                (Group::Abuser, Outcome::Accepted, 15),
                (Group::Abuser, Outcome::IpRateLimited, 180),
                (Group::Abuser, Outcome::Blocked, 5),
                (Group::Other, Outcome::Accepted, 790),
                (Group::Other, Outcome::Duplicate, 8),
                (Group::Other, Outcome::IpRateLimited, 1),
                (Group::Other, Outcome::Timeout, 1),
            ],
        );
        let table = report.table();
        for line in [
            "  ip rate limited (429)                      181",
            "  blocked (403)                                5",
            "  rate limited (429)                           0",
            "sources    1000 addresses from 10.0.0.1; 3 abusers from 198.18.0.1 sending 20% of \
             the signers",
            concat!(
                "  signatures by group         sent   share    accepted     limited     blocked",
                "       other"
            ),
            concat!(
                "  abusers                      200   20.0%          15         180           5",
                "           0"
            ),
            concat!(
                "  everyone else                800   80.0%         798           1           0",
                "           1"
            ),
        ] {
            assert!(table.lines().any(|l| l == line), "{line:?} not in\n{table}");
        }
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["outcomes"]["ip_rate_limited"], 181);
        assert_eq!(json["outcomes"]["blocked"], 5);
        assert!(json["outcomes"].get("groups").is_none());
        let ips = &json["ips"];
        assert_eq!(ips["addresses"], 1000);
        assert_eq!(ips["first"], "10.0.0.1");
        assert_eq!(ips["abusers"], 3);
        assert_eq!(ips["abusers_first"], "198.18.0.1");
        assert_eq!(ips["abuse_share"], 0.2);
        let abusers = &ips["groups"]["abusers"];
        assert_eq!(
            [
                &abusers["sent"],
                &abusers["accepted"],
                &abusers["limited"],
                &abusers["blocked"],
                &abusers["other"]
            ],
            [200, 15, 180, 5, 0]
        );
        assert_eq!(ips["groups"]["others"]["accepted"], 798);
        assert_eq!(ips["groups"]["others"]["other"], 1);
        // The final refusals are not errors; the timeout is.
        assert_eq!(report.outcomes.errors(), 1);
    }

    #[test]
    fn without_abusers_there_is_no_split_and_without_ips_no_block() {
        let report = report(&["--ips", "1"], &[(Group::Other, Outcome::Accepted, 3)]);
        let table = report.table();
        assert!(
            table
                .lines()
                .any(|l| l == "sources    1 address from 10.0.0.1"),
            "{table}"
        );
        assert!(!table.contains("signatures by group"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["ips"]["abusers"], serde_json::Value::Null);
        assert!(json["ips"].get("groups").is_none());

        let report = report_without_ips();
        let table = report.table();
        assert!(!table.contains("sources "), "{table}");
        // The rows are there, at 0, for every signature run.
        assert!(table.contains("  ip rate limited (429) "), "{table}");
        assert!(table.contains("  blocked (403) "), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert!(json.get("ips").is_none());
        assert_eq!(json["outcomes"]["ip_rate_limited"], 0);
    }

    fn report_without_ips() -> Report {
        report(&[], &[(Group::Other, Outcome::Accepted, 3)])
    }

    #[test]
    fn a_validation_refused_by_the_abuse_controls_is_not_lost_from_phase_2() {
        let args = run_args(&["--validate-share", "1"]);
        let mut stats = Stats::default();
        for outcome in [
            Outcome::Validated,
            Outcome::Blocked,
            Outcome::IpRateLimited,
            Outcome::Rejected("unknown_token".into()),
        ] {
            stats.counts.add(&outcome);
        }
        let kept = KeptSet::default();
        let v = ValidationReport::new(&args, 1.0, &kept, 4, Duration::from_secs(1), &stats);
        assert_eq!(v.outcomes.validated, 1);
        assert_eq!(
            v.outcomes.rejected,
            BTreeMap::from([
                ("blocked".to_owned(), 1),
                ("ip_rate_limited".to_owned(), 1),
                ("unknown_token".to_owned(), 1)
            ])
        );
    }
}
