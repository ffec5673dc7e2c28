//! ingest-server integration tests: real sockets on 127.0.0.1:0, real RocksDB in temp dirs.
#![allow(clippy::unwrap_used)]

mod api;
mod console;
mod controls;
mod deploy;
mod events;
mod exhaustion;
mod invalidations;
mod lifecycle;
mod limits;
mod openapi;
mod operators;
mod places;
mod quick_start;
mod sigterm;
mod support;
