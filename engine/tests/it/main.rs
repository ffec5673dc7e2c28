//! Integration tests of the engine crate: one binary, one module per area.

mod concurrency;
mod crash;
mod durability;
mod lifecycle;
mod model;
mod signers;
mod support;
