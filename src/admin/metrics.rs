//! `GET /metrics`: the process counters, queue gauges and per-tenant / per-output times in the
//! OpenMetrics text format (which Prometheus scrapes), built by `prometheus-client` at each scrape
//! from the live atomics and `Store::stats`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};

use super::state::{AdminError, AdminState};
use super::state::{STATS_MAX_AGE, last_notifications, uptime_secs};
use crate::store::Store;
use crate::telemetry::Counters;

/// One process counter: its name (exposed as `o365_<name>_total`), help text and field.
pub struct CounterDef {
    pub name: &'static str,
    pub help: &'static str,
    pub field: fn(&Counters) -> &AtomicU64,
}

/// Every field of [`Counters`] (a unit test checks none is missing).
pub const COUNTERS: &[CounterDef] = &[
    CounterDef {
        name: "notifications_accepted",
        help: "Content blobs announced by webhook notifications and newly stored",
        field: |c| &c.notifications_accepted,
    },
    CounterDef {
        name: "notifications_rejected",
        help: "Webhook POSTs refused (wrong AuthID, tenant, content type or contentUri)",
        field: |c| &c.notifications_rejected,
    },
    CounterDef {
        name: "notifications_duplicate",
        help: "Announced content blobs already known by contentId",
        field: |c| &c.notifications_duplicate,
    },
    CounterDef {
        name: "validations",
        help: "Webhook validation requests answered",
        field: |c| &c.validations,
    },
    CounterDef {
        name: "blobs_fetched",
        help: "Content blobs downloaded",
        field: |c| &c.blobs_fetched,
    },
    CounterDef {
        name: "blobs_failed",
        help: "Content blob attempts that failed and were rescheduled",
        field: |c| &c.blobs_failed,
    },
    CounterDef {
        name: "blobs_completed",
        help: "Content blobs whose records the output accepted",
        field: |c| &c.blobs_completed,
    },
    CounterDef {
        name: "blobs_dead_lettered",
        help: "Content blobs given up (gone, expired or unreadable)",
        field: |c| &c.blobs_dead_lettered,
    },
    CounterDef {
        name: "records_delivered",
        help: "Audit records handed to outputs",
        field: |c| &c.records_delivered,
    },
    CounterDef {
        name: "records_duplicate",
        help: "Audit records skipped by the output's record dedup",
        field: |c| &c.records_duplicate,
    },
    CounterDef {
        name: "mapping_issues",
        help: "Problems found while mapping records (the record is still delivered)",
        field: |c| &c.mapping_issues,
    },
    CounterDef {
        name: "output_errors",
        help: "Failed sends to an output",
        field: |c| &c.output_errors,
    },
    CounterDef {
        name: "token_refreshes",
        help: "Access tokens obtained from the login authority",
        field: |c| &c.token_refreshes,
    },
    CounterDef {
        name: "subscriptions_started",
        help: "Subscriptions started by the subscription keeper (missing, stopped or disabled)",
        field: |c| &c.subscriptions_started,
    },
    CounterDef {
        name: "throttled",
        help: "API answers 429 (throttled)",
        field: |c| &c.throttled,
    },
    CounterDef {
        name: "listings_deferred",
        help: "Tenant listing rounds (content and Graph) skipped while the tenant's queue was at pipeline.queue_high_water",
        field: |c| &c.listings_deferred,
    },
    CounterDef {
        name: "output_pauses",
        help: "Times an output failed and deliveries to it were paused until a probe got through",
        field: |c| &c.output_pauses,
    },
    CounterDef {
        name: "dedup_pruned",
        help: "Dedup entries (contentIds, Graph record identities) forgotten after store.dedup_retention",
        field: |c| &c.dedup_pruned,
    },
    CounterDef {
        name: "listing_gaps",
        help: "Listing windows lost because Microsoft no longer kept their content (see /status gaps; per tenant: o365_listing_gaps_by_tenant_total)",
        field: |c| &c.listing_gaps,
    },
    CounterDef {
        name: "blob_leases_lost",
        help: "Blobs a worker stopped delivering because its lease ran out unrenewed or another replica took over or completed the blob (the holder repeats at most the batch in flight)",
        field: |c| &c.blob_leases_lost,
    },
    CounterDef {
        name: "record_claims_pruned",
        help: "Record dedup claims forgotten after 7 days + 1 h (the audit-search overlap; at most store.dedup_retention)",
        field: |c| &c.record_claims_pruned,
    },
    CounterDef {
        name: "duplicate_records_dropped",
        help: "Records dropped before the output because another blob delivered them already (Microsoft's own duplicates; per tenant: o365_duplicate_records_dropped_by_tenant_total)",
        field: |c| &c.duplicate_records_dropped,
    },
];

/// Every counter with its current value.
pub fn counter_values(c: &Counters) -> Vec<(&'static CounterDef, u64)> {
    COUNTERS
        .iter()
        .map(|d| (d, Counters::get((d.field)(c))))
        .collect()
}

type Labels = Vec<(String, String)>;

/// The whole exposition, `# EOF` included.
pub(super) async fn render<S: Store>(state: &AdminState<S>) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix("o365");
    for (d, v) in counter_values(&state.counters) {
        reg.register(d.name, d.help, ConstCounter::new(v));
    }

    let up = state.store.ready().await.is_ok();
    let stats = state.store.recent_stats(STATS_MAX_AGE).await;
    reg.register(
        "store_up",
        "1 when the store took a write probe at this scrape, 0 when it failed",
        ConstGauge::new(i64::from(up)),
    );
    if let Ok(s) = &stats {
        reg.register(
            "queue_pending",
            "Queued content blobs not under a lease (ready or waiting for a retry)",
            ConstGauge::new(to_i64(s.pending)),
        );
        reg.register(
            "queue_leased",
            "Content blobs being worked on",
            ConstGauge::new(to_i64(s.leased)),
        );
        reg.register(
            "queue_dead_letters",
            "Content blobs given up, kept with their reason",
            ConstGauge::new(to_i64(s.dead_letters)),
        );
        reg.register_with_unit(
            "queue_oldest_pending_age",
            "Age of the oldest pending content blob (0 when none)",
            Unit::Seconds,
            ConstGauge::new(to_i64(s.oldest_pending_age_secs.unwrap_or(0))),
        );
    }
    if let Ok(f) = state.store.footprint().await {
        reg.register(
            "dedup_entries",
            "Entries in the dedup set (PostgreSQL: the planner's estimate)",
            ConstGauge::new(to_i64(f.dedup_entries)),
        );
        reg.register(
            "record_claims",
            "Record dedup claims held (PostgreSQL: the planner's estimate)",
            ConstGauge::new(to_i64(f.record_entries)),
        );
        reg.register_with_unit(
            "store",
            "Bytes the store takes on disk (embedded: its file; PostgreSQL: its tables and indexes)",
            Unit::Bytes,
            ConstGauge::new(to_i64(f.bytes)),
        );
    }
    if let Some(at) = state.counters.activity.last_prune() {
        reg.register_with_unit(
            "dedup_last_prune_timestamp",
            "When the dedup set's retention prune last completed (Unix time)",
            Unit::Seconds,
            ConstGauge::new(unix_secs(at)),
        );
    }
    // Always exported (0 until measured, and with a store of one process).
    let skew = state
        .counters
        .activity
        .clock_skew()
        .map_or(0, |s| s.skew_ms);
    reg.register_with_unit(
        "clock_skew",
        "How far this replica's clock is ahead of the shared database's (negative: behind), measured every 30s; past 5s either way /readyz fails",
        Unit::Seconds,
        ConstGauge::new(skew as f64 / 1000.0),
    );
    reg.register_with_unit(
        "uptime",
        "Time since the collector started",
        Unit::Seconds,
        ConstGauge::new(to_i64(uptime_secs(state.started))),
    );

    let last = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let checkpoint = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let notified = last_notifications(&state.counters.activity);
    for t in state.sorted_tenants() {
        let tid = &t.cfg.tenant_id;
        for ct in &t.cfg.content_types {
            let labels = vec![
                ("tenant_id".to_string(), tid.clone()),
                ("content_type".to_string(), ct.clone()),
            ];
            if let Some(at) = notified.get(&(tid.to_ascii_lowercase(), ct.to_ascii_lowercase())) {
                last.get_or_create(&labels).set(unix_secs(*at));
            }
            if let Ok(Some(c)) = state.store.cursor(tid, ct).await {
                checkpoint.get_or_create(&labels).set(unix_secs(c));
            }
        }
    }
    // Per configured tenant: its state (pipeline::health), errors by reason and content announced.
    let up = Family::<Labels, Gauge>::default();
    for t in state.sorted_tenants() {
        let labels = vec![
            ("tenant_id".to_string(), t.cfg.tenant_id.clone()),
            (
                "tenant_name".to_string(),
                t.cfg.tenant_name.clone().unwrap_or_default(),
            ),
        ];
        up.get_or_create(&labels)
            .set(i64::from(t.assess().state.is_up()));
        // From 0, so that the first blobs announced count as an increase (the no-records alert),
        // and so do a first gap and a first duplicate (the dashboard's `increase`).
        let m = &state.counters.metrics;
        for ct in &t.cfg.content_types {
            let labels = crate::telemetry::Metrics::tenant_labels(&t.cfg.tenant_id, ct);
            let _ = m.content_announced.get_or_create(&labels);
            let _ = m.duplicate_records_dropped.get_or_create(&labels);
        }
        let feeds = t.cfg.graph.feeds.iter().map(|f| f.content_type());
        for source in t.cfg.content_types.iter().map(String::as_str).chain(feeds) {
            let labels = crate::telemetry::Metrics::tenant_labels(&t.cfg.tenant_id, source);
            let _ = m.listing_gaps.get_or_create(&labels);
            let _ = m.listing_gap_seconds.get_or_create(&labels);
        }
    }
    reg.register(
        "tenant_up",
        "1 while the tenant's state is ok, gap or not_listed_here; 0 while auth_failed, denied, throttled or paused (GET /status says why)",
        up,
    );
    reg.register(
        "tenant_errors",
        "Failed calls to Microsoft per tenant and reason (invalid_secret, unknown_tenant, unknown_app, permission_missing, throttled, server_error, network, ...)",
        state.counters.metrics.tenant_errors.clone(),
    );
    reg.register(
        "content_announced_by_tenant",
        "Content blobs newly queued (announced by a notification or found by listing), per tenant and content type",
        state.counters.metrics.content_announced.clone(),
    );
    reg.register(
        "last_delivery_timestamp_seconds",
        "Unix time the output last accepted records of the tenant and content type (the last record received)",
        state.counters.metrics.last_delivery.clone(),
    );
    reg.register(
        "tenant_queue_depth",
        "Content blobs queued for the tenant, counted up to pipeline.queue_high_water at its last listing round (pull.interval; in push mode pull.reconcile_every)",
        state.counters.metrics.tenant_queue_depth.clone(),
    );
    reg.register(
        "last_notification_timestamp_seconds",
        "Unix time of the last accepted webhook notification per tenant and content type",
        last,
    );
    reg.register(
        "checkpoint_timestamp_seconds",
        "Unix time up to which content listing is complete, per tenant and content type",
        checkpoint,
    );

    // Graph feeds, per tenant × feed (records delivered: `records_delivered_by_tenant` with
    // content_type `Graph.*`).
    let g_cursor = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let g_success = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let g_error = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let g_denied = Family::<Labels, Gauge>::default();
    let g_listed = Family::<Labels, Gauge>::default();
    for t in state.sorted_tenants() {
        let Some(graph) = &t.graph else { continue };
        for feed in &t.cfg.graph.feeds {
            let labels = vec![
                ("tenant_id".to_string(), t.cfg.tenant_id.clone()),
                ("feed".to_string(), feed.config_name().to_string()),
            ];
            let st = graph.status_of(*feed);
            let cursor = match st.cursor {
                Some(c) => Some(c),
                None => state
                    .store
                    .cursor(&t.cfg.tenant_id, feed.content_type())
                    .await
                    .ok()
                    .flatten(),
            };
            if let Some(c) = cursor {
                g_cursor.get_or_create(&labels).set(unix_secs(c));
            }
            if let Some(at) = st.last_success {
                g_success.get_or_create(&labels).set(unix_secs(at));
            }
            if let Some(at) = st.last_error_at {
                g_error.get_or_create(&labels).set(unix_secs(at));
            }
            g_denied.get_or_create(&labels).set(i64::from(st.denied));
            g_listed.get_or_create(&labels).set(to_i64(st.records));
        }
    }
    reg.register(
        "graph_checkpoint_timestamp_seconds",
        "Unix time up to which a Graph feed is read (its cursor), per tenant and feed",
        g_cursor,
    );
    reg.register(
        "graph_last_success_timestamp_seconds",
        "Unix time of the last complete read of a Graph feed, per tenant and feed",
        g_success,
    );
    reg.register(
        "graph_last_error_timestamp_seconds",
        "Unix time of the last failed read of a Graph feed, per tenant and feed",
        g_error,
    );
    reg.register(
        "graph_denied",
        "1 while Microsoft refuses a Graph feed (401/403: permission, licence or service principal missing)",
        g_denied,
    );
    reg.register(
        "graph_records_listed",
        "Graph records listed since the start (before dedup), per tenant and feed",
        g_listed,
    );

    let errors = Family::<Labels, Gauge>::default();
    let success = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for (name, h) in state.counters.activity.outputs() {
        let labels = vec![("output".to_string(), name)];
        errors
            .get_or_create(&labels)
            .set(to_i64(h.consecutive_errors));
        if let Some(at) = h.last_success {
            success.get_or_create(&labels).set(unix_secs(at));
        }
    }
    // Every configured output, from its gate: 0 while deliveries flow, 1 while paused or probing.
    let paused = Family::<Labels, Gauge>::default();
    for t in state.tenants.values() {
        let labels = vec![("output".to_string(), t.output_name.clone())];
        let state = t.gate.state();
        paused
            .get_or_create(&labels)
            .set(i64::from(state != crate::pipeline::gate::GateState::Open));
    }
    reg.register(
        "output_paused",
        "1 while the output is down and deliveries to it wait in the queue, 0 while they flow",
        paused,
    );
    reg.register(
        "output_consecutive_errors",
        "Failed sends to the output since its last success",
        errors,
    );
    reg.register(
        "output_last_success_timestamp_seconds",
        "Unix time of the output's last accepted send",
        success,
    );

    let open_overdue = Family::<Labels, Gauge>::default();
    let incomplete = Family::<Labels, Gauge>::default();
    for ((tenant, ct), (open, bad)) in super::completeness::metric_counts(state).await {
        let labels = vec![
            ("tenant_id".to_string(), tenant),
            ("content_type".to_string(), ct),
        ];
        open_overdue.get_or_create(&labels).set(to_i64(open));
        incomplete.get_or_create(&labels).set(to_i64(bad));
    }
    reg.register(
        "completeness_open_hours_past_horizon",
        "Hours of the last 7 days still open although listing should have sealed them by now (completeness.horizon past their end): late content or a blob stuck in the queue, per tenant and content type",
        open_overdue,
    );
    reg.register(
        "completeness_incomplete_hours",
        "Hours of the last 7 days with a dead-lettered blob or a listing gap, per tenant and content type (GET /completeness names them)",
        incomplete,
    );

    let m = &state.counters.metrics;
    reg.register(
        "records_mapped_by_tenant",
        "Audit records mapped, per tenant and content type",
        m.records_mapped.clone(),
    );
    reg.register(
        "records_delivered_by_tenant",
        "Audit records accepted by the output, per tenant and content type",
        m.records_delivered.clone(),
    );
    reg.register(
        "notifications_rejected_by_reason",
        "Webhook POSTs refused, per reason (auth_id, too_large, body_timeout, overloaded, body_broken, malformed, tenant, client_id, content_type, content_uri)",
        m.notifications_rejected.clone(),
    );
    reg.register(
        "duplicate_records_dropped_by_tenant",
        "Records dropped before the output because another blob delivered them already, per tenant and content type",
        m.duplicate_records_dropped.clone(),
    );
    reg.register(
        "unknown_record_types",
        "Records whose RecordType is not in Microsoft's AuditLogRecordType table as this version knows it (they pass through unnamed), per record_type (at most 64 values, then other)",
        m.unknown_record_types.counter.clone(),
    );
    reg.register(
        "listing_gaps_by_tenant",
        "Listing windows lost because Microsoft no longer kept their content, per tenant and content type or Graph feed",
        m.listing_gaps.clone(),
    );
    reg.register_with_unit(
        "listing_gap",
        "Time whose content was lost in listing gaps, per tenant and content type or Graph feed",
        Unit::Seconds,
        m.listing_gap_seconds.clone(),
    );
    reg.register_with_unit(
        "fetch",
        "Time until a content blob's answer starts, per tenant and content type (its body then streams while its records are delivered)",
        Unit::Seconds,
        m.fetch_seconds.clone(),
    );
    reg.register_with_unit(
        "webhook_ack",
        "Time from a webhook notification POST's arrival to its 200 (the notifications stored with fsync)",
        Unit::Seconds,
        m.webhook_ack_seconds.clone(),
    );
    reg.register_with_unit(
        "delivery",
        "Time for the output to accept one batch of records, per output",
        Unit::Seconds,
        m.delivery_seconds.clone(),
    );

    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unix_secs(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub(super) async fn metrics<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
) -> Result<Response, AdminError> {
    let body = render(&state)
        .await
        .map_err(|_| AdminError::Unavailable("metrics could not be encoded".into()))?;
    Ok((
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A field added to `Counters` must be exposed too: compare with the struct's Debug output.
    #[test]
    fn every_counter_field_is_exposed() {
        let debug = format!("{:?}", Counters::default());
        let fields: Vec<&str> = debug
            .split(['{', ','])
            .filter_map(|part| part.trim().split_once(": 0").map(|(name, _)| name.trim()))
            .filter(|name| {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
            .collect();
        assert!(fields.len() >= 10, "parsed {fields:?} from {debug}");
        for f in &fields {
            assert!(
                COUNTERS.iter().any(|d| d.name == *f),
                "Counters::{f} is not exposed by the admin API"
            );
        }
        assert_eq!(fields.len(), COUNTERS.len(), "{fields:?}");
    }

    #[test]
    fn counter_values_read_the_atomics() {
        let c = Counters::default();
        Counters::add(&c.records_delivered, 7);
        let v = counter_values(&c);
        let (_, n) = v
            .iter()
            .find(|(d, _)| d.name == "records_delivered")
            .unwrap();
        assert_eq!(*n, 7);
    }
}
