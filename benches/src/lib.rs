//! Support for the benchmarks: deterministic workloads, a disk probe and process facts.

pub mod disk;
pub mod process;
pub mod workload;
