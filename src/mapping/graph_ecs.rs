//! `format: ecs` for the Graph feeds: the Elastic Common Schema fields Elastic's own packages set
//! for these records (reference graph.md §6), added beside the feed's `o365.*` fields.
//!
//! - sign-ins (Elastic `azure.signinlogs`): `event.category: authentication`, `event.action:
//!   Sign-in activity`, `event.outcome` (status.errorCode 0 → success), `event.id`, `source.ip`,
//!   `user.id`, `user.name`, `user.full_name`, `user.domain`, root `geo.*` from `location`,
//!   `related.ip`, `related.user`;
//! - directory audits (`azure.auditlogs`): `event.action` (activityDisplayName), `event.category:
//!   iam`, `event.outcome` (result), `event.id`, the initiating user as `user.*` and `source.ip`,
//!   `related.*`;
//! - message trace (`microsoft_exchange_online_message_trace`): status → `event.outcome`, sender
//!   → `email.from.address`, `source.user.email`, `source.user.id`, `source.domain`; recipient →
//!   `email.to.address`, `destination.user.email`, `destination.user.id`, `destination.domain`;
//!   trace id → `email.local_id`; message id → `email.message_id`; subject → `email.subject`;
//!   size → `email.attachments.file.size`; received → `email.delivery_timestamp`; from/to IP →
//!   `source.ip` / `destination.ip`; legacy StartDate/EndDate → `event.start` / `event.end`;
//!   `related.user`;
//! - service health (no Elastic package): `event.id`, `event.start`, `event.end`, `message`
//!   (title), `event.kind: state`.
//!
//! All: `event.dataset`, `event.provider`, `organization.id` (the tenant; `tenant_name` and GeoIP /
//! user-agent enrichment then apply as for audit records).

use serde_json::{Map, Value, json};

use super::context::Context;
use super::event::{Entries, Sink};
use crate::graph::GraphFeed;

/// Adds the ECS fields of `feed` for `record` to `entries`.
pub fn add(feed: GraphFeed, record: &Map<String, Value>, ctx: &Context<'_>, entries: &mut Entries) {
    let s = |k: &str| {
        record
            .get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let mut put = |k: &str, v: Value| entries.put_value(k, v);
    if !ctx.tenant_id.is_empty() {
        put("organization.id", json!(ctx.tenant_id));
    }
    let mut users = Vec::new();
    let mut ips = Vec::new();
    match feed {
        GraphFeed::SignIns => {
            put("event.dataset", json!("azure.signinlogs"));
            put("event.provider", json!("Microsoft Entra ID"));
            put("event.kind", json!("event"));
            put("event.category", json!(["authentication"]));
            put("event.action", json!("Sign-in activity"));
            if let Some(code) = record
                .get("status")
                .and_then(|s| s.get("errorCode"))
                .and_then(Value::as_i64)
            {
                put(
                    "event.outcome",
                    json!(if code == 0 { "success" } else { "failure" }),
                );
            }
            if let Some(id) = s("id") {
                put("event.id", json!(id));
            }
            if let Some(ip) = s("ipAddress") {
                put("source.ip", json!(ip));
                ips.push(ip.to_owned());
            }
            if let Some(v) = s("userId") {
                put("user.id", json!(v));
            }
            if let Some(upn) = s("userPrincipalName") {
                put("user.name", json!(upn));
                if let Some((_, domain)) = upn.split_once('@') {
                    put("user.domain", json!(domain));
                }
                users.push(upn.to_owned());
            }
            if let Some(v) = s("userDisplayName") {
                put("user.full_name", json!(v));
            }
            if let Some(Value::Object(loc)) = record.get("location") {
                let ls = |k: &str| loc.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
                if let Some(v) = ls("city") {
                    put("geo.city_name", json!(v));
                }
                if let Some(v) = ls("state") {
                    put("geo.region_name", json!(v));
                }
                if let Some(v) = ls("countryOrRegion") {
                    put("geo.country_iso_code", json!(v));
                }
                let coord = |k: &str| loc.get("geoCoordinates")?.get(k)?.as_f64();
                if let (Some(lat), Some(lon)) = (coord("latitude"), coord("longitude")) {
                    put("geo.location", json!({"lat": lat, "lon": lon}));
                }
            }
        }
        GraphFeed::DirectoryAudits => {
            put("event.dataset", json!("azure.auditlogs"));
            put("event.provider", json!("Microsoft Entra ID"));
            put("event.kind", json!("event"));
            put("event.category", json!(["iam"]));
            if let Some(v) = s("activityDisplayName") {
                put("event.action", json!(v));
            }
            match s("result") {
                Some("success") => put("event.outcome", json!("success")),
                Some("failure") | Some("timeout") => put("event.outcome", json!("failure")),
                _ => {}
            }
            if let Some(id) = s("id") {
                put("event.id", json!(id));
            }
            if let Some(Value::Object(user)) = record.get("initiatedBy").and_then(|i| i.get("user"))
            {
                let us = |k: &str| {
                    user.get(k)
                        .and_then(Value::as_str)
                        .filter(|v| !v.is_empty())
                };
                if let Some(v) = us("id") {
                    put("user.id", json!(v));
                }
                if let Some(v) = us("userPrincipalName") {
                    put("user.email", json!(v));
                    put("user.name", json!(v));
                    users.push(v.to_owned());
                }
                if let Some(v) = us("ipAddress") {
                    put("source.ip", json!(v));
                    ips.push(v.to_owned());
                }
            }
        }
        GraphFeed::MessageTrace => {
            put(
                "event.dataset",
                json!("microsoft_exchange_online_message_trace.log"),
            );
            put("event.provider", json!("Exchange Online"));
            put("event.kind", json!("event"));
            put("event.category", json!(["email"]));
            let f = |graph: &str, legacy: &str| s(graph).or_else(|| s(legacy));
            if let Some(status) = f("status", "Status") {
                let outcome = match super::message_trace::normalise_status(status).as_str() {
                    "Delivered" | "Expanded" => "success",
                    "Failed" | "FilteredAsSpam" | "Quarantined" => "failure",
                    _ => "unknown",
                };
                put("event.outcome", json!(outcome));
            }
            for (graph, legacy, side, email) in [
                (
                    "senderAddress",
                    "SenderAddress",
                    "source",
                    "email.from.address",
                ),
                (
                    "recipientAddress",
                    "RecipientAddress",
                    "destination",
                    "email.to.address",
                ),
            ] {
                if let Some(addr) = f(graph, legacy) {
                    put(email, json!([addr]));
                    put(&format!("{side}.user.email"), json!(addr));
                    put(&format!("{side}.user.id"), json!(addr));
                    if let Some((_, domain)) = addr.split_once('@') {
                        put(&format!("{side}.domain"), json!(domain));
                    }
                    users.push(addr.to_owned());
                }
            }
            for (graph, legacy, key) in [
                ("id", "MessageTraceId", "email.local_id"),
                ("messageId", "MessageId", "email.message_id"),
                ("subject", "Subject", "email.subject"),
                ("fromIP", "FromIP", "source.ip"),
                ("toIP", "ToIP", "destination.ip"),
                ("StartDate", "StartDate", "event.start"),
                ("EndDate", "EndDate", "event.end"),
            ] {
                if let Some(v) = f(graph, legacy) {
                    put(key, json!(v));
                }
            }
            if let Some(size) = record.get("size").or_else(|| record.get("Size")) {
                put("email.attachments.file.size", size.clone());
            }
            if let Some(t) =
                f("receivedDateTime", "Received").and_then(super::time::creation_time_to_rfc3339)
            {
                put("email.delivery_timestamp", json!(t));
            }
        }
        GraphFeed::ServiceHealth => {
            put("event.dataset", json!("o365.service_health"));
            put("event.provider", json!("Microsoft 365 service health"));
            put("event.kind", json!("state"));
            if let Some(id) = s("id") {
                put("event.id", json!(id));
            }
            if let Some(v) = s("title") {
                put("message", json!(v));
            }
            for (k, key) in [
                ("startDateTime", "event.start"),
                ("endDateTime", "event.end"),
            ] {
                if let Some(t) = s(k).and_then(super::time::creation_time_to_rfc3339) {
                    put(key, json!(t));
                }
            }
        }
    }
    if !users.is_empty() {
        users.dedup();
        put("related.user", json!(users));
    }
    if !ips.is_empty() {
        put("related.ip", json!(ips));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ecs(feed: GraphFeed, v: Value) -> std::collections::BTreeMap<String, Value> {
        let mut e = Vec::new();
        let ctx = Context {
            tenant_id: "t",
            ..Context::default()
        };
        add(feed, v.as_object().unwrap(), &ctx, &mut e);
        e.into_iter().collect()
    }

    #[test]
    fn message_trace_fields() {
        let e = ecs(
            GraphFeed::MessageTrace,
            json!({"id": "g", "senderAddress": "a@p.example", "recipientAddress": "b@f.example",
                   "status": "delivered", "size": 10, "fromIP": "192.0.2.1", "toIP": "",
                   "receivedDateTime": "2026-11-29T15:30:14Z"}),
        );
        assert_eq!(e["event.outcome"], "success");
        assert_eq!(e["email.from.address"], json!(["a@p.example"]));
        assert_eq!(e["destination.domain"], "f.example");
        assert_eq!(e["email.local_id"], "g");
        assert_eq!(e["email.attachments.file.size"], 10);
        assert_eq!(e["source.ip"], "192.0.2.1");
        assert!(!e.contains_key("destination.ip"));
        assert_eq!(e["email.delivery_timestamp"], "2026-11-29T15:30:14.000Z");
    }

    #[test]
    fn sign_in_fields() {
        let e = ecs(
            GraphFeed::SignIns,
            json!({"id": "s", "status": {"errorCode": 50126}, "ipAddress": "198.51.100.23",
                   "userPrincipalName": "lena@f.example",
                   "location": {"city": "Lyon", "countryOrRegion": "FR",
                                "geoCoordinates": {"latitude": 45.76, "longitude": 4.84}}}),
        );
        assert_eq!(e["event.outcome"], "failure");
        assert_eq!(e["user.domain"], "f.example");
        assert_eq!(e["geo.location"], json!({"lat": 45.76, "lon": 4.84}));
        assert_eq!(e["related.ip"], json!(["198.51.100.23"]));
    }
}
