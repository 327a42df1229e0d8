//! A tenant's health, one entry per configured tenant, shared by its pullers, workers and
//! subscription keeper (which report each call's outcome) and the admin API (`/status`,
//! `o365_tenant_up`). What is wrong is told by [`TenantState`]; each problem is logged when it
//! starts (warn), every [`SUMMARY_EVERY`] while it lasts and when it ends (info), never once per
//! poll. Also here: whether the tenant's listing waits for its backlog, and the windows Microsoft no
//! longer kept ([`Gap`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::config::tenant::TenantConfig;
use crate::mgmt_api::ApiError;
use crate::mgmt_api::auth::AuthError;
use crate::telemetry::{Counters, Metrics};

/// Gaps kept per tenant for `/status` (the newest; the metrics count them all).
pub const MAX_GAPS: usize = 20;
/// How long after a gap was noticed the tenant's state says `gap`.
pub const GAP_STATE_FOR: Duration = Duration::from_secs(24 * 3600);
/// While a problem lasts, one summary line per this interval.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(15 * 60);
/// Longest error message kept (Microsoft's first line is enough).
const MESSAGE_MAX: usize = 300;

/// What a tenant suffers from, most urgent first: the first that applies is its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TenantState {
    /// Azure AD refuses the credentials (wrong or expired secret, unknown tenant, no consent).
    AuthFailed,
    /// Microsoft refuses the calls: a permission is missing (AF10001, 401/403) or an admin
    /// disabled the subscription.
    Denied,
    /// Microsoft answers 429: calls wait for its Retry-After.
    Throttled,
    /// The tenant's output is down: its blobs wait in the queue.
    Paused,
    /// Content was lost in the last 24 h (Microsoft no longer kept a window); collection goes on.
    Gap,
    /// Another replica lists this tenant (shared store): this one only delivers its blobs.
    NotListedHere,
    Ok,
}

impl TenantState {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::AuthFailed => "auth_failed",
            TenantState::Denied => "denied",
            TenantState::Throttled => "throttled",
            TenantState::Paused => "paused",
            TenantState::Gap => "gap",
            TenantState::NotListedHere => "not_listed_here",
            TenantState::Ok => "ok",
        }
    }

    /// `o365_tenant_up`: whether the tenant's content reaches its output now. A gap is past loss,
    /// and a tenant listed by another replica is collected there.
    pub fn is_up(self) -> bool {
        matches!(
            self,
            TenantState::Ok | TenantState::Gap | TenantState::NotListedHere
        )
    }
}

/// An error sorted: the state it puts the tenant in (`None`: a passing failure, such as a network
/// error or a 5xx, retried as usual) and its reason, the `reason` label of
/// `o365_tenant_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    pub state: Option<TenantState>,
    pub reason: &'static str,
}

/// Sorts an API error; `None` for AF20022 (no subscription yet: the keeper is starting it).
pub fn classify(e: &ApiError) -> Option<Classified> {
    let c = |state, reason| Some(Classified { state, reason });
    match e {
        ApiError::Auth(AuthError::Rejected { description, .. }) => {
            let code = description
                .strip_prefix("AADSTS")
                .map(|d| d.split(|c: char| !c.is_ascii_digit()).next().unwrap_or(""));
            let reason = match code {
                Some("7000215") => "invalid_secret",
                Some("7000222") => "secret_expired",
                Some("90002") | Some("900023") => "unknown_tenant",
                Some("700016") => "unknown_app",
                _ => "auth_rejected",
            };
            c(Some(TenantState::AuthFailed), reason)
        }
        ApiError::Auth(AuthError::Credential(_)) => c(Some(TenantState::AuthFailed), "credential"),
        ApiError::Auth(AuthError::Unavailable(_)) => c(None, "token_endpoint_unavailable"),
        ApiError::Http {
            status,
            code,
            message,
            ..
        } => match (*status, code.as_str()) {
            (_, "AF20022") => None,
            // A tenant Azure AD signed us in to but the audit service "does not know": its
            // unified audit log is off (Microsoft answers the operation's name in place of a code).
            (400, other) if !other.starts_with("AF") && message.contains("does not exist") => {
                c(Some(TenantState::Denied), "audit_log_off")
            }
            (_, "Authentication_RequestFromNonPremiumTenantOrB2CTenant") => {
                c(Some(TenantState::Denied), "graph_unlicensed")
            }
            (_, "AF10001") => c(Some(TenantState::Denied), "permission_missing"),
            // Push is refused, pull and reconciliation go on: a problem, not a state.
            (_, "AF20021") => c(None, "webhook_not_validated"),
            (_, "AF20023") => c(Some(TenantState::Denied), "subscription_disabled"),
            (_, "AF20011") | (_, "AF20012") => c(Some(TenantState::AuthFailed), "unknown_tenant"),
            (429, _) => c(Some(TenantState::Throttled), "throttled"),
            (401, _) => c(Some(TenantState::Denied), "unauthorized"),
            (403, _) => c(Some(TenantState::Denied), "forbidden"),
            (s, _) if s >= 500 => c(None, "server_error"),
            _ => c(None, "request_refused"),
        },
        ApiError::Transport(_) => c(None, "network"),
        ApiError::Uri(_) => c(None, "refused_url"),
        ApiError::Decode(_) => c(None, "bad_answer"),
    }
}

/// What to do about a reason, in the log line that opens a problem (and `check-config --online`).
pub fn hint(reason: &str) -> &'static str {
    match reason {
        "audit_log_off" => {
            "the tenant's unified audit log is off: turn on auditing in Microsoft Purview (Audit: Start recording user and admin activity), then wait up to 60 minutes"
        }
        "graph_unlicensed" => {
            "sign-in logs need a Microsoft Entra ID P1 or P2 licence in the tenant: add one, or remove sign_ins from graph_feeds"
        }
        "invalid_secret" => {
            "the client secret is wrong: use the secret's value (not its id) from the app registration"
        }
        "secret_expired" => "the client secret expired: add a new one to the app registration",
        "unknown_tenant" => {
            "Azure AD does not know this tenant id: check tenant_id (and the cloud: authority)"
        }
        "unknown_app" => {
            "the app is not in this tenant: its admin has not consented to it yet, or client_id is wrong"
        }
        "auth_rejected" | "credential" => "check client_id and the credential of this tenant",
        "permission_missing" | "unauthorized" | "forbidden" => {
            "a permission (ActivityFeed.Read, ActivityFeed.ReadDlp for DLP.All, the Graph ones, AuditLogsQuery.Read.All for an audit-search backfill), the admin's consent, a licence or (message trace) a service principal is missing; retried"
        }
        "webhook_not_validated" => crate::mgmt_api::WEBHOOK_VALIDATION_HINT,
        "subscription_disabled" => {
            "an admin disabled the subscription; it is started again once allowed"
        }
        "throttled" => {
            "Microsoft throttles this tenant; calls wait for its Retry-After (set PublisherIdentifier, lower requests_per_minute)"
        }
        _ => "retried; see the error",
    }
}

/// One source's current problem (a source: a content type's listing, a Graph feed, the
/// subscriptions, content fetches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub source: String,
    pub state: Option<TenantState>,
    pub reason: &'static str,
    /// The error's text, first line, at most 300 characters; API and Azure AD errors carry no
    /// secret (tokens and secrets are never part of an error).
    pub message: String,
    pub since: DateTime<Utc>,
}

/// What `/status` and `/metrics` show of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub state: TenantState,
    /// The problem behind the state; with state `ok`, the latest passing failure not yet
    /// followed by a success, if any.
    pub problem: Option<Problem>,
}

/// What the pipeline knows beside the reported outcomes.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The tenant's output name and since when it is paused, if it is.
    pub output_paused: Option<(String, SystemTime)>,
    /// Another replica holds the tenant's listing lease.
    pub not_listed_here: bool,
}

/// A reason being logged: when it started and what was held back.
struct Logged {
    since: Instant,
    last_line: Instant,
    errors: u64,
    held_back: u64,
}

#[derive(Default)]
struct Book {
    /// At most one per source: bounded by the tenant's content types, feeds and two more.
    by_source: BTreeMap<String, Problem>,
    /// Per reason with a current problem (a handful).
    logged: BTreeMap<&'static str, Logged>,
}

/// A tenant's health, shared by its pullers and the admin API.
#[derive(Default)]
pub struct TenantHealth {
    deferring: AtomicBool,
    gaps: Mutex<VecDeque<Gap>>,
    book: Mutex<Book>,
    /// The process's counters, where gaps and errors are counted.
    counters: Arc<Counters>,
}

impl std::fmt::Debug for TenantHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantHealth")
            .field("deferring", &self.deferring())
            .finish_non_exhaustive()
    }
}

/// A stretch of time whose content was lost: listing had to resume after it, because Microsoft no
/// longer keeps what was published in it (7 days for the activity API, 30 for sign-ins and
/// audits). Shown in `/status`, counted in `o365_listing_gaps_total`, logged once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Gap {
    /// The content type or Graph feed (`Graph.SignIns`, …).
    pub source: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub reason: String,
    pub noticed_at: DateTime<Utc>,
}

impl TenantHealth {
    pub fn new(counters: Arc<Counters>) -> TenantHealth {
        TenantHealth {
            counters,
            ..TenantHealth::default()
        }
    }

    /// A call of `source` failed: counted by reason, and logged if its reason is new for the
    /// tenant (or a summary is due). Returns false for errors that are no problem (AF20022).
    pub fn failed(&self, cfg: &TenantConfig, source: &str, e: &ApiError) -> bool {
        self.failed_as(cfg, source, e, true)
    }

    /// As [`failed`](Self::failed) for a call the tenant's collection does not depend on (an
    /// audit-search backfill asked for once): shown in `/status` and counted by reason, but the
    /// tenant's state, and so `o365_tenant_up` and its alert, stay as the collection makes them.
    pub fn failed_aside(&self, cfg: &TenantConfig, source: &str, e: &ApiError) -> bool {
        self.failed_as(cfg, source, e, false)
    }

    fn failed_as(&self, cfg: &TenantConfig, source: &str, e: &ApiError, sets_state: bool) -> bool {
        let Some(mut class) = classify(e) else {
            return false;
        };
        if !sets_state {
            class.state = None;
        }
        let labels = vec![
            ("tenant_id".to_string(), cfg.tenant_id.clone()),
            ("reason".to_string(), class.reason.to_string()),
        ];
        self.counters
            .metrics
            .tenant_errors
            .get_or_create(&labels)
            .inc();
        let message = first_line(&e.to_string());
        let name = cfg.tenant_name.as_deref().unwrap_or("");
        self.failed_at(&cfg.tenant_id, name, source, class, message, Instant::now());
        true
    }

    fn failed_at(
        &self,
        tid: &str,
        name: &str,
        source: &str,
        class: Classified,
        message: String,
        now: Instant,
    ) {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let since = match book.by_source.get(source) {
            Some(p) if p.reason == class.reason => p.since,
            _ => Utc::now(),
        };
        book.by_source.insert(
            source.to_owned(),
            Problem {
                source: source.to_owned(),
                state: class.state,
                reason: class.reason,
                message: message.clone(),
                since,
            },
        );
        let state = class.state.unwrap_or(TenantState::Ok).as_str();
        match book.logged.get_mut(class.reason) {
            Some(l) => {
                l.errors += 1;
                if now.saturating_duration_since(l.last_line) >= SUMMARY_EVERY {
                    warn!(tenant.id = %tid, tenant.name = %name, state, reason = class.reason, source,
                          lasting_s = now.saturating_duration_since(l.since).as_secs(), errors = l.errors,
                          not_logged = l.held_back, error = %message, fix = hint(class.reason),
                          "tenant problem goes on");
                    l.last_line = now;
                    l.held_back = 0;
                } else {
                    l.held_back += 1;
                }
            }
            None => {
                warn!(tenant.id = %tid, tenant.name = %name, state, reason = class.reason, source,
                      error = %message, fix = hint(class.reason),
                      "tenant problem started (logged again every 15 minutes while it lasts, and when it ends)");
                book.logged.insert(
                    class.reason,
                    Logged {
                        since: now,
                        last_line: now,
                        errors: 1,
                        held_back: 0,
                    },
                );
            }
        }
    }

    /// A call of `source` succeeded: its problem ends; a reason no source has any more is logged
    /// as ended.
    pub fn succeeded(&self, cfg: &TenantConfig, source: &str) {
        let name = cfg.tenant_name.as_deref().unwrap_or("");
        self.succeeded_at(&cfg.tenant_id, name, source, Instant::now());
    }

    fn succeeded_at(&self, tid: &str, name: &str, source: &str, now: Instant) {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let Some(gone) = book.by_source.remove(source) else {
            return;
        };
        if book.by_source.values().any(|p| p.reason == gone.reason) {
            return;
        }
        if let Some(l) = book.logged.remove(gone.reason) {
            info!(tenant.id = %tid, tenant.name = %name,
                  reason = gone.reason, source, lasted_s = now.saturating_duration_since(l.since).as_secs(),
                  errors = l.errors, "tenant problem ended");
        }
    }

    /// The tenant's state now: reported problems first (most urgent), then the output's pause,
    /// a recent gap, another replica's listing; else `ok`.
    pub fn assess(&self, observed: &Observed) -> Assessment {
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let worst = book
            .by_source
            .values()
            .filter(|p| p.state.is_some())
            .min_by_key(|p| (p.state, p.since))
            .cloned();
        if let Some(p) = worst {
            return Assessment {
                state: p.state.unwrap_or(TenantState::Ok),
                problem: Some(p),
            };
        }
        let passing = book.by_source.values().max_by_key(|p| p.since).cloned();
        drop(book);
        if let Some((output, since)) = &observed.output_paused {
            return Assessment {
                state: TenantState::Paused,
                problem: Some(Problem {
                    source: format!("output {output}"),
                    state: Some(TenantState::Paused),
                    reason: "output_paused",
                    message: format!(
                        "output `{output}` is down: this tenant's blobs wait in the queue (see outputs in /status)"
                    ),
                    since: DateTime::<Utc>::from(*since),
                }),
            };
        }
        let recent = chrono::TimeDelta::from_std(GAP_STATE_FOR).unwrap_or(chrono::TimeDelta::MAX);
        let gap = self
            .gaps()
            .into_iter()
            .rev()
            .find(|g| Utc::now() - g.noticed_at < recent);
        if let Some(g) = gap {
            return Assessment {
                state: TenantState::Gap,
                problem: Some(Problem {
                    source: g.source,
                    state: Some(TenantState::Gap),
                    reason: "content_lost",
                    message: truncate(g.reason),
                    since: g.noticed_at,
                }),
            };
        }
        Assessment {
            state: if observed.not_listed_here {
                TenantState::NotListedHere
            } else {
                TenantState::Ok
            },
            problem: passing,
        }
    }

    /// `added` blobs of `content_type` newly queued (announced or listed): the
    /// `o365_content_announced_by_tenant_total` the no-records alert compares deliveries with.
    pub fn announced(&self, tenant_id: &str, content_type: &str, added: u64) {
        if added > 0 {
            let labels = Metrics::tenant_labels(tenant_id, content_type);
            self.counters
                .metrics
                .content_announced
                .get_or_create(&labels)
                .inc_by(added);
        }
    }

    /// Records that the tenant's listing waits (`true`) or goes on (`false`) for its backlog;
    /// logs only the changes.
    pub fn set_deferring(&self, tenant_id: &str, deferring: bool, queued: u64, high_water: u64) {
        if self.deferring.swap(deferring, Ordering::Relaxed) == deferring {
            return;
        }
        if deferring {
            warn!(tenant.id = %tenant_id, queued, high_water,
                  "tenant's queue at its high water mark (its output is slow or down): its listing waits; other tenants go on");
        } else {
            info!(tenant.id = %tenant_id, high_water, "tenant's queue below its high water mark: its listing resumes");
        }
    }

    pub fn deferring(&self) -> bool {
        self.deferring.load(Ordering::Relaxed)
    }

    /// Records a lost window once: the same `source` and `from` again (a round retried before the
    /// cursor moved) only widens the last entry.
    pub fn gap(&self, tenant_id: &str, gap: Gap) {
        let counters = &self.counters;
        let mut gaps = self.gaps.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = gaps
            .iter_mut()
            .rev()
            .find(|g| g.source == gap.source && g.from == gap.from)
        {
            last.to = last.to.max(gap.to);
            return;
        }
        let lost = (gap.to - gap.from).num_milliseconds().max(0) as f64 / 1000.0;
        warn!(tenant.id = %tenant_id, source = %gap.source, from = %gap.from.to_rfc3339(), to = %gap.to.to_rfc3339(),
              lost_s = lost, reason = %gap.reason,
              "content lost: Microsoft no longer keeps this window; listing goes on from the oldest time it keeps");
        Counters::add(&counters.listing_gaps, 1);
        let labels = Metrics::tenant_labels(tenant_id, &gap.source);
        counters.metrics.listing_gaps.get_or_create(&labels).inc();
        counters
            .metrics
            .listing_gap_seconds
            .get_or_create(&labels)
            .inc_by(lost);
        if gaps.len() == MAX_GAPS {
            gaps.pop_front();
        }
        gaps.push_back(gap);
    }

    /// The newest gaps, oldest first.
    pub fn gaps(&self) -> Vec<Gap> {
        let gaps = self.gaps.lock().unwrap_or_else(|e| e.into_inner());
        gaps.iter().cloned().collect()
    }
}

fn first_line(s: &str) -> String {
    truncate(s.lines().next().unwrap_or("").trim().to_owned())
}

fn truncate(mut s: String) -> String {
    if s.len() > MESSAGE_MAX {
        let mut at = MESSAGE_MAX;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(code: &str) -> ApiError {
        ApiError::Auth(AuthError::Rejected {
            error: "invalid_client".into(),
            description: format!("AADSTS{code}: something"),
        })
    }

    fn http(status: u16, code: &str) -> ApiError {
        ApiError::Http {
            status,
            code: code.into(),
            message: "m".into(),
            retry_after: None,
        }
    }

    #[test]
    fn errors_are_sorted_into_states_and_reasons() {
        let of = |e: &ApiError| classify(e).map(|c| (c.state, c.reason));
        use TenantState::*;
        assert_eq!(
            of(&rejected("7000215")),
            Some((Some(AuthFailed), "invalid_secret"))
        );
        assert_eq!(
            of(&rejected("90002")),
            Some((Some(AuthFailed), "unknown_tenant"))
        );
        assert_eq!(
            of(&rejected("900023")),
            Some((Some(AuthFailed), "unknown_tenant"))
        );
        assert_eq!(
            of(&http(403, "AF10001")),
            Some((Some(Denied), "permission_missing"))
        );
        assert_eq!(
            of(&http(429, "AF429")),
            Some((Some(Throttled), "throttled"))
        );
        assert_eq!(of(&http(500, "AF50000")), Some((None, "server_error")));
        assert_eq!(of(&http(400, "AF20022")), None);
        assert_eq!(
            of(&http(
                403,
                "Authentication_RequestFromNonPremiumTenantOrB2CTenant"
            )),
            Some((Some(Denied), "graph_unlicensed"))
        );
        // The audit log off: the operation in place of a code, "Tenant … does not exist."
        let off = ApiError::Http {
            status: 400,
            code: "ListSubscriptions [TenantId=t] failed. Exception".into(),
            message:
                "Microsoft.Office.Compliance.Audit.DataServiceException: Tenant t does not exist."
                    .into(),
            retry_after: None,
        };
        assert_eq!(of(&off), Some((Some(Denied), "audit_log_off")));
        assert!(hint("audit_log_off").contains("turn on auditing in Microsoft Purview"));
        // AF20011 keeps its documented meaning.
        assert_eq!(
            of(&http(400, "AF20011")),
            Some((Some(AuthFailed), "unknown_tenant"))
        );
    }

    #[test]
    fn the_most_urgent_problem_is_the_state_and_a_success_ends_it() {
        let h = TenantHealth::default();
        let t = Instant::now();
        let class = |e: &ApiError| classify(e).unwrap();
        h.failed_at(
            "t",
            "n",
            "Audit.General",
            class(&http(429, "AF429")),
            "x".into(),
            t,
        );
        h.failed_at(
            "t",
            "n",
            "DLP.All",
            class(&http(403, "AF10001")),
            "y".into(),
            t,
        );
        let a = h.assess(&Observed::default());
        assert_eq!(a.state, TenantState::Denied);
        assert_eq!(a.problem.unwrap().source, "DLP.All");
        h.succeeded_at("t", "n", "DLP.All", t);
        assert_eq!(h.assess(&Observed::default()).state, TenantState::Throttled);
        h.succeeded_at("t", "n", "Audit.General", t);
        let paused = Observed {
            output_paused: Some(("siem".into(), SystemTime::now())),
            not_listed_here: true,
        };
        assert_eq!(h.assess(&paused).state, TenantState::Paused);
        let elsewhere = Observed {
            not_listed_here: true,
            ..Observed::default()
        };
        assert_eq!(h.assess(&elsewhere).state, TenantState::NotListedHere);
        assert_eq!(h.assess(&Observed::default()).state, TenantState::Ok);
        assert!(h.book.lock().unwrap().logged.is_empty());
    }

    #[test]
    fn a_lasting_problem_logs_a_summary_only_every_interval() {
        let h = TenantHealth::default();
        let t = Instant::now();
        let class = classify(&rejected("7000215")).unwrap();
        for i in 0..100 {
            h.failed_at(
                "t",
                "n",
                "Audit.General",
                class,
                "x".into(),
                t + Duration::from_secs(i),
            );
        }
        {
            let book = h.book.lock().unwrap();
            let l = &book.logged["invalid_secret"];
            assert_eq!((l.errors, l.held_back, l.last_line), (100, 99, t));
        }
        h.failed_at(
            "t",
            "n",
            "Audit.General",
            class,
            "x".into(),
            t + SUMMARY_EVERY,
        );
        let book = h.book.lock().unwrap();
        let l = &book.logged["invalid_secret"];
        assert_eq!((l.held_back, l.last_line), (0, t + SUMMARY_EVERY));
    }
}
