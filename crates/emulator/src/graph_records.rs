//! Synthetic Graph records shaped as Microsoft documents them (reference graph.md §1–4): v1.0
//! sign-ins, directory audits, message trace rows (one per recipient, one trace id per message,
//! `toIP` empty for inbound mail), service health issues and message center posts (PascalCase
//! enums as in Microsoft's examples).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::generator::{Prng, TenantFacts};

const USERS: [(&str, &str); 6] = [
    ("lena.sommer", "Lena Sommer"),
    ("alex.wilber", "Alex Wilber"),
    ("megan.bowen", "Megan Bowen"),
    ("diego.siciliani", "Diego Siciliani"),
    ("adele.vance", "Adele Vance"),
    ("it.admin", "IT Admin"),
];
const APPS: [(&str, &str); 4] = [
    (
        "00000002-0000-0ff1-ce00-000000000000",
        "Office 365 Exchange Online",
    ),
    (
        "00000003-0000-0ff1-ce00-000000000000",
        "Office 365 SharePoint Online",
    ),
    ("1fec8e78-bce4-4aaf-ab1b-5451cc387264", "Microsoft Teams"),
    ("00000003-0000-0000-c000-000000000000", "Microsoft Graph"),
];
const PLACES: [(&str, &str, &str, f64, f64, &str); 4] = [
    (
        "Lyon",
        "Auvergne-Rhone-Alpes",
        "FR",
        45.76,
        4.84,
        "198.51.100.23",
    ),
    ("Berlin", "Berlin", "DE", 52.52, 13.40, "203.0.113.9"),
    ("Seattle", "Washington", "US", 47.61, -122.33, "192.0.2.77"),
    ("Osaka", "Osaka", "JP", 34.69, 135.50, "2001:db8::51"),
];
/// (errorCode, failureReason)
const RESULTS: [(i64, &str); 4] = [
    (0, ""),
    (0, ""),
    (
        50126,
        "Error validating credentials due to invalid username or password.",
    ),
    (
        53003,
        "Access has been blocked by Conditional Access policies.",
    ),
];
const ACTIVITIES: [(&str, &str, &str, &str); 4] = [
    (
        "Add member to group",
        "GroupManagement",
        "Assign",
        "Core Directory",
    ),
    ("Update user", "UserManagement", "Update", "Core Directory"),
    (
        "Consent to application",
        "ApplicationManagement",
        "Assign",
        "Core Directory",
    ),
    (
        "Reset password (self-service)",
        "UserManagement",
        "Update",
        "Self-service Password Management",
    ),
];
const STATUSES: [&str; 5] = [
    "delivered",
    "delivered",
    "filteredAsSpam",
    "expanded",
    "failed",
];
const SERVICES: [(&str, &str, &str); 3] = [
    ("EX", "Exchange Online", "Outlook on the web"),
    ("SP", "SharePoint Online", "Sites"),
    ("TM", "Microsoft Teams", "Meetings"),
];

pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn sign_in(rng: &mut Prng, facts: &TenantFacts<'_>, at: DateTime<Utc>) -> Value {
    let (user, name) = *rng.pick(&USERS);
    let (app_id, app) = *rng.pick(&APPS);
    let (city, state, country, lat, lon, ip) = *rng.pick(&PLACES);
    let (code, reason) = *rng.pick(&RESULTS);
    json!({
        "id": rng.guid(),
        "createdDateTime": time(at),
        "userDisplayName": name,
        "userPrincipalName": format!("{user}@{}", facts.domain),
        "userId": rng.guid(),
        "appId": app_id,
        "appDisplayName": app,
        "ipAddress": ip,
        "clientAppUsed": rng.pick(&["Browser", "Mobile Apps and Desktop clients"]),
        "correlationId": rng.guid(),
        "conditionalAccessStatus": if code == 53003 { "failure" } else { "success" },
        "isInteractive": true,
        "riskDetail": "none",
        "riskLevelAggregated": "none",
        "riskLevelDuringSignIn": "none",
        "riskState": "none",
        "riskEventTypes": [],
        "riskEventTypes_v2": [],
        "resourceDisplayName": app,
        "resourceId": app_id,
        "status": {"errorCode": code, "failureReason": reason, "additionalDetails": null},
        "deviceDetail": {"deviceId": "", "displayName": null, "operatingSystem": "Windows10",
                         "browser": "Edge 131.0.0", "isCompliant": false, "isManaged": false,
                         "trustType": null},
        "location": {"city": city, "state": state, "countryOrRegion": country,
                     "geoCoordinates": {"altitude": null, "latitude": lat, "longitude": lon}},
        "appliedConditionalAccessPolicies": [
            {"id": rng.guid(), "displayName": "Require MFA for admins",
             "enforcedGrantControls": ["Mfa"], "enforcedSessionControls": [],
             "result": if code == 53003 { "failure" } else { "notApplied" }}
        ]
    })
}

pub(crate) fn directory_audit(rng: &mut Prng, facts: &TenantFacts<'_>, at: DateTime<Utc>) -> Value {
    let (activity, category, operation, service) = *rng.pick(&ACTIVITIES);
    let (user, _) = *rng.pick(&USERS);
    let correlation = rng.guid();
    json!({
        "id": format!("Directory_{correlation}_{}_{}", rng.hex(5), rng.below(100_000_000)),
        "category": category,
        "correlationId": correlation,
        "result": if rng.below(10) == 0 { "failure" } else { "success" },
        "resultReason": "",
        "activityDisplayName": activity,
        "activityDateTime": time(at),
        "loggedByService": service,
        "operationType": operation,
        "initiatedBy": {
            "app": null,
            "user": {"id": rng.guid(), "displayName": null,
                     "userPrincipalName": format!("it.admin@{}", facts.domain),
                     "ipAddress": "203.0.113.77"}
        },
        "targetResources": [
            {"id": rng.guid(), "displayName": null, "type": "User",
             "userPrincipalName": format!("{user}@{}", facts.domain),
             "modifiedProperties": [
                 {"displayName": "Group.DisplayName", "oldValue": null, "newValue": "\"Finance Approvers\""}
             ]}
        ],
        "additionalDetails": [{"key": "User-Agent", "value": "Mozilla/5.0 (X11; Linux x86_64)"}]
    })
}

/// One message: a row per recipient, all with the same trace id.
pub(crate) fn message_trace(
    rng: &mut Prng,
    facts: &TenantFacts<'_>,
    at: DateTime<Utc>,
    recipients: usize,
) -> Vec<Value> {
    let trace = rng.guid();
    let inbound = rng.below(2) == 0;
    let sender = if inbound {
        "billing@partner-lab.example".to_owned()
    } else {
        format!("{}@{}", rng.pick(&USERS).0, facts.domain)
    };
    let message_id = format!("<{}.{}@mail.example>", at.timestamp(), rng.hex(8));
    let subject = format!("Invoice {} for November", rng.below(10_000));
    let size = 2_000 + rng.below(200_000);
    (0..recipients.max(1))
        .map(|i| {
            let recipient = if inbound {
                format!("{}@{}", USERS[i % USERS.len()].0, facts.domain)
            } else {
                format!("contact{i}@partner-lab.example")
            };
            json!({
                "id": trace,
                "senderAddress": sender,
                "recipientAddress": recipient,
                "messageId": message_id,
                "receivedDateTime": at.to_rfc3339_opts(SecondsFormat::Secs, true),
                "subject": subject,
                "size": size,
                "fromIP": if inbound { "192.0.2.45" } else { "10.1.2.3" },
                "toIP": if inbound { "" } else { "198.51.100.200" },
                "status": *rng.pick(&STATUSES),
            })
        })
        .collect()
}

/// An issue; `serial` makes its id unique (`EX100042`).
pub(crate) fn issue(rng: &mut Prng, at: DateTime<Utc>, serial: u64) -> Value {
    let (prefix, service, feature) = *rng.pick(&SERVICES);
    json!({
        "id": format!("{prefix}{}", 100_000 + serial),
        "title": format!("Some users can't use {feature}"),
        "service": service,
        "feature": feature,
        "featureGroup": "Access",
        "classification": "Incident",
        "status": "ServiceDegradation",
        "origin": "Microsoft",
        "impactDescription": format!("Users may see errors in {feature}."),
        "isResolved": false,
        "startDateTime": time(at),
        "endDateTime": null,
        "lastModifiedDateTime": time(at),
        "details": [{"name": "NotifyInApp", "value": "True"}],
        "posts": [post(at, "We're reviewing telemetry.")]
    })
}

/// A message center post; `serial` makes its id unique (`MC100042`).
pub(crate) fn message(at: DateTime<Utc>, serial: u64) -> Value {
    json!({
        "id": format!("MC{}", 100_000 + serial),
        "title": "Plan for change: new admin centre experience",
        "startDateTime": time(at),
        "endDateTime": time(at + chrono::TimeDelta::days(30)),
        "lastModifiedDateTime": time(at),
        "actionRequiredByDateTime": null,
        "category": "PlanForChange",
        "severity": "Normal",
        "isMajorChange": false,
        "services": ["Microsoft 365 suite"],
        "tags": ["Admin impact"],
        "body": {"contentType": "Html", "content": "<p>We are updating the admin centre.</p>"},
        "details": [{"name": "Summary", "value": "New admin centre"}],
        "hasAttachments": false,
        "viewPoint": null
    })
}

/// An issue updated in place: a newer `lastModifiedDateTime`, one more post, resolved.
pub(crate) fn update_issue(issue: &mut Value, at: DateTime<Utc>) {
    issue["lastModifiedDateTime"] = json!(time(at));
    issue["status"] = json!("ServiceRestored");
    issue["isResolved"] = json!(true);
    issue["endDateTime"] = json!(time(at));
    if let Some(posts) = issue["posts"].as_array_mut() {
        posts.push(post(
            at,
            "We've confirmed that the fix resolved the impact.",
        ));
    }
}

fn post(at: DateTime<Utc>, text: &str) -> Value {
    json!({"createdDateTime": time(at), "postType": "Regular",
           "description": {"contentType": "Html", "content": text}})
}
