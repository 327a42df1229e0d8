//! The tenant's Microsoft Graph feeds: sign-ins, directory audits, message trace and service
//! health ([`feed`]), read by [`client`] (the only code that attaches a Graph token) and listed
//! into the durable queue by [`puller`]; from there the workers, outputs and dedup of the audit
//! pipeline deliver them. The mapping lives in `mapping::graph`.

pub mod client;
pub mod feed;
pub mod puller;

pub use feed::GraphFeed;
