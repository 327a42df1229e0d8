//! Throttling over real HTTPS against the emulator: a tenant over the API quota gets 429 with
//! Retry-After, holds all its calls until then and succeeds afterwards; another tenant of the same
//! process is not slowed meanwhile. Counted in `Counters::throttled`.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use o365_collector::config::{Credential, TenantConfig};
use o365_collector::core::Secret;
use o365_collector::mgmt_api::{ApiError, ManagementClient};
use o365_collector::telemetry::Counters;
use o365_emulator::{Emulator, TenantSpec};
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

/// The client's own budget keeps a busy tenant under Microsoft's quota: with a budget of 10 a
/// minute (a burst of 10, then one every 6 s) and an API quota of 11, the eleventh call waits for
/// the budget instead of going out at once, and is answered without a 429. The test waits for
/// that call's answer, then reads from the emulator's request log when it went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_budget_keeps_a_busy_tenant_under_the_quota() {
    const BUDGET: u32 = 10;
    let interval = Duration::from_secs(60) / BUDGET;
    let emu = emulator(|cfg| cfg.throttle_per_minute = BUDGET + 1).await;
    let counters = Arc::new(Counters::default());
    let api = ManagementClient::new(client(&emu), &tenant(&emu, TENANT, CLIENT, SECRET))
        .unwrap()
        .with_request_budget(BUDGET)
        .with_counters(counters.clone());
    // Taken before the first call, so the budget's clock starts no earlier than this.
    let started = chrono::Utc::now();
    for _ in 0..BUDGET {
        api.list_subscriptions().await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(120), api.list_subscriptions())
        .await
        .expect("the call over the budget is answered once the budget allows it")
        .expect("answered, not refused");
    assert_eq!(Counters::get(&counters.throttled), 0, "no 429 drawn");

    let calls: Vec<o365_emulator::ApiRequest> = control_get(&emu, "requests", TENANT).await;
    let arrivals: Vec<_> = calls
        .iter()
        .filter(|r| r.operation == "ListSubscriptions")
        .map(|r| r.at)
        .collect();
    assert_eq!(
        arrivals.len(),
        BUDGET as usize + 1,
        "each call went out once"
    );
    let held = (arrivals[BUDGET as usize] - started).to_std().unwrap();
    // A lower bound: a slow machine only makes it later. Half a second of slack for the clocks.
    assert!(
        held + Duration::from_millis(500) >= interval,
        "the call over the budget went out {held:?} after the start, before the budget allowed ({interval:?})"
    );
}
