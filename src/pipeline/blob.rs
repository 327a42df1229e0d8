//! A content blob read piece by piece: bytes in any charset → UTF-8 → one record at a time cut out
//! of the top-level JSON array → mapped, encoded events gathered into bounded batches. Pure: no
//! I/O, no threads; [`super::stream`] drives it with the chunks of the HTTP answer as they arrive.
//! Memory does not grow with the blob: a chunk is decoded and cut as it comes, and only a record
//! that spans chunks is copied (up to [`MAX_RECORD_BYTES`]).

use serde_json::Value;

use crate::mapping::{Context, map_record_json};
use crate::output::{Event, graph_key, record_key};

/// Largest single record accepted. Microsoft's records are a few KiB; this only bounds the copy
/// of a record that spans chunks when a blob is broken or hostile.
pub const MAX_RECORD_BYTES: usize = 16 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlobError {
    #[error("blob is not a JSON array of records: {0}")]
    NotJson(String),
    #[error("record {index} of the blob is larger than {MAX_RECORD_BYTES} bytes")]
    RecordTooLarge { index: u64 },
}

/// Charset → UTF-8, chunk by chunk; a character split between two chunks is completed by the next.
/// UTF-8 passes through untouched (only a leading BOM is dropped, even when split); other charsets
/// go through an incremental `encoding_rs` decoder, which also honours a BOM.
pub struct Charset {
    decoder: Option<encoding_rs::Decoder>,
    /// UTF-8 only: the first bytes, held until it is clear whether they are a BOM.
    head: Vec<u8>,
    head_done: bool,
    buf: Vec<u8>,
}

impl Charset {
    pub fn new(encoding: &'static encoding_rs::Encoding) -> Charset {
        let utf8 = encoding == encoding_rs::UTF_8;
        Charset {
            decoder: (!utf8).then(|| encoding.new_decoder()),
            head: Vec::new(),
            head_done: false,
            buf: Vec::new(),
        }
    }

    /// The UTF-8 text of `input`; `last` flushes what a final incomplete character left.
    pub fn decode<'a>(&'a mut self, input: &'a [u8], last: bool) -> &'a [u8] {
        if let Some(dec) = self.decoder.as_mut() {
            let need = dec
                .max_utf8_buffer_length(input.len())
                .unwrap_or(input.len().saturating_mul(3).saturating_add(16));
            self.buf.clear();
            self.buf.resize(need, 0);
            // With a buffer of the maximal length the decoder consumes all of `input`.
            let (_, _, written, _) = dec.decode_to_utf8(input, &mut self.buf, last);
            self.buf.truncate(written);
            return &self.buf;
        }
        if self.head_done {
            return input;
        }
        let take = (BOM.len() - self.head.len()).min(input.len());
        self.head.extend_from_slice(&input[..take]);
        if self.head.len() < BOM.len() && !last && BOM.starts_with(&self.head) {
            return &[];
        }
        self.head_done = true;
        self.buf.clear();
        if self.head.as_slice() != BOM {
            self.buf.extend_from_slice(&self.head);
        }
        self.buf.extend_from_slice(&input[take..]);
        self.head = Vec::new();
        &self.buf
    }
}

/// Where the cutter is in the top-level array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before `[`.
    Start,
    /// After `[`: a record or `]`.
    First,
    /// After `,`: a record.
    Next,
    /// Inside a record.
    Record,
    /// After a record: `,` or `]`.
    After,
    /// After `]`: only whitespace.
    Done,
}

/// Cuts the records out of a JSON array given in pieces. It tracks only strings, escapes and
/// bracket depth — enough to find where each element ends; the element itself is parsed (and so
/// validated) by whoever receives it. The array's own syntax (`[`, `,`, `]`, nothing after) is
/// checked here.
pub struct Cutter {
    state: State,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The record is a bare scalar (number, true, …): it ends at a delimiter.
    scalar: bool,
    /// The start of a record that spans chunks.
    pending: Vec<u8>,
    records: u64,
}

impl Default for Cutter {
    fn default() -> Self {
        Cutter {
            state: State::Start,
            depth: 0,
            in_string: false,
            escaped: false,
            scalar: false,
            pending: Vec::new(),
            records: 0,
        }
    }
}

impl Cutter {
    /// Records cut so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Feeds the next piece of UTF-8 text; `emit` gets each complete record (its index in the
    /// blob and its bytes) and may stop the walk with an error.
    pub fn push<E>(
        &mut self,
        text: &[u8],
        emit: &mut impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<BlobError>,
    {
        let mut i = 0;
        let mut start = (self.state == State::Record).then_some(0);
        while i < text.len() {
            if self.state == State::Record {
                match self.scan(text, i) {
                    (next, false) => i = next,
                    (end, true) => {
                        let from = start.take().unwrap_or(0);
                        self.complete(&text[from..end], emit)?;
                        i = end;
                    }
                }
                continue;
            }
            let b = text[i];
            if is_ws(b) {
                i += 1;
                continue;
            }
            match (self.state, b) {
                (State::Start, b'[') => self.state = State::First,
                (State::Start, _) => return Err(self.syntax("it does not start with `[`").into()),
                (State::First, b']') | (State::After, b']') => self.state = State::Done,
                (State::Next, b']') => {
                    return Err(self.syntax("a `,` is followed by `]`").into());
                }
                (State::First | State::Next, _) => {
                    start = Some(i);
                    self.begin(b);
                }
                (State::After, b',') => self.state = State::Next,
                (State::After, _) => {
                    return Err(self.syntax("records are not separated by `,`").into());
                }
                (State::Done, _) => return Err(self.syntax("text follows the closing `]`").into()),
                (State::Record, _) => unreachable!("handled above"),
            }
            // `begin` consumed the record's first byte too.
            i += 1;
        }
        if let Some(from) = start {
            let rest = &text[from..];
            if self.pending.len() + rest.len() > MAX_RECORD_BYTES {
                return Err(BlobError::RecordTooLarge {
                    index: self.records,
                }
                .into());
            }
            self.pending.extend_from_slice(rest);
        }
        Ok(())
    }

    /// The end of the text: the array must be closed.
    pub fn finish(&self) -> Result<(), BlobError> {
        match self.state {
            State::Done => Ok(()),
            State::Start => Err(self.syntax("it is empty")),
            _ => Err(self.syntax("it ends before the closing `]`")),
        }
    }

    fn begin(&mut self, first: u8) {
        self.state = State::Record;
        self.escaped = false;
        self.scalar = false;
        self.in_string = false;
        self.depth = 0;
        match first {
            b'{' | b'[' => self.depth = 1,
            b'"' => self.in_string = true,
            _ => self.scalar = true,
        }
    }

    /// Scans a record from `i`; returns where it stopped and whether the record ended there
    /// (exclusive end).
    fn scan(&mut self, text: &[u8], mut i: usize) -> (usize, bool) {
        if self.scalar {
            return match text[i..]
                .iter()
                .position(|&b| b == b',' || b == b']' || is_ws(b))
            {
                Some(k) => (i + k, true),
                None => (text.len(), false),
            };
        }
        while i < text.len() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                match memchr::memchr2(b'"', b'\\', &text[i..]) {
                    None => return (text.len(), false),
                    Some(k) => {
                        i += k;
                        if text[i] == b'\\' {
                            self.escaped = true;
                        } else {
                            self.in_string = false;
                            if self.depth == 0 {
                                return (i + 1, true);
                            }
                        }
                        i += 1;
                    }
                }
                continue;
            }
            match text[i] {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return (i + 1, true);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        (text.len(), false)
    }

    fn complete<E>(
        &mut self,
        tail: &[u8],
        emit: &mut impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let index = self.records;
        self.records += 1;
        self.state = State::After;
        if self.pending.is_empty() {
            return emit(index, tail);
        }
        self.pending.extend_from_slice(tail);
        let record = std::mem::take(&mut self.pending);
        let out = emit(index, &record);
        // Keep the allocation for the next spanning record.
        self.pending = record;
        self.pending.clear();
        out
    }

    fn syntax(&self, what: &str) -> BlobError {
        BlobError::NotJson(format!("{what} (after {} records)", self.records))
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

/// Charset decoding and cutting together: bytes of the blob in, records out.
pub struct Records {
    charset: Charset,
    cutter: Cutter,
}

impl Records {
    pub fn new(encoding: &'static encoding_rs::Encoding) -> Records {
        Records {
            charset: Charset::new(encoding),
            cutter: Cutter::default(),
        }
    }

    /// Feeds the next chunk of the blob as received.
    pub fn push<E: From<BlobError>>(
        &mut self,
        chunk: &[u8],
        emit: &mut impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let text = self.charset.decode(chunk, false);
        self.cutter.push(text, emit)
    }

    /// The end of the blob: flushes the decoder and checks that the array was closed.
    pub fn finish<E: From<BlobError>>(
        &mut self,
        emit: &mut impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let text = self.charset.decode(&[], true);
        self.cutter.push(text, emit)?;
        self.cutter.finish().map_err(E::from)
    }

    /// Records cut so far.
    pub fn count(&self) -> u64 {
        self.cutter.records()
    }
}

/// Parses, maps and encodes one record (`index` is its place in the blob, for the error).
/// Returns the event, the number of mapping issues (the record is delivered anyway) and the
/// record's RecordType when Microsoft's table lacks it (counted and logged by the worker).
pub fn map_one(
    index: u64,
    raw: &[u8],
    ctx: &Context<'_>,
) -> Result<(Event, usize, Option<i64>), BlobError> {
    let value: Value = serde_json::from_slice(raw)
        .map_err(|e| BlobError::NotJson(format!("record {index}: {e}")))?;
    // The event is the record's fields under longer keys plus meta: sized to grow at most once.
    let mut json = Vec::with_capacity(raw.len() + raw.len() / 2 + 512);
    let issues = map_record_json(&value, ctx, &mut json)
        .map_err(|e| BlobError::NotJson(format!("record {index}: {e}")))?;
    // A Graph record is keyed by its feed and identity, an audit record by its own fields.
    let (key, record_type) = match crate::graph::GraphFeed::from_content_type(ctx.content_type) {
        Some(feed) => (
            value
                .as_object()
                .and_then(|o| feed.identity(o))
                .map(|id| graph_key(ctx.content_type, &id)),
            None,
        ),
        None => (
            record_key(&value),
            value
                .get("RecordType")
                .and_then(crate::mapping::enums::as_enum_int),
        ),
    };
    let unknown = record_type.filter(|n| crate::mapping::enums::RECORD_TYPE.name(*n).is_none());
    let event = Event {
        key,
        json,
        record_type: record_type.and_then(|n| i32::try_from(n).ok()),
    };
    Ok((event, issues.len(), unknown))
}

/// Gathers events into batches of at most `max_records` events and `max_bytes` bytes of event
/// JSON (a single larger event makes a batch of its own).
#[derive(Debug)]
pub struct Batcher {
    max_records: usize,
    max_bytes: usize,
    events: Vec<Event>,
    bytes: usize,
    issues: usize,
    unknown_record_types: Vec<(i64, u64)>,
    /// The index after the last record added.
    end: u64,
}

/// One batch of a blob's events, ready for the output.
#[derive(Debug, Default)]
pub struct Part {
    pub events: Vec<Event>,
    /// Records of the blob up to the end of this batch (counted from the blob's first record,
    /// skipped ones included): the progress to record once the output accepted it.
    pub through: u64,
    /// Mapping issues of these events.
    pub issues: usize,
    /// RecordTypes of these events that Microsoft's table lacks, with their record counts.
    pub unknown_record_types: Vec<(i64, u64)>,
}

impl Batcher {
    pub fn new(max_records: usize, max_bytes: usize) -> Batcher {
        Batcher {
            max_records: max_records.max(1),
            max_bytes: max_bytes.max(1),
            events: Vec::new(),
            bytes: 0,
            issues: 0,
            unknown_record_types: Vec::new(),
            end: 0,
        }
    }

    /// Adds the event of record `index`; returns the batch that was full before it, if any.
    pub fn add(&mut self, index: u64, event: Event, issues: usize) -> Option<Part> {
        let full = !self.events.is_empty()
            && (self.events.len() >= self.max_records
                || self.bytes + event.json.len() > self.max_bytes);
        let out = full.then(|| self.take());
        self.bytes += event.json.len();
        self.issues += issues;
        self.events.push(event);
        self.end = index + 1;
        out
    }

    /// Notes that the record just added has a RecordType Microsoft's table lacks.
    pub fn unknown_record_type(&mut self, record_type: i64) {
        match self
            .unknown_record_types
            .iter_mut()
            .find(|(t, _)| *t == record_type)
        {
            Some((_, n)) => *n += 1,
            None => self.unknown_record_types.push((record_type, 1)),
        }
    }

    /// The events gathered so far as a batch (possibly empty).
    pub fn take(&mut self) -> Part {
        self.bytes = 0;
        Part {
            events: std::mem::take(&mut self.events),
            through: self.end,
            issues: std::mem::take(&mut self.issues),
            unknown_record_types: std::mem::take(&mut self.unknown_record_types),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// A whole blob in memory → its records (as parsed values), through the same cutter. For tests.
#[cfg(test)]
pub fn parse_whole(
    body: &[u8],
    encoding: &'static encoding_rs::Encoding,
) -> Result<Vec<Value>, BlobError> {
    let mut out = Vec::new();
    let mut r = Records::new(encoding);
    let mut emit = |i: u64, raw: &[u8]| -> Result<(), BlobError> {
        let v = serde_json::from_slice(raw)
            .map_err(|e| BlobError::NotJson(format!("record {i}: {e}")))?;
        out.push(v);
        Ok(())
    };
    r.push(body, &mut emit)?;
    r.finish(&mut emit)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Format;
    use proptest::prelude::*;

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

    /// The records of `body` fed in pieces cut at `cuts` (offsets, any order).
    fn in_pieces(
        body: &[u8],
        encoding: &'static encoding_rs::Encoding,
        cuts: &[usize],
    ) -> Result<Vec<Value>, BlobError> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        at.push(0);
        at.push(body.len());
        at.sort_unstable();
        let mut out = Vec::new();
        let mut r = Records::new(encoding);
        let mut emit = |i: u64, raw: &[u8]| -> Result<(), BlobError> {
            assert_eq!(i, out.len() as u64, "records come in order");
            out.push(serde_json::from_slice(raw).map_err(|e| BlobError::NotJson(e.to_string()))?);
            Ok(())
        };
        for w in at.windows(2) {
            r.push(&body[w[0]..w[1]], &mut emit)?;
        }
        r.finish(&mut emit)?;
        Ok(out)
    }

    #[test]
    fn maps_each_record() {
        let body = br#"[{"Id":"a","Operation":"X"},{"Id":"b"}]"#;
        let records = parse_whole(body, encoding_rs::UTF_8).unwrap();
        assert_eq!(records.len(), 2);
        let raw = serde_json::to_vec(&records[0]).unwrap();
        let (event, _, _) = map_one(0, &raw, &ctx()).unwrap();
        let v: Value = serde_json::from_slice(&event.json).unwrap();
        assert_eq!(v["o365.audit.Id"], "a");
        assert!(event.key.is_some());
    }

    #[test]
    fn other_charsets_and_bom() {
        let latin1 = b"[{\"Id\":\"a\",\"UserId\":\"J\xF6rg\"}]";
        let enc = encoding_rs::Encoding::for_label(b"latin1").unwrap();
        let v = parse_whole(latin1, enc).unwrap();
        assert_eq!(v[0]["UserId"], "Jörg");
        assert!(
            parse_whole(b"\xEF\xBB\xBF[]", encoding_rs::UTF_8)
                .unwrap()
                .is_empty()
        );
        // A BOM split over three chunks, and a body shorter than a BOM.
        let body = b"\xEF\xBB\xBF[{\"Id\":\"x\"}]";
        assert_eq!(
            in_pieces(body, encoding_rs::UTF_8, &[1, 2]).unwrap().len(),
            1
        );
        assert!(
            in_pieces(b"[]", encoding_rs::UTF_8, &[1])
                .unwrap()
                .is_empty()
        );
        // A UTF-16 blob with its BOM, cut inside a code unit.
        let mut utf16 = vec![0xFF, 0xFE];
        for u in "[{\"Id\":\"ü\"}]".encode_utf16() {
            utf16.extend_from_slice(&u.to_le_bytes());
        }
        let v = in_pieces(&utf16, encoding_rs::UTF_16LE, &[1, 3, 7]).unwrap();
        assert_eq!(v[0]["Id"], "ü");
    }

    #[test]
    fn broken_blobs_are_errors() {
        for body in [
            &b"{}"[..],
            b"[{\"Id\":",
            b"[1,2] x",
            b"",
            b"   ",
            b"[1,]",
            b"[{} {}]",
            b"[,1]",
            b"[{\"a\":1]",
            b"[\"unterminated]",
            b"[\xFF]",
        ] {
            assert!(
                parse_whole(body, encoding_rs::UTF_8).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn scalars_and_nested_arrays_are_records() {
        let v = parse_whole(
            b" [ 1 , \"a]\" ,[[]],{\"x\":[1,{\"y\":\"}\"}]},null ] \n",
            encoding_rs::UTF_8,
        )
        .unwrap();
        assert_eq!(v.len(), 5);
        assert_eq!(v[1], "a]");
        assert_eq!(v[3]["x"][1]["y"], "}");
    }

    #[test]
    fn a_record_larger_than_the_bound_fails_its_blob() {
        let mut r = Records::new(encoding_rs::UTF_8);
        let mut emit = |_: u64, _: &[u8]| -> Result<(), BlobError> { Ok(()) };
        r.push(b"[{\"a\":\"", &mut emit).unwrap();
        let piece = vec![b'x'; 1 << 20];
        let mut err = None;
        for _ in 0..=MAX_RECORD_BYTES >> 20 {
            if let Err(e) = r.push(&piece, &mut emit) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(BlobError::RecordTooLarge { index: 0 }));
    }

    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        let ev = |n: usize| Event {
            key: None,
            json: vec![b'x'; n],
            record_type: None,
        };
        let mut b = Batcher::new(3, 100);
        assert!(b.add(0, ev(10), 0).is_none());
        assert!(b.add(1, ev(10), 1).is_none());
        assert!(b.add(2, ev(10), 0).is_none());
        let full = b.add(3, ev(10), 0).expect("three records make a batch");
        assert_eq!((full.events.len(), full.through, full.issues), (3, 3, 1));
        let full = b.add(4, ev(95), 0).expect("bytes would pass 100");
        assert_eq!((full.events.len(), full.through), (1, 4));
        let full = b.add(5, ev(500), 0).expect("a large event goes alone");
        assert_eq!(full.events.len(), 1);
        let last = b.take();
        assert_eq!((last.events.len(), last.through), (1, 6));
        assert!(b.is_empty());
    }

    /// Text with everything that can confuse a cutter: brackets and quotes inside strings, escapes
    /// (also of quotes and backslashes), multibyte characters, nesting, whitespace.
    fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-z\\[\\]{}\",:\\\\ é€😀\n\t/]{0,12}").unwrap()
    }

    fn record() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            text().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
        ];
        let tree = leaf.prop_recursive(3, 16, 4, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(text(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        prop_oneof![
            4 => proptest::collection::btree_map("[A-Za-z]{1,6}", tree.clone(), 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            1 => tree,
        ]
    }

    proptest! {
        /// Any chunking gives the records of the whole-body parse, in order.
        #[test]
        fn chunk_boundaries_do_not_matter(
            records in proptest::collection::vec(record(), 0..8),
            pretty in any::<bool>(),
            bom in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut body = if bom { BOM.to_vec() } else { Vec::new() };
            if pretty {
                body.extend(serde_json::to_vec_pretty(&records).unwrap());
            } else {
                body.extend(serde_json::to_vec(&records).unwrap());
            }
            let whole: Vec<Value> = serde_json::from_slice(&body[if bom { 3 } else { 0 }..]).unwrap();
            prop_assert_eq!(&whole, &records);
            prop_assert_eq!(in_pieces(&body, encoding_rs::UTF_8, &cuts).unwrap(), whole);
        }

        /// Non-UTF-8 charsets cut anywhere, also in the middle of a multibyte character.
        #[test]
        fn charsets_split_mid_character(
            records in proptest::collection::vec(record(), 0..6),
            which in 0usize..3,
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let enc = [encoding_rs::UTF_16LE, encoding_rs::UTF_16BE, encoding_rs::GB18030][which];
            let text = serde_json::to_string(&records).unwrap();
            let (body, _, lossy) = enc.encode(&text);
            // encode() writes UTF-8 for UTF-16 labels (the WHATWG rule); build UTF-16 by hand.
            let body: Vec<u8> = match which {
                0 => text.encode_utf16().flat_map(u16::to_le_bytes).collect(),
                1 => text.encode_utf16().flat_map(u16::to_be_bytes).collect(),
                _ => { prop_assume!(!lossy); body.into_owned() }
            };
            prop_assert_eq!(in_pieces(&body, enc, &cuts).unwrap(), records);
        }

        /// A blob cut short anywhere is an error, never a silent success with fewer records.
        #[test]
        fn a_truncated_blob_is_an_error(
            records in proptest::collection::vec(record(), 1..6),
            keep in any::<usize>(),
        ) {
            let body = serde_json::to_vec(&records).unwrap();
            let keep = keep % body.len();
            prop_assert!(parse_whole(&body[..keep], encoding_rs::UTF_8).is_err());
        }
    }
}
