//! Azure AD token endpoints (v1 `oauth2/token` with `resource`, v2 `oauth2/v2.0/token` with
//! `scope=<resource>/.default`), client-credentials grant with a secret or a certificate
//! `client_assertion`, Azure AD's error bodies; and the bearer check used by the API.
//!
//! Access tokens are JWTs signed with a per-process HMAC key (HS256): a token from another emulator
//! run or an edited token fails the signature check, and expiry is judged by the emulator clock.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::state::{App, RegisteredCert, Shared};
use super::{AZURE_MONITOR, EmulatorError, MICROSOFT_GRAPH, MICROSOFT_RESOURCE};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Roles granted when `EmulatorConfig::app_roles` has no entry for the client.
pub(crate) const DEFAULT_ROLES: [&str; 8] = [
    "ActivityFeed.Read",
    "ActivityFeed.ReadDlp",
    "ServiceHealth.Read",
    // Microsoft Graph (granted to the same app registration, as the product documentation has it).
    "AuditLog.Read.All",
    "ServiceHealth.Read.All",
    "ServiceMessage.Read.All",
    "ExchangeMessageTrace.Read.All",
    "AuditLogsQuery.Read.All",
];
/// Clock skew Azure AD tolerates on assertion `nbf`/`exp`.
const SKEW_SECS: i64 = 300;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/{tenant}/oauth2/token", post(token_v1))
        .route("/{tenant}/oauth2/v2.0/token", post(token_v2))
}

/// Claims of the access tokens this emulator issues (a subset of Azure AD's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AccessClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub appid: String,
    pub appidacr: String,
    pub idtyp: String,
    pub oid: String,
    pub roles: Vec<String>,
    pub sub: String,
    pub tid: String,
    pub uti: String,
    pub ver: String,
}

/// An Azure AD error answer: `error`, `error_description` (AADSTS…), `error_codes`, ids, time.
pub(crate) struct AadError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    text: String,
}

impl AadError {
    fn new(status: StatusCode, error: &'static str, code: u32, text: impl Into<String>) -> Self {
        AadError {
            status,
            error,
            code,
            text: text.into(),
        }
    }
    fn missing(param: &str) -> Self {
        AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{param}'."),
        )
    }
    fn invalid_client(code: u32, text: impl Into<String>) -> Self {
        AadError::new(StatusCode::UNAUTHORIZED, "invalid_client", code, text)
    }
}

impl IntoResponse for AadError {
    fn into_response(self) -> Response {
        let now = chrono::Utc::now();
        let timestamp = now.format("%Y-%m-%d %H:%M:%SZ").to_string();
        let trace_id = uuid::Uuid::new_v4().to_string();
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let description = format!(
            "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {}",
            self.code,
            self.text,
            aad_time(now)
        );
        let body = json!({
            "error": self.error,
            "error_description": description,
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        (
            self.status,
            [(header::CACHE_CONTROL, "no-store, no-cache")],
            axum::Json(body),
        )
            .into_response()
    }
}

/// Azure AD's timestamp form with seven fractional digits (chrono has no `%.7f`).
fn aad_time(t: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "{}.{:07}Z",
        t.format("%Y-%m-%d %H:%M:%S"),
        t.timestamp_subsec_nanos() / 100
    )
}

/// Minimal `application/x-www-form-urlencoded` decoding (first value of each key wins).
pub(crate) fn parse_form(body: &[u8]) -> std::collections::HashMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    let mut map = std::collections::HashMap::new();
    for pair in String::from_utf8_lossy(body).split('&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.entry(decode(k)).or_insert_with(|| decode(v));
    }
    map
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

async fn token_v1(
    State(s): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    token(&s, &tenant, Version::V1, &body).unwrap_or_else(IntoResponse::into_response)
}

async fn token_v2(
    State(s): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    token(&s, &tenant, Version::V2, &body).unwrap_or_else(IntoResponse::into_response)
}

/// The resources this emulator answers for: its own base URL, Microsoft's Management API, the
/// global cloud's Graph and Azure Monitor (a token for another cloud's Graph or Monitor is refused:
/// `invalid_resource`).
fn accepted_resource(s: &Shared, resource: &str) -> Option<String> {
    let r = resource.trim_end_matches('/');
    [
        s.base_url.as_str(),
        MICROSOFT_RESOURCE,
        MICROSOFT_GRAPH,
        AZURE_MONITOR,
    ]
    .into_iter()
    .find(|a| a.eq_ignore_ascii_case(r))
    .map(|_| r.to_string())
}

fn token(
    s: &Arc<Shared>,
    tenant: &str,
    version: Version,
    body: &[u8],
) -> Result<Response, AadError> {
    let Some(tenant_id) = s.canonical_tenant(tenant) else {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        ));
    };
    let form = parse_form(body);
    let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let grant = get("grant_type").ok_or_else(|| AadError::missing("grant_type"))?;
    if grant != "client_credentials" {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant}'."),
        ));
    }
    let client_id = get("client_id").ok_or_else(|| AadError::missing("client_id"))?;
    let apps = s
        .tenants
        .get(&tenant_id)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let Some(app) = apps
        .iter()
        .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
    else {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant_id}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        ));
    };

    let resource = match version {
        Version::V1 => {
            let r = get("resource").ok_or_else(|| AadError::missing("resource"))?;
            accepted_resource(s, r).ok_or_else(|| unknown_resource(r, &tenant_id))?
        }
        Version::V2 => {
            let scope = get("scope").ok_or_else(|| AadError::missing("scope"))?;
            let scopes: Vec<&str> = scope.split_whitespace().collect();
            let invalid_scope = || {
                AadError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    70011,
                    format!(
                        "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                    ),
                )
            };
            let [single] = scopes.as_slice() else {
                return Err(invalid_scope());
            };
            let Some(r) = single.strip_suffix("/.default") else {
                return Err(invalid_scope());
            };
            accepted_resource(s, r).ok_or_else(|| unknown_resource(r, &tenant_id))?
        }
    };

    let via_certificate = if let Some(assertion) = get("client_assertion") {
        if get("client_assertion_type") != Some(ASSERTION_TYPE) {
            return Err(AadError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                50027,
                format!(
                    "Invalid client_assertion_type: the only supported value is '{ASSERTION_TYPE}'."
                ),
            ));
        }
        verify_assertion(s, &tenant_id, app, assertion)?;
        true
    } else if let Some(secret) = get("client_secret") {
        let ok = app
            .secret
            .as_deref()
            .is_some_and(|known| bool::from(known.as_bytes().ct_eq(secret.as_bytes())));
        if !ok {
            return Err(AadError::invalid_client(
                7000215,
                format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                    app.client_id
                ),
            ));
        }
        false
    } else {
        return Err(AadError::invalid_client(
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    };

    let now = s.now().timestamp();
    let lifetime = i64::try_from(s.cfg.token_lifetime.as_secs()).unwrap_or(3599);
    // Roles are read when the token is issued, as Azure AD does: a change shows in the next token.
    let roles = s.app_roles(&app.client_id, &DEFAULT_ROLES);
    let claims = AccessClaims {
        aud: resource.clone(),
        iss: match version {
            Version::V1 => format!("https://sts.windows.net/{tenant_id}/"),
            Version::V2 => format!("https://login.microsoftonline.com/{tenant_id}/v2.0"),
        },
        iat: now,
        nbf: now,
        exp: now + lifetime,
        appid: app.client_id.clone(),
        appidacr: if via_certificate { "2" } else { "1" }.into(),
        idtyp: "app".into(),
        oid: app.client_id.clone(),
        roles,
        sub: app.client_id.clone(),
        tid: tenant_id.clone(),
        uti: URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes()),
        ver: match version {
            Version::V1 => "1.0".into(),
            Version::V2 => "2.0".into(),
        },
    };
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("JWT".into());
    header.kid = Some("o365-emulator".into());
    let access_token =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&s.token_key)).map_err(
            |e| {
                AadError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    90015,
                    e.to_string(),
                )
            },
        )?;
    let body = match version {
        // v1 sends its numbers as strings, exactly like Azure AD does.
        Version::V1 => json!({
            "token_type": "Bearer",
            "expires_in": lifetime.to_string(),
            "ext_expires_in": lifetime.to_string(),
            "expires_on": (now + lifetime).to_string(),
            "not_before": now.to_string(),
            "resource": resource,
            "access_token": access_token,
        }),
        Version::V2 => json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access_token,
        }),
    };
    Ok((
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store, no-cache")],
        axum::Json(body),
    )
        .into_response())
}

fn unknown_resource(resource: &str, tenant: &str) -> AadError {
    AadError::new(
        StatusCode::BAD_REQUEST,
        "invalid_resource",
        500011,
        format!(
            "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
        ),
    )
}

#[derive(Deserialize)]
struct AssertionClaims {
    aud: Option<serde_json::Value>,
    iss: Option<String>,
    sub: Option<String>,
    exp: Option<i64>,
    nbf: Option<i64>,
}

fn verify_assertion(s: &Shared, tenant: &str, app: &App, assertion: &str) -> Result<(), AadError> {
    let malformed = || AadError::invalid_client(50027, "JWT token is invalid or malformed.");
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| malformed())?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(AadError::invalid_client(
            700027,
            "Client assertion failed signature validation: only RS256 and PS256 are accepted.",
        ));
    }
    let cert = app.certs.iter().find(|c| {
        header.x5t.as_deref() == Some(c.x5t.as_str())
            || header.x5t_s256.as_deref() == Some(c.x5t_s256.as_str())
    });
    let Some(cert) = cert else {
        let id = header.x5t.or(header.x5t_s256).unwrap_or_default();
        return Err(AadError::invalid_client(
            700027,
            format!(
                "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{id}']"
            ),
        ));
    };
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<AssertionClaims>(assertion, &cert.key, &validation).map_err(
        |_| AadError::invalid_client(700027, "Client assertion failed signature validation."),
    )?;
    let c = data.claims;
    let now = s.now().timestamp();
    match (c.nbf, c.exp) {
        (_, None) => return Err(malformed()),
        (nbf, Some(exp)) if now > exp + SKEW_SECS || nbf.is_some_and(|n| n > now + SKEW_SECS) => {
            return Err(AadError::invalid_client(
                700024,
                format!(
                    "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
                    aad_time(s.now()),
                    nbf.and_then(|n| chrono::DateTime::from_timestamp(n, 0))
                        .map(|d| d.to_rfc3339())
                        .unwrap_or_default(),
                    chrono::DateTime::from_timestamp(exp, 0)
                        .map(|d| d.to_rfc3339())
                        .unwrap_or_default()
                ),
            ));
        }
        _ => {}
    }
    if !(c
        .iss
        .as_deref()
        .is_some_and(|i| i.eq_ignore_ascii_case(&app.client_id))
        && c.sub
            .as_deref()
            .is_some_and(|i| i.eq_ignore_ascii_case(&app.client_id)))
    {
        return Err(AadError::invalid_client(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        ));
    }
    let audiences: Vec<String> = match c.aud {
        Some(serde_json::Value::String(a)) => vec![a],
        Some(serde_json::Value::Array(v)) => v
            .into_iter()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let expected = [
        format!("{}/{tenant}/oauth2/token", s.base_url),
        format!("{}/{tenant}/oauth2/v2.0/token", s.base_url),
    ];
    if !audiences
        .iter()
        .any(|a| expected.iter().any(|e| e.eq_ignore_ascii_case(a)))
    {
        return Err(AadError::invalid_client(
            700027,
            format!(
                "Client assertion contains an invalid audience. Expected one of: {}.",
                expected.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Parses a registered certificate: thumbprints for x5t/x5t#S256 and the RSA public key.
pub(crate) fn register_certificate(pem: &str) -> Result<RegisteredCert, EmulatorError> {
    let der = super::tls::certs_from_pem(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| EmulatorError::Config("empty certificate PEM".into()))?;
    let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
    let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| EmulatorError::Config(format!("registered certificate: {e}")))?;
    let spki = cert.public_key();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        return Err(EmulatorError::Config(
            "registered certificates must carry an RSA key (Azure AD signs assertions with RS256/PS256)".into(),
        ));
    }
    Ok(RegisteredCert {
        x5t: URL_SAFE_NO_PAD.encode(sha1.as_ref()),
        x5t_s256: URL_SAFE_NO_PAD.encode(sha256.as_ref()),
        key: DecodingKey::from_rsa_der(&spki.subject_public_key.data),
    })
}

/// Why a bearer token was refused before its audience was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BearerProblem {
    Missing,
    Invalid,
    Expired,
}

impl BearerProblem {
    pub fn text(self) -> &'static str {
        match self {
            BearerProblem::Missing => "Authorization header with a bearer token is missing.",
            BearerProblem::Invalid => "The access token is invalid (signature or format).",
            BearerProblem::Expired => "The access token has expired.",
        }
    }
}

/// The claims of a bearer token this emulator issued and that has not expired; the caller judges
/// the audience (each API answers a foreign one in its own words).
pub(crate) fn decode_bearer(
    s: &Shared,
    headers: &HeaderMap,
) -> Result<AccessClaims, BearerProblem> {
    let raw = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or(BearerProblem::Missing)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<AccessClaims>(
        raw,
        &DecodingKey::from_secret(&s.token_key),
        &validation,
    )
    .map_err(|_| BearerProblem::Invalid)?
    .claims;
    if s.now().timestamp() >= claims.exp {
        return Err(BearerProblem::Expired);
    }
    Ok(claims)
}

/// Checks the bearer token of an API call; answers 401 like the API does. A token for Azure
/// Monitor is not one for this API.
pub(crate) fn check_bearer(s: &Shared, headers: &HeaderMap) -> Result<AccessClaims, ApiError> {
    let claims =
        decode_bearer(s, headers).map_err(|p| ApiError::unauthorized(&s.base_url, p.text()))?;
    let aud = claims.aud.trim_end_matches('/');
    if accepted_resource(s, aud).is_none() || aud.eq_ignore_ascii_case(AZURE_MONITOR) {
        return Err(ApiError::unauthorized(
            &s.base_url,
            "The access token audience is not this resource.",
        ));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::parse_form;

    #[test]
    fn form_decoding() {
        let f = parse_form(
            b"grant_type=client_credentials&scope=https%3A%2F%2Fx%2F.default&a=b+c&a=zz&e",
        );
        assert_eq!(f["grant_type"], "client_credentials");
        assert_eq!(f["scope"], "https://x/.default");
        assert_eq!(f["a"], "b c");
        assert_eq!(f["e"], "");
    }
}
