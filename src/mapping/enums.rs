//! Microsoft's enumerations (RecordType, UserType, …) as lookup tables.
//!
//! The tables are copies of `shared/reference/enums/*.tsv` (Microsoft's schema documentation), kept
//! verbatim under `src/mapping/enums/` so a table update is a file copy, not a code change. Each is
//! parsed once, on first use, into a sorted vector searched by value.
//!
//! `record-type.tsv` is the whole `AuditLogRecordType` table of
//! MicrosoftDocs/office-365-management-api `office-365-management-activity-api-schema.md` at
//! commit 8a539d33bd3f05032e3c2b49c7951aa94bd80555 (257 values), rows whose value is a link
//! included (261 `CopilotInteraction`, 284 `AIAppInteraction`, 93–97 `Aip*`, 154 `OMEPortal`,
//! which the older copy of 249 values had lost).

use std::sync::OnceLock;

use serde_json::Value;

/// One parsed enumeration: `(value, name)` sorted by value.
pub struct EnumTable {
    entries: OnceLock<Vec<(i64, &'static str)>>,
    source: &'static str,
}

impl EnumTable {
    const fn new(source: &'static str) -> Self {
        Self {
            entries: OnceLock::new(),
            source,
        }
    }

    fn entries(&self) -> &[(i64, &'static str)] {
        self.entries.get_or_init(|| parse_tsv(self.source))
    }

    /// Name for a numeric value; `None` when Microsoft's table has no such value.
    pub fn name(&self, value: i64) -> Option<&'static str> {
        let entries = self.entries();
        entries
            .binary_search_by_key(&value, |(v, _)| *v)
            .ok()
            .map(|i| entries[i].1)
    }

    /// Name for a JSON value that is a number or a string holding one (test data and some
    /// services send `"RecordType": "25"`).
    pub fn name_of(&self, value: &Value) -> Option<&'static str> {
        as_enum_int(value).and_then(|v| self.name(v))
    }

    /// Number of entries (for tests).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// True when the table is empty (never, for the shipped tables).
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }
}

/// Reads an integer enumeration value sent either as a JSON number or as a decimal string.
pub fn as_enum_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Parses `value<TAB>name` lines after a header line; malformed lines are skipped (the files are
/// ours and tested, see `tables_parse_completely`).
fn parse_tsv(source: &'static str) -> Vec<(i64, &'static str)> {
    let mut out: Vec<(i64, &'static str)> = source
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (value, name) = line.split_once('\t')?;
            Some((value.trim().parse().ok()?, name.trim()))
        })
        .collect();
    out.sort_by_key(|(v, _)| *v);
    out.dedup_by_key(|(v, _)| *v);
    out
}

/// `AuditLogRecordType`.
pub static RECORD_TYPE: EnumTable = EnumTable::new(include_str!("enums/record-type.tsv"));
/// `UserType`.
pub static USER_TYPE: EnumTable = EnumTable::new(include_str!("enums/user-type.tsv"));
/// `AzureActiveDirectoryEventType`.
pub static AZURE_AD_EVENT_TYPE: EnumTable =
    EnumTable::new(include_str!("enums/azure-ad-event-type.tsv"));
/// Exchange `LogonType`.
pub static LOGON_TYPE: EnumTable = EnumTable::new(include_str!("enums/logon-type.tsv"));
/// SharePoint `ItemType`.
pub static ITEM_TYPE: EnumTable = EnumTable::new(include_str!("enums/item-type.tsv"));
/// Azure AD `LoginType`.
pub static LOGIN_TYPE: EnumTable = EnumTable::new(include_str!("enums/login-type.tsv"));
/// Azure AD `CredentialType`.
pub static CREDENTIAL_TYPE: EnumTable = EnumTable::new(include_str!("enums/credential-type.tsv"));
/// `AuthenticationMethod`.
pub static AUTHENTICATION_METHOD: EnumTable =
    EnumTable::new(include_str!("enums/authentication-method.tsv"));

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data_lines(src: &str) -> usize {
        src.lines().skip(1).filter(|l| !l.trim().is_empty()).count()
    }

    #[test]
    fn tables_parse_completely() {
        for (table, src) in [
            (&RECORD_TYPE, include_str!("enums/record-type.tsv")),
            (&USER_TYPE, include_str!("enums/user-type.tsv")),
            (
                &AZURE_AD_EVENT_TYPE,
                include_str!("enums/azure-ad-event-type.tsv"),
            ),
            (&LOGON_TYPE, include_str!("enums/logon-type.tsv")),
            (&ITEM_TYPE, include_str!("enums/item-type.tsv")),
            (&LOGIN_TYPE, include_str!("enums/login-type.tsv")),
            (&CREDENTIAL_TYPE, include_str!("enums/credential-type.tsv")),
            (
                &AUTHENTICATION_METHOD,
                include_str!("enums/authentication-method.tsv"),
            ),
        ] {
            assert_eq!(table.len(), data_lines(src));
            assert!(!table.is_empty());
        }
    }

    #[test]
    fn record_type_names() {
        assert_eq!(RECORD_TYPE.name(1), Some("ExchangeAdmin"));
        assert_eq!(RECORD_TYPE.name(6), Some("SharePointFileOperation"));
        assert_eq!(RECORD_TYPE.name(15), Some("AzureActiveDirectoryStsLogon"));
        assert_eq!(RECORD_TYPE.name(52), Some("DataInsightsRestApiAudit"));
        assert_eq!(RECORD_TYPE.name(265), Some("VivaLearning"));
        assert_eq!(RECORD_TYPE.name(261), Some("CopilotInteraction"));
        assert_eq!(RECORD_TYPE.name(284), Some("AIAppInteraction"));
        assert_eq!(RECORD_TYPE.name(328), Some("ConnectedAIAppInteraction"));
        assert_eq!(RECORD_TYPE.name(334), Some("TeamCopilotInteraction"));
        assert_eq!(RECORD_TYPE.name(154), Some("OMEPortal"));
        assert_eq!(RECORD_TYPE.name(463), Some("VivaGlintAgenticCampaign"));
        assert_eq!(RECORD_TYPE.len(), 257);
        assert_eq!(RECORD_TYPE.name(-1), None);
        assert_eq!(RECORD_TYPE.name(i64::MAX), None);
    }

    #[test]
    fn string_and_number_forms() {
        assert_eq!(RECORD_TYPE.name_of(&json!(25)), Some("MicrosoftTeams"));
        assert_eq!(RECORD_TYPE.name_of(&json!("25")), Some("MicrosoftTeams"));
        assert_eq!(
            RECORD_TYPE.name_of(&json!(" 8 ")),
            Some("AzureActiveDirectory")
        );
        assert_eq!(RECORD_TYPE.name_of(&json!(8.5)), None);
        assert_eq!(RECORD_TYPE.name_of(&json!("eight")), None);
        assert_eq!(RECORD_TYPE.name_of(&json!(null)), None);
        assert_eq!(USER_TYPE.name_of(&json!(0)), Some("Regular"));
        assert_eq!(USER_TYPE.name_of(&json!("2")), Some("Admin"));
        assert_eq!(USER_TYPE.name_of(&json!(10)), Some("Guest"));
        assert_eq!(USER_TYPE.name_of(&json!(99)), None);
    }
}
