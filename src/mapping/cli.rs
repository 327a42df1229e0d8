//! `o365-collector map`: maps records offline, for exports and replays.
//!
//! Input (FILE, or stdin when absent), recognised by its first non-blank character:
//! - `{` or `[`: a stream of JSON values — JSON lines, one JSON array (a content blob as the API
//!   serves it), several arrays, or pretty-printed objects one after another. Every top-level
//!   array is taken as a list of records.
//! - a Microsoft Graph page as exported (`{"@odata.context": "…#auditLogs/signIns", "value": […]}`):
//!   its records, mapped as the feed the context names (or `--content-type`: `sign_ins`,
//!   `directory_audits`, `message_trace`, `service_health`, or `Graph.SignIns`…), which also
//!   maps records given one by one. Message trace CSV exports are not read: their column names
//!   are not documented by Microsoft.
//! - anything else: a Purview audit-search CSV export (RFC 4180 quoting, optional UTF-8 BOM) whose
//!   `AuditData` column holds one record as JSON.
//!
//! The whole input is read into memory first (exports are files of bounded size; this keeps
//! format detection and error recovery simple).
//!
//! Output: one mapped event per record as NDJSON on stdout. Mapping issues and unreadable input go
//! to stderr, each prefixed with where the record is (`line N`, `line N, index I` for array
//! elements, `row N (line L)` for CSV).
//!
//! Exit codes: **0** every record was read (mapping issues do not change this: the records were
//! still mapped); **1** some input could not be parsed (invalid JSON, a broken CSV row, a CSV
//! without an `AuditData` column) — the readable rest was still mapped; **2** usage or I/O error
//! (the file cannot be opened, input cannot be read, output cannot be written).

use std::io::{self, BufWriter, Read, Write};

use serde_json::Value;

use super::{Context, Format, map_record};
use crate::graph::GraphFeed;

/// `o365-collector map` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct MapArgs {
    #[arg(long, value_enum, default_value_t = super::Format::O365)]
    pub format: super::Format,
    /// JSON lines, a JSON array or a Purview CSV export; stdin when absent.
    pub file: Option<std::path::PathBuf>,
    /// Tenant id to record as `o365.meta.tenant_id` (left out when empty).
    #[arg(long, default_value = "")]
    pub tenant_id: String,
    /// Content type to record as `o365.meta.content_type` (left out when empty); a Graph feed
    /// (`sign_ins`, `directory_audits`, `message_trace`, `service_health`) maps as that feed.
    #[arg(long, default_value = "")]
    pub content_type: String,
    /// Format ecs: the tenant's name for `organization.name`/`host.name` of records whose
    /// OrganizationId is `--tenant-id`.
    #[arg(long)]
    pub tenant_name: Option<String>,
    /// Format ecs: parse `user_agent.original` into `user_agent.*`.
    #[arg(long)]
    pub user_agent: bool,
    /// Format ecs: MaxMind City database for `source.geo.*`.
    #[arg(long)]
    pub geoip_city: Option<std::path::PathBuf>,
    /// Format ecs: MaxMind ASN database for `source.as.*`.
    #[arg(long)]
    pub geoip_asn: Option<std::path::PathBuf>,
}

impl Default for MapArgs {
    fn default() -> Self {
        Self {
            format: Format::O365,
            file: None,
            tenant_id: String::new(),
            content_type: String::new(),
            tenant_name: None,
            user_agent: false,
            geoip_city: None,
            geoip_asn: None,
        }
    }
}

/// Runs `map`; returns the process exit code.
pub fn run(args: MapArgs) -> io::Result<i32> {
    let stderr = io::stderr();
    let mut err = stderr.lock();
    let input: Box<dyn Read> = match &args.file {
        Some(path) => match std::fs::File::open(path) {
            Ok(f) => Box::new(f),
            Err(e) => {
                writeln!(
                    err,
                    "o365-collector map: cannot open {}: {e}",
                    path.display()
                )?;
                return Ok(2);
            }
        },
        None => Box::new(io::stdin().lock()),
    };
    let stdout = io::stdout();
    let out = BufWriter::with_capacity(1 << 16, stdout.lock());
    match run_with(&args, input, out, &mut err) {
        Ok(code) => Ok(code),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(2),
        Err(e) => {
            writeln!(err, "o365-collector map: {e}")?;
            Ok(2)
        }
    }
}

/// Testable core of [`run`]: reads `input`, writes NDJSON to `out` and diagnostics to `err`.
/// Returns the exit code; `Err` only for I/O errors on `out`/`err` (exit code 2 for callers).
pub fn run_with(
    args: &MapArgs,
    mut input: impl Read,
    mut out: impl Write,
    mut err: impl Write,
) -> io::Result<i32> {
    let mut buf = Vec::new();
    if let Err(e) = input.read_to_end(&mut buf) {
        writeln!(err, "o365-collector map: cannot read input: {e}")?;
        return Ok(2);
    }
    let data = buf.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(&buf);
    let received = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let enrich_cfg = super::enrich::EnrichmentConfig {
        user_agent: args.user_agent,
        geoip_city: args.geoip_city.clone(),
        geoip_asn: args.geoip_asn.clone(),
        ..Default::default()
    };
    let enrichment = if enrich_cfg.is_enabled() {
        match super::enrich::Enrichment::new(&enrich_cfg) {
            Ok(e) => Some(e),
            Err(e) => {
                writeln!(err, "o365-collector map: {e}")?;
                return Ok(2);
            }
        }
    } else {
        None
    };
    let ctx = Context {
        tenant_name: args.tenant_name.as_deref(),
        enrichment: enrichment.as_ref(),
        format: args.format,
        tenant_id: &args.tenant_id,
        // A Graph feed may be named by its configuration word (`sign_ins`).
        content_type: GraphFeed::from_config_name(&args.content_type)
            .map_or(args.content_type.as_str(), |f| f.content_type()),
        content_id: "",
        content_created: None,
        received: &received,
    };
    let mut sink = Sink {
        ctx,
        out: &mut out,
        err: &mut err,
        records: 0,
        issues: 0,
        unreadable: 0,
    };
    match data.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {}
        Some(b'{' | b'[') => json_stream(data, &mut sink)?,
        Some(_) => csv_export(data, &mut sink)?,
    }
    let (records, issues, unreadable) = (sink.records, sink.issues, sink.unreadable);
    out.flush()?;
    if issues > 0 || unreadable > 0 {
        writeln!(
            err,
            "o365-collector map: {records} records mapped, {issues} mapping issues, {unreadable} unreadable inputs"
        )?;
    }
    err.flush()?;
    Ok(if unreadable > 0 { 1 } else { 0 })
}

struct Sink<'c, O: Write, E: Write> {
    ctx: Context<'c>,
    out: O,
    err: E,
    records: u64,
    issues: u64,
    unreadable: u64,
}

impl<O: Write, E: Write> Sink<'_, O, E> {
    fn record(&mut self, v: &Value, loc: &dyn std::fmt::Display) -> io::Result<()> {
        // A Graph page as exported (`{"@odata.context": …, "value": [records]}`): its records,
        // of the feed `--content-type` names or the context's collection.
        if let (Some(Value::Array(items)), Some(Value::String(context))) =
            (v.get("value"), v.get("@odata.context"))
            && let Some(feed) = GraphFeed::from_content_type(self.ctx.content_type)
                .or_else(|| GraphFeed::from_odata_context(context))
        {
            let outer = self.ctx;
            self.ctx.content_type = feed.content_type();
            for (i, item) in items.iter().enumerate() {
                self.record(item, &format_args!("{loc}, value {i}"))?;
            }
            self.ctx = outer;
            return Ok(());
        }
        let mapped = map_record(v, &self.ctx);
        serde_json::to_writer(&mut self.out, &mapped.event)?;
        self.out.write_all(b"\n")?;
        self.records += 1;
        for issue in &mapped.issues {
            self.issues += 1;
            writeln!(self.err, "{loc}: {issue}")?;
        }
        Ok(())
    }

    fn unreadable(
        &mut self,
        loc: &dyn std::fmt::Display,
        what: &dyn std::fmt::Display,
    ) -> io::Result<()> {
        self.unreadable += 1;
        writeln!(self.err, "{loc}: {what}")
    }
}

/// Where a record was found.
struct Loc {
    line: usize,
    index: Option<usize>,
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "line {}, index {i}", self.line),
            None => write!(f, "line {}", self.line),
        }
    }
}

/// Counts lines incrementally (offsets only move forward).
struct Lines<'a> {
    data: &'a [u8],
    at: usize,
    line: usize,
}

impl Lines<'_> {
    fn line_at(&mut self, offset: usize) -> usize {
        let offset = offset.min(self.data.len());
        if offset > self.at {
            self.line += self.data[self.at..offset]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            self.at = offset;
        }
        self.line
    }
}

fn json_stream<O: Write, E: Write>(data: &[u8], sink: &mut Sink<'_, O, E>) -> io::Result<()> {
    let mut lines = Lines {
        data,
        at: 0,
        line: 1,
    };
    let mut pos = 0;
    'restart: while pos < data.len() {
        let mut values = serde_json::Deserializer::from_slice(&data[pos..]).into_iter::<Value>();
        loop {
            let before = pos + values.byte_offset();
            let start = before
                + data[before..]
                    .iter()
                    .position(|b| !b.is_ascii_whitespace())
                    .unwrap_or(data.len() - before);
            match values.next() {
                None => break 'restart,
                Some(Ok(Value::Array(items))) => {
                    let line = lines.line_at(start);
                    for (i, v) in items.iter().enumerate() {
                        sink.record(
                            v,
                            &Loc {
                                line,
                                index: Some(i),
                            },
                        )?;
                    }
                }
                Some(Ok(v)) => {
                    let line = lines.line_at(start);
                    sink.record(&v, &Loc { line, index: None })?;
                }
                Some(Err(e)) => {
                    let line = lines.line_at(start);
                    sink.unreadable(
                        &Loc { line, index: None },
                        &format_args!("invalid JSON: {e}"),
                    )?;
                    // Resume at the next line that starts a new value in column 0: the next JSON
                    // line, or the next pretty-printed object.
                    pos = next_value_line(data, start + 1);
                    continue 'restart;
                }
            }
        }
    }
    Ok(())
}

fn next_value_line(data: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < data.len() {
        match data[i..].iter().position(|&b| b == b'\n') {
            Some(nl) => {
                i += nl + 1;
                if matches!(data.get(i), Some(b'{' | b'[')) {
                    return i;
                }
            }
            None => return data.len(),
        }
    }
    data.len()
}

fn csv_export<O: Write, E: Write>(data: &[u8], sink: &mut Sink<'_, O, E>) -> io::Result<()> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(data);
    let column = match reader.byte_headers() {
        Ok(h) => h.iter().position(|c| {
            String::from_utf8_lossy(c)
                .trim()
                .eq_ignore_ascii_case("AuditData")
        }),
        Err(e) => return sink.unreadable(&"line 1", &format_args!("invalid CSV header: {e}")),
    };
    let Some(column) = column else {
        return sink.unreadable(
            &"line 1",
            &"not JSON, and not a CSV export with an AuditData column",
        );
    };
    // Line numbers from byte offsets. The reader's positions point one byte before a record
    // (at the previous line's `\n`), so the first byte of the record is at `byte + 1`.
    let mut lines = Lines {
        data,
        at: 0,
        line: 1,
    };
    let mut line_of = |p: Option<&csv::Position>| {
        let byte = p.map_or(0, |p| usize::try_from(p.byte()).unwrap_or(usize::MAX));
        lines.line_at(byte.saturating_add(1))
    };
    for (row, rec) in reader.byte_records().enumerate() {
        let row = row + 1;
        match rec {
            Ok(rec) => {
                let line = line_of(rec.position());
                let loc = format!("row {row} (line {line})");
                match rec.get(column) {
                    Some(field) => match serde_json::from_slice::<Value>(field) {
                        Ok(v) => sink.record(&v, &loc)?,
                        Err(e) => sink
                            .unreadable(&loc, &format_args!("AuditData is not valid JSON: {e}"))?,
                    },
                    None => sink.unreadable(&loc, &"row has no AuditData column")?,
                }
            }
            Err(e) => {
                let line = line_of(e.position());
                sink.unreadable(
                    &format_args!("row {row} (line {line})"),
                    &format_args!("invalid CSV: {e}"),
                )?;
            }
        }
    }
    Ok(())
}
