//! Parsing of the client address forms Microsoft puts in `ClientIP` (and `ClientIPAddress`,
//! `ActorIpAddress`): `IPv4`, `IPv4:port`, `IPv6`, `[IPv6]:port`, `[IPv4]:port`, `[addr]`, and the
//! host names some services send instead (`host`, `host:port`, `[host]:port`), and Exchange's
//! `NAME (IP)` form (optionally in brackets), which gives both a host name and an address.
//!
//! Anything else (spaces, parentheses, out-of-range ports, `10.900.0.1`, …) is an error so the
//! record gets an issue; the raw text still goes to `client.address`.

use std::net::IpAddr;

/// A successfully parsed client address. Borrowed from the input: no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr<'a> {
    /// The address text as sent (not re-formatted, so `::ffff:10.1.2.3` stays as it was).
    pub ip_text: Option<&'a str>,
    /// The parsed address, when the host part is an IP.
    pub ip: Option<IpAddr>,
    /// The host name, when the host part is a name rather than an IP.
    pub domain: Option<&'a str>,
    pub port: Option<u16>,
}

impl ClientAddr<'_> {
    /// ECS `network.type`: IPv4-mapped IPv6 addresses count as IPv4, as Elastic does.
    pub fn network_type(&self) -> Option<&'static str> {
        match self.ip? {
            IpAddr::V4(_) => Some("ipv4"),
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => Some("ipv4"),
            IpAddr::V6(_) => Some("ipv6"),
        }
    }
}

/// Why a client address could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientIpError {
    #[error("empty address")]
    Empty,
    #[error("invalid port {0:?}")]
    Port(String),
    #[error("not an IP address or host name: {0:?}")]
    Garbage(String),
}

/// Parses one client address. Leading/trailing whitespace is ignored (Microsoft's own samples have
/// `" 1.2.3.4"`).
pub fn parse(text: &str) -> Result<ClientAddr<'_>, ClientIpError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(ClientIpError::Empty);
    }
    if let Some(named) = named_form(s) {
        return named.ok_or_else(|| garbage(s));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let Some(close) = rest.find(']') else {
            return Err(garbage(s));
        };
        let host = &rest[..close];
        let after = &rest[close + 1..];
        let port = if after.is_empty() {
            None
        } else if let Some(p) = after.strip_prefix(':') {
            Some(parse_port(p)?)
        } else {
            return Err(garbage(s));
        };
        return host_part(host, port).ok_or_else(|| garbage(s));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ClientAddr {
            ip_text: Some(s),
            ip: Some(ip),
            domain: None,
            port: None,
        });
    }
    // `host:port` has exactly one colon; more colons without brackets would be a broken IPv6.
    if let Some((host, port)) = s.split_once(':') {
        if port.contains(':') {
            return Err(garbage(s));
        }
        let port = parse_port(port)?;
        return host_part(host, Some(port)).ok_or_else(|| garbage(s));
    }
    host_part(s, None).ok_or_else(|| garbage(s))
}

/// `NAME (IP)` or `[NAME (IP)]`: `None` when the text does not have that shape, `Some(None)`
/// when it has it but the parts are not a host name and an IP.
fn named_form(s: &str) -> Option<Option<ClientAddr<'_>>> {
    let inner = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    let (name, rest) = inner.split_once(" (")?;
    let ip_text = rest.strip_suffix(')')?.trim();
    Some(match ip_text.parse::<IpAddr>() {
        Ok(ip) if is_host_name(name.trim()) => Some(ClientAddr {
            ip_text: Some(ip_text),
            ip: Some(ip),
            domain: Some(name.trim()),
            port: None,
        }),
        _ => None,
    })
}

fn garbage(s: &str) -> ClientIpError {
    ClientIpError::Garbage(s.to_owned())
}

fn parse_port(p: &str) -> Result<u16, ClientIpError> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ClientIpError::Port(p.to_owned()));
    }
    p.parse().map_err(|_| ClientIpError::Port(p.to_owned()))
}

fn host_part(host: &str, port: Option<u16>) -> Option<ClientAddr<'_>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ClientAddr {
            ip_text: Some(host),
            ip: Some(ip),
            domain: None,
            port,
        });
    }
    is_host_name(host).then_some(ClientAddr {
        ip_text: None,
        ip: None,
        domain: Some(host),
        port,
    })
}

/// RFC 1123-ish host name: labels of letters, digits, `-` and `_`, separated by dots; not all
/// digits and dots (that would be a broken IPv4 such as `10.900.0.1`).
fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && !h.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (Option<&str>, Option<&str>, Option<u16>) {
        let a = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (a.ip_text, a.domain, a.port)
    }

    #[test]
    fn ipv4_forms() {
        assert_eq!(ok("10.11.12.13"), (Some("10.11.12.13"), None, None));
        assert_eq!(
            ok("10.11.12.13:12345"),
            (Some("10.11.12.13"), None, Some(12345))
        );
        assert_eq!(
            ok("[10.11.12.13]:12345"),
            (Some("10.11.12.13"), None, Some(12345))
        );
        assert_eq!(ok("[10.11.12.13]"), (Some("10.11.12.13"), None, None));
        assert_eq!(ok(" 83.57.233.151 "), (Some("83.57.233.151"), None, None));
        assert_eq!(parse("1.2.3.4").unwrap().network_type(), Some("ipv4"));
    }

    #[test]
    fn ipv6_forms() {
        assert_eq!(ok("2001:db8::abcd"), (Some("2001:db8::abcd"), None, None));
        assert_eq!(ok("::1"), (Some("::1"), None, None));
        assert_eq!(
            ok("[2001:db8::abcd]:12345"),
            (Some("2001:db8::abcd"), None, Some(12345))
        );
        assert_eq!(ok("[2001:db8::abcd]"), (Some("2001:db8::abcd"), None, None));
        assert_eq!(parse("2001:db8::1").unwrap().network_type(), Some("ipv6"));
        // IPv4-mapped addresses are IPv4 traffic.
        let mapped = parse("[::ffff:10.11.12.13]:12345").unwrap();
        assert_eq!(mapped.ip_text, Some("::ffff:10.11.12.13"));
        assert_eq!(mapped.network_type(), Some("ipv4"));
    }

    #[test]
    fn host_names() {
        assert_eq!(ok("localhost"), (None, Some("localhost"), None));
        assert_eq!(
            ok("localhost:12345"),
            (None, Some("localhost"), Some(12345))
        );
        assert_eq!(
            ok("[cool.client.local]:12345"),
            (None, Some("cool.client.local"), Some(12345))
        );
        assert_eq!(parse("localhost").unwrap().network_type(), None);
    }

    #[test]
    fn exchange_named_form() {
        assert_eq!(
            ok("[CORRECTIPV4 (10.90.0.1)]"),
            (Some("10.90.0.1"), Some("CORRECTIPV4"), None)
        );
        assert_eq!(
            ok("SERVER1 (2001:db8::1)"),
            (Some("2001:db8::1"), Some("SERVER1"), None)
        );
        // A version number in parentheses is not an address.
        assert!(parse("HE1PR0102MB3228 (15.20.2707.017)").is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            "NOTANIPV4 (10.9000.0.1)",
            "[INCORRECTIPV4 (10.900.0.1)]",
            "10.900.0.1",
            "1.2.3.4:99999",
            "1.2.3.4:",
            "1.2.3.4:port",
            "[::1",
            "[::1]x",
            "2001:db8::zz",
            "a b",
            "::1:80:x",
        ] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
        assert_eq!(parse("  "), Err(ClientIpError::Empty));
        assert!(matches!(
            parse("1.2.3.4:70000"),
            Err(ClientIpError::Port(_))
        ));
    }
}
