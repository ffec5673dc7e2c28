//! Support for the benchmarks: deterministic workloads, a disk probe, the durable-ack floor, and
//! process facts.

pub mod disk;
pub mod floor;
pub mod process;
pub mod workload;
