//! Where a bearer token may go. A [`ResourceBase`] is the configured resource (scheme, host, port) plus the
//! tenant; a content or page URI is accepted only when it lies under that resource's feed path, so a
//! hostile `contentUri` can never make us send a token elsewhere.

use std::fmt;

/// Why a URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("not a valid absolute URL")]
    Malformed,
    #[error("scheme, host or port differs from the configured resource")]
    ForeignHost,
    #[error("path is not under this tenant's activity feed")]
    ForeignPath,
    #[error("URL carries credentials, a fragment or traversal")]
    Suspicious,
    #[error("URL carries a query string")]
    Query,
    #[error("URL names another blob than the contentId announced with it")]
    OtherContent,
}

/// The configured resource and tenant, from which all API URLs are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceBase {
    origin: String,
    tenant_id: String,
}

impl ResourceBase {
    /// `resource` is `scheme://host[:port]` without a path (config validation guarantees it).
    pub fn new(resource: &str, tenant_id: &str) -> Result<Self, UriError> {
        let url = reqwest::Url::parse(resource).map_err(|_| UriError::Malformed)?;
        if url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
            return Err(UriError::Malformed);
        }
        Ok(ResourceBase {
            origin: url.origin().ascii_serialization(),
            tenant_id: tenant_id.to_string(),
        })
    }

    /// `https://host[:port]` with no trailing slash.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// `{origin}/api/v1.0/{tenant}/activity/feed/`
    pub fn feed_prefix(&self) -> String {
        format!("{}/api/v1.0/{}/activity/feed/", self.origin, self.tenant_id)
    }

    /// URL of a feed operation, e.g. `subscriptions/list`.
    pub fn operation(&self, op: &str) -> String {
        format!("{}{op}", self.feed_prefix())
    }

    /// Accepts a `contentUri` only when it is exactly `{origin}/api/v1.0/{tenant}/activity/feed/audit/{content_id}`
    /// for the `content_id` announced with it, with no query: another blob's URI under a fresh
    /// contentId would pass the contentId dedup and deliver its records twice. Returns the URI in
    /// the configured spelling of the tenant (Microsoft may spell the GUID in another case).
    pub fn content_uri(&self, uri: &str, content_id: &str) -> Result<ApiUri, UriError> {
        let url = self.check(uri, "audit/")?;
        if url.query().is_some() {
            return Err(UriError::Query);
        }
        // `check` matched this prefix (ASCII, so the same length in any case) at the path's start.
        let path_prefix = format!("/api/v1.0/{}/activity/feed/audit/", self.tenant_id);
        let id = &url.path()[path_prefix.len()..];
        if id != content_id {
            return Err(UriError::OtherContent);
        }
        Ok(ApiUri(format!("{}audit/{id}", self.feed_prefix())))
    }

    /// Accepts a `NextPageUri` only when it is `{origin}/api/v1.0/{tenant}/activity/feed/subscriptions/content?...`.
    pub fn next_page_uri(&self, uri: &str) -> Result<ApiUri, UriError> {
        self.check(uri, "subscriptions/content")
            .map(|url| ApiUri(url.to_string()))
    }

    fn check(&self, uri: &str, under: &str) -> Result<reqwest::Url, UriError> {
        let url = reqwest::Url::parse(uri).map_err(|_| UriError::Malformed)?;
        if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
            return Err(UriError::Suspicious);
        }
        if url.origin().ascii_serialization() != self.origin {
            return Err(UriError::ForeignHost);
        }
        // `Url` has already resolved dot segments; refuse encoded ones that a server might decode later.
        let path = url.path();
        let lower = path.to_ascii_lowercase();
        if lower.contains("%2e")
            || lower.contains("%2f")
            || lower.contains("%5c")
            || path.contains("..")
        {
            return Err(UriError::Suspicious);
        }
        let prefix = format!("/api/v1.0/{}/activity/feed/{under}", self.tenant_id);
        // Microsoft may spell the tenant GUID in another case.
        let rest = match (path.get(..prefix.len()), path.get(prefix.len()..)) {
            (Some(head), Some(rest)) if head.eq_ignore_ascii_case(&prefix) => rest,
            _ => return Err(UriError::ForeignPath),
        };
        if under.ends_with('/') && (rest.is_empty() || rest.contains('/')) {
            return Err(UriError::ForeignPath);
        }
        if !under.ends_with('/') && !rest.is_empty() {
            return Err(UriError::ForeignPath);
        }
        Ok(url)
    }
}

/// A URL known to lie under the configured resource's feed: the only kind the client sends a token to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiUri(String);

impl ApiUri {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApiUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "41463f53-8812-40f4-890f-865bf6e35190";

    fn base() -> ResourceBase {
        ResourceBase::new("https://manage.office.com", T).unwrap()
    }

    #[test]
    fn accepts_content_uri_of_the_resource() {
        let u = format!(
            "https://manage.office.com/api/v1.0/{T}/activity/feed/audit/20261125$abc$audit_sharepoint$Audit_SharePoint$emea0026"
        );
        let id = "20261125$abc$audit_sharepoint$Audit_SharePoint$emea0026";
        assert_eq!(base().content_uri(&u, id).unwrap().as_str(), u);
    }

    #[test]
    fn content_uri_is_the_feed_url_of_its_content_id_without_query() {
        let b = base();
        let u = |rest: &str| {
            format!("https://manage.office.com/api/v1.0/{T}/activity/feed/audit/{rest}")
        };
        assert_eq!(b.content_uri(&u("abc"), "abd"), Err(UriError::OtherContent));
        assert_eq!(b.content_uri(&u("abc"), "ABC"), Err(UriError::OtherContent));
        assert_eq!(b.content_uri(&u("abc?x=1"), "abc"), Err(UriError::Query));
        assert_eq!(b.content_uri(&u("abc?"), "abc"), Err(UriError::Query));
        assert_eq!(
            b.content_uri(&u("abc?PublisherIdentifier=x"), "abc"),
            Err(UriError::Query)
        );
        // The tenant in another case: accepted, and given back in the configured spelling.
        let upper = format!(
            "https://MANAGE.office.com/api/v1.0/{}/activity/feed/audit/abc",
            T.to_ascii_uppercase()
        );
        assert_eq!(b.content_uri(&upper, "abc").unwrap().as_str(), u("abc"));
    }

    #[test]
    fn refuses_foreign_hosts_and_paths() {
        let b = base();
        let cases = [
            (format!("https://evil.example.net/api/v1.0/{T}/activity/feed/audit/x"), UriError::ForeignHost),
            (format!("http://manage.office.com/api/v1.0/{T}/activity/feed/audit/x"), UriError::ForeignHost),
            (format!("https://manage.office.com:444/api/v1.0/{T}/activity/feed/audit/x"), UriError::ForeignHost),
            (format!("https://manage.office.com.evil.net/api/v1.0/{T}/activity/feed/audit/x"), UriError::ForeignHost),
            (format!("https://user@manage.office.com/api/v1.0/{T}/activity/feed/audit/x"), UriError::Suspicious),
            ("https://manage.office.com/api/v1.0/00000000-0000-0000-0000-000000000000/activity/feed/audit/x".to_string(), UriError::ForeignPath),
            (format!("https://manage.office.com/api/v1.0/{T}/activity/feed/audit/"), UriError::ForeignPath),
            (format!("https://manage.office.com/api/v1.0/{T}/activity/feed/audit/a/b"), UriError::ForeignPath),
            (format!("https://manage.office.com/api/v1.0/{T}/activity/feed/audit/x%2fy"), UriError::Suspicious),
            (format!("https://manage.office.com/api/v1.0/{T}/activity/feed/subscriptions/list"), UriError::ForeignPath),
            ("not a url".to_string(), UriError::Malformed),
        ];
        for (u, want) in cases {
            assert_eq!(b.content_uri(&u, "x"), Err(want), "{u}");
        }
    }

    #[test]
    fn dot_segments_are_resolved_before_the_check() {
        let u =
            format!("https://manage.office.com/api/v1.0/{T}/activity/feed/audit/../../../../other");
        assert!(base().content_uri(&u, "other").is_err());
    }

    #[test]
    fn next_page_uri_must_be_a_content_listing() {
        let b = base();
        let ok = format!(
            "https://manage.office.com/api/v1.0/{T}/activity/feed/subscriptions/content?contentType=Audit.General&nextpage=abc"
        );
        assert!(b.next_page_uri(&ok).is_ok());
        let bad = format!("https://manage.office.com/api/v1.0/{T}/activity/feed/audit/x");
        assert!(b.next_page_uri(&bad).is_err());
    }
}
