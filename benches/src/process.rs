//! Facts about this process and machine, read from /proc.

/// Resident set size of this process, in bytes (0 if /proc is unavailable).
pub fn rss_bytes() -> u64 {
    read_kib_field("/proc/self/status", "VmRSS:") * 1024
}

/// Bytes this process caused to be written to storage so far (`write_bytes` of /proc/self/io).
pub fn bytes_written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn read_kib_field(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// "N cores, M GiB RAM, CPU model".
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let ram_gib = read_kib_field("/proc/meminfo", "MemTotal:") as f64 / (1024.0 * 1024.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {ram_gib:.0} GiB RAM, {cpu}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(rss_bytes() > 0);
        assert!(machine().contains("cores"));
    }
}
