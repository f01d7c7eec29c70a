//! One module per subcommand; each returns the exit status or a message for a
//! cordon failure.

mod doctor;
mod egress;
mod pi;
mod policy;
mod run;
mod serve;

use crate::cli::{BackendArg, Commands, RunOptions};
use cordon_backend::{BackendKind, NotBuilt};
use cordon_sandbox::OsBackend;

/// Why cordon did not do what it was asked, with the exit status it ends with.
pub enum Failure {
    /// cordon's own failure (DESIGN.md: exit status 125).
    Cordon(String),
    /// The chosen backend is not built (`--backend vm`): exit status 69,
    /// sysexits.h's EX_UNAVAILABLE.
    Unavailable(NotBuilt),
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Cordon(message)
    }
}

pub fn dispatch(command: Commands) -> Result<u8, Failure> {
    Ok(match command {
        Commands::Run(crate::cli::RunArgs { options, command }) => {
            run::run(&backend(&options)?, &options, command)?
        }
        Commands::Shell { options } => run::shell(&backend(&options)?, &options)?,
        Commands::Pi { options, args } => pi::pi(&backend(&options)?, &options, args)?,
        Commands::Serve { options } => serve::serve(&backend(&options)?, &options)?,
        Commands::Agent => serve::agent()?,
        Commands::VmAgent => cordon_vm::agent::main(),
        Commands::Doctor { json } => doctor::doctor(json)?,
        Commands::Policy { options, json, pi } => {
            policy::show(&backend(&options)?, &options, json, pi)?
        }
        Commands::Completions { shell } => completions(shell)?,
    })
}

/// The backend `--backend` names, if this build has it.
fn backend(options: &RunOptions) -> Result<OsBackend, Failure> {
    match options.backend {
        BackendArg::Os => Ok(OsBackend),
        BackendArg::Vm => Err(Failure::Unavailable(NotBuilt {
            kind: BackendKind::Vm,
        })),
    }
}

/// `cordon completions SHELL`: the completion script, generated from the same
/// definitions that parse the command line, so it cannot drift from them.
fn completions(shell: clap_complete::Shell) -> Result<u8, String> {
    use clap::CommandFactory;
    let mut command = crate::cli::Cli::command();
    clap_complete::generate(shell, &mut command, "cordon", &mut std::io::stdout());
    Ok(0)
}
