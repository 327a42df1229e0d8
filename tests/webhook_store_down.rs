//! When the store cannot take a notification, the webhook answers 503 so that Microsoft delivers it
//! again; it never answers 200 for something it did not store.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use o365_collector::core::Secret;
use o365_collector::log_limit::{LOG_EVERY, LogLimiter};
use o365_collector::mgmt_api::uri::ResourceBase;
use o365_collector::server::ConnLimits;
use o365_collector::store::{Claimed, ContentRef, EnqueueOutcome, Store, StoreError, StoreStats};
use o365_collector::telemetry::Counters;
use o365_collector::webhook::check::{Rules, TenantRule};
use o365_collector::webhook::intake::Intake;
use o365_collector::webhook::{WebhookState, router};
use tokio_util::sync::CancellationToken;

const T: &str = "41463f53-8812-40f4-890f-865bf6e35190";

/// A store whose disk can be switched off.
#[derive(Default)]
struct Switchable {
    down: AtomicBool,
    stored: std::sync::Mutex<Vec<ContentRef>>,
}

fn down() -> StoreError {
    StoreError::Unavailable("disk full".into())
}

impl Store for Switchable {
    async fn claim_subscription_start(
        &self,
        _: &str,
        _: &str,
        _: Duration,
    ) -> Result<Option<SystemTime>, StoreError> {
        Err(down())
    }
    async fn set_next_subscription_start(
        &self,
        _: &str,
        _: &str,
        _: SystemTime,
    ) -> Result<(), StoreError> {
        Err(down())
    }
    async fn next_subscription_start(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<SystemTime>, StoreError> {
        Err(down())
    }
    async fn enqueue(&self, items: Vec<ContentRef>) -> Result<EnqueueOutcome, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(down());
        }
        let n = items.len();
        self.stored.lock().unwrap().extend(items);
        Ok(EnqueueOutcome {
            added: n,
            duplicates: 0,
        })
    }
    async fn claim_except(
        &self,
        _: usize,
        _: Duration,
        _: &[String],
    ) -> Result<Vec<Claimed>, StoreError> {
        Ok(Vec::new())
    }
    async fn release(&self, _: u64) -> Result<(), StoreError> {
        Err(down())
    }
    async fn renew(&self, _: u64, _: Duration) -> Result<(), StoreError> {
        Err(down())
    }
    async fn record_progress(&self, _: u64, _: u64) -> Result<(), StoreError> {
        Err(down())
    }
    async fn complete(&self, _: u64) -> Result<(), StoreError> {
        Err(down())
    }
    async fn reschedule(&self, _: u64, _: SystemTime, _: &str) -> Result<(), StoreError> {
        Err(down())
    }
    async fn dead_letter(&self, _: u64, _: &str) -> Result<(), StoreError> {
        Err(down())
    }
    async fn cursor(&self, _: &str, _: &str) -> Result<Option<SystemTime>, StoreError> {
        Ok(None)
    }
    async fn advance_cursor(&self, _: &str, _: &str, _: SystemTime) -> Result<(), StoreError> {
        Err(down())
    }
    async fn ledger_add(
        &self,
        _: Vec<o365_collector::store::LedgerDelta>,
    ) -> Result<(), StoreError> {
        Err(down())
    }
    async fn ledger_range(
        &self,
        _: &str,
        _: i64,
        _: i64,
    ) -> Result<Vec<o365_collector::store::LedgerRow>, StoreError> {
        Err(down())
    }
    async fn ledger_prune(&self, _: SystemTime, _: usize) -> Result<u64, StoreError> {
        Err(down())
    }
    async fn prune(&self, _: SystemTime, _: usize) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn claim_records(
        &self,
        _: &str,
        _: Vec<u128>,
        _: std::time::Duration,
    ) -> Result<Vec<bool>, StoreError> {
        Err(down())
    }
    async fn prune_records(&self, _: SystemTime, _: usize) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn tenant_backlog(&self, _: &str, _: u64) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn footprint(&self) -> Result<o365_collector::store::Footprint, StoreError> {
        Ok(Default::default())
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        Ok(StoreStats::default())
    }
    async fn dead_letters_page(
        &self,
        _: u64,
        _: usize,
    ) -> Result<Vec<o365_collector::store::DeadLetter>, StoreError> {
        Ok(Vec::new())
    }
    async fn requeue_dead(&self, _: &[u64]) -> Result<u64, StoreError> {
        Err(down())
    }
}

#[tokio::test]
async fn store_down_gives_503_and_store_up_gives_200() {
    let store = Arc::new(Switchable::default());
    let mut tenants = HashMap::new();
    tenants.insert(
        T.to_string(),
        TenantRule {
            client_id: "c".into(),
            base: ResourceBase::new("https://manage.office.com", T).unwrap(),
            content_types: vec!["Audit.General".into()],
        },
    );
    let state = Arc::new(WebhookState {
        rules: Rules {
            auth_id: Secret::new("auth-id-123"),
            tenants,
        },
        store: store.clone(),
        wake: Arc::new(tokio::sync::Notify::new()),
        counters: Arc::new(Counters::default()),
        intake: Intake::new(1 << 20, 16 << 20, Duration::from_secs(10)),
        log: LogLimiter::new(LOG_EVERY),
    });
    let shutdown = CancellationToken::new();
    let running = o365_collector::server::serve(
        "127.0.0.1:0".parse().unwrap(),
        router(state, "/hook"),
        None,
        &ConnLimits::default(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let url = format!("http://{}/hook", running.addr);
    let body = serde_json::json!([{
        "tenantId": T, "clientId": "c", "contentType": "Audit.General", "contentId": "id-1",
        "contentUri": format!("https://manage.office.com/api/v1.0/{T}/activity/feed/audit/id-1")
    }]);
    let http = reqwest::Client::new();
    let post = || {
        http.post(&url)
            .header("Webhook-AuthID", "auth-id-123")
            .json(&body)
            .send()
    };

    store.down.store(true, Ordering::SeqCst);
    assert_eq!(post().await.unwrap().status().as_u16(), 503);
    assert!(store.stored.lock().unwrap().is_empty());

    store.down.store(false, Ordering::SeqCst);
    assert_eq!(post().await.unwrap().status().as_u16(), 200);
    assert_eq!(store.stored.lock().unwrap().len(), 1);

    // Only the webhook route exists on the public listener.
    for path in ["/", "/status", "/metrics", "/subscriptions", "/admin"] {
        let r = http
            .get(format!("http://{}{path}", running.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
    }
    assert_eq!(http.get(&url).send().await.unwrap().status().as_u16(), 405);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running.task)
        .await
        .unwrap()
        .unwrap();
}
