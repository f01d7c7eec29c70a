//! One module per subcommand; each returns the exit status or a message for a
//! cordon failure.

mod doctor;
mod egress;
mod pi;
mod policy;
mod run;
mod serve;
mod vm;

use crate::cli::Commands;
use cordon_policy::BackendChoice;
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

/// Runs `$body` with `$backend` bound to the backend the policy chose
/// (`--backend`, `$CORDON_BACKEND`, the user config's `backend`): each command
/// is generic over the backend it runs on.
macro_rules! on_backend {
    ($policy:expr, |$backend:ident| $body:expr) => {
        match $policy.backend.value {
            BackendChoice::Os => {
                let $backend = &OsBackend;
                $body
            }
            BackendChoice::Vm => {
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
            let policy = run::resolve_policy(&options)?;
            on_backend!(policy, |b| run::run(b, &options, &policy, command))?
        }
        Commands::Shell { options } => {
            let policy = run::resolve_policy(&options)?;
            on_backend!(policy, |b| run::shell(b, &options, &policy))?
        }
        Commands::Pi { options, args } => {
            let prepared = pi::prepare(&options)?;
            on_backend!(prepared.policy, |b| pi::pi(b, &options, &prepared, args))?
        }
        Commands::Serve { options } => {
            let policy = serve::policy(&options)?;
            on_backend!(policy, |b| serve::serve(b, &options, &policy))?
        }
        Commands::Agent => serve::agent()?,
        Commands::VmAgent => cordon_vm::agent::main(),
        Commands::VmHost { args } => cordon_vm::share::host_main(&args),
        Commands::Doctor { json } => doctor::doctor(json)?,
        Commands::Policy { options, json, pi } => {
            let (policy, setup) = policy::resolve(&options, pi)?;
            on_backend!(policy, |b| policy::show(
                b,
                &options,
                &policy,
                setup.as_ref(),
                json
            ))?
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
