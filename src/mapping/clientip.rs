//! Client and server addresses as Elastic's o365 pipeline reads them (its grok patterns, in
//! their order), for the `ecs` format. Microsoft sends `IPv4`, `IPv4:port`, `IPv6`,
//! `[IPv6]:port`, `[addr]`, host names (`host`, `host:port`), and Exchange's `NAME (IP)`; some
//! fields hold broken text (`NOTANIPV4 (10.9000.0.1)`). The functions only split the text; the
//! caller decides what is an IP.

use std::net::IpAddr;

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
    let end = b
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(b.len());
    let word = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
    (!b.get(end).is_some_and(word)).then(|| &s[..end])
}

/// `^<head>:POSINT` where head satisfies `ok`; the longest head first (greedy).
fn head_and_port(t: &str, ok: impl Fn(&str) -> bool) -> Option<(&str, &str)> {
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
        && let Some((head, p)) = head_and_port(inner, |h| h.strip_suffix(']').is_some_and(nonspace))
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

    #[test]
    fn grok_like_elastic() {
        let c = |t| {
            let g = grok_client(t);
            (g.address, g.domain, g.port)
        };
        assert_eq!(c("[::1]:80"), (Some("::1"), None, Some("80")));
        assert_eq!(c("1.2.3.4:8080"), (Some("1.2.3.4"), None, Some("8080")));
        assert_eq!(c("[1.2.3.4]"), (Some("1.2.3.4"), None, None));
        assert_eq!(
            c("[localhost]:12345"),
            (None, Some("[localhost]:12345"), None)
        );
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
}
