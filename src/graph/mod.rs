//! The tenant's Microsoft Graph feeds: sign-ins, directory audits, message trace and service
//! health ([`feed`]), read by [`client`] (the only code that attaches a Graph token); [`runtime`]
//! holds each tenant's client and feed status. `pipeline::graph_puller` lists the feeds into the
//! durable queue, and from there the workers, outputs and dedup of the audit pipeline deliver
//! them. The mapping lives in `mapping::graph`. [`audit_search`]: Purview's Audit Log Query API
//! (deep backfill), through the same client.

pub mod audit_search;
pub mod client;
pub mod feed;
pub mod runtime;

pub use feed::GraphFeed;
