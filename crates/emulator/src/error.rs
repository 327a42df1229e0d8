//! The Management Activity API's error answer (`{"error":{"code":"AF…","message":"…"}}`), in a
//! module of its own so that the token check (`auth`), webhook validation and the API handlers
//! share it without importing each other.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API error as Microsoft sends it.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    /// An AF code, or (audit log off) the free text Microsoft puts in its place.
    code: std::borrow::Cow<'static, str>,
    message: String,
    /// Seconds for `Retry-After` (429 answers).
    pub retry_after: Option<u64>,
    www_authenticate: Option<String>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: impl Into<std::borrow::Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
            www_authenticate: None,
        }
    }
    pub fn bad(
        code: impl Into<std::borrow::Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 401 for a missing, forged, expired or foreign-audience token.
    pub fn unauthorized(base_url: &str, why: &str) -> Self {
        let mut e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            format!("Authorization has been denied for this request. {why}"),
        );
        e.www_authenticate = Some(format!(
            "Bearer realm=\"\", authorization_uri=\"{base_url}/common/oauth2/authorize\", error=\"invalid_token\""
        ));
        e
    }
    pub fn missing(param: &str) -> Self {
        ApiError::bad("AF20001", format!("Missing parameter: {param}."))
    }
    pub fn bad_type(param: &str, expected: &str) -> Self {
        ApiError::bad(
            "AF20002",
            format!("Invalid parameter type: {param}. Expected type: {expected}"),
        )
    }
    pub fn no_subscription() -> Self {
        ApiError::bad(
            "AF20022",
            "No subscription found for the specified content type.",
        )
    }
    /// A listing window that breaks Microsoft's rules. The reference documents two codes for it:
    /// AF20030 (older text, without "start time prior to end time") and AF20055 (the current text,
    /// naming all four rules). The emulator answers AF20055, with its documented message to the
    /// letter, for every broken rule: one answer that names every rule, as the service does today.
    pub fn window() -> Self {
        ApiError::bad(
            "AF20055",
            "Start time and end time must both be specified (or both omitted) and must be less than or equal to 24 hours apart, with the start time prior to end time and start time no more than 7 days in the past.",
        )
    }
    /// The tenant's unified audit log is off: the audit service answers as if the tenant did not
    /// exist. Microsoft documents no code for it; what tenants see in the field is a 400 whose
    /// `code` is the failed operation with its context and whose `message` is the service's
    /// exception, "Tenant {id} does not exist." (the stack trace that follows is left out).
    pub fn audit_log_off(operation: &str, tenant: &str, client_id: &str, publisher: &str) -> Self {
        ApiError::bad(
            format!(
                "{operation} [TenantId={tenant},ApplicationId={client_id},PublisherId={publisher}] failed. Exception"
            ),
            format!(
                "Microsoft.Office.Compliance.Audit.DataServiceException: Tenant {tenant} does not exist."
            ),
        )
    }
    pub fn webhook_not_validated(address: &str, why: &str) -> Self {
        ApiError::bad(
            "AF20021",
            format!("The webhook endpoint {address} could not be validated. {why}"),
        )
    }
}

impl ApiError {
    /// The AF code and message (what the body carries).
    pub fn code_and_message(&self) -> (&str, &str) {
        (&self.code, &self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if let Some(w) = self.www_authenticate
            && let Ok(v) = HeaderValue::from_str(&w)
        {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}
