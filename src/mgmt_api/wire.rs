//! Microsoft's JSON, exactly as the Management Activity API sends and expects it.

use serde::{Deserialize, Serialize};

/// The five content types of the Management Activity API.
pub const CONTENT_TYPES: [&str; 5] = [
    "Audit.AzureActiveDirectory",
    "Audit.Exchange",
    "Audit.SharePoint",
    "Audit.General",
    "DLP.All",
];

/// One element of a webhook notification array, and of a `subscriptions/content` listing
/// (the listing has no `tenantId`/`clientId`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentNotice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub content_type: String,
    pub content_id: String,
    pub content_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_expiration: Option<String>,
}

/// The body of Microsoft's validation POST.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationBody {
    pub validation_code: String,
}

/// `{"webhook": {...}}` body of `subscriptions/start`.
#[derive(Debug, Clone, Serialize)]
pub struct StartBody<'a> {
    pub webhook: WebhookSpec<'a>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec<'a> {
    pub address: &'a str,
    pub auth_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<&'a str>,
}

/// One entry of `subscriptions/list` (and the answer of `start`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub content_type: String,
    pub status: String,
    #[serde(default)]
    pub webhook: Option<WebhookState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookState {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub auth_id: Option<String>,
    #[serde(default)]
    pub expiration: Option<String>,
}

/// `{"error": {"code": "AF20022", "message": "..."}}`
#[derive(Debug, Clone, Deserialize)]
pub struct ApiErrorBody {
    pub error: ApiErrorDetail,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiErrorDetail {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// Azure AD token answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    /// Seconds; v1 sends it as a string, v2 as a number.
    #[serde(deserialize_with = "number_or_string")]
    pub expires_in: u64,
}

/// Azure AD error answer (`error`, `error_description` with the AADSTS code).
#[derive(Debug, Clone, Deserialize)]
pub struct TokenErrorBody {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub error_description: String,
}

fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Num(u64),
        Str(String),
    }
    match N::deserialize(d)? {
        N::Num(n) => Ok(n),
        N::Str(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}
