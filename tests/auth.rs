//! Token handling against the emulator's Azure AD endpoint: one refresh at a time, cached tokens,
//! Azure AD's refusal shown to the user without the secret.

mod support;

use o365_collector::config::Credential;
use o365_collector::core::Secret;
use o365_collector::mgmt_api::auth::{AuthError, TokenSource};
use support::*;

fn source(emu: &o365_emulator::Emulator, secret: &str) -> TokenSource {
    TokenSource::new(
        client(emu),
        emu.base_url(),
        TENANT,
        CLIENT,
        Credential::Secret(Secret::new(secret)),
        emu.base_url(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_token() {
    let emu = emulator(|_| {}).await;
    let tokens = std::sync::Arc::new(source(&emu, SECRET));
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let t = tokens.clone();
            tokio::spawn(async move { t.token().await.unwrap().expose().to_string() })
        })
        .collect();
    let mut got = Vec::new();
    for c in calls {
        got.push(c.await.unwrap());
    }
    got.dedup();
    assert_eq!(
        got.len(),
        1,
        "every caller got the one token of the single refresh"
    );

    // After the API refused it, the next call fetches a new one.
    let old = Secret::new(got[0].clone());
    tokens.invalidate(&old).await;
    let fresh = tokens.token().await.unwrap();
    assert!(!fresh.expose().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_refused_with_the_aadsts_error_and_no_secret() {
    let emu = emulator(|_| {}).await;
    let wrong = "definitely-the-wrong-secret";
    match source(&emu, wrong).token().await {
        Err(e @ AuthError::Rejected { .. }) => {
            let text = e.to_string();
            assert!(text.contains("AADSTS"), "{text}");
            assert!(!text.contains(wrong), "the secret leaked: {text}");
            assert!(!e.is_retryable());
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}
