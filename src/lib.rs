//! o365-collector: collects Office 365 Management Activity API audit logs and forwards them mapped to
//! the `o365.*` schema. See ARCHITECTURE.md for how data flows and where each concept lives.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod core;
pub mod demo;
pub mod graph;
pub mod log_limit;
pub mod mapping;
pub mod mgmt_api;
pub mod output;
pub mod pipeline;
pub mod preflight;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod webhook;
