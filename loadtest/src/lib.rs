//! `loadtest`: the load generator and ack-ledger verifier for ingest-server.
//!
//! It speaks HTTP only (never links the engine), in the vocabulary of wrk2 and oha. Layout:
//!
//! - `cli`: flags and their checks;
//! - `shape`: which petition each signature goes to (uniform, zipf, viral) and who signs it;
//! - `countries`: with `--countries`, the country and region each signer carries, and the
//!   server's breakdown of a count by country (read by the report and checked by `verify`);
//! - `ips`: with `--ips`, the source address each signer carries, and with `--abusers` the
//!   abuse mix (a share of the signers from a few addresses of their own) and the outcomes
//!   counted per group, which the report splits;
//! - `run`: petition registration, the connection tasks, open- and closed-loop pacing, progress,
//!   and with `--validate-share` the second phase that validates the tokens kept;
//! - `outcome`: reading the server's answers into outcomes and ledger classes;
//! - `token`: a pending signature's validation token (kept as 36 bytes) and its RFC 3339 expiry;
//! - `kept`: which tokens phase 1 keeps for phase 2 (seeded), and the bound on how many;
//! - `stats`: per-connection HdrHistograms and counters, merged into live totals;
//! - `events`: with `--sse-readers` and `--webhook`, the threshold crossings the load
//!   acknowledges, the event-stream readers and the webhook receiver that see their events,
//!   and the latencies between the two; `events::sse` is the readers' `text/event-stream`
//!   parser;
//! - `schedule`: when each open-loop request is due, at `-R` or in `--stages`;
//! - `timeline`: the per-second rows of the report and `--timeline`, kept in bounded memory;
//! - `report`: the final table and JSON;
//! - `plot`: `loadtest plot`, a JSON report drawn as one self-contained HTML page;
//! - `hgrm`: `--hgrm`, the latency histogram in HdrHistogram's percentile distribution format;
//! - `criteria`: the pass criteria (`--max-p99`, `--max-error-rate`) and the exit code of a run
//!   that fails one;
//! - `ledger`: the ack ledger file (writer thread, reader);
//! - `verify`: checks a ledger against the server's counts and re-sends a sample;
//! - `wire`: the load path's HTTP/1.1 client: requests written as bytes, answers parsed with
//!   `httparse` (hyper's client cost 2–3 µs of CPU per request; see README "Keeping up");
//! - `client`: a plain keep-alive hyper client for registration and verification.
//!
//! The binary's `main` only parses flags, builds the runtime and calls [`run_command`],
//! [`verify_command`] or [`plot_command`].

pub mod cli;
pub mod client;
pub mod countries;
pub mod criteria;
pub mod events;
pub mod hgrm;
pub mod ips;
pub mod kept;
pub mod ledger;
pub mod outcome;
pub mod plot;
pub mod report;
pub mod run;
pub mod schedule;
pub mod shape;
pub mod stats;
pub mod timeline;
pub mod token;
pub mod verify;
pub mod wire;

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cli::{RunArgs, VerifyArgs};

/// Connections `--durability-check` uses to verify.
const DURABILITY_CHECK_CONNECTIONS_MAX: u32 = 8;

/// Acknowledged signers `--durability-check` re-sends.
const DURABILITY_CHECK_SAMPLE: usize = 1000;

/// How a finished `loadtest run` went, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Everything checked passed (exit 0).
    Passed,
    /// `--durability-check` failed (exit 1); this wins over failed criteria.
    DurabilityFailed,
    /// A pass criterion failed (exit [`criteria::EXIT_CRITERIA_FAILED`]).
    CriteriaFailed,
}

/// `loadtest run`: runs the load, prints the table (and JSON), and with `--durability-check`
/// verifies the ledger. With `--json -` the JSON alone goes to stdout, so that it can be piped,
/// and the table and the verdict go to stderr. The report is printed and written in full
/// whatever the verdict.
pub async fn run_command(args: RunArgs, progress: bool) -> Result<RunStatus> {
    let mut args = args.resolved();
    let seed = args.seed.unwrap_or_else(run::default_seed);
    let temporary_ledger = if args.durability_check && args.ledger.is_none() {
        let path =
            std::env::temp_dir().join(format!("loadtest-{seed}-{}.ledger", std::process::id()));
        args.ledger = Some(path.clone());
        Some(path)
    } else {
        None
    };
    eprintln!(
        "loadtest: {} for {} with {} connections, {}, seed {seed}",
        args.target.url,
        humantime::format_duration(args.duration),
        args.connections,
        match (&args.stages, args.rate) {
            (Some(stages), _) => format!("open loop in stages {}", stages.spec),
            (None, Some(rate)) => format!("open loop at {rate}/s"),
            (None, None) => "closed loop".to_owned(),
        },
    );
    if !args.get {
        eprintln!("loadtest: {}", run::describe_shape(&args, seed));
    }
    if let Some(countries) = &args.countries {
        eprintln!("loadtest: countries {}", countries.describe());
    }
    if let Some(ips) = ips::Ips::from_flags(args.ips, args.abusers, args.abuse_share)
        .map_err(anyhow::Error::msg)?
    {
        eprintln!("loadtest: sources {}", ips.describe());
    }
    let report = run::execute(&args, seed, progress).await?;
    let json_to_stdout = args
        .json
        .as_ref()
        .is_some_and(|path| path.as_os_str() == "-");
    let show = |text: &str| {
        if json_to_stdout {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    };
    show(&report.table());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).context("encoding the JSON report")?;
        if json_to_stdout {
            println!("{json}");
        } else {
            std::fs::write(path, json + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some(path) = &args.timeline {
        let mut lines = String::new();
        for row in &report.timeline {
            lines.push_str(&serde_json::to_string(row).context("encoding the timeline")?);
            lines.push('\n');
        }
        std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.hgrm {
        std::fs::write(path, hgrm::percentile_distribution(&report.histogram))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.ledger {
        if temporary_ledger.is_none() {
            eprintln!("loadtest: ledger written to {}", path.display());
        }
    }
    if let Some(hint) = unauthorized_hint(&args, &report.outcomes) {
        eprintln!("loadtest: {hint}");
    }
    let criteria_passed = match &report.criteria {
        Some(criteria) => {
            for failure in criteria.failures() {
                eprintln!("loadtest: {failure}");
            }
            criteria.passed
        }
        None => true,
    };
    let criteria_status = if criteria_passed {
        RunStatus::Passed
    } else {
        RunStatus::CriteriaFailed
    };
    if !args.durability_check {
        return Ok(criteria_status);
    }
    let ledger: PathBuf = args
        .ledger
        .clone()
        .context("the durability check needs a ledger")?;
    let verify_args = VerifyArgs {
        target: args.target.clone(),
        ledger,
        api_key: args.api_key.clone(),
        sample: DURABILITY_CHECK_SAMPLE,
        no_resend: args.api_key.is_none(),
        connections: args.connections.min(DURABILITY_CHECK_CONNECTIONS_MAX),
        seed,
        timeout: args.timeout,
    };
    let verdict = verify::verify(&verify_args).await?;
    show(&verdict.render());
    if let Some(path) = temporary_ledger {
        if verdict.passed() {
            let _ = std::fs::remove_file(&path);
        } else {
            eprintln!("loadtest: ledger kept at {}", path.display());
        }
    }
    Ok(if verdict.passed() {
        criteria_status
    } else {
        RunStatus::DurabilityFailed
    })
}

/// When the server answered 401 to signatures: a sentence saying that a key is needed (none
/// was given) or that the one given was refused.
pub fn unauthorized_hint(args: &RunArgs, outcomes: &stats::Counts) -> Option<String> {
    let refused = ["unauthorized", "http_401"]
        .iter()
        .filter_map(|code| outcomes.rejected.get(*code))
        .sum::<u64>();
    if refused == 0 {
        return None;
    }
    Some(match &args.api_key {
        None => format!(
            "the server answered 401 unauthorized to {refused} signatures: it needs a key; \
             pass --api-key (or LOADTEST_API_KEY)"
        ),
        Some(_) => format!(
            "the server answered 401 unauthorized to {refused} signatures: it does not \
             accept the --api-key given"
        ),
    })
}

/// `loadtest plot`: writes the page and says where.
pub fn plot_command(args: &cli::PlotArgs) -> Result<()> {
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| args.report.with_extension("html"));
    plot::plot(&args.report, &output)?;
    eprintln!("loadtest: plot written to {}", output.display());
    Ok(())
}

/// `loadtest verify`: prints the verdict; returns whether it passed.
pub async fn verify_command(args: VerifyArgs) -> Result<bool> {
    let verdict = verify::verify(&args).await?;
    print!("{}", verdict.render());
    Ok(verdict.passed())
}
