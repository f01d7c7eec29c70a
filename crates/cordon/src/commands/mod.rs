//! One module per subcommand; each returns the exit status or a message for a
//! cordon failure.

mod doctor;
mod egress;
mod pi;
mod policy;
mod run;
mod serve;
mod vm;

use crate::cli::{BackendArg, Commands};
use cordon_sandbox::OsBackend;
use cordon_session::SessionError;
use cordon_vm::{VmBackend, VmError};

/// Why cordon did not do what it was asked, with the exit status it ends with.
pub enum Failure {
    /// cordon's own failure (DESIGN.md: exit status 125).
    Cordon(String),
    /// The chosen backend does not do what was asked (yet): exit status 69,
    /// sysexits.h's EX_UNAVAILABLE, so that a caller can fall back to another.
    Unavailable(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Cordon(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure::Cordon(message.to_string())
    }
}

impl From<SessionError> for Failure {
    /// What the backend refuses to do, as opposed to a failure while doing it.
    fn from(e: SessionError) -> Failure {
        if let SessionError::Backend(backend) = &e {
            if backend
                .downcast_ref::<VmError>()
                .is_some_and(VmError::is_unsupported)
            {
                return Failure::Unavailable(e.to_string());
            }
        }
        Failure::Cordon(e.to_string())
    }
}

/// Runs `$body` with `$backend` bound to the backend `--backend` names (each
/// command is generic over the backend it runs on).
macro_rules! on_backend {
    ($options:expr, |$backend:ident| $body:expr) => {
        match $options.backend {
            BackendArg::Os => {
                let $backend = &OsBackend;
                $body
            }
            BackendArg::Vm => {
                // A first run makes the boot files and the template: shown.
                let progress = crate::progress::TerminalProgress::new(
                    "cordon",
                    crate::progress::Notes::Stderr,
                );
                let $backend = &VmBackend::with_progress(std::sync::Arc::new(progress));
                $body
            }
        }
    };
}

pub fn dispatch(command: Commands) -> Result<u8, Failure> {
    Ok(match command {
        Commands::Run(crate::cli::RunArgs { options, command }) => {
            on_backend!(options, |b| run::run(b, &options, command))?
        }
        Commands::Shell { options } => on_backend!(options, |b| run::shell(b, &options))?,
        Commands::Pi { options, args } => on_backend!(options, |b| pi::pi(b, &options, args))?,
        Commands::Serve { options } => on_backend!(options, |b| serve::serve(b, &options))?,
        Commands::Agent => serve::agent()?,
        Commands::VmAgent => cordon_vm::agent::main(),
        Commands::VmHost { args } => cordon_vm::share::host_main(&args),
        Commands::Doctor { json } => doctor::doctor(json)?,
        Commands::Policy { options, json, pi } => {
            on_backend!(options, |b| policy::show(b, &options, json, pi))?
        }
        Commands::Completions { shell } => completions(shell)?,
        Commands::Vm { action } => vm::vm(action)?,
    })
}

/// `cordon completions SHELL`: the completion script, generated from the same
/// definitions that parse the command line, so it cannot drift from them.
fn completions(shell: clap_complete::Shell) -> Result<u8, String> {
    use clap::CommandFactory;
    let mut command = crate::cli::Cli::command();
    clap_complete::generate(shell, &mut command, "cordon", &mut std::io::stdout());
    Ok(0)
}
