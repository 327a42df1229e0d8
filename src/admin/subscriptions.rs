//! `GET /subscriptions`, `POST /subscriptions/{content_type}/start|stop`: the subscriptions of every
//! tenant as Microsoft reports them, and starting or stopping one content type.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::state::{AdminError, AdminState};
use crate::mgmt_api::wire::CONTENT_TYPES;
use crate::mgmt_api::wire::Subscription;
use crate::pipeline::TenantRuntime;
use crate::pipeline::lifecycle::{KeepError, StartOutcome, needs_start, start_one};
use crate::store::Store;
use crate::webhook::config::WebhookConfig;

/// `GET /subscriptions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionsAnswer {
    /// `push` or `pull`.
    pub mode: String,
    pub tenants: Vec<TenantSubscriptions>,
}

/// One tenant's subscriptions; `error` when its `subscriptions/list` failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantSubscriptions {
    pub tenant_id: String,
    /// The configured `tenant_name`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub subscriptions: Vec<SubscriptionView>,
}

/// One content type's subscription, without the webhook's AuthID.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionView {
    pub content_type: String,
    /// Collected by this tenant's configuration.
    pub configured: bool,
    /// Microsoft's status (`enabled`, `disabled`), or `not started` when the list has no entry.
    pub status: String,
    pub webhook: Option<WebhookView>,
    /// Why the subscription keeper would start it again (configured types only).
    pub needs_start: Option<String>,
}

/// A subscription's webhook as listed; the AuthID is left out on purpose.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookView {
    pub status: Option<String>,
    pub address: Option<String>,
    pub expiration: Option<String>,
}

/// `POST /subscriptions/{content_type}/start|stop`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeAnswer {
    pub action: String,
    pub content_type: String,
    pub results: Vec<ChangeResult>,
    /// Set when at least one tenant failed (the answer is then 502).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What happened for one tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeResult {
    pub tenant_id: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// After `start`: the subscription as Microsoft answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<SubscriptionView>,
    /// A `start` that Microsoft's 15-minute rule does not allow yet: when it is (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_allowed_start: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct TenantQuery {
    tenant_id: Option<String>,
}

fn view(
    content_type: &str,
    sub: Option<&Subscription>,
    configured: bool,
    webhook: Option<&WebhookConfig>,
) -> SubscriptionView {
    SubscriptionView {
        content_type: content_type.to_string(),
        configured,
        status: sub.map_or_else(|| "not started".to_string(), |s| s.status.clone()),
        webhook: sub.and_then(|s| s.webhook.as_ref()).map(|w| WebhookView {
            status: w.status.clone(),
            address: w.address.clone(),
            expiration: w.expiration.clone(),
        }),
        needs_start: if configured {
            needs_start(sub, webhook).map(str::to_string)
        } else {
            None
        },
    }
}

/// Configured content types first (in configuration order), then any other the API lists.
fn tenant_views(
    tenant: &TenantRuntime,
    listed: &[Subscription],
    webhook: Option<&WebhookConfig>,
) -> Vec<SubscriptionView> {
    let mut out: Vec<SubscriptionView> = tenant
        .cfg
        .content_types
        .iter()
        .map(|ct| {
            let sub = listed
                .iter()
                .find(|s| s.content_type.eq_ignore_ascii_case(ct));
            view(ct, sub, true, webhook)
        })
        .collect();
    for s in listed {
        let configured = tenant
            .cfg
            .content_types
            .iter()
            .any(|ct| ct.eq_ignore_ascii_case(&s.content_type));
        if !configured {
            out.push(view(&s.content_type, Some(s), false, webhook));
        }
    }
    out
}

pub(super) async fn list<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
) -> Json<SubscriptionsAnswer> {
    let webhook = state.webhook.as_ref();
    let calls = state.sorted_tenants().into_iter().map(|t| async move {
        match t.client.list_subscriptions().await {
            Ok(listed) => TenantSubscriptions {
                tenant_id: t.cfg.tenant_id.clone(),
                tenant_name: t.cfg.tenant_name.clone(),
                error: None,
                subscriptions: tenant_views(t, &listed, webhook),
            },
            Err(e) => TenantSubscriptions {
                tenant_id: t.cfg.tenant_id.clone(),
                tenant_name: t.cfg.tenant_name.clone(),
                error: Some(format!("subscriptions/list failed: {e}")),
                subscriptions: Vec::new(),
            },
        }
    });
    let tenants = futures_util::future::join_all(calls).await;
    Json(SubscriptionsAnswer {
        mode: state.mode().to_string(),
        tenants,
    })
}

/// The canonical spelling of one of the API's content types.
pub(super) fn canonical_content_type(raw: &str) -> Result<&'static str, AdminError> {
    CONTENT_TYPES
        .iter()
        .find(|ct| ct.eq_ignore_ascii_case(raw.trim()))
        .copied()
        .ok_or_else(|| {
            AdminError::BadRequest(format!(
                "unknown content type {raw:?}; one of {}",
                CONTENT_TYPES.join(", ")
            ))
        })
}

fn collects(t: &TenantRuntime, ct: &str) -> bool {
    t.cfg
        .content_types
        .iter()
        .any(|c| c.eq_ignore_ascii_case(ct))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Start,
    Stop,
}

/// The tenants a change applies to: the named one, or every tenant collecting the content type.
fn targets<'a, S>(
    state: &'a AdminState<S>,
    tenant_id: Option<&str>,
    ct: &str,
    change: Change,
) -> Result<Vec<&'a Arc<TenantRuntime>>, AdminError> {
    match tenant_id.map(str::trim).filter(|t| !t.is_empty()) {
        Some(id) => {
            let t = state
                .tenant(id)
                .ok_or_else(|| AdminError::NotFound(format!("tenant {id} is not configured")))?;
            if change == Change::Start && !collects(t, ct) {
                return Err(AdminError::BadRequest(format!(
                    "tenant {} does not collect {ct}: add it to content_type in the configuration first",
                    t.cfg.tenant_id
                )));
            }
            Ok(vec![t])
        }
        None => {
            let all: Vec<_> = state
                .sorted_tenants()
                .into_iter()
                .filter(|t| collects(t, ct))
                .collect();
            if all.is_empty() {
                return Err(AdminError::BadRequest(format!(
                    "no tenant collects {ct}; name one with ?tenant_id="
                )));
            }
            Ok(all)
        }
    }
}

async fn change<S: Store>(
    state: Arc<AdminState<S>>,
    content_type: String,
    query: Result<Query<TenantQuery>, QueryRejection>,
    change: Change,
) -> Result<Response, AdminError> {
    let Query(q) = query.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    let ct = canonical_content_type(&content_type)?;
    let tenants = targets(&state, q.tenant_id.as_deref(), ct, change)?;
    let webhook = state.webhook.as_ref();
    let store = state.store.as_ref();
    let calls = tenants.into_iter().map(|t| async move {
        let tenant_id = t.cfg.tenant_id.clone();
        let outcome = match change {
            Change::Start => {
                t.set_paused(ct, false);
                match start_one(t, store, ct, webhook).await {
                    Ok(StartOutcome::Started(s)) => {
                        Ok(Some(view(ct, Some(&s), collects(t, ct), webhook)))
                    }
                    Ok(StartOutcome::NotBefore(until)) => {
                        let at = super::state::rfc3339(until);
                        let secs = until
                            .duration_since(std::time::SystemTime::now())
                            .unwrap_or_default()
                            .as_secs();
                        return ChangeResult {
                            tenant_id,
                            ok: false,
                            error: Some(format!(
                                "not started: Microsoft allows one start of a subscription every 15 minutes, \
                                 and {ct} of this tenant was started (or refused) less than 15 minutes ago; \
                                 the next start is allowed at {at} (in {secs} s). The collector starts it \
                                 then by itself and lists {ct} by pull until then, so nothing is missed"
                            )),
                            subscription: None,
                            next_allowed_start: Some(at),
                        };
                    }
                    Err(KeepError::Api(e)) => Err(e),
                    Err(KeepError::Store(e)) => {
                        return ChangeResult {
                            tenant_id,
                            ok: false,
                            error: Some(format!(
                                "not started: the store cannot say when this subscription was last started ({e}); \
                                 no start is sent without it (Microsoft allows one every 15 minutes)"
                            )),
                            subscription: None,
                            next_allowed_start: None,
                        };
                    }
                }
            }
            Change::Stop => {
                let stopped = t.client.stop_subscription(ct).await.map(|()| None);
                if stopped.is_ok() {
                    t.set_paused(ct, true);
                }
                stopped
            }
        };
        match outcome {
            Ok(subscription) => {
                tracing::info!(tenant.id = %tenant_id, content.type = ct,
                               action = if change == Change::Start { "start" } else { "stop" },
                               "subscription changed through the admin API");
                ChangeResult {
                    tenant_id,
                    ok: true,
                    error: None,
                    subscription,
                    next_allowed_start: None,
                }
            }
            Err(e) => ChangeResult {
                tenant_id,
                ok: false,
                error: Some(match e.hint() {
                    Some(hint) => format!("{e} ({hint})"),
                    None => e.to_string(),
                }),
                subscription: None,
                next_allowed_start: None,
            },
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let failed = results.iter().filter(|r| !r.ok).count();
    let waiting = results
        .iter()
        .filter(|r| r.next_allowed_start.is_some())
        .count();
    if waiting > 0 {
        // A content type waiting for its start is listed by pull from now on: wake the puller.
        state.reconcile_now.notify_one();
    }
    let note = match change {
        Change::Stop if results.iter().any(|r| r.ok) => Some(
            "stopped until started again through the admin API or until the collector restarts; \
             remove the content type from the configuration to stop it for good"
                .to_string(),
        ),
        Change::Start if results.iter().any(|r| r.ok) => {
            // Content published while it was stopped is listed now.
            state.reconcile_now.notify_one();
            None
        }
        _ => None,
    };
    let answer = ChangeAnswer {
        action: match change {
            Change::Start => "start",
            Change::Stop => "stop",
        }
        .to_string(),
        content_type: ct.to_string(),
        error: (failed > 0).then(|| format!("{failed} of {} tenants failed", results.len())),
        results,
        note,
    };
    let status = if failed > waiting {
        StatusCode::BAD_GATEWAY
    } else if waiting > 0 {
        // Only the 15-minute rule stood in the way: come back at `next_allowed_start`.
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::OK
    };
    Ok((status, Json(answer)).into_response())
}

pub(super) async fn start<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    Path(content_type): Path<String>,
    query: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Response, AdminError> {
    change(state, content_type, query, Change::Start).await
}

pub(super) async fn stop<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    Path(content_type): Path<String>,
    query: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Response, AdminError> {
    change(state, content_type, query, Change::Stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_canonical() {
        assert_eq!(
            canonical_content_type("audit.general").unwrap(),
            "Audit.General"
        );
        assert_eq!(canonical_content_type(" DLP.All ").unwrap(), "DLP.All");
        assert!(matches!(
            canonical_content_type("Audit.Nope"),
            Err(AdminError::BadRequest(_))
        ));
    }

    #[test]
    fn view_leaves_the_auth_id_out() {
        let sub = Subscription {
            content_type: "Audit.General".into(),
            status: "enabled".into(),
            webhook: Some(crate::mgmt_api::wire::WebhookState {
                status: Some("enabled".into()),
                address: Some("https://c.example/h".into()),
                auth_id: Some("very-secret-auth-id".into()),
                expiration: None,
            }),
        };
        let v = view("Audit.General", Some(&sub), true, None);
        let json = serde_json::to_string(&v).unwrap();
        assert!(!json.contains("very-secret-auth-id"), "{json}");
        assert!(json.contains("https://c.example/h"));
        let missing = view("Audit.Exchange", None, true, None);
        assert_eq!(missing.status, "not started");
        assert_eq!(missing.needs_start.as_deref(), Some("missing"));
    }
}
