//! `check-config --online`: the preflight users run once before the first start. For each tenant
//! it signs in, lists the subscriptions, lists one hour of content per content type and reads one
//! page of each Graph feed; in push mode it asks the public webhook address to answer a validation
//! call the way Microsoft would, from outside (through `outbound.proxy`). One line per check:
//! passed, or the problem and its fix, Microsoft's codes turned into advice by
//! [`health::hint`]. Nothing is started, stopped or stored: a failed check changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, TenantConfig};
use crate::graph::GraphFeed;
use crate::graph::client::GraphClient;
use crate::mgmt_api::auth::{TokenSource, without_query};
use crate::mgmt_api::{ApiError, ManagementClient, WEBHOOK_VALIDATION_HINT, http_client};
use crate::pipeline::graph_puller::graph_time;
use crate::pipeline::health;
use crate::pipeline::puller::api_time;
use crate::server;
use crate::store::any::StoreConfig;
use crate::store::embedded::FILE_NAME as EMBEDDED_FILE;
use crate::store::{EmbeddedStore, PostgresStore, Store};
use crate::webhook::config::WebhookConfig;

/// Longest wait for one call: a preflight answers in seconds or says why not.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Tenants checked at once.
const TENANTS_AT_ONCE: usize = 8;
/// How far back content and Graph records are listed.
const LOOK_BACK: TimeDelta = TimeDelta::hours(1);
/// Longest problem text kept (Microsoft's first line is enough).
const PROBLEM_MAX: usize = 300;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed(String),
    Failed {
        problem: String,
        fix: String,
    },
    /// Not run because an earlier check of the tenant failed (the reason).
    NotChecked(String),
}

/// One printed line: who (a tenant, or `webhook`), what, and how it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub subject: String,
    pub check: String,
    pub verdict: Verdict,
}

/// Every line, in the order the checks ran.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<Line>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| matches!(l.verdict, Verdict::Failed { .. }))
            .count()
    }

    /// 0 when every check passed, 2 when any failed.
    pub fn exit_code(&self) -> i32 {
        if self.failed() == 0 { 0 } else { 2 }
    }

    /// `passed  <subject> <check>: <detail>` / `FAILED  <subject> <check>: <problem> — fix: <fix>`,
    /// then a summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            let line = match &l.verdict {
                Verdict::Passed(d) => format!("passed       {} {}: {d}", l.subject, l.check),
                Verdict::Failed { problem, fix } => {
                    format!(
                        "FAILED       {} {}: {problem} — fix: {fix}",
                        l.subject, l.check
                    )
                }
                Verdict::NotChecked(why) => {
                    format!("not checked  {} {}: {why}", l.subject, l.check)
                }
            };
            out.push_str(&line);
            out.push('\n');
        }
        let n = self.failed();
        out.push_str(&match n {
            0 => format!(
                "online checks: all {} passed\n",
                self.lines
                    .iter()
                    .filter(|l| matches!(l.verdict, Verdict::Passed(_)))
                    .count()
            ),
            _ => format!("online checks: {n} failed of {}\n", self.lines.len()),
        });
        out
    }

    fn push(&mut self, subject: &str, check: impl Into<String>, verdict: Verdict) {
        self.lines.push(Line {
            subject: subject.to_owned(),
            check: check.into(),
            verdict,
        });
    }
}

/// When each subscription (tenant id, content type) may next be started, as the store keeps it
/// (Microsoft refuses a start within 15 minutes of the previous one). Empty: nothing waits.
pub type NextStarts = BTreeMap<(String, String), DateTime<Utc>>;

/// The next allowed subscription starts the store recorded (Microsoft's 15 minutes between
/// starts), for the start-throttled lines. Reading changes nothing: an embedded store that does
/// not exist yet has none (it is not created), and one a running collector holds open is not
/// read (that collector's `/status` shows `next_allowed_start`); the note says so.
pub async fn stored_next_starts(config: &Config) -> (NextStarts, Option<String>) {
    match &config.store {
        StoreConfig::Embedded => {
            if !config.last_value_storage.join(EMBEDDED_FILE).exists() {
                return (NextStarts::new(), None);
            }
            match EmbeddedStore::open(&config.last_value_storage) {
                Ok(store) => (next_starts_of(&store, config).await, None),
                Err(e) => (
                    NextStarts::new(),
                    Some(format!(
                        "subscription starts not read from the store ({e}): a running collector's /status shows next_allowed_start"
                    )),
                ),
            }
        }
        StoreConfig::Postgres(p) => match PostgresStore::connect(p).await {
            Ok(store) => (next_starts_of(&store, config).await, None),
            Err(e) => (
                NextStarts::new(),
                Some(format!("subscription starts not read from the store: {e}")),
            ),
        },
    }
}

async fn next_starts_of<S: Store>(store: &S, config: &Config) -> NextStarts {
    let mut starts = NextStarts::new();
    for t in &config.tenants {
        for ct in &t.content_types {
            if let Ok(Some(at)) = store.next_subscription_start(&t.tenant_id, ct).await {
                starts.insert((t.tenant_id.clone(), ct.clone()), DateTime::<Utc>::from(at));
            }
        }
    }
    starts
}

/// Runs every check of `config`; `next_starts` gives the subscription-start line of each content
/// type that must wait.
pub async fn run(config: &Config, next_starts: &NextStarts) -> Report {
    server::install_crypto_provider();
    let mut report = Report::default();
    let http = match http_client(&config.outbound, None) {
        Ok(h) => h,
        Err(e) => {
            report.push(
                "outbound",
                "HTTP client",
                Verdict::Failed {
                    problem: e,
                    fix: "fix outbound.ca_file / outbound.proxy".into(),
                },
            );
            return report;
        }
    };
    let now = Utc::now();
    // Tenants are checked a few at a time (an MSSP's hundreds would take minutes one by one);
    // their lines stay in the configuration's order.
    let mut tenants = futures_util::stream::iter(config.tenants.iter())
        .map(|tenant| {
            let http = &http;
            async move {
                let mut lines = Report::default();
                check_tenant(&mut lines, http, tenant, next_starts, now).await;
                lines
            }
        })
        .buffered(TENANTS_AT_ONCE);
    while let Some(lines) = tenants.next().await {
        report.lines.extend(lines.lines);
    }
    if let Some(hook) = &config.webhook {
        let verdict = check_webhook(config, hook, &http).await;
        report.push("webhook", hook.address.clone(), verdict);
    }
    report
}

/// What a tenant is called in the lines: its name and id, or its id.
fn subject(t: &TenantConfig) -> String {
    match &t.tenant_name {
        Some(n) => format!("tenant {n} ({})", t.tenant_id),
        None => format!("tenant {}", t.tenant_id),
    }
}

/// An API error as a failed line: Microsoft's first line, and the advice for its reason.
fn failed(e: &ApiError) -> Verdict {
    let text = e.to_string();
    let mut problem = text.lines().next().unwrap_or("").to_owned();
    if problem.len() > PROBLEM_MAX {
        let mut cut = PROBLEM_MAX;
        while !problem.is_char_boundary(cut) {
            cut -= 1;
        }
        problem.truncate(cut);
        problem.push('…');
    }
    let reason = health::classify(e).map(|c| c.reason);
    if reason == Some("audit_log_off") {
        // Microsoft's answer is an exception's text; say what it means.
        problem = format!(
            "the Management Activity API answers that the tenant does not exist although Azure AD signed the app in to it ({})",
            e.code()
                .map(|c| c.split(' ').next().unwrap_or(c))
                .unwrap_or("HTTP 400")
        );
    }
    let fix = match reason {
        Some(r) => health::hint(r).to_owned(),
        None => "see the error".to_owned(),
    };
    Verdict::Failed { problem, fix }
}

/// `f`, or a transport error after [`CALL_TIMEOUT`].
async fn timed<T>(f: impl Future<Output = Result<T, ApiError>>) -> Result<T, ApiError> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::Transport(format!(
            "no answer within {}s",
            CALL_TIMEOUT.as_secs()
        ))),
    }
}

async fn check_tenant(
    report: &mut Report,
    http: &reqwest::Client,
    t: &TenantConfig,
    next_starts: &NextStarts,
    now: DateTime<Utc>,
) {
    let who = subject(t);
    // 1. A token for the Management Activity API.
    let tokens = TokenSource::new(
        http.clone(),
        &t.authority,
        &t.tenant_id,
        &t.client_id,
        t.credential.clone(),
        &t.resource,
    );
    match timed(async { tokens.token().await.map_err(ApiError::from) }).await {
        Ok(_) => report.push(
            &who,
            "token",
            Verdict::Passed(format!("Azure AD signed the app in for {}", t.resource)),
        ),
        Err(e) => {
            report.push(&who, "token", failed(&e));
            report.push(
                &who,
                "subscriptions, content and Graph",
                Verdict::NotChecked("they need a token".into()),
            );
            return;
        }
    }
    let client = match ManagementClient::new(http.clone(), t) {
        Ok(c) => c,
        Err(e) => {
            report.push(&who, "resource", failed(&ApiError::Uri(e)));
            return;
        }
    };
    // 2. The subscriptions.
    match timed(client.list_subscriptions()).await {
        Ok(subs) => {
            let enabled = |ct: &str| {
                subs.iter()
                    .any(|s| s.content_type.eq_ignore_ascii_case(ct) && s.status == "enabled")
            };
            let missing: Vec<&str> = t
                .content_types
                .iter()
                .map(String::as_str)
                .filter(|ct| !enabled(ct))
                .collect();
            let detail = match missing.len() {
                0 => format!("all {} content types subscribed", t.content_types.len()),
                _ => format!(
                    "listed; not started yet: {} (`run` starts them)",
                    missing.join(" ")
                ),
            };
            report.push(&who, "subscriptions", Verdict::Passed(detail));
        }
        Err(e) => {
            report.push(&who, "subscriptions", failed(&e));
            report.push(
                &who,
                "content listing",
                Verdict::NotChecked("the subscriptions could not be listed".into()),
            );
            graph_checks(report, http, t, &who, now).await;
            return;
        }
    }
    // 3. One hour of content per content type.
    let (start, end) = (api_time(now - LOOK_BACK), api_time(now));
    for ct in &t.content_types {
        let check = format!("{ct} content");
        let verdict = match timed(client.list_content(ct, &start, &end)).await {
            Ok((items, next)) => Verdict::Passed(format!(
                "{}{} blobs listed in the last hour",
                items.len(),
                if next.is_some() { "+" } else { "" }
            )),
            // No subscription yet: listing works once `run` started it.
            Err(e) if e.code() == Some("AF20022") => {
                Verdict::Passed("no subscription yet: `run` starts it, then lists".into())
            }
            Err(e) => failed(&e),
        };
        report.push(&who, check, verdict);
        // 4. Subscription starts Microsoft would refuse now.
        if let Some(at) = next_starts.get(&(t.tenant_id.clone(), ct.clone())) {
            report.push(
                &who,
                format!("{ct} subscription start"),
                throttled(*at, now),
            );
        }
    }
    graph_checks(report, http, t, &who, now).await;
}

/// The subscription-start line: Microsoft refuses a start within 15 minutes of the previous one.
pub fn throttled(next_allowed: DateTime<Utc>, now: DateTime<Utc>) -> Verdict {
    if next_allowed <= now {
        return Verdict::Passed("may be started now".into());
    }
    Verdict::Failed {
        problem: format!(
            "subscription start throttled: Microsoft refuses another start until {} (15 minutes after the last one)",
            next_allowed.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        fix: "nothing to change: `run` lists this content type by pull until then and starts the subscription at that time".into(),
    }
}

/// Check 5: one page of each configured Graph feed (each collection of it).
async fn graph_checks(
    report: &mut Report,
    http: &reqwest::Client,
    t: &TenantConfig,
    who: &str,
    now: DateTime<Utc>,
) {
    if t.graph.feeds.is_empty() {
        return;
    }
    let graph = match GraphClient::new(http.clone(), t) {
        Ok(g) => g,
        Err(e) => {
            report.push(who, "graph_host", failed(&ApiError::Uri(e)));
            return;
        }
    };
    for feed in &t.graph.feeds {
        for path in feed.paths() {
            let filter = format!(
                "{p} ge {} and {p} le {}",
                graph_time(now - LOOK_BACK),
                graph_time(now),
                p = feed.time_property()
            );
            let url = graph.first_url(*feed, path, &filter);
            let verdict = match timed(graph.page(*feed, &url)).await {
                Ok(page) => Verdict::Passed(format!(
                    "{} records on the first page of the last hour",
                    page.records.len()
                )),
                Err(e) => graph_failed(&e, path),
            };
            report.push(
                who,
                format!("Graph {} ({path})", feed.config_name()),
                verdict,
            );
        }
    }
}

/// A Graph refusal: a missing permission names the one the collection needs.
fn graph_failed(e: &ApiError, path: &str) -> Verdict {
    match (failed(e), e.code()) {
        (Verdict::Failed { problem, .. }, Some("Authorization_RequestDenied")) => Verdict::Failed {
            problem,
            fix: format!(
                "grant the app the Microsoft Graph application permission {} and an admin's consent",
                GraphFeed::permission(path)
            ),
        },
        (v, _) => v,
    }
}

/// Check 6: the webhook answers a validation call at its public address, as Microsoft's would be sent.
/// When `listen.public` is free (the collector is not running), a listener that answers only
/// validation calls is started there for the check, so that the whole way from outside (DNS,
/// firewall, proxy, TLS) is tried before the first start; otherwise whatever listens (the running
/// collector) answers.
async fn check_webhook(config: &Config, hook: &WebhookConfig, http: &reqwest::Client) -> Verdict {
    let hits = Arc::new(AtomicU64::new(0));
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let tls = match &config.tls {
        Some(t) => match server::tls_config(&t.cert, &t.key).await {
            Ok(c) => Some(c),
            Err(e) => {
                return Verdict::Failed {
                    problem: e.to_string(),
                    fix: "fix tls.cert / tls.key".into(),
                };
            }
        },
        None => None,
    };
    let own = server::serve(
        config.listen.public,
        validation_router(&hook.path, hits.clone()),
        tls,
        &server::ConnLimits::default(),
        shutdown.clone(),
    )
    .await;
    let own_listener = own.is_ok();
    let bind_error = own.err().map(|e| e.to_string());
    let code = uuid::Uuid::new_v4().to_string();
    let sent = http
        .post(&hook.address)
        .header("Webhook-AuthID", hook.auth_id.expose())
        .header("Webhook-ValidationCode", &code)
        .json(&serde_json::json!({ "validationCode": code }))
        .timeout(CALL_TIMEOUT)
        .send()
        .await;
    let unreachable = |why: String| Verdict::Failed {
        problem: match &bind_error {
            None => format!("webhook unreachable: a validation call to webhook.address {why}"),
            Some(b) => format!(
                "webhook unreachable: a validation call to webhook.address {why} (and the preflight {b})"
            ),
        },
        fix: WEBHOOK_VALIDATION_HINT.to_owned(),
    };
    match sent {
        Err(e) => unreachable(format!("failed: {}", without_query(&e))),
        Ok(r) if r.status() != reqwest::StatusCode::OK => {
            unreachable(format!("was answered {} instead of 200", r.status()))
        }
        Ok(_) if own_listener && hits.load(Ordering::Relaxed) == 0 => Verdict::Failed {
            problem: format!(
                "webhook.address answered 200, but not from listen.public ({}): another server answers there",
                config.listen.public
            ),
            fix: "route webhook.address (DNS, proxy, Ingress) to this collector's listen.public"
                .into(),
        },
        Ok(_) => Verdict::Passed(match own_listener {
            true => "answered a validation call from outside with 200".into(),
            false => format!(
                "answered a validation call with 200 (the running collector answered: the preflight {})",
                bind_error.clone().unwrap_or_default()
            ),
        }),
    }
}

/// Answers Microsoft's validation call (and nothing else) with 200, counting the calls.
fn validation_router(path: &str, hits: Arc<AtomicU64>) -> Router {
    Router::new().route(
        path,
        post(move |headers: HeaderMap| async move {
            if headers.contains_key("webhook-validationcode") {
                hits.fetch_add(1, Ordering::Relaxed);
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_allowed_later_fails_with_its_time_and_a_start_due_passes() {
        let now = Utc::now();
        match throttled(now + TimeDelta::minutes(9), now) {
            Verdict::Failed { problem, fix } => {
                assert!(
                    problem.starts_with("subscription start throttled"),
                    "{problem}"
                );
                assert!(fix.contains("pull"), "{fix}");
            }
            v => panic!("{v:?}"),
        }
        assert!(matches!(throttled(now, now), Verdict::Passed(_)));
    }

    #[test]
    fn any_failed_line_makes_exit_code_2() {
        let mut r = Report::default();
        r.push("tenant t", "token", Verdict::Passed("ok".into()));
        assert_eq!(r.exit_code(), 0);
        assert!(r.render().contains("all 1 passed"));
        r.push(
            "tenant t",
            "subscriptions",
            Verdict::Failed {
                problem: "p".into(),
                fix: "f".into(),
            },
        );
        assert_eq!(r.exit_code(), 2);
        assert!(
            r.render()
                .contains("FAILED       tenant t subscriptions: p — fix: f")
        );
    }
}
