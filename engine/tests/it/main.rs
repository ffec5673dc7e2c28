//! Integration tests of the engine crate: one binary, one module per area.

mod concurrency;
mod crash;
mod durability;
mod events;
mod guards;
mod lifecycle;
mod lifecycle_model;
mod model;
mod places;
mod replication;
mod signers;
mod sources;
mod support;
