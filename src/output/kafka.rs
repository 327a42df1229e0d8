//! Kafka: each event becomes one record (value = the JSON event, key = the record's `Id` by default,
//! timestamp = the record's own time, headers `tenant`, `content_type`, `content_id`), produced to
//! the topic named by the template with acks = all. A batch is accepted when every partition it
//! touched acknowledged its records.
//!
//! Records are spread over the topic's partitions by a hash of their key (records without a key go
//! to a partition chosen by the blob's content id, the same for every batch of the blob), so one
//! record always lands in one partition; the order of records within a partition follows the blob. A failed produce fails the whole batch,
//! which is re-sent: partitions that had already acknowledged get those records again, so consumers
//! should deduplicate on `o365.audit.Id` (the key).
//!
//! Errors: connection failures, timeouts and transient broker errors (leader changes, not enough
//! replicas, throttling) are `Retryable`; a record too large, an invalid or unauthorised topic, a
//! refused SASL login and a broker certificate that does not verify are `Fatal`. Unknown topics are
//! retried until `timeout` (brokers may create them) and then `Retryable`.
//!
//! TLS (`tls: true`): rustls with the aws-lc-rs provider, the system's trust roots plus `ca_file`,
//! an optional client certificate, and `server_name` to check every broker's certificate against
//! one name. SASL runs inside the TLS connection when both are set.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use tokio::sync::Mutex;

use serde::{Deserialize, Deserializer};

use super::syslog::event_time;
use super::template::Template;
use super::{Batch, Output, OutputError, SendReport};
use crate::core::Secret;
use crate::core::settings::{Section, de};

/// Whether Kafka takes `name` as a topic.
pub fn topic_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Kafka topic when none is configured.
pub const DEFAULT_TOPIC: &str = "o365-{content_type}";

/// `type: kafka`: acknowledged produce (acks = all).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaOutputConfig {
    /// Bootstrap brokers, `host:port`.
    #[serde(deserialize_with = "de::words")]
    pub brokers: Vec<String>,
    /// Topic name, a [`Template`] (`{content_type}`, `{tenant_id}`, `{tenant_name}`, and the
    /// event's time `%Y %m %d %H`).
    pub topic: Template,
    pub key: KafkaKey,
    pub compression: KafkaCompression,
    /// SASL authentication (with `username` and `password`), resolved into `sasl` by the check.
    pub sasl_mechanism: Option<SaslMechanism>,
    #[serde(deserialize_with = "de::opt::text")]
    pub username: Option<String>,
    pub password: Option<Secret>,
    #[serde(skip)]
    pub sasl: Option<KafkaSasl>,
    /// `tls: true` with the keys of [`KafkaTls`] beside it, resolved into `tls` by the check.
    #[serde(rename = "tls", deserialize_with = "de::flag")]
    pub tls_on: bool,
    #[serde(deserialize_with = "de::opt::path")]
    pub ca_file: Option<std::path::PathBuf>,
    #[serde(deserialize_with = "de::opt::path")]
    pub client_cert: Option<std::path::PathBuf>,
    #[serde(deserialize_with = "de::opt::path")]
    pub client_key: Option<std::path::PathBuf>,
    #[serde(deserialize_with = "de::opt::text")]
    pub server_name: Option<String>,
    /// `None`: plaintext connections.
    #[serde(skip)]
    pub tls: Option<KafkaTls>,
    /// Deadline of one produce (connecting and retrying included).
    #[serde(deserialize_with = "de::duration")]
    pub timeout: std::time::Duration,
}

impl Default for KafkaOutputConfig {
    fn default() -> Self {
        KafkaOutputConfig {
            brokers: Vec::new(),
            topic: Template::parse(DEFAULT_TOPIC).unwrap_or_else(|_| unreachable!()),
            key: KafkaKey::Id,
            compression: KafkaCompression::None,
            sasl_mechanism: None,
            username: None,
            password: None,
            sasl: None,
            tls_on: false,
            tls: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            server_name: None,
            timeout: super::DEFAULT_TIMEOUT,
        }
    }
}

/// Compression of Kafka record batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaCompression {
    #[default]
    None,
    Gzip,
    Snappy,
}

impl<'de> Deserialize<'de> for KafkaCompression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use KafkaCompression::*;
        let choices = [("none", None), ("gzip", Gzip), ("snappy", Snappy)];
        de::choice(d, &choices, "a supported compression")
    }
}

/// What the Kafka record key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaKey {
    /// The record's `Id` (same record → same partition, compaction-friendly).
    #[default]
    Id,
    /// No key.
    None,
}

impl<'de> Deserialize<'de> for KafkaKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::choice(
            d,
            &[("id", KafkaKey::Id), ("none", KafkaKey::None)],
            "a key choice",
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl<'de> Deserialize<'de> for SaslMechanism {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use SaslMechanism::*;
        let choices = [
            ("PLAIN", Plain),
            ("SCRAM-SHA-256", ScramSha256),
            ("SCRAM-SHA-512", ScramSha512),
            ("plain", Plain),
            ("scram-sha-256", ScramSha256),
            ("scram-sha-512", ScramSha512),
        ];
        de::choice(d, &choices, "a supported SASL mechanism")
    }
}

/// TLS to the brokers: the system's trust roots plus `ca_file`, and an optional client
/// certificate for brokers that want mutual TLS.
#[derive(Debug, Clone, Default)]
pub struct KafkaTls {
    /// Extra trust root (PEM).
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate chain and its private key (PEM), set together.
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
    /// Name checked in every broker's certificate instead of the host it is reached at (brokers
    /// advertised by IP address, or behind a name the certificate does not carry).
    pub server_name: Option<String>,
}

/// SASL authentication; the password is never logged.
#[derive(Debug, Clone)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: Secret,
}

impl KafkaOutputConfig {
    /// Checks the meaning of the settings and resolves [`KafkaOutputConfig::sasl`].
    pub fn check(&mut self, s: &mut Section) {
        let fix =
            "list the bootstrap brokers as host:port, e.g. `brokers: kafka-1:9092 kafka-2:9092`";
        if !s.given("brokers") {
            s.missing("brokers", fix);
        } else if s.usable("brokers") && self.brokers.is_empty() {
            s.problem("brokers", "is empty", fix);
        }
        for b in self.brokers.iter().filter(|b| !super::is_host_port(b)) {
            s.problem("brokers", format!("`{b}` is not host:port"), fix);
        }
        if !topic_ok(&self.topic.sample()) {
            s.problem(
                "topic",
                "is not a valid Kafka topic (letters, digits, `.`, `_`, `-`; at most 249) once its placeholders are filled",
                format!("e.g. `{DEFAULT_TOPIC}`"),
            );
        }
        let sasl_keys = ["sasl_mechanism", "username", "password"];
        if sasl_keys.iter().any(|k| s.given(k)) {
            let missing: Vec<&str> = sasl_keys.into_iter().filter(|k| !s.given(k)).collect();
            for k in missing {
                s.missing_as(
                    k,
                    "is missing while other SASL keys are set",
                    "set sasl_mechanism, username and password together",
                );
            }
        }
        self.sasl = match (self.sasl_mechanism, &self.username, &self.password) {
            (Some(mechanism), Some(username), Some(password)) => Some(KafkaSasl {
                mechanism,
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        };
        self.check_tls(s);
        super::check_timeout(&mut self.timeout, s);
    }

    /// The TLS keys without `tls: true` are a problem rather than silently plaintext.
    fn check_tls(&mut self, s: &mut Section) {
        let keys = [
            ("ca_file", self.ca_file.is_some()),
            ("client_cert", self.client_cert.is_some()),
            ("client_key", self.client_key.is_some()),
            ("server_name", self.server_name.is_some()),
        ];
        if !self.tls_on {
            for (key, _) in keys.into_iter().filter(|(_, set)| *set) {
                s.problem(
                    key,
                    "only applies with `tls: true`",
                    "set `tls: true` (the brokers' TLS listener), or remove it",
                );
            }
            return;
        }
        for (key, path) in [
            ("ca_file", &self.ca_file),
            ("client_cert", &self.client_cert),
        ] {
            if let Some(p) = path {
                s.pem_certificates(key, p);
            }
        }
        if let Some(p) = &self.client_key {
            s.pem_private_key("client_key", p);
        }
        for (given, missing, what) in [
            (
                "client_cert",
                "client_key",
                "the client certificate's private key (PEM)",
            ),
            ("client_key", "client_cert", "the client certificate (PEM)"),
        ] {
            if s.given(given) && !s.given(missing) {
                s.missing_as(
                    missing,
                    format!("is missing while {given} is set"),
                    format!("set {what}"),
                );
            }
        }
        if let Some(name) = &mut self.server_name {
            *name = name.trim().to_owned();
            if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
                s.problem(
                    "server_name",
                    format!("`{name}` is not a DNS name or IP address"),
                    "give the name the brokers' certificates carry, e.g. kafka.example.com",
                );
            }
        }
        self.tls = Some(KafkaTls {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            server_name: self.server_name.clone(),
        });
    }
}

pub struct KafkaOutput {
    name: String,
    cfg: KafkaOutputConfig,
    /// Built once at open: a missing or unreadable certificate file fails the start, not each send.
    tls: Option<Arc<rustls::ClientConfig>>,
    state: Mutex<State>,
}

/// The connection and what it learnt; dropped as a whole after a failure so the next send starts
/// from the bootstrap brokers again.
#[derive(Default)]
struct State {
    client: Option<Arc<Client>>,
    partitions: HashMap<String, Vec<i32>>,
    clients: HashMap<(String, i32), Arc<PartitionClient>>,
}

enum Failure {
    Retry(String),
    Fatal(String),
}

impl KafkaOutput {
    /// Prepares the output; brokers are contacted on the first send.
    pub fn open(name: &str, cfg: &KafkaOutputConfig) -> Result<KafkaOutput, OutputError> {
        if cfg.brokers.is_empty() {
            return Err(OutputError::setup(
                name,
                "brokers",
                "is empty",
                "list the bootstrap brokers as host:port, e.g. `brokers: kafka-1:9092 kafka-2:9092`",
            ));
        }
        let tls = match &cfg.tls {
            None => None,
            Some(t) => {
                // Any code of this process that builds a provider-less rustls config gets aws-lc-rs.
                crate::server::install_crypto_provider();
                let identity = match (&t.client_cert, &t.client_key) {
                    (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                    _ => None,
                };
                let config = super::tls::client_config_for(
                    t.ca_file.as_deref(),
                    identity,
                    &[],
                    t.server_name.as_deref(),
                )
                .map_err(|(key, e)| {
                    OutputError::setup(
                        name,
                        key,
                        format!("cannot be used: {e}"),
                        super::tls::tls_fix(key),
                    )
                })?;
                Some(Arc::new(config))
            }
        };
        Ok(KafkaOutput {
            name: name.to_string(),
            cfg: cfg.clone(),
            tls,
            state: Mutex::new(State::default()),
        })
    }

    /// The topic of an event of `batch` (`json`: its time, for a template that has one).
    pub fn topic_for(&self, batch: &Batch, json: &[u8]) -> String {
        let time = match self.cfg.topic.uses_time() {
            true => event_time(json).unwrap_or_else(chrono::Utc::now),
            false => chrono::DateTime::UNIX_EPOCH,
        };
        self.cfg.topic.render(&batch.fields(), time)
    }

    async fn client(&self, state: &mut State) -> Result<Arc<Client>, Failure> {
        if let Some(c) = &state.client {
            return Ok(c.clone());
        }
        // Inside our own deadline, so the last connection error (refused certificate, refused
        // login) is reported rather than a bare timeout: the last attempt keeps a third of the
        // timeout (at most 5 s), enough for a SCRAM exchange on a busy host.
        let margin = (self.cfg.timeout / 3).min(std::time::Duration::from_secs(5));
        let mut b = ClientBuilder::new(self.cfg.brokers.clone())
            .client_id("o365-collector")
            .backoff_config(rskafka::BackoffConfig {
                init_backoff: std::time::Duration::from_millis(50),
                max_backoff: std::time::Duration::from_secs(2),
                base: 2.0,
                deadline: Some(self.cfg.timeout.saturating_sub(margin)),
            });
        if let Some(tls) = &self.tls {
            b = b.tls_config(tls.clone());
        }
        if let Some(s) = &self.cfg.sasl {
            let creds = Credentials::new(s.username.clone(), s.password.expose().to_owned());
            b = b.sasl_config(match s.mechanism {
                SaslMechanism::Plain => SaslConfig::Plain(creds),
                SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(creds),
                SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(creds),
            });
        }
        let client = Arc::new(self.timed(b.build()).await?);
        state.client = Some(client.clone());
        Ok(client)
    }

    async fn timed<T>(&self, f: impl Future<Output = Result<T, KafkaError>>) -> Result<T, Failure> {
        match tokio::time::timeout(self.cfg.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(Failure::Retry(format!(
                "no answer within {}",
                crate::core::format_duration(self.cfg.timeout)
            ))),
        }
    }

    async fn partitions(&self, state: &mut State, topic: &str) -> Result<Vec<i32>, Failure> {
        if let Some(p) = state.partitions.get(topic) {
            return Ok(p.clone());
        }
        let client = self.client(state).await?;
        let topics = self.timed(client.list_topics()).await?;
        let parts: Vec<i32> = topics
            .into_iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.into_iter().collect())
            .unwrap_or_default();
        if parts.is_empty() {
            return Err(Failure::Retry(format!(
                "topic {topic} does not exist (create it, or let the brokers auto-create topics)"
            )));
        }
        state.partitions.insert(topic.to_owned(), parts.clone());
        Ok(parts)
    }

    async fn partition_client(
        &self,
        state: &mut State,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<PartitionClient>, Failure> {
        let k = (topic.to_owned(), partition);
        if let Some(c) = state.clients.get(&k) {
            return Ok(c.clone());
        }
        let client = self.client(state).await?;
        let pc = Arc::new(
            self.timed(client.partition_client(topic, partition, UnknownTopicHandling::Retry))
                .await?,
        );
        state.clients.insert(k, pc.clone());
        Ok(pc)
    }

    async fn produce(&self, state: &mut State, batch: &Batch) -> Result<SendReport, Failure> {
        // One topic for the batch, unless the template holds the time: then each event's own.
        let fixed = (!self.cfg.topic.uses_time()).then(|| self.topic_for(batch, &[]));
        let mut groups: BTreeMap<(String, i32), Vec<Record>> = BTreeMap::new();
        // The partitions of the topic of the event before (a batch's events share one or a few).
        let mut current: Option<(String, Vec<i32>)> = None;
        for e in &batch.events {
            let topic = match &fixed {
                Some(t) => t.clone(),
                None => self.topic_for(batch, &e.json),
            };
            let parts = match &current {
                Some((t, parts)) if *t == topic => parts,
                _ => {
                    let parts = self.partitions(state, &topic).await?;
                    &current.insert((topic.clone(), parts)).1
                }
            };
            let key = match self.cfg.key {
                KafkaKey::Id => record_id(&e.json).map(String::into_bytes),
                KafkaKey::None => None,
            };
            let slot = hash_of(key.as_deref().unwrap_or(batch.content_id.as_bytes()));
            let partition = parts[(slot % parts.len() as u64) as usize];
            let mut headers = BTreeMap::new();
            headers.insert("tenant".to_owned(), batch.tenant_id.as_bytes().to_vec());
            headers.insert(
                "content_type".to_owned(),
                batch.content_type.as_bytes().to_vec(),
            );
            headers.insert(
                "content_id".to_owned(),
                batch.content_id.as_bytes().to_vec(),
            );
            groups.entry((topic, partition)).or_default().push(Record {
                key,
                value: Some(e.json.clone()),
                headers,
                timestamp: event_time(&e.json).unwrap_or_else(chrono::Utc::now),
            });
        }
        let compression = match self.cfg.compression {
            KafkaCompression::None => Compression::NoCompression,
            KafkaCompression::Gzip => Compression::Gzip,
            KafkaCompression::Snappy => Compression::Snappy,
        };
        let mut produces = Vec::with_capacity(groups.len());
        for ((topic, partition), records) in groups {
            let pc = self.partition_client(state, &topic, partition).await?;
            produces.push(async move { self.timed(pc.produce(records, compression)).await });
        }
        // Partitions have their own leaders: wait for all acknowledgements at once.
        futures_util::future::try_join_all(produces).await?;
        Ok(SendReport {
            written: batch.events.len(),
            duplicates: 0,
        })
    }
}

impl Output for KafkaOutput {
    async fn send(&self, batch: &Batch) -> Result<SendReport, OutputError> {
        if batch.events.is_empty() {
            return Ok(SendReport::default());
        }
        let mut state = self.state.lock().await;
        match self.produce(&mut state, batch).await {
            Ok(r) => Ok(r),
            Err(f) => {
                // Start over from the bootstrap brokers next time (leaders may have moved).
                *state = State::default();
                Err(match f {
                    Failure::Retry(reason) => OutputError::Retryable {
                        output: self.name.clone(),
                        reason: format!("kafka: {reason}"),
                    },
                    Failure::Fatal(reason) => OutputError::Fatal {
                        output: self.name.clone(),
                        reason: format!("kafka: {reason}"),
                    },
                })
            }
        }
    }
}

/// Broker answers that the same batch will never pass are fatal; the rest is worth a retry.
fn classify(e: &KafkaError) -> Failure {
    // The error's Display can include the request context; keep only the kind and the message.
    match e {
        KafkaError::ServerError {
            protocol_error,
            error_message,
            ..
        } => {
            let text = match error_message {
                Some(m) => format!("{protocol_error}: {m}"),
                None => protocol_error.to_string(),
            };
            match protocol_error {
                ProtocolError::MessageTooLarge
                | ProtocolError::RecordListTooLarge
                | ProtocolError::InvalidTopicException
                | ProtocolError::TopicAuthorizationFailed
                | ProtocolError::InvalidRecord
                | ProtocolError::CorruptMessage
                | ProtocolError::UnsupportedCompressionType
                | ProtocolError::SaslAuthenticationFailed
                | ProtocolError::ClusterAuthorizationFailed => Failure::Fatal(text),
                _ => Failure::Retry(text),
            }
        }
        other => {
            let text = other.to_string();
            // rskafka keeps the underlying connection errors only as text (its retry loop collects
            // them); the rustls and SASL messages inside are stable enough to tell a refusal from
            // an outage. Neither carries the password: SASL errors name the step that failed.
            if text.contains("invalid peer certificate") {
                Failure::Fatal(format!(
                    "TLS: the broker's certificate was refused (check ca_file / server_name): {}",
                    tls_reason(&text)
                ))
            } else if text.contains("Sasl handshake failed")
                && !text.contains("Sasl handshake failed: Request error")
            {
                // Refused by the broker (wrong password, unknown mechanism); a connection lost
                // during the handshake is a `Request error` and worth a retry.
                Failure::Fatal(format!("SASL login refused: {text}"))
            } else {
                Failure::Retry(text)
            }
        }
    }
}

/// The rustls part of a connection error: from "invalid peer certificate" to the end of its line.
fn tls_reason(text: &str) -> &str {
    let start = text.find("invalid peer certificate").unwrap_or(0);
    let rest = &text[start..];
    rest.split('\n').next().unwrap_or(rest)
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// `o365.audit.Id` (mapped), `event.id` (format ecs) or `Id` (raw) as text.
fn record_id(json: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Ids {
        #[serde(rename = "o365.audit.Id")]
        mapped: Option<serde_json::Value>,
        #[serde(rename = "event.id")]
        ecs: Option<serde_json::Value>,
        #[serde(rename = "Id")]
        raw: Option<serde_json::Value>,
    }
    let ids: Ids = serde_json::from_slice(json).ok()?;
    match ids.mapped.or(ids.ecs).or(ids.raw)? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_topics() {
        assert_eq!(record_id(br#"{"o365.audit.Id":"a"}"#).as_deref(), Some("a"));
        assert_eq!(record_id(br#"{"event.id":"e"}"#).as_deref(), Some("e"));
        assert_eq!(record_id(br#"{"Id":"b"}"#).as_deref(), Some("b"));
        assert_eq!(record_id(br#"{"x":1}"#), None);
        let cfg = KafkaOutputConfig {
            brokers: vec!["127.0.0.1:9092".into()],
            topic: Template::parse("o365-{content_type}-{tenant_name}-%Y").unwrap(),
            timeout: std::time::Duration::from_secs(1),
            ..KafkaOutputConfig::default()
        };
        let out = KafkaOutput::open("k", &cfg).unwrap();
        let b = Batch {
            tenant_id: "t".into(),
            content_type: "Audit.Exchange".into(),
            ..Batch::default()
        };
        let e = br#"{"@timestamp":"2020-02-10T15:13:13.000Z"}"#;
        assert_eq!(out.topic_for(&b, e), "o365-Audit.Exchange-t-2020");
        let b = Batch {
            tenant_name: Some("contoso".into()),
            ..b
        };
        assert_eq!(out.topic_for(&b, e), "o365-Audit.Exchange-contoso-2020");
    }
}
