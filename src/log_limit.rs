//! At most one log line per key (peer and reason) and interval. One unauthenticated keep-alive
//! connection can be refused thousands of times a second; each refusal is counted exactly in the
//! metrics, but the log gets one line per peer and reason per interval, carrying the number of
//! lines held back since the previous one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one peer and reason may write a line.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// Keys remembered at once: beyond this (an attack from many addresses), keys whose interval has
/// passed are forgotten, and if all are current the new ones share one overflow key.
const MAX_KEYS: usize = 4096;
const OVERFLOW: &str = "(more peers than the log limiter tracks)";

pub struct LogLimiter {
    every: Duration,
    keys: Mutex<HashMap<String, Window>>,
}

struct Window {
    started: Instant,
    held_back: u64,
}

impl LogLimiter {
    pub fn new(every: Duration) -> LogLimiter {
        LogLimiter {
            every,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)` when this event may be logged, `n` being the events of `key` held back since its
    /// previous line; `None` when it is to be held back.
    pub fn admit(&self, key: &str) -> Option<u64> {
        self.admit_at(key, Instant::now())
    }

    fn admit_at(&self, key: &str, now: Instant) -> Option<u64> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let every = self.every;
        let current = |w: &Window| now.saturating_duration_since(w.started) < every;
        let key = if keys.contains_key(key) || keys.len() < MAX_KEYS {
            key
        } else {
            keys.retain(|k, w| k == OVERFLOW || current(w));
            if keys.len() < MAX_KEYS { key } else { OVERFLOW }
        };
        match keys.get_mut(key) {
            Some(w) if current(w) => {
                w.held_back += 1;
                None
            }
            Some(w) => {
                let n = w.held_back;
                *w = Window {
                    started: now,
                    held_back: 0,
                };
                Some(n)
            }
            None => {
                keys.insert(
                    key.to_owned(),
                    Window {
                        started: now,
                        held_back: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_and_interval_with_the_count_held_back() {
        let l = LogLimiter::new(Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(l.admit_at("1.2.3.4 auth_id", t), Some(0));
        for i in 1..=99 {
            assert_eq!(
                l.admit_at("1.2.3.4 auth_id", t + Duration::from_millis(i)),
                None
            );
        }
        // Another reason or another peer has its own window.
        assert_eq!(l.admit_at("1.2.3.4 malformed", t), Some(0));
        assert_eq!(l.admit_at("5.6.7.8 auth_id", t), Some(0));
        assert_eq!(
            l.admit_at("1.2.3.4 auth_id", t + Duration::from_secs(60)),
            Some(99)
        );
        assert_eq!(
            l.admit_at("1.2.3.4 auth_id", t + Duration::from_secs(61)),
            None
        );
    }

    #[test]
    fn many_peers_share_an_overflow_key_instead_of_growing_without_bound() {
        let l = LogLimiter::new(Duration::from_secs(60));
        let t = Instant::now();
        for i in 0..MAX_KEYS {
            assert_eq!(l.admit_at(&format!("peer{i}"), t), Some(0));
        }
        assert_eq!(
            l.admit_at("late-1", t),
            Some(0),
            "the overflow key logs once"
        );
        assert_eq!(l.admit_at("late-2", t), None);
        assert!(l.keys.lock().unwrap().len() <= MAX_KEYS + 1);
        // Once the interval passed, old keys are forgotten and new peers get their own again.
        assert_eq!(l.admit_at("late-3", t + Duration::from_secs(61)), Some(0));
        assert!(l.keys.lock().unwrap().len() <= 2);
    }
}
