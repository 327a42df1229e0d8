//! Microsoft's `CreationTime` as RFC 3339.

/// Converts Microsoft's `CreationTime` (`YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM]`, UTC when no
/// zone is given) to RFC 3339 UTC with milliseconds. `None` when it is not such a date-time.
pub fn creation_time_to_rfc3339(s: &str) -> Option<String> {
    use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
    let s = s.trim();
    let has_zone =
        s.ends_with(['Z', 'z']) || s.get(19..).is_some_and(|tail| tail.contains(['+', '-']));
    if !has_zone && let Some(fast) = fast_naive(s) {
        return Some(fast);
    }
    let utc: DateTime<Utc> = if has_zone {
        DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc)
    } else {
        let t = s.replacen(' ', "T", 1);
        NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()?
            .and_utc()
    };
    Some(utc.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Fast path for the usual `YYYY-MM-DDTHH:MM:SS[.fraction]` without a zone: validates with
/// chrono's calendar and copies the text instead of parsing and formatting through chrono.
fn fast_naive(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    chrono::NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, mo, d)?;
    chrono::NaiveTime::from_hms_opt(h, mi, sec)?;
    let frac = match &b[19..] {
        [] => &b""[..],
        [b'.', digits @ ..] if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => {
            digits
        }
        _ => return None,
    };
    let mut out = String::with_capacity(24);
    out.push_str(&s[..19]);
    out.push('.');
    for i in 0..3 {
        out.push(char::from(*frac.get(i).unwrap_or(&b'0')));
    }
    out.push('Z');
    Some(out)
}
