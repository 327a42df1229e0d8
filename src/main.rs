//! Thin binary: parses the command line, sets up logging and hands over to the library. The only
//! place where `anyhow` meets the user.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use o365_collector::cli::{Cli, Command};
use o365_collector::telemetry;
use o365_collector::{app, config, demo, mapping, preflight};

/// Mapping allocates many small strings per record; mimalloc maps ≈25% more records per second than
/// glibc's allocator (benches/mapping.rs). The `system-allocator` feature leaves it out, for heap
/// profilers that hook malloc (`heaptrack`, see README "Bounds").
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own progress; the collector's info lines would drown it.
    let level = if matches!(cli.command, Command::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    telemetry::init(cli.log_format, level);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Threads for blocking work (store transactions, blob decoding, file writes). Tokio's default
/// (512) let a burst of webhook POSTs or a thousand tenants' listings start hundreds of threads,
/// each keeping its stack and allocator caches; store calls queue for these few instead.
const MAX_BLOCKING_THREADS: usize = 16;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => {
            let cfg = match config::Config::load(&config) {
                Ok(c) => c,
                Err(problems) => {
                    eprintln!("{} has problems:\n{problems}", config.display());
                    return Ok(ExitCode::from(2));
                }
            };
            runtime()?.block_on(app::run(cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            let summary = runtime()?.block_on(demo::run(args))?;
            println!("{}", summary.line());
            if summary.ok() {
                println!("{}", demo::NEXT_STEP);
            }
            Ok(if summary.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Emulator(args) => {
            runtime()?.block_on(o365_emulator::cli::serve(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config, online } => {
            let (report, code) = config::check_config(&config);
            println!("{report}");
            if code != 0 || !online {
                return Ok(ExitCode::from(u8::try_from(code).unwrap_or(2)));
            }
            let cfg = match config::Config::load(&config) {
                Ok(c) => c,
                Err(problems) => {
                    eprintln!("{} has problems:\n{problems}", config.display());
                    return Ok(ExitCode::from(2));
                }
            };
            let rt = runtime()?;
            let (next_starts, note) = rt.block_on(preflight::stored_next_starts(&cfg));
            if let Some(note) = note {
                println!("note: {note}");
            }
            let report = rt.block_on(preflight::run(&cfg, &next_starts));
            print!("{}", report.render());
            Ok(ExitCode::from(
                u8::try_from(report.exit_code()).unwrap_or(2),
            ))
        }
        Command::Compact { config } => compact(&config),
        Command::Subscriptions(args) => {
            let code = runtime()?.block_on(o365_collector::admin::cli::subscriptions(args));
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::Backfill(args) => {
            let code = runtime()?.block_on(o365_collector::admin::cli::backfill(args));
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::DeadLetters(args) => {
            let code = runtime()?.block_on(o365_collector::admin::cli::dead_letters(args));
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::Completeness(args) => {
            let code = runtime()?.block_on(o365_collector::admin::cli::completeness(args));
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::Verify(args) => {
            let code = runtime()?.block_on(o365_collector::admin::cli::verify(args));
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::Map(args) => {
            let code = mapping::cli::run(args)?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
    }
}

/// `compact`: the embedded store's file back to what it holds (see the README's Bounds).
fn compact(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let cfg = match config::Config::load(config) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("{} has problems:\n{problems}", config.display());
            return Ok(ExitCode::from(2));
        }
    };
    if let o365_collector::store::StoreConfig::Postgres(_) = cfg.store {
        eprintln!(
            "store: postgres: PostgreSQL reuses the space of pruned rows by itself (autovacuum); \
             to give it back to the filesystem run `VACUUM FULL o365_dedup` in the database"
        );
        return Ok(ExitCode::from(2));
    }
    let (before, after) = o365_collector::store::EmbeddedStore::compact(&cfg.last_value_storage)?;
    println!(
        "compacted {}: {before} bytes → {after} bytes",
        cfg.last_value_storage
            .join(o365_collector::store::embedded::FILE_NAME)
            .display()
    );
    Ok(ExitCode::SUCCESS)
}
