//! The `loadtest` binary: parses flags, builds the tokio runtime and hands over to the library
//! (see the crate docs of `loadtest` for the layout).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use loadtest::cli::{Cli, Command};

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
                loadtest::run_command(args, progress).await
            }
            Command::Verify(args) => loadtest::verify_command(args).await,
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
