//! One module per subcommand; each returns the exit status or a message for a
//! cordon failure.

mod doctor;
mod egress;
mod pi;
mod policy;
mod run;
mod serve;
mod writable;

use crate::cli::Commands;

pub fn dispatch(command: Commands) -> Result<u8, String> {
    match command {
        Commands::Run { options, command } => run::run(&options, command),
        Commands::Shell { options } => run::shell(&options),
        Commands::Pi { options, args } => pi::pi(&options, args),
        Commands::Serve { options } => serve::serve(&options),
        Commands::Agent => serve::agent(),
        Commands::VmAgent => Ok(cordon_vm::agent::main()),
        Commands::Doctor { json } => doctor::doctor(json),
        Commands::Policy { options, json, pi } => policy::show(&options, json, pi),
        Commands::Completions { shell } => completions(shell),
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
