//! Support for the benchmarks: deterministic workloads and the countries their signatures name,
//! open-loop pacing, a disk probe, the durable-ack floor, stalls beside the background work that
//! overlapped them, process facts, and the lifecycle benchmarks (validations, an invalidation job
//! under load).

pub mod countries;
pub mod disk;
pub mod floor;
pub mod lifecycle;
pub mod open_loop;
pub mod process;
pub mod stalls;
pub mod workload;
