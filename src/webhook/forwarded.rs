//! Who called: behind a reverse proxy the TCP peer is the proxy, and the real caller is in
//! `X-Forwarded-For`. Those headers are believed only from peers in `listen.trusted_proxies`;
//! anyone else could write them. Used for logging only: authentication never depends on it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::http::HeaderMap;

use crate::core::IpNet;

/// The configured proxies, shared with the handler as a request extension.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(pub Arc<[IpNet]>);

/// Adds the trusted proxies to `router` (the webhook router): its handler reads them per request.
pub fn trust(router: Router, trusted: Vec<IpNet>) -> Router {
    router.layer(axum::Extension(TrustedProxies(trusted.into())))
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(ip))
}

/// The caller for logs: the TCP peer, or — when the peer is a trusted proxy — the nearest address
/// in `X-Forwarded-For` that is not itself a trusted proxy (entries left of it were written by the
/// client and prove nothing), with the proxy and the `X-Forwarded-Proto` it saw.
pub fn caller(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> String {
    let Some(client) = forwarded_client(peer, headers, trusted) else {
        return peer.to_string();
    };
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|p| !p.is_empty() && p.len() <= 16 && p.chars().all(|c| c.is_ascii_alphanumeric()));
    match proto {
        Some(p) => format!("{client} ({p} via {peer})"),
        None => format!("{client} (via {peer})"),
    }
}

/// The caller's address, as [`caller`] finds it: what rate-limited logs are keyed by.
pub fn caller_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    forwarded_client(peer, headers, trusted).unwrap_or(peer.ip())
}

/// The client a trusted proxy forwarded for, if `peer` is one and says so.
fn forwarded_client(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    if trusted.is_empty() || !is_trusted(peer.ip(), trusted) {
        return None;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(parse_hop)
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(**ip, trusted))
        .or(hops.first())
        .copied()
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    s.parse::<SocketAddr>().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn headers(xff: &[&str], proto: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        if let Some(p) = proto {
            h.insert("x-forwarded-proto", HeaderValue::from_str(p).unwrap());
        }
        h
    }

    const PROXY: &str = "10.0.0.5:40000";

    #[test]
    fn untrusted_peer_is_the_caller() {
        let h = headers(&["203.0.113.9"], Some("https"));
        let peer = "198.51.100.7:5000".parse().unwrap();
        assert_eq!(
            caller(peer, &h, &nets(&["10.0.0.0/8"])),
            "198.51.100.7:5000"
        );
        assert_eq!(
            caller(PROXY.parse().unwrap(), &h, &[]),
            PROXY,
            "none trusted"
        );
    }

    #[test]
    fn trusted_proxy_names_the_client() {
        let t = nets(&["10.0.0.0/8"]);
        let h = headers(&["203.0.113.9"], Some("https"));
        assert_eq!(
            caller(PROXY.parse().unwrap(), &h, &t),
            "203.0.113.9 (https via 10.0.0.5:40000)"
        );
        let h = headers(&["203.0.113.9"], None);
        assert_eq!(
            caller(PROXY.parse().unwrap(), &h, &t),
            "203.0.113.9 (via 10.0.0.5:40000)"
        );
    }

    #[test]
    fn spoofed_entries_left_of_the_real_client_are_ignored() {
        let t = nets(&["10.0.0.0/8"]);
        // The client wrote "1.1.1.1"; the edge proxy 10.1.1.1 appended the client's real address.
        let h = headers(&["1.1.1.1, 203.0.113.9", "10.1.1.1"], Some("https"));
        assert!(caller(PROXY.parse().unwrap(), &h, &t).starts_with("203.0.113.9 "));
        // Only proxies: the leftmost is the best guess.
        let h = headers(&["10.2.0.1, 10.1.1.1"], None);
        assert!(caller(PROXY.parse().unwrap(), &h, &t).starts_with("10.2.0.1 "));
    }

    #[test]
    fn garbage_headers_fall_back_to_the_peer() {
        let t = nets(&["10.0.0.0/8"]);
        let h = headers(&["unknown, not-an-ip"], Some("https"));
        assert_eq!(caller(PROXY.parse().unwrap(), &h, &t), PROXY);
        let h = headers(&["[2001:db8::1]:443"], Some("http s"));
        assert_eq!(
            caller(PROXY.parse().unwrap(), &h, &t),
            "2001:db8::1 (via 10.0.0.5:40000)"
        );
        let h = headers(&["192.0.2.1:8080"], Some("https"));
        assert!(caller(PROXY.parse().unwrap(), &h, &t).starts_with("192.0.2.1 "));
    }
}
