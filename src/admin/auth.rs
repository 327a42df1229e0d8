//! The bearer-token check in front of every protected admin route.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::state::{AdminError, AdminState};
use crate::core::Secret;
use crate::store::Store;

/// Lets the request through when no token is configured (config validation then forces a loopback
/// listener) or when `Authorization: Bearer <token>` matches; otherwise 401 with `WWW-Authenticate`.
pub(super) async fn require_token<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    req: Request,
    next: Next,
) -> Response {
    match &state.token {
        Some(token) if !authorized(req.headers(), token) => {
            AdminError::Unauthorized.into_response()
        }
        _ => next.run(req).await,
    }
}

/// Whether the headers carry exactly this bearer token.
pub(super) fn authorized(headers: &HeaderMap, token: &Secret) -> bool {
    let Some(presented) = bearer(headers) else {
        return false;
    };
    tokens_equal(presented.as_bytes(), token.expose().as_bytes())
}

/// The credentials of an `Authorization: Bearer …` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// Constant-time comparison: both sides are hashed first so that neither the content nor the
/// length of the configured token shows in the timing.
fn tokens_equal(presented: &[u8], expected: &[u8]) -> bool {
    use aws_lc_rs::digest::{SHA256, digest};
    let a = digest(&SHA256, presented);
    let b = digest(&SHA256, expected);
    a.as_ref().ct_eq(b.as_ref()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn accepts_only_the_exact_bearer_token() {
        let t = Secret::new("0123456789abcdef-token");
        assert!(authorized(&headers("Bearer 0123456789abcdef-token"), &t));
        assert!(authorized(&headers("bearer 0123456789abcdef-token"), &t));
        assert!(!authorized(&headers("Bearer 0123456789abcdef-toke"), &t));
        assert!(!authorized(&headers("Bearer 0123456789abcdef-token2"), &t));
        assert!(!authorized(&headers("Basic 0123456789abcdef-token"), &t));
        assert!(!authorized(&headers("0123456789abcdef-token"), &t));
        assert!(!authorized(&headers("Bearer "), &t));
        assert!(!authorized(&HeaderMap::new(), &t));
    }
}
