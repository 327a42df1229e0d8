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

/// The parts of a client address as Elastic's o365 pipeline reads them (its grok patterns, in
/// their order), for the `ecs` format: `[ip]:port`, `ip`, `[ip]`, `ip:port`, then any text
/// without spaces as a *domain* (so `localhost:80` and `[host]:80` are domains whole),
/// `[host]:port` and `host:port` followed by more text, `[NAME (addr)]`, `NAME (addr)`, and
/// finally the whole text as the address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrokClient<'a> {
    pub address: Option<&'a str>,
    pub domain: Option<&'a str>,
    pub port: Option<&'a str>,
}

fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// Grok's `\s` (ASCII white space).
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{b}' | '\u{c}')
}

/// Grok's `POSINT` at the start of `s` (`\b[1-9][0-9]*\b`).
fn posint(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    if !b.first().is_some_and(|c| (b'1'..=b'9').contains(c)) {
        return None;
    }
    let end = b.iter().position(|c| !c.is_ascii_digit()).unwrap_or(b.len());
    let word = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
    (!b.get(end).is_some_and(word)).then(|| &s[..end])
}

/// `^<head>:POSINT` where head satisfies `ok`; the longest head first (greedy).
fn head_and_port<'a>(t: &'a str, ok: impl Fn(&str) -> bool) -> Option<(&'a str, &'a str)> {
    t.match_indices(':')
        .map(|(i, _)| i)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .find_map(|i| Some((&t[..i], posint(&t[i + 1..])?)).filter(|(h, _)| ok(h)))
}

/// `NOTSPACE \(NOTCLOSINGPARENS\)` matched on the whole of `t`.
fn name_and_paren(t: &str) -> Option<(&str, &str)> {
    let ws = t.find(is_space)?;
    let (name, rest) = t.split_at(ws);
    let inner = rest.strip_prefix(" (")?.strip_suffix(')')?;
    (!name.is_empty() && !inner.contains(')')).then_some((name, inner))
}

fn nonspace(s: &str) -> bool {
    !s.is_empty() && !s.contains(is_space)
}

/// Reads a client address as Elastic's pipeline does (after its `::ffff:` removal).
pub fn grok_client(t: &str) -> GrokClient<'_> {
    let g = |address, domain, port| GrokClient {
        address,
        domain,
        port,
    };
    let bracketed = t.strip_prefix('[').and_then(|r| r.split_once(']'));
    if let Some((ip, rest)) = bracketed
        && is_ip(ip)
        && let Some(p) = rest.strip_prefix(':').and_then(posint)
    {
        return g(Some(ip), None, Some(p));
    }
    if is_ip(t) {
        return g(Some(t), None, None);
    }
    if let Some(ip) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
        && is_ip(ip)
    {
        return g(Some(ip), None, None);
    }
    if let Some((ip, p)) = head_and_port(t, is_ip) {
        return g(Some(ip), None, Some(p));
    }
    if nonspace(t) {
        return g(None, Some(t), None);
    }
    if let Some(inner) = t.strip_prefix('[')
        && let Some((head, p)) = head_and_port(inner, |h| {
            h.strip_suffix(']').is_some_and(nonspace)
        })
    {
        return g(None, head.strip_suffix(']'), Some(p));
    }
    if let Some((head, p)) = head_and_port(t, nonspace) {
        return g(None, Some(head), Some(p));
    }
    if let Some((name, addr)) = t
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(name_and_paren)
        .or_else(|| name_and_paren(t))
    {
        return g(Some(addr), Some(name), None);
    }
    g(Some(t.split('\n').next().unwrap_or(t)), None, None)
}

/// Reads `OriginatingServer` as Elastic's pipeline does: `(domain, address)` from
/// `[NAME (addr)]` or the first `NAME (addr)` in the text, else the whole text as the address.
pub fn grok_server(t: &str) -> (Option<&str>, &str) {
    if let Some((name, addr)) = t
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(name_and_paren)
    {
        return (Some(name), addr);
    }
    for (i, _) in t.match_indices(" (") {
        let start = t[..i].rfind(is_space).map_or(0, |s| s + 1);
        let name = &t[start..i];
        let after = &t[i + 2..];
        if !name.is_empty()
            && let Some(close) = after.find(')')
        {
            return (Some(name), &after[..close]);
        }
    }
    (None, t.split('\n').next().unwrap_or(t))
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
    fn grok_like_elastic() {
        let c = |t| {
            let g = grok_client(t);
            (g.address, g.domain, g.port)
        };
        assert_eq!(c("[::1]:80"), (Some("::1"), None, Some("80")));
        assert_eq!(c("1.2.3.4:8080"), (Some("1.2.3.4"), None, Some("8080")));
        assert_eq!(c("[1.2.3.4]"), (Some("1.2.3.4"), None, None));
        assert_eq!(c("[localhost]:12345"), (None, Some("[localhost]:12345"), None));
        assert_eq!(c("10.900.0.1"), (None, Some("10.900.0.1"), None));
        assert_eq!(c("[host]:80 x"), (None, Some("host"), Some("80")));
        assert_eq!(c("host:80 x"), (None, Some("host"), Some("80")));
        assert_eq!(c("[A (1.2.3.4)]"), (Some("1.2.3.4"), Some("A"), None));
        assert_eq!(
            c("NOTANIPV4 (10.9000.0.1)"),
            (Some("10.9000.0.1"), Some("NOTANIPV4"), None)
        );
        assert_eq!(c("a b"), (Some("a b"), None, None));
        assert_eq!(grok_server("SRV (1.2.3.4)"), (Some("SRV"), "1.2.3.4"));
        assert_eq!(grok_server("x SRV (1.2.3.4) y"), (Some("SRV"), "1.2.3.4"));
        assert_eq!(grok_server("plain"), (None, "plain"));
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
