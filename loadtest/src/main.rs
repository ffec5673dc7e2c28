//! The `loadtest` binary: parses flags, builds the tokio runtime and hands over to the library
//! (see the crate docs of `loadtest` for the layout). Exit codes: 0 passed, 1 an operating error
//! or a failed verify or `--durability-check`, 2 a usage error, 3 a failed pass criterion.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use loadtest::cli::{Cli, Command};
use loadtest::criteria::EXIT_CRITERIA_FAILED;
use loadtest::RunStatus;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Orchestration only (registration, progress, verify); the load runs on its own threads.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => {
                let progress = !args.no_progress && std::io::stderr().is_terminal();
                loadtest::run_command(args, progress)
                    .await
                    .map(|status| match status {
                        RunStatus::Passed => ExitCode::SUCCESS,
                        RunStatus::DurabilityFailed => ExitCode::FAILURE,
                        RunStatus::CriteriaFailed => ExitCode::from(EXIT_CRITERIA_FAILED),
                    })
            }
            Command::Plot(args) => loadtest::plot_command(&args).map(|()| ExitCode::SUCCESS),
            Command::Verify(args) => loadtest::verify_command(args).await.map(|passed| {
                if passed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
