//! Values left as an example had them: an all-zero GUID, `REPLACE-ME`, a host under `example.com`
//! or `example.net`. Each passes every other check and fails only later, against Microsoft or the
//! destination, so the whole file is searched for them once `${NAME}` is expanded (and secrets
//! read from files through [`crate::core::settings::Section::secret_file`]). Top-level
//! `allow_placeholders: true` lets example and test files through.

use serde_yaml::{Mapping, Value};

use crate::core::settings::{ALLOW_PLACEHOLDERS, PLACEHOLDER_TEXT};

/// The GUID examples use for tenant and client ids.
const ZERO_GUID: &str = "00000000-0000-0000-0000-000000000000";

/// Domains reserved for documentation (RFC 2606): nothing real answers there.
const EXAMPLE_DOMAINS: [&str; 2] = ["example.com", "example.net"];

/// One placeholder found: the key, the problem and the fix. Values are never quoted (any key may
/// hold a secret); a host is named, being the placeholder itself.
pub(super) type Found = (String, String, String);

/// Every placeholder in the tree, in the order of the walk.
pub(super) fn find(root: &Mapping) -> Vec<Found> {
    let mut found = Vec::new();
    mapping(root, "", &mut found);
    found
}

fn mapping(map: &Mapping, key: &str, found: &mut Vec<Found>) {
    for (name, value) in map {
        let Some(name) = name.as_str() else { continue };
        if key.is_empty() && name == ALLOW_PLACEHOLDERS {
            continue;
        }
        let path = match key {
            "" => name.to_owned(),
            _ => format!("{key}.{name}"),
        };
        self::value(value, &path, found);
    }
}

fn value(v: &Value, key: &str, found: &mut Vec<Found>) {
    match v {
        Value::String(s) => text(s, key, found),
        Value::Mapping(m) => mapping(m, key, found),
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Mapping(m) => mapping(m, &format!("{key}[{i}]"), found),
                    other => value(other, key, found),
                }
            }
        }
        Value::Tagged(t) => value(&t.value, key, found),
        _ => {}
    }
}

fn text(s: &str, key: &str, found: &mut Vec<Found>) {
    let field = key.rsplit('.').next().unwrap_or(key);
    if s.to_ascii_lowercase()
        .contains(&PLACEHOLDER_TEXT.to_ascii_lowercase())
    {
        found.push((
            key.to_owned(),
            format!("still holds the placeholder {PLACEHOLDER_TEXT}"),
            with_escape("put the real value in (or take it from the environment with ${NAME}, or from a file with the key's *_file variant)"),
        ));
    }
    if s.contains(ZERO_GUID) {
        let fix = match field {
            "tenant_id" => {
                "set the customer's tenant ID (Entra admin center → Overview → Tenant ID)"
            }
            "client_id" => {
                "set the Application (client) ID of the app registration (Entra admin center → App registrations → Overview)"
            }
            _ => "set the real GUID",
        };
        found.push((
            key.to_owned(),
            "is the all-zero GUID 00000000-0000-0000-0000-000000000000, an example value"
                .to_owned(),
            with_escape(fix),
        ));
    }
    for host in s.split([' ', '\t', '\n', ',']).filter_map(host_of) {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let reserved = EXAMPLE_DOMAINS
            .iter()
            .find(|d| host == **d || host.ends_with(&format!(".{d}")));
        if let Some(domain) = reserved {
            found.push((
                key.to_owned(),
                format!("names the host {host}, under {domain}, which is reserved for examples and reaches nothing"),
                with_escape("point it at your real host"),
            ));
            break;
        }
    }
}

/// The host of a URL (`https://h:1/p`), of `host:port` or of a bare host name; `None` for other text.
fn host_of(token: &str) -> Option<String> {
    if token.contains("://") {
        return reqwest::Url::parse(token)
            .ok()?
            .host_str()
            .map(|h| h.trim_matches(['[', ']']).to_owned());
    }
    let host = match token.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() => h,
        _ => token,
    };
    let is_name = host.contains('.')
        && host
            .split('.')
            .all(|l| l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    is_name.then(|| host.to_owned())
}

fn with_escape(fix: &str) -> String {
    format!("{fix}; an example or test file may set `{ALLOW_PLACEHOLDERS}: true` at the top level")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(yaml: &str) -> Vec<(String, String)> {
        let root: Mapping = serde_yaml::from_str(yaml).unwrap();
        find(&root).into_iter().map(|(k, p, _)| (k, p)).collect()
    }

    #[test]
    fn finds_each_kind_at_its_key() {
        let f = found(
            "tenant_id: 00000000-0000-0000-0000-000000000000\nclient_secret: Replace-Me\n\
             outputs:\n  es: {type: http, url: 'https://es.example.com:9200/'}\n  \
             k: {type: kafka, brokers: 'kafka-1:9092 broker.example.net:9093'}\n\
             tenants:\n  - tenant_id: x\n    client_id: '00000000-0000-0000-0000-000000000000'\n\
             allow_placeholders: true\n",
        );
        let keys: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "tenant_id",
                "client_secret",
                "outputs.es.url",
                "outputs.k.brokers",
                "tenants[0].client_id"
            ]
        );
        assert!(f[2].1.contains("es.example.com"), "{:?}", f[2]);
        assert!(!f[1].1.contains("Replace-Me"), "never quotes a value");
    }

    #[test]
    fn real_values_pass() {
        let f = found(
            "tenant_id: 2f1c7d3e-1a2b-4c5d-8e9f-0a1b2c3d4e5f\nclient_secret: s3cr3t\n\
             webhook: {address: 'https://collector.contoso.com/notify'}\n\
             outputs:\n  s: {type: syslog, address: 'siem.examples.org:6514'}\n  \
             e: {type: http, url: 'https://notexample.com/'}\n",
        );
        assert!(f.is_empty(), "{f:?}");
    }
}
