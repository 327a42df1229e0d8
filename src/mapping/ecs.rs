//! Elastic Common Schema fields for the `ecs` format, compatible with what Elastic's o365
//! integration produces (checked field by field in `tests/mapping_conformance.rs` against Elastic's
//! expected output), so dashboards and detection rules written for it work on our events.
//!
//! Deliberate differences from Elastic, each for a reason:
//! - multi-valued fields (`event.category`, `event.type`, `related.*`, `rule.*`,
//!   `destination.user.email`) are always arrays, as ECS defines them (Elastic's test files show
//!   single values as scalars);
//! - ports are numbers (ECS `long`), not strings;
//! - `[addr]` without a port and `host:port` are parsed (Elastic leaves the first without an IP and
//!   the second without a port when the host is a bare name);
//! - no GeoIP/ASN and no user-agent parsing (only `user_agent.original`): those need databases the
//!   collector does not ship; the destination pipeline can add them;
//! - `url.extension` is taken from the last path segment only;
//! - `event.code` is the name in Microsoft's current `AuditLogRecordType` table, so RecordType 22 is
//!   `Viva Engage` where Elastic says `Yammer`; unknown types keep the number as sent;
//! - `client.*`/`source.*` come from the first non-empty of `ClientIP`, `ClientIPAddress`,
//!   `ActorIpAddress` (the Beats module's order); a value that is neither an IP nor a host name is
//!   an issue and stays only in `client.address`.
//!
//! Workload specifics live in small functions below: SharePoint file operations ([`sharepoint`]),
//! DLP with its Exchange e-mail fields ([`dlp`]), Azure AD and Teams identity operations ([`iam`]).

use serde_json::{Map, Value};

use super::{Entries, Issue, clientip, enums};

fn put(ev: &mut Entries, key: &str, v: impl Into<Value>) {
    ev.push((key.to_owned(), v.into()));
}

/// A non-empty string field of the record.
fn text<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    match o.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

fn strings(items: Vec<String>) -> Value {
    Value::Array(items.into_iter().map(Value::String).collect())
}

/// Adds the ECS fields for `record` to `ev`.
pub fn add_ecs(record: &Map<String, Value>, ev: &mut Entries, issues: &mut Vec<Issue>) {
    let record_type = record.get("RecordType").and_then(enums::as_enum_int);
    let operation = text(record, "Operation");
    let is_dlp = matches!(record_type, Some(11 | 13 | 33));

    put(ev, "event.module", "o365");
    put(ev, "event.dataset", "o365.audit");
    put(
        ev,
        "event.kind",
        if is_dlp || record_type == Some(40) {
            "alert"
        } else {
            "event"
        },
    );
    if let Some(id) = text(record, "Id") {
        put(ev, "event.id", id);
    }
    if let Some(w) = text(record, "Workload") {
        put(ev, "event.provider", w);
    }
    match (
        record_type.and_then(|n| enums::RECORD_TYPE.name(n)),
        record.get("RecordType"),
    ) {
        (Some(name), _) => put(ev, "event.code", name),
        (None, Some(v)) if !v.is_object() && !v.is_array() && !v.is_null() => {
            put(ev, "event.code", v.clone())
        }
        _ => {}
    }

    // Outcome first: logon types depend on it.
    let outcome = if is_dlp {
        dlp::outcome(record, operation)
    } else {
        outcome_of(record.get("ResultStatus"))
    };
    put(ev, "event.outcome", outcome);

    let iam = operation.and_then(iam::lookup);
    let action = iam.map(|i| i.action).or(operation);
    if let Some(a) = action {
        put(ev, "event.action", a);
    }
    let (category, types): (&str, Vec<&str>) = if let Some(i) = iam {
        ("iam", i.types.to_vec())
    } else {
        match record_type {
            Some(9 | 15) => (
                "authentication",
                vec![
                    if outcome == "failure" {
                        "authentication_failure"
                    } else {
                        "authentication_success"
                    },
                    "start",
                ],
            ),
            Some(6) => ("file", vec![sharepoint::file_event_type(operation)]),
            _ if is_dlp => ("file", vec!["access"]),
            _ => ("web", vec!["info"]),
        }
    };
    put(ev, "event.category", strings(vec![category.to_owned()]));
    put(
        ev,
        "event.type",
        strings(types.into_iter().map(str::to_owned).collect()),
    );

    let mut related_user: Vec<String> = Vec::new();

    // The acting user. DLP records name the agent in UserId; the person is in the metadata.
    let sp_meta = record.get("SharePointMetaData").and_then(Value::as_object);
    let user_id = if is_dlp {
        sp_meta
            .and_then(|m| text(m, "From"))
            .or(text(record, "UserId"))
    } else {
        text(record, "UserId")
    };
    let user_domain = user_id.and_then(|u| set_user(ev, "user", u, &mut related_user));
    if user_domain.is_none()
        && let Some(upn) = text(record, "MailboxOwnerUPN")
    {
        put(ev, "user.email", upn);
    }
    if let Some(i) = iam {
        iam::add(record, i, ev, &mut related_user);
    }

    // Organization and host.
    if let Some(org) = text(record, "OrganizationId") {
        put(ev, "organization.id", org);
        put(ev, "host.id", org);
    }
    let org_name = text(record, "OrganizationName");
    if let Some(name) = org_name {
        put(ev, "organization.name", name);
    }
    if let Some(host) = user_domain.as_deref().or(org_name) {
        put(ev, "host.name", host);
    }
    if let Some(server) = text(record, "OriginatingServer") {
        put(ev, "server.address", server);
    }

    // Client address.
    let mut related_ip = Vec::new();
    add_client(record, ev, issues, &mut related_ip);

    // An empty top-level UserAgent is copied too, as Elastic does.
    let ua = match record.get("UserAgent") {
        Some(Value::String(s)) => Some(s.as_str()),
        _ => name_value(record, "ExtendedProperties", "UserAgent"),
    };
    if let Some(ua) = ua {
        put(ev, "user_agent.original", ua);
    }

    if record_type == Some(6) {
        sharepoint::add(record, ev);
    }
    if is_dlp {
        dlp::add(record, ev, &mut related_user);
    }

    if !related_ip.is_empty() {
        put(ev, "related.ip", strings(related_ip));
    }
    if !related_user.is_empty() {
        put(ev, "related.user", strings(related_user));
    }
}

/// `ResultStatus` → `event.outcome`. Microsoft spells it many ways (`True`, `Succeeded`,
/// `Success`, `success`, `Failed`, `TRUE`, `PartiallySucceeded`, …). A missing status counts as
/// success, as in Elastic (most records without one are plain activity records).
pub fn outcome_of(status: Option<&Value>) -> &'static str {
    match status {
        None | Some(Value::Null) => "success",
        Some(Value::Bool(b)) => {
            if *b {
                "success"
            } else {
                "failure"
            }
        }
        Some(Value::String(s)) => {
            let s = s.trim();
            let is = |w: &str| s.eq_ignore_ascii_case(w);
            if s.is_empty()
                || is("true")
                || is("success")
                || is("succeeded")
                || is("partiallysucceeded")
            {
                "success"
            } else if is("false") || is("failed") || is("failure") || is("fail") {
                "failure"
            } else {
                "unknown"
            }
        }
        Some(_) => "unknown",
    }
}

/// Sets `<prefix>.id`, and for `name@domain` also `.email`, `.name`, `.domain`. Returns the domain.
fn set_user(ev: &mut Entries, prefix: &str, id: &str, related: &mut Vec<String>) -> Option<String> {
    put(ev, &format!("{prefix}.id"), id);
    let (name, domain) = id.rsplit_once('@')?;
    if name.is_empty() || domain.is_empty() {
        return None;
    }
    put(ev, &format!("{prefix}.email"), id);
    put(ev, &format!("{prefix}.name"), name);
    put(ev, &format!("{prefix}.domain"), domain);
    push_unique(related, name);
    Some(domain.to_owned())
}

fn push_unique(list: &mut Vec<String>, v: &str) {
    if !v.is_empty() && !list.iter().any(|x| x == v) {
        list.push(v.to_owned());
    }
}

/// Value of the `{Name, Value}` element called `name` in the array `field`.
fn name_value<'a>(record: &'a Map<String, Value>, field: &str, name: &str) -> Option<&'a str> {
    record.get(field)?.as_array()?.iter().find_map(|el| {
        (el.get("Name")?.as_str()? == name)
            .then(|| el.get("Value")?.as_str())
            .flatten()
    })
}

/// `client.*` / `source.*` / `network.type` from the first non-empty of ClientIP,
/// ClientIPAddress, ActorIpAddress.
fn add_client(
    record: &Map<String, Value>,
    ev: &mut Entries,
    issues: &mut Vec<Issue>,
    related_ip: &mut Vec<String>,
) {
    let Some((field, raw)) = ["ClientIP", "ClientIPAddress", "ActorIpAddress"]
        .into_iter()
        .find_map(|f| {
            text(record, f)
                .filter(|s| !s.trim().is_empty())
                .map(|s| (f, s))
        })
    else {
        return;
    };
    put(ev, "client.address", raw.trim());
    match clientip::parse(raw) {
        Ok(addr) => {
            if let Some(ip) = addr.ip_text {
                put(ev, "client.ip", ip);
                put(ev, "source.ip", ip);
                push_unique(related_ip, ip);
            }
            if let Some(domain) = addr.domain {
                put(ev, "client.domain", domain);
                put(ev, "source.domain", domain);
            }
            if let Some(port) = addr.port {
                put(ev, "client.port", port);
                put(ev, "source.port", port);
            }
            if let Some(t) = addr.network_type() {
                put(ev, "network.type", t);
            }
        }
        Err(e) => issues.push(Issue {
            field: field.to_owned(),
            problem: e.to_string(),
        }),
    }
}

/// SharePoint / OneDrive file operations (RecordType 6).
pub mod sharepoint {
    use super::*;

    /// `event.type` for a file operation.
    pub fn file_event_type(operation: Option<&str>) -> &'static str {
        match operation.unwrap_or("") {
            "FileAccessed"
            | "FileAccessedExtended"
            | "FileDownloaded"
            | "FilePreviewed"
            | "FileSyncDownloadedFull"
            | "FileSyncDownloadedPartial" => "access",
            "FileDeleted"
            | "FileDeletedFirstStageRecycleBin"
            | "FileDeletedSecondStageRecycleBin"
            | "FileRecycled"
            | "FolderDeleted"
            | "FolderDeletedFirstStageRecycleBin"
            | "FolderDeletedSecondStageRecycleBin"
            | "FolderRecycled" => "deletion",
            "FileUploaded"
            | "FileCopied"
            | "FolderCreated"
            | "FolderCopied"
            | "FileSyncUploadedFull" => "creation",
            "FileModified"
            | "FileModifiedExtended"
            | "FileMoved"
            | "FileRenamed"
            | "FileRestored"
            | "FileCheckedIn"
            | "FileCheckedOut"
            | "FileCheckOutDiscarded"
            | "FileVersionsAllDeleted"
            | "FolderModified"
            | "FolderMoved"
            | "FolderRenamed"
            | "FolderRestored"
            | "FileSyncUploadedPartial" => "change",
            _ => "info",
        }
    }

    pub(super) fn add(record: &Map<String, Value>, ev: &mut Entries) {
        if let Some(Value::String(name)) = record.get("SourceFileName") {
            put(ev, "file.name", name.as_str());
        }
        if let Some(Value::String(dir)) = record.get("SourceRelativeUrl") {
            put(ev, "file.directory", dir.as_str());
        }
        if let Some(Value::String(ext)) = record.get("SourceFileExtension") {
            put(ev, "file.extension", ext.trim_start_matches('.'));
        }
        if let Some(url) = text(record, "ObjectId") {
            add_url(url, ev);
        }
    }

    /// `url.*` from an absolute http(s) URL; anything else is left alone.
    pub fn add_url(url: &str, ev: &mut Entries) {
        let Some((scheme, rest)) = url.split_once("://") else {
            return;
        };
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return;
        }
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let path = path.split(['?', '#']).next().unwrap_or("");
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let domain = match host.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        put(ev, "url.original", url);
        put(ev, "url.scheme", scheme.to_ascii_lowercase());
        if !domain.is_empty() {
            put(ev, "url.domain", domain);
        }
        if !path.is_empty() {
            let decoded = percent_decode(path);
            let last = decoded.rsplit('/').next().unwrap_or("");
            if let Some((stem, ext)) = last.rsplit_once('.')
                && !stem.is_empty()
                && !ext.is_empty()
            {
                put(ev, "url.extension", ext);
            }
            put(ev, "url.path", decoded);
        }
    }

    /// Decodes `%XX` escapes; invalid escapes and invalid UTF-8 are kept as they were.
    pub fn percent_decode(s: &str) -> String {
        if !s.contains('%') {
            return s.to_owned();
        }
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && let (Some(h), Some(l)) = (b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex))
            {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
    }

    fn hex(c: &u8) -> Option<u8> {
        (*c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
}

/// Data loss prevention records (RecordType 11, 13, 33).
pub mod dlp {
    use super::*;

    fn rules(record: &Map<String, Value>) -> impl Iterator<Item = &Map<String, Value>> {
        record
            .get("PolicyDetails")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("Rules")?.as_array())
            .flatten()
            .filter_map(Value::as_object)
    }

    /// A rule match that blocked access is a failed access, unless the user overrode it or
    /// reported a false positive (`ExceptionInfo`); everything else (notifications, undo)
    /// succeeded.
    pub fn outcome(record: &Map<String, Value>, operation: Option<&str>) -> &'static str {
        let is_match = operation.is_some_and(|o| o.eq_ignore_ascii_case("DlpRuleMatch"));
        let blocked = rules(record).any(|r| {
            r.get("Actions")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some("BlockAccess")))
        });
        let excepted = match record.get("ExceptionInfo") {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.trim().is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
            Some(_) => true,
        };
        if is_match && blocked && !excepted {
            "failure"
        } else {
            "success"
        }
    }

    fn severity(s: &str) -> Option<u64> {
        match s.to_ascii_lowercase().as_str() {
            "informational" | "info" => Some(1),
            "low" => Some(2),
            "medium" => Some(3),
            "high" => Some(4),
            _ => None,
        }
    }

    pub(super) fn add(
        record: &Map<String, Value>,
        ev: &mut Entries,
        related_user: &mut Vec<String>,
    ) {
        let mut ids = Vec::new();
        let mut names = Vec::new();
        let mut sev = None;
        for r in rules(record) {
            if let Some(id) = text(r, "RuleId") {
                ids.push(id.to_owned());
            }
            if let Some(n) = text(r, "RuleName") {
                names.push(n.to_owned());
            }
            if let Some(s) = text(r, "Severity").and_then(severity) {
                sev = sev.max(Some(s));
            }
        }
        if !ids.is_empty() {
            put(ev, "rule.id", strings(ids));
        }
        if !names.is_empty() {
            put(ev, "rule.name", strings(names));
        }
        if let Some(s) = sev {
            put(ev, "event.severity", s);
        }
        if let Some(m) = record.get("SharePointMetaData").and_then(Value::as_object) {
            if let Some(v) = text(m, "FileName") {
                put(ev, "file.name", v);
            }
            if let Some(v) = text(m, "FileOwner") {
                put(ev, "file.owner", v);
                push_unique(related_user, v);
            }
            if let Some(v) = text(m, "UniqueID") {
                put(ev, "file.inode", v);
            }
            if let Some(v) = text(m, "FilePathUrl") {
                sharepoint::add_url(v, ev);
            }
        }
        if let Some(m) = record.get("ExchangeMetaData").and_then(Value::as_object) {
            if let Some(v) = text(m, "From") {
                put(ev, "source.user.email", v);
            }
            let to: Vec<String> = ["To", "CC", "BCC"]
                .into_iter()
                .filter_map(|k| m.get(k)?.as_array())
                .flatten()
                .filter_map(|v| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
                .collect();
            if !to.is_empty() {
                put(ev, "destination.user.email", strings(to));
            }
            if let Some(v) = text(m, "Subject") {
                put(ev, "message", v);
            }
        }
    }
}

/// Identity-management operations (Azure AD directory audit, Teams) that Elastic categorises as
/// `iam` with an ECS-style action name.
pub mod iam {
    use super::*;

    /// The ECS classification of one operation.
    #[derive(Debug, Clone, Copy)]
    pub struct Iam {
        pub action: &'static str,
        pub types: &'static [&'static str],
        /// Whether the operation's object is a user (→ `user.target.*`) or a group (→ `group.name`).
        pub target_user: bool,
    }

    const fn op(action: &'static str, types: &'static [&'static str], target_user: bool) -> Iam {
        Iam {
            action,
            types,
            target_user,
        }
    }

    /// Operation → classification. The first four rows of each block are confirmed by Elastic's
    /// expected output; the others follow the same naming for the matching opposite operation.
    pub fn lookup(operation: &str) -> Option<Iam> {
        Some(match operation {
            "Add user." => op("added-user-account", &["user", "creation"], true),
            "Update user." => op("modified-user-account", &["user", "change"], true),
            "Delete user." => op("deleted-user-account", &["user", "deletion"], true),
            "Add group." => op("added-group-account-to", &["group", "creation"], false),
            "Update group." => op("modified-group-account", &["group", "change"], false),
            "Delete group." => op("deleted-group-account-from", &["group", "deletion"], false),
            "Add member to group." => op("added-users-to-group", &["group", "change"], false),
            "Remove member from group." => {
                op("removed-users-from-group", &["group", "change"], false)
            }
            "TeamCreated" => op("added-group-account-to", &["group", "creation"], false),
            "TeamDeleted" => op("deleted-group-account-from", &["group", "deletion"], false),
            "MemberAdded" => op("added-users-to-group", &["group", "change"], false),
            "MemberRemoved" => op("removed-users-from-group", &["group", "change"], false),
            _ => return None,
        })
    }

    pub(super) fn add(
        record: &Map<String, Value>,
        i: Iam,
        ev: &mut Entries,
        related: &mut Vec<String>,
    ) {
        if i.target_user {
            let target = text(record, "ObjectId")
                .filter(|o| o.contains('@'))
                .or_else(|| {
                    record.get("Target")?.as_array()?.iter().find_map(|t| {
                        (t.get("Type")?.as_i64()? == 5)
                            .then(|| t.get("ID")?.as_str())
                            .flatten()
                    })
                });
            if let Some(t) = target {
                set_user(ev, "user.target", t, related);
            }
        } else if i.types.contains(&"creation")
            && let Some(name) = text(record, "TeamName")
        {
            put(ev, "group.name", name);
        }
        if let Some(members) = record.get("Members").and_then(Value::as_array) {
            for m in members {
                if let Some(upn) = m.get("UPN").and_then(Value::as_str) {
                    push_unique(related, upn);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ecs(v: Value) -> (Map<String, Value>, Vec<Issue>) {
        let mut ev = Vec::new();
        let mut issues = Vec::new();
        add_ecs(v.as_object().unwrap(), &mut ev, &mut issues);
        (ev.into_iter().collect(), issues)
    }

    #[test]
    fn outcomes() {
        for (s, o) in [
            (json!("True"), "success"),
            (json!("Succeeded"), "success"),
            (json!("success"), "success"),
            (json!("Failed"), "failure"),
            (json!("FALSE"), "failure"),
            (json!(false), "failure"),
            (json!("Weird"), "unknown"),
            (json!(3), "unknown"),
        ] {
            assert_eq!(outcome_of(Some(&s)), o, "{s}");
        }
        assert_eq!(outcome_of(None), "success");
    }

    #[test]
    fn logon_record() {
        let (ev, issues) = ecs(json!({
            "RecordType": 15, "Operation": "UserLoginFailed", "ResultStatus": "Failed",
            "UserId": "asr@example.com", "ClientIP": "[2001:db8::1]:443", "OrganizationId": "org",
            "Id": "id1", "Workload": "AzureActiveDirectory"
        }));
        assert!(issues.is_empty());
        assert_eq!(ev["event.category"], json!(["authentication"]));
        assert_eq!(ev["event.type"], json!(["authentication_failure", "start"]));
        assert_eq!(ev["event.outcome"], "failure");
        assert_eq!(ev["event.code"], "AzureActiveDirectoryStsLogon");
        assert_eq!(ev["user.name"], "asr");
        assert_eq!(ev["user.domain"], "example.com");
        assert_eq!(ev["host.name"], "example.com");
        assert_eq!(ev["source.ip"], "2001:db8::1");
        assert_eq!(ev["source.port"], 443);
        assert_eq!(ev["network.type"], "ipv6");
        assert_eq!(ev["related.ip"], json!(["2001:db8::1"]));
        assert_eq!(ev["related.user"], json!(["asr"]));
    }

    #[test]
    fn garbage_ip_is_an_issue() {
        let (ev, issues) = ecs(json!({"ClientIPAddress": "NOTANIPV4 (10.9000.0.1)"}));
        assert_eq!(ev["client.address"], "NOTANIPV4 (10.9000.0.1)");
        assert!(!ev.contains_key("client.ip"));
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].field, "ClientIPAddress");
    }

    #[test]
    fn sharepoint_url() {
        let (ev, _) = ecs(json!({"RecordType": 6, "Operation": "FileDeleted",
            "ObjectId": "https://x-my.sharepoint.com/personal/a/Documents/My%20File.docx",
            "SourceFileName": "My File.docx", "SourceRelativeUrl": "Documents", "SourceFileExtension": "docx"}));
        assert_eq!(ev["event.type"], json!(["deletion"]));
        assert_eq!(ev["url.domain"], "x-my.sharepoint.com");
        assert_eq!(ev["url.path"], "/personal/a/Documents/My File.docx");
        assert_eq!(ev["url.extension"], "docx");
        assert_eq!(ev["file.name"], "My File.docx");
        assert_eq!(sharepoint::percent_decode("%zz%41%"), "%zzA%");
        assert_eq!(sharepoint::percent_decode("%FF"), "%FF");
    }
}
