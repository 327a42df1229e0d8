//! The emulator over real HTTPS: token endpoints, every API rule and error code, paging, webhooks
//! (validation, delivery, disabling), throttling, content expiry via the clock, the control surface.

mod emulator_support;

use std::collections::HashSet;
use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use emulator_support::*;
use o365_emulator::{ContentType, EmulatorConfig, FaultsPatch, GenerateRequest, TenantSpec};
use serde_json::{Value, json};

const SP: &str = "Audit.SharePoint";
/// AF20055's message in Microsoft's error table, to the letter.
const AF20055_MESSAGE: &str = "Start time and end time must both be specified (or both omitted) and must be less than or equal to 24 hours apart, with the start time prior to end time and start time no more than 7 days in the past.";

fn greq(tenant: &str, ct: &str, records: usize, blobs: usize) -> GenerateRequest {
    GenerateRequest {
        tenant_id: tenant.into(),
        content_type: ct.into(),
        records,
        blobs,
        created: None,
    }
}

// ---------- tokens ----------

#[tokio::test]
async fn token_v1_and_v2_with_secret() {
    let env = start().await;
    let base = env.emu.base_url().to_string();
    let (s, v1) = env
        .token_request(
            &format!("/{T1}/oauth2/token"),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", C1),
                ("client_secret", S1),
                ("resource", "https://manage.office.com"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v1}");
    assert_eq!(v1["token_type"], "Bearer");
    assert_eq!(v1["expires_in"], "3599", "v1 sends numbers as strings");
    assert_eq!(v1["resource"], "https://manage.office.com");
    let (s, v2) = env
        .token_request(
            &format!("/{T1}/oauth2/v2.0/token"),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", C1),
                ("client_secret", S1),
                ("scope", &format!("{base}/.default")),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v2}");
    assert_eq!(v2["expires_in"], 3599);
    for tok in [
        v1["access_token"].as_str().unwrap(),
        v2["access_token"].as_str().unwrap(),
    ] {
        let (s, _, list) = env
            .get(tok, &format!("{}/subscriptions/list", env.feed(T1)))
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(list, json!([]));
    }
}

fn assert_aad_error(
    status: StatusCode,
    body: &Value,
    want_status: StatusCode,
    error: &str,
    code: u64,
) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    let desc = body["error_description"].as_str().unwrap();
    assert!(desc.starts_with(&format!("AADSTS{code}:")), "{desc}");
    for k in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[k].is_string(), "{k} missing in {body}");
    }
}

#[tokio::test]
async fn token_errors_match_azure_ad() {
    let env = start().await;
    let base = env.emu.base_url().to_string();
    let scope = format!("{base}/.default");
    let v2 = format!("/{T1}/oauth2/v2.0/token");
    let cc = ("grant_type", "client_credentials");

    let (s, b) = env
        .token_request(
            &v2,
            &[
                cc,
                ("client_id", C1),
                ("client_secret", "wrong"),
                ("scope", &scope),
            ],
        )
        .await;
    assert_aad_error(s, &b, StatusCode::UNAUTHORIZED, "invalid_client", 7000215);

    let (s, b) = env
        .token_request(
            &v2,
            &[
                cc,
                ("client_id", "not-registered"),
                ("client_secret", S1),
                ("scope", &scope),
            ],
        )
        .await;
    assert_aad_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        700016,
    );

    let (s, b) = env
        .token_request(
            "/6a1b2c3d-0000-4000-8000-0000000000ff/oauth2/v2.0/token",
            &[
                cc,
                ("client_id", C1),
                ("client_secret", S1),
                ("scope", &scope),
            ],
        )
        .await;
    assert_aad_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request", 90002);

    let (s, b) = env
        .token_request(
            &v2,
            &[
                cc,
                ("client_id", C1),
                ("client_secret", S1),
                ("scope", "https://manage.office.com/ActivityFeed.Read"),
            ],
        )
        .await;
    assert_aad_error(s, &b, StatusCode::BAD_REQUEST, "invalid_scope", 70011);

    let (s, b) = env
        .token_request(
            &v2,
            &[
                cc,
                ("client_id", C1),
                ("client_secret", S1),
                ("scope", "https://graph.microsoft.us/.default"),
            ],
        )
        .await;
    assert_aad_error(s, &b, StatusCode::BAD_REQUEST, "invalid_resource", 500011);

    let (s, b) = env
        .token_request(
            &format!("/{T1}/oauth2/token"),
            &[
                cc,
                ("client_id", C1),
                ("client_secret", S1),
                ("resource", "https://example.com"),
            ],
        )
        .await;
    assert_aad_error(s, &b, StatusCode::BAD_REQUEST, "invalid_resource", 500011);

    let (s, b) = env
        .token_request(
            &v2,
            &[("client_id", C1), ("client_secret", S1), ("scope", &scope)],
        )
        .await;
    assert_aad_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request", 900144);

    let (s, b) = env
        .token_request(
            &v2,
            &[
                ("grant_type", "password"),
                ("client_id", C1),
                ("scope", &scope),
            ],
        )
        .await;
    assert_aad_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
        70003,
    );

    let (s, b) = env
        .token_request(&v2, &[cc, ("client_id", C1), ("scope", &scope)])
        .await;
    assert_aad_error(s, &b, StatusCode::UNAUTHORIZED, "invalid_client", 7000218);
}

struct ClientCert {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn client_cert() -> ClientCert {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let cert = rcgen::CertificateParams::new(vec!["collector-client".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    ClientCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

fn assertion(
    c: &ClientCert,
    alg: jsonwebtoken::Algorithm,
    s256: bool,
    aud: &str,
    client: &str,
    exp_offset: i64,
) -> String {
    let mut h = jsonwebtoken::Header::new(alg);
    if s256 {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &c.der);
        h.x5t_s256 = Some(URL_SAFE_NO_PAD.encode(d.as_ref()));
    } else {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &c.der);
        h.x5t = Some(URL_SAFE_NO_PAD.encode(d.as_ref()));
    }
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "aud": aud, "iss": client, "sub": client, "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": now - 60, "exp": now + exp_offset,
    });
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(c.key_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&h, &claims, &key).unwrap()
}

#[tokio::test]
async fn certificate_assertion_tokens_and_failures() {
    let good = client_cert();
    let other = client_cert();
    let cert_pem = good.cert_pem.clone();
    let env = start_with(|c| {
        c.tenants = vec![TenantSpec {
            tenant_id: T1.into(),
            client_id: C1.into(),
            client_secret: None,
            certificates_pem: vec![cert_pem],
        }];
    })
    .await;
    let base = env.emu.base_url().to_string();
    let scope = format!("{base}/.default");
    let v2 = format!("/{T1}/oauth2/v2.0/token");
    let aud = format!("{base}/{T1}/oauth2/v2.0/token");
    let jwt_type = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let ask = |a: String| {
        let scope = scope.clone();
        let v2 = v2.clone();
        let env = &env;
        async move {
            env.token_request(
                &v2,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", C1),
                    ("client_assertion_type", jwt_type),
                    ("client_assertion", &a),
                    ("scope", &scope),
                ],
            )
            .await
        }
    };

    let (s, b) = ask(assertion(
        &good,
        jsonwebtoken::Algorithm::RS256,
        false,
        &aud,
        C1,
        600,
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let tok = b["access_token"].as_str().unwrap();
    assert_eq!(
        env.get(tok, &format!("{}/subscriptions/list", env.feed(T1)))
            .await
            .0,
        StatusCode::OK
    );

    let (s, b) = ask(assertion(
        &good,
        jsonwebtoken::Algorithm::PS256,
        true,
        &aud,
        C1,
        600,
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "PS256 + x5t#S256: {b}");

    // v1 endpoint with the v1 URL as audience.
    let (s, b) = env
        .token_request(
            &format!("/{T1}/oauth2/token"),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", C1),
                ("client_assertion_type", jwt_type),
                (
                    "client_assertion",
                    &assertion(
                        &good,
                        jsonwebtoken::Algorithm::RS256,
                        false,
                        &format!("{base}/{T1}/oauth2/token"),
                        C1,
                        600,
                    ),
                ),
                ("resource", "https://manage.office.com"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let (s, b) = ask(assertion(
        &other,
        jsonwebtoken::Algorithm::RS256,
        false,
        &aud,
        C1,
        600,
    ))
    .await;
    assert_aad_error(s, &b, StatusCode::UNAUTHORIZED, "invalid_client", 700027);

    let (s, b) = ask(assertion(
        &good,
        jsonwebtoken::Algorithm::RS256,
        false,
        &aud,
        C1,
        -3600,
    ))
    .await;
    assert_aad_error(s, &b, StatusCode::UNAUTHORIZED, "invalid_client", 700024);

    let (s, b) = ask(assertion(
        &good,
        jsonwebtoken::Algorithm::RS256,
        false,
        "https://login.microsoftonline.com/x/oauth2/token",
        C1,
        600,
    ))
    .await;
    assert_aad_error(s, &b, StatusCode::UNAUTHORIZED, "invalid_client", 700027);

    let (s, b) = ask(assertion(
        &good,
        jsonwebtoken::Algorithm::RS256,
        false,
        &aud,
        "someone-else",
        600,
    ))
    .await;
    assert_aad_error(s, &b, StatusCode::UNAUTHORIZED, "invalid_client", 700021);

    let (s, b) = ask("not.a.jwt".into()).await;
    assert_aad_error(s, &b, StatusCode::UNAUTHORIZED, "invalid_client", 50027);

    // A certificate-only app has no secret.
    let (s, b) = env
        .token_request(
            &v2,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", C1),
                ("client_secret", "x"),
                ("scope", &scope),
            ],
        )
        .await;
    assert_aad_error(s, &b, StatusCode::UNAUTHORIZED, "invalid_client", 7000215);
}

// ---------- API authorisation ----------

#[tokio::test]
async fn api_refuses_missing_forged_expired_and_foreign_tokens() {
    let env = start_with(|c| {
        c.token_lifetime = Duration::from_secs(120);
        c.tenants
            .push(TenantSpec::with_secret(T2, "no-read-app", "s3"));
        c.app_roles
            .insert("no-read-app".into(), vec!["ServiceHealth.Read".into()]);
    })
    .await;
    let list = format!("{}/subscriptions/list", env.feed(T1));

    let resp = env
        .http
        .get(format!("{}{list}", env.emu.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().contains_key("www-authenticate"));

    let tok = env.token().await;
    let mut forged = tok.clone();
    forged.pop();
    forged.push(if tok.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(env.get(&forged, &list).await.0, StatusCode::UNAUTHORIZED);

    // Token of tenant 1 on tenant 2's URL.
    let (s, _, b) = env
        .get(&tok, &format!("{}/subscriptions/list", env.feed(T2)))
        .await;
    assert_eq!((s, af(&b)), (StatusCode::UNAUTHORIZED, "AF20010"), "{b}");
    let (s, _, b) = env
        .get(
            &tok,
            "/api/v1.0/6a1b2c3d-0000-4000-8000-0000000000ff/activity/feed/subscriptions/list",
        )
        .await;
    assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, "AF20011"), "{b}");
    let (s, _, b) = env
        .get(
            &tok,
            "/api/v1.0/contoso.onmicrosoft.com/activity/feed/subscriptions/list",
        )
        .await;
    assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, "AF20013"), "{b}");

    let weak = env.token_for(T2, "no-read-app", "s3").await;
    let (s, _, b) = env
        .get(&weak, &format!("{}/subscriptions/list", env.feed(T2)))
        .await;
    assert_eq!((s, af(&b)), (StatusCode::FORBIDDEN, "AF10001"), "{b}");

    assert_eq!(env.get(&tok, &list).await.0, StatusCode::OK);
    env.emu.advance_clock(Duration::from_secs(121)).await;
    let (s, _, b) = env.get(&tok, &list).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "expired token: {b}");
}

// ---------- subscriptions ----------

#[tokio::test]
async fn subscription_lifecycle_and_errors() {
    let env = start().await;
    let tok = env.token().await;
    let feed = env.feed(T1);

    let (s, _, b) = env
        .get(
            &tok,
            &format!("{feed}/subscriptions/content?contentType={SP}"),
        )
        .await;
    assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, "AF20022"));
    let (s, b) = env
        .post(&tok, &format!("{feed}/subscriptions/start"), None)
        .await;
    assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, "AF20001"));
    let (s, b) = env
        .post(
            &tok,
            &format!("{feed}/subscriptions/start?contentType=Audit.Nope"),
            None,
        )
        .await;
    assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, "AF20020"));

    let (s, b) = env
        .post(
            &tok,
            &format!("{feed}/subscriptions/start?contentType={SP}&PublisherIdentifier={PUBLISHER}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b,
        json!({"contentType": SP, "status": "enabled", "webhook": null})
    );
    // Within 15 minutes of the first start even a start that would change nothing waits.
    let (s, b) = env
        .post(
            &tok,
            &format!("{feed}/subscriptions/start?contentType={SP}"),
            None,
        )
        .await;
    assert_eq!((s, af(&b)), (StatusCode::TOO_MANY_REQUESTS, "AF429"));
    env.emu.advance_clock(Duration::from_secs(15 * 60)).await;
    let (s, b) = env
        .post(
            &tok,
            &format!("{feed}/subscriptions/start?contentType={SP}"),
            None,
        )
        .await;
    assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, "AF20024"));
    env.start_sub(&tok, T1, "Audit.Exchange").await;

    let (_, _, list) = env.get(&tok, &format!("{feed}/subscriptions/list")).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "enabled" && s["webhook"].is_null())
    );

    let (s, _) = env
        .post(
            &tok,
            &format!("{feed}/subscriptions/stop?contentType={SP}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = env
        .post(
            &tok,
            &format!("{feed}/subscriptions/stop?contentType={SP}"),
            None,
        )
        .await;
    assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, "AF20022"));
    let (_, _, list) = env.get(&tok, &format!("{feed}/subscriptions/list")).await;
    let sp = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["contentType"] == SP)
        .unwrap()
        .clone();
    assert_eq!(sp["status"], "disabled");
    let (s, _, b) = env
        .get(
            &tok,
            &format!("{feed}/subscriptions/content?contentType={SP}"),
        )
        .await;
    assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, "AF20022"));
    // Start again re-enables.
    env.start_sub(&tok, T1, SP).await;
    let (s, _, _) = env
        .get(
            &tok,
            &format!("{feed}/subscriptions/content?contentType={SP}"),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

/// Microsoft's 15-minute rule between start requests of one subscription (tenant × content type),
/// on the emulator clock; stop is not limited; the request log shows every attempt.
#[tokio::test]
async fn subscription_starts_wait_fifteen_minutes() {
    let env = start().await;
    let tok = env.token().await;
    let tok2 = env.token_for(T2, C2, S2).await;
    let start_url = |tenant: &str, ct: &str| {
        format!(
            "{}{}/subscriptions/start?contentType={ct}&PublisherIdentifier={PUBLISHER}",
            env.emu.base_url(),
            env.feed(tenant)
        )
    };
    let try_start = |tenant: &'static str, token: String, ct: &'static str| {
        let req = env.http.post(start_url(tenant, ct)).bearer_auth(token);
        async move {
            let resp = req.send().await.expect("POST");
            let status = resp.status();
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            let body: Value = resp.json().await.expect("JSON");
            (status, retry, body)
        }
    };
    let (s, _, b) = try_start(T1, tok.clone(), SP).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Too early: 429 AF429 with the documented throttling message, and when to come back.
    let (s, retry, b) = try_start(T1, tok.clone(), SP).await;
    assert_eq!(
        (s, b),
        (
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": {"code": "AF429", "message": format!("Too many requests. Method=StartSubscription, PublisherId={PUBLISHER}")}})
        )
    );
    let retry = retry.expect("Retry-After");
    assert!((899..=900).contains(&retry), "Retry-After {retry}");
    // Another content type of the same tenant, and the same content type of another tenant,
    // are other subscriptions.
    let (s, _, b) = try_start(T1, tok.clone(), "Audit.Exchange").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _, b) = try_start(T2, tok2.clone(), SP).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Stop is not limited, and stopping does not reset the wait.
    let (s, b) = env
        .post(
            &tok,
            &format!("{}/subscriptions/stop?contentType={SP}", env.feed(T1)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, c) = env
        .control("clock", json!({"advance_secs": 14 * 60 + 50}))
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let (s, retry, _) = try_start(T1, tok.clone(), SP).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(matches!(retry, Some(9..=10)), "Retry-After {retry:?}");
    // A refused start does not open a new waiting period: on time, the start goes through.
    env.control("clock", json!({"advance_secs": 10})).await;
    let (s, _, b) = try_start(T1, tok.clone(), SP).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "enabled");
    // The rule can be lifted (tests of other things).
    env.control("faults", json!({"subscription_start_wait_secs": 0}))
        .await;
    let (s, b) = env
        .post(
            &tok,
            &format!("{}/subscriptions/stop?contentType={SP}", env.feed(T1)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _, b) = try_start(T1, tok.clone(), SP).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Every attempt, refused ones included, is in the request log.
    let (_, log) = env.control_get(&format!("requests?tenant_id={T1}")).await;
    let starts: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["operation"] == "StartSubscription" && r["content_type"] == SP)
        .collect();
    assert_eq!(starts.len(), 5, "{log}");
}

#[tokio::test]
async fn content_window_rules() {
    let env = start().await;
    let tok = env.token().await;
    env.start_sub(&tok, T1, SP).await;
    let now = env.emu.now();
    let f = |t: chrono::DateTime<chrono::Utc>, fmt: &str| t.format(fmt).to_string();
    let q = |extra: String| {
        format!(
            "{}/subscriptions/content?contentType={SP}{extra}",
            env.feed(T1)
        )
    };
    let full = "%Y-%m-%dT%H:%M:%S";

    let h = chrono::Duration::hours;
    // Every rule of AF20055: both or neither, at most 24 h apart, start before end, start no
    // more than 7 days back; each answered 400 with the documented code and message.
    let cases = [
        format!("&startTime={}", f(now - h(1), full)),
        format!("&endTime={}", f(now, full)),
        format!("&startTime={}&endTime=", f(now - h(1), full)),
        format!(
            "&startTime={}&endTime={}",
            f(now - h(25), full),
            f(now, full)
        ),
        format!(
            "&startTime={}&endTime={}",
            f(now - h(24) - chrono::Duration::seconds(1), full),
            f(now, full)
        ),
        format!(
            "&startTime={}&endTime={}",
            f(now, full),
            f(now - h(1), full)
        ),
        format!("&startTime={}&endTime={}", f(now, full), f(now, full)),
        format!(
            "&startTime={}&endTime={}",
            f(now - chrono::Duration::days(8), full),
            f(now - chrono::Duration::days(8) + h(1), full)
        ),
        format!(
            "&startTime={}&endTime={}",
            f(
                now - chrono::Duration::days(7) - chrono::Duration::minutes(1),
                full
            ),
            f(now - chrono::Duration::days(7) + h(1), full)
        ),
    ];
    for extra in cases {
        let (s, _, b) = env.get(&tok, &q(extra.clone())).await;
        assert_eq!(
            (s, b.clone()),
            (
                StatusCode::BAD_REQUEST,
                json!({"error": {"code": "AF20055", "message": AF20055_MESSAGE}})
            ),
            "{extra}"
        );
    }
    // The same rules on the notifications listing.
    let (s, _, b) = env
        .get(
            &tok,
            &format!(
                "{}/subscriptions/notifications?contentType={SP}&startTime={}",
                env.feed(T1),
                f(now - h(1), full)
            ),
        )
        .await;
    assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, "AF20055"), "{b}");
    let cases = [("&startTime=yesterday&endTime=today".to_string(), "AF20002")];
    for (extra, code) in cases {
        let (s, _, b) = env.get(&tok, &q(extra.clone())).await;
        assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, code), "{extra}: {b}");
    }
    let ok = [
        format!(
            "&startTime={}&endTime={}",
            f(now - chrono::Duration::hours(2), "%Y-%m-%dT%H:%M"),
            f(now, "%Y-%m-%dT%H:%M")
        ),
        format!(
            "&startTime={}&endTime={}",
            f(now - chrono::Duration::hours(2), full),
            f(now, full)
        ),
        format!(
            "&startTime={}&endTime={}",
            f(now - chrono::Duration::days(1), "%Y-%m-%d"),
            f(now, "%Y-%m-%d")
        ),
        format!(
            "&starttime={}&endtime={}",
            f(now - chrono::Duration::hours(2), full),
            f(now, full)
        ),
        // Exactly 24 hours apart is allowed.
        format!(
            "&startTime={}&endTime={}",
            f(now - h(24), full),
            f(now, full)
        ),
    ];
    for extra in ok {
        let (s, _, b) = env.get(&tok, &q(extra.clone())).await;
        assert_eq!(s, StatusCode::OK, "{extra}: {b}");
    }
}

#[tokio::test]
async fn content_listing_honours_the_window_bounds() {
    let env = start().await;
    let tok = env.token().await;
    env.start_sub(&tok, T1, SP).await;
    let t0 = (env.emu.now() - chrono::Duration::hours(3)).with_timezone(&chrono::Utc);
    let t0 = chrono::DateTime::parse_from_rfc3339(&t0.format("%Y-%m-%dT%H:%M:00Z").to_string())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let at_start = env
        .emu
        .publish(
            T1,
            ContentType::SharePoint,
            vec![json!({"Id": "a"})],
            Some(t0),
        )
        .await
        .unwrap();
    let at_end = env
        .emu
        .publish(
            T1,
            ContentType::SharePoint,
            vec![json!({"Id": "b"})],
            Some(t0 + chrono::Duration::hours(1)),
        )
        .await
        .unwrap();
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M").to_string();
    let (s, _, b) = env
        .get(
            &tok,
            &format!(
                "{}/subscriptions/content?contentType={SP}&startTime={}&endTime={}",
                env.feed(T1),
                fmt(t0),
                fmt(t0 + chrono::Duration::hours(1))
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = b
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["contentId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![at_start.as_str()],
        "start inclusive, end exclusive"
    );
    assert!(!ids.contains(&at_end.as_str()));
}

#[tokio::test]
async fn paging_returns_every_blob_exactly_once() {
    let env = start_with(|c| c.page_size = 7).await;
    let tok = env.token().await;
    env.start_sub(&tok, T1, SP).await;
    let published: HashSet<String> = env
        .emu
        .generate(greq(T1, SP, 100, 50))
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(published.len(), 50);

    let mut url = format!(
        "{}/subscriptions/content?contentType={SP}&PublisherIdentifier={PUBLISHER}",
        env.feed(T1)
    );
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (s, h, b) = env.get(&tok, &url).await;
        assert_eq!(s, StatusCode::OK, "{url}: {b}");
        pages += 1;
        let items = b.as_array().unwrap();
        assert!(items.len() <= 7);
        for it in items {
            assert_eq!(it["contentType"], SP);
            assert!(
                it["contentUri"]
                    .as_str()
                    .unwrap()
                    .starts_with(env.emu.base_url())
            );
            seen.push(it["contentId"].as_str().unwrap().to_string());
        }
        match h.get("NextPageUri") {
            Some(n) => {
                url = n.to_str().unwrap().to_string();
                assert!(
                    url.contains("nextPage=")
                        && url.contains("startTime=")
                        && url.contains("PublisherIdentifier=")
                );
            }
            None => break,
        }
    }
    assert_eq!(pages, 8);
    assert_eq!(seen.len(), 50, "no duplicates");
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), published);

    let (s, _, b) = env
        .get(
            &tok,
            &format!(
                "{}/subscriptions/content?contentType={SP}&nextPage=bogus",
                env.feed(T1)
            ),
        )
        .await;
    assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, "AF20031"));
}

#[tokio::test]
async fn blob_fetch_errors_and_seven_day_expiry() {
    let env = start().await;
    let tok = env.token().await;
    env.start_sub(&tok, T1, SP).await;
    let records = vec![
        json!({"Id": "r-1", "Operation": "FileAccessed", "CreationTime": "2026-11-25T13:00:01"}),
        json!({"Id": "r-2"}),
    ];
    let id = env
        .emu
        .publish(T1, ContentType::SharePoint, records.clone(), None)
        .await
        .unwrap();
    let (_, _, list) = env
        .get(
            &tok,
            &format!("{}/subscriptions/content?contentType={SP}", env.feed(T1)),
        )
        .await;
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["contentId"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        entry["contentUri"],
        format!(
            "{}/api/v1.0/{T1}/activity/feed/audit/{id}",
            env.emu.base_url()
        )
    );
    let uri = entry["contentUri"].as_str().unwrap().to_string();
    let (s, h, body) = env
        .get(&tok, &format!("{uri}?PublisherIdentifier={PUBLISHER}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(body, Value::Array(records));

    let (s, _, b) = env
        .get(&tok, &format!("{}/audit/has%20space", env.feed(T1)))
        .await;
    assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, "AF20052"));
    let (s, _, b) = env
        .get(
            &tok,
            &format!(
                "{}/audit/1$1$audit_sharepoint$Audit_SharePoint$emu0000",
                env.feed(T1)
            ),
        )
        .await;
    assert_eq!((s, af(&b)), (StatusCode::NOT_FOUND, "AF20050"));
    // Another tenant's token cannot read it even on its own URL.
    let tok2 = env.token_for(T2, C2, S2).await;
    env.start_sub(&tok2, T2, SP).await;
    let (s, _, b) = env
        .get(&tok2, &format!("{}/audit/{id}", env.feed(T2)))
        .await;
    assert_eq!((s, af(&b)), (StatusCode::NOT_FOUND, "AF20050"));

    // Backdated content older than 7 days: expired, not listed.
    let old = env
        .emu
        .publish(
            T1,
            ContentType::SharePoint,
            vec![json!({"Id": "old"})],
            Some(env.emu.now() - chrono::Duration::days(8)),
        )
        .await
        .unwrap();
    let (s, _, b) = env
        .get(&tok, &format!("{}/audit/{old}", env.feed(T1)))
        .await;
    assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, "AF20051"));

    // Age the fresh blob past 7 days with the clock (new token: the old one expired meanwhile).
    env.emu
        .advance_clock(Duration::from_secs(7 * 24 * 3600 + 60))
        .await;
    let tok = env.token().await;
    let (s, _, b) = env.get(&tok, &uri).await;
    assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, "AF20051"), "{b}");
    let (_, _, list) = env
        .get(
            &tok,
            &format!("{}/subscriptions/content?contentType={SP}", env.feed(T1)),
        )
        .await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn content_becomes_listable_only_after_the_delay() {
    let env = start_with(|c| c.content_delay = Duration::from_millis(400)).await;
    let tok = env.token().await;
    env.start_sub(&tok, T1, SP).await;
    let ids = env.emu.generate(greq(T1, SP, 3, 1)).await.unwrap();
    let list_url = format!("{}/subscriptions/content?contentType={SP}", env.feed(T1));
    let (_, _, b) = env.get(&tok, &list_url).await;
    assert_eq!(b, json!([]), "not listable yet");
    let (s, _, b) = env
        .get(&tok, &format!("{}/audit/{}", env.feed(T1), ids[0]))
        .await;
    assert_eq!((s, af(&b)), (StatusCode::NOT_FOUND, "AF20050"));
    let listed = wait_for(Duration::from_secs(10), || async {
        let (_, _, b) = env.get(&tok, &list_url).await;
        b.as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    assert!(listed);
}

// ---------- throttling ----------

#[tokio::test]
async fn throttling_answers_429_with_retry_after() {
    let env = start_with(|c| c.throttle_per_minute = 3).await;
    let tok = env.token().await;
    let url = |p: &str| {
        format!(
            "{}/subscriptions/list?PublisherIdentifier={p}",
            env.feed(T1)
        )
    };
    for _ in 0..3 {
        assert_eq!(env.get(&tok, &url(PUBLISHER)).await.0, StatusCode::OK);
    }
    let (s, h, b) = env.get(&tok, &url(PUBLISHER)).await;
    assert_eq!((s, af(&b)), (StatusCode::TOO_MANY_REQUESTS, "AF429"));
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("PublisherId={PUBLISHER}"))
    );
    // Another publisher has its own quota.
    assert_eq!(
        env.get(&tok, &url("99999999-2222-4333-8444-555555555555"))
            .await
            .0,
        StatusCode::OK
    );
    // Raised at runtime through the faults.
    env.emu
        .set_faults(FaultsPatch {
            throttle_per_minute: Some(100),
            ..Default::default()
        })
        .await;
    assert_eq!(env.get(&tok, &url(PUBLISHER)).await.0, StatusCode::OK);
}

// ---------- webhooks ----------

#[tokio::test]
async fn webhook_validation_and_notifications() {
    let env = start().await;
    let rx = Receiver::start(&env.emu).await;
    let tok = env.token().await;
    let (s, b) = env
        .post(
            &tok,
            &format!("{}/subscriptions/start?contentType={SP}", env.feed(T1)),
            Some(json!({"webhook": {"address": rx.url, "authId": "shared-secret", "expiration": ""}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["webhook"]["status"], "enabled");
    assert_eq!(b["webhook"]["authId"], "shared-secret");

    let got = rx.received();
    assert_eq!(got.len(), 1);
    let v = &got[0];
    let code = v.headers["webhook-validationcode"].to_str().unwrap();
    assert!(!code.is_empty());
    assert_eq!(v.body, json!({"validationCode": code}));
    assert_eq!(v.headers["webhook-authid"], "shared-secret");

    let ids = env.emu.generate(greq(T1, SP, 20, 2)).await.unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || async {
            rx.notifications()
                .iter()
                .map(|n| n.body.as_array().unwrap().len())
                .sum::<usize>()
                == 2
        })
        .await
    );
    let mut announced = Vec::new();
    for n in rx.notifications() {
        assert_eq!(n.headers["webhook-authid"], "shared-secret");
        for item in n.body.as_array().unwrap() {
            assert_eq!(item["tenantId"], T1);
            assert_eq!(item["clientId"], C1);
            assert_eq!(item["contentType"], SP);
            assert!(item["contentCreated"].is_string() && item["contentExpiration"].is_string());
            let uri = item["contentUri"].as_str().unwrap();
            let (s, _, blob) = env.get(&tok, uri).await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(blob.as_array().unwrap().len(), 10);
            announced.push(item["contentId"].as_str().unwrap().to_string());
        }
    }
    announced.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(announced, want);

    let deliveries = env.emu.deliveries().await;
    assert!(
        deliveries
            .iter()
            .any(|d| d.kind == "validation" && d.success)
    );
    assert!(
        deliveries
            .iter()
            .any(|d| d.kind == "notification" && d.status == Some(200) && d.attempt == 1)
    );

    let (s, _, n) = env
        .get(
            &tok,
            &format!(
                "{}/subscriptions/notifications?contentType={SP}",
                env.feed(T1)
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        n.as_array()
            .unwrap()
            .iter()
            .all(|e| e["notificationStatus"] == "success" && e["notificationSent"].is_string())
    );
    assert_eq!(n.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn failed_validation_and_plain_http_are_af20021() {
    let env = start().await;
    let rx = Receiver::start(&env.emu).await;
    rx.validation_status
        .store(500, std::sync::atomic::Ordering::Relaxed);
    let tok = env.token().await;
    let start = format!("{}/subscriptions/start?contentType={SP}", env.feed(T1));
    let (s, b) = env
        .post(&tok, &start, Some(json!({"webhook": {"address": rx.url}})))
        .await;
    assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, "AF20021"), "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not return HTTP 200")
    );
    let (_, _, list) = env
        .get(&tok, &format!("{}/subscriptions/list", env.feed(T1)))
        .await;
    assert_eq!(list, json!([]), "no subscription made");

    let (s, b) = env
        .post(
            &tok,
            &start,
            Some(json!({"webhook": {"address": "http://127.0.0.1:1/hook"}})),
        )
        .await;
    assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, "AF20021"));
    assert!(b["error"]["message"].as_str().unwrap().contains("HTTPS"));

    let (s, b) = env
        .post(
            &tok,
            &start,
            Some(json!({"webhook": {"address": rx.url, "expiration": "2001-01-01T00:00:00"}})),
        )
        .await;
    assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, "AF20003"));

    // Adding a webhook to an existing subscription: a failed validation leaves it unchanged.
    env.start_sub(&tok, T1, SP).await;
    // (after Microsoft's 15 minutes between starts)
    env.emu.advance_clock(Duration::from_secs(15 * 60)).await;
    let (s, b) = env
        .post(&tok, &start, Some(json!({"webhook": {"address": rx.url}})))
        .await;
    assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, "AF20021"));
    let (_, _, list) = env
        .get(&tok, &format!("{}/subscriptions/list", env.feed(T1)))
        .await;
    assert_eq!(
        list,
        json!([{"contentType": SP, "status": "enabled", "webhook": null}])
    );

    // An unreachable address fails validation too.
    rx.stop();
    let (s, b) = env
        .post(
            &tok,
            &start,
            Some(json!({"webhook": {"address": "https://127.0.0.1:9/hook"}})),
        )
        .await;
    assert_eq!((s, af(&b)), (StatusCode::BAD_REQUEST, "AF20021"));
}

#[tokio::test]
async fn failing_webhook_is_disabled_and_content_stays_listable() {
    let env = start_with(|c| c.webhook_max_failures = 3).await;
    let rx = Receiver::start(&env.emu).await;
    rx.notification_status
        .store(503, std::sync::atomic::Ordering::Relaxed);
    let tok = env.token().await;
    let start = format!("{}/subscriptions/start?contentType={SP}", env.feed(T1));
    let (s, _) = env
        .post(
            &tok,
            &start,
            Some(json!({"webhook": {"address": rx.url, "authId": "a"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let ids = env.emu.generate(greq(T1, SP, 5, 1)).await.unwrap();

    let list_url = format!("{}/subscriptions/list", env.feed(T1));
    let disabled = wait_for(Duration::from_secs(15), || async {
        let (_, _, l) = env.get(&tok, &list_url).await;
        l[0]["webhook"]["status"] == "disabled"
    })
    .await;
    assert!(disabled);
    let failures: Vec<_> = env
        .emu
        .deliveries()
        .await
        .into_iter()
        .filter(|d| d.kind == "notification")
        .collect();
    assert_eq!(failures.len(), 3);
    assert!(
        failures
            .iter()
            .all(|d| d.status == Some(503) && !d.success && d.content_ids == ids)
    );
    assert_eq!(
        failures.iter().map(|d| d.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(rx.notifications().len(), 3);

    // Content published while disabled is listable.
    let later = env.emu.generate(greq(T1, SP, 5, 1)).await.unwrap();
    let (s, _, l) = env
        .get(
            &tok,
            &format!("{}/subscriptions/content?contentType={SP}", env.feed(T1)),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let listed: HashSet<&str> = l
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["contentId"].as_str().unwrap())
        .collect();
    assert!(listed.contains(ids[0].as_str()) && listed.contains(later[0].as_str()));
    let (_, _, n) = env
        .get(
            &tok,
            &format!(
                "{}/subscriptions/notifications?contentType={SP}",
                env.feed(T1)
            ),
        )
        .await;
    assert!(
        n.as_array()
            .unwrap()
            .iter()
            .all(|e| e["notificationStatus"] == "failed")
    );

    // start again re-enables it (after a fresh validation) and deliveries resume, once
    // Microsoft's 15 minutes since the last start have passed.
    rx.notification_status
        .store(200, std::sync::atomic::Ordering::Relaxed);
    env.emu.advance_clock(Duration::from_secs(15 * 60)).await;
    let (s, b) = env
        .post(
            &tok,
            &start,
            Some(json!({"webhook": {"address": rx.url, "authId": "a"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["webhook"]["status"], "enabled");
    let fresh = env.emu.generate(greq(T1, SP, 5, 1)).await.unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || async {
            env.emu
                .deliveries()
                .await
                .iter()
                .any(|d| d.success && d.content_ids == fresh)
        })
        .await
    );
}

#[tokio::test]
async fn webhook_fault_injection_fails_deliveries() {
    let env = start_with(|c| c.webhook_max_failures = 2).await;
    let rx = Receiver::start(&env.emu).await;
    let tok = env.token().await;
    let start = format!("{}/subscriptions/start?contentType={SP}", env.feed(T1));
    assert_eq!(
        env.post(&tok, &start, Some(json!({"webhook": {"address": rx.url}})))
            .await
            .0,
        StatusCode::OK
    );
    env.emu
        .set_faults(FaultsPatch {
            webhook_fail_status: Some(500),
            ..Default::default()
        })
        .await;
    env.emu.generate(greq(T1, SP, 1, 1)).await.unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || async {
            let (_, _, l) = env
                .get(&tok, &format!("{}/subscriptions/list", env.feed(T1)))
                .await;
            l[0]["webhook"]["status"] == "disabled"
        })
        .await
    );
    assert!(
        rx.notifications().is_empty(),
        "injected failures never reach the receiver"
    );
}

#[tokio::test]
async fn hanging_deliveries_and_continuous_failure_duration_disable_the_webhook() {
    let env = start_with(|c| {
        c.webhook_max_failures = 1000;
        c.webhook_disable_after = Duration::from_millis(300);
        c.webhook_timeout = Duration::from_millis(100);
    })
    .await;
    let rx = Receiver::start(&env.emu).await;
    let tok = env.token().await;
    let start = format!("{}/subscriptions/start?contentType={SP}", env.feed(T1));
    assert_eq!(
        env.post(&tok, &start, Some(json!({"webhook": {"address": rx.url}})))
            .await
            .0,
        StatusCode::OK
    );
    env.emu
        .set_faults(FaultsPatch {
            webhook_hang: Some(true),
            ..Default::default()
        })
        .await;
    env.emu.generate(greq(T1, SP, 1, 1)).await.unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || async {
            let (_, _, l) = env
                .get(&tok, &format!("{}/subscriptions/list", env.feed(T1)))
                .await;
            l[0]["webhook"]["status"] == "disabled"
        })
        .await
    );
    let attempts: Vec<_> = env
        .emu
        .deliveries()
        .await
        .into_iter()
        .filter(|d| d.kind == "notification")
        .collect();
    assert!(
        attempts.len() >= 2 && attempts.len() < 1000,
        "disabled by duration, not count: {}",
        attempts.len()
    );
    assert!(
        attempts
            .iter()
            .all(|d| d.status.is_none()
                && d.error.as_deref().is_some_and(|e| e.contains("timed out")))
    );
}

// ---------- faults and control surface ----------

#[tokio::test]
async fn content_fetch_faults_and_foreign_uris() {
    let env = start().await;
    let tok = env.token().await;
    env.start_sub(&tok, T1, SP).await;
    let ids = env.emu.generate(greq(T1, SP, 4, 1)).await.unwrap();
    let (s, f) = env
        .control(
            "faults",
            json!({"content_fail_next": 2, "content_error_status": 503}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(f["content_fail_next"], 2);
    let uri = format!("{}/audit/{}", env.feed(T1), ids[0]);
    for _ in 0..2 {
        let (s, _, b) = env.get(&tok, &uri).await;
        assert_eq!((s, af(&b)), (StatusCode::SERVICE_UNAVAILABLE, "AF50000"));
    }
    assert_eq!(env.get(&tok, &uri).await.0, StatusCode::OK);

    env.control("faults", json!({"content_error_rate": 1.0}))
        .await;
    assert_eq!(env.get(&tok, &uri).await.0, StatusCode::SERVICE_UNAVAILABLE);
    env.control(
        "faults",
        json!({"reset": true, "foreign_content_uri": "https://evil.example.net"}),
    )
    .await;
    assert_eq!(env.get(&tok, &uri).await.0, StatusCode::OK);
    let (_, _, l) = env
        .get(
            &tok,
            &format!("{}/subscriptions/content?contentType={SP}", env.feed(T1)),
        )
        .await;
    assert!(
        l[0]["contentUri"]
            .as_str()
            .unwrap()
            .starts_with("https://evil.example.net/api/v1.0/")
    );
    let (s, f) = env.control_get("faults").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(f["foreign_content_uri"], "https://evil.example.net");
    assert_eq!(f["content_error_rate"], 0.0);
    let (s, _) = env.control("faults", json!({"no_such_fault": 1})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn control_surface_publish_generate_published_clock() {
    let env = start().await;
    let tok = env.token().await;
    env.start_sub(&tok, T1, "Audit.General").await;
    let (s, b) = env
        .control("publish", json!({"tenant_id": T1, "content_type": "Audit.General", "records": [{"Id": "x-1"}, {"Id": "x-2"}]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, g) = env
        .control(
            "generate",
            json!({"tenant_id": T1, "content_type": "Audit.General", "records": 25, "blobs": 3}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(g["content_ids"].as_array().unwrap().len(), 3);

    let (s, p) = env.control_get(&format!("published?tenant_id={T1}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["blobs"], 4);
    assert_eq!(p["records"], 27);
    let ids: Vec<&str> = p["record_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 27);
    assert_eq!(&ids[..2], &["x-1", "x-2"]);
    // The record ids are exactly the Ids of the fetched blobs.
    let mut fetched = Vec::new();
    for id in g["content_ids"].as_array().unwrap() {
        let (_, _, blob) = env
            .get(
                &tok,
                &format!("{}/audit/{}", env.feed(T1), id.as_str().unwrap()),
            )
            .await;
        fetched.extend(
            blob.as_array()
                .unwrap()
                .iter()
                .map(|r| r["Id"].as_str().unwrap().to_string()),
        );
    }
    assert_eq!(
        fetched,
        ids[2..].iter().map(|s| s.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(
        fetched.iter().collect::<HashSet<_>>().len(),
        25,
        "ids unique"
    );

    assert_eq!(
        env.control(
            "publish",
            json!({"tenant_id": T1, "content_type": "Audit.Bad", "records": []})
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    let unknown = "6a1b2c3d-0000-4000-8000-0000000000ff";
    assert_eq!(
        env.control(
            "generate",
            json!({"tenant_id": unknown, "content_type": SP, "records": 1})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.control_get("published").await.0,
        StatusCode::BAD_REQUEST
    );

    let before = env.emu.now();
    let (s, c) = env.control("clock", json!({"advance_secs": 3600})).await;
    assert_eq!(s, StatusCode::OK);
    assert!(c["offset_secs"].as_f64().unwrap() >= 3600.0);
    assert!(env.emu.now() - before >= chrono::Duration::seconds(3600));
    let (s, info) = env.control_get("").await;
    assert_eq!(s, StatusCode::OK, "{info}");

    // Microsoft's paths never answer control requests and vice versa.
    let (s, _, _) = env.get(&tok, "/api/v1.0/_emulator/generate").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn generated_records_look_real_and_are_deterministic() {
    let a = start_with(|c| c.seed = 42).await;
    let b = start_with(|c| c.seed = 42).await;
    let ta = a.token().await;
    let tb = b.token().await;
    for ct in [
        "Audit.AzureActiveDirectory",
        "Audit.Exchange",
        "Audit.SharePoint",
        "Audit.General",
        "DLP.All",
    ] {
        a.start_sub(&ta, T1, ct).await;
        b.start_sub(&tb, T1, ct).await;
        let ia = a.emu.generate(greq(T1, ct, 30, 1)).await.unwrap();
        let ib = b.emu.generate(greq(T1, ct, 30, 1)).await.unwrap();
        let (_, _, ra) = a.get(&ta, &format!("{}/audit/{}", a.feed(T1), ia[0])).await;
        let (_, _, rb) = b.get(&tb, &format!("{}/audit/{}", b.feed(T1), ib[0])).await;
        let strip = |v: &Value| -> Vec<Value> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.as_object_mut().unwrap().remove("CreationTime");
                    r
                })
                .collect()
        };
        assert_eq!(strip(&ra), strip(&rb), "same seed, same records for {ct}");
        for r in ra.as_array().unwrap() {
            assert!(uuid::Uuid::parse_str(r["Id"].as_str().unwrap()).is_ok());
            assert_eq!(r["OrganizationId"], T1);
            let ctime = r["CreationTime"].as_str().unwrap();
            assert!(
                chrono::NaiveDateTime::parse_from_str(ctime, "%Y-%m-%dT%H:%M:%S").is_ok(),
                "{ctime}"
            );
            for k in [
                "RecordType",
                "Operation",
                "UserType",
                "UserKey",
                "Workload",
                "UserId",
                "Version",
            ] {
                assert!(r.get(k).is_some(), "{ct} record lacks {k}: {r}");
            }
        }
        let recs = ra.as_array().unwrap();
        match ct {
            "Audit.AzureActiveDirectory" => assert!(recs.iter().any(|r| {
                r["ExtendedProperties"]
                    .as_array()
                    .is_some_and(|a| a.iter().all(|p| p["Name"].is_string()))
            })),
            "Audit.Exchange" => assert!(recs.iter().all(|r| r["Workload"] == "Exchange")),
            "Audit.SharePoint" => assert!(
                recs.iter()
                    .any(|r| r["SourceFileName"].is_string() && r["SiteUrl"].is_string())
            ),
            "DLP.All" => {
                assert!(recs.iter().all(|r| r["PolicyDetails"].is_array()
                    && r["SensitiveInfoDetectionIsIncluded"] == false))
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn dlp_needs_the_dlp_permission() {
    let env = start_with(|c| {
        c.app_roles
            .insert(C1.into(), vec!["ActivityFeed.Read".into()]);
    })
    .await;
    let tok = env.token().await;
    let (s, b) = env
        .post(
            &tok,
            &format!("{}/subscriptions/start?contentType=DLP.All", env.feed(T1)),
            None,
        )
        .await;
    assert_eq!((s, af(&b)), (StatusCode::FORBIDDEN, "AF10001"));
    env.start_sub(&tok, T1, SP).await;
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let env = start_with(|c| {
        c.tenants = Vec::new();
    })
    .await;
    assert_eq!(
        env.emu.tenants()[0].tenant_id,
        o365_emulator::DEMO_TENANT_ID
    );
    let tok = env
        .token_for(
            o365_emulator::DEMO_TENANT_ID,
            o365_emulator::DEMO_CLIENT_ID,
            o365_emulator::DEMO_CLIENT_SECRET,
        )
        .await;
    assert!(!tok.is_empty());
    let base = env.emu.base_url().to_string();
    let Env { emu, http } = env;
    emu.shutdown().await;
    assert!(http.get(format!("{base}/_emulator")).send().await.is_err());
    let _ = EmulatorConfig::default();
}

/// Microsoft Graph (reference graph.md §7): tokens per cloud, page shape, message trace windows,
/// error bodies with their request ids.
#[tokio::test]
async fn graph_tokens_pages_windows_and_errors() {
    let env = emulator_support::start().await;
    let token_for = |scope: String| {
        let env = &env;
        async move {
            env.token_request(
                &format!("/{T1}/oauth2/v2.0/token"),
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", C1),
                    ("client_secret", S1),
                    ("scope", &scope),
                ],
            )
            .await
        }
    };
    // Another cloud's Graph is unknown here; the global one is served.
    let (status, body) = token_for("https://graph.microsoft.us/.default".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = token_for("https://graph.microsoft.com/.default".into()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let graph = body["access_token"].as_str().unwrap().to_owned();
    // A Management API token is not for Graph.
    let (status, body) = token_for("https://manage.office.com/.default".into()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let manage = body["access_token"].as_str().unwrap().to_owned();
    let (status, headers, body) = env.get(&manage, "/v1.0/auditLogs/signIns").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    let inner = &body["error"]["innerError"];
    assert!(inner["date"].is_string() && inner["request-id"].is_string());
    assert_eq!(
        headers["request-id"].to_str().unwrap(),
        inner["request-id"].as_str().unwrap()
    );

    env.emu
        .graph_generate(o365_emulator::graph::GraphGenerate {
            tenant_id: T1.into(),
            feed: "sign_ins".into(),
            records: 3,
            from: None,
            to: None,
            recipients: None,
        })
        .await
        .unwrap();
    let (status, _, page) = env.get(&graph, "/v1.0/auditLogs/signIns?$top=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("#auditLogs/signIns")
    );
    let first = page["value"].as_array().unwrap().clone();
    assert_eq!(first.len(), 2);
    assert!(first[0]["createdDateTime"].as_str() >= first[1]["createdDateTime"].as_str());
    let next = page["@odata.nextLink"].as_str().unwrap().to_owned();
    assert!(
        next.contains("%24top=2") || next.contains("$top=2"),
        "{next}"
    );
    let (_, _, last) = env.get(&graph, &next).await;
    assert_eq!(last["value"].as_array().unwrap().len(), 1);
    assert!(last.get("@odata.nextLink").is_none());
    let (status, _, _) = env.get(&graph, "/v1.0/auditLogs/signIns?$top=1001").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Message trace: both bounds, ≤ 10 days, ≤ 90 days back, not in the future.
    let now = chrono::Utc::now();
    let f = |from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>| {
        format!(
            "/v1.0/admin/exchange/tracing/messageTraces?$filter=receivedDateTime ge {} and receivedDateTime le {}",
            from.format("%Y-%m-%dT%H:%M:%SZ"),
            to.format("%Y-%m-%dT%H:%M:%SZ")
        )
    };
    let day = chrono::TimeDelta::days(1);
    for (path, want) in [
        (f(now - day * 10, now - chrono::TimeDelta::minutes(1)), 200),
        (f(now - day * 12, now - day), 400),
        (f(now - day * 95, now - day * 89), 400),
        (f(now - day, now + day), 400),
        (
            "/v1.0/admin/exchange/tracing/messageTraces?$filter=receivedDateTime ge 2026-11-01T00:00:00Z".to_owned(),
            400,
        ),
    ] {
        let (status, _, body) = env.get(&graph, &path).await;
        assert_eq!(status.as_u16(), want, "{path}: {body}");
    }
}

/// A tenant whose unified audit log is off answers every Management Activity API call as if it
/// did not exist (400, the operation in place of a code, "Tenant … does not exist."), while Azure
/// AD still signs the app in; turned on again, the calls succeed.
#[tokio::test]
async fn audit_log_off_answers_as_if_the_tenant_did_not_exist() {
    let env = start().await;
    let tok = env.token().await;
    let (s, b) = env
        .control(
            "tenant",
            json!({"tenant_id": T1.to_uppercase(), "audit_log_enabled": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = env
        .control(
            "tenant",
            json!({"tenant_id": "6a1b2c3d-0000-4000-8000-0000000000ff", "audit_log_enabled": false}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "unknown tenant: {b}");

    let feed = env.feed(T1);
    let (s, b) = env
        .post(
            &tok,
            &format!("{feed}/subscriptions/start?contentType={SP}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(af(&b).starts_with("StartSubscription [TenantId="), "{b}");
    assert!(af(&b).ends_with("] failed. Exception"), "{b}");
    let message = b["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("Tenant {T1} does not exist.")),
        "{message}"
    );
    let (s, _, b) = env.get(&tok, &format!("{feed}/subscriptions/list")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(af(&b).starts_with("ListSubscriptions ["), "{b}");
    // The other tenant is not affected.
    let tok2 = env.token_for(T2, C2, S2).await;
    assert_eq!(
        env.get(&tok2, &format!("{}/subscriptions/list", env.feed(T2)))
            .await
            .0,
        StatusCode::OK
    );

    env.emu.set_audit_log(T1, true).await.unwrap();
    env.start_sub(&tok, T1, SP).await;
}

/// Roles granted through the control surface replace the configured ones in the next token; a
/// token issued before keeps its roles.
#[tokio::test]
async fn app_roles_granted_at_run_time_show_in_the_next_token() {
    let env = start().await;
    let before = env.token().await;
    let (s, b) = env
        .control(
            "app-roles",
            json!({"client_id": C1, "roles": ["ServiceHealth.Read"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let list = format!("{}/subscriptions/list", env.feed(T1));
    assert_eq!(env.get(&before, &list).await.0, StatusCode::OK);
    let after = env.token().await;
    let (s, _, b) = env.get(&after, &list).await;
    assert_eq!((s, af(&b)), (StatusCode::FORBIDDEN, "AF10001"), "{b}");

    env.emu
        .set_app_roles(C1, &["ActivityFeed.Read", "ActivityFeed.ReadDlp"])
        .await;
    let again = env.token().await;
    assert_eq!(env.get(&again, &list).await.0, StatusCode::OK);
}

/// Purview's Audit Log Query API: a query moves from notStarted through running to succeeded on
/// the emulator clock, pages the published records (auditData = the Management API record), stops
/// at its record limit, and refuses a token without an AuditLogsQuery role.
#[tokio::test]
async fn audit_log_queries_run_page_and_stop_at_their_limit() {
    use o365_emulator::audit_query::AuditSearch;
    let env = emulator_support::start_with(|c| {
        c.app_roles
            .insert(C2.into(), vec!["ActivityFeed.Read".into()]);
    })
    .await;
    let emu = &env.emu;
    let graph_token = |tenant: &'static str, client: &'static str, secret: &'static str| {
        let env = &env;
        async move {
            let (status, body) = env
                .token_request(
                    &format!("/{tenant}/oauth2/v2.0/token"),
                    &[
                        ("grant_type", "client_credentials"),
                        ("client_id", client),
                        ("client_secret", secret),
                        ("scope", "https://graph.microsoft.com/.default"),
                    ],
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["access_token"].as_str().unwrap().to_owned()
        }
    };
    let token = graph_token(T1, C1, S1).await;
    let created = emu.now() - chrono::TimeDelta::days(20);
    let ids = emu
        .generate(GenerateRequest {
            created: Some(created),
            ..greq(T1, "Audit.Exchange", 5, 1)
        })
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    let published = emu.published(T1).await;
    emu.audit_search(AuditSearch {
        record_limit: 1000,
        ready_after_secs: 30,
    })
    .await;
    let range = json!({
        "displayName": "t",
        "filterStartDateTime": (created - chrono::TimeDelta::hours(1)).to_rfc3339(),
        "filterEndDateTime": (created + chrono::TimeDelta::hours(1)).to_rfc3339(),
    });
    let (status, q) = env
        .post(
            &token,
            "/v1.0/security/auditLog/queries",
            Some(range.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{q}");
    assert_eq!(q["status"], "notStarted");
    let id = q["id"].as_str().unwrap().to_owned();
    let path = format!("/v1.0/security/auditLog/queries/{id}");
    let (status, _, early) = env.get(&token, &format!("{path}/records")).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "records before it succeeded: {early}"
    );
    emu.advance_clock(Duration::from_secs(15)).await;
    let (_, _, q) = env.get(&token, &path).await;
    assert_eq!(q["status"], "running");
    emu.advance_clock(Duration::from_secs(15)).await;
    let (_, _, q) = env.get(&token, &path).await;
    assert_eq!(q["status"], "succeeded", "{q}");
    assert_eq!(q["isRecordCountLimitExceeded"], false);
    // Two records a page: three pages, every record once, each wrapping the published one.
    emu.graph_faults(o365_emulator::graph::GraphFaults {
        page_size: Some(2),
        ..Default::default()
    })
    .await;
    let mut seen = Vec::new();
    let mut next = format!("{path}/records");
    loop {
        let (status, _, page) = env.get(&token, &next).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for r in page["value"].as_array().unwrap() {
            assert!(
                ["exchangeAdmin", "exchangeItem"]
                    .contains(&r["auditLogRecordType"].as_str().unwrap()),
                "{r}"
            );
            assert_eq!(r["id"], r["auditData"]["Id"]);
            assert_eq!(r["service"], "Exchange");
            seen.push(r["auditData"]["Id"].as_str().unwrap().to_owned());
        }
        match page["@odata.nextLink"].as_str() {
            Some(n) => next = n.to_owned(),
            None => break,
        }
    }
    let mut want = published.record_ids.clone();
    want.sort();
    seen.sort();
    assert_eq!(seen, want, "every published record, once");
    // Over the limit: the query still succeeds, flagged, with the limit's worth of records.
    emu.audit_search(AuditSearch {
        record_limit: 3,
        ready_after_secs: 0,
    })
    .await;
    let (_, q) = env
        .post(
            &token,
            "/v1.0/security/auditLog/queries",
            Some(range.clone()),
        )
        .await;
    let path = format!(
        "/v1.0/security/auditLog/queries/{}",
        q["id"].as_str().unwrap()
    );
    let (_, _, q) = env.get(&token, &path).await;
    assert_eq!(q["status"], "succeeded");
    assert_eq!(q["isRecordCountLimitExceeded"], true, "{q}");
    assert_eq!(q["recordCountLimit"], 3);
    // Another tenant does not see the query; an app without the role gets 403.
    let other = graph_token(T2, C2, S2).await;
    let (status, _, _) = env.get(&other, &path).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = env
        .post(&other, "/v1.0/security/auditLog/queries", Some(range))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "Authorization_RequestDenied");
}
