//! A tenant's Graph side while it runs: its client and what each feed did last, read by `/status`
//! and `/metrics` and written by the Graph puller.

use std::sync::Mutex;
use std::time::SystemTime;

use super::GraphFeed;
use super::client::GraphClient;

/// What a feed did last, for `/status` and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct FeedStatus {
    /// Where the next round starts (before the overlap).
    pub cursor: Option<SystemTime>,
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    /// The last round was refused (401/403): a permission or licence is missing.
    pub denied: bool,
    /// Records listed and stored as new since the start.
    pub records: u64,
    pub pages: u64,
}

/// A tenant's Graph side: its client and each feed's status.
pub struct GraphRuntime {
    pub client: GraphClient,
    pub status: Mutex<std::collections::BTreeMap<GraphFeed, FeedStatus>>,
}

impl GraphRuntime {
    pub fn new(client: GraphClient, feeds: &[GraphFeed]) -> Self {
        GraphRuntime {
            client,
            status: Mutex::new(feeds.iter().map(|f| (*f, FeedStatus::default())).collect()),
        }
    }

    pub fn status_of(&self, feed: GraphFeed) -> FeedStatus {
        self.lock().get(&feed).cloned().unwrap_or_default()
    }

    /// Changes one feed's status (the puller, after each round).
    pub fn update(&self, feed: GraphFeed, f: impl FnOnce(&mut FeedStatus)) {
        f(self.lock().entry(feed).or_default());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<GraphFeed, FeedStatus>> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
