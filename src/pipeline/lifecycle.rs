//! Keeps one subscription per configured content type in place: started, enabled, and (in push mode)
//! with a webhook at our address that Microsoft has not disabled.
//!
//! Microsoft's 15-minute rule: once a start was requested, the same subscription (tenant × content
//! type) must not be started again for 15 minutes. Every start first takes the right in the store
//! ([`Store::claim_subscription_start`], shared by the replicas, kept across restarts), so no two
//! starts of one subscription are ever sent within 15 minutes, whichever replica sends them. A start
//! Microsoft refuses anyway (429, e.g. one sent by another tool) moves the next allowed start to its
//! `Retry-After`. While a content type waits, the puller lists it every `pull.interval` (in push
//! mode too), so no record waits on the rule; the wait shows in `/status`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::tenant::{TenantRuntime, Tenants};
use crate::mgmt_api::ApiError;
use crate::mgmt_api::throttle::backoff;
use crate::mgmt_api::wire::Subscription;
use crate::store::{SUBSCRIPTION_START_WAIT, Store, StoreError};
use crate::telemetry::Counters;
use crate::webhook::config::WebhookConfig;

/// How often healthy subscriptions are looked at again (at most; `pull.reconcile_every` when shorter).
pub const RECHECK_EVERY: Duration = Duration::from_secs(300);
/// The source name under which the keeper reports to the tenant's health.
pub const SUBSCRIPTIONS: &str = "subscriptions";
/// How often the keeper of a tenant another replica holds looks whether it holds it now.
const NOT_HELD_RECHECK: Duration = Duration::from_secs(1);

/// What [`ensure`] did for one content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    AlreadyRunning,
    Started {
        reason: &'static str,
    },
    /// It needs a start that the 15-minute rule does not allow before `until`.
    Waiting {
        reason: &'static str,
        until: SystemTime,
    },
}

/// Why the keeper could not look after a tenant's subscriptions.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one start attempt of one subscription came to ([`start_one`]).
#[derive(Debug)]
pub enum StartOutcome {
    Started(Subscription),
    /// Not sent (or refused by Microsoft): the next start is allowed at this time.
    NotBefore(SystemTime),
}

/// The next allowed start of a tenant's content type, `None` when a start may be sent now: what
/// `check-config` and operators are shown (the store's record, shared by the replicas).
pub async fn next_allowed_start<S: Store>(
    store: &S,
    tenant_id: &str,
    content_type: &str,
) -> Result<Option<SystemTime>, StoreError> {
    store.next_subscription_start(tenant_id, content_type).await
}

/// Sends one `subscriptions/start` if the 15-minute rule allows it (taking the right in the
/// store first), and notes a refusal's `Retry-After` there. Records the wait on the tenant (for
/// the puller and `/status`) either way. Used by the keeper and the admin API.
pub async fn start_one<S: Store>(
    tenant: &TenantRuntime,
    store: &S,
    content_type: &str,
    webhook: Option<&WebhookConfig>,
) -> Result<StartOutcome, KeepError> {
    let tid = &tenant.cfg.tenant_id;
    if let Some(until) = store
        .claim_subscription_start(tid, content_type, SUBSCRIPTION_START_WAIT)
        .await?
    {
        tenant.set_start_wait(content_type, Some(until));
        return Ok(StartOutcome::NotBefore(until));
    }
    let hook = webhook.map(|w| (w.address.as_str(), &w.auth_id));
    match tenant.client.start_subscription(content_type, hook).await {
        Ok(sub) => {
            tenant.set_start_wait(content_type, None);
            Ok(StartOutcome::Started(sub))
        }
        Err(e) if refused_start(&e) => {
            // Someone else started it, or Microsoft counts differently: wait as it says.
            let until = SystemTime::now() + e.retry_after().unwrap_or(SUBSCRIPTION_START_WAIT);
            store
                .set_next_subscription_start(tid, content_type, until)
                .await?;
            tenant.set_start_wait(content_type, Some(until));
            Ok(StartOutcome::NotBefore(until))
        }
        Err(e) => Err(e.into()),
    }
}

/// A start refused by the rate rules (HTTP 429): try again at `Retry-After`, not with back-off.
fn refused_start(e: &ApiError) -> bool {
    matches!(e, ApiError::Http { status: 429, .. })
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

/// Lists the tenant's subscriptions and starts those that need it, as the 15-minute rule allows.
pub async fn ensure<S: Store>(
    tenant: &TenantRuntime,
    store: &S,
    webhook: Option<&WebhookConfig>,
) -> Result<Vec<(String, Action)>, KeepError> {
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
            None => {
                tenant.set_start_wait(ct, None);
                done.push((ct.clone(), Action::AlreadyRunning));
            }
            Some(reason) => match start_one(tenant, store, ct, webhook).await? {
                StartOutcome::Started(_) => {
                    info!(tenant.id = %tenant.cfg.tenant_id, content.type = %ct, reason, "subscription started");
                    done.push((ct.clone(), Action::Started { reason }));
                }
                StartOutcome::NotBefore(until) => {
                    info!(tenant.id = %tenant.cfg.tenant_id, content.type = %ct, reason,
                          next_start = %chrono::DateTime::<chrono::Utc>::from(until).format("%Y-%m-%dT%H:%M:%SZ"),
                          "subscription needs a start that Microsoft allows once every 15 minutes; listing by pull until then");
                    done.push((ct.clone(), Action::Waiting { reason, until }));
                }
            },
        }
    }
    Ok(done)
}

/// Runs [`ensure`] for every tenant at start and every `every`; a failing tenant is retried with
/// back-off without holding up the others. Each start is logged and counted.
pub async fn keep<S: Store>(
    tenants: Arc<Tenants>,
    store: Arc<S>,
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
            let store = store.clone();
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
                    let waited_before = !t.start_waits().is_empty();
                    let wait = match ensure(&t, store.as_ref(), webhook.as_ref()).await {
                        Ok(actions) => {
                            failures = 0;
                            t.health.succeeded(&t.cfg, SUBSCRIPTIONS);
                            let started = actions.iter().filter(|(_, a)| matches!(a, Action::Started { .. })).count();
                            Counters::add(&counters.subscriptions_started, started as u64);
                            let next_start = actions
                                .iter()
                                .filter_map(|(_, a)| match a {
                                    Action::Waiting { until, .. } => Some(*until),
                                    _ => None,
                                })
                                .min();
                            if started > 0 || (next_start.is_some() && !waited_before) {
                                // A (re)started subscription means notifications may have been
                                // missed; one that waits is listed by pull from now on.
                                reconcile_now.notify_one();
                            }
                            match next_start {
                                // Back at the allowed time (a little after, for clock rounding).
                                Some(until) => until
                                    .duration_since(SystemTime::now())
                                    .unwrap_or_default()
                                    .saturating_add(Duration::from_millis(200))
                                    .min(every),
                                None => every,
                            }
                        }
                        Err(KeepError::Api(e)) => {
                            failures += 1;
                            let wait = e
                                .retry_after()
                                .unwrap_or_else(|| backoff(Duration::from_secs(2), Duration::from_secs(300), failures));
                            // The tenant's health logs when the problem starts and ends.
                            t.health.failed(&t.cfg, SUBSCRIPTIONS, &e);
                            debug!(tenant.id = %t.cfg.tenant_id, error = %e, retry_in_s = wait.as_secs(), "cannot ensure subscriptions");
                            wait
                        }
                        Err(KeepError::Store(e)) => {
                            failures += 1;
                            let wait = backoff(Duration::from_secs(2), Duration::from_secs(300), failures);
                            warn!(tenant.id = %t.cfg.tenant_id, error = %e, retry_in_s = wait.as_secs(),
                                  "cannot read the store's record of subscription starts; no start is sent until it answers");
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
