//! Names an output builds per event or batch (Elasticsearch `index`, Splunk `index`/`source`/
//! `sourcetype`, Kafka `topic`): one template language for all, parsed when the configuration is
//! read so that an unknown placeholder is a configuration problem, never a literal name.
//!
//! Placeholders: `{tenant_id}`, `{tenant_name}` (the tenant's `tenant_name`, or its id when it has
//! none), `{content_type}`, and the event's UTC time as `%Y %m %d %H` (`%%` is a `%`, `{{` a `{`).

use std::fmt::{self, Write as _};

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Deserializer};

use crate::core::settings::{de, fail1};

/// What a template may hold, for messages.
pub const ALLOWED: &str =
    "{tenant_id}, {tenant_name}, {content_type}, %Y, %m, %d, %H, %% (a %) and {{ (a {)";

/// A parsed name template; displays as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    TenantId,
    TenantName,
    ContentType,
    Year,
    Month,
    Day,
    Hour,
}

/// The batch-level values a template is filled with.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    pub tenant_id: &'a str,
    /// `None`: the tenant has no `tenant_name`; `{tenant_name}` gives its id.
    pub tenant_name: Option<&'a str>,
    pub content_type: &'a str,
}

impl Fields<'_> {
    /// Values shaped like real ones, to judge a template's names at configuration time.
    pub const SAMPLE: Fields<'static> = Fields {
        tenant_id: "8f3c1e2a-4b5d-4c6e-9f70-1a2b3c4d5e6f",
        tenant_name: Some("contoso.onmicrosoft.com"),
        content_type: "Audit.Exchange",
    };
}

impl Template {
    /// Parses `text`; the error is the problem, in words (the allowed placeholders are [`ALLOWED`]).
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            rest = &rest[c.len_utf8()..];
            let part = match c {
                '{' if rest.starts_with('{') => {
                    rest = &rest[1..];
                    lit.push('{');
                    continue;
                }
                '{' => {
                    let Some(end) = rest.find('}') else {
                        return Err("has a `{` that is never closed".into());
                    };
                    let name = &rest[..end];
                    rest = &rest[end + 1..];
                    match name {
                        "tenant_id" => Part::TenantId,
                        "tenant_name" => Part::TenantName,
                        "content_type" => Part::ContentType,
                        other => return Err(format!("has the unknown placeholder `{{{other}}}`")),
                    }
                }
                '%' => {
                    let Some(p) = rest.chars().next() else {
                        return Err("ends with a lone `%`".into());
                    };
                    rest = &rest[p.len_utf8()..];
                    match p {
                        'Y' => Part::Year,
                        'm' => Part::Month,
                        'd' => Part::Day,
                        'H' => Part::Hour,
                        '%' => {
                            lit.push('%');
                            continue;
                        }
                        other => return Err(format!("has the unknown time pattern `%{other}`")),
                    }
                }
                c => {
                    lit.push(c);
                    continue;
                }
            };
            if !lit.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut lit)));
            }
            parts.push(part);
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template {
            text: text.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it depends on the event's time (else one name serves a whole batch).
    pub fn uses_time(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Year | Part::Month | Part::Day | Part::Hour))
    }

    /// The name for `fields` at `time` (UTC).
    pub fn render(&self, fields: &Fields, time: DateTime<Utc>) -> String {
        let mut out = String::with_capacity(self.text.len() + 40);
        for part in &self.parts {
            let _ = match part {
                Part::Text(t) => out.write_str(t),
                Part::TenantId => out.write_str(fields.tenant_id),
                Part::TenantName => out.write_str(fields.tenant_name.unwrap_or(fields.tenant_id)),
                Part::ContentType => out.write_str(fields.content_type),
                Part::Year => write!(out, "{:04}", time.year()),
                Part::Month => write!(out, "{:02}", time.month()),
                Part::Day => write!(out, "{:02}", time.day()),
                Part::Hour => write!(out, "{:02}", time.hour()),
            };
        }
        out
    }

    /// The name for [`Fields::SAMPLE`] at a fixed time: what configuration checks judge.
    pub fn sample(&self) -> String {
        let t = DateTime::from_timestamp(1_796_000_000, 0).unwrap_or_default();
        self.render(&Fields::SAMPLE, t)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Read as text, trimmed; an unknown placeholder is refused at its key.
impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Template, D::Error> {
        let text = de::text(d)?;
        Template::parse(text.trim()).map_err(|problem| {
            fail1(
                problem,
                format!("use only {ALLOWED}; e.g. `o365-{{tenant_id}}-%Y.%m.%d`"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        use chrono::TimeZone;
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn fills_every_placeholder() {
        let t = Template::parse("o365-{tenant_id}-{tenant_name}-{content_type}-%Y.%m.%d.%H-%%{{")
            .unwrap();
        let f = Fields {
            tenant_id: "t1",
            tenant_name: Some("contoso"),
            content_type: "Audit.General",
        };
        assert_eq!(
            t.render(&f, at(2026, 12, 7, 5)),
            "o365-t1-contoso-Audit.General-2026.12.07.05-%{"
        );
        let unnamed = Fields {
            tenant_name: None,
            ..f
        };
        assert_eq!(
            Template::parse("{tenant_name}")
                .unwrap()
                .render(&unnamed, at(2026, 1, 1, 0)),
            "t1"
        );
        assert!(t.uses_time());
        assert!(!Template::parse("o365-{tenant_id}").unwrap().uses_time());
        assert_eq!(t.to_string(), t.as_str());
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for (text, problem) in [
            ("o365-{tenant}", "unknown placeholder `{tenant}`"),
            ("o365-{tenant_id", "never closed"),
            ("o365-%q", "unknown time pattern `%q`"),
            ("o365-%", "lone `%`"),
        ] {
            let e = Template::parse(text).unwrap_err();
            assert!(e.contains(problem), "{text}: {e}");
        }
    }
}
