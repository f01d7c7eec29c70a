//! `cordon`: argument parsing, output and exit codes. Everything else lives in the
//! library crates.

mod cli;
mod commands;

use clap::Parser;
use std::process::ExitCode;

/// cordon's own failure (DESIGN.md: exit status 125).
const CORDON_FAILED: u8 = 125;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::dispatch(cli.command) {
        Ok(status) => ExitCode::from(status),
        Err(message) => {
            eprintln!("cordon: {message}");
            ExitCode::from(CORDON_FAILED)
        }
    }
}
