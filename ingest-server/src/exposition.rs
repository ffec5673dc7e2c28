//! How `/metrics` is written: OpenMetrics text when the scraper asks for it (Prometheus does),
//! else the Prometheus text format 0.0.4 (what `curl`, `promtool check metrics` and older
//! scrapers read), and the `process_*` metrics every Prometheus client library exports.
//!
//! `prometheus-client` writes OpenMetrics only; the text format is made from it line by line.
//! The two differ in family names (a counter family `x` is `x_total` in the text format, an
//! info family `x` is the gauge `x_info`), in the `# UNIT` and `# EOF` lines the text format
//! does not have, and in type names (`unknown` is `untyped`).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// The two formats `/metrics` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
    /// `text/plain; version=0.0.4`.
    Text,
}

impl Format {
    /// The format an `Accept` header prefers: OpenMetrics when it ranks
    /// `application/openmetrics-text` at least as high as `text/plain` (and above 0), the
    /// text format otherwise, and when there is no header.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let (mut openmetrics, mut text) = (0.0_f64, 0.0_f64);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|param| param.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f64>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The answer's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The registries `/metrics` encodes: the server's (prefixed `ingest_`) and the process's.
#[derive(Debug)]
pub(crate) struct Exposition {
    ingest: Registry,
    process: Registry,
}

impl Exposition {
    pub fn new(ingest: Registry) -> Exposition {
        let mut process = Registry::default();
        process.register_collector(Box::new(ProcessCollector));
        Exposition { ingest, process }
    }

    /// Every metric, in `format`.
    pub fn render(&self, format: Format) -> Result<String, std::fmt::Error> {
        use prometheus_client::encoding::text;
        let mut openmetrics = String::with_capacity(16 * 1024);
        text::encode_registry(&mut openmetrics, &self.ingest)?;
        text::encode_registry(&mut openmetrics, &self.process)?;
        text::encode_eof(&mut openmetrics)?;
        Ok(match format {
            Format::OpenMetrics => openmetrics,
            Format::Text => to_text_format(&openmetrics),
        })
    }
}

/// The Prometheus text format 0.0.4 of an OpenMetrics exposition (without exemplars, which
/// this server does not write).
fn to_text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // A family's HELP comes before its TYPE, and its name depends on the type.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = match kind {
                "counter" => (format!("{family}_total"), "counter"),
                "info" => (format!("{family}_info"), "gauge"),
                "gauge" | "histogram" | "summary" => (family.to_string(), kind),
                _ => (family.to_string(), "untyped"),
            };
            if let Some((_, text)) = help.take().filter(|(helped, _)| *helped == family) {
                // OpenMetrics escapes `"` in HELP; the text format does not.
                out.push_str(&format!("# HELP {name} {}\n", text.replace("\\\"", "\"")));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The `process_*` metrics of the Prometheus client libraries, read from `/proc` (Linux; on
/// other systems there are none).
#[derive(Debug)]
struct ProcessCollector;

/// Clock ticks per second of the times in `/proc/<pid>/stat`: `USER_HZ`, which the kernel's
/// ABI fixes at 100 (the Prometheus Go client's procfs reader assumes the same).
const USER_HZ: f64 = 100.0;

/// What `/proc` says of this process.
#[derive(Debug, Default, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    start_time_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    threads: u64,
    open_fds: u64,
    max_fds: Option<u64>,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        ProcessStats::parse(&stat, &status, &boot, &limits, open_fds)
    }

    /// From the texts of `/proc/self/stat`, `/proc/self/status`, `/proc/stat` and
    /// `/proc/self/limits`.
    fn parse(
        stat: &str,
        status: &str,
        boot: &str,
        limits: &str,
        open_fds: u64,
    ) -> Option<ProcessStats> {
        // The command name, in parentheses, may hold spaces and parentheses: the fields
        // start after the last `)`, with the state (field 3 of proc(5)).
        let fields: Vec<&str> = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .collect();
        let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
        let ticks = field(14)? + field(15)?;
        let started_ticks = field(22)?;
        let boot_time: f64 = boot
            .lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        // `VmRSS:  8000 kB`, `Threads:  7`.
        let number = |key: &str| -> Option<u64> {
            let value = status.lines().find_map(|line| line.strip_prefix(key))?;
            value.trim().trim_end_matches("kB").trim().parse().ok()
        };
        let max_fds = limits
            .lines()
            .find_map(|line| line.strip_prefix("Max open files"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|soft| soft.parse().ok());
        Some(ProcessStats {
            cpu_seconds: ticks / USER_HZ,
            start_time_seconds: boot_time + started_ticks / USER_HZ,
            resident_bytes: number("VmRSS:").unwrap_or(0) * 1024,
            virtual_bytes: number("VmSize:").unwrap_or(0) * 1024,
            threads: number("Threads:").unwrap_or(0),
            open_fds,
            max_fds,
        })
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = ProcessStats::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(stats.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let mut gauges: Vec<(&str, &str, Option<Unit>, f64)> = vec![
            (
                "process_start_time",
                "Start time of the process since the Unix epoch",
                Some(Unit::Seconds),
                stats.start_time_seconds,
            ),
            (
                "process_resident_memory",
                "Resident memory size",
                Some(Unit::Bytes),
                stats.resident_bytes as f64,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size",
                Some(Unit::Bytes),
                stats.virtual_bytes as f64,
            ),
            (
                "process_threads",
                "OS threads of the process",
                None,
                stats.threads as f64,
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                None,
                stats.open_fds as f64,
            ),
        ];
        if let Some(max) = stats.max_fds {
            gauges.push((
                "process_max_fds",
                "Most open file descriptors allowed (the soft limit)",
                None,
                max as f64,
            ));
        }
        for (name, help, unit, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(
                name,
                help,
                unit.as_ref(),
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_gets_openmetrics_and_everyone_else_text() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text; q=0.3, text/plain; q=0.9"
            )),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("Application/OpenMetrics-Text")),
            Format::OpenMetrics
        );
    }

    #[test]
    fn text_format_names_counters_and_infos_by_their_samples() {
        let openmetrics = "# HELP ingest_signatures Signatures \\\"answered\\\"\n\
                           # TYPE ingest_signatures counter\n\
                           ingest_signatures_total{outcome=\"accepted\"} 3\n\
                           # HELP ingest_build Build\n\
                           # TYPE ingest_build info\n\
                           ingest_build_info{version=\"1\"} 1\n\
                           # HELP ingest_recovery Time\n\
                           # TYPE ingest_recovery gauge\n\
                           # UNIT ingest_recovery seconds\n\
                           ingest_recovery_seconds 0.5\n\
                           # TYPE odd unknown\n\
                           odd 1\n\
                           # EOF\n";
        assert_eq!(
            to_text_format(openmetrics),
            "# HELP ingest_signatures_total Signatures \"answered\"\n\
             # TYPE ingest_signatures_total counter\n\
             ingest_signatures_total{outcome=\"accepted\"} 3\n\
             # HELP ingest_build_info Build\n\
             # TYPE ingest_build_info gauge\n\
             ingest_build_info{version=\"1\"} 1\n\
             # HELP ingest_recovery Time\n\
             # TYPE ingest_recovery gauge\n\
             ingest_recovery_seconds 0.5\n\
             # TYPE odd untyped\n\
             odd 1\n"
        );
    }

    #[test]
    fn process_stats_parse_from_proc() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 5000 0 0 0 250 50 0 0 20 0 7 0 \
                    123400 987654321 2000 18446744073709551615";
        let status = "Name:\tx\nVmSize:\t  964504 kB\nVmRSS:\t    8000 kB\nThreads:\t7\n";
        let boot = "cpu  1 2 3\nbtime 1764460800\nprocesses 9\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(
            ProcessStats::parse(stat, status, boot, limits, 12),
            Some(ProcessStats {
                cpu_seconds: 3.0,
                start_time_seconds: 1_764_460_800.0 + 1_234.0,
                resident_bytes: 8_000 * 1024,
                virtual_bytes: 964_504 * 1024,
                threads: 7,
                open_fds: 12,
                max_fds: Some(1024),
            })
        );
        assert_eq!(
            ProcessStats::parse("garbage", status, boot, limits, 1),
            None
        );
    }
}
