//! `o365-emulator`: the emulator on its own, for trying the collector (or curl) against it without
//! building the collector. `o365-collector emulator` runs the same [`o365_emulator::cli::serve`].

use anyhow::Context;
use clap::Parser;
use o365_emulator::cli::{EmulatorArgs, serve};

/// Faithful emulator of Microsoft's Office 365 Management Activity API, Azure AD token endpoint and
/// Graph audit feeds, with a `/_emulator` control surface.
#[derive(Parser, Debug)]
#[command(name = "o365-emulator", version)]
struct Cli {
    #[command(flatten)]
    args: EmulatorArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colours only on a terminal: a log file would keep the escape codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")?
        .block_on(serve(cli.args))?;
    Ok(())
}
