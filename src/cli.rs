//! The command line: every subcommand and flag. In the library so that tests can check each
//! command line the docs show against it (tests/docs.rs); `src/main.rs` dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;
use crate::{admin, demo, mapping};

#[derive(Parser, Debug)]
#[command(
    name = "o365-collector",
    version,
    about = "Collects Office 365 audit logs and forwards them mapped to o365.*"
)]
pub struct Cli {
    /// Log lines as human text or JSON (stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true, env = "O365_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the collector (push webhooks and workers) until SIGINT/SIGTERM.
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = "config.yaml", env = "O365_CONFIG")]
        config: PathBuf,
    },
    /// Run the emulator and the collector together and deliver synthetic activity end to end.
    Demo(demo::DemoArgs),
    /// Run the Management Activity API emulator.
    Emulator(o365_emulator::cli::EmulatorArgs),
    /// Validate a configuration file and print every problem at once.
    CheckConfig {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
        /// Also sign in to each tenant, list its subscriptions, content and Graph feeds, and ask
        /// the public webhook address to answer a validation call (run once before the first start).
        #[arg(long)]
        online: bool,
    },
    /// List, start or stop subscriptions through the running collector's admin API.
    Subscriptions(admin::cli::SubscriptionsArgs),
    /// Ask the running collector to list and fetch a past time range again.
    Backfill(admin::cli::BackfillArgs),
    /// List the blobs the running collector gave up, or queue them again.
    DeadLetters(admin::cli::DeadLettersArgs),
    /// Per day: the hours sealed, open and incomplete (with why) of the completeness ledger.
    Completeness(admin::cli::CompletenessArgs),
    /// Compare, per hour and record type, the records delivered with Purview's Audit Search, and
    /// deliver the missing ones with --repair.
    Verify(admin::cli::VerifyArgs),
    /// Map records offline (JSON lines, a content blob, or a Purview CSV export) to NDJSON.
    Map(mapping::cli::MapArgs),
    /// Give the embedded store's pruned space back to the filesystem (run it while the collector
    /// is stopped).
    Compact {
        #[arg(long, short, default_value = "config.yaml", env = "O365_CONFIG")]
        config: PathBuf,
    },
}
