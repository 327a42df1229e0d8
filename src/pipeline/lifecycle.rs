//! Keeps one subscription per configured content type in place: started, enabled, and (in push mode)
//! with a webhook at our address that Microsoft has not disabled.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::tenant::{TenantRuntime, Tenants};
use crate::mgmt_api::ApiError;
use crate::mgmt_api::throttle::backoff;
use crate::mgmt_api::wire::Subscription;
use crate::telemetry::Counters;
use crate::webhook::config::WebhookConfig;

/// How often healthy subscriptions are looked at again (at most; `pull.reconcile_every` when shorter).
pub const RECHECK_EVERY: Duration = Duration::from_secs(300);
/// How often the keeper of a tenant another replica holds looks whether it holds it now.
const NOT_HELD_RECHECK: Duration = Duration::from_secs(1);

/// What [`ensure`] did for one content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    AlreadyRunning,
    Started { reason: &'static str },
}

/// Why a subscription needs a `start`, or `None` when it is as configured.
pub fn needs_start(
    current: Option<&Subscription>,
    webhook: Option<&WebhookConfig>,
) -> Option<&'static str> {
    let Some(sub) = current else {
        return Some("missing");
    };
    if !sub.status.eq_ignore_ascii_case("enabled") {
        return Some("not enabled");
    }
    let want = webhook?;
    let Some(hook) = &sub.webhook else {
        return Some("no webhook");
    };
    if !hook
        .status
        .as_deref()
        .unwrap_or("enabled")
        .eq_ignore_ascii_case("enabled")
    {
        return Some("webhook disabled or expired");
    }
    if hook.address.as_deref() != Some(want.address.as_str()) {
        return Some("webhook address differs");
    }
    None
}

/// Lists the tenant's subscriptions and starts those that need it.
pub async fn ensure(
    tenant: &TenantRuntime,
    webhook: Option<&WebhookConfig>,
) -> Result<Vec<(String, Action)>, ApiError> {
    let current = tenant.client.list_subscriptions().await?;
    let mut done = Vec::new();
    for ct in tenant
        .cfg
        .content_types
        .iter()
        .filter(|ct| !tenant.is_paused(ct))
    {
        let sub = current
            .iter()
            .find(|s| s.content_type.eq_ignore_ascii_case(ct));
        match needs_start(sub, webhook) {
            None => done.push((ct.clone(), Action::AlreadyRunning)),
            Some(reason) => {
                let hook = webhook.map(|w| (w.address.as_str(), &w.auth_id));
                tenant.client.start_subscription(ct, hook).await?;
                info!(tenant.id = %tenant.cfg.tenant_id, content.type = %ct, reason, "subscription started");
                done.push((ct.clone(), Action::Started { reason }));
            }
        }
    }
    Ok(done)
}

/// Runs [`ensure`] for every tenant at start and every `every`; a failing tenant is retried with
/// back-off without holding up the others. Each start is logged and counted.
pub async fn keep(
    tenants: Arc<Tenants>,
    webhook: Option<WebhookConfig>,
    every: Duration,
    counters: Arc<Counters>,
    reconcile_now: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let tasks: Vec<_> = tenants
        .values()
        .cloned()
        .map(|t| {
            let webhook = webhook.clone();
            let shutdown = shutdown.clone();
            let counters = counters.clone();
            let reconcile_now = reconcile_now.clone();
            tokio::spawn(async move {
                let mut failures = 0u32;
                loop {
                    if !t.listing.held() {
                        // Another replica keeps this tenant's subscriptions (tenant_lease).
                        tokio::select! {
                            _ = tokio::time::sleep(every.min(NOT_HELD_RECHECK)) => continue,
                            _ = shutdown.cancelled() => return,
                        }
                    }
                    let wait = match ensure(&t, webhook.as_ref()).await {
                        Ok(actions) => {
                            failures = 0;
                            let started = actions.iter().filter(|(_, a)| matches!(a, Action::Started { .. })).count();
                            Counters::add(&counters.subscriptions_started, started as u64);
                            if started > 0 {
                                // A (re)started subscription means notifications may have been missed.
                                reconcile_now.notify_one();
                            }
                            every
                        }
                        Err(e) => {
                            failures += 1;
                            let wait = e
                                .retry_after()
                                .unwrap_or_else(|| backoff(Duration::from_secs(2), Duration::from_secs(300), failures));
                            match e.hint() {
                                Some(hint) => warn!(tenant.id = %t.cfg.tenant_id, error = %e, retry_in_s = wait.as_secs(), hint, "cannot ensure subscriptions"),
                                None => warn!(tenant.id = %t.cfg.tenant_id, error = %e, retry_in_s = wait.as_secs(), "cannot ensure subscriptions"),
                            }
                            wait
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Secret;
    use crate::mgmt_api::wire::WebhookState;

    fn hook(addr: &str) -> WebhookConfig {
        WebhookConfig {
            address: addr.into(),
            auth_id: Secret::new("x"),
            path: "/".into(),
            ..WebhookConfig::default()
        }
    }

    fn sub(status: &str, webhook: Option<(&str, &str)>) -> Subscription {
        Subscription {
            content_type: "Audit.General".into(),
            status: status.into(),
            webhook: webhook.map(|(s, a)| WebhookState {
                status: Some(s.into()),
                address: Some(a.into()),
                auth_id: None,
                expiration: None,
            }),
        }
    }

    #[test]
    fn decides_when_to_start() {
        let w = hook("https://c.example/h");
        assert_eq!(needs_start(None, Some(&w)), Some("missing"));
        assert_eq!(
            needs_start(Some(&sub("disabled", None)), Some(&w)),
            Some("not enabled")
        );
        assert_eq!(
            needs_start(Some(&sub("enabled", None)), Some(&w)),
            Some("no webhook")
        );
        assert_eq!(needs_start(Some(&sub("enabled", None)), None), None);
        let disabled = sub("enabled", Some(("disabled", "https://c.example/h")));
        assert_eq!(
            needs_start(Some(&disabled), Some(&w)),
            Some("webhook disabled or expired")
        );
        let moved = sub("enabled", Some(("enabled", "https://old.example/h")));
        assert_eq!(
            needs_start(Some(&moved), Some(&w)),
            Some("webhook address differs")
        );
        let ok = sub("enabled", Some(("enabled", "https://c.example/h")));
        assert_eq!(needs_start(Some(&ok), Some(&w)), None);
    }
}
