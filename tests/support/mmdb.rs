//! A small MaxMind DB (MMDB format 2.0) writer for tests and benches: IPv6 tree (IPv4 under
//! `::/96`), 24-bit records, the data types GeoIP2 City and ASN databases use. Enough to build a
//! database holding a handful of networks; no download, no external tool.
#![allow(dead_code)]

use std::net::IpAddr;

/// A value of the MMDB data section.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Str(String),
    F64(f64),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(String, Data)>),
    Array(Vec<Data>),
}

impl Data {
    pub fn str(s: &str) -> Data {
        Data::Str(s.to_owned())
    }

    pub fn map<const N: usize>(pairs: [(&str, Data); N]) -> Data {
        Data::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// `{"names": {"en": name}}`, the GeoIP2 shape of a named place.
    pub fn named(name: &str) -> Data {
        Data::map([("names", Data::map([("en", Data::str(name))]))])
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Data::Str(s) => {
                head(out, 2, s.len());
                out.extend_from_slice(s.as_bytes());
            }
            Data::F64(f) => {
                head(out, 3, 8);
                out.extend_from_slice(&f.to_be_bytes());
            }
            Data::U16(v) => uint(out, 5, u64::from(*v)),
            Data::U32(v) => uint(out, 6, u64::from(*v)),
            Data::U64(v) => uint(out, 9, *v),
            Data::Map(pairs) => {
                head(out, 7, pairs.len());
                for (k, v) in pairs {
                    Data::Str(k.clone()).encode(out);
                    v.encode(out);
                }
            }
            Data::Array(items) => {
                head(out, 11, items.len());
                for v in items {
                    v.encode(out);
                }
            }
        }
    }
}

/// An unsigned integer in as few bytes as it needs.
fn uint(out: &mut Vec<u8>, kind: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    head(out, kind, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}

/// Control byte(s): type and size (types above 7 are "extended": type 0 plus a second byte).
fn head(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (bits, extra): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, vec![]),
        29..=284 => (29, vec![(size - 29) as u8]),
        285..=65_820 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
    };
    if kind <= 7 {
        out.push((kind << 5) | bits);
    } else {
        out.push(bits);
        out.push(kind - 7);
    }
    out.extend_from_slice(&extra);
}

#[derive(Clone, Copy, PartialEq)]
enum Record {
    Empty,
    Node(u32),
    Data(u32),
}

/// Builds one database in memory.
pub struct Writer {
    database_type: String,
    nodes: Vec<[Record; 2]>,
    data: Vec<u8>,
}

impl Writer {
    /// `database_type` as MaxMind names it, e.g. `GeoLite2-City` or `GeoLite2-ASN`.
    pub fn new(database_type: &str) -> Self {
        Writer {
            database_type: database_type.to_owned(),
            nodes: vec![[Record::Empty; 2]],
            data: Vec::new(),
        }
    }

    /// Maps `ip/prefix` (prefix in the address's own family) to `value`.
    pub fn insert(&mut self, ip: IpAddr, prefix: u8, value: &Data) {
        let (bits, len) = match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 96 + u32::from(prefix)),
            IpAddr::V6(v6) => (u128::from(v6), u32::from(prefix)),
        };
        assert!((1..=128).contains(&len), "prefix out of range");
        let offset = self.data.len() as u32;
        value.encode(&mut self.data);
        let mut node = 0usize;
        for i in 0..len {
            let bit = ((bits >> (127 - i)) & 1) as usize;
            if i == len - 1 {
                self.nodes[node][bit] = Record::Data(offset);
                return;
            }
            node = match self.nodes[node][bit] {
                Record::Node(n) => n as usize,
                other => {
                    // A new node; a shorter network's data stays on both sides below it.
                    let fill = if matches!(other, Record::Data(_)) {
                        other
                    } else {
                        Record::Empty
                    };
                    self.nodes.push([fill; 2]);
                    let n = self.nodes.len() - 1;
                    self.nodes[node][bit] = Record::Node(n as u32);
                    n
                }
            };
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let count = self.nodes.len() as u32;
        let value = |r: Record| match r {
            Record::Empty => count,
            Record::Node(n) => n,
            Record::Data(off) => count + 16 + off,
        };
        let mut out = Vec::with_capacity(self.nodes.len() * 6 + 16 + self.data.len() + 256);
        for [l, r] in &self.nodes {
            out.extend_from_slice(&value(*l).to_be_bytes()[1..]);
            out.extend_from_slice(&value(*r).to_be_bytes()[1..]);
        }
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
        Data::map([
            ("binary_format_major_version", Data::U16(2)),
            ("binary_format_minor_version", Data::U16(0)),
            ("build_epoch", Data::U64(1_700_000_000)),
            ("database_type", Data::str(&self.database_type)),
            (
                "description",
                Data::map([("en", Data::str("o365-collector test database"))]),
            ),
            ("ip_version", Data::U16(6)),
            ("languages", Data::Array(vec![Data::str("en")])),
            ("node_count", Data::U32(count)),
            ("record_size", Data::U16(24)),
        ])
        .encode(&mut out);
        out
    }

    /// Writes the database to `path` through a temporary file and a rename, as database updaters do.
    pub fn write_to(&self, path: &std::path::Path) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.to_bytes()).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
}
