//! Synthetic audit records shaped like real ones (see ../shared/corpus): the common schema plus each
//! workload's own fields, `{Name, Value}` arrays, GUIDs, `CreationTime` without a zone. Deterministic
//! for a given seed: the same seed and the same sequence of requests give the same records.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

/// The five content types of the Management Activity API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContentType {
    AzureActiveDirectory,
    Exchange,
    SharePoint,
    General,
    Dlp,
}

impl ContentType {
    pub const ALL: [ContentType; 5] = [
        ContentType::AzureActiveDirectory,
        ContentType::Exchange,
        ContentType::SharePoint,
        ContentType::General,
        ContentType::Dlp,
    ];

    /// The wire name, e.g. `Audit.SharePoint`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::AzureActiveDirectory => "Audit.AzureActiveDirectory",
            ContentType::Exchange => "Audit.Exchange",
            ContentType::SharePoint => "Audit.SharePoint",
            ContentType::General => "Audit.General",
            ContentType::Dlp => "DLP.All",
        }
    }

    /// Exact, case-sensitive parse of the wire name (Microsoft rejects other spellings with AF20020).
    pub fn parse(s: &str) -> Option<ContentType> {
        ContentType::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The lower-case piece used inside content ids, e.g. `audit_sharepoint`.
    pub(crate) fn id_piece(self) -> &'static str {
        match self {
            ContentType::AzureActiveDirectory => "audit_azureactivedirectory",
            ContentType::Exchange => "audit_exchange",
            ContentType::SharePoint => "audit_sharepoint",
            ContentType::General => "audit_general",
            ContentType::Dlp => "dlp_all",
        }
    }
}

impl std::fmt::Display for ContentType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SplitMix64: tiny, fast, good enough for synthetic data and fault dice; seeded for determinism.
#[derive(Debug, Clone)]
pub(crate) struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    /// A version-4-shaped GUID in lower case.
    pub fn guid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }
    pub fn hex(&mut self, digits: usize) -> String {
        let mut s = String::with_capacity(digits);
        while s.len() < digits {
            s.push_str(&format!("{:016X}", self.next_u64()));
        }
        s.truncate(digits);
        s
    }
}

/// Per-tenant facts reused across records so the data looks like one organisation.
pub(crate) struct TenantFacts<'a> {
    pub tenant_id: &'a str,
    pub domain: String,
}

impl<'a> TenantFacts<'a> {
    pub fn new(tenant_id: &'a str) -> Self {
        let short: String = tenant_id
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .take(6)
            .collect();
        TenantFacts {
            tenant_id,
            domain: format!("emu{short}.onmicrosoft.com"),
        }
    }
}

const USERS: [&str; 8] = [
    "alex.wilber",
    "megan.bowen",
    "lee.gu",
    "nestor.wilke",
    "adele.vance",
    "diego.siciliani",
    "grady.archie",
    "isaiah.langer",
];
const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17126; Pro)",
    "OneDriveMpc-Transform_Thumbnail/1.0",
];

/// Synthesises records; one instance lives in the emulator and is advanced by every request.
pub(crate) struct Generator {
    rng: Prng,
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        Generator {
            rng: Prng::new(seed),
        }
    }

    /// A seed for a sub-generator (one per blob, so blobs can be built in parallel).
    pub fn next_seed(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// One record of `ct` for `tenant`, created a little before `created` (blobs aggregate past events).
    pub fn record(
        &mut self,
        ct: ContentType,
        tenant: &TenantFacts<'_>,
        created: DateTime<Utc>,
    ) -> Value {
        let when = created - Duration::seconds(self.rng.below(1800) as i64);
        let creation_time = when.format("%Y-%m-%dT%H:%M:%S").to_string();
        match ct {
            ContentType::AzureActiveDirectory => self.aad(tenant, creation_time),
            ContentType::Exchange => self.exchange(tenant, creation_time),
            ContentType::SharePoint => self.sharepoint(tenant, creation_time),
            ContentType::General => self.general(tenant, creation_time),
            ContentType::Dlp => self.dlp(tenant, creation_time),
        }
    }

    fn user(&mut self, tenant: &TenantFacts<'_>) -> String {
        format!("{}@{}", self.rng.pick(&USERS), tenant.domain)
    }

    /// ClientIP in the forms seen in real records: v4, v4:port, [v6]:port, v6, and empty.
    fn client_ip(&mut self) -> String {
        let a = self.rng.below(254) + 1;
        let port = 1024 + self.rng.below(60000);
        match self.rng.below(10) {
            0 => format!("198.51.100.{a}:{port}"),
            1 => format!("[2001:db8::{:x}]:{port}", a),
            2 => format!("2001:db8:{:x}::{:x}", self.rng.below(0xffff), a),
            3 => String::new(),
            4 => format!("192.0.2.{a}"),
            _ => format!("203.0.113.{a}"),
        }
    }

    fn common(
        &mut self,
        tenant: &TenantFacts<'_>,
        creation_time: String,
        (record_type, operation, workload): (u32, &str, &str),
        user_id: &str,
        user_type: u32,
    ) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::with_capacity(32);
        m.insert("CreationTime".into(), json!(creation_time));
        m.insert("Id".into(), json!(self.rng.guid()));
        m.insert("Operation".into(), json!(operation));
        m.insert("OrganizationId".into(), json!(tenant.tenant_id));
        m.insert("RecordType".into(), json!(record_type));
        m.insert("UserKey".into(), json!(format!("1003{}", self.rng.hex(12))));
        m.insert("UserType".into(), json!(user_type));
        m.insert("Version".into(), json!(1));
        m.insert("Workload".into(), json!(workload));
        m.insert("UserId".into(), json!(user_id));
        m
    }

    fn aad(&mut self, tenant: &TenantFacts<'_>, ct: String) -> Value {
        let user = self.user(tenant);
        if self.rng.below(4) == 0 {
            // Directory administration (RecordType 8, AzureActiveDirectory).
            let op = *self.rng.pick(&[
                "Add user.",
                "Update user.",
                "Add member to group.",
                "Reset user password.",
            ]);
            let mut m = self.common(tenant, ct, (8, op, "AzureActiveDirectory"), &user, 0);
            let target = self.user(tenant);
            let object_id = self.rng.guid();
            let actor_id = self.rng.guid();
            m.insert("ClientIP".into(), json!(self.client_ip()));
            m.insert("ObjectId".into(), json!(target));
            m.insert("ResultStatus".into(), json!("Success"));
            m.insert("AzureActiveDirectoryEventType".into(), json!(1));
            m.insert(
                "ExtendedProperties".into(),
                json!([
                    {"Name": "additionalDetails", "Value": "{\"UserType\":\"Member\"}"},
                    {"Name": "extendedAuditEventCategory", "Value": "User"}
                ]),
            );
            m.insert("ModifiedProperties".into(), json!([
                {"Name": "AccountEnabled", "NewValue": "[\r\n  true\r\n]", "OldValue": "[]"},
                {"Name": "DisplayName", "NewValue": format!("[\r\n  \"{}\"\r\n]", target), "OldValue": "[]"},
                {"Name": "Included Updated Properties", "NewValue": "AccountEnabled, DisplayName", "OldValue": ""}
            ]));
            m.insert(
                "Actor".into(),
                json!([
                    {"ID": user, "Type": 5},
                    {"ID": format!("1003{}", self.rng.hex(12)), "Type": 3},
                    {"ID": format!("User_{actor_id}"), "Type": 2},
                    {"ID": actor_id, "Type": 2},
                    {"ID": "User", "Type": 2}
                ]),
            );
            m.insert("ActorContextId".into(), json!(tenant.tenant_id));
            m.insert("InterSystemsId".into(), json!(self.rng.guid()));
            m.insert("IntraSystemId".into(), json!(self.rng.guid()));
            m.insert("SupportTicketId".into(), json!(""));
            m.insert(
                "Target".into(),
                json!([
                    {"ID": format!("User_{object_id}"), "Type": 2},
                    {"ID": object_id, "Type": 2},
                    {"ID": "User", "Type": 2},
                    {"ID": target, "Type": 5}
                ]),
            );
            m.insert("TargetContextId".into(), json!(tenant.tenant_id));
            return Value::Object(m);
        }
        // Sign-in (RecordType 15, AzureActiveDirectoryStsLogon).
        let failed = self.rng.below(5) == 0;
        let op = if failed {
            "UserLoginFailed"
        } else {
            "UserLoggedIn"
        };
        let mut m = self.common(tenant, ct, (15, op, "AzureActiveDirectory"), &user, 0);
        let ip = self.client_ip();
        let app = *self.rng.pick(&[
            "00000002-0000-0ff1-ce00-000000000000",
            "00000003-0000-0ff1-ce00-000000000000",
            "89bee1f7-5e6e-4d8a-9f3d-ecd601259da7",
            "4345a7b9-9a63-4910-a426-35363201d503",
        ]);
        let user_guid = self.rng.guid();
        m.insert("ClientIP".into(), json!(ip));
        m.insert("ObjectId".into(), json!(app));
        m.insert(
            "ResultStatus".into(),
            json!(if failed { "Failed" } else { "Success" }),
        );
        m.insert("AzureActiveDirectoryEventType".into(), json!(1));
        m.insert("ExtendedProperties".into(), json!([
            {"Name": "ResultStatusDetail", "Value": if failed { "Redirect" } else { "Success" }},
            {"Name": "UserAgent", "Value": *self.rng.pick(&USER_AGENTS)},
            {"Name": "UserAuthenticationMethod", "Value": "1"},
            {"Name": "RequestType", "Value": *self.rng.pick(&["OAuth2:Authorize", "OAuth2:Token", "Login:login", "SAS:ProcessAuth"])},
            {"Name": "KeepMeSignedIn", "Value": "False"}
        ]));
        m.insert("ModifiedProperties".into(), json!([]));
        m.insert(
            "Actor".into(),
            json!([{"ID": user_guid, "Type": 0}, {"ID": user, "Type": 5}]),
        );
        m.insert("ActorContextId".into(), json!(tenant.tenant_id));
        m.insert("ActorIpAddress".into(), json!(ip));
        m.insert("InterSystemsId".into(), json!(self.rng.guid()));
        m.insert("IntraSystemId".into(), json!(self.rng.guid()));
        m.insert("SupportTicketId".into(), json!(""));
        m.insert("Target".into(), json!([{"ID": app, "Type": 0}]));
        m.insert("TargetContextId".into(), json!(tenant.tenant_id));
        m.insert("ApplicationId".into(), json!(app));
        m.insert("DeviceProperties".into(), json!([
            {"Name": "OS", "Value": *self.rng.pick(&["Windows 10", "MacOs", "Ios", "Android"])},
            {"Name": "BrowserType", "Value": *self.rng.pick(&["Edge", "Chrome", "Firefox", "Safari"])},
            {"Name": "IsCompliant", "Value": "False"},
            {"Name": "SessionId", "Value": self.rng.guid()}
        ]));
        if failed {
            m.insert("ErrorNumber".into(), json!("50126"));
            m.insert("LogonError".into(), json!("InvalidUserNameOrPassword"));
        } else {
            m.insert("ErrorNumber".into(), json!("0"));
        }
        Value::Object(m)
    }

    fn exchange(&mut self, tenant: &TenantFacts<'_>, ct: String) -> Value {
        let user = self.user(tenant);
        if self.rng.below(3) == 0 {
            // Admin cmdlets (RecordType 1, ExchangeAdmin).
            let op = *self.rng.pick(&[
                "Set-Mailbox",
                "New-InboxRule",
                "Add-MailboxPermission",
                "Set-TransportRule",
            ]);
            let mut m = self.common(tenant, ct, (1, op, "Exchange"), &user, 2);
            let identity = format!(
                "NAMPR01A001.prod.outlook.com/Microsoft Exchange Hosted Organizations/{}/{}",
                tenant.domain,
                self.rng.pick(&USERS)
            );
            m.insert("ClientIP".into(), json!(self.client_ip()));
            m.insert("ObjectId".into(), json!(identity));
            m.insert(
                "ResultStatus".into(),
                json!(*self.rng.pick(&["True", "True", "False"])),
            );
            m.insert("ExternalAccess".into(), json!(self.rng.below(2) == 0));
            m.insert("OrganizationName".into(), json!(tenant.domain));
            m.insert(
                "OriginatingServer".into(),
                json!(format!(
                    "BN{}MB{:04} (15.20.{}.{:03})",
                    self.rng.below(9),
                    self.rng.below(9999),
                    7000 + self.rng.below(400),
                    self.rng.below(999)
                )),
            );
            m.insert("AppId".into(), json!(""));
            m.insert("ClientAppId".into(), json!(""));
            m.insert("Parameters".into(), json!([
                {"Name": "Identity", "Value": identity},
                {"Name": "ForwardingSmtpAddress", "Value": format!("smtp:{}", self.user(tenant))},
                {"Name": "DeliverToMailboxAndForward", "Value": "True"}
            ]));
            return Value::Object(m);
        }
        // Mailbox item operations (RecordType 2, ExchangeItem).
        let op = *self.rng.pick(&[
            "Send",
            "Create",
            "Update",
            "SoftDelete",
            "HardDelete",
            "MoveToDeletedItems",
        ]);
        let mut m = self.common(tenant, ct, (2, op, "Exchange"), &user, 0);
        let ip = self.client_ip();
        m.insert("ClientIP".into(), json!(ip));
        m.insert("ObjectId".into(), json!(""));
        m.insert("ResultStatus".into(), json!("Succeeded"));
        m.insert("ExternalAccess".into(), json!(false));
        m.insert("OrganizationName".into(), json!(tenant.domain));
        m.insert(
            "OriginatingServer".into(),
            json!(format!(
                "AM6PR01MB{:04} (15.20.{}.{:03})\n",
                self.rng.below(9999),
                7000 + self.rng.below(400),
                self.rng.below(999)
            )),
        );
        m.insert("ClientIPAddress".into(), json!(ip));
        m.insert(
            "ClientInfoString".into(),
            json!(*self.rng.pick(&[
                "Client=OWA;Action=ViaProxy",
                "Client=MSExchangeRPC",
                "Client=REST;Client=RESTSystem;;"
            ])),
        );
        m.insert("InternalLogonType".into(), json!(0));
        m.insert("LogonType".into(), json!(0));
        m.insert(
            "LogonUserSid".into(),
            json!(format!(
                "S-1-5-21-{}-{}-{}-{}",
                self.rng.below(4_000_000_000),
                self.rng.below(4_000_000_000),
                self.rng.below(4_000_000_000),
                self.rng.below(99_999_999)
            )),
        );
        m.insert("MailboxGuid".into(), json!(self.rng.guid()));
        m.insert("MailboxOwnerUPN".into(), json!(user));
        m.insert(
            "MailboxOwnerSid".into(),
            json!(format!(
                "S-1-5-21-{}-{}",
                self.rng.below(4_000_000_000),
                self.rng.below(99_999_999)
            )),
        );
        let item_id = format!("RgAAAAB{}AAAJ", self.rng.hex(40));
        m.insert("Item".into(), json!({
            "Id": item_id,
            "InternetMessageId": format!("<{}@NAMPR01MB{:04}.prod.outlook.com>", self.rng.hex(32), self.rng.below(9999)),
            "IsRecord": false,
            "ParentFolder": {"Id": format!("LgAAAAB{}AAAB", self.rng.hex(24)), "Path": *self.rng.pick(&["\\Inbox", "\\Sent Items", "\\Drafts"])},
            "SizeInBytes": 1024 + self.rng.below(200_000),
            "Subject": *self.rng.pick(&["Quarterly review", "Invoice 4711", "Team offsite", "Re: contract draft"])
        }));
        Value::Object(m)
    }

    fn sharepoint(&mut self, tenant: &TenantFacts<'_>, ct: String) -> Value {
        let user = self.user(tenant);
        let onedrive = self.rng.below(3) == 0;
        let host = tenant
            .domain
            .trim_end_matches(".onmicrosoft.com")
            .to_string();
        let site_url = if onedrive {
            format!(
                "https://{host}-my.sharepoint.com/personal/{}/",
                user.replace(['@', '.'], "_")
            )
        } else {
            format!(
                "https://{host}.sharepoint.com/sites/{}/",
                self.rng
                    .pick(&["Finance", "Marketing", "Engineering", "HR"])
            )
        };
        let workload = if onedrive { "OneDrive" } else { "SharePoint" };
        let (rt, op) = match self.rng.below(10) {
            0 => (
                14,
                *self
                    .rng
                    .pick(&["SharingSet", "AddedToGroup", "SharingInvitationCreated"]),
            ),
            1 => (4, "PageViewed"),
            _ => (
                6,
                *self.rng.pick(&[
                    "FileAccessed",
                    "FileModified",
                    "FileUploaded",
                    "FileDownloaded",
                    "FileDeleted",
                    "FileRenamed",
                ]),
            ),
        };
        let mut m = self.common(tenant, ct, (rt, op, workload), &user, 0);
        let ext = *self.rng.pick(&["docx", "xlsx", "pdf", "png", "pptx"]);
        let file = format!(
            "{} {}.{ext}",
            self.rng.pick(&["Budget", "Roadmap", "Notes", "Screenshot"]),
            self.rng.below(1000)
        );
        let folder = *self
            .rng
            .pick(&["Shared Documents", "Documents", "Shared Documents/Reports"]);
        m.insert("ClientIP".into(), json!(self.client_ip()));
        m.insert(
            "ObjectId".into(),
            json!(format!("{site_url}{folder}/{file}")),
        );
        m.insert("CorrelationId".into(), json!(self.rng.guid()));
        m.insert("EventSource".into(), json!("SharePoint"));
        m.insert(
            "ItemType".into(),
            json!(if rt == 4 {
                "Page"
            } else if rt == 14 {
                "Web"
            } else {
                "File"
            }),
        );
        m.insert("ListId".into(), json!(self.rng.guid()));
        m.insert("ListItemUniqueId".into(), json!(self.rng.guid()));
        m.insert("Site".into(), json!(self.rng.guid()));
        m.insert("UserAgent".into(), json!(*self.rng.pick(&USER_AGENTS)));
        m.insert("WebId".into(), json!(self.rng.guid()));
        m.insert("SiteUrl".into(), json!(site_url));
        m.insert("SourceFileExtension".into(), json!(ext));
        m.insert("SourceFileName".into(), json!(file));
        m.insert("SourceRelativeUrl".into(), json!(folder));
        if rt == 14 {
            m.insert("TargetUserOrGroupName".into(), json!(self.user(tenant)));
            m.insert(
                "TargetUserOrGroupType".into(),
                json!(*self.rng.pick(&["Member", "Guest", "SecurityGroup"])),
            );
            m.insert(
                "EventData".into(),
                json!("<PermissionsGranted>Contribute</PermissionsGranted>"),
            );
        }
        Value::Object(m)
    }

    fn general(&mut self, tenant: &TenantFacts<'_>, ct: String) -> Value {
        // Copilot and AI-app interactions: about one record in ten of Audit.General.
        if self.rng.below(10) == 0 {
            return self.ai_interaction(tenant, ct);
        }
        let user = self.user(tenant);
        match self.rng.below(4) {
            0 => {
                let mut m = self.common(tenant, ct, (20, "ViewReport", "PowerBI"), &user, 0);
                m.insert("ClientIP".into(), json!(self.client_ip()));
                m.insert("ObjectId".into(), json!("Sales Overview"));
                m.insert("UserAgent".into(), json!(*self.rng.pick(&USER_AGENTS)));
                m.insert("Activity".into(), json!("ViewReport"));
                m.insert("ItemName".into(), json!("Sales Overview"));
                m.insert("WorkSpaceName".into(), json!("Finance"));
                m.insert("ReportId".into(), json!(self.rng.guid()));
                m.insert("WorkspaceId".into(), json!(self.rng.guid()));
                m.insert("IsSuccess".into(), json!(true));
                m.insert("RequestId".into(), json!(self.rng.guid()));
                m.insert("ActivityId".into(), json!(self.rng.guid()));
                Value::Object(m)
            }
            1 => {
                let mut m = self.common(
                    tenant,
                    ct,
                    (
                        52,
                        "SearchDataInsightsSubscription",
                        "SecurityComplianceCenter",
                    ),
                    "Service Account",
                    5,
                );
                m.insert("UserKey".into(), json!("Service Account"));
                m.insert("DataType".into(), json!("DataInsightsSubscription"));
                Value::Object(m)
            }
            _ => {
                let op = *self.rng.pick(&[
                    "TeamCreated",
                    "MemberAdded",
                    "ChannelAdded",
                    "TeamsSessionStarted",
                    "MessageSent",
                ]);
                let mut m = self.common(tenant, ct, (25, op, "MicrosoftTeams"), &user, 0);
                let team = *self
                    .rng
                    .pick(&["Project Falcon", "Sales EMEA", "All Company"]);
                m.insert("ClientIP".into(), json!(self.client_ip()));
                m.insert("TeamName".into(), json!(team));
                m.insert(
                    "TeamGuid".into(),
                    json!(format!(
                        "19:{}@thread.tacv2",
                        self.rng.hex(32).to_lowercase()
                    )),
                );
                m.insert("AADGroupId".into(), json!(self.rng.guid()));
                m.insert("CommunicationType".into(), json!("Team"));
                m.insert("ItemName".into(), json!(team));
                if op == "MemberAdded" {
                    m.insert(
                        "Members".into(),
                        json!([{"DisplayName": "New Member", "Role": 1, "UPN": self.user(tenant)}]),
                    );
                }
                if op == "ChannelAdded" {
                    m.insert("ChannelName".into(), json!("General"));
                    m.insert("ChannelType".into(), json!("Standard"));
                }
                Value::Object(m)
            }
        }
    }

    /// A Copilot or AI-application interaction, shaped as Microsoft's Copilot schema and its
    /// examples: `CopilotEventData` with `AppHost`, `Contexts`, `ThreadId`, `Messages`
    /// (a prompt then its response, `isPrompt`), `AccessedResources` (with sensitivity labels),
    /// `AISystemPlugin` and `ModelTransparencyDetails`; `ClientRegion` beside it.
    fn ai_interaction(&mut self, tenant: &TenantFacts<'_>, ct: String) -> Value {
        let user = self.user(tenant);
        // (RecordType, Operation, AppHost): Microsoft 365 Copilot in its apps, Copilot in a Teams
        // meeting (Facilitator), a third-party AI app, a connected AI app.
        let (rt, op, host) = *self.rng.pick(&[
            (261, "CopilotInteraction", "Word"),
            (261, "CopilotInteraction", "Bing"),
            (261, "CopilotInteraction", "Teams"),
            (261, "CopilotInteraction", "Outlook"),
            (261, "CopilotInteraction", "Excel"),
            (334, "TeamCopilotInteraction", "Teams"),
            (284, "AIAppInteraction", "ChatGPT Enterprise"),
            (328, "ConnectedAIAppInteraction", "Copilot Studio"),
        ]);
        let mut m = self.common(tenant, ct, (rt, op, "Copilot"), &user, 0);
        m.insert("ClientIP".into(), json!(self.client_ip()));
        m.insert(
            "ClientRegion".into(),
            json!(*self.rng.pick(&["US", "GB", "DE", "IN"])),
        );
        let site = tenant.domain.split('.').next().unwrap_or("emu").to_owned();
        let (file, ext) = *self.rng.pick(&[
            ("Quarterly Plan", "docx"),
            ("Budget 2026", "xlsx"),
            ("Board Review", "pptx"),
            ("Supplier Contract", "pdf"),
        ]);
        let doc_url = format!(
            "https://{site}.sharepoint.com/sites/Finance/_layouts/15/Doc.aspx?sourcedoc=%7B{}%7D&file={}.{ext}&action=default&mobileredirect=true",
            self.rng.guid().to_uppercase(),
            file.replace(' ', "%20"),
        );
        let thread = format!("19:{}@thread.v2", self.rng.hex(32).to_lowercase());
        let contexts = match host {
            "Word" | "Excel" => json!([{"Id": doc_url, "Type": ext}]),
            "Teams" => {
                json!([{"Id": format!("19:meeting_{}@thread.v2", self.rng.hex(24).to_lowercase()), "Type": "TeamsMeeting"}])
            }
            "ChatGPT Enterprise" => json!([{"Id": "https://chatgpt.com/", "Type": "Web"}]),
            _ => json!([]),
        };
        // Message ids are the epoch milliseconds of the prompt and of its response.
        let t0 = 1_765_000_000_000 + self.rng.below(10_000_000_000);
        let turns = 1 + self.rng.below(3);
        let mut messages = Vec::new();
        for i in 0..turns {
            let p = t0 + i * 5_000;
            messages.push(json!({"Id": p.to_string(), "isPrompt": true}));
            messages.push(
                json!({"Id": (p + 400 + self.rng.below(2_000)).to_string(), "isPrompt": false}),
            );
        }
        let mut resources = Vec::new();
        if host != "Word" && self.rng.below(2) == 0 {
            let id = self.rng.hex(40);
            let mut r = json!({
                "Action": "Read",
                "Id": id,
                "Name": format!("{file}.{ext}"),
                "SiteUrl": format!("https://{site}.sharepoint.com/sites/Finance/Shared%20Documents/{}.{ext}?web=1", file.replace(' ', "%20")),
                "Type": ext,
                "listItemUniqueId": id,
            });
            if self.rng.below(2) == 0 {
                r["SensitivityLabelId"] = json!(*self.rng.pick(&[
                    "f41ab342-8706-4188-bd11-ebb85995028c",
                    "4e7a2b3c-9d1e-4f5a-8b6c-7d8e9f0a1b2c",
                ]));
            }
            resources.push(r);
        }
        let plugins = if host == "Bing" {
            json!([{"Id": "BingWebSearch", "Name": "BuiltIn"}])
        } else {
            json!([])
        };
        let models = if rt == 284 {
            json!([{"ModelProviderName": "OpenAI", "ModelName": "gpt-4o", "ModelVersion": "2024-08-06"}])
        } else if host == "Bing" {
            json!([{"ModelName": "DEEP_LEO"}])
        } else {
            json!([])
        };
        m.insert(
            "CopilotEventData".into(),
            json!({
                "AISystemPlugin": plugins,
                "AccessedResources": resources,
                "AppHost": host,
                "Contexts": contexts,
                "MessageIds": [],
                "Messages": messages,
                "ModelTransparencyDetails": models,
                "ThreadId": thread,
            }),
        );
        Value::Object(m)
    }

    fn dlp(&mut self, tenant: &TenantFacts<'_>, ct: String) -> Value {
        let exchange = self.rng.below(2) == 0;
        let (rt, workload, user, op) = if exchange {
            (13, "Exchange", "DlpAgent", "DlpRuleMatch")
        } else {
            (
                11,
                *self.rng.pick(&["SharePoint", "OneDrive"]),
                "DlpPolicyEventBasedAssistantOneDriveForBusiness",
                "DLPRuleMatch",
            )
        };
        let mut m = self.common(tenant, ct, (rt, op, workload), user, 4);
        let incident = self.rng.guid();
        m.insert("IncidentId".into(), json!(incident));
        m.insert("SensitiveInfoDetectionIsIncluded".into(), json!(false));
        m.insert(
            "PolicyDetails".into(),
            json!([{
                "PolicyId": self.rng.guid(),
                "PolicyName": *self.rng.pick(&["U.S. Financial Data", "GDPR", "PCI DSS"]),
                "Rules": [{
                    "RuleId": self.rng.guid(),
                    "RuleName": "High volume of content detected",
                    "RuleMode": "Enable",
                    "Severity": *self.rng.pick(&["Low", "Medium", "High"]),
                    "Actions": ["NotifyUser", "GenerateIncidentReport"],
                    "ActionParameters": ["GenerateIncidentReport:SiteAdmin"],
                    "ConditionsMatched": {"SensitiveInformation": [{
                        "Count": 1 + self.rng.below(20),
                        "Confidence": 75 + self.rng.below(25),
                        "SensitiveType": "50842eb7-edc8-4019-85dd-5a5c1f2bb085"
                    }]}
                }]
            }]),
        );
        let owner = self.user(tenant);
        if exchange {
            let msg = format!(
                "<{}@NAMPR01MB{:04}.prod.outlook.com>",
                self.rng.hex(32),
                self.rng.below(9999)
            );
            m.insert("ObjectId".into(), json!(msg));
            m.insert("ExchangeMetaData".into(), json!({
                "From": owner, "To": ["partner@example.org"], "CC": [], "BCC": [],
                "FileSize": 1000 + self.rng.below(100_000), "MessageID": msg, "RecipientCount": 1,
                "Sent": m.get("CreationTime").cloned().unwrap_or(Value::Null),
                "Subject": "Customer list", "UniqueID": self.rng.guid()
            }));
        } else {
            let unique = self.rng.guid();
            m.insert("ObjectId".into(), json!(unique));
            m.insert("SharePointMetaData".into(), json!({
                "From": owner.to_uppercase(), "FileName": "Customers.xlsx",
                "FilePathUrl": format!("https://{}.sharepoint.com/sites/Finance/Shared%20Documents/Customers.xlsx", tenant.domain.trim_end_matches(".onmicrosoft.com")),
                "FileOwner": owner, "ItemCreationTime": m.get("CreationTime").cloned().unwrap_or(Value::Null),
                "ItemLastModifiedTime": m.get("CreationTime").cloned().unwrap_or(Value::Null),
                "SiteCollectionGuid": self.rng.guid(),
                "SiteCollectionUrl": format!("https://{}.sharepoint.com/sites/Finance", tenant.domain.trim_end_matches(".onmicrosoft.com")),
                "UniqueID": unique
            }));
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_records() {
        let t = TenantFacts::new("6d3f1c2a-5b7e-4e8f-9a0b-1c2d3e4f5a6b");
        let now = Utc::now();
        for ct in ContentType::ALL {
            let a = Generator::new(7).record(ct, &t, now);
            let b = Generator::new(7).record(ct, &t, now);
            assert_eq!(a, b);
            assert_eq!(a["OrganizationId"], t.tenant_id);
            assert!(a["CreationTime"].as_str().is_some_and(|s| s.len() == 19));
        }
    }

    #[test]
    fn general_carries_ai_interactions() {
        let t = TenantFacts::new("6d3f1c2a-5b7e-4e8f-9a0b-1c2d3e4f5a6b");
        let mut g = Generator::new(3);
        let records: Vec<Value> = (0..2000)
            .map(|_| g.record(ContentType::General, &t, Utc::now()))
            .collect();
        let ai: Vec<&Value> = records
            .iter()
            .filter(|r| r.get("CopilotEventData").is_some())
            .collect();
        assert!((100..=300).contains(&ai.len()), "{} of 2000", ai.len());
        for r in &ai {
            assert!([261, 284, 328, 334].contains(&r["RecordType"].as_u64().unwrap()));
            let messages = r["CopilotEventData"]["Messages"].as_array().unwrap();
            assert!(!messages.is_empty() && messages.len() % 2 == 0);
            assert_eq!(messages[0]["isPrompt"], true);
            assert_eq!(messages[1]["isPrompt"], false);
        }
        for rt in [261, 284, 328, 334] {
            assert!(ai.iter().any(|r| r["RecordType"] == rt), "{rt}");
        }
    }

    #[test]
    fn guids_are_well_formed() {
        let mut r = Prng::new(1);
        for _ in 0..100 {
            let g = r.guid();
            assert!(uuid::Uuid::parse_str(&g).is_ok(), "{g}");
        }
    }
}
