//! Message trace rows → `o365.message.*`, the product documentation's names: `index`, `size`,
//! `status` (Delivered, FilteredAsSpam, Expanded, …) and `subject`, and in the same style the
//! rest of the row: `trace_id`, `message_id`, `sender`, `recipient`, `received`, `from_ip`,
//! `to_ip`, and for legacy Reporting Web Service rows `organization`, `start_date`, `end_date`.
//!
//! Both spellings are read: Graph's `exchangeMessageTrace` (camelCase, `id` is the trace id) and
//! the legacy report / `Get-MessageTraceV2` (PascalCase, `MessageTraceId`, `Index`). `status` is
//! given one casing, the legacy PascalCase list plus `Recalled` (Graph sends `delivered`, its
//! beta sent `Delivered`); an unknown value is kept as sent. An empty or null IP (Graph's `toIP`
//! of inbound mail is `""`) is left out. Other properties keep their own name.

use serde_json::{Map, Value};

use super::event::Entries;

/// (our name, Graph property, legacy column).
const NAMES: [(&str, &str, &str); 14] = [
    ("trace_id", "id", "MessageTraceId"),
    ("message_id", "messageId", "MessageId"),
    ("received", "receivedDateTime", "Received"),
    ("sender", "senderAddress", "SenderAddress"),
    ("recipient", "recipientAddress", "RecipientAddress"),
    ("subject", "subject", "Subject"),
    ("size", "size", "Size"),
    ("status", "status", "Status"),
    ("from_ip", "fromIP", "FromIP"),
    ("to_ip", "toIP", "ToIP"),
    ("index", "index", "Index"),
    ("organization", "organization", "Organization"),
    ("start_date", "startDate", "StartDate"),
    ("end_date", "endDate", "EndDate"),
];

/// Status values in the one casing we write.
const STATUSES: [&str; 10] = [
    "GettingStatus",
    "Pending",
    "Failed",
    "Delivered",
    "Expanded",
    "Quarantined",
    "FilteredAsSpam",
    "Recalled",
    "None",
    "unknownFutureValue",
];

/// Appends the row's fields under `o365.message.`.
pub fn fields(record: &Map<String, Value>, entries: &mut Entries) {
    for (k, v) in record {
        if k.starts_with("@odata.") {
            continue;
        }
        let name = NAMES
            .iter()
            .find(|(_, graph, legacy)| k == graph || k == legacy)
            .map_or(k.as_str(), |(ours, _, _)| ours);
        let value = match (name, v) {
            ("from_ip" | "to_ip", Value::Null) => continue,
            ("from_ip" | "to_ip", Value::String(s)) if s.trim().is_empty() => continue,
            ("status", Value::String(s)) => Value::String(normalise_status(s)),
            _ => v.clone(),
        };
        entries.push((format!("o365.message.{name}"), value));
    }
}

/// `filteredAsSpam`, `FILTEREDASSPAM` → `FilteredAsSpam`; unknown values unchanged.
pub fn normalise_status(s: &str) -> String {
    STATUSES
        .iter()
        .find(|known| known.eq_ignore_ascii_case(s.trim()))
        .map_or_else(|| s.to_owned(), |known| (*known).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> std::collections::BTreeMap<String, Value> {
        let mut e = Vec::new();
        fields(v.as_object().unwrap(), &mut e);
        e.into_iter().collect()
    }

    #[test]
    fn graph_row() {
        let e = map(json!({
            "id": "5e4d", "senderAddress": "billing@p.example", "recipientAddress": "lena@f.example",
            "messageId": "<a@b>", "receivedDateTime": "2026-11-29T15:30:14Z", "subject": "Invoice",
            "size": 88213, "fromIP": "192.0.2.45", "toIP": "", "status": "filteredAsSpam"
        }));
        assert_eq!(e["o365.message.status"], "FilteredAsSpam");
        assert_eq!(e["o365.message.size"], 88213);
        assert_eq!(e["o365.message.subject"], "Invoice");
        assert_eq!(e["o365.message.trace_id"], "5e4d");
        assert_eq!(e["o365.message.message_id"], "<a@b>");
        assert_eq!(e["o365.message.sender"], "billing@p.example");
        assert_eq!(e["o365.message.recipient"], "lena@f.example");
        assert_eq!(e["o365.message.from_ip"], "192.0.2.45");
        assert!(!e.contains_key("o365.message.to_ip"));
    }

    #[test]
    fn legacy_row() {
        let e = map(
            json!({"Index": 3, "Status": "Delivered", "MessageTraceId": "g", "ToIP": null,
            "Organization": "contoso.onmicrosoft.com", "StartDate": "2026-03-01T00:00:00"}),
        );
        assert_eq!(e["o365.message.index"], 3);
        assert_eq!(e["o365.message.status"], "Delivered");
        assert_eq!(e["o365.message.trace_id"], "g");
        assert_eq!(e["o365.message.organization"], "contoso.onmicrosoft.com");
        assert_eq!(e["o365.message.start_date"], "2026-03-01T00:00:00");
        assert!(!e.contains_key("o365.message.to_ip"));
        assert_eq!(normalise_status("something new"), "something new");
    }
}
