//! Thin binary: parses the command line and hands over to the library.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "o365-collector", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the Management Activity API emulator.
    Emulator(o365_collector::emulator::cli::EmulatorArgs),
    /// Map records offline to NDJSON.
    Map(o365_collector::mapping::cli::MapArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Emulator(args) => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(o365_collector::emulator::cli::serve(args))?;
            Ok(())
        }
        Command::Map(args) => {
            let code = o365_collector::mapping::cli::run(args)?;
            std::process::exit(code)
        }
    }
}
