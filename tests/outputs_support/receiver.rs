//! One real receiver of each output type behind one interface, for the end-to-end tests that run
//! the same scenario against every output (an outage, Microsoft's duplicates).

use std::path::PathBuf;

use super::http::HttpReceiver;
use super::{Rsyslog, Tansu, id_of, kafka_values};

/// The kafka output's default topic for `Audit.General`; one partition keeps the order
/// observable.
pub const KAFKA_TOPIC: &str = "o365-Audit.General";

pub enum Receiver {
    /// The file output: what a collector wrote to this path (and its rotated files).
    File(PathBuf),
    Syslog(Rsyslog),
    /// The http output in one of its formats (`ndjson`, `elasticsearch`, `splunk_hec`).
    Http(HttpReceiver, &'static str),
    /// A tansu broker (with `durable`, keeping its data in a local S3 server across restarts).
    Kafka(Tansu),
}

impl Receiver {
    /// The `outputs:` entry named `siem` (indented under `outputs:`) that sends to this receiver.
    pub fn output_yaml(&self) -> String {
        match self {
            Receiver::File(path) => {
                format!("  siem:\n    type: file\n    path: {}\n", path.display())
            }
            Receiver::Syslog(r) => format!(
                "  siem:\n    type: syslog\n    address: '{}'\n    transport: tcp\n    timeout: 3s\n",
                r.address()
            ),
            Receiver::Http(r, format) => format!(
                "  siem:\n    type: http\n    format: {format}\n    url: '{}'\n    timeout: 3s\n{}",
                r.url(""),
                // HEC needs its token.
                if *format == "splunk_hec" {
                    "    token: test-hec-token\n"
                } else {
                    ""
                }
            ),
            Receiver::Kafka(t) => format!(
                "  siem:\n    type: kafka\n    brokers: '{}'\n    timeout: 3s\n",
                t.address()
            ),
        }
    }

    pub fn stop(&mut self) {
        match self {
            Receiver::File(_) => {}
            Receiver::Syslog(r) => r.stop(),
            Receiver::Http(r, _) => r.stop(),
            Receiver::Kafka(t) => t.stop(),
        }
    }

    pub fn restart(&mut self) {
        match self {
            Receiver::File(_) => {}
            Receiver::Syslog(r) => r.restart(),
            Receiver::Http(r, _) => r.restart(),
            Receiver::Kafka(t) => t.restart(),
        }
    }

    /// Record ids at the destination, in the order they arrived (Elasticsearch: by `_id`).
    pub fn ids(&self) -> Vec<String> {
        match self {
            Receiver::File(path) => std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                // A collector may be writing the last line right now.
                .filter(|l| l.ends_with('}'))
                .map(id_of)
                .collect(),
            Receiver::Syslog(r) => r.received().iter().map(|m| id_of(&m.msg)).collect(),
            Receiver::Kafka(t) => kafka_values(&t.address(), KAFKA_TOPIC, 1)
                .iter()
                .map(|v| id_of(std::str::from_utf8(v).unwrap()))
                .collect(),
            Receiver::Http(r, _) => r.record_ids(),
        }
    }
}
