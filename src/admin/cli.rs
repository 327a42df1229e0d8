//! CLI mirrors of the admin API (`subscriptions list|start|stop`, `backfill`): they call the running
//! collector's admin listener.
//! STUB: the admin work fills this file; the argument types are the contract.

/// `o365-collector subscriptions …`
#[derive(clap::Args, Debug, Clone)]
pub struct SubscriptionsArgs {}

/// `o365-collector backfill …`
#[derive(clap::Args, Debug, Clone)]
pub struct BackfillArgs {}

/// Runs `subscriptions`; returns the process exit code.
pub async fn subscriptions(_args: SubscriptionsArgs) -> i32 {
    2
}

/// Runs `backfill`; returns the process exit code.
pub async fn backfill(_args: BackfillArgs) -> i32 {
    2
}
