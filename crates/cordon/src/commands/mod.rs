//! One module per subcommand; each returns the exit status or a message for a
//! cordon failure.

mod doctor;
mod egress;
mod pi;
mod policy;
mod run;
mod serve;

use crate::cli::Commands;

pub fn dispatch(command: Commands) -> Result<u8, String> {
    match command {
        Commands::Run { options, command } => run::run(&options, command),
        Commands::Shell { options } => run::shell(&options),
        Commands::Pi { options, args } => pi::pi(&options, args),
        Commands::Serve { options } => serve::serve(&options),
        Commands::Agent => serve::agent(),
        Commands::Doctor { json } => doctor::doctor(json),
        Commands::Policy { options, json, pi } => policy::show(&options, json, pi),
    }
}
