//! Copilot and AI-application interactions: the `CopilotEventData` object of RecordType 261
//! `CopilotInteraction`, 284 `AIAppInteraction`, 328 `ConnectedAIAppInteraction`, 334
//! `TeamCopilotInteraction` and the other AI record types (Microsoft's "Copilot schema").
//!
//! Why a module of its own: both formats read the same lists, and a prompt's and a response's
//! ids must stay paired, so `Contexts`, `AccessedResources`, `Messages` and `AISystemPlugin` are
//! kept as lists of objects (never split into dotted keys), and the counts a detection rule
//! wants (`prompt_count`, `response_count`, `accessed_resources_count`) are added beside them.
//! The ECS side (`url.original`, `file.*`, labels) is computed here and written by [`super::ecs`].

use serde_json::{Map, Value};

use super::event::Sink;

/// The record field holding the interaction.
pub const FIELD: &str = "CopilotEventData";

/// Lists of `CopilotEventData` kept as lists of objects in every format.
pub const KEPT_LISTS: [&str; 4] = [
    "Contexts",
    "AccessedResources",
    "Messages",
    "AISystemPlugin",
];

/// Prefix of the keys added to the event (`o365.audit.CopilotEventData.`).
const PREFIX: &str = "o365.audit.CopilotEventData.";

/// The interaction object of a record, if it has one.
pub fn event_data(record: &Map<String, Value>) -> Option<&Map<String, Value>> {
    record.get(FIELD).and_then(Value::as_object)
}

/// Counts of prompts, responses (`Messages[].isPrompt` true / false) and accessed resources, for
/// the lists the record carries (a list it lacks gives no count, not a zero).
pub fn counts(data: &Map<String, Value>) -> impl Iterator<Item = (&'static str, u64)> {
    let messages = data.get("Messages").and_then(Value::as_array);
    let prompts = messages.map(|m| {
        m.iter()
            .filter(|x| x.get("isPrompt") == Some(&Value::Bool(true)))
            .count() as u64
    });
    let responses = messages.map(|m| {
        m.iter()
            .filter(|x| x.get("isPrompt") == Some(&Value::Bool(false)))
            .count() as u64
    });
    let resources = data
        .get("AccessedResources")
        .and_then(Value::as_array)
        .map(|r| r.len() as u64);
    [
        ("prompt_count", prompts),
        ("response_count", responses),
        ("accessed_resources_count", resources),
    ]
    .into_iter()
    .filter_map(|(k, n)| Some((k, n?)))
}

/// Adds the counts as `o365.audit.CopilotEventData.<count>` (format `o365`). A record field of
/// the same name wins and the clash is reported, as for any key produced twice.
pub(crate) fn add_counts(record: &Map<String, Value>, sink: &mut impl Sink) {
    let Some(data) = event_data(record) else {
        return;
    };
    let mut key = String::with_capacity(PREFIX.len() + 24);
    for (name, n) in counts(data) {
        key.clear();
        key.push_str(PREFIX);
        key.push_str(name);
        sink.put_value(&key, Value::from(n));
    }
}

/// Distinct `AccessedResources[].SensitivityLabelId`s, in the order met.
pub fn sensitivity_label_ids(data: &Map<String, Value>) -> Vec<Value> {
    let mut ids: Vec<Value> = Vec::new();
    for r in data
        .get("AccessedResources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(Value::String(id)) = r.get("SensitivityLabelId")
            && !id.is_empty()
            && !ids.iter().any(|x| x.as_str() == Some(id))
        {
            ids.push(Value::String(id.clone()));
        }
    }
    ids
}

/// Distinct `Contexts[].Id`s that are web addresses (documents, SharePoint pages), in order.
pub fn context_urls(data: &Map<String, Value>) -> Vec<&str> {
    let mut urls: Vec<&str> = Vec::new();
    for id in contexts(data).filter_map(|c| c.get("Id")?.as_str()) {
        if is_web_address(id) && !urls.contains(&id) {
            urls.push(id);
        }
    }
    urls
}

/// The first context that is a document: its `Type` is a file extension (`docx`, `pptx`,
/// `xlsx`, `pdf`, …; not `TeamsMeeting`, `TeamsChat`, …). Returns its name (from the address's
/// `file=` parameter, else its last path segment when that ends in the extension) and extension.
pub fn document(data: &Map<String, Value>) -> Option<(Option<String>, &str)> {
    contexts(data).find_map(|c| {
        let ext = c.get("Type")?.as_str().filter(|t| is_extension(t))?;
        let name = c
            .get("Id")
            .and_then(Value::as_str)
            .and_then(|id| file_name(id, ext));
        Some((name, ext))
    })
}

fn contexts(data: &Map<String, Value>) -> impl Iterator<Item = &Map<String, Value>> {
    data.get("Contexts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

fn is_web_address(s: &str) -> bool {
    let lower = |p: &str| s.len() > p.len() && s[..p.len()].eq_ignore_ascii_case(p);
    lower("https://") || lower("http://")
}

/// A file extension as Microsoft writes a document context's `Type`: short, lower-case
/// letters and digits.
fn is_extension(t: &str) -> bool {
    (1..=5).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The document's file name in a context address (`…/Doc.aspx?sourcedoc=…&file=A.docx&…` or
/// `…/Shared%20Documents/A.docx`), percent-decoded.
fn file_name(id: &str, ext: &str) -> Option<String> {
    let (path, query) = id.split_once('?').unwrap_or((id, ""));
    let from_query = query
        .split('&')
        .find_map(|p| p.strip_prefix("file="))
        .map(percent_decode)
        .filter(|n| !n.is_empty());
    from_query.or_else(|| {
        let last = percent_decode(path.rsplit('/').next()?);
        let dot = last.rfind('.')?;
        (dot > 0 && last[dot + 1..].eq_ignore_ascii_case(ext)).then_some(last)
    })
}

/// `%XX` escapes decoded (and `+` kept: these are paths, not forms); invalid UTF-8 replaced.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn document_names() {
        let d = json!({"Contexts": [
            {"Id": "19:x@thread.v2", "Type": "TeamsChat"},
            {"Id": "https://c.sharepoint.com/_layouts/15/Doc.aspx?sourcedoc=%7B1%7D&file=My%20Plan.docx&action=default", "Type": "docx"}
        ]});
        let d = d.as_object().unwrap();
        assert_eq!(document(d), Some((Some("My Plan.docx".into()), "docx")));
        let d =
            json!({"Contexts": [{"Id": "https://c/Shared%20Documents/Q3.xlsx", "Type": "xlsx"}]});
        assert_eq!(
            document(d.as_object().unwrap()),
            Some((Some("Q3.xlsx".into()), "xlsx"))
        );
        let d = json!({"Contexts": [{"Id": "opaque", "Type": "pdf"}]});
        assert_eq!(document(d.as_object().unwrap()), Some((None, "pdf")));
        let d = json!({"Contexts": [{"Id": "https://teams/x", "Type": "TeamsMeeting"}]});
        assert_eq!(document(d.as_object().unwrap()), None);
        assert_eq!(context_urls(d.as_object().unwrap()), ["https://teams/x"]);
        assert_eq!(percent_decode("%E2%82%AC%zz%4"), "€%zz%4");
    }

    #[test]
    fn counts_and_labels() {
        let d = json!({
            "Messages": [{"Id": "1", "isPrompt": true}, {"Id": "2", "isPrompt": false},
                         {"Id": "3", "isPrompt": false}, {"Id": "4"}],
            "AccessedResources": [{"SensitivityLabelId": "a"}, {"SensitivityLabelId": "a"},
                                  {"SensitivityLabelId": ""}, {"Name": "x"}]
        });
        let d = d.as_object().unwrap();
        assert_eq!(
            counts(d).collect::<Vec<_>>(),
            [
                ("prompt_count", 1),
                ("response_count", 2),
                ("accessed_resources_count", 4)
            ]
        );
        assert_eq!(sensitivity_label_ids(d), [json!("a")]);
        assert_eq!(counts(&Map::new()).count(), 0);
    }
}
