//! A quick probe of the disk under a directory: fsync latency of small appends and sequential
//! write bandwidth, measured in the same run as the benchmark they put in context.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// What [`probe`] measured.
#[derive(Debug, Clone)]
pub struct DiskProbe {
    /// Median latency of a 4 KiB append followed by fsync, in microseconds.
    pub fsync_us_p50: u64,
    /// 99th percentile of the same.
    pub fsync_us_p99: u64,
    /// Sequential write of 256 MiB followed by one fsync, in MB/s (10^6 bytes).
    pub sequential_mb_per_s: f64,
}

const FSYNC_ROUNDS: usize = 300;
const SEQUENTIAL_BYTES: usize = 256 << 20;

/// Measures the disk holding `dir`. Writes and then removes two scratch files there.
pub fn probe(dir: &Path) -> std::io::Result<DiskProbe> {
    let path = dir.join(".disk-probe");
    let mut file = File::create(&path)?;
    let block = vec![0x5au8; 4096];
    let mut latencies = Vec::with_capacity(FSYNC_ROUNDS);
    for _ in 0..FSYNC_ROUNDS {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_all()?;
        latencies.push(started.elapsed().as_micros() as u64);
    }
    drop(file);
    std::fs::remove_file(&path)?;
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];

    let mut file = File::create(&path)?;
    let chunk = vec![0xa5u8; 1 << 20];
    let started = Instant::now();
    for _ in 0..SEQUENTIAL_BYTES / chunk.len() {
        file.write_all(&chunk)?;
    }
    file.sync_all()?;
    let seconds = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(DiskProbe {
        fsync_us_p50: at(0.50),
        fsync_us_p99: at(0.99),
        sequential_mb_per_s: SEQUENTIAL_BYTES as f64 / 1e6 / seconds,
    })
}
