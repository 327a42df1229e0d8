//! A fetched content blob → encoded events: decode the charset, walk the JSON array one record at a
//! time (never a tree of the whole blob), map each record, encode it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde_json::Value;

use crate::mapping::{Context, map_record};
use crate::output::{Event, record_key};

/// What came out of one blob.
#[derive(Debug, Default)]
pub struct Decoded {
    pub events: Vec<Event>,
    /// Mapping issues over all records (the records are still delivered).
    pub issues: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob is not a JSON array of records: {0}")]
    NotJson(String),
}

/// Decodes `body` (in `encoding`) and maps every record with `ctx`.
pub fn decode(
    body: &[u8],
    encoding: &'static encoding_rs::Encoding,
    ctx: &Context<'_>,
) -> Result<Decoded, BlobError> {
    let text: Cow<'_, [u8]> = if encoding == encoding_rs::UTF_8 {
        Cow::Borrowed(body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body))
    } else {
        let (s, _, _) = encoding.decode(body);
        match s {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        }
    };
    let mut de = serde_json::Deserializer::from_slice(&text);
    let mut out = Decoded::default();
    RecordsSeed { ctx, out: &mut out }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| BlobError::NotJson(e.to_string()))?;
    Ok(out)
}

struct RecordsSeed<'a, 'c> {
    ctx: &'a Context<'c>,
    out: &'a mut Decoded,
}

impl<'de> DeserializeSeed<'de> for RecordsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of audit records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(n) = seq.size_hint() {
            self.out.events.reserve(n);
        }
        while let Some(raw) = seq.next_element::<Value>()? {
            let mapped = map_record(&raw, self.ctx);
            self.out.issues += mapped.issues.len();
            let json = serde_json::to_vec(&mapped.event).map_err(serde::de::Error::custom)?;
            self.out.events.push(Event {
                key: record_key(&raw),
                json,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Format;

    fn ctx() -> Context<'static> {
        Context {
            format: Format::O365,
            tenant_id: "t",
            content_type: "Audit.General",
            content_id: "c",
            content_created: None,
            received: "2026-11-25T00:00:00Z",
            ..Context::default()
        }
    }

    #[test]
    fn maps_each_record() {
        let d = decode(
            br#"[{"Id":"a","Operation":"X"},{"Id":"b"}]"#,
            encoding_rs::UTF_8,
            &ctx(),
        )
        .unwrap();
        assert_eq!(d.events.len(), 2);
        let v: Value = serde_json::from_slice(&d.events[0].json).unwrap();
        assert_eq!(v["o365.audit.Id"], "a");
    }

    #[test]
    fn other_charsets_and_bom() {
        let latin1 = b"[{\"Id\":\"a\",\"UserId\":\"J\xF6rg\"}]";
        let enc = encoding_rs::Encoding::for_label(b"latin1").unwrap();
        let d = decode(latin1, enc, &ctx()).unwrap();
        let v: Value = serde_json::from_slice(&d.events[0].json).unwrap();
        assert_eq!(v["o365.audit.UserId"], "Jörg");
        let d = decode(b"\xEF\xBB\xBF[]", encoding_rs::UTF_8, &ctx()).unwrap();
        assert!(d.events.is_empty());
    }

    #[test]
    fn broken_blobs_are_errors() {
        for body in [&b"{}"[..], b"[{\"Id\":", b"[1,2] x", b""] {
            assert!(decode(body, encoding_rs::UTF_8, &ctx()).is_err());
        }
    }
}
