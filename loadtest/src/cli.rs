//! Command-line flags, in the vocabulary of wrk2 and oha (`-c`, `-z`, `-R`, `--json`).
//!
//! Everything a flag can get wrong is rejected here, with a sentence that says what is wrong, so
//! that `run` and `verify` only ever see values they can use.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hyper::header::HeaderValue;

use crate::countries::Countries;
use crate::criteria::Criteria;
use crate::schedule::Stages;

/// `loadtest`: load generator and ack-ledger verifier for ingest-server.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The jobs of the binary.
// Built once per process, from the command line: the size of its largest variant is of no
// consequence, and boxing it would only burden its users.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send signatures (or plain GETs) at a target and report rate, latency and outcomes.
    Run(RunArgs),
    /// Check a ledger written by `run --ledger` against the server's counts.
    Verify(VerifyArgs),
    /// Draw a run's JSON report (`run --json`) as one self-contained HTML page: latency
    /// percentiles and rates second by second, and the latency percentile distribution.
    Plot(PlotArgs),
}

/// Flags of `loadtest plot`.
#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// The JSON report of a run (`loadtest run --json RUN.json`).
    #[arg(value_name = "RUN.json")]
    pub report: PathBuf,

    /// The HTML page to write [default: the report's path with .html].
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// How signatures are spread over the petitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShapeKind {
    /// Every petition equally likely.
    Uniform,
    /// Zipf-distributed over all petitions (petition 0 the most popular).
    Zipf,
    /// Petition 0 goes viral: its share ramps from 1/petitions to `--hot-share` over `--ramp`.
    Viral,
}

/// Flags of `loadtest run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Base URL of the server, e.g. http://127.0.0.1:8080 (with --get: the URL to GET).
    #[arg(long, env = "LOADTEST_TARGET", value_parser = parse_target)]
    pub target: Target,

    /// Key sent as `Authorization: Bearer KEY` with every signature (role ingest or admin).
    /// Without it (a server with keys off), no `Authorization` header is sent; a server that
    /// wants one answers 401, and the run says a key is needed.
    #[arg(long, env = "LOADTEST_API_KEY")]
    pub api_key: Option<String>,

    /// Key used to register the petitions (role admin) [default: --api-key; without either,
    /// petitions are registered without a key].
    #[arg(long, env = "LOADTEST_ADMIN_KEY")]
    pub admin_key: Option<String>,

    /// Connections kept open (keep-alive), one task each.
    #[arg(short = 'c', long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,

    /// How long to send, e.g. 30s, 2m, 1m30s. It bounds the run: after it, only the answers
    /// outstanding are awaited (up to --timeout); with -R, requests still unsent are reported
    /// as not sent.
    #[arg(short = 'z', long, default_value = "10s", value_parser = parse_duration_positive)]
    pub duration: Duration,

    /// Open loop: total signatures per second, sent on a fixed schedule; latency counts from the
    /// intended send time. Without it: closed loop, each connection sends as fast as answered.
    #[arg(short = 'R', long, value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Open loop in stages, as k6's ramping arrival rate: DURATION:RATE,... (e.g.
    /// 30s:1000,1m:20000,30s:0), each stage ramping the rate linearly from the previous stage's
    /// RATE (0 before the first) to its own over its DURATION; RATE is signatures per second, 0
    /// or more. The run lasts the stages' sum, so -z and -R are refused with it (and
    /// --validate-share, whose second phase is paced at -R).
    #[arg(long, value_name = "STAGES", value_parser = Stages::parse, conflicts_with_all = ["rate", "duration", "validate_share"])]
    pub stages: Option<Stages>,

    /// Number of petitions to register and sign (ids `lt-<seed>-<i>`).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub petitions: u32,

    /// How signatures are spread over the petitions.
    #[arg(long, value_enum, default_value_t = ShapeKind::Uniform)]
    pub shape: ShapeKind,

    /// Viral shape: the share of signatures the hot petition reaches at the peak.
    #[arg(long, default_value_t = 0.9, value_parser = parse_fraction)]
    pub hot_share: f64,

    /// Viral shape: how long the hot petition takes to ramp from its base share to the peak
    /// [default: a quarter of --duration].
    #[arg(long, value_parser = parse_duration)]
    pub ramp: Option<Duration>,

    /// Zipf shape: the exponent s (weight of petition i is 1/(i+1)^s).
    #[arg(long, default_value_t = 1.0, value_parser = parse_zipf_exponent)]
    pub zipf_exponent: f64,

    /// Share of signatures that re-send an already acknowledged signer (the server should answer
    /// duplicate).
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub dup_ratio: f64,

    /// Give signatures a country, and some a region: SPEC is CODE:SHARE[:REGIONS],...
    /// (e.g. GB:0.9:650,US:0.05,FR:0.05) or uniform:N (the first N of a fixed list of the 249
    /// assigned codes, starting GB, US, FR, DE, CA, AU; equally likely). Codes are ISO 3166-1
    /// alpha-2 (GB, not UK); shares are more than 0 and add up to at most 1, the rest of the
    /// signatures carrying no country; with REGIONS (1 to 100000) a country's signatures carry
    /// a region R1..RN, equally likely. Chosen from --seed and the signer, so a re-sent signer
    /// carries the same. After the load, the report shows the server's breakdown by country of
    /// the petition with the most signatures counted. Without it every signature carries
    /// "country":"GB".
    #[arg(long, value_name = "SPEC", value_parser = Countries::parse)]
    pub countries: Option<Countries>,

    /// Give every signature its signer's source address ("ip"): one of N IPv4 addresses,
    /// 10.0.0.1, 10.0.0.2, ... (N from 1 to 16777214, all in 10.0.0.0/8), chosen from --seed
    /// and the signer, so a re-sent signer comes from the same address. The server limits
    /// signatures per (petition, address), by default 1 in 60 s and 5 in 300 s: for ordinary
    /// signers to stay under that, N × --petitions must be well above 60 × the signatures per
    /// second. A 429 ip_rate_limited or 403 blocked answer is counted as a final refusal (not
    /// retried, not acknowledged, not an error). Without it no signature carries an address.
    #[arg(long, value_name = "N", value_parser = crate::ips::parse_ips)]
    pub ips: Option<u32>,

    /// An abuse mix: K more addresses, 198.18.0.1, 198.18.0.2, ... (K from 1 to 131070, all in
    /// 198.18.0.0/15, so none is one of the --ips addresses and one block list entry covers
    /// them all), send --abuse-share of the signatures; the rest come from the --ips
    /// addresses. Chosen per signer from --seed, as --ips is. The report then splits the
    /// outcomes by group, abusers and everyone else: signatures sent, accepted (duplicates and
    /// pending included), limited (429 ip_rate_limited), blocked (403). Needs --ips and
    /// --abuse-share.
    #[arg(long, value_name = "K", value_parser = crate::ips::parse_abusers, requires_all = ["ips", "abuse_share"])]
    pub abusers: Option<u32>,

    /// With --abusers: the share F of the signers, more than 0 and less than 1, whose
    /// signatures come from the abusers' addresses. A --dup-ratio re-send comes from its
    /// signer's address, so the abusers' share of all signatures is F without --dup-ratio, and
    /// lower with it (their signers, mostly refused, are seldom re-sent).
    #[arg(long, value_name = "F", value_parser = crate::ips::parse_abuse_share, requires = "abusers")]
    pub abuse_share: Option<f64>,

    /// Use the NDJSON batch endpoint with this many signatures per request (-R stays in
    /// signatures per second).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: Option<u32>,

    /// Two-phase load with email validation: register the petitions with
    /// `"validation":"email"`, keep the token of each new signer's pending answer with
    /// probability F (more than 0, at most 1; chosen from --seed), then validate the kept tokens
    /// over the same connections, in the same way (single or --batch) and at the same -R (in
    /// validations per second), each phase bounded by -z. At most 4,194,304 tokens are kept.
    #[arg(long, value_name = "F", value_parser = parse_share)]
    pub validate_share: Option<f64>,

    /// Register each petition with the thresholds K, 2K, ..., 32K (the server's most) instead of
    /// the server's defaults, so that crossings happen all through a run. With --no-register:
    /// the step the petitions were registered with.
    #[arg(long, value_name = "K", value_parser = parse_threshold_step)]
    pub threshold_step: Option<u64>,

    /// Before the load, open N event streams (`GET /v1/events/stream`, Server-Sent Events) and
    /// measure how long each threshold crossing takes from the answer that acknowledged it to
    /// its event reaching every reader. 0: none; at most 20000 (each is a socket: mind
    /// `ulimit -n`).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=i64::from(crate::events::SSE_READERS_MAX)))]
    pub sse_readers: u32,

    /// Receive threshold crossings as webhook deliveries: listen on 127.0.0.1 (so the server
    /// must run on this machine, started with `--webhook-allow-networks 127.0.0.0/8`), register
    /// webhook `loadtest-<seed>` for `threshold_crossed` with the admin key, measure
    /// acknowledgement-to-delivery latency, and delete the webhook at the end.
    #[arg(long)]
    pub webhook: bool,

    /// After the run, verify the ledger against the server (as `loadtest verify` does) and exit 1
    /// if anything acknowledged is not counted. Uses --ledger, or a temporary ledger.
    #[arg(long)]
    pub durability_check: bool,

    /// Write every signature (and validation) sent and its outcome to FILE (TSV; see README).
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,

    /// Pass criterion: the run fails (exit 3, after its full report) if the corrected p99 of
    /// its requests (the report's p99: from the intended send time with -R) is above LATENCY,
    /// a number with a unit: 10ms, 2.5ms, 500us, 1s. Judges phase 1 only.
    #[arg(long, value_name = "LATENCY", value_parser = crate::criteria::parse_latency_limit)]
    pub max_p99: Option<Duration>,

    /// Pass criterion: the run fails (exit 3, after its full report) if its error rate is above
    /// RATE, a percentage (0.1%) or a fraction (0.001). Errors: 4xx (but 429 ip_rate_limited
    /// and 403 blocked), 429 rate_limited, 503 and other 5xx, answers outside the contract,
    /// timeouts, connection errors and failed connects; over the signatures (or GETs) sent plus
    /// the failed connects. Judges phase 1 only.
    #[arg(long, value_name = "RATE", value_parser = crate::criteria::parse_error_rate)]
    pub max_error_rate: Option<f64>,

    /// Write the histogram of the corrected latencies (the report's, of phase 1) to FILE in
    /// HdrHistogram's percentile distribution format (.hgrm, values in milliseconds), which
    /// HdrHistogram's plotter reads.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,

    /// Write the per-second timeline to FILE as NDJSON, one line per second of the run (phase
    /// 1): signatures sent and answered, answers by outcome class, errors, achieved and target
    /// rates, and the corrected p50/p90/p99/max latency of the requests answered in it. The
    /// JSON report carries the same rows (`timeline`).
    #[arg(long, value_name = "FILE")]
    pub timeline: Option<PathBuf>,

    /// Write the final report as JSON to FILE (`-` for stdout, the table then goes to stderr;
    /// schema in README).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Seed of the petition ids, signer emails and random choices [default: random, printed].
    #[arg(long)]
    pub seed: Option<u64>,

    /// A request not answered within this time counts as a timeout (indeterminate).
    #[arg(long, default_value = "10s", value_parser = parse_duration_positive)]
    pub timeout: Duration,

    /// Skip registering the petitions (they must exist already, e.g. from a run with the same
    /// --seed and --petitions).
    #[arg(long)]
    pub no_register: bool,

    /// Send plain `GET <target URL>` requests instead of signatures: no registration, no ledger,
    /// no key needed. For measuring the load generator itself against a hello-world (compare
    /// with `wrk`).
    #[arg(long, conflicts_with_all = ["batch", "ledger", "durability_check", "no_register", "validate_share", "threshold_step", "sse_readers", "webhook", "countries", "ips", "abusers", "abuse_share"])]
    pub get: bool,

    /// Worker threads of the runtime [default: number of CPUs].
    #[arg(short = 't', long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,

    /// No live progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl RunArgs {
    /// The flags as the run uses them: with `--stages`, the duration is the stages' sum.
    pub fn resolved(&self) -> RunArgs {
        let mut args = self.clone();
        if let Some(stages) = &self.stages {
            args.duration = stages.duration();
        }
        args
    }

    /// The pass criteria given.
    pub fn criteria(&self) -> Criteria {
        Criteria {
            max_p99: self.max_p99,
            max_error_rate: self.max_error_rate,
        }
    }
}

/// Flags of `loadtest verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Base URL of the server, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "LOADTEST_TARGET", value_parser = parse_target)]
    pub target: Target,

    /// Ledger written by `loadtest run --ledger`.
    #[arg(long, value_name = "FILE")]
    pub ledger: PathBuf,

    /// Key used to re-send the sampled signers (needed unless --sample 0).
    #[arg(long, env = "LOADTEST_API_KEY", required_unless_present = "no_resend")]
    pub api_key: Option<String>,

    /// How many acknowledged signers to re-send (each must come back duplicate).
    #[arg(long, default_value_t = 1000)]
    pub sample: usize,

    /// Do not re-send anything (only compare counts); no key needed.
    #[arg(long)]
    pub no_resend: bool,

    /// Connections used to read counts and re-send.
    #[arg(short = 'c', long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub connections: u32,

    /// Seed of the sample of signers to re-send.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// A request not answered within this time is retried, then reported.
    #[arg(long, default_value = "10s", value_parser = parse_duration_positive)]
    pub timeout: Duration,
}

/// Where to send: a resolved socket address plus what goes in the request line and `Host`.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// The address connected to (the first one the host name resolves to).
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host: HeaderValue,
    /// The path of the URL without a trailing `/` (empty for the root): the API paths go below it.
    pub base_path: String,
    /// The path and query of the URL as given (`/` if none): what `--get` requests.
    pub path_and_query: String,
}

/// Parses `http://host[:port][/path]`; https is refused (the load generator speaks plain HTTP/1.1).
pub fn parse_target(text: &str) -> Result<Target, String> {
    let uri: hyper::Uri = text
        .parse()
        .map_err(|e| format!("not a URL ({e}); expected e.g. http://127.0.0.1:8080"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err("https is not supported; use http://".to_owned()),
        Some(other) => return Err(format!("unsupported scheme {other:?}; use http://")),
        None => return Err("missing scheme; expected e.g. http://127.0.0.1:8080".to_owned()),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| "missing host; expected e.g. http://127.0.0.1:8080".to_owned())?;
    let port = authority.port_u16().unwrap_or(80);
    let host_name = authority.host();
    // Brackets of an IPv6 literal are part of the authority but not of the address.
    let bare = host_name.trim_start_matches('[').trim_end_matches(']');
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(bare, port))
        .map_err(|e| format!("cannot resolve {host_name}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host_name} resolves to no address"))?;
    let host = HeaderValue::from_str(authority.as_str())
        .map_err(|e| format!("bad host {authority}: {e}"))?;
    let path = uri.path();
    let base_path = path.trim_end_matches('/').to_owned();
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    Ok(Target {
        url: text.to_owned(),
        addr,
        host,
        base_path,
        path_and_query,
    })
}

/// Parses a duration such as `30s`, `2m`, `1m30s`, `500ms` (humantime syntax; a bare number is
/// seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 {
            return Ok(Duration::from_secs_f64(seconds));
        }
        return Err(format!("{text:?} is not a duration"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}); expected e.g. 30s, 2m, 500ms"))
}

fn parse_duration_positive(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    Ok(duration)
}

/// Parses a rate in signatures per second: a positive finite number (`5000`, `2.5e4`).
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of signatures per second"))?;
    if !rate.is_finite() || rate <= 0.0 {
        return Err(format!("rate must be a positive number, not {text}"));
    }
    Ok(rate)
}

/// Parses a share: a number from 0 to 1.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number between 0 and 1"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("must be between 0 and 1, not {text}"));
    }
    Ok(value)
}

/// Parses the share of `--validate-share`: more than 0 and at most 1.
pub fn parse_share(text: &str) -> Result<f64, String> {
    let value: f64 = text.trim().parse().map_err(|_| {
        format!("{text:?} is not a number; expected a share, more than 0 and at most 1, e.g. 0.3")
    })?;
    if !(value > 0.0 && value <= 1.0) {
        return Err(format!(
            "must be more than 0 and at most 1 (the share of pending signers to validate), not {text}"
        ));
    }
    Ok(value)
}

/// Parses `--threshold-step`: a whole number of signatures, at least 1, whose 32nd multiple
/// fits in 64 bits.
pub fn parse_threshold_step(text: &str) -> Result<u64, String> {
    let step: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of signatures; expected e.g. 1000"))?;
    if step == 0
        || step
            .checked_mul(crate::events::THRESHOLDS_PER_PETITION)
            .is_none()
    {
        return Err(format!(
            "must be at least 1, and 32 times it must fit in 64 bits, not {text}"
        ));
    }
    Ok(step)
}

fn parse_zipf_exponent(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !value.is_finite() || value <= 0.0 || value > 10.0 {
        return Err(format!("must be more than 0 and at most 10, not {text}"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn durations() {
        let check = |text: &str, expected: Option<Duration>| {
            assert_eq!(parse_duration(text).ok(), expected, "{text}");
        };
        check("30s", Some(Duration::from_secs(30)));
        check("2m", Some(Duration::from_secs(120)));
        check("1m30s", Some(Duration::from_secs(90)));
        check("500ms", Some(Duration::from_millis(500)));
        check("1.5", Some(Duration::from_millis(1500)));
        check("0", Some(Duration::ZERO));
        check("abc", None);
        check("-3", None);
        check("", None);
        assert!(parse_duration_positive("0s").is_err());
    }

    #[test]
    fn targets() {
        let t = parse_target("http://127.0.0.1:8080").unwrap();
        assert_eq!(t.addr.port(), 8080);
        assert_eq!(t.base_path, "");
        assert_eq!(t.path_and_query, "/");
        assert_eq!(t.host, "127.0.0.1:8080");
        let t = parse_target("http://127.0.0.1:9/api/?x=1").unwrap();
        assert_eq!(t.base_path, "/api");
        assert_eq!(t.path_and_query, "/api/?x=1");
        let t = parse_target("http://[::1]:7").unwrap();
        assert!(t.addr.is_ipv6());
        assert!(parse_target("https://127.0.0.1")
            .unwrap_err()
            .contains("https"));
        assert!(parse_target("127.0.0.1:80").is_err());
        assert!(parse_target("ftp://x").is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_rate("2.5e3"), Ok(2500.0));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("inf").is_err());
        assert!(parse_rate("-5").is_err());
        assert_eq!(parse_fraction("0.9"), Ok(0.9));
        assert!(parse_fraction("1.5").is_err());
        assert!(parse_fraction("nan").is_err());
        assert!(parse_zipf_exponent("0").is_err());
        assert_eq!(parse_share("0.3"), Ok(0.3));
        assert_eq!(parse_share("1"), Ok(1.0));
        assert_eq!(parse_share("1e-3"), Ok(0.001));
        for bad in ["0", "-0.5", "1.01", "nan", "inf", "", "half"] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_threshold_step("1000"), Ok(1000));
        assert_eq!(parse_threshold_step("1"), Ok(1));
        assert_eq!(
            parse_threshold_step(&(u64::MAX / 32).to_string()),
            Ok(u64::MAX / 32)
        );
        for bad in [
            "0",
            "-1",
            "1.5",
            "",
            "many",
            &(u64::MAX / 32 + 1).to_string(),
        ] {
            assert!(parse_threshold_step(bad).is_err(), "{bad}");
        }
    }
}
