//! Throttling over real HTTPS against the emulator: a tenant over the API quota gets 429 with
//! Retry-After, holds all its calls until then and succeeds afterwards; another tenant of the same
//! process is not slowed meanwhile. Counted in `Counters::throttled`.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use o365_collector::config::{Credential, Secret, TenantConfig};
use o365_collector::emulator::{Emulator, TenantSpec};
use o365_collector::mgmt_api::{ApiError, ManagementClient};
use o365_collector::telemetry::Counters;
use support::*;

const TENANT_B: &str = "9b0b6c1e-2f3a-4d5e-8f70-112233445566";
const CLIENT_B: &str = "7c1d2e3f-4a5b-4c6d-8e7f-908172635445";
const SECRET_B: &str = "second-tenant-secret";
const QUOTA: u32 = 3;

fn tenant(emu: &Emulator, tenant_id: &str, client_id: &str, secret: &str) -> TenantConfig {
    TenantConfig {
        tenant_id: tenant_id.into(),
        client_id: client_id.into(),
        credential: Credential::Secret(Secret::new(secret)),
        resource: emu.base_url().into(),
        authority: emu.base_url().into(),
        publisher_id: tenant_id.into(),
        content_types: vec!["Audit.General".into()],
        output: "file".into(),
        encoding: encoding_rs::UTF_8,
        format: Default::default(),
        request_budget: Default::default(),
        graph: Default::default(),
        tenant_name: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_tenant_waits_out_retry_after_and_others_are_not_slowed() {
    let emu = emulator(|cfg| {
        cfg.tenants
            .push(TenantSpec::with_secret(TENANT_B, CLIENT_B, SECRET_B));
        cfg.throttle_per_minute = QUOTA;
    })
    .await;
    let counters_a = Arc::new(Counters::default());
    let counters_b = Arc::new(Counters::default());
    let a = Arc::new(
        ManagementClient::new(client(&emu), &tenant(&emu, TENANT, CLIENT, SECRET))
            .unwrap()
            .with_counters(counters_a.clone()),
    );
    let b = ManagementClient::new(client(&emu), &tenant(&emu, TENANT_B, CLIENT_B, SECRET_B))
        .unwrap()
        .with_counters(counters_b.clone());

    // Tenant A spends its emulator quota; the next call is answered 429 with Retry-After.
    for _ in 0..QUOTA {
        a.list_subscriptions().await.unwrap();
    }
    let err = a.list_subscriptions().await.unwrap_err();
    let retry_after = match &err {
        ApiError::Http {
            status: 429,
            code,
            retry_after: Some(r),
            ..
        } => {
            assert_eq!(code, "AF429");
            *r
        }
        other => panic!("expected 429 with Retry-After, got {other:?}"),
    };
    let throttled_at = Instant::now();
    assert!(err.is_retryable());
    assert_eq!(Counters::get(&counters_a.throttled), 1);
    assert_eq!(Counters::get(&counters_a.token_refreshes), 1);
    let held = a.throttled_for().expect("tenant A is held");
    assert!(held > retry_after.saturating_sub(Duration::from_secs(2)));

    // A's next call waits for the Retry-After instead of asking again.
    let pending = {
        let a = a.clone();
        tokio::spawn(async move { a.list_subscriptions().await })
    };

    // Meanwhile tenant B uses its own full quota without waiting on A.
    for _ in 0..QUOTA {
        b.list_subscriptions().await.unwrap();
    }
    assert!(b.throttled_for().is_none());
    assert_eq!(Counters::get(&counters_b.throttled), 0);
    assert!(
        !pending.is_finished(),
        "tenant A's call is still held while tenant B got all its answers"
    );

    // After the Retry-After, A's held call goes out once and succeeds.
    wait_for(
        retry_after + Duration::from_secs(30),
        "tenant A's held call",
        || {
            let done = pending.is_finished();
            async move { done }
        },
    )
    .await;
    pending.await.unwrap().unwrap();
    assert!(
        throttled_at.elapsed() >= retry_after.saturating_sub(Duration::from_secs(1)),
        "the held call did not go out before Retry-After"
    );
    assert_eq!(
        Counters::get(&counters_a.throttled),
        1,
        "no further 429: the client did not ask before Retry-After"
    );
    assert!(a.throttled_for().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_budget_keeps_a_busy_tenant_under_the_quota() {
    // Emulator quota 5/min; the client allows itself 4/min: the fifth call waits on the client's
    // own budget instead of drawing a 429.
    let emu = emulator(|cfg| cfg.throttle_per_minute = 5).await;
    let counters = Arc::new(Counters::default());
    let api = Arc::new(
        ManagementClient::new(client(&emu), &tenant(&emu, TENANT, CLIENT, SECRET))
            .unwrap()
            .with_request_budget(4)
            .with_counters(counters.clone()),
    );
    for _ in 0..4 {
        api.list_subscriptions().await.unwrap();
    }
    let fifth = {
        let api = api.clone();
        tokio::spawn(async move { api.list_subscriptions().await })
    };
    // Give the call every chance to go out (it would be answered at once if it did).
    let other = ManagementClient::new(client(&emu), &tenant(&emu, TENANT, CLIENT, SECRET)).unwrap();
    other.list_subscriptions().await.unwrap();
    assert!(!fifth.is_finished(), "the fifth call waits for the budget");
    fifth.abort();
    assert_eq!(Counters::get(&counters.throttled), 0);
}
