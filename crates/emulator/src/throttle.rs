//! Request quota per tenant and PublisherIdentifier, in fixed one-minute windows (Microsoft's
//! baseline is 2,000 requests per minute). Calls without PublisherIdentifier share one pool for all
//! tenants, as Microsoft documents.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::lock;

const WINDOW: Duration = Duration::from_secs(60);

pub(crate) struct Throttle {
    limit: AtomicU32,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Throttle {
    pub fn new(per_minute: u32) -> Throttle {
        Throttle {
            limit: AtomicU32::new(per_minute),
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub fn set_limit(&self, per_minute: u32) {
        self.limit.store(per_minute, Ordering::Relaxed);
        lock(&self.windows).clear();
    }

    /// Counts one request; `Err(retry_after)` when over quota.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let limit = self.limit.load(Ordering::Relaxed);
        let now = Instant::now();
        let mut w = lock(&self.windows);
        let entry = w.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        if entry.1 >= limit {
            return Err(WINDOW.saturating_sub(now.duration_since(entry.0)));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_per_key() {
        let t = Throttle::new(2);
        assert!(t.check("a").is_ok());
        assert!(t.check("a").is_ok());
        let retry = t.check("a").unwrap_err();
        assert!(retry <= WINDOW && retry > Duration::from_secs(50));
        assert!(t.check("b").is_ok());
    }
}
