//! The shared store for several replicas: PostgreSQL through sqlx (plain queries, no compile-time
//! checked macros, so building needs no database).
//!
//! # Layout
//!
//! | table                    | key                     | what                                          |
//! |--------------------------|-------------------------|-----------------------------------------------|
//! | `o365_schema_migrations` | version                 | the migrations applied                        |
//! | `o365_queue`             | seq (identity)          | queued blobs: due time, lease, owner, progress |
//! | `o365_dedup`             | contentId               | the dedup set, with first-seen time           |
//! | `o365_dead`              | seq (the queue's)       | dead letters with their reason                |
//! | `o365_cursors`           | (tenant, content type)  | listing checkpoints, ns since the epoch       |
//! | `o365_tenant_leases`     | lower-case tenant id    | which replica lists the tenant, until when    |
//! | `o365_records`           | record key (16 bytes)   | record dedup: the blob that delivers it, when |
//! | `o365_replicas`          | replica token           | heartbeat: when the replica was last seen     |
//! | `o365_ledger`            | (tenant, type, hour)    | the completeness ledger ([`super::ledger`])   |
//! | `o365_subscription_starts` | (tenant, content type) | next allowed `subscriptions/start`, ms       |
//!
//! # Claims and leases
//!
//! `claim` picks the oldest claimable rows by `(due_ms, seq)` with `FOR UPDATE SKIP LOCKED`, so
//! replicas claiming at once never wait on each other nor take the same row. A claim writes the
//! lease's end and the store's owner token (one random token per [`PostgresStore`], i.e. per
//! replica). `renew`, `release`, `complete`, `reschedule` and `dead_letter` only act while the row
//! is still this replica's (or nobody's): a replica whose lease lapsed and was taken by another
//! gets [`StoreError::LeaseLost`] and changes nothing. `record_progress` is accepted from anyone: a
//! count of accepted records is true whoever sent them, and it never moves backwards.
//!
//! # Time
//!
//! Lease ends, due times and first-seen times come from the database's clock (`o365_now_ms()`),
//! so replicas with skewed clocks agree on when a lease expires. The times a caller computes
//! from its own clock (`reschedule`'s `not_before`, `prune`'s limit) are taken relative to the
//! caller's now and added to the database's. A cursor never moves past the database's now, and
//! listings end at it ([`super::Store::now`]). `prune` runs under an advisory lock, so one
//! replica at a time deletes, in bounded batches.
//!
//! # Durability
//!
//! Every call is one transaction, committed before it returns (PostgreSQL's default
//! `synchronous_commit = on`: on disk, and on a synchronous standby when the operator has one).
//!
//! # Migrations
//!
//! Versioned SQL in [`MIGRATIONS`], applied at start-up in one transaction under an advisory lock,
//! so replicas starting together apply each version once. A database at a newer version than this
//! build knows is refused (an older build must not write a newer schema).

use std::collections::HashSet;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};

use super::lease_clock::LeaseClock;
use super::ledger::{self, LedgerCounts, LedgerDelta, LedgerKey, LedgerRow};
use super::{
    Claimed, ContentRef, DeadLetter, EnqueueOutcome, Footprint, LeaseView, StoreError, StoreStats,
    TenantHolder, owner_key,
};
use crate::core::Secret;
use crate::core::settings::{Section, de};

/// What `store: postgres` configures.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database?…`: a secret (it holds the password).
    pub url: Secret,
    /// The URL read from a file instead (into `url`, by the check).
    #[serde(deserialize_with = "de::opt::path")]
    pub url_file: Option<PathBuf>,
    /// Connections this replica keeps at most.
    #[serde(deserialize_with = "de::whole")]
    pub pool_size: u32,
    /// `disable`, `allow`, `prefer`, `require`, `verify-ca` or `verify-full`; `None`: the URL's
    /// `sslmode`, else `prefer`.
    #[serde(deserialize_with = "de::opt::text")]
    pub sslmode: Option<String>,
    /// PEM CA certificates the database's certificate must chain to (`verify-ca`/`verify-full`).
    #[serde(deserialize_with = "de::opt::path")]
    pub ca_file: Option<PathBuf>,
    /// A file output is allowed with this store (each replica writes its own file).
    #[serde(deserialize_with = "de::flag")]
    pub allow_file_output: bool,
    /// How long a replica's lease on listing a tenant lasts unless renewed (`tenant_lease`).
    #[serde(deserialize_with = "de::duration")]
    pub tenant_lease: Duration,
}

/// Default `store.pool_size`.
pub const DEFAULT_POOL_SIZE: u32 = 8;
/// How long a replica's lease on listing a tenant lasts unless renewed (`store.tenant_lease`):
/// a replica that stops renewing loses its tenants to the others within about this long.
pub const DEFAULT_TENANT_LEASE: Duration = Duration::from_secs(30);

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: Secret::new(String::new()),
            url_file: None,
            pool_size: DEFAULT_POOL_SIZE,
            sslmode: None,
            ca_file: None,
            allow_file_output: false,
            tenant_lease: DEFAULT_TENANT_LEASE,
        }
    }
}

impl PostgresConfig {
    /// Checks the settings, reading `url_file` into `url`. The URL is never quoted: it holds the
    /// password.
    pub fn check(&mut self, s: &mut Section) {
        match (s.given("url"), &self.url_file) {
            (false, Some(path)) => {
                if let Some(url) = s.secret_file("url_file", path) {
                    self.url = url;
                }
            }
            (true, Some(_)) => s.problem("url_file", "is set together with store.url", "keep only one of url or url_file"),
            (false, None) if !s.given("url_file") => s.here(
                "is postgres but has no url",
                "add `url: ${O365_DATABASE_URL}` (postgres://user:password@host:5432/database) or `url_file:`",
            ),
            _ => {}
        }
        let url = self.url.expose().trim();
        let fix = "write it as postgres://user:password@host:5432/database";
        let key = if s.given("url") { "url" } else { "url_file" };
        if !url.is_empty() {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") && u.has_host() => {
                    self.url = Secret::new(url);
                }
                Ok(_) => s.problem(key, "is not a postgres:// URL with a host", fix),
                Err(e) => s.problem(key, format!("is not a URL ({e})"), fix),
            }
        }
        if self.pool_size == 0 || self.pool_size > 1000 {
            s.problem(
                "pool_size",
                format!("is {}", self.pool_size),
                "use 1 to 1000 connections (default 8)",
            );
        }
        if let Some(mode) = &mut self.sslmode {
            *mode = mode.trim().to_ascii_lowercase();
            const MODES: [&str; 6] = [
                "disable",
                "allow",
                "prefer",
                "require",
                "verify-ca",
                "verify-full",
            ];
            if !MODES.contains(&mode.as_str()) {
                s.problem(
                    "sslmode",
                    format!("is `{mode}`, not an sslmode"),
                    format!("use one of {}", MODES.join(", ")),
                );
            }
        }
        if let Some(ca) = &self.ca_file {
            s.pem_certificates("ca_file", ca);
        }
        if self.tenant_lease < Duration::from_secs(1) {
            s.problem(
                "tenant_lease",
                "is under 1s",
                "use a lease of seconds, e.g. 30s (the default)",
            );
        }
    }
}
/// How long a call waits for a free (or new) connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a call may take: a database that stopped answering must not hold a webhook
/// request or a worker for ever.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// The server cancels a statement after this (just under `CALL_TIMEOUT`, so the server gives up
/// first and the connection stays usable).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(14);
/// A statement waits at most this long for a row or table lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// The server ends a session left inside a transaction for this long (a replica that died or
/// hung mid-transaction must not hold its locks).
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// The server's TCP keepalive on our connections: a replica that vanished without closing them
/// (a node lost) frees its sessions within about a minute.
const SERVER_KEEPALIVE: [(&str, u64); 3] = [
    ("tcp_keepalives_idle", 30),
    ("tcp_keepalives_interval", 10),
    ("tcp_keepalives_count", 3),
];
/// A connection handed back after a call was cut short must answer a ping within this, or it is
/// closed rather than kept in the pool (a server that stopped answering, an old primary after a
/// failover).
const RELEASE_PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Migrations may take long on a big table; they get their own limit (and no statement timeout).
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(600);
/// Advisory lock key taken while migrating ("o365coll").
const MIGRATION_LOCK: i64 = 0x6f33_3635_636f_6c6c;
/// Advisory lock key taken by the replica that prunes the dedup set ("o365prun").
const PRUNE_LOCK: i64 = 0x6f33_3635_7072_756e;

/// The schema, one entry per version, applied in order and never edited once released.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE FUNCTION o365_now_ms() RETURNS bigint LANGUAGE sql VOLATILE
    AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

CREATE TABLE o365_queue (
    seq                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_key         text    NOT NULL,
    tenant_id          text    NOT NULL,
    content_type       text    NOT NULL,
    content_id         text    NOT NULL,
    content_uri        text    NOT NULL,
    content_created    text,
    content_expiration text,
    records            text,
    attempts           integer NOT NULL DEFAULT 0,
    enqueued_ms        bigint  NOT NULL,
    due_ms             bigint  NOT NULL,
    lease_until_ms     bigint,
    lease_owner        text,
    delivered          bigint  NOT NULL DEFAULT 0,
    last_error         text
);
CREATE INDEX o365_queue_due ON o365_queue (due_ms, seq);

CREATE TABLE o365_dedup (
    content_id    text   PRIMARY KEY,
    first_seen_ms bigint NOT NULL
);
CREATE INDEX o365_dedup_age ON o365_dedup (first_seen_ms);

CREATE TABLE o365_dead (
    seq                bigint  PRIMARY KEY,
    tenant_id          text    NOT NULL,
    content_type       text    NOT NULL,
    content_id         text    NOT NULL,
    content_uri        text    NOT NULL,
    content_created    text,
    content_expiration text,
    records            text,
    reason             text    NOT NULL,
    attempts           integer NOT NULL,
    enqueued_ms        bigint  NOT NULL,
    dead_ms            bigint  NOT NULL,
    delivered          bigint  NOT NULL
);

CREATE TABLE o365_cursors (
    tenant_id    text   NOT NULL,
    content_type text   NOT NULL,
    at_ns        bigint NOT NULL,
    PRIMARY KEY (tenant_id, content_type)
);

CREATE TABLE o365_tenant_leases (
    tenant_key text   PRIMARY KEY,
    holder     text   NOT NULL,
    since_ms   bigint NOT NULL,
    until_ms   bigint NOT NULL
);
"#,
    ),
    (
        2,
        r#"
-- The per-tenant high-water mark counts a tenant's queued blobs.
CREATE INDEX o365_queue_tenant ON o365_queue (tenant_key);

-- Record dedup: which blob delivers each record (Microsoft repeats records across blobs).
CREATE TABLE o365_records (
    record_key    bytea  PRIMARY KEY,
    owner         bigint NOT NULL,
    first_seen_ms bigint NOT NULL
);
CREATE INDEX o365_records_age ON o365_records (first_seen_ms);
"#,
    ),
    (
        3,
        r#"
-- Claims that pass over paused tenants walk the queue tenant by tenant, in due order within each,
-- instead of reading a paused tenant's whole backlog.
CREATE INDEX o365_queue_tenant_due ON o365_queue (tenant_key, due_ms, seq);

-- The queue churns (every blob is inserted, updated a few times, deleted): vacuum it early.
ALTER TABLE o365_queue SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
                            autovacuum_analyze_scale_factor = 0.02);
"#,
    ),
    (
        4,
        r#"
-- Tenant leases are balanced over the live replicas: each writes its heartbeat every lease round.
CREATE TABLE o365_replicas (
    token        text   PRIMARY KEY,
    last_seen_ms bigint NOT NULL
);
-- Every lease row is rewritten every round: vacuum early.
ALTER TABLE o365_tenant_leases SET (autovacuum_vacuum_scale_factor = 0.05,
                                    autovacuum_vacuum_threshold = 1000);
"#,
    ),
    (
        5,
        r#"
-- The completeness ledger: one row per tenant x content type x UTC hour. Blob counters are
-- columns changed by the queue's own statements; the others are JSON (`extra`), merged by the
-- collector under a row lock.
CREATE TABLE o365_ledger (
    tenant_key   text    NOT NULL,
    content_type text    NOT NULL,
    hour_s       bigint  NOT NULL,
    queued       bigint  NOT NULL DEFAULT 0,
    done         bigint  NOT NULL DEFAULT 0,
    dead         bigint  NOT NULL DEFAULT 0,
    dead_ids     text[]  NOT NULL DEFAULT '{}',
    extra        text    NOT NULL DEFAULT '{}',
    updated_ms   bigint  NOT NULL,
    PRIMARY KEY (tenant_key, content_type, hour_s)
);
CREATE INDEX o365_ledger_age ON o365_ledger (hour_s);
-- A queued blob's (and a dead letter's) ledger hour, set when it is queued.
ALTER TABLE o365_queue ADD COLUMN ledger_hour bigint;
ALTER TABLE o365_dead ADD COLUMN ledger_hour bigint;
"#,
    ),
    (
        6,
        r#"
-- Microsoft's 15-minute rule between subscription starts, shared by the replicas: when the next
-- start of each subscription may be sent (database clock, ms). One row per tenant x content type.
CREATE TABLE o365_subscription_starts (
    tenant_key   text   NOT NULL,
    content_type text   NOT NULL,
    next_ms      bigint NOT NULL,
    PRIMARY KEY (tenant_key, content_type)
);
"#,
    ),
    (
        7,
        r#"
-- The retention prune deletes a day's dedup entries and record claims every day. At the default
-- (a vacuum after 20 % of the rows changed) the tables grew for five days after the prune began
-- (benches/soak.rs) before the space of pruned rows was reused; after 2 % it is within hours.
ALTER TABLE o365_dedup SET (autovacuum_vacuum_scale_factor = 0.02,
                            autovacuum_vacuum_threshold = 10000);
ALTER TABLE o365_records SET (autovacuum_vacuum_scale_factor = 0.02,
                              autovacuum_vacuum_threshold = 10000);
"#,
    ),
];

/// A blob's ledger hour in SQL: the one set when it was queued (blobs queued before migration 5:
/// the hour it was queued in).
const LEDGER_HOUR: &str = "coalesce(ledger_hour, enqueued_ms / 3600000 * 3600)";
/// Ledger row upsert for blob counters; `$…` bound by the caller's `SELECT`.
const LEDGER_UPSERT: &str = "ON CONFLICT (tenant_key, content_type, hour_s) DO UPDATE SET
     queued = o365_ledger.queued + excluded.queued,
     done = o365_ledger.done + excluded.done,
     dead = o365_ledger.dead + excluded.dead,
     dead_ids = CASE WHEN cardinality(o365_ledger.dead_ids) < 50
                     THEN o365_ledger.dead_ids || excluded.dead_ids
                     ELSE o365_ledger.dead_ids END,
     updated_ms = excluded.updated_ms";

/// `records`: a carried Graph page's records as JSON text (`ContentRef::records`), else NULL.
const CONTENT_COLUMNS: &str = "tenant_id, content_type, content_id, content_uri, content_created, content_expiration, records";

/// The PostgreSQL store of one replica. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// One connection of its own for the tenant-lease rounds (beside `pool_size`).
    lease_pool: PgPool,
    /// This replica's lease owner token.
    owner: String,
    /// The URL's password (as written and percent-decoded), cut out of every error text.
    passwords: Vec<String>,
    /// The last `stats` answer and when it was taken ([`super::Store::recent_stats`]); the lock
    /// is held while one is taken, so callers at once share one count of the queue.
    stats_cache: std::sync::Arc<tokio::sync::Mutex<Option<(std::time::Instant, StoreStats)>>>,
    /// The database's clock as this replica expects it: takeovers of other replicas' leases
    /// are judged by it, so that a step of the database's clock does not end them early.
    lease_clock: std::sync::Arc<LeaseClock>,
    /// The longest lease (ms) a call asked for: how long a step of the clock is held off.
    longest_lease_ms: std::sync::Arc<AtomicU64>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects (at least one connection must succeed) and applies the migrations this build has.
    pub async fn connect(cfg: &PostgresConfig) -> Result<PostgresStore, StoreError> {
        let passwords = url_passwords(cfg.url.expose());
        let redact = |text: String| redact(text, &passwords);
        let mut options = PgConnectOptions::from_str(cfg.url.expose()).map_err(|e| {
            StoreError::Unavailable(redact(format!("store.url is not usable: {e}")))
        })?;
        if let Some(mode) = &cfg.sslmode {
            let mode = PgSslMode::from_str(mode)
                .map_err(|_| StoreError::Unavailable(format!("unknown sslmode {mode}")))?;
            options = options.ssl_mode(mode);
        }
        if let Some(ca) = &cfg.ca_file {
            options = options.ssl_root_cert(ca);
        }
        let ms = |d: Duration| d.as_millis().to_string();
        options = options
            .application_name("o365-collector")
            .options([
                ("statement_timeout", ms(STATEMENT_TIMEOUT)),
                ("lock_timeout", ms(LOCK_TIMEOUT)),
                (
                    "idle_in_transaction_session_timeout",
                    ms(IDLE_IN_TRANSACTION_TIMEOUT),
                ),
            ])
            .options(SERVER_KEEPALIVE.map(|(k, v)| (k, v.to_string())));
        let pool_of = |size: u32| {
            PgPoolOptions::new()
                .max_connections(size)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                // sqlx pings a released connection with no time limit: a call cut short by
                // CALL_TIMEOUT would leave its connection hanging on a server that stopped answering.
                .after_release(|conn, _| {
                    Box::pin(async move {
                        use sqlx::Connection;
                        Ok(matches!(
                            tokio::time::timeout(RELEASE_PING_TIMEOUT, conn.ping()).await,
                            Ok(Ok(()))
                        ))
                    })
                })
        };
        let pool = pool_of(cfg.pool_size.max(1))
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Unavailable(redact(format!("cannot connect: {e}"))))?;
        // Opened on first use: a round must not wait behind the workload's calls for a
        // connection, or with thousands of tenants the leases lapse while workers and listings
        // hold every connection.
        let lease_pool = pool_of(1).connect_lazy_with(options);
        let store = PostgresStore {
            pool,
            lease_pool,
            owner: uuid::Uuid::new_v4().to_string(),
            passwords,
            stats_cache: Default::default(),
            lease_clock: Default::default(),
            longest_lease_ms: Default::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// This replica's owner token (also the holder name in the tenant leases).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Other collector sessions the server has been busy with (a statement running, or a
    /// transaction left open) for longer than `longer_than`: what a stuck connection looks like
    /// from the server (tests check none stays after an outage).
    #[cfg(any(test, feature = "test-util"))]
    pub async fn sessions_busy_longer_than(
        &self,
        longer_than: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let secs = longer_than.as_secs_f64();
        self.call(async {
            sqlx::query_scalar::<_, String>(
                "SELECT pid::text || ' ' || state || ' since ' || state_change::text || ': ' || left(query, 80)
                 FROM pg_stat_activity
                 WHERE application_name = 'o365-collector' AND pid <> pg_backend_pid()
                   AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')
                   AND state_change < clock_timestamp() - make_interval(secs => $1)",
            )
            .bind(secs)
            .fetch_all(&self.pool)
            .await
        })
        .await
    }

    /// The schema version the database is at (tests check the migrations).
    #[cfg(any(test, feature = "test-util"))]
    pub async fn schema_version(&self) -> Result<i32, StoreError> {
        self.call(async {
            sqlx::query_scalar::<_, i32>(
                "SELECT coalesce(max(version), 0) FROM o365_schema_migrations",
            )
            .fetch_one(&self.pool)
            .await
        })
        .await
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let latest = MIGRATIONS.last().map_or(0, |m| m.0);
        let run = async {
            let mut tx = self.pool.begin().await?;
            // The session's statement and lock timeouts are for calls, not for migrations.
            sqlx::raw_sql("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0")
                .execute(&mut *tx)
                .await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await?;
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS o365_schema_migrations (
                    version integer PRIMARY KEY,
                    applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .execute(&mut *tx)
            .await?;
            let current: i32 =
                sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM o365_schema_migrations")
                    .fetch_one(&mut *tx)
                    .await?;
            if current > latest {
                return Ok(Err(current));
            }
            for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
                sqlx::raw_sql(sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO o365_schema_migrations (version) VALUES ($1)")
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Ok(()))
        };
        let migrated = match tokio::time::timeout(MIGRATION_TIMEOUT, run).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                return Err(StoreError::Unavailable(redact(
                    format!("database: {e}"),
                    &self.passwords,
                )));
            }
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "database: migrations took longer than {}s",
                    MIGRATION_TIMEOUT.as_secs()
                )));
            }
        };
        match migrated {
            Ok(()) => Ok(()),
            Err(current) => Err(StoreError::Corrupt(format!(
                "the database schema is at version {current}, newer than this build knows ({latest}): run a newer collector"
            ))),
        }
    }

    /// Runs one database call with the time limit, turning every failure into `Unavailable`
    /// with the password cut out.
    async fn call<T>(
        &self,
        f: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(CALL_TIMEOUT, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Unavailable(redact(
                format!("database: {e}"),
                &self.passwords,
            ))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "database: no answer within {}s",
                CALL_TIMEOUT.as_secs()
            ))),
        }
    }

    /// After an update that matched no row: `NotFound` if the seq is not queued, else the lease
    /// belongs to another replica.
    async fn missed(&self, seq: u64) -> StoreError {
        let Ok(key) = i64::try_from(seq) else {
            return StoreError::NotFound(seq);
        };
        let found = self
            .call(async {
                sqlx::query_scalar::<_, i64>("SELECT seq FROM o365_queue WHERE seq = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
            })
            .await;
        match found {
            Ok(Some(_)) => StoreError::LeaseLost(seq),
            Ok(None) => StoreError::NotFound(seq),
            Err(e) => e,
        }
    }

    /// Runs an owner-checked statement on one queued blob (`$1` seq, `$2` owner, then what `bind`
    /// adds).
    async fn owned(
        &self,
        seq: u64,
        sql: &str,
        bind: impl FnOnce(PgQuery<'_>) -> PgQuery<'_>,
    ) -> Result<(), StoreError> {
        let Ok(key) = i64::try_from(seq) else {
            return Err(StoreError::NotFound(seq));
        };
        let query = bind(sqlx::query(sql).bind(key).bind(&self.owner));
        let done = self.call(async { query.execute(&self.pool).await }).await?;
        if done.rows_affected() == 0 {
            return Err(self.missed(seq).await);
        }
        Ok(())
    }
}

/// A statement being bound.
type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// `WHERE` part of the statements a worker may only run on its own (or a free) lease.
/// The database's time by which another replica's lease is judged expired: its clock, but no
/// later than this replica expects it to be (`$5`, see [`LeaseClock`]; NULL before the first
/// reading), so that a step forward of the database's clock ends no lease early.
const TAKEOVER: &str = "least(o365_now_ms(), coalesce($5::bigint, o365_now_ms()))";

const MINE: &str = "seq = $1 AND (lease_owner IS NULL OR lease_owner = $2)";

impl super::Store for PostgresStore {
    async fn enqueue(&self, items: Vec<ContentRef>) -> Result<EnqueueOutcome, StoreError> {
        let total = items.len();
        if items.is_empty() {
            return Ok(EnqueueOutcome::default());
        }
        // Carried records' identities share the dedup set with contentIds (disjoint names).
        let mut record_keys: Vec<String> = items
            .iter()
            .flat_map(|c| c.records.iter().flatten().map(|r| r.key.clone()))
            .collect();
        record_keys.sort_unstable();
        record_keys.dedup();
        let run = async {
            let mut tx = self.pool.begin().await?;
            let new_keys: HashSet<String> = if record_keys.is_empty() {
                HashSet::new()
            } else {
                insert_dedup(&mut tx, &record_keys).await?
            };
            // A page keeps only its records seen for the first time (each in the first page of
            // this call that has it) and is named after the first of them, like the embedded store.
            let (mut taken, mut seen) = (HashSet::new(), HashSet::new());
            let mut fresh: Vec<ContentRef> = Vec::with_capacity(total);
            for mut c in items {
                if let Some(records) = c.records.take() {
                    let kept: Vec<_> = records
                        .into_iter()
                        .filter(|r| new_keys.contains(&r.key) && taken.insert(r.key.clone()))
                        .collect();
                    let Some(first) = kept.first() else { continue };
                    c.content_id = format!("page:{}", first.key);
                    c.records = Some(kept);
                }
                if seen.insert(c.content_id.clone()) {
                    fresh.push(c);
                }
            }
            if fresh.is_empty() {
                tx.commit().await?;
                return Ok(0);
            }
            // Sorted, so that concurrent enqueues lock dedup keys in the same order (no deadlock).
            let mut ids: Vec<String> = fresh.iter().map(|c| c.content_id.clone()).collect();
            ids.sort_unstable();
            let added = insert_dedup(&mut tx, &ids).await?;
            let new: Vec<&ContentRef> = fresh
                .iter()
                .filter(|c| added.contains(&c.content_id))
                .collect();
            if !new.is_empty() {
                let col =
                    |f: fn(&ContentRef) -> String| new.iter().map(|c| f(c)).collect::<Vec<_>>();
                let opt = |f: fn(&ContentRef) -> Option<String>| {
                    new.iter().map(|c| f(c)).collect::<Vec<_>>()
                };
                let now = SystemTime::now();
                let hours: Vec<i64> = new
                    .iter()
                    .map(|c| ledger::blob_hour(c.content_created.as_deref(), now))
                    .collect();
                sqlx::query(
                    "INSERT INTO o365_queue (tenant_key, tenant_id, content_type, content_id,
                         content_uri, content_created, content_expiration, records, enqueued_ms,
                         due_ms, ledger_hour)
                     SELECT k, t, ct, id, uri, cr, ex, rec, n.ms, n.ms, h
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::text[], $7::text[], $8::text[], $9::bigint[])
                              WITH ORDINALITY AS u(k, t, ct, id, uri, cr, ex, rec, h, ord),
                          (SELECT o365_now_ms() AS ms) n
                     ORDER BY ord",
                )
                .bind(col(|c| c.tenant_id.to_ascii_lowercase()))
                .bind(col(|c| c.tenant_id.clone()))
                .bind(col(|c| c.content_type.clone()))
                .bind(col(|c| c.content_id.clone()))
                .bind(col(|c| c.content_uri.clone()))
                .bind(opt(|c| c.content_created.clone()))
                .bind(opt(|c| c.content_expiration.clone()))
                .bind(opt(|c| {
                    c.records
                        .as_ref()
                        .and_then(|r| serde_json::to_string(r).ok())
                }))
                .bind(&hours)
                .execute(&mut *tx)
                .await?;
                // What must be delivered, in the same transaction as the queue rows.
                let mut queued: std::collections::BTreeMap<(String, String, i64), i64> =
                    Default::default();
                for (c, h) in new.iter().zip(&hours) {
                    let k = (c.tenant_id.to_ascii_lowercase(), c.content_type.clone(), *h);
                    *queued.entry(k).or_default() += 1;
                }
                let (mut ks, mut cts, mut hs, mut ns) = (vec![], vec![], vec![], vec![]);
                for ((k, ct, h), n) in queued {
                    ks.push(k);
                    cts.push(ct);
                    hs.push(h);
                    ns.push(n);
                }
                sqlx::query(&format!(
                    "INSERT INTO o365_ledger (tenant_key, content_type, hour_s, queued, updated_ms)
                     SELECT k, ct, h, n, o365_now_ms()
                     FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
                              AS u(k, ct, h, n)
                     {LEDGER_UPSERT}"
                ))
                .bind(&ks)
                .bind(&cts)
                .bind(&hs)
                .bind(&ns)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(added.len())
        };
        let added = self.call(run).await?;
        Ok(EnqueueOutcome {
            added,
            duplicates: total - added,
        })
    }

    async fn claim_except(
        &self,
        max: usize,
        lease: Duration,
        skip: &[String],
    ) -> Result<Vec<Claimed>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let skip: Vec<String> = skip.iter().map(|t| t.to_ascii_lowercase()).collect();
        let lease_ms = self.lease_ms(lease);
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let cap = self.lease_clock.cap(Instant::now());
        // With no tenant to pass over, the first claimable blobs in due order. Otherwise the
        // queue's tenants are walked one index probe each (a loose index scan) and each tenant
        // not passed over offers its first claimable blobs: a paused tenant's backlog, however
        // long, is never read. A few spare candidates per tenant cover blobs another replica
        // locks meanwhile.
        let candidates = if skip.is_empty() {
            "SELECT seq FROM o365_queue
             WHERE due_ms <= (SELECT o365_now_ms())
               AND (lease_until_ms IS NULL OR lease_until_ms <= {TAKEOVER})
               AND tenant_key <> ALL($4::text[])
             ORDER BY due_ms, seq
             LIMIT $1
             FOR UPDATE SKIP LOCKED"
        } else {
            "WITH RECURSIVE tenants(k) AS (
                 SELECT min(tenant_key) FROM o365_queue
                 UNION ALL
                 SELECT (SELECT min(tenant_key) FROM o365_queue WHERE tenant_key > t.k)
                 FROM tenants t WHERE t.k IS NOT NULL
             ),
             offered AS (
                 SELECT b.seq, b.due_ms FROM tenants t
                 CROSS JOIN LATERAL (
                     SELECT seq, due_ms FROM o365_queue
                     WHERE tenant_key = t.k
                       AND due_ms <= (SELECT o365_now_ms())
                       AND (lease_until_ms IS NULL OR lease_until_ms <= {TAKEOVER})
                     ORDER BY due_ms, seq
                     LIMIT $1 + 4) b
                 WHERE t.k IS NOT NULL AND t.k <> ALL($4::text[])
             )
             SELECT seq FROM o365_queue
             WHERE seq IN (SELECT seq FROM offered)
               AND (lease_until_ms IS NULL OR lease_until_ms <= {TAKEOVER})
             ORDER BY due_ms, seq
             LIMIT $1
             FOR UPDATE SKIP LOCKED"
        }
        .replace("{TAKEOVER}", TAKEOVER);
        let rows = self
            .call(async {
                sqlx::query(&format!(
                    "UPDATE o365_queue q
                     SET lease_until_ms = n.ms + $2, lease_owner = $3
                     FROM (SELECT o365_now_ms() AS ms) n,
                          ({candidates}) c
                     WHERE q.seq = c.seq
                     RETURNING q.seq, q.due_ms, q.attempts, q.enqueued_ms, q.delivered, {}",
                    prefixed("q.")
                ))
                .bind(limit)
                .bind(lease_ms)
                .bind(&self.owner)
                .bind(&skip)
                .bind(cap)
                .fetch_all(&self.pool)
                .await
            })
            .await?;
        let mut claimed: Vec<(i64, Claimed)> = rows
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>("due_ms")?, claimed_of(r)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.corrupt(e))?;
        claimed.sort_by_key(|(due, c)| (*due, c.seq));
        Ok(claimed.into_iter().map(|(_, c)| c).collect())
    }

    async fn release(&self, seq: u64) -> Result<(), StoreError> {
        self.owned(
            seq,
            &format!(
                "UPDATE o365_queue SET lease_until_ms = NULL, lease_owner = NULL WHERE {MINE}"
            ),
            |q| q,
        )
        .await
    }

    async fn renew(&self, seq: u64, lease: Duration) -> Result<(), StoreError> {
        let lease_ms = self.lease_ms(lease);
        self.owned(
            seq,
            &format!(
                "UPDATE o365_queue SET lease_until_ms = o365_now_ms() + $3, lease_owner = $2
                 WHERE {MINE}"
            ),
            |q| q.bind(lease_ms),
        )
        .await
    }

    async fn record_progress(&self, seq: u64, delivered: u64) -> Result<(), StoreError> {
        let Ok(key) = i64::try_from(seq) else {
            return Err(StoreError::NotFound(seq));
        };
        let delivered = i64::try_from(delivered).unwrap_or(i64::MAX);
        let done = self
            .call(async {
                sqlx::query(
                    "UPDATE o365_queue SET delivered = greatest(delivered, $2) WHERE seq = $1",
                )
                .bind(key)
                .bind(delivered)
                .execute(&self.pool)
                .await
            })
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(seq));
        }
        Ok(())
    }

    async fn complete(&self, seq: u64) -> Result<(), StoreError> {
        self.owned(
            seq,
            &format!(
                "WITH gone AS (DELETE FROM o365_queue WHERE {MINE}
                               RETURNING tenant_key, content_type, {LEDGER_HOUR} AS h)
                 INSERT INTO o365_ledger (tenant_key, content_type, hour_s, done, updated_ms)
                 SELECT tenant_key, content_type, h, 1, o365_now_ms() FROM gone
                 {LEDGER_UPSERT}"
            ),
            |q| q,
        )
        .await
    }

    async fn reschedule(
        &self,
        seq: u64,
        not_before: SystemTime,
        reason: &str,
    ) -> Result<(), StoreError> {
        let due = from_now_ms(not_before);
        let reason = reason.to_owned();
        self.owned(
            seq,
            &format!(
                "UPDATE o365_queue SET lease_until_ms = NULL, lease_owner = NULL,
                     due_ms = o365_now_ms() + $3,
                     attempts = attempts + 1, last_error = $4
                 WHERE {MINE}"
            ),
            |q| q.bind(due).bind(reason),
        )
        .await
    }

    async fn dead_letter(&self, seq: u64, reason: &str) -> Result<(), StoreError> {
        let reason = reason.to_owned();
        self.owned(
            seq,
            &format!(
                "WITH gone AS (DELETE FROM o365_queue WHERE {MINE} RETURNING *),
                 dead AS (
                   INSERT INTO o365_dead (seq, {CONTENT_COLUMNS}, reason, attempts, enqueued_ms,
                       dead_ms, delivered, ledger_hour)
                   SELECT seq, {CONTENT_COLUMNS}, $3, attempts, enqueued_ms, o365_now_ms(),
                       delivered, {LEDGER_HOUR}
                   FROM gone)
                 INSERT INTO o365_ledger (tenant_key, content_type, hour_s, dead, dead_ids,
                     updated_ms)
                 SELECT tenant_key, content_type, {LEDGER_HOUR}, 1, ARRAY[content_id],
                     o365_now_ms()
                 FROM gone
                 {LEDGER_UPSERT}"
            ),
            |q| q.bind(reason),
        )
        .await
    }

    async fn cursor(
        &self,
        tenant_id: &str,
        content_type: &str,
    ) -> Result<Option<SystemTime>, StoreError> {
        let ns: Option<i64> = self
            .call(async {
                sqlx::query_scalar(
                    "SELECT at_ns FROM o365_cursors WHERE tenant_id = $1 AND content_type = $2",
                )
                .bind(tenant_id)
                .bind(content_type)
                .fetch_optional(&self.pool)
                .await
            })
            .await?;
        Ok(ns.map(|ns| UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)))
    }

    async fn advance_cursor(
        &self,
        tenant_id: &str,
        content_type: &str,
        to: SystemTime,
    ) -> Result<(), StoreError> {
        let ns = to
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.call(async {
            sqlx::query(
                // Never past the database's now: a replica whose clock runs ahead must not move
                // the shared cursor past content nobody listed yet.
                "INSERT INTO o365_cursors (tenant_id, content_type, at_ns)
                 VALUES ($1, $2, least($3, o365_now_ms() * 1000000))
                 ON CONFLICT (tenant_id, content_type)
                 DO UPDATE SET at_ns = greatest(o365_cursors.at_ns, excluded.at_ns)",
            )
            .bind(tenant_id)
            .bind(content_type)
            .bind(ns)
            .execute(&self.pool)
            .await
        })
        .await
        .map(|_| ())
    }

    async fn claim_subscription_start(
        &self,
        tenant_id: &str,
        content_type: &str,
        wait: Duration,
    ) -> Result<Option<SystemTime>, StoreError> {
        let tenant = tenant_id.to_ascii_lowercase();
        let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 4);
        // One statement: the row is taken only where the next allowed start has passed, so of
        // replicas claiming at once exactly one gets a row back. The others read how long is left
        // (on the database's clock, carried over to the caller's as a duration).
        let left: Option<i64> = self
            .call(async {
                let mut tx = self.pool.begin().await?;
                let granted: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO o365_subscription_starts (tenant_key, content_type, next_ms)
                     VALUES ($1, $2, o365_now_ms() + $3)
                     ON CONFLICT (tenant_key, content_type) DO UPDATE SET next_ms = excluded.next_ms
                     WHERE o365_subscription_starts.next_ms <= o365_now_ms()
                     RETURNING next_ms",
                )
                .bind(&tenant)
                .bind(content_type)
                .bind(wait_ms)
                .fetch_optional(&mut *tx)
                .await?;
                let left = match granted {
                    Some(_) => None,
                    None => sqlx::query_scalar(
                        "SELECT next_ms - o365_now_ms() FROM o365_subscription_starts
                         WHERE tenant_key = $1 AND content_type = $2",
                    )
                    .bind(&tenant)
                    .bind(content_type)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|ms: i64| ms.max(1)),
                };
                tx.commit().await?;
                Ok(left)
            })
            .await?;
        Ok(left.map(|ms| SystemTime::now() + Duration::from_millis(ms as u64)))
    }

    async fn set_next_subscription_start(
        &self,
        tenant_id: &str,
        content_type: &str,
        not_before: SystemTime,
    ) -> Result<(), StoreError> {
        let tenant = tenant_id.to_ascii_lowercase();
        let ahead = from_now_ms(not_before);
        self.call(async {
            sqlx::query(
                "INSERT INTO o365_subscription_starts (tenant_key, content_type, next_ms)
                 VALUES ($1, $2, o365_now_ms() + $3)
                 ON CONFLICT (tenant_key, content_type) DO UPDATE SET next_ms = excluded.next_ms",
            )
            .bind(&tenant)
            .bind(content_type)
            .bind(ahead)
            .execute(&self.pool)
            .await
        })
        .await
        .map(|_| ())
    }

    async fn next_subscription_start(
        &self,
        tenant_id: &str,
        content_type: &str,
    ) -> Result<Option<SystemTime>, StoreError> {
        let tenant = tenant_id.to_ascii_lowercase();
        let left: Option<i64> = self
            .call(async {
                sqlx::query_scalar(
                    "SELECT next_ms - o365_now_ms() FROM o365_subscription_starts
                     WHERE tenant_key = $1 AND content_type = $2",
                )
                .bind(&tenant)
                .bind(content_type)
                .fetch_optional(&self.pool)
                .await
            })
            .await?;
        Ok(left
            .filter(|ms| *ms > 0)
            .map(|ms| SystemTime::now() + Duration::from_millis(ms as u64)))
    }

    async fn prune(&self, older_than: SystemTime, max: usize) -> Result<u64, StoreError> {
        let limit = from_now_ms(older_than);
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let run = async {
            let mut tx = self.pool.begin().await?;
            // One replica prunes at a time: the others skip the round (their next one may take it).
            let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(PRUNE_LOCK)
                .fetch_one(&mut *tx)
                .await?;
            if !mine {
                return Ok(0);
            }
            // `o365_now_ms()` is volatile: in a `WHERE` it is evaluated per row and cannot bound
            // an index scan, so with nothing old enough the age index was read to its end (1.8 s
            // for 2 million rows, every call); `(SELECT o365_now_ms() + $1)` is computed once and
            // bounds it. `key IN (subquery)` deleted through a hash join over a sequential scan
            // of the whole table (1 s a batch of 10,000 out of 2 million); `= ANY (ARRAY(…))`
            // looks each key up in the primary key (56 ms). The age is checked again on the row
            // deleted, so a row renewed meanwhile stays.
            let done = sqlx::query(
                "DELETE FROM o365_dedup
                 WHERE content_id = ANY (ARRAY(
                         SELECT content_id FROM o365_dedup
                         WHERE first_seen_ms < (SELECT o365_now_ms() + $1)
                         ORDER BY first_seen_ms LIMIT $2))
                   AND first_seen_ms < (SELECT o365_now_ms() + $1)",
            )
            .bind(limit)
            .bind(max)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(done.rows_affected())
        };
        self.call(run).await
    }

    async fn claim_records(
        &self,
        owner: &str,
        keys: Vec<u128>,
        window: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        let owner = owner_key(owner) as i64;
        let window = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let bytes: Vec<Vec<u8>> = keys.iter().map(|k| k.to_be_bytes().to_vec()).collect();
        // Taken: new keys and expired claims (inserted or taken over), plus the keys this blob
        // already holds. Sorted, so concurrent claims lock rows in one order.
        let mine: Vec<Vec<u8>> = self
            .call(async {
                sqlx::query_scalar(
                    "WITH taken AS (
                       INSERT INTO o365_records AS r (record_key, owner, first_seen_ms)
                       SELECT k, $2::bigint, o365_now_ms()
                       FROM (SELECT DISTINCT k FROM unnest($1::bytea[]) AS t(k)) AS d ORDER BY k
                       ON CONFLICT (record_key) DO UPDATE
                         SET owner = EXCLUDED.owner, first_seen_ms = EXCLUDED.first_seen_ms
                         WHERE r.owner = EXCLUDED.owner
                            OR r.first_seen_ms < EXCLUDED.first_seen_ms - $3
                       RETURNING record_key)
                     SELECT record_key FROM taken",
                )
                .bind(&bytes)
                .bind(owner)
                .bind(window)
                .fetch_all(&self.pool)
                .await
            })
            .await?;
        let mine: HashSet<Vec<u8>> = mine.into_iter().collect();
        Ok(bytes.iter().map(|k| mine.contains(k)).collect())
    }

    async fn prune_records(&self, older_than: SystemTime, max: usize) -> Result<u64, StoreError> {
        let limit = from_now_ms(older_than);
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let run = async {
            let mut tx = self.pool.begin().await?;
            let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(PRUNE_LOCK)
                .fetch_one(&mut *tx)
                .await?;
            if !mine {
                return Ok(0);
            }
            // Shaped as in `prune` (index scans only); a claim taken over meanwhile is newer
            // and stays.
            let done = sqlx::query(
                "DELETE FROM o365_records
                 WHERE record_key = ANY (ARRAY(
                         SELECT record_key FROM o365_records
                         WHERE first_seen_ms < (SELECT o365_now_ms() + $1)
                         ORDER BY first_seen_ms LIMIT $2))
                   AND first_seen_ms < (SELECT o365_now_ms() + $1)",
            )
            .bind(limit)
            .bind(max)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(done.rows_affected())
        };
        self.call(run).await
    }

    async fn ledger_add(&self, deltas: Vec<LedgerDelta>) -> Result<(), StoreError> {
        let mut merged = std::collections::BTreeMap::new();
        ledger::merge_into(&mut merged, deltas);
        if merged.is_empty() {
            return Ok(());
        }
        // Rows locked in key order (concurrent calls cannot deadlock), merged here, written back.
        let run = async {
            let mut tx = self.pool.begin().await?;
            for (key, add) in &merged {
                sqlx::query(
                    "INSERT INTO o365_ledger (tenant_key, content_type, hour_s, updated_ms)
                     VALUES ($1, $2, $3, o365_now_ms()) ON CONFLICT DO NOTHING",
                )
                .bind(&key.tenant_id)
                .bind(&key.content_type)
                .bind(key.hour)
                .execute(&mut *tx)
                .await?;
                let extra: String = sqlx::query_scalar(
                    "SELECT extra FROM o365_ledger
                     WHERE tenant_key = $1 AND content_type = $2 AND hour_s = $3 FOR UPDATE",
                )
                .bind(&key.tenant_id)
                .bind(&key.content_type)
                .bind(key.hour)
                .fetch_one(&mut *tx)
                .await?;
                let mut counts: LedgerCounts = serde_json::from_str(&extra).unwrap_or_default();
                let mut rest = add.clone();
                let (queued, done, dead) = (rest.queued, rest.done, rest.dead);
                let ids = std::mem::take(&mut rest.dead_ids);
                (rest.queued, rest.done, rest.dead) = (0, 0, 0);
                counts.add(&rest);
                let extra = serde_json::to_string(&counts).unwrap_or_else(|_| "{}".into());
                sqlx::query(
                    "UPDATE o365_ledger SET extra = $4, queued = queued + $5, done = done + $6,
                         dead = dead + $7,
                         dead_ids = CASE WHEN cardinality(dead_ids) < 50 THEN dead_ids || $8
                                         ELSE dead_ids END,
                         updated_ms = o365_now_ms()
                     WHERE tenant_key = $1 AND content_type = $2 AND hour_s = $3",
                )
                .bind(&key.tenant_id)
                .bind(&key.content_type)
                .bind(key.hour)
                .bind(extra)
                .bind(queued as i64)
                .bind(done as i64)
                .bind(dead as i64)
                .bind(ids)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        };
        self.call(run).await
    }

    async fn ledger_range(
        &self,
        tenant_id: &str,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        let key = tenant_id.to_ascii_lowercase();
        let rows = self
            .call(async {
                sqlx::query(
                    "SELECT tenant_key, content_type, hour_s, queued, done, dead, dead_ids, extra,
                         updated_ms
                     FROM o365_ledger WHERE tenant_key = $1 AND hour_s >= $2 AND hour_s < $3
                     ORDER BY content_type, hour_s",
                )
                .bind(&key)
                .bind(from_hour)
                .bind(to_hour)
                .fetch_all(&self.pool)
                .await
            })
            .await?;
        rows.iter()
            .map(|r| {
                let extra: String = r.try_get("extra")?;
                let mut counts: LedgerCounts =
                    serde_json::from_str(&extra).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                counts.queued = r.try_get::<i64, _>("queued")?.max(0) as u64;
                counts.done = r.try_get::<i64, _>("done")?.max(0) as u64;
                counts.dead = r.try_get::<i64, _>("dead")?.max(0) as u64;
                counts.dead_ids = r.try_get("dead_ids")?;
                Ok(LedgerRow {
                    key: LedgerKey {
                        tenant_id: r.try_get("tenant_key")?,
                        content_type: r.try_get("content_type")?,
                        hour: r.try_get("hour_s")?,
                    },
                    counts,
                    updated_ms: r.try_get::<i64, _>("updated_ms")?.max(0) as u64,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.corrupt(e))
    }

    async fn ledger_prune(&self, older_than: SystemTime, max: usize) -> Result<u64, StoreError> {
        let limit = ledger::hour_of(older_than);
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let done = self
            .call(async {
                sqlx::query(
                    "DELETE FROM o365_ledger WHERE ctid IN (
                       SELECT ctid FROM o365_ledger WHERE hour_s < $1 ORDER BY hour_s LIMIT $2)",
                )
                .bind(limit)
                .bind(max)
                .execute(&self.pool)
                .await
            })
            .await?;
        Ok(done.rows_affected())
    }

    async fn tenant_backlog(&self, tenant_id: &str, cap: u64) -> Result<u64, StoreError> {
        let key = tenant_id.to_ascii_lowercase();
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let n: i64 = self
            .call(async {
                sqlx::query_scalar(
                    "SELECT count(*) FROM (
                       SELECT 1 FROM o365_queue WHERE tenant_key = $1 LIMIT $2) AS q",
                )
                .bind(&key)
                .bind(cap)
                .fetch_one(&self.pool)
                .await
            })
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn footprint(&self) -> Result<Footprint, StoreError> {
        let row = self
            .call(async {
                sqlx::query(
                    "SELECT
                       (SELECT greatest(reltuples, 0)::bigint FROM pg_class
                          WHERE oid = 'o365_dedup'::regclass) AS entries,
                       (SELECT greatest(reltuples, 0)::bigint FROM pg_class
                          WHERE oid = 'o365_records'::regclass) AS records,
                       (SELECT sum(pg_total_relation_size(t::regclass))::bigint FROM unnest(
                          ARRAY['o365_queue', 'o365_dedup', 'o365_dead', 'o365_cursors',
                                'o365_tenant_leases', 'o365_records', 'o365_replicas',
                                'o365_ledger']) AS t) AS bytes",
                )
                .fetch_one(&self.pool)
                .await
            })
            .await?;
        let get = |name: &str| row.try_get::<i64, _>(name).map_err(|e| self.corrupt(e));
        Ok(Footprint {
            dedup_entries: u64::try_from(get("entries")?).unwrap_or(0),
            record_entries: u64::try_from(get("records")?).unwrap_or(0),
            bytes: u64::try_from(get("bytes")?).unwrap_or(0),
        })
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let row = self
            .call(async {
                sqlx::query(
                    "WITH n AS (SELECT o365_now_ms() AS ms)
                     SELECT
                       (SELECT count(*) FROM o365_queue, n
                          WHERE lease_until_ms IS NULL OR lease_until_ms <= n.ms) AS pending,
                       (SELECT count(*) FROM o365_queue, n WHERE lease_until_ms > n.ms) AS leased,
                       (SELECT min(enqueued_ms) FROM o365_queue, n
                          WHERE lease_until_ms IS NULL OR lease_until_ms <= n.ms) AS oldest,
                       (SELECT count(*) FROM o365_dead) AS dead,
                       (SELECT ms FROM n) AS now_ms",
                )
                .fetch_one(&self.pool)
                .await
            })
            .await?;
        let get = |name: &str| row.try_get::<i64, _>(name).map_err(|e| self.corrupt(e));
        let oldest: Option<i64> = row.try_get("oldest").map_err(|e| self.corrupt(e))?;
        let now = get("now_ms")?;
        Ok(StoreStats {
            pending: get("pending")? as u64,
            leased: get("leased")? as u64,
            dead_letters: get("dead")? as u64,
            oldest_pending_age_secs: oldest.map(|o| (now.saturating_sub(o).max(0) / 1000) as u64),
        })
    }

    async fn recent_stats(&self, max_age: Duration) -> Result<StoreStats, StoreError> {
        let mut cache = self.stats_cache.lock().await;
        if let Some((at, stats)) = cache.as_ref() {
            let age = at.elapsed();
            if age <= max_age {
                let mut stats = stats.clone();
                // The oldest pending blob aged meanwhile (if it is still pending).
                stats.oldest_pending_age_secs =
                    stats.oldest_pending_age_secs.map(|s| s + age.as_secs());
                return Ok(stats);
            }
        }
        let stats = super::Store::stats(self).await?;
        *cache = Some((std::time::Instant::now(), stats.clone()));
        Ok(stats)
    }

    async fn now(&self) -> Result<SystemTime, StoreError> {
        let sent = Instant::now();
        let ms: i64 = self
            .call(async {
                sqlx::query_scalar("SELECT o365_now_ms()")
                    .fetch_one(&self.pool)
                    .await
            })
            .await?;
        self.observe_clock(ms, sent, Instant::now());
        Ok(time_of_ms(ms))
    }

    async fn dead_letters_page(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .call(async {
                sqlx::query(&format!(
                    "SELECT seq, reason, attempts, enqueued_ms, dead_ms, delivered, {CONTENT_COLUMNS}
                     FROM o365_dead WHERE seq > $1 ORDER BY seq LIMIT $2"
                ))
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            })
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    seq: r.try_get::<i64, _>("seq")? as u64,
                    content: content_of(r)?,
                    reason: r.try_get("reason")?,
                    attempts: r.try_get::<i32, _>("attempts")?.max(0) as u32,
                    enqueued_at: time_of_ms(r.try_get("enqueued_ms")?),
                    dead_at: time_of_ms(r.try_get("dead_ms")?),
                    delivered: r.try_get::<i64, _>("delivered")?.max(0) as u64,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.corrupt(e))
    }

    async fn requeue_dead(&self, seqs: &[u64]) -> Result<u64, StoreError> {
        let keys: Vec<i64> = seqs.iter().filter_map(|s| i64::try_from(*s).ok()).collect();
        let done = self
            .call(async {
                sqlx::query(&format!(
                    "WITH back AS (DELETE FROM o365_dead WHERE seq = ANY($1::bigint[]) RETURNING *),
                     undead AS (
                       UPDATE o365_ledger l SET dead = greatest(l.dead - b.n, 0),
                           dead_ids = ARRAY(SELECT unnest(l.dead_ids) EXCEPT SELECT unnest(b.ids)),
                           updated_ms = o365_now_ms()
                       FROM (SELECT lower(tenant_id) AS k, content_type AS ct,
                                    {LEDGER_HOUR} AS h, count(*) AS n,
                                    array_agg(content_id) AS ids
                             FROM back GROUP BY 1, 2, 3) b
                       WHERE l.tenant_key = b.k AND l.content_type = b.ct AND l.hour_s = b.h)
                     INSERT INTO o365_queue (tenant_key, {CONTENT_COLUMNS}, attempts, enqueued_ms,
                         due_ms, delivered, ledger_hour)
                     SELECT lower(tenant_id), {CONTENT_COLUMNS}, 0, n.ms, n.ms, delivered,
                         {LEDGER_HOUR}
                     FROM back, (SELECT o365_now_ms() AS ms) n ORDER BY back.seq"
                ))
                .bind(&keys)
                .execute(&self.pool)
                .await
            })
            .await?;
        Ok(done.rows_affected())
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let read_only: bool = self
            .call(async {
                sqlx::query_scalar(
                    "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'",
                )
                .fetch_one(&self.pool)
                .await
            })
            .await?;
        if read_only {
            return Err(StoreError::Unavailable(
                "the database is read-only (a standby?)".into(),
            ));
        }
        Ok(())
    }

    async fn hold_tenants(
        &self,
        hold: &[String],
        release: &[String],
        lease: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let lease_ms = self.lease_ms(lease);
        let cap = self.lease_clock.cap(Instant::now());
        // Sorted and unique: one row is updated once per statement, and replicas whose rounds
        // overlap lock rows in the same order (no deadlock).
        let sorted = |keys: &[String]| {
            let mut v: Vec<String> = keys.iter().map(|k| k.to_ascii_lowercase()).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let (hold, release) = (sorted(hold), sorted(release));
        if hold.is_empty() && release.is_empty() {
            return Ok(Vec::new());
        }
        self.call(async {
            sqlx::query_scalar(
                "WITH n AS (SELECT o365_now_ms() AS ms),
                 gone AS (DELETE FROM o365_tenant_leases WHERE tenant_key = ANY($2) AND holder = $1)
                 INSERT INTO o365_tenant_leases AS l (tenant_key, holder, since_ms, until_ms)
                 SELECT k, $1, n.ms, n.ms + $3 FROM unnest($4::text[]) WITH ORDINALITY AS u(k, i), n
                 ORDER BY i
                 ON CONFLICT (tenant_key) DO UPDATE
                   SET holder = excluded.holder,
                       since_ms = CASE WHEN l.holder = excluded.holder THEN l.since_ms
                                       ELSE excluded.since_ms END,
                       until_ms = excluded.until_ms
                   WHERE l.holder = excluded.holder
                      OR l.until_ms <= least(excluded.since_ms, coalesce($5::bigint, excluded.since_ms))
                 RETURNING tenant_key",
            )
            .bind(&self.owner)
            .bind(&release)
            .bind(lease_ms)
            .bind(&hold)
            .bind(cap)
            .fetch_all(&self.lease_pool)
            .await
        })
        .await
    }

    async fn lease_view(&self, live_within: Duration) -> Result<Option<LeaseView>, StoreError> {
        let live_ms = i64::try_from(live_within.as_millis()).unwrap_or(i64::MAX / 4);
        let sent = Instant::now();
        let cap = self.lease_clock.cap(sent);
        // The heartbeat and the read in one statement: the read's snapshot does not see the
        // heartbeat written beside it, so this replica adds itself. Replicas gone for a hundred
        // heartbeats are forgotten (a restart comes back with a new token). Liveness and what
        // is left of a lease go by the takeover time (`$3`, see [`TAKEOVER`]); one more row
        // carries the database's time, a reading for the [`LeaseClock`].
        let rows = self
            .call(async {
                sqlx::query(
                    "WITH n AS (SELECT o365_now_ms() AS ms),
                     t AS (SELECT least(ms, coalesce($3::bigint, ms)) AS ms FROM n),
                     beat AS (INSERT INTO o365_replicas (token, last_seen_ms) SELECT $1, ms FROM n
                              ON CONFLICT (token) DO UPDATE SET last_seen_ms = excluded.last_seen_ms),
                     old AS (DELETE FROM o365_replicas WHERE last_seen_ms < (SELECT ms FROM n) - 100 * $2)
                     SELECT NULL::text AS tenant_key, r.token AS holder, 0::bigint AS left_ms
                       FROM o365_replicas r, t WHERE r.last_seen_ms > t.ms - $2
                     UNION ALL
                     SELECT l.tenant_key, l.holder, l.until_ms - t.ms FROM o365_tenant_leases l, t
                     UNION ALL
                     SELECT NULL::text, NULL::text, n.ms FROM n",
                )
                .bind(&self.owner)
                .bind(live_ms)
                .bind(cap)
                .fetch_all(&self.lease_pool)
                .await
            })
            .await?;
        let answered = Instant::now();
        let mut view = LeaseView {
            replicas: vec![self.owner.clone()],
            leases: Vec::with_capacity(rows.len()),
        };
        for r in &rows {
            let read = || -> Result<_, sqlx::Error> {
                Ok((
                    r.try_get::<Option<String>, _>("tenant_key")?,
                    r.try_get::<Option<String>, _>("holder")?,
                    r.try_get::<i64, _>("left_ms")?,
                ))
            };
            match read().map_err(|e| self.corrupt(e))? {
                (None, Some(token), _) => view.replicas.push(token),
                (Some(tenant), Some(holder), left) => view.leases.push((tenant, holder, left)),
                (_, None, db_ms) => self.observe_clock(db_ms, sent, answered),
            }
        }
        view.replicas.sort_unstable();
        view.replicas.dedup();
        Ok(Some(view))
    }

    async fn tenant_holders(&self) -> Result<Vec<TenantHolder>, StoreError> {
        let rows = self
            .call(async {
                sqlx::query(
                    "SELECT tenant_key, holder, since_ms, until_ms, o365_now_ms() AS now_ms
                     FROM o365_tenant_leases ORDER BY tenant_key",
                )
                .fetch_all(&self.pool)
                .await
            })
            .await?;
        rows.iter()
            .map(|r| {
                let now: i64 = r.try_get("now_ms")?;
                let until: i64 = r.try_get("until_ms")?;
                Ok(TenantHolder {
                    tenant_id: r.try_get("tenant_key")?,
                    holder: r.try_get("holder")?,
                    since: time_of_ms(r.try_get("since_ms")?),
                    expires_in_ms: until.saturating_sub(now),
                    this_replica: r.try_get::<String, _>("holder")? == self.owner,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.corrupt(e))
    }

    fn replica(&self) -> Option<&str> {
        Some(&self.owner)
    }
}

impl PostgresStore {
    /// A lease's length in ms, noted as the longest in use if it is.
    fn lease_ms(&self, lease: Duration) -> i64 {
        let ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4);
        self.longest_lease_ms
            .fetch_max(ms.max(0) as u64, Ordering::Relaxed);
        ms
    }

    /// A reading of the database's clock for the [`LeaseClock`]; a step forward is held off
    /// for the longest lease in use (every holder renews within it).
    fn observe_clock(&self, db_ms: i64, sent: Instant, answered: Instant) {
        let hold = Duration::from_millis(self.longest_lease_ms.load(Ordering::Relaxed));
        self.lease_clock.observe(db_ms, sent, answered, hold);
    }

    /// The step of the database's clock being held off (ms), if any.
    pub fn held_clock_step_ms(&self) -> Option<i64> {
        self.lease_clock.held_step_ms()
    }

    fn corrupt(&self, e: sqlx::Error) -> StoreError {
        StoreError::Corrupt(redact(
            format!("unexpected row from the database: {e}"),
            &self.passwords,
        ))
    }
}

fn prefixed(prefix: &str) -> String {
    CONTENT_COLUMNS
        .split(", ")
        .map(|c| format!("{prefix}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds `ids` (sorted) to the dedup set; returns those that were not in it.
async fn insert_dedup(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    ids: &[String],
) -> Result<HashSet<String>, sqlx::Error> {
    let added: Vec<String> = sqlx::query_scalar(
        "INSERT INTO o365_dedup (content_id, first_seen_ms)
         SELECT id, o365_now_ms() FROM unnest($1::text[]) AS t(id) ORDER BY id
         ON CONFLICT (content_id) DO NOTHING RETURNING content_id",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(added.into_iter().collect())
}

fn content_of(r: &PgRow) -> Result<ContentRef, sqlx::Error> {
    let records: Option<String> = r.try_get("records")?;
    let records = records
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(ContentRef {
        records,
        tenant_id: r.try_get("tenant_id")?,
        content_type: r.try_get("content_type")?,
        content_id: r.try_get("content_id")?,
        content_uri: r.try_get("content_uri")?,
        content_created: r.try_get("content_created")?,
        content_expiration: r.try_get("content_expiration")?,
    })
}

fn claimed_of(r: &PgRow) -> Result<Claimed, sqlx::Error> {
    Ok(Claimed {
        seq: r.try_get::<i64, _>("seq")? as u64,
        content: content_of(r)?,
        attempts: r.try_get::<i32, _>("attempts")?.max(0) as u32,
        enqueued_at: time_of_ms(r.try_get("enqueued_ms")?),
        delivered: r.try_get::<i64, _>("delivered")?.max(0) as u64,
    })
}

/// How far `t` lies ahead of this replica's clock (negative: behind), in ms: a time the caller
/// computed from its own clock, made relative so that the database adds it to its own
/// (`o365_now_ms() + …`) and a replica's skewed clock does not move it.
fn from_now_ms(t: SystemTime) -> i64 {
    let now = SystemTime::now();
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
    match t.duration_since(now) {
        Ok(ahead) => ms(ahead),
        Err(behind) => -ms(behind.duration()),
    }
}

fn time_of_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// The password of a `postgres://user:password@…` URL, as written and percent-decoded (as the
/// driver sends it): the forms an error text could quote.
fn url_passwords(url: &str) -> Vec<String> {
    let Some(raw) = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
    else {
        return Vec::new();
    };
    let mut forms = vec![raw.clone()];
    if let Some(decoded) = percent_decode(&raw).filter(|d| *d != raw) {
        forms.push(decoded);
    }
    forms.retain(|p| !p.is_empty());
    forms
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex
            .filter(|_| bytes[i] == b'%')
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Cuts the password out of a text that may quote the URL or the connection options.
fn redact(mut text: String, passwords: &[String]) -> String {
    for p in passwords {
        if text.contains(p.as_str()) {
            text = text.replace(p.as_str(), "***");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_cut_out_of_errors() {
        let pw = url_passwords("postgres://app:s3cr%40t@db:5432/o365");
        assert_eq!(pw, ["s3cr%40t", "s3cr@t"]);
        assert_eq!(
            redact("failed for s3cr@t and s3cr%40t".into(), &pw),
            "failed for *** and ***"
        );
        assert!(url_passwords("postgres://db/o365").is_empty());
    }
}
