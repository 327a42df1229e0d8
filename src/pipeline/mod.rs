//! The work after a notification is stored: workers claim blobs, fetch them with the tenant's token,
//! map and encode the records, hand them to the output, and complete the blob only after the output
//! accepted them. `lifecycle` keeps the webhook subscriptions in place.

pub mod audit_backfill;
pub mod blob;
pub mod config;
pub mod gate;
pub mod graph_puller;
pub mod health;
pub mod jobs;
pub mod lifecycle;
pub mod puller;
pub mod stream;
pub mod tenant;
pub mod tenant_lease;
pub mod verify;
pub mod worker;

pub use tenant::{TenantRuntime, Tenants};
