//! `cordon`: argument parsing, output and exit codes. Everything else lives in the
//! library crates.

mod cli;
mod commands;
mod progress;

use commands::Failure;
use std::process::ExitCode;

/// cordon's own failure (DESIGN.md: exit status 125).
const CORDON_FAILED: u8 = 125;

/// The chosen backend does not do what was asked (sysexits.h's EX_UNAVAILABLE):
/// distinct from 125 so that a caller can fall back to another backend.
const BACKEND_UNAVAILABLE: u8 = 69;

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // A usage error is cordon's own failure: 125 and a `cordon:` message.
            eprintln!("cordon: {}", cli::usage_error(&e));
            return ExitCode::from(CORDON_FAILED);
        }
    };
    match commands::dispatch(cli.command) {
        Ok(status) => ExitCode::from(status),
        Err(Failure::Cordon(message)) => {
            eprintln!("cordon: {message}");
            ExitCode::from(CORDON_FAILED)
        }
        Err(Failure::Unavailable(message)) => {
            eprintln!("cordon: {message}");
            ExitCode::from(BACKEND_UNAVAILABLE)
        }
    }
}
