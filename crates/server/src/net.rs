//! Where a request comes from: the peer address, or behind a configured reverse proxy
//! the address it forwarded (RFC 9700 §4.13: a forwarded header counts only from a
//! proxy we trust). Rate limits key IPv6 clients by their /64, the block a single
//! host is usually given.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

/// An IP address block, `addr/prefix` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (
                a.trim().parse::<IpAddr>().ok()?,
                Some(p.trim().parse::<u8>().ok()?),
            ),
            None => (s.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => prefix_eq(&a.octets(), &b.octets(), self.prefix),
            (IpAddr::V6(a), IpAddr::V6(b)) => prefix_eq(&a.octets(), &b.octets(), self.prefix),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    let rest = bits % 8;
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        (a[full] & mask) == (b[full] & mask)
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the last
/// `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[String]) -> IpAddr {
    let trusted: Vec<Cidr> = trusted.iter().filter_map(|t| Cidr::parse(t)).collect();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let mut ip = peer.ip();
    if !is_trusted(ip) {
        return ip;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    for hop in forwarded.split(',').rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(h) if is_trusted(h) => ip = h,
            Ok(h) => return h,
            Err(_) => return ip,
        }
    }
    ip
}

/// The key rate limits use for an address: IPv4 as is, IPv6 by its /64.
pub fn limit_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_only_from_trusted_proxies() {
        let proxy: SocketAddr = "10.0.0.5:1234".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.9:1234".parse().unwrap();
        let trusted = vec!["10.0.0.0/24".to_owned()];
        assert_eq!(
            client_ip(stranger, &headers("198.51.100.1"), &trusted),
            stranger.ip(),
            "a spoofed header is ignored"
        );
        assert_eq!(
            client_ip(proxy, &headers("198.51.100.1"), &trusted).to_string(),
            "198.51.100.1"
        );
        assert_eq!(
            client_ip(proxy, &headers("1.1.1.1, 198.51.100.1, 10.0.0.7"), &trusted).to_string(),
            "198.51.100.1",
            "the rightmost untrusted hop"
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy.ip());
        assert_eq!(
            client_ip(proxy, &headers("198.51.100.1"), &[]),
            proxy.ip(),
            "no trusted proxies configured"
        );
    }

    #[test]
    fn cidr_and_ipv6_keys() {
        assert!(
            Cidr::parse("10.0.0.0/8")
                .unwrap()
                .contains("10.200.1.1".parse().unwrap())
        );
        assert!(
            !Cidr::parse("10.0.0.0/8")
                .unwrap()
                .contains("11.0.0.1".parse().unwrap())
        );
        assert!(
            Cidr::parse("2001:db8::/32")
                .unwrap()
                .contains("2001:db8:1::1".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert_eq!(
            limit_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            limit_key("2001:db8:1:2:bbbb::9".parse().unwrap())
        );
    }
}
