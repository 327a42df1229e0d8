//! Azure Monitor's Logs Ingestion API, as the Sentinel output meets it:
//! `POST /dataCollectionRules/{dcrImmutableId}/streams/{streamName}?api-version=2023-01-01`.
//!
//! Facts (Microsoft Learn, "Logs Ingestion API in Azure Monitor" and "Azure Monitor service
//! limits"; the REST reference "Logs Ingestion - Upload", api-version 2023-01-01; the
//! azure-monitor-ingestion SDK's troubleshooting guide):
//! - the body is a JSON array of objects matching the stream's declared columns, `Content-Type:
//!   application/json`, optionally `Content-Encoding: gzip`;
//! - an API call carries at most 1 MB, compressed and uncompressed alike (larger: 413);
//! - the bearer token is for the cloud's Azure Monitor audience (`https://monitor.azure.com/.default`
//!   in the global cloud); the application needs the "Monitoring Metrics Publisher" role on the DCR,
//!   else 403 `OperationFailed` "The authentication token provided does not have access to ingest
//!   data for the data collection rule with immutable Id '…'";
//! - success is 204 with no body; errors carry `{"error":{"code","message"}}` and the
//!   `x-ms-error-code` header; throttling is 429 with `Retry-After`, 503 likewise.
//!
//! Where the documentation names no code (a missing api-version, an unknown rule or stream, a body
//! that is not a JSON array), the code below is ours, in Azure's error shape.

use std::io::Read as _;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use super::auth::{self, BearerProblem};
use super::state::{
    INGESTED_KEEP_BYTES, IngestedUpload, IngestionRequest, REQUEST_LOG_LIMIT, Shared,
};
use super::{AZURE_MONITOR, lock};

/// Largest API call, compressed or not ("Maximum size of API call: 1 MB").
pub(crate) const MAX_CALL_BYTES: usize = 1024 * 1024;
/// The api-versions the service answers.
const API_VERSIONS: [&str; 2] = ["2023-01-01", "2021-11-01-preview"];

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/dataCollectionRules/{dcr}/streams/{stream}", post(upload))
        // Bodies above 1 MB are judged (413) here rather than cut off by axum's 2 MB default.
        .layer(DefaultBodyLimit::max(8 * MAX_CALL_BYTES))
}

/// A refusal: status, `error.code`, message, and `Retry-After` seconds for 429/503.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert("x-ms-error-code", HeaderValue::from_static(self.code));
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        resp
    }
}

async fn upload(
    State(s): State<Arc<Shared>>,
    Path((dcr, stream)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut entry = IngestionRequest {
        at: chrono::Utc::now(),
        dcr_immutable_id: dcr.clone(),
        stream: stream.clone(),
        content_encoding: headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        wire_bytes: body.len(),
        json_bytes: None,
        status: 204,
        error_code: None,
        retry_after: None,
    };
    let verdict = judge(&s, &dcr, &stream, &query, &headers, &body, &mut entry);
    let resp = match verdict {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => {
            entry.status = r.status.as_u16();
            entry.error_code = Some(r.code.to_owned());
            entry.retry_after = r.retry_after;
            r.into_response()
        }
    };
    let mut log = lock(&s.ingestion);
    if log.requests.len() >= REQUEST_LOG_LIMIT {
        log.requests.pop_front();
    }
    log.requests.push_back(entry);
    resp
}

fn judge(
    s: &Shared,
    dcr: &str,
    stream: &str,
    query: &std::collections::HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
    entry: &mut IngestionRequest,
) -> Result<(), Refusal> {
    let bad = |code, message: String| Refusal::new(StatusCode::BAD_REQUEST, code, message);
    match query.get("api-version").map(String::as_str) {
        None => {
            return Err(bad(
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests."
                    .into(),
            ));
        }
        Some(v) if !API_VERSIONS.contains(&v) => {
            return Err(bad(
                "InvalidApiVersionParameter",
                format!(
                    "The api-version '{v}' is invalid. The supported versions are '{}'.",
                    API_VERSIONS.join("', '")
                ),
            ));
        }
        Some(_) => {}
    }
    let unauthorized =
        |message: String| Refusal::new(StatusCode::UNAUTHORIZED, "InvalidToken", message);
    let claims = auth::decode_bearer(s, headers).map_err(|p| {
        unauthorized(match p {
            BearerProblem::Missing => "An access token is required: send Authorization: Bearer <token> for https://monitor.azure.com/.default.".into(),
            other => other.text().into(),
        })
    })?;
    if !claims
        .aud
        .trim_end_matches('/')
        .eq_ignore_ascii_case(AZURE_MONITOR)
    {
        return Err(unauthorized(format!(
            "The audience '{}' of the access token is invalid for this API: the token must be issued for {AZURE_MONITOR} (scope {AZURE_MONITOR}/.default).",
            claims.aud
        )));
    }
    let Some(rule) = s
        .cfg
        .data_collection_rules
        .iter()
        .find(|r| r.immutable_id.eq_ignore_ascii_case(dcr))
    else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("Data collection rule with immutable Id '{dcr}' not found."),
        ));
    };
    if !rule
        .publishers
        .iter()
        .any(|p| p.eq_ignore_ascii_case(&claims.appid))
    {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "OperationFailed",
            format!(
                "The authentication token provided does not have access to ingest data for the data collection rule with immutable Id '{dcr}'."
            ),
        ));
    }
    if !rule.streams.iter().any(|st| st == stream) {
        return Err(bad(
            "InvalidStream",
            format!(
                "The stream '{stream}' is not declared in the data collection rule with immutable Id '{dcr}'."
            ),
        ));
    }
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "Content-Type must be application/json.",
        ));
    }
    if body.len() > MAX_CALL_BYTES {
        return Err(too_large());
    }
    let json = match entry.content_encoding.as_deref().map(str::trim) {
        None | Some("") | Some("identity") => body.to_vec(),
        Some(e) if e.eq_ignore_ascii_case("gzip") => {
            let mut out = Vec::new();
            let read = flate2::read::GzDecoder::new(body)
                .take(MAX_CALL_BYTES as u64 + 1)
                .read_to_end(&mut out);
            if read.is_err() {
                return Err(bad(
                    "InvalidContentEncoding",
                    "The body is not valid gzip data although Content-Encoding is gzip.".into(),
                ));
            }
            out
        }
        Some(other) => {
            return Err(bad(
                "InvalidContentEncoding",
                format!("Content-Encoding '{other}' is not supported; use gzip or none."),
            ));
        }
    };
    entry.json_bytes = Some(json.len());
    if json.len() > MAX_CALL_BYTES {
        return Err(too_large());
    }
    let records = match serde_json::from_slice::<serde_json::Value>(&json) {
        Ok(serde_json::Value::Array(items)) if items.iter().all(|i| i.is_object()) => items.len(),
        _ => {
            return Err(bad(
                "InvalidPayload",
                "The body must be a JSON array of objects matching the stream's columns.".into(),
            ));
        }
    };
    {
        let mut f = lock(&s.faults);
        if f.faults.ingestion_fail_next > 0 {
            f.faults.ingestion_fail_next -= 1;
            let status = f.faults.ingestion_fail_status;
            return Err(match status {
                413 => too_large(),
                429 => Refusal {
                    retry_after: Some(f.faults.ingestion_retry_after),
                    ..Refusal::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TooManyRequests",
                        "The request rate or data volume of the data collection rule is over its limit. Retry after the time in Retry-After.",
                    )
                },
                503 => Refusal {
                    retry_after: Some(f.faults.ingestion_retry_after),
                    ..Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ServiceUnavailable",
                        "The service is temporarily unavailable. Retry after the time in Retry-After.",
                    )
                },
                _ => Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "An internal error occurred.",
                ),
            });
        }
    }
    let mut state = lock(&s.ingestion);
    if state.kept_bytes + json.len() <= INGESTED_KEEP_BYTES {
        state.kept_bytes += json.len();
        state.uploads.push(IngestedUpload {
            dcr_immutable_id: rule.immutable_id.clone(),
            stream: stream.to_owned(),
            client_id: claims.appid,
            body: String::from_utf8_lossy(&json).into_owned(),
            records,
        });
    } else {
        state.dropped += 1;
    }
    Ok(())
}

fn too_large() -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "ContentLengthLimitExceeded",
        format!(
            "The request body is larger than the {MAX_CALL_BYTES} bytes an API call may carry (compressed or uncompressed); send smaller batches."
        ),
    )
}
