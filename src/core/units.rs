//! Human units in the configuration: durations (`60s`, `15m`, `1h`, `500ms`, `1h30m`) and byte sizes
//! (`1048576`, `1MiB`, `64 MiB`, `512KB`).

use std::time::Duration;

/// Why a duration or size could not be read; shown to the user together with the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("is empty")]
    Empty,
    #[error("has a number without a unit")]
    MissingUnit,
    #[error("has an unknown unit `{0}`")]
    UnknownUnit(String),
    #[error("is not a number followed by a unit")]
    Malformed,
    #[error("is too large")]
    Overflow,
}

/// Parses a duration written as one or more `<integer><unit>` parts, units `ms`, `s`, `m`, `h`, `d`
/// (e.g. `60s`, `15m`, `1h30m`, `500ms`). A bare number is refused: `60` could mean seconds or minutes.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(UnitError::Empty);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(UnitError::Malformed);
        }
        let number: u64 = rest[..digits].parse().map_err(|_| UnitError::Overflow)?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let millis_per_unit: u64 = match unit {
            "" => return Err(UnitError::MissingUnit),
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => return Err(UnitError::UnknownUnit(other.to_owned())),
        };
        let millis = number
            .checked_mul(millis_per_unit)
            .ok_or(UnitError::Overflow)?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or(UnitError::Overflow)?;
    }
    Ok(total)
}

/// Parses a byte size: a plain integer (bytes) or `<integer>[ ]<unit>` with `B`, `KB`/`MB`/`GB` (powers
/// of 1000) or `KiB`/`MiB`/`GiB` (powers of 1024); units are case-insensitive.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(UnitError::Empty);
    }
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return Err(UnitError::Malformed);
    }
    let number: u64 = text[..digits].parse().map_err(|_| UnitError::Overflow)?;
    let unit = text[digits..].trim();
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ if unit.chars().all(|c| c.is_ascii_alphabetic()) => {
            return Err(UnitError::UnknownUnit(unit.to_owned()));
        }
        _ => return Err(UnitError::Malformed),
    };
    number.checked_mul(factor).ok_or(UnitError::Overflow)
}

/// Writes a duration the way the configuration accepts it (`1h30m`, `60s`, `500ms`), for summaries.
pub fn format_duration(d: Duration) -> String {
    let mut millis = d.as_millis();
    if millis == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if millis >= size {
            out.push_str(&format!("{}{unit}", millis / size));
            millis %= size;
        }
    }
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 1h 30m "), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("60"), Err(UnitError::MissingUnit));
        assert_eq!(
            parse_duration("5x"),
            Err(UnitError::UnknownUnit("x".into()))
        );
        assert_eq!(parse_duration("s"), Err(UnitError::Malformed));
        assert_eq!(parse_duration("-5s"), Err(UnitError::Malformed));
        assert_eq!(parse_duration(""), Err(UnitError::Empty));
        assert_eq!(
            parse_duration("99999999999999999999s"),
            Err(UnitError::Overflow)
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512kb"), Ok(512_000));
        assert_eq!(parse_size("3 k b"), Err(UnitError::Malformed));
        assert_eq!(
            parse_size("3parsecs"),
            Err(UnitError::UnknownUnit("parsecs".into()))
        );
        assert_eq!(parse_size("MiB"), Err(UnitError::Malformed));
    }

    #[test]
    fn formats_round_trip() {
        for text in ["1m", "45s", "15m", "1h30m", "500ms", "1d2h3m4s5ms"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
        }
    }
}
