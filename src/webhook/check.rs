//! The pure verdict on one webhook POST: Microsoft's validation call, an acceptable batch of
//! notifications, or a rejection with its reason. Nothing here does I/O, so every rule is unit-tested.

use std::collections::HashMap;

use subtle::ConstantTimeEq;

use crate::core::Secret;
use crate::mgmt_api::uri::ResourceBase;
use crate::mgmt_api::wire::{ContentNotice, ValidationBody};
use crate::store::ContentRef;

/// What one configured tenant accepts.
#[derive(Debug, Clone)]
pub struct TenantRule {
    pub client_id: String,
    pub base: ResourceBase,
    pub content_types: Vec<String>,
}

/// Everything the check needs; built once from the configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    pub auth_id: Secret,
    /// Keyed by lower-case tenant id.
    pub tenants: HashMap<String, TenantRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Microsoft's validation POST: answer 200.
    Validation,
    /// Every notification passed; store them all, then answer 200.
    Accepted(Vec<ContentRef>),
    Rejected(Rejection),
}

/// Why a POST was refused; nothing of it is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("missing or wrong Webhook-AuthID")]
    BadAuthId,
    #[error("malformed body: {0}")]
    Malformed(String),
    #[error("notification {index}: tenant is not configured")]
    UnknownTenant { index: usize },
    #[error("notification {index}: clientId is not this tenant's application")]
    ForeignClient { index: usize },
    #[error("notification {index}: content type {content_type} is not collected for this tenant")]
    ContentType { index: usize, content_type: String },
    #[error("notification {index}: contentUri refused ({reason})")]
    ForeignContentUri { index: usize, reason: String },
}

impl Rejection {
    /// HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::BadAuthId => 401,
            _ => 400,
        }
    }

    /// Short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::BadAuthId => "auth_id",
            Rejection::Malformed(_) => "malformed",
            Rejection::UnknownTenant { .. } => "tenant",
            Rejection::ForeignClient { .. } => "client_id",
            Rejection::ContentType { .. } => "content_type",
            Rejection::ForeignContentUri { .. } => "content_uri",
        }
    }
}

/// Whether the `Webhook-AuthID` header is the configured one (constant time). The handler asks
/// this before reading any body byte; [`check`] asks it again for the verdict to be whole.
pub fn authenticated(rules: &Rules, auth_id: Option<&[u8]>) -> bool {
    let expected = rules.auth_id.expose().as_bytes();
    auth_id.is_some_and(|got| got.ct_eq(expected).into())
}

/// Judges one POST. `auth_id` and `validation_code` are the header values.
pub fn check(
    rules: &Rules,
    auth_id: Option<&[u8]>,
    validation_code: Option<&[u8]>,
    body: &[u8],
) -> Verdict {
    if !authenticated(rules, auth_id) {
        return Verdict::Rejected(Rejection::BadAuthId);
    }
    if validation_code.is_some() {
        return match serde_json::from_slice::<ValidationBody>(body) {
            Ok(_) => Verdict::Validation,
            Err(e) => Verdict::Rejected(Rejection::Malformed(format!("validation body: {e}"))),
        };
    }
    let notices: Vec<ContentNotice> = match serde_json::from_slice(body) {
        Ok(n) => n,
        Err(e) => return Verdict::Rejected(Rejection::Malformed(e.to_string())),
    };
    let mut accepted = Vec::with_capacity(notices.len());
    for (index, n) in notices.into_iter().enumerate() {
        match check_one(rules, index, n) {
            Ok(c) => accepted.push(c),
            Err(r) => return Verdict::Rejected(r),
        }
    }
    Verdict::Accepted(accepted)
}

fn check_one(rules: &Rules, index: usize, n: ContentNotice) -> Result<ContentRef, Rejection> {
    let tenant_id = n
        .tenant_id
        .as_deref()
        .ok_or_else(|| Rejection::Malformed(format!("notification {index}: no tenantId")))?;
    let rule = rules
        .tenants
        .get(&tenant_id.to_ascii_lowercase())
        .ok_or(Rejection::UnknownTenant { index })?;
    let client = n
        .client_id
        .as_deref()
        .ok_or_else(|| Rejection::Malformed(format!("notification {index}: no clientId")))?;
    if !client.eq_ignore_ascii_case(&rule.client_id) {
        return Err(Rejection::ForeignClient { index });
    }
    // Kept in the configured spelling: events, metric labels and topic names see one value.
    let content_type = rule
        .content_types
        .iter()
        .find(|c| c.eq_ignore_ascii_case(&n.content_type))
        .ok_or_else(|| Rejection::ContentType {
            index,
            content_type: truncate(&n.content_type),
        })?;
    if n.content_id.is_empty() || n.content_id.len() > 512 {
        return Err(Rejection::Malformed(format!(
            "notification {index}: bad contentId"
        )));
    }
    let uri = rule
        .base
        .content_uri(&n.content_uri, &n.content_id)
        .map_err(|e| Rejection::ForeignContentUri {
            index,
            reason: e.to_string(),
        })?;
    Ok(ContentRef {
        tenant_id: rule.base.tenant_id().to_string(),
        content_type: content_type.clone(),
        content_id: n.content_id,
        content_uri: uri.as_str().to_string(),
        content_created: n.content_created,
        content_expiration: n.content_expiration,
        records: None,
    })
}

/// Values echoed in errors come from the caller; keep them short.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "41463f53-8812-40f4-890f-865bf6e35190";
    const C: &str = "2d4f5a8c-1111-2222-3333-444455556666";

    fn rules() -> Rules {
        let mut tenants = HashMap::new();
        tenants.insert(
            T.to_string(),
            TenantRule {
                client_id: C.into(),
                base: ResourceBase::new("https://manage.office.com", T).unwrap(),
                content_types: vec!["Audit.Exchange".into(), "Audit.General".into()],
            },
        );
        Rules {
            auth_id: Secret::new("s3cret-auth-id"),
            tenants,
        }
    }

    fn notice(tenant: &str, ct: &str, uri: &str) -> String {
        format!(
            r#"{{"tenantId":"{tenant}","clientId":"{C}","contentType":"{ct}","contentId":"abc$1","contentUri":"{uri}","contentCreated":"2026-11-25T10:00:00.000Z","contentExpiration":"2026-12-02T10:00:00.000Z"}}"#
        )
    }

    fn good_uri() -> String {
        format!("https://manage.office.com/api/v1.0/{T}/activity/feed/audit/abc$1")
    }

    const AUTH: Option<&[u8]> = Some(b"s3cret-auth-id");

    #[test]
    fn accepts_a_good_batch() {
        let body = format!("[{}]", notice(T, "Audit.Exchange", &good_uri()));
        match check(&rules(), AUTH, None, body.as_bytes()) {
            Verdict::Accepted(v) => {
                assert_eq!(v.len(), 1);
                assert_eq!(v[0].content_id, "abc$1");
                assert_eq!(v[0].tenant_id, T);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            check(&rules(), AUTH, None, b"[]"),
            Verdict::Accepted(vec![])
        );
    }

    #[test]
    fn identifiers_in_another_case_are_kept_in_the_configured_spelling() {
        let upper = T.to_ascii_uppercase();
        let body = format!(
            "[{}]",
            notice(&upper, "AUDIT.exchange", &good_uri().replace(T, &upper))
                .replace(C, &C.to_ascii_uppercase())
        );
        match check(&rules(), AUTH, None, body.as_bytes()) {
            Verdict::Accepted(v) => {
                assert_eq!(v[0].tenant_id, T);
                assert_eq!(v[0].content_type, "Audit.Exchange");
                assert_eq!(v[0].content_uri, good_uri());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn validation_call() {
        let v = check(&rules(), AUTH, Some(b"xyz"), br#"{"validationCode":"xyz"}"#);
        assert_eq!(v, Verdict::Validation);
    }

    #[test]
    fn wrong_or_missing_auth_id() {
        let body = format!("[{}]", notice(T, "Audit.Exchange", &good_uri()));
        for auth in [
            None,
            Some(&b"wrong"[..]),
            Some(&b"s3cret-auth-i"[..]),
            Some(&b""[..]),
        ] {
            assert_eq!(
                check(&rules(), auth, None, body.as_bytes()),
                Verdict::Rejected(Rejection::BadAuthId)
            );
        }
        assert_eq!(
            check(&rules(), None, Some(b"x"), br#"{"validationCode":"x"}"#),
            Verdict::Rejected(Rejection::BadAuthId)
        );
    }

    #[test]
    fn one_bad_notification_rejects_the_batch() {
        let good = notice(T, "Audit.Exchange", &good_uri());
        let foreign = notice(
            T,
            "Audit.Exchange",
            &format!("https://evil.example.net/api/v1.0/{T}/activity/feed/audit/x"),
        );
        let body = format!("[{good},{foreign}]");
        match check(&rules(), AUTH, None, body.as_bytes()) {
            Verdict::Rejected(Rejection::ForeignContentUri { index: 1, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_rejections() {
        let r = rules();
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "malformed"),
            ("{}".into(), "malformed"),
            (
                format!(
                    "[{}]",
                    notice(
                        "00000000-0000-0000-0000-000000000000",
                        "Audit.Exchange",
                        &good_uri()
                    )
                ),
                "tenant",
            ),
            (
                format!("[{}]", notice(T, "Audit.SharePoint", &good_uri())),
                "content_type",
            ),
            (
                format!(
                    "[{}]",
                    notice(T, "Audit.Exchange", "http://manage.office.com/x")
                ),
                "content_uri",
            ),
            (
                format!(
                    "[{}]",
                    notice(T, "Audit.Exchange", &good_uri())
                        .replace(C, "99999999-0000-0000-0000-000000000000")
                ),
                "client_id",
            ),
            (r#"[{"contentType":"Audit.Exchange"}]"#.into(), "malformed"),
            (
                format!("[{}]", notice(T, "Audit.Exchange", &good_uri()))
                    .replace(&format!(r#""clientId":"{C}","#), ""),
                "malformed",
            ),
            (
                format!(
                    "[{}]",
                    notice(T, "Audit.Exchange", &good_uri().replace("abc$1", "abc$2"))
                ),
                "content_uri",
            ),
            (
                format!(
                    "[{}]",
                    notice(T, "Audit.Exchange", &format!("{}?a=b", good_uri()))
                ),
                "content_uri",
            ),
        ];
        for (body, reason) in cases {
            match check(&r, AUTH, None, body.as_bytes()) {
                Verdict::Rejected(rej) => assert_eq!(rej.reason(), reason, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
