//! Integration tests of loadtest: real sockets on 127.0.0.1:0 against in-test hyper servers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse;
mod cli;
mod cluster;
mod countries;
mod crash_e2e;
mod criteria;
mod events;
mod fake;
mod latency;
mod ledger;
mod outputs;
mod validation;

use clap::Parser;
use loadtest::cli::{Cli, Command, RunArgs, VerifyArgs};

/// Parses `loadtest run <args>` as the binary would.
pub fn run_args(args: &[&str]) -> RunArgs {
    let cli = Cli::try_parse_from(["loadtest", "run"].iter().chain(args)).expect("valid flags");
    match cli.command {
        Command::Run(args) => args,
        Command::Verify(_) | Command::Plot(_) => unreachable!(),
    }
}

/// Parses `loadtest verify <args>` as the binary would.
pub fn verify_args(args: &[&str]) -> VerifyArgs {
    let cli = Cli::try_parse_from(["loadtest", "verify"].iter().chain(args)).expect("valid flags");
    match cli.command {
        Command::Verify(args) => args,
        Command::Run(_) | Command::Plot(_) => unreachable!(),
    }
}

/// `loadtest verify` of `ledger` against `url` with the ingest key, re-sending a sample of
/// `sample` signers.
pub async fn verify_ledger(url: &str, ledger: &str, sample: u32) -> loadtest::verify::Verdict {
    let sample = sample.to_string();
    loadtest::verify::verify(&verify_args(&[
        "--target",
        url,
        "--ledger",
        ledger,
        "--api-key",
        fake::INGEST_KEY,
        "--sample",
        &sample,
    ]))
    .await
    .unwrap()
}

/// A fresh directory for one test's files.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("loadtest-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
