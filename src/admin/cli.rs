//! CLI mirrors of the admin API (`subscriptions list|start|stop`, `backfill`): they call the running
//! collector's admin listener over HTTP, so they act on the same store and clients as the service.
//!
//! Where to connect: `--admin URL` (or `O365_ADMIN_URL`), else `listen.admin` of `--config FILE`,
//! else `http://127.0.0.1:9090`. The token: `--token` (or, better, `O365_ADMIN_TOKEN`: a command line
//! is visible to other users), else `admin.token` of `--config FILE`.
//! Exit codes: 0 ok, 1 the API (or the connection to it) failed, 2 usage.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::backfill::{BackfillAnswer, BackfillRequest, parse_time};
use super::completeness::CompletenessAnswer;
use super::dead_letters::{DeadLetterView, MAX_LIMIT, RequeueAnswer, RequeueRequest};
use super::subscriptions::{ChangeAnswer, SubscriptionsAnswer};
use super::verify::{VerifyAnswer, VerifyRequest};
use crate::config::Config;
use crate::mgmt_api::wire::CONTENT_TYPES;

/// The admin listener's default address.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9090";

/// How to reach the admin API; shared by every mirror command.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Connection {
    /// Base URL of the collector's admin listener [default: http://127.0.0.1:9090].
    #[arg(
        long = "admin",
        value_name = "URL",
        env = "O365_ADMIN_URL",
        global = true
    )]
    pub admin: Option<String>,
    /// Admin bearer token (prefer the environment variable: command lines are visible to others).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "O365_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// Read listen.admin and admin.token from this collector configuration.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Print the API's JSON answer instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `o365-collector subscriptions …`
#[derive(clap::Args, Debug, Clone)]
pub struct SubscriptionsArgs {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub action: SubscriptionsAction,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum SubscriptionsAction {
    /// Subscription and webhook status of every tenant and content type.
    List,
    /// Start a content type's subscription (with the configured webhook in push mode).
    Start {
        /// Audit.AzureActiveDirectory, Audit.Exchange, Audit.SharePoint, Audit.General or DLP.All.
        content_type: String,
        /// Only this tenant (default: every tenant collecting the content type).
        #[arg(long)]
        tenant_id: Option<String>,
    },
    /// Stop a content type's subscription.
    Stop {
        /// Audit.AzureActiveDirectory, Audit.Exchange, Audit.SharePoint, Audit.General or DLP.All.
        content_type: String,
        /// Only this tenant (default: every tenant collecting the content type).
        #[arg(long)]
        tenant_id: Option<String>,
    },
}

/// `o365-collector backfill …`
#[derive(clap::Args, Debug, Clone)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// Tenant to list (may be left out when the collector has exactly one).
    #[arg(long)]
    pub tenant_id: Option<String>,
    /// Where from: the Management Activity API (`management`, 7 days back, one content type) or
    /// Purview's Audit Log Query API (`audit-search`, 180 days back, every collected content type).
    #[arg(long, default_value = "management", value_parser = ["management", "audit-search"])]
    pub source: String,
    /// Audit.AzureActiveDirectory, Audit.Exchange, Audit.SharePoint, Audit.General or DLP.All
    /// (required with `--source management`).
    #[arg(long, required_if_eq("source", "management"))]
    pub content_type: Option<String>,
    /// RFC 3339 or YYYY-MM-DD[THH:MM[:SS]] (UTC); at most 7 days back (audit-search: 180).
    #[arg(long)]
    pub start: String,
    /// Same forms; default: now.
    #[arg(long)]
    pub end: Option<String>,
}

/// `o365-collector completeness …`
#[derive(clap::Args, Debug, Clone)]
pub struct CompletenessArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// Tenant (may be left out when the collector has exactly one).
    #[arg(long)]
    pub tenant_id: Option<String>,
    /// RFC 3339 or YYYY-MM-DD[THH:MM[:SS]] (UTC); default: 3 days before --to.
    #[arg(long)]
    pub from: Option<String>,
    /// Same forms; default: now.
    #[arg(long)]
    pub to: Option<String>,
}

/// `o365-collector verify …`
#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// Tenant (may be left out when the collector has exactly one).
    #[arg(long)]
    pub tenant_id: Option<String>,
    /// RFC 3339 or YYYY-MM-DD[THH:MM[:SS]] (UTC), widened to whole hours; at most 180 days back.
    #[arg(long)]
    pub start: String,
    /// Same forms; default: now.
    #[arg(long)]
    pub end: Option<String>,
    /// Also deliver the records found missing (through the audit-search backfill; the record
    /// dedup drops those already delivered).
    #[arg(long)]
    pub repair: bool,
}

/// `o365-collector dead-letters …`
#[derive(clap::Args, Debug, Clone)]
pub struct DeadLettersArgs {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub action: DeadLettersAction,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum DeadLettersAction {
    /// The blobs given up, with their reason (every page, or one page with --limit).
    List {
        /// Only dead letters with a seq above this.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// One page of at most this many (1 to 1000) instead of all of them.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Put dead letters back in the queue (attempts reset), once their cause is fixed.
    Requeue {
        /// Seqs as `list` shows them.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        seqs: Vec<u64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

/// Why a mirror command failed; `code` is the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Api(String),
}

impl CliError {
    pub fn code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Api(_) => 1,
        }
    }
}

/// Runs `subscriptions`; returns the process exit code.
pub fn subscriptions(args: SubscriptionsArgs) -> Pin<Box<dyn Future<Output = i32>>> {
    Box::pin(async move { finish(run_subscriptions(&args).await) })
}

/// Runs `backfill`; returns the process exit code.
pub fn backfill(args: BackfillArgs) -> Pin<Box<dyn Future<Output = i32>>> {
    Box::pin(async move { finish(run_backfill(&args).await) })
}

/// Runs `completeness`; returns the process exit code (1 when an hour is incomplete).
pub fn completeness(args: CompletenessArgs) -> Pin<Box<dyn Future<Output = i32>>> {
    Box::pin(async move { finish(run_completeness(&args).await) })
}

/// The text to print and whether no hour is incomplete.
pub async fn run_completeness(args: &CompletenessArgs) -> Result<(String, bool), CliError> {
    for (name, v) in [("--from", args.from.as_ref()), ("--to", args.to.as_ref())] {
        if let Some(v) = v
            && parse_time(v).is_none()
        {
            return Err(CliError::Usage(format!(
                "{name} {v:?} is not a time: use RFC 3339 (2026-11-25T08:00:00Z) or YYYY-MM-DD[THH:MM[:SS]] (UTC)"
            )));
        }
    }
    let api = AdminClient::from_connection(&args.conn)?;
    let mut query: Vec<(&str, &str)> = Vec::new();
    for (k, v) in [
        ("tenant", &args.tenant_id),
        ("from", &args.from),
        ("to", &args.to),
    ] {
        if let Some(v) = v {
            query.push((k, v));
        }
    }
    let (_, answer): (_, CompletenessAnswer) = api
        .call(Method::GET, "/completeness", &query, None::<&()>)
        .await?;
    let text = if args.conn.json {
        to_json(&answer)
    } else {
        completeness_table(&answer)
    };
    Ok((text, answer.incomplete == 0))
}

/// A row per day and content type (sealed, open, incomplete hours), then every incomplete hour
/// and every open one that waits for a blob, with its reason.
pub fn completeness_table(a: &CompletenessAnswer) -> String {
    let mut rows = vec![vec![
        "DAY".to_string(),
        "CONTENT TYPE".into(),
        "SEALED".into(),
        "OPEN".into(),
        "INCOMPLETE".into(),
    ]];
    let mut notes = Vec::new();
    for ct in &a.content_types {
        let mut days: std::collections::BTreeMap<&str, [u32; 3]> = Default::default();
        for h in &ct.hours {
            let day = h.hour.get(..10).unwrap_or(&h.hour);
            let n = days.entry(day).or_default();
            match h.state.as_str() {
                "sealed" => n[0] += 1,
                "incomplete" => n[2] += 1,
                _ => n[1] += 1,
            }
            if h.state == "incomplete" || (h.state == "open" && h.counts.queued > h.counts.done) {
                notes.push(format!(
                    "{} {} {}: {}",
                    h.hour, ct.content_type, h.state, h.reason
                ));
            }
        }
        for (day, n) in days {
            rows.push(vec![
                day.to_string(),
                ct.content_type.clone(),
                n[0].to_string(),
                n[1].to_string(),
                n[2].to_string(),
            ]);
        }
    }
    let mut out = format!(
        "tenant {}  {} .. {}  horizon {}s\n",
        a.tenant_id, a.from, a.to, a.horizon_seconds
    );
    out.push_str(&table(&rows));
    for n in notes {
        out.push_str(&n);
        out.push('\n');
    }
    out
}

/// Runs `verify`; returns the process exit code (1 when records were missing, repaired or not).
pub fn verify(args: VerifyArgs) -> Pin<Box<dyn Future<Output = i32>>> {
    Box::pin(async move { finish(run_verify(&args).await) })
}

/// `--start` and `--end` (when given) read as times, or a usage error naming the flag.
fn check_times(start: &str, end: Option<&str>) -> Result<(), CliError> {
    for (name, v) in [("--start", Some(start)), ("--end", end)] {
        if let Some(v) = v
            && parse_time(v).is_none()
        {
            return Err(CliError::Usage(format!(
                "{name} {v:?} is not a time: use RFC 3339 (2026-11-25T08:00:00Z) or YYYY-MM-DD[THH:MM[:SS]] (UTC)"
            )));
        }
    }
    Ok(())
}

/// The text to print and whether nothing was missing.
pub async fn run_verify(args: &VerifyArgs) -> Result<(String, bool), CliError> {
    check_times(&args.start, args.end.as_deref())?;
    let api = AdminClient::from_connection(&args.conn)?;
    let req = VerifyRequest {
        tenant_id: args.tenant_id.clone(),
        start: args.start.clone(),
        end: args.end.clone(),
        repair: args.repair,
    };
    let (_, answer): (_, VerifyAnswer) = api.call(Method::POST, "/verify", &[], Some(&req)).await?;
    let text = if args.conn.json {
        to_json(&answer)
    } else {
        verify_table(&answer)
    };
    Ok((text, answer.report.missing == 0))
}

/// A summary line, then a row per hour and record type where the sources differ.
pub fn verify_table(a: &VerifyAnswer) -> String {
    let r = &a.report;
    let mut out = format!(
        "tenant {}  {} .. {}  audit search {} record(s) ({} queries), delivered {}, missing {}\n",
        r.tenant_id, r.start, r.end, r.records, r.queries, r.delivered, r.missing
    );
    for n in &a.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    if r.not_collected + r.unreadable > 0 {
        out.push_str(&format!(
            "not compared: {} of content types not collected, {} without auditData\n",
            r.not_collected, r.unreadable
        ));
    }
    if r.differences.is_empty() {
        out.push_str("no difference\n");
    } else {
        let mut rows = vec![vec![
            "HOUR".to_string(),
            "CONTENT TYPE".into(),
            "RECORD TYPE".into(),
            "DELIVERED".into(),
            "AUDIT SEARCH".into(),
            "MISSING".into(),
        ]];
        for d in &r.differences {
            let name = crate::mapping::enums::RECORD_TYPE
                .name(d.record_type)
                .map(|n| format!("{} {n}", d.record_type))
                .unwrap_or_else(|| d.record_type.to_string());
            rows.push(vec![
                d.hour.clone(),
                d.content_type.clone(),
                name,
                d.delivered.to_string(),
                d.audit_search.to_string(),
                d.missing.to_string(),
            ]);
        }
        out.push_str(&table(&rows));
    }
    match &r.repair {
        Some(rep) => out.push_str(&format!(
            "repair: {} record(s) of those hours and record types queued ({} queries); the record dedup drops those delivered before; run verify again once they are delivered\n",
            rep.added, rep.queries
        )),
        None if r.missing > 0 => out.push_str("verify --repair delivers the missing records\n"),
        None => {}
    }
    out
}

/// Runs `dead-letters`; returns the process exit code.
pub fn dead_letters(args: DeadLettersArgs) -> Pin<Box<dyn Future<Output = i32>>> {
    Box::pin(async move { finish(run_dead_letters(&args).await) })
}

/// The text to print and whether everything succeeded.
pub async fn run_dead_letters(args: &DeadLettersArgs) -> Result<(String, bool), CliError> {
    let api = AdminClient::from_connection(&args.conn)?;
    match &args.action {
        DeadLettersAction::List { after, limit } => {
            // Pages of the largest size until a short one, or the one page asked for.
            let size = limit.unwrap_or(MAX_LIMIT);
            let mut dead: Vec<DeadLetterView> = Vec::new();
            let mut after = *after;
            loop {
                let (a, n) = (after.to_string(), size.to_string());
                let (_, page): (_, Vec<DeadLetterView>) = api
                    .call(
                        Method::GET,
                        "/dead-letters",
                        &[("after", &a), ("limit", &n)],
                        None::<&()>,
                    )
                    .await?;
                let full = page.len() == size;
                dead.extend(page);
                match dead.last() {
                    Some(last) if full && limit.is_none() => after = last.seq,
                    _ => break,
                }
            }
            if args.conn.json {
                return Ok((to_json(&dead), true));
            }
            let mut out = format!("{} dead letter(s)\n", dead.len());
            for d in &dead {
                out.push_str(&format!(
                    "{:>8}  {}  {}  {}  {}  attempts {}  {}\n",
                    d.seq,
                    d.dead_at,
                    d.tenant_id,
                    d.content_type,
                    d.content_id,
                    d.attempts,
                    d.reason
                ));
            }
            if let Some(last) = dead
                .last()
                .filter(|_| limit.is_some() && dead.len() == size)
            {
                out.push_str(&format!("more may follow: --after {}\n", last.seq));
            }
            Ok((out, true))
        }
        DeadLettersAction::Requeue { seqs, all } => {
            let req = RequeueRequest {
                seqs: seqs.clone(),
                all: *all,
            };
            let (_, answer): (_, RequeueAnswer) = api
                .call(Method::POST, "/dead-letters/requeue", &[], Some(&req))
                .await?;
            let text = if args.conn.json {
                to_json(&answer)
            } else {
                format!("{} dead letter(s) queued again\n", answer.requeued)
            };
            Ok((text, true))
        }
    }
}

/// Prints the text (stdout) or the error (stderr) and gives the exit code.
fn finish(r: Result<(String, bool), CliError>) -> i32 {
    match r {
        Ok((text, ok)) => {
            print!("{text}");
            if ok { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.code()
        }
    }
}

/// The text to print and whether everything succeeded.
pub async fn run_subscriptions(args: &SubscriptionsArgs) -> Result<(String, bool), CliError> {
    let api = AdminClient::from_connection(&args.conn)?;
    match &args.action {
        SubscriptionsAction::List => {
            let (_, answer): (_, SubscriptionsAnswer) = api
                .call(Method::GET, "/subscriptions", &[], None::<&()>)
                .await?;
            let ok = answer.tenants.iter().all(|t| t.error.is_none());
            let text = if args.conn.json {
                to_json(&answer)
            } else {
                subscriptions_table(&answer)
            };
            Ok((text, ok))
        }
        SubscriptionsAction::Start {
            content_type,
            tenant_id,
        }
        | SubscriptionsAction::Stop {
            content_type,
            tenant_id,
        } => {
            let verb = if matches!(args.action, SubscriptionsAction::Start { .. }) {
                "start"
            } else {
                "stop"
            };
            let ct = known_content_type(content_type)?;
            let query: Vec<(&str, &str)> = tenant_id
                .as_deref()
                .map(|t| vec![("tenant_id", t)])
                .unwrap_or_default();
            let (status, answer): (_, ChangeAnswer) = api
                .call(
                    Method::POST,
                    &format!("/subscriptions/{ct}/{verb}"),
                    &query,
                    None::<&()>,
                )
                .await?;
            let ok = status.is_success() && answer.results.iter().all(|r| r.ok);
            let text = if args.conn.json {
                to_json(&answer)
            } else {
                change_text(&answer)
            };
            Ok((text, ok))
        }
    }
}

/// The text to print and whether everything succeeded.
pub async fn run_backfill(args: &BackfillArgs) -> Result<(String, bool), CliError> {
    let ct = match (&args.content_type, args.source.as_str()) {
        (Some(c), _) => known_content_type(c)?,
        (None, "audit-search") => "",
        (None, _) => {
            return Err(CliError::Usage(
                "--content-type is required with --source management".into(),
            ));
        }
    };
    check_times(&args.start, args.end.as_deref())?;
    let api = AdminClient::from_connection(&args.conn)?;
    let req = BackfillRequest {
        tenant_id: args.tenant_id.clone(),
        content_type: ct.to_string(),
        start: args.start.clone(),
        end: args.end.clone(),
        source: (args.source != "management").then(|| args.source.clone()),
    };
    let (_, answer): (_, BackfillAnswer) =
        api.call(Method::POST, "/backfill", &[], Some(&req)).await?;
    let text = if args.conn.json {
        to_json(&answer)
    } else {
        backfill_text(&answer)
    };
    Ok((text, true))
}

fn known_content_type(raw: &str) -> Result<&'static str, CliError> {
    CONTENT_TYPES
        .iter()
        .find(|c| c.eq_ignore_ascii_case(raw.trim()))
        .copied()
        .ok_or_else(|| {
            CliError::Usage(format!(
                "unknown content type {raw:?}; one of {}",
                CONTENT_TYPES.join(", ")
            ))
        })
}

fn to_json<T: Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// A small HTTP client for the admin API.
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl AdminClient {
    /// Resolves the address and token from flags, environment and `--config`.
    pub fn from_connection(conn: &Connection) -> Result<AdminClient, CliError> {
        let cfg = match &conn.config {
            Some(path) => Some(Config::load(path).map_err(|problems| {
                CliError::Usage(format!("{} has problems:\n{problems}", path.display()))
            })?),
            None => None,
        };
        let base = match (&conn.admin, &cfg) {
            (Some(url), _) => url.clone(),
            (None, Some(cfg)) => url_of(cfg.listen.admin),
            (None, None) => DEFAULT_ADMIN_URL.to_string(),
        };
        let token = conn.token.clone().or_else(|| {
            cfg.as_ref()
                .and_then(|c| c.admin.token.as_ref())
                .map(|t| t.expose().to_string())
        });
        AdminClient::new(&base, token)
    }

    pub fn new(base: &str, token: Option<String>) -> Result<AdminClient, CliError> {
        let url = reqwest::Url::parse(base.trim())
            .map_err(|e| CliError::Usage(format!("--admin {base:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(CliError::Usage(format!(
                "--admin {base:?}: use http://HOST:PORT or https://HOST:PORT"
            )));
        }
        crate::server::install_crypto_provider();
        // No redirects: the bearer token must not travel anywhere else.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(3600))
            .build()
            .map_err(|e| CliError::Usage(format!("HTTP client: {e}")))?;
        Ok(AdminClient {
            http,
            base: url.as_str().trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// One call; a JSON answer of type `T` (also for 502 answers that carry per-tenant results),
    /// otherwise the API's `{"error"}` as [`CliError::Api`].
    pub async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<(StatusCode, T), CliError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).query(query);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            CliError::Api(format!(
                "cannot reach the admin API at {}: {}",
                self.base,
                e.without_url()
            ))
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CliError::Api(format!("reading the answer: {}", e.without_url())))?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(CliError::Api(
                "the admin API refused the token: set O365_ADMIN_TOKEN (or --token, or --config) to admin.token"
                    .into(),
            ));
        }
        if let Ok(v) = serde_json::from_slice::<T>(&bytes) {
            return Ok((status, v));
        }
        let msg = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned()
            });
        Err(CliError::Api(format!("{} {status}: {msg}", path)))
    }
}

/// `http://` address for a listen address; a wildcard bind is reached on loopback.
fn url_of(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// Aligned columns; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `subscriptions list` as a table; tenants whose listing failed show the error.
pub fn subscriptions_table(a: &SubscriptionsAnswer) -> String {
    let mut rows = vec![
        [
            "TENANT",
            "CONTENT TYPE",
            "STATUS",
            "WEBHOOK",
            "ADDRESS",
            "NOTE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut errors = String::new();
    for t in &a.tenants {
        let tenant = match &t.tenant_name {
            Some(name) => format!("{} ({name})", t.tenant_id),
            None => t.tenant_id.clone(),
        };
        if let Some(e) = &t.error {
            errors.push_str(&format!("{tenant}: error: {e}\n"));
        }
        for s in &t.subscriptions {
            let (hook_status, address) = match &s.webhook {
                Some(w) => (
                    w.status.clone().unwrap_or_else(|| "enabled".into()),
                    w.address.clone().unwrap_or_default(),
                ),
                None => ("-".into(), "-".into()),
            };
            let note = if !s.configured {
                "not collected".to_string()
            } else {
                s.needs_start
                    .as_ref()
                    .map(|r| format!("needs start: {r}"))
                    .unwrap_or_default()
            };
            rows.push(vec![
                tenant.clone(),
                s.content_type.clone(),
                s.status.clone(),
                hook_status,
                address,
                note,
            ]);
        }
    }
    format!("mode: {}\n{}{errors}", a.mode, table(&rows))
}

fn change_text(a: &ChangeAnswer) -> String {
    let mut out = String::new();
    for r in &a.results {
        match (&r.error, &r.subscription) {
            (Some(e), _) => out.push_str(&format!(
                "{} {}: {} failed: {e}\n",
                r.tenant_id, a.content_type, a.action
            )),
            (None, Some(s)) => out.push_str(&format!(
                "{} {}: {} ok (status {}, webhook {})\n",
                r.tenant_id,
                a.content_type,
                a.action,
                s.status,
                s.webhook
                    .as_ref()
                    .and_then(|w| w.status.clone())
                    .unwrap_or_else(|| "none".into())
            )),
            (None, None) => out.push_str(&format!(
                "{} {}: {} ok\n",
                r.tenant_id, a.content_type, a.action
            )),
        }
    }
    if let Some(n) = &a.note {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

fn backfill_text(a: &BackfillAnswer) -> String {
    let mut out = format!(
        "{} {} {} .. {}: listed {}, added {}, pages {}{}{}\n",
        a.tenant_id,
        a.content_type,
        a.start,
        a.end,
        a.listed,
        a.added,
        a.pages,
        if a.refused > 0 {
            format!(", refused {}", a.refused)
        } else {
            String::new()
        },
        if a.truncated { ", truncated" } else { "" },
    );
    if let Some(s) = &a.audit_search {
        out.push_str(&format!(
            "audit search: {} queries ({} windows split at the record limit), {} records, {} not collected, {} unreadable\n",
            s.queries, s.splits, s.records, s.skipped, s.unreadable
        ));
    }
    for n in &a.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::subscriptions::{SubscriptionView, TenantSubscriptions, WebhookView};

    #[test]
    fn wildcard_listen_is_reached_on_loopback() {
        assert_eq!(
            url_of("0.0.0.0:9090".parse().unwrap()),
            "http://127.0.0.1:9090"
        );
        assert_eq!(url_of("[::]:9090".parse().unwrap()), "http://[::1]:9090");
        assert_eq!(url_of("10.0.0.5:9".parse().unwrap()), "http://10.0.0.5:9");
    }

    #[test]
    fn bad_urls_are_usage_errors() {
        assert_eq!(AdminClient::new("nope", None).err().unwrap().code(), 2);
        assert_eq!(AdminClient::new("ftp://h:1", None).err().unwrap().code(), 2);
        assert!(AdminClient::new("http://127.0.0.1:9090/", None).is_ok());
        assert_eq!(known_content_type("Audit.Nope").unwrap_err().code(), 2);
    }

    #[test]
    fn table_lists_every_subscription_and_errors() {
        let a = SubscriptionsAnswer {
            mode: "push".into(),
            tenants: vec![
                TenantSubscriptions {
                    tenant_id: "t1".into(),
                    tenant_name: Some("contoso.onmicrosoft.com".into()),
                    error: None,
                    subscriptions: vec![SubscriptionView {
                        content_type: "Audit.General".into(),
                        configured: true,
                        status: "enabled".into(),
                        webhook: Some(WebhookView {
                            status: Some("enabled".into()),
                            address: Some("https://c.example/h".into()),
                            expiration: None,
                        }),
                        needs_start: None,
                    }],
                },
                TenantSubscriptions {
                    tenant_id: "t2".into(),
                    tenant_name: None,
                    error: Some("HTTP 401".into()),
                    subscriptions: vec![],
                },
            ],
        };
        let t = subscriptions_table(&a);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "mode: push");
        assert!(
            lines[1].starts_with("TENANT ") && lines[1].contains("  CONTENT TYPE"),
            "{t}"
        );
        assert!(lines[2].contains("Audit.General") && lines[2].contains("https://c.example/h"));
        assert!(lines[2].starts_with("t1 (contoso.onmicrosoft.com)"), "{t}");
        assert_eq!(lines[3], "t2: error: HTTP 401");
    }
}
