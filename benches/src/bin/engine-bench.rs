//! `engine-bench`: drives the engine library directly (no HTTP) and reports throughput, latency,
//! memory and disk figures as a human summary and JSON.
//!
//! Modes:
//! - `memory`: the in-memory dedup and counting path from T threads (P1, P5, P8);
//! - `durable`: signatures through the group-commit writer into RocksDB (P2, P7);
//! - `recover`: open an existing data dir and time it to ready (P6);
//! - `floor`: the durable-ack floor of this machine under `durable --rate` (P7): pacing, hand-off,
//!   append and `fdatasync` only.
//!
//! `memory` and `durable` take `--countries SPEC` (the countries and regions the signatures name)
//! and `--hot-countries SPEC` (those of the viral shape's hot petition), and report the bytes of
//! the counts by place and histories (`breakdowns`) beside the index and counts.

// The durable report is one `json!` literal with over sixty fields.
#![recursion_limit = "256"]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use benches::countries::Countries;
use benches::floor::Floor;
use benches::open_loop::{latency_histogram, measure_wake_lateness, Pacer, WakeLateness};
use benches::stalls::{self, SlowCall, SlowCalls};
use benches::workload::{Batch, Input, Shape, Workload};
use benches::{disk, process};
use clap::{Parser, Subcommand};
use engine::{Config, Durability, Engine, Outcome, RateLimits, SubmitError};
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Parser)]
#[command(
    version,
    about = "Benchmarks the petition engine library directly (no HTTP)"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(clap::Args, Clone)]
struct Traffic {
    /// Signatures to submit in total (new signers plus re-sends).
    #[arg(long, default_value_t = 10_000_000)]
    signatures: u64,
    /// Petitions the traffic is spread over.
    #[arg(long, default_value_t = 10_000)]
    petitions: u32,
    /// Traffic shape: uniform, viral (one petition takes --hot-share) or zipf.
    #[arg(long, default_value = "viral")]
    shape: Shape,
    /// Share of traffic on the hot petition (viral shape).
    #[arg(long, default_value_t = 0.9)]
    hot_share: f64,
    /// Share of submissions that re-send an already-sent signer.
    #[arg(long, default_value_t = 0.0)]
    dup_ratio: f64,
    /// Submitting threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Signatures per engine call (submit_batch).
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How signatures are produced: all before the clock starts (memory mode's default), or
    /// per call inside the timed loop (durable mode's default: no input held in memory).
    #[arg(long)]
    input: Option<Input>,
    /// Countries (and regions) the signatures name: `CODE:SHARE[:REGIONS],...` (e.g.
    /// `GB:0.9:650,US:0.05:50,FR:0.05`; the rest of the signatures name no country; with
    /// REGIONS, regions R1…RN equally likely) or `uniform:N` (N countries equally likely).
    /// Without it no signature names a country.
    #[arg(long, value_parser = Countries::parse, value_name = "SPEC")]
    countries: Option<Countries>,
    /// Countries of the hot petition's signatures in the viral shape, instead of --countries
    /// (same syntax). With --compare-rounds: the viral runs' hot petition.
    #[arg(long, value_parser = Countries::parse, value_name = "SPEC")]
    hot_countries: Option<Countries>,
    /// Distinct IPv4 addresses the signatures come from (each signature's drawn at random, a
    /// re-send from its original's); without it signatures carry no address.
    #[arg(long, value_name = "N")]
    ips: Option<u64>,
    /// The engine's limits per (petition, address): BURST/SECONDS,SUSTAINED/SECONDS (the
    /// defaults: 1/60,5/300) or off. Only signatures with an address (--ips) are limited.
    #[arg(long, default_value = "1/60,5/300", value_parser = rate_limits_arg, value_name = "SPEC")]
    rate_limits: RateLimitsArg,
    /// (petition, address) pairs the limits remember, 32 bytes each (1000 to 2^30; the
    /// default 1000000: 32 MB). A small table stays in the CPU's caches: against the default,
    /// it separates what the limits compute from what their memory costs.
    #[arg(long, default_value_t = RateLimits::UK.entries, value_name = "N")]
    rate_limit_entries: usize,
    /// Trending sources: the engine's slot budget (56 bytes a slot; the default 1048576) or
    /// off. Every signature's email domain is a source, and its address and network with --ips.
    #[arg(long, default_value = "1048576", value_parser = source_slots_arg, value_name = "N|off")]
    source_slots: SourceSlotsArg,
    /// Start the dedup index empty and let it grow, as a server started without
    /// `--signatures-expected` does, rather than sized for --signatures at open.
    #[arg(long)]
    grow_index: bool,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// `--source-slots`: a budget, or off.
#[derive(Debug, Clone, Copy)]
struct SourceSlotsArg(Option<engine::SourcesConfig>);

fn source_slots_arg(text: &str) -> Result<SourceSlotsArg, String> {
    if text == "off" {
        return Ok(SourceSlotsArg(None));
    }
    let config = engine::SourcesConfig {
        slots: text
            .parse()
            .map_err(|_| format!("{text:?}: a number of slots or off"))?,
        ..engine::SourcesConfig::DEFAULT
    };
    config.check()?;
    Ok(SourceSlotsArg(Some(config)))
}

/// `--rate-limits`: two windows, or none.
#[derive(Debug, Clone, Copy)]
struct RateLimitsArg(Option<RateLimits>);

fn rate_limits_arg(text: &str) -> Result<RateLimitsArg, String> {
    let windows = RateLimits::parse_windows(text)?;
    Ok(RateLimitsArg(windows.map(|(burst, sustained)| {
        RateLimits {
            burst,
            sustained,
            ..RateLimits::UK
        }
    })))
}

impl Traffic {
    /// The signatures the engine's index is sized for at open: all of them, or none with
    /// --grow-index.
    fn expected(&self) -> u64 {
        if self.grow_index {
            0
        } else {
            self.signatures
        }
    }

    /// The limits `--rate-limits` and `--rate-limit-entries` ask for.
    fn limits(&self) -> Result<Option<RateLimits>> {
        let Some(limits) = self.rate_limits.0 else {
            return Ok(None);
        };
        let limits = RateLimits {
            entries: self.rate_limit_entries,
            ..limits
        };
        limits.check().map_err(anyhow::Error::msg)?;
        Ok(Some(limits))
    }

    /// The workload of these flags in `shape`.
    fn workload(&self, shape: Shape) -> Workload {
        Workload::with(
            self.signatures,
            self.petitions,
            shape,
            self.hot_share,
            self.dup_ratio,
            self.seed,
        )
        .with_places(self.countries.clone(), self.hot_countries.clone())
        .with_ips(self.ips)
    }

    /// Prints the countries, if any, and refuses a hot petition's mix without a hot petition.
    fn check_countries(&self, compare: bool) -> Result<()> {
        if self.hot_countries.is_some() && !compare && self.shape != Shape::Viral {
            bail!("--hot-countries is for --shape viral (or --compare-rounds): the hot petition's signatures");
        }
        if let Some(countries) = &self.countries {
            println!("countries: {}", countries.describe());
        }
        if let Some(hot) = &self.hot_countries {
            println!("hot petition's countries: {}", hot.describe());
        }
        Ok(())
    }

    /// The specs, for the JSON reports.
    fn countries_json(&self) -> (Option<&str>, Option<&str>) {
        (
            self.countries.as_ref().map(Countries::spec),
            self.hot_countries.as_ref().map(Countries::spec),
        )
    }
}

/// The memory figures of a run, printed as two lines and reported in JSON.
struct Memory {
    signatures: u64,
    index_bytes: u64,
    counts_bytes: u64,
    breakdown_bytes: u64,
    rss: u64,
}

impl Memory {
    fn of(stats: &engine::Stats, rss: u64) -> Memory {
        Memory {
            signatures: stats.signatures,
            index_bytes: stats.index_bytes,
            counts_bytes: stats.counts_bytes,
            breakdown_bytes: stats.breakdown_bytes,
            rss,
        }
    }

    fn per_signature(&self, bytes: u64) -> f64 {
        bytes as f64 / self.signatures.max(1) as f64
    }

    fn index_counts(&self) -> u64 {
        self.index_bytes + self.counts_bytes
    }

    fn with_breakdowns(&self) -> u64 {
        self.index_counts() + self.breakdown_bytes
    }

    fn print(&self) {
        println!(
            "index + counts: {:.2} bytes/signature ({} bytes for {} signatures); RSS {:.2} bytes/signature ({} MiB)",
            self.per_signature(self.index_counts()),
            self.index_counts(),
            self.signatures,
            self.per_signature(self.rss),
            self.rss >> 20
        );
        println!(
            "breakdowns: {} bytes ({:.2} B/signature); index + counts + breakdowns: {:.2} B/signature",
            self.breakdown_bytes,
            self.per_signature(self.breakdown_bytes),
            self.per_signature(self.with_breakdowns())
        );
    }
}

#[derive(Subcommand)]
enum Mode {
    /// In-memory dedup and counting: no store.
    Memory {
        #[command(flatten)]
        traffic: Traffic,
        /// Run uniform and viral alternately this many times each, fresh engine each run, and
        /// report both medians and their ratio (P8). 0: run --shape once.
        #[arg(long, default_value_t = 0)]
        compare_rounds: usize,
    },
    /// Through the group-commit writer into RocksDB.
    Durable {
        #[command(flatten)]
        traffic: Traffic,
        /// Durability of acknowledgements.
        #[arg(long, default_value = "sync")]
        durability: Durability,
        /// Data directory (must be empty or absent).
        #[arg(long)]
        data_dir: PathBuf,
        /// Open loop: total signatures per second (0: closed loop, as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Skip the disk probe (fsync latency and sequential write speed).
        #[arg(long)]
        no_disk_probe: bool,
        /// Print progress every this many seconds (0: never).
        #[arg(long, default_value_t = 10)]
        progress_s: u64,
        /// With --rate: calls at least this slow (ms) are kept with their times, grouped into
        /// stalls and put beside what RocksDB's LOG shows running then (0: none kept).
        #[arg(long, default_value_t = 10)]
        stall_ms: u64,
        /// Save the dedup index in the background each time this many more signatures are
        /// stored (0: only at the close).
        #[arg(long, default_value_t = engine::INDEX_SNAPSHOT_SIGNATURES_DEFAULT)]
        index_snapshot_signatures: u64,
    },
    /// Pending signatures and their validations (durable, `sync`): signs `--signatures` new
    /// signers to petitions that validate by email, then validates every token.
    Lifecycle {
        /// New signers, then as many validations.
        #[arg(long, default_value_t = 10_000_000)]
        signatures: u64,
        /// Petitions (each validates by email); signers go round-robin.
        #[arg(long, default_value_t = 100)]
        petitions: u32,
        /// Calling threads.
        #[arg(long, default_value_t = 8)]
        threads: usize,
        /// Signatures (then validations) per engine call.
        #[arg(long, default_value_t = 2048)]
        batch: usize,
        /// Validate in signing order instead of a seeded shuffle (the shuffle reads the
        /// lifecycle entries at random, as clicks on emails would).
        #[arg(long)]
        in_order: bool,
        /// Data directory (must be empty or absent).
        #[arg(long)]
        data_dir: PathBuf,
        /// Write the JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// An invalidation job on one petition of a large store while ingestion goes on: fills the
    /// store (`p0` holds one signature in `--every`), times the preview, then runs the job
    /// under an open-loop ingestion of `--rate` signatures/s to the other petitions.
    Invalidate {
        /// Signatures stored before the job.
        #[arg(long, default_value_t = 20_000_000)]
        signatures: u64,
        /// One signature in this many goes to `p0`, the petition invalidated.
        #[arg(long, default_value_t = 20)]
        every: u64,
        /// Petitions.
        #[arg(long, default_value_t = 1_000)]
        petitions: u32,
        /// Calling threads.
        #[arg(long, default_value_t = 8)]
        threads: usize,
        /// Signatures per engine call.
        #[arg(long, default_value_t = 2048)]
        batch: usize,
        /// Ingestion during the job, signatures/s (half of P2's sustained rate by default).
        #[arg(long, default_value_t = 400_000)]
        rate: u64,
        /// Signatures one job step reads (the engine's default `invalidation_step`).
        #[arg(long, default_value_t = 65_536)]
        step: usize,
        /// Data directory (must be empty or absent).
        #[arg(long)]
        data_dir: PathBuf,
        /// Write the JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Opens an existing data dir and measures the time until the engine is ready.
    Recover {
        /// Data directory written by `durable`.
        #[arg(long)]
        data_dir: PathBuf,
        /// Write the JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The floor under `durable --rate`: the same pacing, with one writer thread that only
    /// appends the bytes and `fdatasync`s per group (no engine, no RocksDB). What a durable
    /// acknowledgement costs on this machine before any engine work.
    Floor {
        /// Directory on the disk to measure (a scratch file is written and removed).
        #[arg(long)]
        data_dir: PathBuf,
        /// Signatures in all.
        #[arg(long, default_value_t = 5_000_000)]
        signatures: u64,
        /// Calling threads.
        #[arg(long, default_value_t = 8)]
        threads: usize,
        /// Signatures per call.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Total signatures per second.
        #[arg(long, default_value_t = 250_000)]
        rate: u64,
        /// Bytes appended per signature: what the engine's WAL takes per signature at this load
        /// (78.9: a run killed after 982,272 signatures left 77.5 MB of WAL files).
        #[arg(long, default_value_t = 79)]
        bytes_per_signature: usize,
        /// Skip the disk probe.
        #[arg(long)]
        no_disk_probe: bool,
        /// Calls at least this slow (ms) are kept with their times and grouped into stalls (0:
        /// none kept).
        #[arg(long, default_value_t = 10)]
        stall_ms: u64,
        /// Write the JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().mode {
        Mode::Memory {
            traffic,
            compare_rounds,
        } => memory(traffic, compare_rounds),
        Mode::Durable {
            traffic,
            durability,
            data_dir,
            rate,
            no_disk_probe,
            progress_s,
            stall_ms,
            index_snapshot_signatures,
        } => durable(
            traffic,
            (durability, index_snapshot_signatures),
            data_dir,
            Pacing {
                rate,
                progress_s,
                stall_threshold: Duration::from_millis(stall_ms),
            },
            !no_disk_probe,
        ),
        Mode::Lifecycle {
            signatures,
            petitions,
            threads,
            batch,
            in_order,
            data_dir,
            json,
        } => lifecycle_mode(
            signatures, petitions, threads, batch, in_order, &data_dir, json,
        ),
        Mode::Invalidate {
            signatures,
            every,
            petitions,
            threads,
            batch,
            rate,
            step,
            data_dir,
            json,
        } => invalidate_mode(
            &InvalidateArgs {
                signatures,
                every,
                petitions,
                threads,
                batch,
                rate,
                step,
            },
            &data_dir,
            json,
        ),
        Mode::Recover { data_dir, json } => recover(data_dir, json),
        Mode::Floor {
            data_dir,
            signatures,
            threads,
            batch,
            rate,
            bytes_per_signature,
            no_disk_probe,
            stall_ms,
            json,
        } => floor(
            &Floor {
                threads,
                batch,
                rate,
                signatures,
                bytes_per_signature,
                stall_threshold: Duration::from_millis(stall_ms),
            },
            &data_dir,
            !no_disk_probe,
            json,
        ),
    }
}

/// Probes the disk under `dir` and prints what it found, if `enabled`.
fn probe_disk(dir: &Path, enabled: bool) -> Result<Option<disk::DiskProbe>> {
    if !enabled {
        return Ok(None);
    }
    let probe = disk::probe(dir).context("probing the disk")?;
    println!(
        "disk: fsync of 4 KiB p50 {} µs, p99 {} µs; sequential write {:.0} MB/s",
        probe.fsync_us_p50, probe.fsync_us_p99, probe.sequential_mb_per_s
    );
    Ok(Some(probe))
}

fn floor(floor: &Floor, dir: &Path, disk_probe: bool, json: Option<PathBuf>) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let probe = probe_disk(dir, disk_probe)?;
    println!(
        "engine-bench floor: {} signatures, {} threads × batch {}, rate {}/s, {} bytes appended per signature, {}",
        floor.signatures,
        floor.threads,
        floor.batch,
        floor.rate,
        floor.bytes_per_signature,
        process::machine()
    );
    let result = benches::floor::run(floor, dir).context("floor run")?;
    let (latency, call, sync) = (&result.latency_us, &result.call_us, &result.sync_us);
    println!(
        "{} calls in {:.2} s, {} groups ({:.1} calls per fdatasync)",
        result.calls,
        result.elapsed.as_secs_f64(),
        result.groups,
        result.calls as f64 / result.groups.max(1) as f64
    );
    println!(
        "ack latency per call of {} signatures: p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
        floor.batch,
        latency.value_at_quantile(0.50),
        latency.value_at_quantile(0.99),
        latency.value_at_quantile(0.999),
        latency.max()
    );
    println!(
        "  of which after the hand-off to the writer: p50 {} µs, p99 {} µs, max {} µs ({} of {} calls were due before their thread was free)",
        call.value_at_quantile(0.50),
        call.value_at_quantile(0.99),
        call.max(),
        result.late_calls,
        result.calls
    );
    let late = &result.wake_late_us;
    let syncs_over_1ms = sync.len() - sync.count_between(0, 1_000);
    println!(
        "append + fdatasync per group: p50 {} µs, p99 {} µs, {} of {} over 1 ms, max {} µs; a 1 ms sleep woke late by p50 {} µs, p99 {} µs, max {} µs",
        sync.value_at_quantile(0.50),
        sync.value_at_quantile(0.99),
        syncs_over_1ms,
        sync.len(),
        sync.max(),
        late.value_at_quantile(0.50),
        late.value_at_quantile(0.99),
        late.max()
    );
    let stalls = report_stalls(
        result.slow_calls.clone(),
        result.slow_calls_dropped,
        &[],
        &result.late_wakes,
        result.epoch_unix_us,
        floor.stall_threshold,
    );
    let report = json!({
        "mode": "floor",
        "threads": floor.threads,
        "batch": floor.batch,
        "rate": floor.rate,
        "signatures": floor.signatures,
        "bytes_per_signature": floor.bytes_per_signature,
        "calls": result.calls,
        "groups": result.groups,
        "elapsed_s": result.elapsed.as_secs_f64(),
        "ack_latency_us_p50": latency.value_at_quantile(0.50),
        "ack_latency_us_p99": latency.value_at_quantile(0.99),
        "ack_latency_us_p999": latency.value_at_quantile(0.999),
        "ack_latency_us_max": latency.max(),
        "call_latency_us_p50": call.value_at_quantile(0.50),
        "call_latency_us_p99": call.value_at_quantile(0.99),
        "call_latency_us_max": call.max(),
        "calls_due_before_thread_free": result.late_calls,
        "sync_us_p50": sync.value_at_quantile(0.50),
        "sync_us_p99": sync.value_at_quantile(0.99),
        "sync_us_max": sync.max(),
        "syncs_over_1ms": syncs_over_1ms,
        "wake_late_us_p50": late.value_at_quantile(0.50),
        "wake_late_us_p99": late.value_at_quantile(0.99),
        "wake_late_us_max": late.max(),
        "stalls": stalls,
        "disk_fsync_us_p50": probe.as_ref().map(|p| p.fsync_us_p50),
        "disk_fsync_us_p99": probe.as_ref().map(|p| p.fsync_us_p99),
        "disk_sequential_mb_per_s": probe.as_ref().map(|p| p.sequential_mb_per_s),
        "machine": process::machine(),
    });
    write_json(json.as_ref(), &report)
}

/// How many stalls a run prints, worst first (the JSON report has them all by cause).
const STALLS_PRINTED: usize = 20;

/// Groups a paced run's slow calls into stalls, puts each beside the background `jobs` and
/// late wake-ups that overlapped it, prints the worst, and returns the summary for the JSON
/// report (`null` when no threshold was set).
fn report_stalls(
    slow_calls: Vec<SlowCall>,
    dropped: u64,
    jobs: &[stalls::Job],
    late_wakes: &[(u64, u64)],
    epoch_unix_us: u64,
    threshold: Duration,
) -> serde_json::Value {
    if threshold.is_zero() {
        return serde_json::Value::Null;
    }
    let slow = slow_calls.len() as u64 + dropped;
    let found = stalls::explain(&stalls::stalls(slow_calls), jobs, late_wakes, epoch_unix_us);
    let mut causes = std::collections::BTreeMap::<&str, u64>::new();
    for stall in &found {
        *causes.entry(stall.cause()).or_default() += 1;
    }
    let by_cause: Vec<String> = causes.iter().map(|(c, n)| format!("{n} {c}")).collect();
    println!(
        "stalls: {} calls took ≥ {} ms, in {} stalls (slow calls within {} ms joined){}{}",
        slow,
        threshold.as_millis(),
        found.len(),
        stalls::STALL_GAP.as_millis(),
        if found.is_empty() {
            ""
        } else {
            "; by what overlapped them: "
        },
        by_cause.join(", ")
    );
    let mut worst: Vec<&stalls::Explained> = found.iter().collect();
    worst.sort_by_key(|e| std::cmp::Reverse(e.stall.worst_latency_us));
    worst.truncate(STALLS_PRINTED);
    for e in &worst {
        let running: Vec<&str> = e.overlapping.iter().map(|k| k.as_str()).collect();
        println!(
            "  at {:.3} s, {} ms long: {} calls, worst {:.1} ms ({:.1} ms inside the call); running: {}; latest wake-up {:.1} ms late",
            e.stall.start_us as f64 / 1e6,
            (e.stall.end_us - e.stall.start_us) / 1_000,
            e.stall.calls,
            e.stall.worst_latency_us as f64 / 1e3,
            e.stall.worst_call_us as f64 / 1e3,
            if running.is_empty() { "nothing seen".to_string() } else { running.join(", ") },
            e.wake_late_us as f64 / 1e3
        );
    }
    json!({
        "threshold_ms": threshold.as_millis() as u64,
        "slow_calls": slow,
        "stalls": found.len(),
        "causes": causes,
        "worst": worst.iter().map(|e| json!({
            "start_s": e.stall.start_us as f64 / 1e6,
            "duration_ms": (e.stall.end_us - e.stall.start_us) as f64 / 1e3,
            "calls": e.stall.calls,
            "worst_latency_ms": e.stall.worst_latency_us as f64 / 1e3,
            "worst_call_ms": e.stall.worst_call_us as f64 / 1e3,
            "overlapping": e.overlapping.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            "wake_late_ms": e.wake_late_us as f64 / 1e3,
            "cause": e.cause(),
        })).collect::<Vec<_>>(),
    })
}

struct RunResult {
    elapsed: Duration,
    accepted: u64,
    duplicates: u64,
    errors: u64,
    /// Refused by the limits per (petition, address).
    limited: u64,
    latency_us: Histogram<u64>,
    /// Per call, µs from the call to `submit_batch_ref` to its return: the engine's own part of
    /// `latency_us`, without the load thread's late wake-ups or earlier calls' delays.
    call_us: Histogram<u64>,
    /// How late a thread that sleeps 1 ms at a time woke up, in µs, sampled during the run: the
    /// scheduling delay any thread of this process (the writer, a caller) can meet.
    wake_late_us: Histogram<u64>,
    /// Calls already due when their thread came for them ([`Pacer::late`]).
    late_calls: u64,
    /// Calls at least [`Pacing::stall_threshold`] slow, timed from the epoch.
    slow_calls: Vec<SlowCall>,
    /// Slow calls past the bound of [`SlowCalls`], counted only.
    slow_calls_dropped: u64,
    /// Wake-ups at least [`benches::open_loop::LATE_WAKE_US`] late: (µs after the epoch, µs
    /// late).
    late_wakes: Vec<(u64, u64)>,
    /// The epoch (when the first call was due) on the Unix clock, µs.
    epoch_unix_us: u64,
}

/// How `drive` sends: the rate (0: closed loop), progress lines, and which calls count as slow.
#[derive(Debug, Clone, Copy)]
struct Pacing {
    rate: u64,
    progress_s: u64,
    stall_threshold: Duration,
}

impl Pacing {
    /// As fast as possible, silent, keeping no slow calls.
    const CLOSED_LOOP: Pacing = Pacing {
        rate: 0,
        progress_s: 0,
        stall_threshold: Duration::ZERO,
    };
}

/// Each thread's signatures, generated before the clock starts (`Input::Pregenerated`), or
/// `None`s (`Input::Inline`).
fn pregenerate(workload: &Workload, threads: usize, input: Input) -> Vec<Option<Batch>> {
    if input == Input::Inline {
        return (0..threads).map(|_| None).collect();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let share = workload.thread_range(t, threads);
                    let mut batch = Batch::with_capacity(
                        (share.end - share.start) as usize,
                        workload.text_bytes_max(),
                    );
                    workload.fill(share, &mut batch);
                    Some(batch)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("generating thread panicked"))
            .collect()
    })
}

/// Submits the workload from `traffic.threads` threads. With `pacing.rate > 0` each thread
/// paces its batches to its share of the rate and latency counts from the intended send time.
/// With `measure_wake`, a helper thread measures how late a 1 ms sleep wakes meanwhile.
fn drive(
    engine: &Engine,
    traffic: &Traffic,
    workload: &Workload,
    input: Input,
    pacing: Pacing,
    measure_wake: bool,
) -> RunResult {
    let Pacing {
        rate, progress_s, ..
    } = pacing;
    let threads = traffic.threads.max(1);
    let inputs = pregenerate(workload, threads, input);
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let (results, wake, elapsed, epoch_unix_us) = std::thread::scope(|scope| {
        let reporter_done = Arc::clone(&done);
        let total = traffic.signatures;
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reporter_finished = Arc::clone(&finished);
        let reporter = (progress_s > 0).then(|| {
            scope.spawn(move || {
                let mut last = 0;
                let mut last_at = Instant::now();
                while !reporter_finished.load(Ordering::Acquire) {
                    std::thread::park_timeout(Duration::from_secs(progress_s));
                    if reporter_finished.load(Ordering::Acquire) {
                        break;
                    }
                    let now = reporter_done.load(Ordering::Relaxed);
                    let rate = (now - last) as f64 / last_at.elapsed().as_secs_f64();
                    let stats = engine.stats();
                    eprintln!(
                        "  {now} / {total} signatures, {:.0} signatures/s over the last interval; {} stored, index saved at {:?} ({} saves)",
                        rate, stats.signatures, stats.index_saved_from, stats.index_saves_total
                    );
                    last = now;
                    last_at = Instant::now();
                }
            })
        });
        let wake_finished = Arc::clone(&finished);
        let epoch = Instant::now();
        let epoch_unix_us = stalls::unix_us_of(epoch);
        let wake =
            measure_wake.then(|| scope.spawn(move || measure_wake_lateness(epoch, &wake_finished)));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let done = Arc::clone(&done);
                let input = inputs[t].as_ref();
                scope.spawn(move || {
                    let mut histogram = latency_histogram();
                    let mut calls = histogram.clone();
                    let (mut accepted, mut duplicates, mut errors, mut limited) = (0, 0, 0, 0);
                    let share = workload.thread_range(t, threads);
                    // Threads are spread evenly over one interval, so that the total rate is
                    // constant rather than `threads` calls arriving at once every interval.
                    let mut pacer = Pacer::new(
                        epoch,
                        Pacer::interval(rate, traffic.batch, threads),
                        t,
                        threads,
                    );
                    let mut slow = SlowCalls::new(epoch, pacing.stall_threshold);
                    let mut i = share.start;
                    let mut buffer = Batch::default();
                    while i < share.end {
                        let end = (i + traffic.batch as u64).min(share.end);
                        let batch = match input {
                            Some(all) => all.signatures_in(
                                (i - share.start) as usize..(end - share.start) as usize,
                            ),
                            None => {
                                workload.fill(i..end, &mut buffer);
                                buffer.signatures()
                            }
                        };
                        let intended = pacer.wait_turn();
                        let called = Instant::now();
                        let outcomes = engine.submit_batch_ref(&batch);
                        let inside = (called.elapsed().as_micros() as u64).max(1);
                        calls.saturating_record(inside);
                        for outcome in outcomes {
                            match outcome {
                                Ok(Outcome::Accepted { .. }) => accepted += 1,
                                Ok(Outcome::Duplicate { .. }) => duplicates += 1,
                                Err(SubmitError::RateLimited { .. }) => limited += 1,
                                // These petitions do not validate by email.
                                Ok(_) | Err(_) => errors += 1,
                            }
                        }
                        let latency = (intended.elapsed().as_micros() as u64).max(1);
                        histogram.saturating_record(latency);
                        slow.note(intended, latency, inside);
                        done.fetch_add(end - i, Ordering::Relaxed);
                        i = end;
                    }
                    (
                        (accepted, duplicates, errors, limited),
                        histogram,
                        calls,
                        pacer.late(),
                        slow,
                    )
                })
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .collect();
        // The run ends when the last load thread does, not when the helpers notice.
        let elapsed = started.elapsed();
        finished.store(true, Ordering::Release);
        if let Some(reporter) = &reporter {
            reporter.thread().unpark();
        }
        let late = match wake {
            Some(wake) => wake.join().expect("wake-lateness thread panicked"),
            None => WakeLateness {
                histogram: latency_histogram(),
                late_wakes: Vec::new(),
            },
        };
        (results, late, elapsed, epoch_unix_us)
    });
    // Free the input before the caller measures memory.
    drop(inputs);
    let mut latency_us = latency_histogram();
    let mut call_us = latency_us.clone();
    let (mut accepted, mut duplicates, mut errors, mut late_calls) = (0, 0, 0, 0);
    let mut limited = 0;
    let (mut slow_calls, mut slow_calls_dropped) = (Vec::new(), 0);
    for ((a, d, e, r), h, c, l, slow) in results {
        accepted += a;
        duplicates += d;
        errors += e;
        limited += r;
        latency_us.add(h).expect("same bounds");
        call_us.add(c).expect("same bounds");
        late_calls += l;
        slow_calls_dropped += slow.dropped();
        slow_calls.extend(slow.into_calls());
    }
    RunResult {
        elapsed,
        accepted,
        duplicates,
        errors,
        limited,
        latency_us,
        call_us,
        wake_late_us: wake.histogram,
        late_calls,
        slow_calls,
        slow_calls_dropped,
        late_wakes: wake.late_wakes,
        epoch_unix_us,
    }
}

fn memory_run(traffic: &Traffic, shape: Shape) -> Result<(RunResult, engine::Stats, u64)> {
    let mut config = Config::in_memory();
    config.signatures_expected = traffic.expected();
    config.rate_limits = traffic.limits()?;
    config.sources = traffic.source_slots.0;
    let engine = Engine::open(config)?;
    benches::lifecycle::register(&engine, traffic.petitions, engine::Validation::None)?;
    let workload = traffic.workload(shape);
    let input = traffic.input.unwrap_or(Input::Pregenerated);
    let run = drive(
        &engine,
        traffic,
        &workload,
        input,
        Pacing::CLOSED_LOOP,
        false,
    );
    if run.errors > 0 {
        bail!("{} signatures were refused", run.errors);
    }
    let stats = engine.stats();
    let rss = process::rss_bytes();
    Ok((run, stats, rss))
}

fn memory(mut traffic: Traffic, compare_rounds: usize) -> Result<()> {
    let input = *traffic.input.get_or_insert(Input::Pregenerated);
    println!(
        "engine-bench memory: {} signatures, {} petitions, {} threads, batch {}, {}",
        traffic.signatures,
        traffic.petitions,
        traffic.threads,
        traffic.batch,
        process::machine()
    );
    println!("input: {}", input.describe());
    traffic.check_countries(compare_rounds > 0)?;
    let (countries, hot_countries) = traffic.countries_json();
    if compare_rounds == 0 {
        let (run, stats, rss) = memory_run(&traffic, traffic.shape)?;
        let per_sec = traffic.signatures as f64 / run.elapsed.as_secs_f64();
        let memory = Memory::of(&stats, rss);
        println!(
            "{}: {:.2} M signatures/s ({} accepted, {} duplicate) in {:.2} s",
            traffic.shape,
            per_sec / 1e6,
            run.accepted,
            run.duplicates,
            run.elapsed.as_secs_f64()
        );
        memory.print();
        let report = json!({
            "mode": "memory",
            "shape": traffic.shape.to_string(),
            "hot_share": traffic.hot_share,
            "threads": traffic.threads,
            "batch": traffic.batch,
            "petitions": traffic.petitions,
            "signatures": traffic.signatures,
            "accepted": run.accepted,
            "duplicates": run.duplicates,
            "ip_rate_limited": run.limited,
            "elapsed_s": run.elapsed.as_secs_f64(),
            "signatures_per_sec": per_sec,
            "countries": countries,
            "hot_countries": hot_countries,
            "index_bytes": stats.index_bytes,
            "counts_bytes": stats.counts_bytes,
            "index_bytes_per_signature": memory.per_signature(memory.index_counts()),
            "breakdown_bytes": stats.breakdown_bytes,
        "rate_limit_bytes": stats.rate_limit_bytes,
        "source_bytes": stats.source_bytes,
            "rate_limit_bytes": stats.rate_limit_bytes,
            "source_bytes": stats.source_bytes,
        "source_bytes": stats.source_bytes,
            "breakdown_bytes_per_signature": memory.per_signature(stats.breakdown_bytes),
            "index_counts_breakdowns_bytes_per_signature":
                memory.per_signature(memory.with_breakdowns()),
            "input": input.describe(),
            "rss_bytes": rss,
            "rss_bytes_per_signature": memory.per_signature(rss),
            "machine": process::machine(),
        });
        write_json(traffic.json.as_ref(), &report)?;
        return Ok(());
    }

    let mut uniform = Vec::new();
    let mut viral = Vec::new();
    for round in 0..compare_rounds {
        for shape in [Shape::Uniform, Shape::Viral] {
            let (run, _, _) = memory_run(&traffic, shape)?;
            let per_sec = traffic.signatures as f64 / run.elapsed.as_secs_f64();
            println!("round {round} {shape}: {:.2} M signatures/s", per_sec / 1e6);
            if shape == Shape::Uniform {
                uniform.push(per_sec);
            } else {
                viral.push(per_sec);
            }
        }
    }
    let uniform_median = median(&mut uniform);
    let viral_median = median(&mut viral);
    let ratio = viral_median / uniform_median;
    println!(
        "median uniform {:.2} M/s, median viral (hot share {}) {:.2} M/s, viral/uniform {:.3}",
        uniform_median / 1e6,
        traffic.hot_share,
        viral_median / 1e6,
        ratio
    );
    let report = json!({
        "mode": "memory-compare",
        "hot_share": traffic.hot_share,
        "countries": countries,
        "hot_countries": hot_countries,
        "threads": traffic.threads,
        "petitions": traffic.petitions,
        "signatures": traffic.signatures,
        "rounds": compare_rounds,
        "uniform_signatures_per_sec": uniform,
        "viral_signatures_per_sec": viral,
        "uniform_median_signatures_per_sec": uniform_median,
        "viral_median_signatures_per_sec": viral_median,
        "viral_to_uniform_ratio": ratio,
        "input": input.describe(),
        "machine": process::machine(),
    });
    write_json(traffic.json.as_ref(), &report)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn durable(
    mut traffic: Traffic,
    (durability, index_snapshot_signatures): (Durability, u64),
    data_dir: PathBuf,
    pacing: Pacing,
    disk_probe: bool,
) -> Result<()> {
    let rate = pacing.rate;
    let input = *traffic.input.get_or_insert(Input::Inline);
    if durability == Durability::None {
        eprintln!(
            "WARNING: durability none: acknowledged signatures are NOT crash-safe; benchmark only"
        );
    }
    if data_dir.exists() && std::fs::read_dir(&data_dir)?.next().is_some() {
        bail!(
            "{} is not empty: durable wants a fresh data dir",
            data_dir.display()
        );
    }
    std::fs::create_dir_all(&data_dir)?;
    traffic.check_countries(false)?;
    let probe = probe_disk(&data_dir, disk_probe)?;
    println!(
        "engine-bench durable: {} signatures, {} petitions, {} (hot share {}), {} threads × batch {}, durability {}, rate {}, {}",
        traffic.signatures,
        traffic.petitions,
        traffic.shape,
        traffic.hot_share,
        traffic.threads,
        traffic.batch,
        durability,
        if rate == 0 { "closed loop".to_string() } else { format!("{rate}/s") },
        process::machine()
    );
    let mut config = Config::persistent(&data_dir);
    config.durability = durability;
    config.signatures_expected = traffic.expected();
    config.index_snapshot_signatures = index_snapshot_signatures;
    config.rate_limits = traffic.limits()?;
    config.sources = traffic.source_slots.0;
    let engine = Engine::open(config)?;
    engine.wait_ready().map_err(anyhow::Error::msg)?;
    benches::lifecycle::register(&engine, traffic.petitions, engine::Validation::None)?;
    let written_before = process::bytes_written();
    let workload = traffic.workload(traffic.shape);
    let run = drive(&engine, &traffic, &workload, input, pacing, true);
    engine.flush()?;
    let stats = engine.stats();
    let written = process::bytes_written().saturating_sub(written_before);
    let per_sec = traffic.signatures as f64 / run.elapsed.as_secs_f64();
    let p50 = run.latency_us.value_at_quantile(0.50);
    let p99 = run.latency_us.value_at_quantile(0.99);
    let bytes_per_sig = written as f64 / run.accepted.max(1) as f64;
    println!(
        "{:.0} signatures/s ({} accepted, {} duplicate, {} refused) in {:.2} s; {} batches",
        per_sec,
        run.accepted,
        run.duplicates,
        run.errors,
        run.elapsed.as_secs_f64(),
        stats.batches_total
    );
    println!(
        "ack latency per call of {} signatures: p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs; {:.0} bytes written per accepted signature",
        traffic.batch,
        p50,
        p99,
        run.latency_us.value_at_quantile(0.999),
        run.latency_us.max(),
        bytes_per_sig
    );
    if rate > 0 {
        println!(
            "  of which inside the engine call (submit to return): p50 {} µs, p99 {} µs, max {} µs; the rest is the load thread waking late or still busy with its previous call ({} of {} calls were due before their thread was free)",
            run.call_us.value_at_quantile(0.50),
            run.call_us.value_at_quantile(0.99),
            run.call_us.max(),
            run.late_calls,
            run.latency_us.len()
        );
    }
    let writes_over_1ms = count_above(&stats.write_latency, 0.001);
    let write_p50_ms = quantile_bound(&stats.write_latency, 0.50) * 1e3;
    let write_p99_ms = quantile_bound(&stats.write_latency, 0.99) * 1e3;
    let write_max_ms = quantile_bound(&stats.write_latency, 1.0) * 1e3;
    let late = &run.wake_late_us;
    println!(
        "store write + sync per batch, until published: p50 ≤ {write_p50_ms} ms, p99 ≤ {write_p99_ms} ms, {writes_over_1ms} of {} over 1 ms, max ≤ {write_max_ms} ms; a 1 ms sleep woke late by p50 {} µs, p99 {} µs, max {} µs (scheduling delay on this machine during the run)",
        stats.write_latency.count(),
        late.value_at_quantile(0.50),
        late.value_at_quantile(0.99),
        late.max()
    );
    let rss = process::rss_bytes();
    let memory = Memory::of(&stats, rss);
    memory.print();
    engine.close()?;
    let stalls = if rate > 0 {
        // RocksDB's LOG is complete once the engine has closed.
        let jobs = stalls::rocksdb_jobs(&data_dir).context("reading RocksDB's LOG")?;
        report_stalls(
            run.slow_calls,
            run.slow_calls_dropped,
            &jobs,
            &run.late_wakes,
            run.epoch_unix_us,
            pacing.stall_threshold,
        )
    } else {
        serde_json::Value::Null
    };
    let (countries, hot_countries) = traffic.countries_json();
    let report = json!({
        "mode": "durable",
        "durability": durability.as_str(),
        "shape": traffic.shape.to_string(),
        "hot_share": traffic.hot_share,
        "dup_ratio": traffic.dup_ratio,
        "threads": traffic.threads,
        "batch": traffic.batch,
        "rate": rate,
        "petitions": traffic.petitions,
        "signatures": traffic.signatures,
        "accepted": run.accepted,
        "duplicates": run.duplicates,
        "refused": run.errors,
        "ip_rate_limited": run.limited,
        "elapsed_s": run.elapsed.as_secs_f64(),
        "signatures_per_sec": per_sec,
        "input": input.describe(),
        "ack_latency_us_p50": p50,
        "ack_latency_us_p90": run.latency_us.value_at_quantile(0.90),
        "ack_latency_us_p99": p99,
        "ack_latency_us_p999": run.latency_us.value_at_quantile(0.999),
        "ack_latency_us_max": run.latency_us.max(),
        "call_latency_us_p50": run.call_us.value_at_quantile(0.50),
        "call_latency_us_p99": run.call_us.value_at_quantile(0.99),
        "call_latency_us_max": run.call_us.max(),
        "calls_due_before_thread_free": run.late_calls,
        "batches": stats.batches_total,
        "store_write_ms_p50_at_most": write_p50_ms,
        "store_writes": stats.write_latency.count(),
        "store_writes_over_1ms": writes_over_1ms,
        "store_write_ms_p99_at_most": write_p99_ms,
        "store_write_ms_max_at_most": write_max_ms,
        "wake_late_us_p50": late.value_at_quantile(0.50),
        "wake_late_us_p99": late.value_at_quantile(0.99),
        "wake_late_us_max": late.max(),
        "stalls": stalls,
        "bytes_written": written,
        "bytes_written_per_signature": bytes_per_sig,
        "countries": countries,
        "hot_countries": hot_countries,
        "index_bytes": stats.index_bytes,
        "counts_bytes": stats.counts_bytes,
        "breakdown_bytes": stats.breakdown_bytes,
        "breakdown_bytes_per_signature": memory.per_signature(stats.breakdown_bytes),
        "index_counts_breakdowns_bytes_per_signature":
            memory.per_signature(memory.with_breakdowns()),
        "rss_bytes": rss,
        "disk_fsync_us_p50": probe.as_ref().map(|p| p.fsync_us_p50),
        "disk_fsync_us_p99": probe.as_ref().map(|p| p.fsync_us_p99),
        "disk_sequential_mb_per_s": probe.as_ref().map(|p| p.sequential_mb_per_s),
        "machine": process::machine(),
    });
    write_json(traffic.json.as_ref(), &report)
}

/// How many observations exceeded `seconds`, which must be one of the histogram's bucket bounds.
fn count_above(histogram: &engine::HistogramSnapshot, seconds: f64) -> u64 {
    let at_most = histogram
        .bounds_seconds
        .iter()
        .position(|&bound| bound >= seconds)
        .map_or(histogram.count(), |i| histogram.cumulative_counts[i]);
    histogram.count() - at_most
}

/// The upper bound of the histogram bucket holding quantile `q` (infinity past the last bound).
fn quantile_bound(histogram: &engine::HistogramSnapshot, q: f64) -> f64 {
    let total = histogram.count();
    let rank = (total as f64 * q).ceil() as u64;
    histogram
        .cumulative_counts
        .iter()
        .position(|&c| c >= rank.max(1))
        .and_then(|i| histogram.bounds_seconds.get(i).copied())
        .unwrap_or(f64::INFINITY)
}

/// A fresh data dir for a run, or an error if it holds anything.
fn fresh_dir(data_dir: &Path) -> Result<()> {
    if data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
        bail!(
            "{} is not empty: this mode wants a fresh data dir",
            data_dir.display()
        );
    }
    std::fs::create_dir_all(data_dir)?;
    Ok(())
}

fn lifecycle_mode(
    signatures: u64,
    petitions: u32,
    threads: usize,
    batch: usize,
    in_order: bool,
    data_dir: &Path,
    json: Option<PathBuf>,
) -> Result<()> {
    fresh_dir(data_dir)?;
    println!(
        "engine-bench lifecycle: {signatures} pending signatures to {petitions} petitions that validate by email, then their validations ({}), {threads} threads × batch {batch}, durability sync, {}",
        if in_order { "in signing order" } else { "shuffled" },
        process::machine()
    );
    let mut config = Config::persistent(data_dir);
    config.signatures_expected = signatures;
    let engine = Engine::open(config)?;
    engine.wait_ready().map_err(anyhow::Error::msg)?;
    benches::lifecycle::register(&engine, petitions, engine::Validation::Email)?;
    let (tokens, signing) =
        benches::lifecycle::sign_pending(&engine, signatures, petitions, threads, batch)?;
    println!(
        "pending: {:.0} signatures/s ({} in {:.2} s); per call p50 {} µs, p99 {} µs",
        signing.per_sec(signatures),
        tokens.len(),
        signing.elapsed.as_secs_f64(),
        signing.latency_us.value_at_quantile(0.5),
        signing.latency_us.value_at_quantile(0.99)
    );
    let (validated, validating) =
        benches::lifecycle::validate_all(&engine, tokens, threads, batch, in_order, 1)?;
    let counted: u64 = (0..petitions)
        .map(|n| engine.count(&Workload::petition_id(n)).unwrap_or(0))
        .sum();
    if validated != signatures || counted != signatures {
        bail!("{validated} validated and {counted} counted of {signatures}");
    }
    println!(
        "validations: {:.0}/s ({} in {:.2} s); per call p50 {} µs, p99 {} µs; counted {counted}",
        validating.per_sec(validated),
        validated,
        validating.elapsed.as_secs_f64(),
        validating.latency_us.value_at_quantile(0.5),
        validating.latency_us.value_at_quantile(0.99)
    );
    let rss = process::rss_bytes();
    let stats = engine.stats();
    engine.close()?;
    let report = json!({
        "mode": "lifecycle",
        "signatures": signatures,
        "petitions": petitions,
        "threads": threads,
        "batch": batch,
        "validation_order": if in_order { "signing" } else { "shuffled" },
        "pending_per_sec": signing.per_sec(signatures),
        "pending_elapsed_s": signing.elapsed.as_secs_f64(),
        "validations_per_sec": validating.per_sec(validated),
        "validations_elapsed_s": validating.elapsed.as_secs_f64(),
        "validation_call_us_p50": validating.latency_us.value_at_quantile(0.5),
        "validation_call_us_p99": validating.latency_us.value_at_quantile(0.99),
        "index_bytes": stats.index_bytes,
        "rss_bytes": rss,
        "machine": process::machine(),
    });
    write_json(json.as_ref(), &report)
}

struct InvalidateArgs {
    signatures: u64,
    every: u64,
    petitions: u32,
    threads: usize,
    batch: usize,
    rate: u64,
    step: usize,
}

fn invalidate_mode(args: &InvalidateArgs, data_dir: &Path, json: Option<PathBuf>) -> Result<()> {
    if args.petitions < 2 || args.every == 0 {
        bail!("--petitions must be at least 2 and --every positive");
    }
    fresh_dir(data_dir)?;
    println!(
        "engine-bench invalidate: {} signatures over {} petitions, p0 holding one in {}; then the job on p0 under {} signatures/s of ingestion, {} threads × batch {}, step {}, durability sync, {}",
        args.signatures,
        args.petitions,
        args.every,
        args.rate,
        args.threads,
        args.batch,
        args.step,
        process::machine()
    );
    let mut config = Config::persistent(data_dir);
    config.signatures_expected = args.signatures * 2;
    config.invalidation_step = args.step;
    let engine = Engine::open(config)?;
    engine.wait_ready().map_err(anyhow::Error::msg)?;
    benches::lifecycle::register(&engine, args.petitions, engine::Validation::None)?;
    let filled = benches::lifecycle::fill(
        &engine,
        args.signatures,
        args.petitions,
        args.every,
        args.threads,
        args.batch,
    )?;
    let target = engine.count(&Workload::petition_id(0)).unwrap_or(0);
    println!(
        "filled: {} signatures in {:.2} s ({:.0}/s); p0 holds {target}",
        args.signatures,
        filled.elapsed.as_secs_f64(),
        filled.per_sec(args.signatures)
    );
    let request = benches::lifecycle::criteria();
    let mut previews = Vec::new();
    let mut matching = 0;
    for _ in 0..3 {
        let started = Instant::now();
        matching = engine
            .preview_invalidation(&request)
            .map_err(anyhow::Error::msg)?;
        previews.push(started.elapsed().as_secs_f64());
    }
    println!(
        "preview of p0 (email_domain d3.example): {matching} matching of {target}; {:.3} s, {:.3} s, {:.3} s",
        previews[0], previews[1], previews[2]
    );
    let (job, job_elapsed, ingestion) = benches::lifecycle::job_under_load(
        &engine,
        args.petitions,
        args.rate,
        args.threads,
        args.batch,
    )?;
    let scan_rate = job.scanned as f64 / job_elapsed.as_secs_f64();
    let ingest_rate = ingestion.accepted as f64 / ingestion.elapsed.as_secs_f64();
    println!(
        "job: {} scanned, {} matched, {} invalidated in {:.2} s: {scan_rate:.0} signatures scanned/s ({})",
        job.scanned,
        job.matched,
        job.invalidated,
        job_elapsed.as_secs_f64(),
        job.state.as_str()
    );
    println!(
        "ingestion meanwhile: {ingest_rate:.0} signatures/s of {} asked ({} accepted in {:.2} s); ack latency per call of {} from its due time p50 {} µs, p99 {} µs, max {} µs; {} calls due before their thread was free",
        args.rate,
        ingestion.accepted,
        ingestion.elapsed.as_secs_f64(),
        args.batch,
        ingestion.latency_us.value_at_quantile(0.5),
        ingestion.latency_us.value_at_quantile(0.99),
        ingestion.latency_us.max(),
        ingestion.late_calls
    );
    let after = engine.count(&Workload::petition_id(0)).unwrap_or(0);
    if job.state != engine::JobState::Completed
        || job.invalidated != matching
        || after != target - matching
    {
        bail!("the job did not invalidate exactly the matching signatures: {job:?}, count {after}");
    }
    engine.close()?;
    let report = json!({
        "mode": "invalidate",
        "signatures": args.signatures,
        "petitions": args.petitions,
        "every": args.every,
        "target_signatures": target,
        "matching": matching,
        "fill_per_sec": filled.per_sec(args.signatures),
        "preview_s": previews,
        "job_elapsed_s": job_elapsed.as_secs_f64(),
        "job_scanned": job.scanned,
        "job_invalidated": job.invalidated,
        "job_scanned_per_sec": scan_rate,
        "ingest_rate_asked": args.rate,
        "ingest_per_sec": ingest_rate,
        "ingest_ack_us_p50": ingestion.latency_us.value_at_quantile(0.5),
        "ingest_ack_us_p99": ingestion.latency_us.value_at_quantile(0.99),
        "ingest_ack_us_max": ingestion.latency_us.max(),
        "ingest_late_calls": ingestion.late_calls,
        "step": args.step,
        "machine": process::machine(),
    });
    write_json(json.as_ref(), &report)
}

fn recover(data_dir: PathBuf, json: Option<PathBuf>) -> Result<()> {
    if !data_dir.is_dir() {
        bail!("{} is not a data directory", data_dir.display());
    }
    let started = Instant::now();
    let engine = Engine::open(Config::persistent(&data_dir))?;
    let counts_at = started.elapsed();
    engine.wait_ready().map_err(anyhow::Error::msg)?;
    let ready_at = started.elapsed();
    let stats = engine.stats();
    let rss = process::rss_bytes();
    let index_from = match stats.recovery_index_from {
        Some(mark) => format!(
            "the saved index at mark {mark}, then {} signatures read back",
            stats.recovery_expected
        ),
        None => "the stored fingerprints".to_owned(),
    };
    println!(
        "recovered {} signatures over {} petitions: counts served after {:.3} s, ready after {:.3} s (index from {index_from}); index {:.2} bytes/signature; RSS {} MiB",
        stats.signatures,
        stats.petitions,
        counts_at.as_secs_f64(),
        ready_at.as_secs_f64(),
        stats.index_bytes as f64 / stats.signatures.max(1) as f64,
        rss >> 20
    );
    let closing = Instant::now();
    engine.close()?;
    let closed_s = closing.elapsed().as_secs_f64();
    // The close saves the index unless the file it loaded already holds every signature.
    println!("closed after {closed_s:.3} s");
    let report = json!({
        "mode": "recover",
        "signatures": stats.signatures,
        "petitions": stats.petitions,
        "counts_available_s": counts_at.as_secs_f64(),
        "time_to_ready_s": ready_at.as_secs_f64(),
        "index_from": index_from,
        "close_s": closed_s,
        "index_bytes": stats.index_bytes,
        "rss_bytes": rss,
        "machine": process::machine(),
    });
    write_json(json.as_ref(), &report)
}

fn write_json(path: Option<&PathBuf>, report: &serde_json::Value) -> Result<()> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_quantiles_read_the_buckets() {
        // Observations: one ≤ 1 ms, two in (1, 2] ms, one above 2 ms.
        let histogram = engine::HistogramSnapshot {
            bounds_seconds: vec![0.001, 0.002],
            cumulative_counts: vec![1, 3, 4],
            sum_seconds: 0.0,
        };
        assert_eq!(count_above(&histogram, 0.001), 3);
        assert_eq!(count_above(&histogram, 0.002), 1);
        assert_eq!(quantile_bound(&histogram, 0.25), 0.001);
        assert_eq!(quantile_bound(&histogram, 0.5), 0.002);
        assert_eq!(quantile_bound(&histogram, 1.0), f64::INFINITY);
    }
}
