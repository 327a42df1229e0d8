//! The admin API, on its own listener (`listen.admin`), never on the public one.
//!
//! JSON endpoints to see and steer the collector without the Azure portal:
//!
//! | route | what |
//! |---|---|
//! | `GET /subscriptions` | per tenant and content type: subscription and webhook status, webhook address |
//! | `POST /subscriptions/{content_type}/start` / `stop` | `?tenant_id=` optional (default: every tenant) |
//! | `GET /status` | queue, checkpoints, last notifications, output health, counters, uptime, mode |
//! | `POST /backfill` | lists `[start, end)` of one content type and stores what is new; `source: audit-search`: every collected type from Purview's Audit Log Query API, 180 days back |
//! | `GET /dead-letters` | blobs given up, with reason, attempts and times; `?after=SEQ&limit=N` pages |
//! | `POST /dead-letters/requeue` | `{"seqs": [..]}` or `{"all": true}`: back in the queue, attempts reset |
//! | `POST /verify` | `{tenant_id?, start, end?, repair?}`: per hour and record type, records delivered against Purview's Audit Search; the verdict goes to the ledger; `repair` delivers what is missing |
//! | `GET /completeness` | `?tenant=&from=&to=`: each hour of each content type sealed, open or incomplete (why), with its ledger counters |
//! | `GET /metrics` | Prometheus / OpenMetrics text |
//! | `GET /healthz`, `GET /readyz` | liveness; readiness (the store takes a write probe; with replicas, the clock agrees with the database's) — no token needed |
//!
//! Every other route needs `Authorization: Bearer <admin.token>` when a token is configured.
//! Secrets (client secrets, the webhook AuthID, tokens) never appear in an answer.

mod auth;
mod backfill;
pub mod cli;
mod completeness;
pub mod config;
mod dead_letters;
mod metrics;
mod state;
mod status;
mod subscriptions;
mod verify;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::store::Store;

pub use backfill::{BackfillAnswer, BackfillRequest, parse_time};
pub use completeness::{CompletenessAnswer, HourView, TypeCompleteness};
pub use dead_letters::{DeadLetterView, RequeueAnswer, RequeueRequest};
pub use metrics::{COUNTERS, counter_values};
pub use state::{AdminError, AdminState, rfc3339};
pub use verify::{VerifyAnswer, VerifyRequest};

/// The admin router: protected routes behind the bearer check, `/healthz` and `/readyz` open, and a
/// JSON 404 for everything else.
pub fn router<S: Store>(state: Arc<AdminState<S>>) -> Router {
    let protected = Router::new()
        .route("/subscriptions", get(subscriptions::list::<S>))
        .route(
            "/subscriptions/{content_type}/start",
            post(subscriptions::start::<S>),
        )
        .route(
            "/subscriptions/{content_type}/stop",
            post(subscriptions::stop::<S>),
        )
        .route("/status", get(status::status::<S>))
        .route("/backfill", post(backfill::backfill::<S>))
        .route("/dead-letters", get(dead_letters::list::<S>))
        .route("/dead-letters/requeue", post(dead_letters::requeue::<S>))
        .route("/metrics", get(metrics::metrics::<S>))
        .route("/completeness", get(completeness::completeness::<S>))
        .route("/verify", post(verify::verify::<S>))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token::<S>,
        ));
    Router::new()
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz::<S>))
        .merge(protected)
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> AdminError {
    AdminError::NotFound("no such admin endpoint".into())
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use tokio::sync::Notify;

    use super::*;
    use crate::core::Secret;
    use crate::pipeline::Tenants;
    use crate::store::{Claimed, ContentRef, EnqueueOutcome, StoreError, StoreStats};
    use crate::telemetry::Counters;
    use std::time::Duration;

    /// A store whose disk is gone: every call fails.
    struct DownStore;

    fn down<T>() -> Result<T, StoreError> {
        Err(StoreError::Unavailable("disk on fire".into()))
    }

    impl Store for DownStore {
        async fn enqueue(&self, _: Vec<ContentRef>) -> Result<EnqueueOutcome, StoreError> {
            down()
        }
        async fn claim_except(
            &self,
            _: usize,
            _: Duration,
            _: &[String],
        ) -> Result<Vec<Claimed>, StoreError> {
            down()
        }
        async fn release(&self, _: u64) -> Result<(), StoreError> {
            down()
        }
        async fn renew(&self, _: u64, _: Duration) -> Result<(), StoreError> {
            down()
        }
        async fn record_progress(&self, _: u64, _: u64) -> Result<(), StoreError> {
            down()
        }
        async fn complete(&self, _: u64) -> Result<(), StoreError> {
            down()
        }
        async fn reschedule(&self, _: u64, _: SystemTime, _: &str) -> Result<(), StoreError> {
            down()
        }
        async fn dead_letter(&self, _: u64, _: &str) -> Result<(), StoreError> {
            down()
        }
        async fn cursor(&self, _: &str, _: &str) -> Result<Option<SystemTime>, StoreError> {
            down()
        }
        async fn ledger_add(&self, _: Vec<crate::store::LedgerDelta>) -> Result<(), StoreError> {
            down()
        }
        async fn ledger_range(
            &self,
            _: &str,
            _: i64,
            _: i64,
        ) -> Result<Vec<crate::store::LedgerRow>, StoreError> {
            down()
        }
        async fn ledger_prune(&self, _: SystemTime, _: usize) -> Result<u64, StoreError> {
            down()
        }
        async fn advance_cursor(&self, _: &str, _: &str, _: SystemTime) -> Result<(), StoreError> {
            down()
        }
        async fn claim_subscription_start(
            &self,
            _: &str,
            _: &str,
            _: Duration,
        ) -> Result<Option<SystemTime>, StoreError> {
            down()
        }
        async fn set_next_subscription_start(
            &self,
            _: &str,
            _: &str,
            _: SystemTime,
        ) -> Result<(), StoreError> {
            down()
        }
        async fn next_subscription_start(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<SystemTime>, StoreError> {
            down()
        }
        async fn prune(&self, _: SystemTime, _: usize) -> Result<u64, StoreError> {
            down()
        }
        async fn footprint(&self) -> Result<crate::store::Footprint, StoreError> {
            down()
        }
        async fn claim_records(
            &self,
            _: &str,
            _: Vec<u128>,
            _: std::time::Duration,
        ) -> Result<Vec<bool>, StoreError> {
            down()
        }
        async fn prune_records(&self, _: SystemTime, _: usize) -> Result<u64, StoreError> {
            down()
        }
        async fn tenant_backlog(&self, _: &str, _: u64) -> Result<u64, StoreError> {
            down()
        }
        async fn stats(&self) -> Result<StoreStats, StoreError> {
            down()
        }
        async fn dead_letters_page(
            &self,
            _: u64,
            _: usize,
        ) -> Result<Vec<crate::store::DeadLetter>, StoreError> {
            down()
        }
        async fn requeue_dead(&self, _: &[u64]) -> Result<u64, StoreError> {
            down()
        }
    }

    async fn serve(token: Option<&str>) -> String {
        let state = Arc::new(AdminState {
            store: Arc::new(DownStore),
            tenants: Arc::new(Tenants::new()),
            counters: Arc::new(Counters::default()),
            webhook: None,
            token: token.map(Secret::new),
            wake: Arc::new(Notify::new()),
            reconcile_now: Arc::new(Notify::new()),
            started: SystemTime::now(),
            completeness: Default::default(),
            completeness_metrics: Default::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router(state)).await;
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn store_down_shows_in_readyz_status_and_metrics() {
        let base = serve(None).await;
        let http = reqwest::Client::new();
        let healthz = http.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(healthz.status(), 200);
        let readyz = http.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(readyz.status(), 503);
        let body: serde_json::Value = readyz.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("disk on fire"));

        // No token configured (loopback only): allowed without Authorization.
        let status: serde_json::Value = http
            .get(format!("{base}/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(status["mode"], "pull");
        assert!(
            status["queue"]["error"]
                .as_str()
                .unwrap()
                .contains("disk on fire")
        );

        let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(metrics.status(), 200);
        let text = metrics.text().await.unwrap();
        assert!(text.contains("o365_store_up 0\n"), "{text}");
        assert!(!text.contains("o365_queue_pending"), "{text}");
        assert!(text.ends_with("# EOF\n"));

        let backfill = http
            .post(format!("{base}/backfill"))
            .json(&serde_json::json!({"content_type": "Audit.General", "start": "2026-01-01"}))
            .send()
            .await
            .unwrap();
        assert_eq!(backfill.status(), 400);
    }

    #[tokio::test]
    async fn configured_token_guards_everything_but_health() {
        let base = serve(Some("0123456789abcdef0123")).await;
        let http = reqwest::Client::new();
        let r = http.get(format!("{base}/status")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let r = http
            .get(format!("{base}/status"))
            .bearer_auth("0123456789abcdef0123")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = http.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
}
