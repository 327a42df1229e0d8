//! Compact JSON text of mapped values: the bytes `serde_json::to_writer` writes, faster.
//!
//! Why: encoding events was the largest cost of the `o365` mapping, mostly `serde_json`'s string
//! escaping, which looks up every byte. Nearly every string of an audit record has nothing to
//! escape; checking that first is a loop the compiler vectorises, and then the string is copied
//! whole. A string with something to escape, and numbers, still go through `serde_json`, so the
//! output is byte for byte the same (asserted by the mapping tests and property tests).

use serde_json::{Map, Value};

/// Whether `s` has a byte JSON escapes (a control character, `"` or `\\`).
pub(crate) fn needs_escape(s: &str) -> bool {
    // No short-circuit on purpose: a fold over all bytes vectorises, `any` does not.
    s.as_bytes().iter().fold(false, |acc, &b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// Appends `s` as a JSON string.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    if needs_escape(s) {
        return serde_json::to_writer(&mut *out, s);
    }
    write_plain_str(out, s);
    Ok(())
}

/// Appends `s`, known to need no escaping ([`needs_escape`] false), as a JSON string.
pub(crate) fn write_plain_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    out.extend_from_slice(bytes);
    out.push(b'"');
}

/// Appends `v` as compact JSON (object members in the map's order, as `serde_json` does).
pub(crate) fn write_value(out: &mut Vec<u8>, v: &Value) -> serde_json::Result<()> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => serde_json::to_writer(&mut *out, n)?,
        Value::String(s) => write_str(out, s)?,
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item)?;
            }
            out.push(b']');
        }
        Value::Object(map) => write_map(out, map)?,
    }
    Ok(())
}

/// Appends `map` as a compact JSON object, members in the map's order.
pub(crate) fn write_map(out: &mut Vec<u8>, map: &Map<String, Value>) -> serde_json::Result<()> {
    out.push(b'{');
    for (i, (k, item)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k)?;
        out.push(b':');
        write_value(out, item)?;
    }
    out.push(b'}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn same_as_serde(v: &Value) {
        let mut ours = Vec::new();
        write_value(&mut ours, v).unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            serde_json::to_string(v).unwrap()
        );
    }

    #[test]
    fn writes_what_serde_json_writes() {
        for s in [
            "",
            "plain",
            "quote \" here",
            "back\\slash",
            "tab\tnew\nline\r",
            "\u{0}\u{1f}\u{7f}",
            "non-ascii é 中文 😀",
            "</script>",
        ] {
            same_as_serde(&Value::String(s.to_owned()));
        }
        same_as_serde(&json!({
            "a": [1, -2, 3.5, 1e300, null, true, false, u64::MAX, i64::MIN],
            "b": {"nested \"key\"": ["x", {}, []]},
            "": ""
        }));
    }
}
